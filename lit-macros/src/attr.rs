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
    pub(crate) default: Option<DefaultValue>,
}

/// A field's default: an expression, where a string literal is that text (not code to parse).
#[derive(Debug)]
pub(crate) struct DefaultValue(syn::Expr);

impl FromMeta for DefaultValue {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        Ok(DefaultValue(expr.clone()))
    }
}

impl DefaultValue {
    /// The field's default value as code: `"text".into()` for a string literal, so that it
    /// fits a `String` (or `&str`, `PathBuf`) field.
    pub(crate) fn to_code(&self) -> TokenStream {
        match &self.0 {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(text), .. }) => {
                quote::quote!(::core::convert::Into::into(#text))
            }
            expr => quote::quote!(#expr),
        }
    }
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
