//! The classes `trainer.callbacks`, `trainer.logger`, `optimizer` and `lr_scheduler` can name,
//! as LightningCLI's `class_path`/`init_args`: a registered name, the function that builds the
//! object from its `init_args`, and what `--help` and the checks need to know about those
//! arguments.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::callback::Callback;
use crate::error::Result;
use crate::loggers::Logger;

use super::optim::{CliOptimizer, CliScheduler};
use super::{FieldDocs, cli_error, did_you_mean};

/// Builds one object from its `init_args`.
type Build<T> = Box<dyn Fn(Value) -> Result<Box<T>>>;

/// One class a configuration can name.
pub(crate) struct Class<T: ?Sized> {
    /// The path configurations are written with (`lightning.pytorch.callbacks.EarlyStopping`).
    path: String,
    /// Other names it answers to (`CsvLogger` for `CSVLogger`).
    aliases: Vec<String>,
    /// The `init_args` it accepts, when its type says (a derived `Deserialize` does).
    fields: Option<&'static [&'static str]>,
    /// The doc comment of each init arg.
    docs: &'static [(&'static str, &'static str)],
    /// Every init arg with its default, when `{}` deserialises.
    defaults: Option<Map<String, Value>>,
    /// `init_args` → every init arg (defaults filled in), or what is wrong with them.
    complete: Box<dyn Fn(Value) -> std::result::Result<Value, String>>,
    build: Build<T>,
}

impl<T: ?Sized> Class<T> {
    fn new<A>(path: &str, docs: &'static [(&'static str, &'static str)], build: Build<T>) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
    {
        let complete = |init_args: Value| -> std::result::Result<Value, String> {
            let args: A = serde_path_to_error::deserialize(init_args).map_err(|e| {
                let path = e.path().to_string();
                if path == "." { e.inner().to_string() } else { format!("`{path}`: {}", e.inner()) }
            })?;
            serde_json::to_value(&args).map_err(|e| e.to_string())
        };
        let defaults = complete(Value::Object(Map::new())).ok().and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        });
        Class {
            path: path.to_string(),
            aliases: Vec::new(),
            fields: struct_fields::<A>(),
            docs,
            defaults,
            complete: Box::new(complete),
            build,
        }
    }

    /// The name after the last dot (`EarlyStopping`).
    pub(crate) fn short_name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }

    /// Whether `name`'s last component is this class's name or one of its aliases (a class
    /// path's namespace is not checked: lit has no Python modules to look in).
    fn answers_to(&self, name: &str) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        name == self.path || last == self.short_name() || self.aliases.iter().any(|a| a == last)
    }

    /// The default of init arg `arg`, if known.
    pub(crate) fn default_of(&self, arg: &str) -> Option<&Value> {
        self.defaults.as_ref()?.get(arg)
    }

    /// `--trainer.callbacks.help CLASS`: the init args, their docs and defaults.
    pub(crate) fn help(&self, key: &str) -> String {
        let mut out = format!("{} ({}): the init args of `--{key}`\n", self.short_name(), self.path);
        let names: Vec<&str> = match self.fields {
            Some(fields) => fields.to_vec(),
            None => self.defaults.iter().flat_map(|d| d.keys().map(String::as_str)).collect(),
        };
        for name in names {
            let doc = self.docs.iter().find(|(f, _)| *f == name).map_or("", |(_, d)| d);
            let default = self.default_of(name).map_or_else(|| "required".to_string(), super::help::show_default);
            out.push_str(&format!("  --{key}.{name}\n      {doc} (default: {default})\n"));
        }
        out
    }
}

/// The classes one key can name, and how they are spelt in messages.
pub(crate) struct Classes<T: ?Sized> {
    /// The configuration key (`trainer.callbacks`).
    pub(crate) key: &'static str,
    /// "callback" or "logger".
    what: &'static str,
    list: Vec<Class<T>>,
}

impl<T: ?Sized> Classes<T> {
    fn new(key: &'static str, what: &'static str) -> Self {
        Classes { key, what, list: Vec::new() }
    }

    /// Registers `class`; a later class with the same name replaces the earlier one.
    fn add(&mut self, class: Class<T>) -> &mut Class<T> {
        self.list.retain(|c| c.short_name() != class.short_name());
        self.list.push(class);
        self.list.last_mut().expect("just pushed")
    }

    /// The registered names, in order.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.list.iter().map(Class::short_name).collect()
    }

    /// The class `name` names: its exact path first, then by its last component.
    pub(crate) fn resolve(&self, name: &str, at: &str) -> Result<&Class<T>> {
        self.list
            .iter()
            .find(|c| c.path == name)
            .or_else(|| self.list.iter().rev().find(|c| c.answers_to(name)))
            .ok_or_else(|| {
                let last = name.rsplit('.').next().unwrap_or(name);
                let names: Vec<String> = self.list.iter().map(|c| c.short_name().to_string()).collect();
                let hint =
                    did_you_mean(last, names.iter()).map(|n| format!(" did you mean `{n}`?")).unwrap_or_default();
                cli_error(format!("`{at}`: unknown {} class `{name}`;{hint} known: {}", self.what, names.join(", ")))
            })
    }

    /// The value of this key with every class spelt out: `{class_path, init_args}` with the
    /// class's full path and every init arg (defaults filled in); a single class stays a mapping,
    /// a list a list, and `null` or a boolean (`logger: false`) is kept.
    pub(crate) fn complete(&self, value: &Value) -> Result<Value> {
        match value {
            Value::Null | Value::Bool(_) => Ok(value.clone()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.complete_one(item, &format!("{}[{i}]", self.key)))
                .collect::<Result<Vec<_>>>()
                .map(Value::Array),
            single => self.complete_one(single, self.key),
        }
    }

    fn complete_one(&self, value: &Value, at: &str) -> Result<Value> {
        let (name, init_args) = spec_parts(value).map_err(|problem| cli_error(format!("`{at}`: {problem}")))?;
        let class = self.resolve(name, at)?;
        if let (Some(fields), Value::Object(args)) = (class.fields, &init_args) {
            for key in args.keys() {
                if !fields.contains(&key.as_str()) {
                    let known: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
                    let hint =
                        did_you_mean(key, known.iter()).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
                    return Err(cli_error(format!(
                        "`{at}`: {} has no init arg `{key}`{hint} (it takes {})",
                        class.short_name(),
                        fields.join(", ")
                    )));
                }
            }
        }
        let init_args = (class.complete)(init_args)
            .map_err(|problem| cli_error(format!("`{at}` ({}): {problem}", class.short_name())))?;
        Ok(serde_json::json!({"class_path": class.path, "init_args": init_args}))
    }

    /// Builds the objects a completed value names (none for `null` and booleans).
    pub(crate) fn build(&self, value: &Value) -> Result<Vec<Box<T>>> {
        let items: Vec<&Value> = match value {
            Value::Null | Value::Bool(_) => Vec::new(),
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        items
            .into_iter()
            .map(|item| {
                let (name, init_args) = spec_parts(item).map_err(|p| cli_error(format!("`{}`: {p}", self.key)))?;
                let class = self.resolve(name, self.key)?;
                (class.build)(init_args).map_err(|e| match e {
                    crate::Error::Cli { message } => cli_error(format!("`{}`: {message}", self.key)),
                    other => other,
                })
            })
            .collect()
    }
}

/// A class given as its name, or as `{class_path, init_args}`: its name and init args.
pub(crate) fn spec_parts(value: &Value) -> std::result::Result<(&str, Value), String> {
    let expected = "expected a class name or a mapping {class_path: NAME, init_args: {...}}";
    match value {
        Value::String(name) => Ok((name, Value::Object(Map::new()))),
        Value::Object(map) => {
            if let Some(key) = map.keys().find(|k| *k != "class_path" && *k != "init_args") {
                return Err(format!("unknown key `{key}`; {expected}"));
            }
            let Some(Value::String(name)) = map.get("class_path") else {
                return Err(format!("no `class_path`; {expected}"));
            };
            match map.get("init_args") {
                None | Some(Value::Null) => Ok((name, Value::Object(Map::new()))),
                Some(args @ Value::Object(_)) => Ok((name, args.clone())),
                Some(other) => Err(format!("`init_args` must be a mapping of argument names to values, got {other}")),
            }
        }
        other => Err(format!("{expected}; got {other}")),
    }
}

/// The classes the class keys can name: lit's built-ins (see `builtins.rs` and `optim.rs`) and
/// the callbacks and loggers a program registers.
pub(crate) struct Registry {
    pub(crate) callbacks: Classes<dyn Callback>,
    pub(crate) loggers: Classes<dyn Logger>,
    pub(crate) optimizers: Classes<dyn CliOptimizer>,
    pub(crate) lr_schedulers: Classes<dyn CliScheduler>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut registry = Registry {
            callbacks: Classes::new("trainer.callbacks", "callback"),
            loggers: Classes::new("trainer.logger", "logger"),
            optimizers: Classes::new("optimizer", "optimizer"),
            lr_schedulers: Classes::new("lr_scheduler", "lr_scheduler"),
        };
        super::builtins::register(&mut registry);
        super::optim::register(&mut registry);
        registry
    }
}

/// A class built by `build` from init args `A`, registered under `path`.
fn class<T: ?Sized + 'static, A>(
    path: &str,
    docs: &'static [(&'static str, &'static str)],
    build: impl Fn(A) -> Result<Box<T>> + 'static,
) -> Class<T>
where
    A: Serialize + DeserializeOwned + 'static,
{
    let build: Build<T> = Box::new(move |init_args| {
        let args: A = serde_json::from_value(init_args).map_err(|e| cli_error(e.to_string()))?;
        build(args)
    });
    Class::new::<A>(path, docs, build)
}

impl Registry {
    /// Registers a callback built by `build` from init args `A`, under `path` (its last
    /// component is the short name).
    pub(crate) fn callback<A, C>(
        &mut self,
        path: &str,
        docs: &'static [(&'static str, &'static str)],
        build: impl Fn(A) -> Result<C> + 'static,
    ) -> &mut Class<dyn Callback>
    where
        A: Serialize + DeserializeOwned + 'static,
        C: Callback,
    {
        self.callbacks.add(class(path, docs, move |args: A| Ok(Box::new(build(args)?) as Box<dyn Callback>)))
    }

    /// Registers a logger built by `build` from init args `A`, under `path`.
    pub(crate) fn logger<A, L>(
        &mut self,
        path: &str,
        docs: &'static [(&'static str, &'static str)],
        build: impl Fn(A) -> Result<L> + 'static,
    ) -> &mut Class<dyn Logger>
    where
        A: Serialize + DeserializeOwned + 'static,
        L: Logger,
    {
        self.loggers.add(class(path, docs, move |args: A| Ok(Box::new(build(args)?) as Box<dyn Logger>)))
    }

    /// Registers an optimizer class under `path`: its init args are `A`.
    pub(crate) fn optimizer<A>(&mut self, path: &str) -> &mut Class<dyn CliOptimizer>
    where
        A: CliOptimizer + FieldDocs + Serialize + DeserializeOwned + 'static,
    {
        self.optimizers.add(class(
            path,
            A::field_docs(),
            |args: A| Ok(Box::new(args.check()?) as Box<dyn CliOptimizer>),
        ))
    }

    /// Registers a learning-rate scheduler class under `path`: its init args are `A`.
    pub(crate) fn lr_scheduler<A>(&mut self, path: &str) -> &mut Class<dyn CliScheduler>
    where
        A: CliScheduler + FieldDocs + Serialize + DeserializeOwned + 'static,
    {
        self.lr_schedulers
            .add(class(path, A::field_docs(), |args: A| Ok(Box::new(args.check()?) as Box<dyn CliScheduler>)))
    }

    /// The default of init arg `arg` of class `name` under class key `key`, if known.
    pub(crate) fn default_of(&self, key: &str, name: &str, arg: &str) -> Option<Value> {
        match key {
            "trainer.logger" => self.loggers.resolve(name, key).ok()?.default_of(arg).cloned(),
            "optimizer" => self.optimizers.resolve(name, key).ok()?.default_of(arg).cloned(),
            "lr_scheduler" => self.lr_schedulers.resolve(name, key).ok()?.default_of(arg).cloned(),
            _ => self.callbacks.resolve(name, key).ok()?.default_of(arg).cloned(),
        }
    }

    /// `--KEY.help CLASS`: the init args of class `name` under class key `key`.
    pub(crate) fn help(&self, key: &str, name: &str) -> Result<String> {
        Ok(match key {
            "trainer.logger" => self.loggers.resolve(name, key)?.help(key),
            "optimizer" => self.optimizers.resolve(name, key)?.help(key),
            "lr_scheduler" => self.lr_schedulers.resolve(name, key)?.help(key),
            _ => self.callbacks.resolve(name, key)?.help(key),
        })
    }
}

impl<T: ?Sized> Class<T> {
    /// Also answers to `alias` (a short name).
    pub(crate) fn alias(&mut self, alias: &str) -> &mut Self {
        self.aliases.push(alias.to_string());
        self
    }
}

/// The field names `A`'s `Deserialize` asks for, when it is a struct (derived `Deserialize`
/// tells them to the deserializer): asked of a deserializer that records them and stops.
fn struct_fields<A: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut probe = FieldProbe(None);
    let _ = A::deserialize(&mut probe);
    probe.0
}

struct FieldProbe(Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for &mut FieldProbe {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _visitor: V) -> std::result::Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
