//! A command line for a module and a data module, as Lightning's `LightningCLI`:
//!
//! ```text
//! my-train fit --config config.yaml --trainer.max_epochs 5 --model.lr 0.01
//! my-train fit --trainer.callbacks+=EarlyStopping --trainer.callbacks.monitor=val_loss
//! my-train fit --trainer.logger=TensorBoardLogger --trainer.logger.save_dir=logs
//! my-train fit --optimizer=AdamW --optimizer.lr=0.01 --lr_scheduler=StepLR --lr_scheduler.step_size=10
//! my-train fit --trainer.max_epochs 5 --print_config > config.yaml
//! my-train test --config config.yaml --ckpt_path path/to/model.ckpt
//! ```
//!
//! ```no_run
//! # use lit::prelude::*;
//! # fn doc<M, D>() -> lit::Result<()>
//! # where
//! #     M: LightningModule + lit::__private::Init,
//! #     M::Hparams: Default + lit::cli::FieldDocs,
//! #     D: lit::cli::DataModuleFor<M> + lit::cli::FromConfig + 'static,
//! # {
//! lit::cli::run::<M, D>()
//! # }
//! ```
//!
//! The configuration has seven sections: `seed_everything`, `trainer` (every field of
//! [`TrainerConfig`], plus `callbacks` and a `logger` that may name classes), `model` (the
//! module's `#[hparams]`), `data` (the data module's [`FromConfig::Config`]), `optimizer` and
//! `lr_scheduler` (torch's classes, which replace the module's `configure_optimizers`, as
//! LightningCLI's automatic optimizer arguments do) and `ckpt_path`.
//! Each value comes from its default, then the `--config` files (YAML, or TOML by the `.toml`
//! extension) and the `--section.key value` flags, applied in the order given (a later one
//! overrides an earlier one, as jsonargparse applies them), then the class flags.
//! `--help` lists every flag with its doc comment and default. An unknown key, class or init arg,
//! or a value of the wrong type, is an error naming it; `--print_config` prints the complete,
//! merged configuration as YAML, which `--config` reads back, and `fit` saves it as `config.yaml`
//! in the run's log directory ([`SaveConfigCallback`]).
//!
//! `trainer.callbacks` and `trainer.logger` take LightningCLI's forms: a class name
//! (`EarlyStopping`, or Lightning's full path `lightning.pytorch.callbacks.EarlyStopping`), a
//! mapping `{class_path: …, init_args: {…}}`, or a list of them (`trainer.logger` also `true` or
//! `false`). lit's built-in callbacks and loggers are known by their Lightning names; a program
//! adds its own with [`LitCli::register_callback`] and [`LitCli::register_logger`].

mod args;
mod builtins;
mod help;
mod optim;
mod registry;
mod save_config;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use help::FieldDocs;
/// Derives [`FieldDocs`](trait@FieldDocs): each field's doc comment, for `--help`.
pub use lit_macros::FieldDocs;
pub use save_config::SaveConfigCallback;

use crate::callback::Callback;
use crate::data::DataModule;
use crate::error::{Error, Result};
use crate::loggers::Logger;
use crate::module::LightningModule;
use crate::trainer::{EvalMetrics, Trainer, TrainerBuilder, TrainerConfig};
use args::{ClassFlag, Op};
use registry::Registry;

/// The keys whose values name classes, and take the class flags.
const CLASS_KEYS: [&str; 4] = ["trainer.callbacks", "trainer.logger", "optimizer", "lr_scheduler"];

/// A data module the command line builds from a configuration section (`data:`).
pub trait FromConfig: Sized {
    /// The configuration (an `#[hparams]` struct, or one with `#[derive(lit::cli::FieldDocs)]`);
    /// its default is what `--print_config` shows without other input.
    type Config: Serialize + DeserializeOwned + Default + FieldDocs;
    /// Builds the data module.
    fn from_config(config: Self::Config) -> Result<Self>;
}

/// A data module whose batches are module `M`'s, stage by stage (what every subcommand needs).
pub trait DataModuleFor<M: LightningModule>:
    DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch, TestBatch = M::TestBatch, PredictBatch = M::PredictBatch>
{
}

impl<M, D> DataModuleFor<M> for D
where
    M: LightningModule,
    D: DataModule<
            TrainBatch = M::TrainBatch,
            ValBatch = M::ValBatch,
            TestBatch = M::TestBatch,
            PredictBatch = M::PredictBatch,
        >,
{
}

/// What the command line runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    /// `fit`: train (and validate), resuming from `ckpt_path` if given.
    Fit,
    /// `validate`: one validation epoch, with `ckpt_path`'s weights if given.
    Validate,
    /// `test`: one test epoch, with `ckpt_path`'s weights if given.
    Test,
    /// `predict`: predictions over the data module's prediction loaders.
    Predict,
}

impl Subcommand {
    const ALL: [Subcommand; 4] = [Subcommand::Fit, Subcommand::Validate, Subcommand::Test, Subcommand::Predict];

    /// The subcommand's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Subcommand::Fit => "fit",
            Subcommand::Validate => "validate",
            Subcommand::Test => "test",
            Subcommand::Predict => "predict",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Subcommand::Fit => "Train the model (resuming from --ckpt_path if given)",
            Subcommand::Validate => "Run one validation epoch",
            Subcommand::Test => "Run one test epoch",
            Subcommand::Predict => "Run prediction",
        }
    }
}

/// One invocation's subcommand and merged configuration, before anything is built.
#[derive(Debug, Clone)]
pub struct CliConfig {
    /// The subcommand.
    pub subcommand: Subcommand,
    /// `{seed_everything, trainer, model, data, ckpt_path}`, merged; classes spelt out as
    /// `{class_path, init_args}` with every init arg.
    pub value: Value,
    /// `--print_config` was given.
    pub print_config: bool,
    /// The targets of argument links, which printed and saved configurations leave out (their
    /// values come from the links when the configuration is read back).
    link_targets: Vec<String>,
}

/// The parsed command line: print help (or a usage error) and exit, or run.
#[derive(Debug)]
pub enum Parsed {
    /// Run (or print the configuration).
    Config(CliConfig),
    /// `--help` or a usage error: clap's message, and whether it is an error.
    Exit(clap::Error),
}

fn cli_error(message: impl std::fmt::Display) -> Error {
    Error::Cli { message: message.to_string() }
}

/// Every leaf of `value` with its dotted path (`trainer.max_epochs`).
fn leaves(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(v, &path, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// One `--section.key` flag: its path, default, help text, and whether it may be given without
/// a value (a boolean: `--trainer.fast_dev_run` is `--trainer.fast_dev_run true`).
struct Flag {
    path: String,
    default: Value,
    help: String,
    bare: bool,
    /// A link's target: not shown (giving it is an error).
    hidden: bool,
}

/// The clap command: the four subcommands, each with `--config`, `--print_config`, a flag per
/// configuration leaf, and the class keys' flags (which [`args::extract`] takes out before clap
/// parses; here for `--help`).
fn command(name: &str, flags: &[Flag], class_help: &[(&str, String)]) -> clap::Command {
    let mut cmd = clap::Command::new(name.to_string())
        .about("Runs a lit module: fit, validate, test or predict, configured by files and flags")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for sub in Subcommand::ALL {
        let mut s = clap::Command::new(sub.as_str())
            .about(sub.about())
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .short('c')
                    .value_name("FILE")
                    .action(clap::ArgAction::Append)
                    .help("A YAML (or .toml) configuration file; several are merged in order"),
            )
            .arg(
                clap::Arg::new("print_config")
                    .long("print_config")
                    .action(clap::ArgAction::SetTrue)
                    .help("Print the merged configuration as YAML and exit"),
            );
        for flag in flags {
            // Given twice, the last value counts (argparse's `store`, as jsonargparse parses).
            let mut arg = clap::Arg::new(flag.path.clone())
                .long(flag.path.clone())
                .help(flag.help.clone())
                .overrides_with(flag.path.clone());
            arg = if flag.bare {
                let name = if flag.default.is_boolean() { "BOOL" } else { "VALUE" };
                arg.value_name(name).num_args(0..=1).default_missing_value("true")
            } else {
                arg.value_name("VALUE").allow_hyphen_values(true)
            };
            if flag.hidden {
                arg = arg.hide(true);
            }
            s = s.arg(arg);
        }
        for (key, help) in class_help {
            s = s.arg(clap::Arg::new(key.to_string()).long(key.to_string()).value_name("CLASS").help(help.clone()));
        }
        cmd = cmd.subcommand(s);
    }
    cmd
}

/// One `--config` file or one flag, applied in the order given.
enum Step<'a> {
    File(&'a String),
    Flag(&'a Flag, &'a String),
}

/// What a link on instantiation computes from the data module.
type FromData<D> = Box<dyn Fn(&D) -> Result<Value>>;

/// An argument link (LightningCLI's `link_arguments`): `target`'s value is `source`'s.
struct Link<D> {
    source: String,
    target: String,
    /// `None`: applied when parsing (from the configuration's `source`); `Some`: when the data
    /// module is built (`apply_on="instantiate"`), from the data module.
    on_instantiate: Option<FromData<D>>,
}

/// How `fit` (and the other subcommands) save the configuration: Lightning's
/// `save_config_callback` and `save_config_kwargs`.
struct SaveConfig {
    enabled: bool,
    filename: String,
    overwrite: bool,
}

/// The command line for module `M` and data module `D`, with its own defaults (LightningCLI's
/// `trainer_defaults` and `seed_everything_default`), registered callback and logger classes,
/// argument links and config saving. [`run`] is `LitCli::<M, D>::new().run()`.
///
/// ```no_run
/// # use lit::prelude::*;
/// # fn doc<M, D>() -> lit::Result<()>
/// # where
/// #     M: LightningModule + lit::__private::Init,
/// #     M::Hparams: Default + lit::cli::FieldDocs,
/// #     D: lit::cli::DataModuleFor<M> + lit::cli::FromConfig + 'static,
/// # {
/// lit::cli::LitCli::<M, D>::new()
///     .link("data.batch_size", "model.batch_size")
///     .save_config_overwrite(true)
///     .run()
/// # }
/// ```
pub struct LitCli<M, D> {
    trainer_defaults: TrainerConfig,
    seed_everything_default: Option<u64>,
    registry: Registry,
    links: Vec<Link<D>>,
    save_config: SaveConfig,
    /// The first mistake in a builder call (a link to a link's target, …), reported by `parse`.
    error: Option<String>,
    _types: PhantomData<fn() -> M>,
}

impl<M, D> Default for LitCli<M, D> {
    fn default() -> Self {
        LitCli {
            trainer_defaults: TrainerConfig::default(),
            seed_everything_default: None,
            registry: Registry::default(),
            links: Vec::new(),
            save_config: SaveConfig { enabled: true, filename: "config.yaml".into(), overwrite: false },
            error: None,
            _types: PhantomData,
        }
    }
}

impl<M, D> LitCli<M, D> {
    /// Lightning's defaults: [`TrainerConfig::default`], no seed, the built-in classes, the
    /// configuration saved as `config.yaml`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `trainer` section's defaults (what `--help` and `--print_config` show).
    pub fn trainer_defaults(mut self, config: TrainerConfig) -> Self {
        self.trainer_defaults = config;
        self
    }

    /// The default of `seed_everything`.
    pub fn seed_everything_default(mut self, seed: u64) -> Self {
        self.seed_everything_default = Some(seed);
        self
    }

    /// Lets `trainer.callbacks` name callback type `T` as `name`: its `init_args` deserialise
    /// into a `T` (`#[serde(default)]` gives init args defaults; state a callback keeps while
    /// running is `#[serde(skip)]`). A dotted `name` (`my_project.callbacks.MyCallback`) is
    /// what configurations are printed with; its last component is the short name.
    pub fn register_callback<T>(self, name: &str) -> Self
    where
        T: Callback + Serialize + DeserializeOwned,
    {
        self.register_callback_with(name, |callback: T| Ok(callback))
    }

    /// Lets `trainer.callbacks` name a callback built by `build` from init args `A`.
    pub fn register_callback_with<A, C>(mut self, name: &str, build: impl Fn(A) -> Result<C> + 'static) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
        C: Callback,
    {
        self.registry.callback(name, &[], build);
        self
    }

    /// Lets `trainer.logger` name logger type `T` as `name`: its `init_args` deserialise into a
    /// `T`.
    pub fn register_logger<T>(self, name: &str) -> Self
    where
        T: Logger + Serialize + DeserializeOwned,
    {
        self.register_logger_with(name, |logger: T| Ok(logger))
    }

    /// Lets `trainer.logger` name a logger built by `build` from init args `A`.
    pub fn register_logger_with<A, L>(mut self, name: &str, build: impl Fn(A) -> Result<L> + 'static) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
        L: Logger,
    {
        self.registry.logger(name, &[], build);
        self
    }

    /// Links two keys, as LightningCLI's `parser.link_arguments(source, target)`: when the
    /// command line is parsed, `target` (`model.batch_size`) takes `source`'s value
    /// (`data.batch_size`). Giving `target` in a file or a flag is then an error, and printed
    /// or saved configurations leave it out.
    pub fn link(mut self, source: &str, target: &str) -> Self {
        self.add_link(Link { source: source.into(), target: target.into(), on_instantiate: None });
        self
    }

    /// Links a value of the built data module to a model key, as LightningCLI's
    /// `link_arguments(source, target, apply_on="instantiate")`: `value` reads it from the data
    /// module (`|dm: &MyData| dm.num_classes`) once the data module is built, and the model's
    /// hyper-parameter `target` (`model.num_classes`) takes it. `source` names it in messages.
    pub fn link_on_instantiate<T: Serialize>(
        mut self,
        source: &str,
        target: &str,
        value: impl Fn(&D) -> T + 'static,
    ) -> Self {
        if !target.starts_with("model.") {
            self.error.get_or_insert(format!(
                "link_on_instantiate: the target `{target}` is not a model key; links computed from the data module set `model.…` keys"
            ));
        }
        let compute = move |dm: &D| serde_json::to_value(value(dm)).map_err(|e| cli_error(e.to_string()));
        self.add_link(Link { source: source.into(), target: target.into(), on_instantiate: Some(Box::new(compute)) });
        self
    }

    /// Records a link, or the first reason it cannot be (jsonargparse's checks).
    fn add_link(&mut self, link: Link<D>) {
        let problem = if self.links.iter().any(|l| l.target == link.target) {
            Some(format!("Target \"{}\" is already a target of another link.", link.target))
        } else if self.links.iter().any(|l| l.target == link.source) {
            Some(format!("Source \"{}\" not allowed since it is the target of another link.", link.source))
        } else if self.links.iter().any(|l| l.source == link.target && l.on_instantiate.is_none()) {
            Some(format!("Target \"{}\" not allowed since it is the source of another link.", link.target))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.error.get_or_insert(problem);
            }
            None => self.links.push(link),
        }
    }

    /// Whether to save the configuration in the run's log directory (default true; `false` is
    /// Lightning's `save_config_callback=None`).
    pub fn save_config(mut self, save: bool) -> Self {
        self.save_config.enabled = save;
        self
    }

    /// The saved configuration's file name (default `config.yaml`; Lightning's
    /// `save_config_kwargs={"config_filename": …}`).
    pub fn save_config_filename(mut self, name: impl Into<String>) -> Self {
        self.save_config.filename = name.into();
        self
    }

    /// Replace an existing saved configuration instead of failing (Lightning's
    /// `save_config_kwargs={"overwrite": True}`).
    pub fn save_config_overwrite(mut self, overwrite: bool) -> Self {
        self.save_config.overwrite = overwrite;
        self
    }
}

impl<M, D> LitCli<M, D>
where
    M: LightningModule + crate::__private::Init,
    M::Hparams: Default + FieldDocs,
    D: FromConfig + 'static,
{
    /// The defaults of every section.
    fn defaults(&self) -> Result<Value> {
        let json = |what: &str, r: serde_json::Result<Value>| r.map_err(|e| cli_error(format!("{what}: {e}")));
        let mut trainer = json("trainer defaults", serde_json::to_value(&self.trainer_defaults))?;
        trainer["callbacks"] = Value::Null;
        Ok(serde_json::json!({
            "seed_everything": self.seed_everything_default,
            "trainer": trainer,
            "model": json("model defaults", serde_json::to_value(M::Hparams::default()))?,
            "data": json("data defaults", serde_json::to_value(D::Config::default()))?,
            "optimizer": Value::Null,
            "lr_scheduler": Value::Null,
            "ckpt_path": Value::Null,
        }))
    }

    /// The flags of the configuration's leaves (the class keys have their own).
    fn flags(&self, defaults: &Value) -> Vec<Flag> {
        let mut all = Vec::new();
        leaves(defaults, "", &mut all);
        all.into_iter()
            .filter(|(path, _)| !CLASS_KEYS.contains(&path.as_str()))
            .map(|(path, default)| {
                let (section, field) = path.split_once('.').unwrap_or(("", &path));
                let doc = match section {
                    "trainer" => help::doc_of(TrainerConfig::field_docs(), field),
                    "model" => help::doc_of(M::Hparams::field_docs(), field),
                    "data" => help::doc_of(D::Config::field_docs(), field),
                    _ => match field {
                        "seed_everything" => Some(
                            "Seed libtorch's generators with this number before building anything; `true` picks \
                             a random seed (recorded in the saved configuration)",
                        ),
                        "ckpt_path" => Some(
                            "A checkpoint to resume `fit` from, or whose weights `validate`, `test` and `predict` \
                             use (\"best\", \"last\" or a path)",
                        ),
                        _ => None,
                    },
                };
                let bare = self.takes_bare_flag(defaults, &path, &default);
                let hidden = self.links.iter().any(|l| l.target == path);
                Flag { help: help::flag_help(doc, &default), bare, hidden, path, default }
            })
            .collect()
    }

    /// Whether the key at `path` takes `true` (a boolean, or `fast_dev_run`'s count-or-boolean):
    /// its flag may then be given alone.
    fn takes_bare_flag(&self, defaults: &Value, path: &str, default: &Value) -> bool {
        match default {
            Value::Bool(_) => return true,
            Value::String(_) | Value::Array(_) | Value::Object(_) => return false,
            Value::Null | Value::Number(_) => {}
        }
        let Some((section, rest)) = path.split_once('.') else {
            return path == "seed_everything";
        };
        let mut value = defaults[section].clone();
        *args::at_mut(&mut value, rest) = Value::Bool(true);
        match section {
            "trainer" => trainer_config(&value).is_ok(),
            "model" => serde_json::from_value::<M::Hparams>(value).is_ok(),
            "data" => serde_json::from_value::<D::Config>(value).is_ok(),
            _ => false,
        }
    }

    /// Parses `args` (the program name first): merges the defaults, the `--config` files and
    /// the flags, applies the links, and spells out the classes.
    pub fn parse(&self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Parsed> {
        if let Some(problem) = &self.error {
            return Err(cli_error(problem));
        }
        let defaults = self.defaults()?;
        self.check_links(&defaults)?;
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let name = args.first().and_then(|a| Path::new(a).file_name()).map_or("lit".into(), |n| n.to_string_lossy());
        let (rest, class_flags) = args::extract(&args, &CLASS_KEYS)?;
        if let Some(flag) = class_flags.iter().find(|f| f.op == Op::Help) {
            return self.class_help(flag).map(Parsed::Exit);
        }
        let flags = self.flags(&defaults);
        let matches = match command(&name, &flags, &self.class_flag_help()).try_get_matches_from(&rest) {
            Ok(m) => m,
            Err(e) => return Ok(Parsed::Exit(e)),
        };
        let (sub, m) = matches.subcommand().expect("a subcommand is required");
        let subcommand = Subcommand::ALL.into_iter().find(|s| s.as_str() == sub).expect("a known subcommand");
        let mut value = defaults.clone();
        let mut given = BTreeSet::new();
        // The files and flags apply in the order given, as jsonargparse parses them: a flag
        // before `--config` is overridden by the file, a flag after it overrides the file.
        let mut steps: Vec<(usize, Step)> = Vec::new();
        let files = m.get_many::<String>("config").into_iter().flatten();
        steps.extend(m.indices_of("config").into_iter().flatten().zip(files).map(|(i, f)| (i, Step::File(f))));
        for flag in &flags {
            if let (Some(raw), Some(i)) = (m.get_one::<String>(&flag.path), m.index_of(&flag.path)) {
                steps.push((i, Step::Flag(flag, raw)));
            }
        }
        steps.sort_by_key(|(i, _)| *i);
        for (_, step) in steps {
            match step {
                Step::File(file) => {
                    let overlay = read_config(Path::new(file))?;
                    let mut set = Vec::new();
                    leaves(&overlay, "", &mut set);
                    given.extend(set.into_iter().map(|(path, _)| path));
                    merge(&mut value, overlay, "").map_err(|e| cli_error(format!("config file {file}: {e}")))?;
                }
                Step::Flag(flag, raw) => {
                    *args::at_mut(&mut value, &flag.path) = parse_value(raw, &flag.default);
                    given.insert(flag.path.clone());
                }
            }
        }
        for flag in &class_flags {
            args::apply(&mut value, flag, &self.registry)?;
            given.insert(flag.key.to_string());
        }
        self.apply_links(&mut value, &given)?;
        value["trainer"]["callbacks"] = self.registry.callbacks.complete(&value["trainer"]["callbacks"])?;
        value["trainer"]["logger"] = self.registry.loggers.complete(&value["trainer"]["logger"])?;
        value["optimizer"] = self.registry.optimizers.complete(&value["optimizer"])?;
        value["lr_scheduler"] = self.registry.lr_schedulers.complete(&value["lr_scheduler"])?;
        Ok(Parsed::Config(CliConfig {
            subcommand,
            value,
            print_config: m.get_flag("print_config"),
            link_targets: self.links.iter().map(|l| l.target.clone()).collect(),
        }))
    }

    /// Every link's keys exist (an instantiation link's source names a data module value).
    fn check_links(&self, defaults: &Value) -> Result<()> {
        for link in &self.links {
            let missing = if link.on_instantiate.is_none() && !leaf_exists(defaults, &link.source) {
                Some(&link.source)
            } else if !leaf_exists(defaults, &link.target) {
                Some(&link.target)
            } else {
                None
            };
            if let Some(missing) = missing {
                return Err(cli_error(format!(
                    "Invalid link {} --> {}: `{missing}` is not a key",
                    link.source, link.target
                )));
            }
        }
        Ok(())
    }

    /// Refuses a link's target among the `given` keys, and copies each parse link's source.
    fn apply_links(&self, value: &mut Value, given: &BTreeSet<String>) -> Result<()> {
        for link in &self.links {
            if given.iter().any(|g| g == &link.target || g.starts_with(&format!("{}.", link.target))) {
                return Err(cli_error(format!("Linked \"{}\" must be given via \"{}\".", link.target, link.source)));
            }
            if link.on_instantiate.is_none() {
                let source = args::at_mut(value, &link.source).clone();
                *args::at_mut(value, &link.target) = source;
            }
        }
        Ok(())
    }

    /// The help of `--trainer.callbacks` and `--trainer.logger`.
    fn class_flag_help(&self) -> Vec<(&'static str, String)> {
        let forms = "a class name, {class_path: NAME, init_args: {...}} or a list of them, as YAML or JSON";
        vec![
            (
                "trainer.callbacks",
                format!(
                    "Callbacks: {forms}; --trainer.callbacks+=NAME appends one, --trainer.callbacks.ARG=VALUE sets an \
                     init arg of the last, --trainer.callbacks.help NAME lists them. Known: {} (default: null)",
                    self.registry.callbacks.names().join(", ")
                ),
            ),
            (
                "trainer.logger",
                format!(
                    "Loggers: true (a CSVLogger under default_root_dir), false, or {forms}; \
                     --trainer.logger.ARG=VALUE sets an init arg. Known: {} (default: true)",
                    self.registry.loggers.names().join(", ")
                ),
            ),
            (
                "optimizer",
                format!(
                    "The optimizer, in place of the module's `configure_optimizers`: a class name or {{class_path: \
                     NAME, init_args: {{...}}}}; --optimizer.ARG=VALUE sets an init arg, --optimizer.help NAME lists \
                     them. Known: {} (default: null)",
                    self.registry.optimizers.names().join(", ")
                ),
            ),
            (
                "lr_scheduler",
                format!(
                    "The optimizer's learning-rate scheduler (with `optimizer`), stepped every epoch: a class name \
                     or {{class_path: NAME, init_args: {{...}}}}; --lr_scheduler.ARG=VALUE sets an init arg. Known: {} \
                     (default: null)",
                    self.registry.lr_schedulers.names().join(", ")
                ),
            ),
        ]
    }

    /// `--trainer.callbacks.help CLASS`: the class's init args, as clap's help (exit status 0).
    fn class_help(&self, flag: &ClassFlag) -> Result<clap::Error> {
        let text = self.registry.help(flag.key, &flag.value)?;
        // clap's own `--help` outcome, with this text: printed to stdout, exit status 0.
        let help = clap::Command::new("help").override_help(text).disable_version_flag(true);
        Ok(help.try_get_matches_from(["help", "--help"]).expect_err("--help exits"))
    }

    /// Seeds, then builds the data module, the module (after the links computed from the data
    /// module) and the Trainer with the configured callbacks and loggers, and the
    /// [`SaveConfigCallback`] unless `fast_dev_run` is on or saving is off.
    pub fn instantiate(&self, mut config: CliConfig) -> Result<Cli<M, D>> {
        let seed = match &config.value["seed_everything"] {
            Value::Null | Value::Bool(false) => None,
            Value::Bool(true) => Some(u64::from(rand::random::<u32>())),
            other => Some(section::<u64>(&serde_json::json!({"seed_everything": other}), "seed_everything")?),
        };
        if let Some(seed) = seed {
            config.value["seed_everything"] = seed.into();
            crate::seed_everything(seed);
        }
        let trainer_config = config.trainer()?;
        let data_config: D::Config = section(&config.value, "data")?;
        let ckpt_path = config.ckpt_path()?;
        let datamodule = D::from_config(data_config)?;
        for link in &self.links {
            if let Some(compute) = &link.on_instantiate {
                *args::at_mut(&mut config.value, &link.target) = compute(&datamodule)?;
            }
        }
        let hparams: M::Hparams = section(&config.value, "model")?;
        let model = M::init(hparams)?;
        let mut builder = TrainerBuilder::from_config(trainer_config);
        builder.callbacks.extend(self.registry.callbacks.build(&config.value["trainer"]["callbacks"])?);
        builder.loggers.extend(self.registry.loggers.build(&config.value["trainer"]["logger"])?);
        builder = self.configure_optimizers(builder, &config.value)?;
        if self.save_config.enabled && builder.config.fast_dev_run == 0 {
            let callback = SaveConfigCallback::new(config.to_yaml()?)
                .config_filename(self.save_config.filename.clone())
                .overwrite(self.save_config.overwrite);
            builder.callbacks.push(Box::new(callback));
        }
        let trainer = builder.build()?;
        Ok(Cli { subcommand: config.subcommand, config, trainer, model, datamodule, ckpt_path, lr_finder: None })
    }

    /// LightningCLI's automatic `configure_optimizers`: with an `optimizer` (and maybe an
    /// `lr_scheduler`) configured, the Trainer uses them in place of the module's own, and says
    /// so when the module has one.
    fn configure_optimizers(&self, builder: TrainerBuilder, config: &Value) -> Result<TrainerBuilder> {
        let mut optimizers = self.registry.optimizers.build(&config["optimizer"])?;
        let mut schedulers = self.registry.lr_schedulers.build(&config["lr_scheduler"])?;
        if optimizers.len() > 1 || schedulers.len() > 1 {
            return Err(cli_error(
                "`optimizer` and `lr_scheduler` name one class each (LightningCLI's `configure_optimizers` returns \
                 one optimizer and at most one scheduler); for more, write the module's `configure_optimizers`",
            ));
        }
        let Some(optimizer) = optimizers.pop() else {
            if !schedulers.is_empty() {
                crate::warning::warn(
                    "`lr_scheduler` is configured but `optimizer` is not, so the scheduler is not used (the module's \
                     `configure_optimizers` is): give `--optimizer` too",
                );
            }
            return Ok(builder);
        };
        if M::HOOKS.configure_optimizers {
            let module = std::any::type_name::<M>().rsplit("::").next().unwrap_or_default();
            crate::warning::warn(&format!(
                "`{module}.configure_optimizers` will be overridden by `LitCli.configure_optimizers` (the configured \
                 `optimizer`)."
            ));
        }
        let scheduler = schedulers.pop();
        Ok(builder.configure_optimizers(move |_cx| {
            let optimizers = optimizer.optimizers();
            Ok(match &scheduler {
                Some(scheduler) => optimizers.scheduler(scheduler.scheduler()),
                None => optimizers,
            })
        }))
    }

    /// Parses `args`, then prints help or a usage error and exits (status 0 or 2), or prints
    /// the configuration for `--print_config` and returns `None`, or builds everything.
    pub fn build(&self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Option<Cli<M, D>>> {
        let config = match self.parse(args)? {
            Parsed::Exit(e) => e.exit(),
            Parsed::Config(config) => config,
        };
        if config.print_config {
            std::io::stdout().lock().write_all(config.to_yaml()?.as_bytes()).map_err(stdout_error)?;
            return Ok(None);
        }
        self.instantiate(config).map(Some)
    }

    /// The whole command line, from the process's arguments: `build`, then the subcommand;
    /// `validate` and `test` print their metrics.
    pub fn run(&self) -> Result<()>
    where
        D: DataModuleFor<M>,
    {
        let Some(mut cli) = self.build(std::env::args_os())? else { return Ok(()) };
        match cli.run()? {
            Outcome::Fitted => {}
            Outcome::Metrics(metrics) => {
                let mut out = std::io::stdout().lock();
                for (i, m) in metrics.iter().enumerate() {
                    let loader = if metrics.len() > 1 { format!("  (loader {i})") } else { String::new() };
                    for (k, v) in m {
                        writeln!(out, "{k:<24} {v:.6}{loader}").map_err(stdout_error)?;
                    }
                }
            }
            Outcome::Predictions(p) => {
                tracing::info!(target: "lit", predictions = p.len(), "predict finished");
            }
        }
        Ok(())
    }
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io { path: PathBuf::from("<stdout>"), source }
}

/// The whole command line for module `M` and data module `D` with Lightning's defaults:
/// `LitCli::<M, D>::new().run()`.
pub fn run<M, D>() -> Result<()>
where
    M: LightningModule + crate::__private::Init,
    M::Hparams: Default + FieldDocs,
    D: FromConfig + DataModuleFor<M> + 'static,
{
    LitCli::<M, D>::new().run()
}

/// Whether dotted `path` names a key of `value` (a leaf or a section).
fn leaf_exists(value: &Value, path: &str) -> bool {
    let mut at = value;
    for key in path.split('.') {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// A flag's text as a value: kept as text where the default is text (so `--trainer.precision 32`
/// stays `"32"`), read as YAML otherwise (`5`, `0.01`, `true`, `null`, `[1, 2]`).
fn parse_value(raw: &str, default: &Value) -> Value {
    if default.is_string() {
        return Value::String(raw.to_string());
    }
    args::yaml_value(raw)
}

/// Reads a configuration file: TOML by its extension, YAML otherwise.
fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<Value>(&text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str::<Value>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| cli_error(format!("config file {}: {e}", path.display())))
}

/// Merges `overlay` into `base`: every key of `overlay` must exist in `base`; the class keys
/// merge as jsonargparse merges a class's `init_args`.
fn merge(base: &mut Value, overlay: Value, prefix: &str) -> std::result::Result<(), String> {
    let Value::Object(overlay) = overlay else {
        if overlay.is_null() && prefix.is_empty() {
            return Ok(()); // an empty file
        }
        return Err(format!(
            "`{}` must be a mapping of keys to values",
            if prefix.is_empty() { "the file" } else { prefix }
        ));
    };
    let Value::Object(map) = base else { unreachable!("merge recurses into mappings only") };
    for (key, value) in overlay {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let Some(slot) = map.get_mut(&key) else {
            let hint = did_you_mean(&key, map.keys()).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
            return Err(format!("unknown key `{path}`{hint}"));
        };
        if CLASS_KEYS.contains(&path.as_str()) {
            *slot = args::merge_class(slot.take(), value);
        } else if slot.as_object().is_some_and(|m| !m.is_empty()) {
            if !value.is_object() {
                return Err(format!("`{path}` must be a mapping of keys to values, got {value}"));
            }
            merge(slot, value, &path)?;
        } else {
            *slot = value;
        }
    }
    Ok(())
}

/// The closest of `candidates` to `key`, if it is close.
fn did_you_mean<'a>(key: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    candidates
        .map(|c| (strsim::levenshtein(key, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Deserialises section `name` of the configuration, naming the key of a mismatched value.
fn section<T: DeserializeOwned>(value: &Value, name: &str) -> Result<T> {
    serde_path_to_error::deserialize(value[name].clone()).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { name.to_string() } else { format!("{name}.{path}") };
        cli_error(format!("`{key}`: {}", e.inner()))
    })
}

/// The `trainer` section as a [`TrainerConfig`]: its `callbacks` are not a Trainer option, and a
/// `logger` that names classes means `logger: true` (those loggers instead of the default).
fn trainer_config(trainer: &Value) -> Result<TrainerConfig> {
    let mut trainer = trainer.clone();
    if let Value::Object(map) = &mut trainer {
        map.remove("callbacks");
        if let Some(logger) = map.get_mut("logger")
            && !logger.is_boolean()
        {
            *logger = Value::Bool(true);
        }
    }
    section(&serde_json::json!({ "trainer": trainer }), "trainer")
}

impl CliConfig {
    /// The configuration as YAML (what `--print_config` prints, `fit` saves, and `--config`
    /// reads back); argument links' targets are left out.
    pub fn to_yaml(&self) -> Result<String> {
        let mut value = self.value.clone();
        for target in &self.link_targets {
            if let Some((parent, key)) = target.rsplit_once('.')
                && let Some(map) = args::at_mut(&mut value, parent).as_object_mut()
            {
                map.remove(key);
            }
        }
        serde_norway::to_string(&value).map_err(|e| cli_error(format!("writing the configuration: {e}")))
    }

    /// The Trainer configuration.
    pub fn trainer(&self) -> Result<TrainerConfig> {
        trainer_config(&self.value["trainer"])
    }

    /// `ckpt_path`, if set.
    pub fn ckpt_path(&self) -> Result<Option<PathBuf>> {
        section(&self.value, "ckpt_path")
    }
}

/// The built objects of one invocation, as LightningCLI's `cli.trainer`, `cli.model`,
/// `cli.datamodule`.
pub struct Cli<M, D> {
    /// The subcommand.
    pub subcommand: Subcommand,
    /// The merged configuration it was built from (with the seed `seed_everything: true` picked
    /// and the values of links computed from the data module).
    pub config: CliConfig,
    /// The Trainer.
    pub trainer: Trainer,
    /// The module.
    pub model: M,
    /// The data module.
    pub datamodule: D,
    /// `ckpt_path`.
    pub ckpt_path: Option<PathBuf>,
    /// After `fit` with a `LearningRateFinder` among `trainer.callbacks`: its range test (the
    /// suggestion, the curve), run before training as Lightning's callback runs it when fit starts.
    pub lr_finder: Option<crate::tuner::LrFinder>,
}

/// What a subcommand returned.
pub enum Outcome<P> {
    /// `fit` finished.
    Fitted,
    /// `validate` or `test`: the metrics of each loader.
    Metrics(Vec<EvalMetrics>),
    /// `predict`: the predictions.
    Predictions(Vec<P>),
}

impl<M, D> Cli<M, D>
where
    M: LightningModule,
    D: DataModuleFor<M>,
{
    /// Runs the subcommand.
    pub fn run(&mut self) -> Result<Outcome<M::Prediction>> {
        let (trainer, model, dm) = (&mut self.trainer, &mut self.model, &mut self.datamodule);
        let ckpt = self.ckpt_path.clone();
        let load = |trainer: &mut Trainer, model: &mut M| -> Result<()> {
            match &ckpt {
                Some(ckpt) => trainer.load_weights(model, &ckpt.to_string_lossy()),
                None => Ok(()),
            }
        };
        match self.subcommand {
            Subcommand::Fit => {
                let lr_find = crate::callbacks::first_of::<builtins::LearningRateFinder>(trainer.callbacks());
                if let Some(options) = lr_find.map(|f| f.0.clone()) {
                    let finder = crate::tuner::Tuner::new(trainer).lr_find_datamodule(model, dm, options)?;
                    tracing::info!(target: "lit", suggestion = ?finder.suggestion(), "LearningRateFinder: range test done");
                    self.lr_finder = Some(finder);
                }
                match &ckpt {
                    Some(path) => trainer.fit_datamodule_from_checkpoint(model, dm, path).map(|()| Outcome::Fitted),
                    None => trainer.fit_datamodule(model, dm).map(|()| Outcome::Fitted),
                }
            }
            Subcommand::Validate => {
                load(trainer, model)?;
                trainer.validate_datamodule(model, dm).map(Outcome::Metrics)
            }
            Subcommand::Test => {
                load(trainer, model)?;
                trainer.test_datamodule(model, dm).map(Outcome::Metrics)
            }
            Subcommand::Predict => {
                load(trainer, model)?;
                trainer.predict_datamodule(model, dm).map(Outcome::Predictions)
            }
        }
    }
}
