//! Rules that span several items: options against hooks.

use syn::Type;

use crate::ast::ModuleImpl;
use crate::attr::ModuleOptions;
use crate::errors::Errors;

fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// Checks truncated BPTT's option against `training_step`'s `hiddens`; returns whether
/// `training_step` can be generated (no rule about it was broken here).
pub(crate) fn module_impl(options: &ModuleOptions, module: &ModuleImpl, errors: &mut Errors) -> bool {
    let before = errors.count();
    let hiddens = module.hook("training_step").and_then(|h| h.hiddens());
    match (&options.truncated_bptt_steps, hiddens) {
        (Some(steps), hiddens) => {
            if steps.base10_parse::<usize>().map_or(true, |n| n == 0) {
                errors.push(steps, "`truncated_bptt_steps` must be a whole number of time steps, at least 1");
            }
            match (module.hook("training_step"), hiddens) {
                (None, _) => errors.push(steps, "`truncated_bptt_steps` is set but the impl block has no `training_step`"),
                (Some(step), None) => errors.push(
                    &step.ident,
                    "`truncated_bptt_steps` is set, so `training_step` needs a `hiddens: Option<…>` parameter (the previous chunk's state)",
                ),
                (Some(_), Some(arg)) if !is_option(&arg.ty) => errors.push(
                    &arg.ty,
                    "`hiddens` is `None` for a batch's first chunk: declare it as `Option<…>`, e.g. `Option<(Tensor, Tensor)>`",
                ),
                _ => {}
            }
        }
        (None, Some(arg)) => errors.push(
            &arg.ty,
            "a `hiddens` parameter needs `#[lightning_module(truncated_bptt_steps = N)]` on the impl block",
        ),
        (None, None) => {}
    }
    errors.count() == before
}
