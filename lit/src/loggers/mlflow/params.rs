//! Hyper-parameters as MLflow parameters, in the form Lightning's `MLFlowLogger` gives them.

use serde_json::Value;

use crate::loggers::csv::python_repr;

/// MLflow's longest parameter value (`mlflow.utils.validation.MAX_PARAM_VAL_LENGTH`).
pub(super) const MAX_PARAM_VAL_LENGTH: usize = 6000;

/// `hparams` as `(key, value)` parameters, as Lightning's `log_hyperparams`: nested keys joined
/// with `/` (`_flatten_dict`), each value as Python's `str()` writes it, cut to
/// [`MAX_PARAM_VAL_LENGTH`] characters. An empty object gives no parameter.
pub(super) fn flatten(hparams: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Object(map) = hparams {
        for (k, v) in map {
            push(k.clone(), v, &mut out);
        }
    }
    out
}

fn push(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                push(format!("{key}/{k}"), v, out);
            }
        }
        other => {
            let text = python_str(other);
            let cut = text.char_indices().nth(MAX_PARAM_VAL_LENGTH).map_or(text.len(), |(at, _)| at);
            out.push((key, text[..cut].to_string()));
        }
    }
}

/// `str(value)` in Python, for the value JSON `value` reads back as.
fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr_of(other),
    }
}

/// `repr(value)` in Python (what `str()` of a list or dict writes for its items).
fn python_repr_of(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) if n.is_f64() => python_repr(n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => python_string_repr(s),
        Value::Array(items) => format!("[{}]", items.iter().map(python_repr_of).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", python_string_repr(k), python_repr_of(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A string's `repr`: single quotes unless it holds one and no double quote.
fn python_string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_read_as_python_str_writes_them_and_nested_keys_join_with_a_slash() {
        let hparams = json!({
            "lr": 1e-5, "hidden": 256, "whole": 1.0, "flag": true, "none": null, "name": "adam",
            "sizes": [1, 2.5, "a'b", false], "nested": {"depth": 2, "inner": {"x": "y"}, "empty": {}},
            "map_in_list": [{"k": "v"}],
        });
        let mut got: Vec<(String, String)> = flatten(&hparams);
        got.sort();
        let expected = [
            ("flag", "True"),
            ("hidden", "256"),
            ("lr", "1e-05"),
            ("map_in_list", "[{'k': 'v'}]"),
            ("name", "adam"),
            ("nested/depth", "2"),
            ("nested/inner/x", "y"),
            ("none", "None"),
            ("sizes", "[1, 2.5, \"a'b\", False]"),
            ("whole", "1.0"),
        ];
        let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, expected);
    }

    /// Lightning's `test_mlflow_logger_with_long_param_value`: values are cut to MLflow's limit.
    #[test]
    fn long_values_are_cut_to_mlflow_s_limit() {
        let got = flatten(&json!({ "test": "test_param".repeat(1000) }));
        assert_eq!(got[0].1.chars().count(), MAX_PARAM_VAL_LENGTH);
        assert!(flatten(&json!({})).is_empty());
    }
}
