//! A typed form of the user's struct and impl block, keeping the original syntax for spans.

use proc_macro2::TokenStream;
use syn::visit::Visit;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, Pat, Type};

use crate::errors::Errors;
use crate::hooks::{self, Hook, Stage, Ty};

/// `#[lightning_module]` on a struct.
pub(crate) struct ModuleStruct {
    /// The struct with lit's field attributes removed.
    pub(crate) item: syn::ItemStruct,
    pub(crate) var_store: Option<Ident>,
    pub(crate) hparams: Option<(Ident, Type)>,
    pub(crate) example_input: Option<Ident>,
}

pub(crate) fn is_type_named(ty: &Type, name: &str) -> bool {
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

/// One definition of a hook in the impl block (a hook may have several under exclusive cfgs).
pub(crate) struct HookFn {
    pub(crate) hook: &'static Hook,
    pub(crate) ident: Ident,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: syn::ReturnType,
    /// The method's `#[cfg(...)]` predicates: the generated hook exists exactly when it does.
    pub(crate) cfgs: Vec<TokenStream>,
    /// No rule of the hook was broken, so its table method can be generated.
    pub(crate) valid: bool,
}

/// The constructor `load_from_checkpoint` calls.
pub(crate) struct InitFn {
    pub(crate) ident: Ident,
    pub(crate) takes_hparams: bool,
    /// A plain `new(x: A)`, not marked `#[init]`: `A` may not be the hparams, which is found out
    /// where the types are known (`__private::InitProbe`).
    pub(crate) unchecked_arg: Option<Type>,
    pub(crate) output: syn::ReturnType,
    pub(crate) cfgs: Vec<TokenStream>,
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
    /// Names of every method of the block.
    pub(crate) methods: Vec<String>,
}

/// How `forward` takes its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Input {
    /// `x: &Tensor`.
    Ref,
    /// `x: Tensor`.
    Value,
}

/// A `forward` method export can trace: one tensor input, and optionally a `train: bool` flag.
pub(crate) struct ForwardFn {
    pub(crate) ident: Ident,
    pub(crate) input: Input,
    pub(crate) train_flag: bool,
    pub(crate) cfgs: Vec<TokenStream>,
}

impl ForwardFn {
    fn from_fn(f: &ImplItemFn) -> Option<Self> {
        let sig = &f.sig;
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            _ => return None,
        }
        let typed: Vec<&syn::PatType> =
            inputs.map(|a| if let FnArg::Typed(t) = a { Some(t) } else { None }).collect::<Option<_>>()?;
        let is_bool = |ty: &Type| matches!(ty, Type::Path(p) if p.path.is_ident("bool"));
        let (x, train_flag) = match typed.as_slice() {
            [x] => (x, false),
            [x, flag] if is_bool(&flag.ty) => (x, true),
            _ => return None,
        };
        let input = match &*x.ty {
            Type::Reference(r) if r.mutability.is_none() && is_type_named(&r.elem, "Tensor") => Input::Ref,
            ty if is_type_named(ty, "Tensor") => Input::Value,
            _ => return None,
        };
        (sig.generics.params.is_empty() && returns_tensors(&sig.output)).then(|| ForwardFn {
            ident: sig.ident.clone(),
            input,
            train_flag,
            cfgs: cfgs(&f.attrs),
        })
    }
}

/// Whether `forward` returns what a trace can output: a `Tensor`, a tuple of two or three, or a
/// `Vec` of them.
fn returns_tensors(output: &syn::ReturnType) -> bool {
    let syn::ReturnType::Type(_, ty) = output else { return false };
    match &**ty {
        Type::Tuple(t) => (2..=3).contains(&t.elems.len()) && t.elems.iter().all(|e| is_type_named(e, "Tensor")),
        Type::Path(p) => match p.path.segments.last() {
            Some(last) if last.ident == "Tensor" => true,
            Some(last) if last.ident == "Vec" => matches!(
                &last.arguments,
                syn::PathArguments::AngleBracketed(a)
                    if matches!(a.args.first(), Some(syn::GenericArgument::Type(t)) if is_type_named(t, "Tensor"))
            ),
            _ => false,
        },
        _ => false,
    }
}

/// The predicates of the `#[cfg(...)]` attributes of an item.
fn cfgs(attrs: &[syn::Attribute]) -> Vec<TokenStream> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .filter_map(|a| a.meta.require_list().ok().map(|l| l.tokens.clone()))
        .collect()
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
        let before = errors.count();
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
            let open = |k: usize| !taken[k] && hook.params[k].ty != Ty::Ctx;
            let free = (0..hook.params.len())
                .find(|&k| open(k) && (hook.params[k].ty == Ty::Usize) == wants_index)
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
                check_param_type(hook, &hook.params[k], &t.ty, errors);
            }
            args.push(Arg { role, ty: (*t.ty).clone() });
        }
        if hook.step.is_some() && !args.iter().any(|a| a.role == Role::Table(0)) {
            errors.push(&sig.ident, format!("hook `{}` needs the batch as its first parameter", hook.name));
        }
        HookFn {
            hook,
            ident: sig.ident.clone(),
            args,
            output: sig.output.clone(),
            cfgs: cfgs(&f.attrs),
            valid: errors.count() == before,
        }
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
/// `&mut Ctx`, a step's batch comes by value. (Other types are checked by rustc, at the user's
/// parameter, in the same compile.)
fn check_param_type(hook: &Hook, param: &hooks::Param, ty: &Type, errors: &mut Errors) {
    match param.ty {
        Ty::Usize if !is_type_named(ty, "usize") => {
            errors.push(ty, format!("`{}` of hook `{}` is a `usize`", param.name, hook.name));
        }
        Ty::Ctx => match ctx_reference(ty) {
            Some(true) => {}
            Some(false) => errors.push(ty, format!("the context of hook `{}` is `&mut Ctx`, not `&Ctx`", hook.name)),
            None => errors.push(ty, format!("the context of hook `{}` is `&mut Ctx`", hook.name)),
        },
        Ty::Batch(_) => {
            if let Type::Reference(r) = ty {
                errors.push(r, format!("hook `{}` receives its batch by value: drop the `&`", hook.name));
            }
        }
        _ => {}
    }
}

/// Why a method that is not a hook is still an error: a near miss of a hook's name, or a
/// Lightning name lit does not have.
fn not_a_hook(name: &str) -> Option<String> {
    if let Some(instead) = hooks::instead(name) {
        return Some(format!("`{name}` is not a LightningModule hook in lit: {instead}"));
    }
    let keep = "mark it `#[helper]` to keep a helper of this name";
    match hooks::did_you_mean(name) {
        Some(hook) => Some(format!("`{name}` is not a LightningModule hook; did you mean `{hook}`? ({keep})")),
        None if name.starts_with("on_") => Some(format!(
            "`{name}` is not a LightningModule hook; `on_*` names are kept for hooks: rename it, or {keep}"
        )),
        None => None,
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
        let mut hooks: Vec<HookFn> = Vec::new();
        let (mut init, mut marked_init, mut example_input, mut forward) = (None, None, None, None);
        let mut duplicates = Vec::new();
        let mut near_misses = Vec::new();
        let mut methods = Vec::new();
        for (index, impl_item) in item.items.iter_mut().enumerate() {
            let ImplItem::Fn(f) = impl_item else { continue };
            let name = f.sig.ident.to_string();
            methods.push(name.clone());
            if name == "forward" {
                forward = ForwardFn::from_fn(f);
            }
            let init_attr = take_attr(&mut f.attrs, "init");
            let helper = take_attr(&mut f.attrs, "helper");
            if let Some(attr) = take_attr(&mut f.attrs, "example_input")
                && example_input.replace(f.sig.ident.clone()).is_some()
            {
                errors.push(attr, "only one method can be `#[example_input]`");
            }
            if init_attr.is_some() || name == "new" {
                let takes_hparams = f.sig.inputs.iter().any(|a| matches!(a, FnArg::Typed(_)));
                let first_arg = f.sig.inputs.iter().find_map(|a| match a {
                    FnArg::Typed(t) => Some((*t.ty).clone()),
                    FnArg::Receiver(_) => None,
                });
                let candidate = InitFn {
                    ident: f.sig.ident.clone(),
                    takes_hparams,
                    unchecked_arg: if init_attr.is_some() { None } else { first_arg },
                    output: f.sig.output.clone(),
                    cfgs: cfgs(&f.attrs),
                };
                let generic_arg =
                    f.sig.inputs.iter().any(|a| matches!(a, FnArg::Typed(t) if mentions_params(&t.ty, &item.generics)));
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
                } else if !generic_arg {
                    // `new(backbone: B)` of a generic module does not take the hparams.
                    init = Some(candidate);
                }
            }
            match (hooks::find(&name), helper) {
                (Some(hook), None) => {
                    let cfgs = cfgs(&f.attrs);
                    let earlier = hooks.iter().find(|h| h.hook.name == name);
                    match earlier {
                        // Several definitions under cfgs: at most one exists in any build.
                        Some(first) if !cfgs.is_empty() && !first.cfgs.is_empty() => {
                            hooks.push(HookFn::from_syn(hook, f, errors));
                        }
                        Some(first) => {
                            let mut e = syn::Error::new(f.sig.ident.span(), format!("hook `{name}` is defined twice"));
                            e.combine(syn::Error::new(
                                first.ident.span(),
                                "first defined here (two definitions need exclusive `#[cfg(...)]`s)",
                            ));
                            errors.add(e);
                            // Dropped from the output so that rustc does not report it again.
                            duplicates.push(index);
                        }
                        None => hooks.push(HookFn::from_syn(hook, f, errors)),
                    }
                }
                (Some(hook), Some(attr)) => errors.push(
                    attr,
                    format!(
                        "`{}` is a hook; `#[helper]` keeps a method whose name is close to a hook's, not a hook itself",
                        hook.name
                    ),
                ),
                (None, None) => {
                    if let Some(message) = not_a_hook(&name) {
                        errors.push(&f.sig.ident, message);
                        // A misspelt step still declares its stage's batch type, so that code
                        // using the module reports nothing more.
                        if let Some(hook) = hooks::did_you_mean(&name).and_then(hooks::find)
                            && hook.step.is_some()
                        {
                            let mut scratch = Errors::default();
                            let mut near = HookFn::from_syn(hook, f, &mut scratch);
                            drop(scratch.into_compile_errors());
                            near.valid = false;
                            near_misses.push(near);
                        }
                    }
                }
                (None, Some(_)) => {}
            }
        }
        for index in duplicates.into_iter().rev() {
            item.items.remove(index);
        }
        for near in near_misses {
            if !hooks.iter().any(|h| h.hook.name == near.hook.name) {
                hooks.push(near);
            }
        }
        check_bodies(&mut item, &methods, errors);
        ModuleImpl { item, hooks, init: marked_init.or(init), example_input, forward, methods }
    }

    /// The first definition of the hook called `name`.
    pub(crate) fn hook(&self, name: &str) -> Option<&HookFn> {
        self.hooks.iter().find(|h| h.hook.name == name)
    }

    /// The definitions of the hook called `name`.
    pub(crate) fn definitions<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a HookFn> + 'a {
        self.hooks.iter().filter(move |h| h.hook.name == name)
    }

    /// The step hook definitions of a stage.
    pub(crate) fn steps(&self, stage: Stage) -> impl Iterator<Item = &HookFn> {
        self.hooks.iter().filter(move |h| h.hook.step == Some(stage))
    }
}

/// Reports Lightning's `self.log(…)`, `self.current_epoch` and the like in method bodies: in lit
/// they are on the hook's context. A method with such a use gets an empty body in the output,
/// so that rustc does not report the same mistake again in its own words.
fn check_bodies(item: &mut syn::ItemImpl, methods: &[String], errors: &mut Errors) {
    for impl_item in &mut item.items {
        let ImplItem::Fn(f) = impl_item else { continue };
        let mut finder = SelfUses { defined: methods, found: Vec::new() };
        finder.visit_block(&f.block);
        if finder.found.is_empty() {
            continue;
        }
        for (span, message) in finder.found {
            errors.push_span(span, message);
        }
        f.block = syn::parse_quote!({ ::core::unreachable!() });
        f.attrs.push(syn::parse_quote!(#[allow(unused_variables, unreachable_code)]));
    }
}

/// Whether `ty` mentions one of the type parameters of `generics`.
fn mentions_params(ty: &Type, generics: &syn::Generics) -> bool {
    struct Finder<'a>(&'a syn::Generics, bool);
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if let Some(first) = path.segments.first()
                && self.0.type_params().any(|p| p.ident == first.ident)
            {
                self.1 = true;
            }
            syn::visit::visit_path(self, path);
        }
    }
    let mut finder = Finder(generics, false);
    finder.visit_type(ty);
    finder.1
}

/// What Lightning keeps on `self` and lit on the context, with the hint to give.
const ON_CONTEXT: &[(&str, bool, &str)] = &[
    ("log", true, "logging is on the hook's context: write `cx.log(…)`"),
    ("log_dict", true, "logging is on the hook's context: write `cx.log_dict(…)`"),
    ("print", true, "printing is on the hook's context: write `cx.print(…)`"),
    ("optimizers", true, "the optimizers are on the hook's context: write `cx.optimizer(i)?`"),
    ("lr_schedulers", true, "the schedulers are on the hook's context: write `cx.lr_scheduler_step(i, None)?`"),
    ("manual_backward", true, "write `cx.manual_backward(&loss)?`"),
    ("current_epoch", false, "the run's counters are on the hook's context: write `cx.current_epoch()`"),
    ("global_step", false, "the run's counters are on the hook's context: write `cx.global_step()`"),
    (
        "trainer",
        false,
        "the Trainer is read through the hook's context: `cx.trainer()` (its configuration and state: `max_epochs()`, `num_training_batches()`, …), and `cx.request_stop()` to stop",
    ),
];

/// Finds `self.log(…)`, `self.current_epoch` and the like in method bodies.
struct SelfUses<'a> {
    /// The block's own methods: a user's `log` method is theirs to call.
    defined: &'a [String],
    found: Vec<(proc_macro2::Span, String)>,
}

fn is_self(expr: &syn::Expr) -> bool {
    matches!(expr, syn::Expr::Path(p) if p.path.is_ident("self"))
}

impl SelfUses<'_> {
    fn report(&mut self, span: proc_macro2::Span, name: &str, call: bool) {
        if let Some((_, _, hint)) = ON_CONTEXT.iter().find(|(n, c, _)| *n == name && *c == call)
            && !self.defined.iter().any(|d| d == name)
        {
            let what = if call { format!("`self.{name}(…)`") } else { format!("`self.{name}`") };
            self.found.push((
                span,
                format!("{what} is Lightning's; in lit {hint} (add `cx: &mut Ctx` to the hook's parameters)"),
            ));
        }
    }
}

impl<'ast> Visit<'ast> for SelfUses<'_> {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if is_self(&call.receiver) {
            self.report(call.method.span(), &call.method.to_string(), true);
        }
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_field(&mut self, field: &'ast syn::ExprField) {
        if is_self(&field.base)
            && let syn::Member::Named(name) = &field.member
        {
            self.report(name.span(), &name.to_string(), false);
        }
        syn::visit::visit_expr_field(self, field);
    }

    // Items nested in a body have their own `self`.
    fn visit_item(&mut self, _: &'ast syn::Item) {}
}
