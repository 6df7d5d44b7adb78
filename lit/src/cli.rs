//! A command line for a module and a data module, as Lightning's `LightningCLI`:
//!
//! ```text
//! my-train fit --config config.yaml --trainer.max_epochs 5 --model.lr 0.01
//! my-train fit --trainer.max_epochs 5 --print_config > config.yaml
//! my-train test --config config.yaml --ckpt_path path/to/model.ckpt
//! ```
//!
//! ```no_run
//! # use lit::prelude::*;
//! # fn doc<M, D>() -> lit::Result<()>
//! # where
//! #     M: LightningModule + lit::__private::Init,
//! #     M::Hparams: Default,
//! #     D: lit::cli::DataModuleFor<M> + lit::cli::FromConfig,
//! # {
//! lit::cli::run::<M, D>()
//! # }
//! ```
//!
//! The configuration has five sections: `seed_everything`, `trainer` (every field of
//! [`TrainerConfig`]), `model` (the module's `#[hparams]`), `data` (the data module's
//! [`FromConfig::Config`]) and `ckpt_path`. Each value comes from, in increasing priority: its
//! default, the `--config` files (YAML, or TOML by the `.toml` extension) in the order given, and
//! the `--section.key value` flags. `--help` lists every flag with its default. An unknown key or a
//! value of the wrong type is an error naming the key; `--print_config` prints the complete,
//! merged configuration as YAML, which `--config` reads back.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::data::DataModule;
use crate::error::{Error, Result};
use crate::module::LightningModule;
use crate::trainer::{EvalMetrics, Trainer, TrainerBuilder, TrainerConfig};

/// A data module the command line builds from a configuration section (`data:`).
pub trait FromConfig: Sized {
    /// The configuration; its default is what `--print_config` shows without other input.
    type Config: Serialize + DeserializeOwned + Default;
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
    /// `{seed_everything, trainer, model, data, ckpt_path}`, merged.
    pub value: Value,
    /// `--print_config` was given.
    pub print_config: bool,
}

/// The parsed command line: print help (or a usage error) and exit, or run.
#[derive(Debug)]
pub enum Parsed {
    /// Run (or print the configuration).
    Config(CliConfig),
    /// `--help` or a usage error: clap's message, and whether it is an error.
    Exit(clap::Error),
}

/// The defaults of every section, for module hyper-parameters `H` and data configuration `C`.
fn defaults<H: Serialize + Default, C: Serialize + Default>(cli: &LitCli) -> Result<Value> {
    let json = |what: &str, r: serde_json::Result<Value>| r.map_err(|e| cli_error(format!("{what}: {e}")));
    Ok(serde_json::json!({
        "seed_everything": cli.seed_everything_default,
        "trainer": json("trainer defaults", serde_json::to_value(&cli.trainer_defaults))?,
        "model": json("model defaults", serde_json::to_value(H::default()))?,
        "data": json("data defaults", serde_json::to_value(C::default()))?,
        "ckpt_path": Value::Null,
    }))
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

/// The clap command: the four subcommands, each with `--config`, `--print_config` and a flag per
/// configuration leaf (`flags`: each leaf's path and default).
fn command(name: &str, flags: &[(String, Value)]) -> clap::Command {
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
        for (path, default) in flags {
            s = s.arg(
                clap::Arg::new(path.clone())
                    .long(path.clone())
                    .value_name("VALUE")
                    .allow_hyphen_values(true)
                    .help(format!("default: {default}")),
            );
        }
        cmd = cmd.subcommand(s);
    }
    cmd
}

/// The command line's own defaults (LightningCLI's `trainer_defaults` and
/// `seed_everything_default`). [`run`] is `LitCli::new().run::<M, D>()`.
#[derive(Default)]
pub struct LitCli {
    trainer_defaults: TrainerConfig,
    seed_everything_default: Option<u64>,
}

impl LitCli {
    /// Lightning's defaults: [`TrainerConfig::default`], no seed.
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

    /// Parses `args` (the program name first) for module `M` and data module `D`: merges the
    /// defaults, the `--config` files and the flags.
    pub fn parse<M, D>(&self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Parsed>
    where
        M: LightningModule + crate::__private::Init,
        M::Hparams: Default,
        D: FromConfig,
    {
        let defaults = defaults::<M::Hparams, D::Config>(self)?;
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let name = args.first().and_then(|a| Path::new(a).file_name()).map_or("lit".into(), |n| n.to_string_lossy());
        let mut flags = Vec::new();
        leaves(&defaults, "", &mut flags);
        let matches = match command(&name, &flags).try_get_matches_from(&args) {
            Ok(m) => m,
            Err(e) => return Ok(Parsed::Exit(e)),
        };
        let (sub, m) = matches.subcommand().expect("a subcommand is required");
        let subcommand = Subcommand::ALL.into_iter().find(|s| s.as_str() == sub).expect("a known subcommand");
        let mut value = defaults.clone();
        for file in m.get_many::<String>("config").into_iter().flatten() {
            let overlay = read_config(Path::new(file))?;
            merge(&mut value, overlay, "").map_err(|e| cli_error(format!("config file {file}: {e}")))?;
        }
        for (path, default) in &flags {
            if let Some(raw) = m.get_one::<String>(path) {
                set(&mut value, path, parse_value(raw, default));
            }
        }
        Ok(Parsed::Config(CliConfig { subcommand, value, print_config: m.get_flag("print_config") }))
    }

    /// Parses `args`, then prints help or a usage error and exits (status 0 or 2), or prints
    /// the configuration for `--print_config` and returns `None`, or builds everything.
    pub fn build<M, D>(&self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Option<Cli<M, D>>>
    where
        M: LightningModule + crate::__private::Init,
        M::Hparams: Default,
        D: FromConfig,
    {
        let config = match self.parse::<M, D>(args)? {
            Parsed::Exit(e) => e.exit(),
            Parsed::Config(config) => config,
        };
        if config.print_config {
            std::io::stdout().lock().write_all(config.to_yaml()?.as_bytes()).map_err(stdout_error)?;
            return Ok(None);
        }
        config.instantiate().map(Some)
    }

    /// The whole command line, from the process's arguments: `build`, then the subcommand;
    /// `validate` and `test` print their metrics.
    pub fn run<M, D>(&self) -> Result<()>
    where
        M: LightningModule + crate::__private::Init,
        M::Hparams: Default,
        D: FromConfig + DataModuleFor<M>,
    {
        let Some(mut cli) = self.build::<M, D>(std::env::args_os())? else { return Ok(()) };
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
/// `LitCli::new().run::<M, D>()`.
pub fn run<M, D>() -> Result<()>
where
    M: LightningModule + crate::__private::Init,
    M::Hparams: Default,
    D: FromConfig + DataModuleFor<M>,
{
    LitCli::new().run::<M, D>()
}

/// A flag's text as a value: kept as text where the default is text (so `--trainer.precision 32`
/// stays `"32"`), read as YAML otherwise (`5`, `0.01`, `true`, `null`, `[1, 2]`).
fn parse_value(raw: &str, default: &Value) -> Value {
    if default.is_string() {
        return Value::String(raw.to_string());
    }
    serde_norway::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn set(value: &mut Value, path: &str, new: Value) {
    let mut at = value;
    for key in path.split('.') {
        at = &mut at[key];
    }
    *at = new;
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

/// Merges `overlay` into `base`: every key of `overlay` must exist in `base`.
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
        if slot.as_object().is_some_and(|m| !m.is_empty()) && value.is_object() {
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

impl CliConfig {
    /// The configuration as YAML (what `--print_config` prints, and `--config` reads).
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(&self.value).map_err(|e| cli_error(format!("writing the configuration: {e}")))
    }

    /// The Trainer configuration.
    pub fn trainer(&self) -> Result<TrainerConfig> {
        section(&self.value, "trainer")
    }

    /// `ckpt_path`, if set.
    pub fn ckpt_path(&self) -> Result<Option<PathBuf>> {
        section(&self.value, "ckpt_path")
    }

    /// Seeds, then builds the Trainer, the module and the data module.
    pub fn instantiate<M, D>(self) -> Result<Cli<M, D>>
    where
        M: LightningModule + crate::__private::Init,
        D: FromConfig,
    {
        let seed: Option<u64> = section(&self.value, "seed_everything")?;
        let trainer_config = self.trainer()?;
        let hparams: M::Hparams = section(&self.value, "model")?;
        let data_config: D::Config = section(&self.value, "data")?;
        let ckpt_path = self.ckpt_path()?;
        if let Some(seed) = seed {
            crate::seed_everything(seed);
        }
        let trainer = TrainerBuilder::from_config(trainer_config).build()?;
        let model = M::init(hparams)?;
        let datamodule = D::from_config(data_config)?;
        Ok(Cli { subcommand: self.subcommand, config: self, trainer, model, datamodule, ckpt_path })
    }
}

/// The built objects of one invocation, as LightningCLI's `cli.trainer`, `cli.model`,
/// `cli.datamodule`.
pub struct Cli<M, D> {
    /// The subcommand.
    pub subcommand: Subcommand,
    /// The merged configuration it was built from.
    pub config: CliConfig,
    /// The Trainer.
    pub trainer: Trainer,
    /// The module.
    pub model: M,
    /// The data module.
    pub datamodule: D,
    /// `ckpt_path`.
    pub ckpt_path: Option<PathBuf>,
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
            if let Some(ckpt) = &ckpt {
                let path = trainer.resolve_checkpoint(&ckpt.to_string_lossy())?;
                crate::checkpoint::Checkpoint::load(&path)?.load_into(model.var_store_mut())?;
            }
            Ok(())
        };
        match self.subcommand {
            Subcommand::Fit => match &ckpt {
                Some(path) => trainer.fit_datamodule_from_checkpoint(model, dm, path).map(|()| Outcome::Fitted),
                None => trainer.fit_datamodule(model, dm).map(|()| Outcome::Fitted),
            },
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
