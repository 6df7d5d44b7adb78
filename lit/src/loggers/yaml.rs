//! `hparams.yaml`, written with `serde_norway`, in the form PyYAML reads back with each value's
//! type.

use serde_json::Value;

/// `value` as a YAML document; an empty or absent object is `{}` as Lightning writes it.
///
/// YAML 1.1 (PyYAML's) reads a float only with a dot in the mantissa and a signed exponent, so
/// `1e-10` and `1e20`, as ryu writes them, would come back as strings: they are written
/// `1.0e-10` and `1.0e+20`, as PyYAML itself writes them. Strings that look like numbers are
/// quoted by the serializer, so only numbers are changed.
pub(crate) fn to_yaml(value: &Value) -> String {
    let value = match value {
        Value::Null => &Value::Object(serde_json::Map::new()),
        other => other,
    };
    let text = serde_norway::to_string(value).unwrap_or_else(|_| "{}\n".to_string());
    text.lines().map(|line| format!("{}\n", pyyaml_float(line))).collect()
}

/// The line with a plain float scalar (after `key: ` or `- `) in PyYAML's exponent form.
fn pyyaml_float(line: &str) -> std::borrow::Cow<'_, str> {
    let start = if let Some(i) = line.find(": ") {
        i + 2
    } else if let Some(rest) = line.trim_start().strip_prefix("- ") {
        line.len() - rest.len()
    } else {
        0
    };
    let (head, scalar) = line.split_at(start);
    let Some((mantissa, exponent)) = scalar.split_once('e') else { return line.into() };
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let unsigned_mantissa = mantissa.strip_prefix('-').unwrap_or(mantissa);
    let digits =
        unsigned_mantissa.split_once('.').map_or(numeric(unsigned_mantissa), |(a, b)| numeric(a) && numeric(b));
    let unsigned_exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
    if !digits || !numeric(unsigned_exponent) {
        return line.into();
    }
    let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
    let exponent = if exponent.starts_with(['-', '+']) { exponent.to_string() } else { format!("+{exponent}") };
    format!("{head}{mantissa}e{exponent}").into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_yaml;

    #[test]
    fn floats_are_written_as_pyyaml_reads_them() {
        let yaml = to_yaml(&json!({"lr": 1e-10, "big": 1e20, "half": 0.5, "n": 3, "name": "1e-10", "list": [1e-7, 2]}));
        assert!(yaml.contains("lr: 1.0e-10\n"), "{yaml}");
        assert!(yaml.contains("big: 1.0e+20\n"), "{yaml}");
        assert!(yaml.contains("half: 0.5\n"), "{yaml}");
        assert!(yaml.contains("n: 3\n"), "{yaml}");
        assert!(yaml.contains("name: '1e-10'\n"), "{yaml}");
        assert!(yaml.contains("- 1.0e-7\n"), "{yaml}");
        assert_eq!(to_yaml(&json!({})), "{}\n");
        assert_eq!(to_yaml(&serde_json::Value::Null), "{}\n");
    }
}
