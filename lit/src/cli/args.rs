//! Flags of the keys that hold classes (`trainer.callbacks`, `trainer.logger`), in
//! jsonargparse's forms: `--trainer.callbacks=VALUE` (a class name, a mapping or a list, as YAML
//! or JSON), `--trainer.callbacks+=VALUE` (append), `--trainer.callbacks.ARG=VALUE` (an init arg
//! of the class given last) and `--trainer.callbacks.help CLASS`. They are taken out of the
//! arguments before clap sees the rest, and applied in the order given.

use std::ffi::OsString;

use serde_json::{Map, Value};

use super::cli_error;
use super::registry::{Registry, spec_parts};
use crate::error::Result;

/// What a class flag does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `--key=VALUE`: replaces the value.
    Set,
    /// `--key+=VALUE`: appends a class (or a list of them).
    Append,
    /// `--key.ARG=VALUE`: sets init arg `ARG` of the last class given.
    InitArg(String),
    /// `--key.help CLASS`: prints the class's init args.
    Help,
}

/// One class flag, as given.
#[derive(Debug, Clone)]
pub(crate) struct ClassFlag {
    /// The configuration key (`trainer.callbacks`).
    pub(crate) key: &'static str,
    pub(crate) op: Op,
    /// The value's text.
    pub(crate) value: String,
    /// The flag as written, for messages (`--trainer.callbacks.monitor`).
    pub(crate) flag: String,
}

/// Splits the class flags of `keys` out of `args`; the rest goes to clap. A flag's value is
/// after `=` or the next argument; `--trainer.logger` alone means `true`.
pub(crate) fn extract(args: &[OsString], keys: &[&'static str]) -> Result<(Vec<OsString>, Vec<ClassFlag>)> {
    let mut rest = Vec::with_capacity(args.len());
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(text) = arg.to_str() else {
            rest.push(arg.clone());
            continue;
        };
        if text == "--" {
            rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        let Some(body) = text.strip_prefix("--") else {
            rest.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let Some((key, op)) = keys.iter().find_map(|&key| classify(name, key).map(|op| (key, op))) else {
            rest.push(arg.clone());
            continue;
        };
        let value = match inline {
            Some(value) => value,
            None => match args.get(i).and_then(|a| a.to_str()).filter(|next| !next.starts_with("--")) {
                Some(next) => {
                    i += 1;
                    next.to_string()
                }
                None if op == Op::Set && key == "trainer.logger" => "true".to_string(),
                None => return Err(cli_error(format!("`--{name}` needs a value"))),
            },
        };
        flags.push(ClassFlag { key, op, value, flag: format!("--{name}") });
    }
    Ok((rest, flags))
}

/// What flag `name` does to `key`, if it is one of `key`'s.
fn classify(name: &str, key: &str) -> Option<Op> {
    let tail = name.strip_prefix(key)?;
    match tail {
        "" => Some(Op::Set),
        "+" => Some(Op::Append),
        ".help" => Some(Op::Help),
        _ => {
            let arg = tail.strip_prefix('.')?;
            Some(Op::InitArg(arg.strip_prefix("init_args.").unwrap_or(arg).to_string()))
        }
    }
}

/// A flag's text as a value: YAML (which takes JSON too), or the text itself if it is not YAML.
pub(crate) fn yaml_value(raw: &str) -> Value {
    serde_norway::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// The value at dotted `path`.
pub(crate) fn at_mut<'v>(value: &'v mut Value, path: &str) -> &'v mut Value {
    path.split('.').fold(value, |at, key| &mut at[key])
}

/// Applies one class flag to the configuration.
pub(crate) fn apply(config: &mut Value, flag: &ClassFlag, registry: &Registry) -> Result<()> {
    let slot = at_mut(config, flag.key);
    match &flag.op {
        Op::Set => *slot = yaml_value(&flag.value),
        Op::Append => {
            let mut items = match slot.take() {
                Value::Null | Value::Bool(_) => Vec::new(),
                Value::Array(items) => items,
                single => vec![single],
            };
            match yaml_value(&flag.value) {
                Value::Array(more) => items.extend(more),
                one => items.push(one),
            }
            *slot = Value::Array(items);
        }
        Op::InitArg(arg) => {
            let last = if slot.is_array() {
                slot.as_array_mut().and_then(|items| items.last_mut())
            } else if slot.is_string() || slot.is_object() {
                Some(slot)
            } else {
                None
            };
            let last = last.ok_or_else(|| {
                cli_error(format!(
                    "`{}` sets an init arg of the class given before it, but none was: write `--{}=CLASS` (or `--{}+=CLASS`) first",
                    flag.flag, flag.key, flag.key
                ))
            })?;
            let (name, mut init_args) = spec_parts(last)
                .map(|(n, a)| (n.to_string(), a))
                .map_err(|p| cli_error(format!("`{}`: {p}", flag.flag)))?;
            // A text init arg keeps the flag's text (`--trainer.callbacks.filename=1` is "1").
            let text_default = registry.default_of(flag.key, &name, arg).is_some_and(|d| d.is_string());
            let value = if text_default { Value::String(flag.value.clone()) } else { yaml_value(&flag.value) };
            init_args.as_object_mut().expect("init_args is a mapping").insert(arg.clone(), value);
            *last = serde_json::json!({"class_path": name, "init_args": init_args});
        }
        Op::Help => {}
    }
    Ok(())
}

/// A configuration file's class value over the value so far, as jsonargparse merges them: a
/// mapping that names the same class (or none) adds its init args to the earlier ones; anything
/// else replaces the value.
pub(crate) fn merge_class(base: Value, overlay: Value) -> Value {
    let same_class = |b: &Map<String, Value>, o: &Map<String, Value>| match (b.get("class_path"), o.get("class_path")) {
        (_, None) => true,
        (Some(Value::String(b)), Some(Value::String(o))) => b.rsplit('.').next() == o.rsplit('.').next(),
        _ => false,
    };
    match (base, overlay) {
        (Value::Object(mut b), Value::Object(o)) if b.contains_key("class_path") && same_class(&b, &o) => {
            if let Some(Value::Object(args)) = o.get("init_args") {
                let merged = b.entry("init_args").or_insert_with(|| Value::Object(Map::new()));
                if !merged.is_object() {
                    *merged = Value::Object(Map::new());
                }
                let merged = merged.as_object_mut().expect("made a mapping above");
                for (k, v) in args {
                    merged.insert(k.clone(), v.clone());
                }
            }
            if let Some(path) = o.get("class_path") {
                b.insert("class_path".into(), path.clone());
            }
            Value::Object(b)
        }
        (_, overlay) => overlay,
    }
}
