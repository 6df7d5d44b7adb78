//! A small YAML writer for hyper-parameters (`hparams.yaml`), from JSON values.

use serde_json::Value;

/// `value` as a YAML document; an empty or absent object is `{}` as Lightning writes it.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(map, 0, &mut out),
        Value::Object(_) | Value::Null => out.push_str("{}\n"),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars().all(|c| c.is_alphanumeric() || "_-./".contains(c))
                && s.parse::<f64>().is_err()
                && !["true", "false", "null", "yes", "no", "on", "off", "~"].contains(&s.to_lowercase().as_str());
            if plain { s.clone() } else { serde_json::to_string(s).unwrap_or_default() }
        }
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => serde_json::to_string(value).unwrap_or_default(),
    }
}

fn write_map(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (key, value) in map {
        let key = scalar(&Value::String(key.clone()));
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                write_map(m, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                for item in a {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
            other => out.push_str(&format!("{pad}{key}: {}\n", scalar(other))),
        }
    }
}
