//! A typed form of the user's struct and impl block, keeping the original syntax for spans.

use syn::{FnArg, Ident, ImplItem, ImplItemFn, Pat, Type};

use crate::errors::Errors;
use crate::hooks::{self, Hook};

/// `#[lightning_module]` on a struct.
pub(crate) struct ModuleStruct {
    /// The struct with lit's field attributes removed.
    pub(crate) item: syn::ItemStruct,
    pub(crate) var_store: Option<Ident>,
    pub(crate) hparams: Option<(Ident, Type)>,
    pub(crate) example_input: Option<Ident>,
}

fn is_type_named(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}

/// Removes the attribute `#[name]` (or `#[name(...)]`) from `attrs`; returns it if present.
pub(crate) fn take_attr(attrs: &mut Vec<syn::Attribute>, name: &str) -> Option<syn::Attribute> {
    let pos = attrs.iter().position(|a| a.path().is_ident(name))?;
    Some(attrs.remove(pos))
}

impl ModuleStruct {
    pub(crate) fn from_syn(mut item: syn::ItemStruct, errors: &mut Errors) -> Self {
        if !item.generics.params.is_empty() {
            errors
                .push(&item.generics, "`#[lightning_module]` does not support generic structs yet; use concrete types");
        }
        let (mut var_store, mut marked_store, mut hparams, mut example_input) = (None, None, None, None);
        let mut by_type = Vec::new();
        match &mut item.fields {
            syn::Fields::Named(fields) => {
                for field in fields.named.iter_mut() {
                    let ident = field.ident.clone().expect("named field");
                    if let Some(attr) = take_attr(&mut field.attrs, "var_store")
                        && marked_store.replace(ident.clone()).is_some()
                    {
                        errors.push(attr, "only one field can be `#[var_store]`");
                    } else if is_type_named(&field.ty, "VarStore") {
                        by_type.push(ident.clone());
                    }
                    if let Some(attr) = take_attr(&mut field.attrs, "hparams")
                        && hparams.replace((ident.clone(), field.ty.clone())).is_some()
                    {
                        errors.push(attr, "only one field can be `#[hparams]`");
                    }
                    if let Some(attr) = take_attr(&mut field.attrs, "example_input")
                        && example_input.replace(ident.clone()).is_some()
                    {
                        errors.push(attr, "only one field can be `#[example_input]`");
                    }
                }
                match (marked_store, by_type.len()) {
                    (Some(marked), _) => var_store = Some(marked),
                    (None, 1) => var_store = by_type.pop(),
                    (None, 0) => errors.push(
                        &item.ident,
                        "`#[lightning_module]` struct has no `nn::VarStore` field; add one, or mark the field holding it with `#[var_store]`",
                    ),
                    (None, _) => errors.push(
                        &item.ident,
                        "`#[lightning_module]` struct has several `VarStore` fields; mark the module's own with `#[var_store]`",
                    ),
                }
            }
            _ => errors.push(&item.ident, "`#[lightning_module]` needs a struct with named fields"),
        }
        ModuleStruct { item, var_store, hparams, example_input }
    }
}

/// The role a user's parameter plays in its hook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Role {
    /// The table's parameter at this index.
    Table(usize),
    /// Truncated BPTT's `hiddens`.
    Hiddens,
    /// With several optimizers, the one this `training_step` runs for.
    OptimizerIdx,
}

/// A user parameter of a hook.
pub(crate) struct Arg {
    pub(crate) role: Role,
    pub(crate) ty: Type,
}

/// A method of the impl block that is a hook.
pub(crate) struct HookFn {
    pub(crate) hook: &'static Hook,
    pub(crate) ident: Ident,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: syn::ReturnType,
}

/// The constructor `load_from_checkpoint` calls.
pub(crate) struct InitFn {
    pub(crate) ident: Ident,
    pub(crate) takes_hparams: bool,
    pub(crate) output: syn::ReturnType,
}

/// `#[lightning_module]` on an impl block.
pub(crate) struct ModuleImpl {
    /// The impl block with lit's method attributes removed.
    pub(crate) item: syn::ItemImpl,
    pub(crate) hooks: Vec<HookFn>,
    pub(crate) init: Option<InitFn>,
    pub(crate) example_input: Option<Ident>,
    /// `forward(&self, x)` or `forward(&self, x, train: bool)`: what export traces.
    pub(crate) forward: Option<ForwardFn>,
}

/// A `forward` method export can trace: one input, and optionally a `train: bool` flag.
pub(crate) struct ForwardFn {
    pub(crate) ident: Ident,
    pub(crate) train_flag: bool,
}

impl ForwardFn {
    fn from_sig(sig: &syn::Signature) -> Option<Self> {
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            _ => return None,
        }
        let typed: Vec<&syn::PatType> =
            inputs.map(|a| if let FnArg::Typed(t) = a { Some(t) } else { None }).collect::<Option<_>>()?;
        let is_bool = |ty: &syn::Type| matches!(ty, syn::Type::Path(p) if p.path.is_ident("bool"));
        let train_flag = match typed.as_slice() {
            [_] => false,
            [_, flag] if is_bool(&flag.ty) => true,
            _ => return None,
        };
        (sig.generics.params.is_empty() && sig.output != syn::ReturnType::Default)
            .then(|| ForwardFn { ident: sig.ident.clone(), train_flag })
    }
}

/// The table's name for a user parameter: its identifier without leading underscores.
fn param_name(pat: &Pat) -> Option<String> {
    match pat {
        Pat::Ident(p) => Some(p.ident.to_string().trim_start_matches('_').to_string()),
        _ => None,
    }
}

/// Whether `ty` is `&mut Ctx` (or `&Ctx`, reported as a mistake).
fn ctx_reference(ty: &Type) -> Option<bool> {
    match ty {
        Type::Reference(r) if is_type_named(&r.elem, "Ctx") => Some(r.mutability.is_some()),
        _ => None,
    }
}

fn table_names(hook: &Hook) -> String {
    hook.params.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

impl HookFn {
    fn from_syn(hook: &'static Hook, f: &ImplItemFn, errors: &mut Errors) -> Self {
        let sig = &f.sig;
        if let Some(a) = &sig.asyncness {
            errors.push(a, format!("hook `{}` cannot be `async`: the Trainer calls hooks synchronously", hook.name));
        }
        if hook.generic {
            if sig.generics.type_params().count() != 1 {
                errors.push(
                    &sig.ident,
                    format!(
                        "hook `{}` is generic over the batch: write `fn {}<B: lit::data::Batch>(…)`",
                        hook.name, hook.name
                    ),
                );
            }
        } else if !sig.generics.params.is_empty() {
            errors.push(
                &sig.generics,
                format!("hook `{}` cannot be generic; its types are fixed by the hook table", hook.name),
            );
        }
        match sig.inputs.first() {
            Some(FnArg::Receiver(r)) if hook.shared && r.mutability.is_some() => {
                errors.push(r, format!("hook `{}` only reads the module: write `&self`, not `&mut self`", hook.name))
            }
            Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
            Some(FnArg::Receiver(r)) => errors.push(
                r,
                format!(
                    "hook `{}` takes `&mut self` (or `&self`), not `self` by value: the Trainer keeps the module",
                    hook.name
                ),
            ),
            _ => errors
                .push(&sig.ident, format!("hook `{}` needs a receiver: write `&mut self` (or `&self`)", hook.name)),
        }

        let typed: Vec<&syn::PatType> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(t),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let mut roles: Vec<Option<Role>> = vec![None; typed.len()];
        let mut taken = vec![false; hook.params.len()];
        // First by name, and `&mut Ctx` by type.
        for (i, t) in typed.iter().enumerate() {
            let name = param_name(&t.pat);
            if hook.name == "training_step" {
                let special = match name.as_deref() {
                    Some("hiddens") => Some(Role::Hiddens),
                    Some("optimizer_idx") => Some(Role::OptimizerIdx),
                    _ => None,
                };
                if special.is_some() {
                    if special == Some(Role::OptimizerIdx) && !is_type_named(&t.ty, "usize") {
                        errors.push(&t.ty, "`optimizer_idx` of hook `training_step` is a `usize`");
                    }
                    roles[i] = special;
                    continue;
                }
            }
            let by_name = name.as_deref().and_then(|n| hook.params.iter().position(|p| p.name == n));
            let by_type = ctx_reference(&t.ty).map(|_| hook.params.iter().position(|p| p.name == "cx"));
            let index = by_name.or(by_type.flatten());
            if let Some(index) = index {
                if taken[index] {
                    errors
                        .push(&t.pat, format!("hook `{}` has two `{}` parameters", hook.name, hook.params[index].name));
                } else {
                    taken[index] = true;
                    roles[i] = Some(Role::Table(index));
                }
            } else if by_type.is_some() {
                errors.push(
                    &t.ty,
                    format!("hook `{}` receives no context; its parameters are ({})", hook.name, table_names(hook)),
                );
            }
        }
        // Then the rest in order, into the table's free places (the context is only by type).
        for (i, t) in typed.iter().enumerate() {
            if roles[i].is_some() || ctx_reference(&t.ty).is_some() {
                continue;
            }
            // An unnamed `usize` takes the next index parameter; anything else the next other one.
            let wants_index = is_type_named(&t.ty, "usize");
            let open = |k: usize| !taken[k] && hook.params[k].name != "cx";
            let free = (0..hook.params.len())
                .find(|&k| open(k) && (hook.params[k].ty == "usize") == wants_index)
                .or_else(|| (0..hook.params.len()).find(|&k| open(k)));
            match free {
                Some(k) => {
                    taken[k] = true;
                    roles[i] = Some(Role::Table(k));
                }
                None => errors.push(
                    t,
                    format!("hook `{}` takes at most ({}); remove this parameter", hook.name, table_names(hook)),
                ),
            }
        }
        let mut args = Vec::new();
        for (t, role) in typed.iter().zip(roles) {
            let Some(role) = role else { continue };
            if let Role::Table(k) = role {
                check_param_type(hook, hook.params[k].name, &t.ty, errors);
            }
            args.push(Arg { role, ty: (*t.ty).clone() });
        }
        if hook.step.is_some() && !args.iter().any(|a| a.role == Role::Table(0)) {
            errors.push(&sig.ident, format!("hook `{}` needs the batch as its first parameter", hook.name));
        }
        HookFn { hook, ident: sig.ident.clone(), args, output: sig.output.clone() }
    }

    /// The user's type for the table parameter called `name`.
    pub(crate) fn arg_type(&self, name: &str) -> Option<&Type> {
        let index = self.hook.params.iter().position(|p| p.name == name)?;
        self.args.iter().find(|a| a.role == Role::Table(index)).map(|a| &a.ty)
    }

    pub(crate) fn hiddens(&self) -> Option<&Arg> {
        self.args.iter().find(|a| a.role == Role::Hiddens)
    }
}

/// Checks what can be checked without type information: indices are `usize`, the context is
/// `&mut Ctx`, a step's batch comes by value.
fn check_param_type(hook: &Hook, name: &str, ty: &Type, errors: &mut Errors) {
    match name {
        "batch_idx" | "dataloader_idx" | "optimizer_idx" | "epoch" | "split_size" if !is_type_named(ty, "usize") => {
            errors.push(ty, format!("`{name}` of hook `{}` is a `usize`", hook.name));
        }
        "cx" => match ctx_reference(ty) {
            Some(true) => {}
            Some(false) => errors.push(ty, format!("the context of hook `{}` is `&mut Ctx`, not `&Ctx`", hook.name)),
            None => errors.push(ty, format!("the context of hook `{}` is `&mut Ctx`", hook.name)),
        },
        "batch" if hook.step.is_some() => {
            if let Type::Reference(r) = ty {
                errors.push(r, format!("hook `{}` receives its batch by value: drop the `&`", hook.name));
            }
        }
        _ => {}
    }
}

impl ModuleImpl {
    pub(crate) fn from_syn(mut item: syn::ItemImpl, errors: &mut Errors) -> Self {
        if let Some((_, path, _)) = &item.trait_ {
            errors.push(
                path,
                "`#[lightning_module]` goes on the struct's own impl block (`impl MyModule { … }`), not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() {
            errors.push(&item.generics, "`#[lightning_module]` does not support generic impl blocks yet");
        }
        let mut hooks: Vec<HookFn> = Vec::new();
        let (mut init, mut marked_init, mut example_input, mut forward) = (None, None, None, None);
        let mut duplicates = Vec::new();
        for (index, impl_item) in item.items.iter_mut().enumerate() {
            let ImplItem::Fn(f) = impl_item else { continue };
            let name = f.sig.ident.to_string();
            if name == "forward" {
                forward = ForwardFn::from_sig(&f.sig);
            }
            let init_attr = take_attr(&mut f.attrs, "init");
            if let Some(attr) = take_attr(&mut f.attrs, "example_input")
                && example_input.replace(f.sig.ident.clone()).is_some()
            {
                errors.push(attr, "only one method can be `#[example_input]`");
            }
            if init_attr.is_some() || name == "new" {
                let takes_hparams = f.sig.inputs.iter().any(|a| matches!(a, FnArg::Typed(_)));
                let candidate = InitFn { ident: f.sig.ident.clone(), takes_hparams, output: f.sig.output.clone() };
                if f.sig.inputs.len() > 1 || matches!(f.sig.inputs.first(), Some(FnArg::Receiver(_))) {
                    if init_attr.is_some() {
                        errors.push(
                            &f.sig.inputs,
                            "an `#[init]` constructor takes the hparams (or nothing) and no `self`",
                        );
                    }
                } else if init_attr.is_some() {
                    if marked_init.replace(candidate).is_some() {
                        errors.push(&f.sig.ident, "only one method can be `#[init]`");
                    }
                } else {
                    init = Some(candidate);
                }
            }
            match hooks::find(&name) {
                Some(hook) => {
                    if let Some(first) = hooks.iter().find(|h| h.hook.name == name) {
                        let mut e = syn::Error::new(f.sig.ident.span(), format!("hook `{name}` is defined twice"));
                        e.combine(syn::Error::new(first.ident.span(), "first defined here"));
                        errors.add(e);
                        // Dropped from the output so that rustc does not report it again.
                        duplicates.push(index);
                    } else {
                        hooks.push(HookFn::from_syn(hook, f, errors));
                    }
                }
                None if name.starts_with("on_") => {
                    let hint = match hooks::did_you_mean(&name) {
                        Some(h) => format!("; did you mean `{h}`?"),
                        None => {
                            String::from("; rename it if it is a helper, since `on_*` names are reserved for hooks")
                        }
                    };
                    errors.push(&f.sig.ident, format!("`{name}` is not a LightningModule hook{hint}"));
                }
                None => {}
            }
        }
        for index in duplicates.into_iter().rev() {
            item.items.remove(index);
        }
        ModuleImpl { item, hooks, init: marked_init.or(init), example_input, forward }
    }

    pub(crate) fn hook(&self, name: &str) -> Option<&HookFn> {
        self.hooks.iter().find(|h| h.hook.name == name)
    }
}
