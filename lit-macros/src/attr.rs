//! Options of `#[lightning_module(...)]` and `#[hparams(...)]`, parsed with darling.

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro2::TokenStream;

/// `#[lightning_module(truncated_bptt_steps = N, automatic_optimization = false, crate = "…")]`.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct ModuleOptions {
    /// Split training batches into chunks of this many time steps.
    pub(crate) truncated_bptt_steps: Option<syn::LitInt>,
    /// `false`: the module steps its optimizers itself.
    pub(crate) automatic_optimization: Option<bool>,
    /// The path to the `lit` crate, when it is not `::lit`.
    #[darling(rename = "crate")]
    pub(crate) krate: Option<syn::Path>,
}

impl ModuleOptions {
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let items = NestedMeta::parse_meta_list(args)?;
        Self::from_list(&items).map_err(|e| {
            let message = e
                .to_string()
                .replace("Unknown field", "unknown `lightning_module` option")
                .replace("Duplicate field", "duplicate `lightning_module` option");
            syn::Error::new(e.span(), message)
        })
    }

    /// The path to lit in generated code.
    pub(crate) fn lit(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote::quote!(#path),
            None => quote::quote!(::lit),
        }
    }
}

/// `#[hparams(default = expr)]` on a field of an `#[hparams]` struct.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct FieldOptions {
    pub(crate) default: Option<syn::Expr>,
}

/// `#[hparams(crate = "…")]` on the struct.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct HparamsOptions {
    #[darling(rename = "crate")]
    pub(crate) krate: Option<syn::Path>,
}

impl HparamsOptions {
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let items = NestedMeta::parse_meta_list(args)?;
        Self::from_list(&items).map_err(|e| {
            let message = e
                .to_string()
                .replace("Unknown field", "unknown `hparams` option")
                .replace("Duplicate field", "duplicate `hparams` option");
            syn::Error::new(e.span(), message)
        })
    }
}
