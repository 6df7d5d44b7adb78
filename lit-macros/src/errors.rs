//! Collect errors, report them all at once.

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Errors found so far; every stage adds to it and the entry point reports them together with
/// [`Errors::into_compile_errors`]. Like serde_derive's `Ctxt`, it cannot be dropped unread:
/// forgetting to report is a bug that panics at expansion time rather than losing errors.
pub(crate) struct Errors {
    errors: Option<Vec<syn::Error>>,
}

impl Default for Errors {
    fn default() -> Self {
        Errors { errors: Some(Vec::new()) }
    }
}

impl Errors {
    fn list(&mut self) -> &mut Vec<syn::Error> {
        self.errors.as_mut().expect("errors are read once, at the end")
    }

    pub(crate) fn push(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.list().push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn push_span(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.list().push(syn::Error::new(span, message));
    }

    pub(crate) fn add(&mut self, error: syn::Error) {
        self.list().push(error);
    }

    /// How many errors were found so far (a stage compares counts to know whether it added one).
    pub(crate) fn count(&self) -> usize {
        self.errors.as_ref().map_or(0, Vec::len)
    }

    /// The errors as `compile_error!` invocations; the collector is spent.
    pub(crate) fn into_compile_errors(mut self) -> TokenStream {
        self.errors.take().unwrap_or_default().iter().map(syn::Error::to_compile_error).collect()
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("lit-macros: errors were collected but never reported");
        }
    }
}
