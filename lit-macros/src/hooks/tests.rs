//! The hook table against lit's source: the `LightningModule` and `Callback` traits and the
//! `Hooks` flags must have exactly the table's hooks, with its parameters, receivers and
//! return types, and the loops must call every hook. Adding a hook in one place and not the
//! other fails here.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

use super::{HOOKS, INSTEAD, did_you_mean};

fn lit_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lit/src")
}

fn parse(file: &str) -> syn::File {
    let path = lit_src().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A type as text with paths reduced to their last segment and no spaces, so that the table's
/// fully qualified types compare equal to the trait's imported names.
fn normalize(tokens: impl ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    let mut out: Vec<&str> = Vec::new();
    for token in text.split_whitespace() {
        if token == "::" {
            if out.last().is_some_and(|t| t.chars().all(|c| c.is_alphanumeric() || c == '_')) {
                out.pop();
            }
        } else {
            out.push(token);
        }
    }
    out.concat()
}

struct TraitFn {
    name: String,
    params: Vec<(String, String)>,
    ret: String,
    shared: bool,
    generic: bool,
}

fn trait_fns(file: &syn::File, name: &str) -> Vec<TraitFn> {
    let item = file
        .items
        .iter()
        .find_map(|i| match i {
            syn::Item::Trait(t) if t.ident == name => Some(t),
            _ => None,
        })
        .unwrap_or_else(|| panic!("trait {name} not found"));
    item.items
        .iter()
        .filter_map(|i| match i {
            syn::TraitItem::Fn(f) => Some(f),
            _ => None,
        })
        .map(|f| {
            let shared = matches!(f.sig.inputs.first(), Some(syn::FnArg::Receiver(r)) if r.mutability.is_none());
            let params = f
                .sig
                .inputs
                .iter()
                .filter_map(|a| match a {
                    syn::FnArg::Typed(t) => Some((normalize(&t.pat), normalize(&t.ty))),
                    syn::FnArg::Receiver(_) => None,
                })
                .collect();
            let ret = match &f.sig.output {
                syn::ReturnType::Default => "()".to_string(),
                syn::ReturnType::Type(_, ty) => normalize(ty),
            };
            TraitFn {
                name: f.sig.ident.to_string(),
                params,
                ret,
                shared,
                generic: f.sig.generics.type_params().next().is_some(),
            }
        })
        .collect()
}

fn lit() -> TokenStream {
    quote!(lit)
}

#[test]
fn the_lightning_module_trait_has_exactly_the_tables_hooks() {
    const NOT_HOOKS: &[&str] =
        &["prediction_tensors", "hparams_json", "set_hparams_json", "var_store", "var_store_mut"];
    let fns: Vec<TraitFn> = trait_fns(&parse("module.rs"), "LightningModule")
        .into_iter()
        .filter(|f| !NOT_HOOKS.contains(&&*f.name))
        .collect();
    let table: Vec<_> = HOOKS.iter().filter(|h| h.on_module()).collect();
    let trait_names: Vec<&str> = fns.iter().map(|f| &*f.name).collect();
    let table_names: Vec<&str> = table.iter().map(|h| h.name).collect();
    assert_eq!(trait_names, table_names, "LightningModule's hooks and the table differ (names or order)");
    for (f, hook) in fns.iter().zip(&table) {
        let expected: Vec<(String, String)> =
            hook.params.iter().map(|p| (p.name.to_string(), normalize(p.ty.tokens(&lit())))).collect();
        assert_eq!(f.params, expected, "parameters of `{}`", f.name);
        assert_eq!(f.ret, normalize(hook.ret.table_type(&lit())), "return type of `{}`", f.name);
        assert_eq!(f.shared, hook.shared, "receiver of `{}` (`&self` in the table: {})", f.name, hook.shared);
        assert_eq!(f.generic, hook.generic, "generic batch of `{}`", f.name);
    }
}

#[test]
fn the_callback_trait_has_exactly_the_tables_callback_hooks() {
    const NOT_HOOKS: &[&str] = &["order", "name", "state_dict", "load_state_dict"];
    let fns: Vec<TraitFn> =
        trait_fns(&parse("callback.rs"), "Callback").into_iter().filter(|f| !NOT_HOOKS.contains(&&*f.name)).collect();
    for f in &fns {
        let hook = HOOKS
            .iter()
            .find(|h| h.name == f.name)
            .unwrap_or_else(|| panic!("Callback::{} is not in the hook table", f.name));
        let expected = hook.callback_params().unwrap_or_else(|| panic!("the table says callbacks lack `{}`", f.name));
        let names: Vec<&str> = f.params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, expected, "parameters of Callback::{}", f.name);
    }
    for hook in HOOKS.iter().filter(|h| h.callback_params().is_some()) {
        assert!(
            fns.iter().any(|f| f.name == hook.name),
            "the table says callbacks have `{}`; Callback lacks it",
            hook.name
        );
    }
}

#[test]
fn the_hooks_flags_are_the_tables_flagged_hooks() {
    let file = parse("module.rs");
    let fields: Vec<String> = file
        .items
        .iter()
        .find_map(|i| match i {
            syn::Item::Struct(s) if s.ident == "Hooks" => Some(s),
            _ => None,
        })
        .expect("struct Hooks")
        .fields
        .iter()
        .map(|f| f.ident.as_ref().expect("named").to_string())
        .collect();
    let mut flagged: Vec<String> = HOOKS.iter().filter(|h| h.flag).map(|h| h.name.to_string()).collect();
    let mut fields = fields;
    fields.sort();
    flagged.sort();
    assert_eq!(fields, flagged);
}

/// Every hook is called by the runtime: its name appears in lit's source outside the traits.
#[test]
fn the_loops_call_every_hook() {
    let mut text = String::new();
    let mut dirs = vec![lit_src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("lit/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.ends_with("module.rs") && !path.ends_with("callback.rs") {
                text.push_str(&std::fs::read_to_string(&path).expect("source"));
            }
        }
    }
    let words: std::collections::BTreeSet<&str> =
        text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    for hook in HOOKS {
        assert!(words.contains(hook.name), "no call of hook `{}` in lit/src outside the traits", hook.name);
    }
}

#[test]
fn near_misses_suggest_the_hook_and_no_alternative_is_a_hook() {
    for (name, _) in INSTEAD {
        assert!(HOOKS.iter().all(|h| h.name != *name), "`{name}` is a hook and has an alternative");
    }
    assert_eq!(did_you_mean("configure_optimizer"), Some("configure_optimizers"));
    assert_eq!(did_you_mean("validaton_step"), Some("validation_step"));
    assert_eq!(did_you_mean("on_train_epoch_ned"), Some("on_train_epoch_end"));
    assert_eq!(did_you_mean("train_step"), Some("training_step"));
    for helper in ["shared_step", "forward", "step", "_step", "compute_loss", "make_loader", "evaluate"] {
        assert_eq!(did_you_mean(helper), None, "`{helper}` is an everyday helper name");
    }
}
