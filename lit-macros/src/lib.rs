//! Procedural macros for lit: `#[lightning_module]` and `#[hparams]`. Use them through `lit`
//! (`use lit::prelude::*;`), which re-exports them.
//!
//! Each entry point is one call: parse (`ast`) → validate (`check`) → generate (`expand`). Every
//! mistake found is reported in one compile, each on the narrowest token.

mod ast;
mod attr;
mod check;
mod errors;
mod expand;
mod hooks;

use proc_macro::TokenStream;

/// Turns a struct and its impl block into a `lit::LightningModule`.
///
/// On the struct: finds the `nn::VarStore` field (by type, or marked `#[var_store]`), the
/// `#[hparams]` field and an `#[example_input]` field, and generates `hparams()`, `device()`,
/// `freeze()`, `unfreeze()`, `model_size()`, `example_input_array()` and
/// `load_from_checkpoint(path)`.
///
/// On the impl block: methods named as hooks (`training_step`, `validation_step`,
/// `configure_optimizers`, `on_train_epoch_end`, …) become the hook table; every other method
/// stays a plain method. Hooks may leave out parameters they do not use (`batch_idx`, `cx`,
/// `dataloader_idx`, …) and return the simplest type that says what they mean (a `Tensor` loss,
/// `()`, `Option<_>`, `lit::Result<_>`). Options: `truncated_bptt_steps = N`,
/// `automatic_optimization = false`, `crate = "path::to::lit"`.
///
/// Set `LIT_MACROS_DEBUG=1` while compiling to print the generated code.
#[proc_macro_attribute]
pub fn lightning_module(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::lightning_module(args.into(), input.into()).into()
}

/// Makes a struct a hyper-parameter set: derives `Clone`, `Debug`, `Serialize`, `Deserialize`,
/// `lit::Hparams` and `lit::cli::FieldDocs` (its fields' doc comments, for `--help`);
/// `#[hparams(default = expr)]` on a field gives it a default when a saved config lacks it.
#[proc_macro_attribute]
pub fn hparams(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::hparams(args.into(), input.into()).into()
}

/// Derives `lit::cli::FieldDocs` for a struct with named fields: each field's doc comment, which
/// the command line's `--help` shows next to the field's flag (`#[hparams]` structs get it too).
#[proc_macro_derive(FieldDocs)]
pub fn field_docs(input: TokenStream) -> TokenStream {
    expand::field_docs(input.into()).into()
}
