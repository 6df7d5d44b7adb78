//! What `--help` says about each flag: the field's doc comment and its default.

use serde_json::Value;

/// A configuration struct whose fields' doc comments `--help` shows next to their flags.
/// `#[hparams]` structs and [`TrainerConfig`](crate::TrainerConfig) have it; derive it for a
/// data module's configuration with `#[derive(lit::cli::FieldDocs)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no field docs for `--help`",
    note = "add `#[hparams]` or `#[derive(lit::cli::FieldDocs)]` to the definition of `{Self}`"
)]
pub trait FieldDocs {
    /// `(field, doc comment)` for each documented field, in declaration order.
    fn field_docs() -> &'static [(&'static str, &'static str)];
}

impl FieldDocs for () {
    fn field_docs() -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// A default as `--help` shows it: text without quotes, anything else as JSON (`null`, `[1, 2]`).
pub(crate) fn show_default(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The doc comment of `field` among `docs`.
pub(crate) fn doc_of(docs: &[(&'static str, &'static str)], field: &str) -> Option<&'static str> {
    docs.iter().find(|(f, _)| *f == field).map(|(_, d)| *d)
}

/// A flag's help line: its doc comment, then its default.
pub(crate) fn flag_help(doc: Option<&str>, default: &Value) -> String {
    match doc {
        Some(doc) => format!("{doc} (default: {})", show_default(default)),
        None => format!("(default: {})", show_default(default)),
    }
}
