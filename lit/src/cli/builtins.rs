//! lit's built-in callbacks and loggers as the command line names them: one line each in
//! [`register`], and the init args each takes, named and defaulted as Lightning's (the subset lit
//! implements).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::FieldDocs;
use super::registry::{Class, Registry};
use crate::callback::Callback;
use crate::callbacks::{
    BackboneFinetuning, EarlyStopping, GradientAccumulationScheduler, LearningRateMonitor, LoggingInterval, Mode,
    ModelCheckpoint, ModelSummary, OnExceptionCheckpoint, PredictionFormat, PredictionWriter,
    StochasticWeightAveraging, Timer, TqdmProgressBar, WriteInterval,
};
use crate::error::Result;
use crate::loggers::{CsvLogger, LogModel, MlflowLogger, TensorBoardLogger};
use crate::tuner::{LrFindOptions, LrMode};

/// Every built-in class, one line each: its configuration path (Lightning's, so that configurations
/// read the same), its init args and how they build it.
pub(super) fn register(r: &mut Registry) {
    callback::<ModelCheckpointArgs>(r, "lightning.pytorch.callbacks.ModelCheckpoint");
    callback::<EarlyStoppingArgs>(r, "lightning.pytorch.callbacks.EarlyStopping");
    callback::<LearningRateMonitorArgs>(r, "lightning.pytorch.callbacks.LearningRateMonitor");
    callback::<ModelSummaryArgs>(r, "lightning.pytorch.callbacks.ModelSummary");
    callback::<TimerArgs>(r, "lightning.pytorch.callbacks.Timer");
    callback::<GradientAccumulationSchedulerArgs>(r, "lightning.pytorch.callbacks.GradientAccumulationScheduler");
    callback::<OnExceptionCheckpointArgs>(r, "lightning.pytorch.callbacks.OnExceptionCheckpoint");
    callback::<PredictionWriterArgs>(r, "lit.callbacks.PredictionWriter");
    callback::<SwaArgs>(r, "lightning.pytorch.callbacks.StochasticWeightAveraging");
    callback::<BackboneFinetuningArgs>(r, "lightning.pytorch.callbacks.BackboneFinetuning");
    callback::<LearningRateFinderArgs>(r, "lightning.pytorch.callbacks.LearningRateFinder");
    callback::<TqdmProgressBarArgs>(r, "lightning.pytorch.callbacks.TQDMProgressBar").alias("TqdmProgressBar");
    r.logger("lightning.pytorch.loggers.CSVLogger", LoggerArgs::field_docs(), LoggerArgs::csv).alias("CsvLogger");
    r.logger("lightning.pytorch.loggers.TensorBoardLogger", LoggerArgs::field_docs(), LoggerArgs::tensorboard);
    r.logger("lightning.pytorch.loggers.MLFlowLogger", MlflowArgs::field_docs(), MlflowArgs::build)
        .alias("MlflowLogger");
}

/// A class's init args: named and defaulted as Lightning's, documented for `--help`, and what
/// they build.
trait InitArgs: Serialize + DeserializeOwned + FieldDocs + 'static {
    /// The callback (or logger) they build.
    type Built;
    /// Builds it; init args that do not go together are an error naming them.
    fn build(self) -> Result<Self::Built>;
}

/// Registers the callback init args `A` build under `path`.
fn callback<'r, A: InitArgs<Built: Callback>>(r: &'r mut Registry, path: &str) -> &'r mut Class<dyn Callback> {
    r.callback(path, A::field_docs(), A::build)
}

/// A duration init arg: `"DD:HH:MM:SS"` (Lightning's) or `"1h30m"`, `"90s"`.
fn duration(class: &str, arg: &str, text: &str) -> Result<std::time::Duration> {
    Timer::parse(text).map_err(|_| {
        super::cli_error(format!(
            "{class}: `{arg}` \"{text}\" is neither \"DD:HH:MM:SS\" nor a duration such as \"1h30m\", \"90s\" or \"2d 12h\""
        ))
    })
}

/// An init arg Lightning (or torch) requires (`None` here so that the others' defaults stay
/// known).
pub(super) fn required<T>(class: &str, arg: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| super::cli_error(format!("{class}: the init arg `{arg}` is required")))
}

/// `ModelCheckpoint`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct ModelCheckpointArgs {
    /// The directory (default: `checkpoints/` in the logger's run directory).
    dirpath: Option<PathBuf>,
    /// The file name template, without `.ckpt` (default `{epoch}-{step}`).
    filename: Option<String>,
    /// The logged metric that ranks checkpoints.
    monitor: Option<String>,
    /// Also keep `last.ckpt`.
    save_last: Option<bool>,
    /// How many checkpoints to keep (-1: all).
    save_top_k: i64,
    /// "min" or "max": which values of `monitor` are better.
    mode: Mode,
    /// Save every this many training steps.
    every_n_train_steps: Option<usize>,
    /// Save at most once per this much training time ("00:01:00:00", "30m").
    train_time_interval: Option<String>,
    /// Save every this many epochs.
    every_n_epochs: Option<usize>,
}

impl Default for ModelCheckpointArgs {
    fn default() -> Self {
        ModelCheckpointArgs {
            dirpath: None,
            filename: None,
            monitor: None,
            save_last: None,
            save_top_k: 1,
            mode: Mode::Min,
            every_n_train_steps: None,
            train_time_interval: None,
            every_n_epochs: None,
        }
    }
}

impl InitArgs for ModelCheckpointArgs {
    type Built = ModelCheckpoint;

    fn build(self) -> Result<ModelCheckpoint> {
        let mut c = ModelCheckpoint::new().save_top_k(self.save_top_k).mode(self.mode);
        if let Some(dirpath) = self.dirpath {
            c = c.dirpath(dirpath);
        }
        if let Some(filename) = self.filename {
            c = c.filename(filename);
        }
        if let Some(monitor) = self.monitor {
            c = c.monitor(monitor);
        }
        if let Some(save_last) = self.save_last {
            c = c.save_last(save_last);
        }
        if let Some(n) = self.every_n_train_steps {
            c = c.every_n_train_steps(n);
        }
        if let Some(interval) = self.train_time_interval {
            c = c.train_time_interval(duration("ModelCheckpoint", "train_time_interval", &interval)?);
        }
        if let Some(n) = self.every_n_epochs {
            c = c.every_n_epochs(n);
        }
        Ok(c)
    }
}

/// `EarlyStopping`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct EarlyStoppingArgs {
    /// The logged metric to watch (required).
    monitor: Option<String>,
    /// The least change that counts as an improvement.
    min_delta: f64,
    /// Checks without improvement before stopping.
    patience: usize,
    /// "min" or "max": which values of `monitor` are better.
    mode: Mode,
    /// Stop when the metric is NaN or infinite.
    check_finite: bool,
    /// Stop as soon as the metric is this good.
    stopping_threshold: Option<f64>,
    /// Stop as soon as the metric is this bad.
    divergence_threshold: Option<f64>,
}

impl Default for EarlyStoppingArgs {
    fn default() -> Self {
        EarlyStoppingArgs {
            monitor: None,
            min_delta: 0.0,
            patience: 3,
            mode: Mode::Min,
            check_finite: true,
            stopping_threshold: None,
            divergence_threshold: None,
        }
    }
}

impl InitArgs for EarlyStoppingArgs {
    type Built = EarlyStopping;

    fn build(self) -> Result<EarlyStopping> {
        let mut c = EarlyStopping::new(required("EarlyStopping", "monitor", self.monitor)?)
            .min_delta(self.min_delta)
            .patience(self.patience)
            .mode(self.mode)
            .check_finite(self.check_finite);
        if let Some(t) = self.stopping_threshold {
            c = c.stopping_threshold(t);
        }
        if let Some(t) = self.divergence_threshold {
            c = c.divergence_threshold(t);
        }
        Ok(c)
    }
}

/// `"step"` or `"epoch"`.
#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Interval {
    Step,
    Epoch,
}

/// `LearningRateMonitor`'s init args.
#[derive(Serialize, Deserialize, FieldDocs, Default)]
#[serde(default)]
struct LearningRateMonitorArgs {
    /// "step" or "epoch" (default: every step).
    logging_interval: Option<Interval>,
}

impl InitArgs for LearningRateMonitorArgs {
    type Built = LearningRateMonitor;

    fn build(self) -> Result<LearningRateMonitor> {
        Ok(LearningRateMonitor::new(match self.logging_interval {
            Some(Interval::Epoch) => LoggingInterval::Epoch,
            Some(Interval::Step) | None => LoggingInterval::Step,
        }))
    }
}

/// `ModelSummary`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct ModelSummaryArgs {
    /// Levels of nested modules to show (-1: all, 0: no summary).
    max_depth: i64,
}

impl Default for ModelSummaryArgs {
    fn default() -> Self {
        ModelSummaryArgs { max_depth: 1 }
    }
}

impl InitArgs for ModelSummaryArgs {
    type Built = ModelSummary;

    fn build(self) -> Result<ModelSummary> {
        Ok(ModelSummary::new(self.max_depth))
    }
}

/// `Timer`'s init args.
#[derive(Serialize, Deserialize, FieldDocs, Default)]
#[serde(default)]
struct TimerArgs {
    /// Stop training after this much time: "DD:HH:MM:SS" or "1h30m" (default: no limit).
    duration: Option<String>,
}

impl InitArgs for TimerArgs {
    type Built = Timer;

    fn build(self) -> Result<Timer> {
        let limit = self.duration.as_deref().map(|d| duration("Timer", "duration", d)).transpose()?;
        Ok(Timer::new(limit.unwrap_or(std::time::Duration::MAX)))
    }
}

/// `GradientAccumulationScheduler`'s init args.
#[derive(Serialize, Deserialize, FieldDocs, Default)]
#[serde(default)]
struct GradientAccumulationSchedulerArgs {
    /// From each epoch on, accumulate this many batches: `{0: 8, 4: 4}` (required).
    scheduling: BTreeMap<usize, usize>,
}

impl InitArgs for GradientAccumulationSchedulerArgs {
    type Built = GradientAccumulationScheduler;

    fn build(self) -> Result<GradientAccumulationScheduler> {
        GradientAccumulationScheduler::new(self.scheduling)
    }
}

/// `OnExceptionCheckpoint`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct OnExceptionCheckpointArgs {
    /// The directory of the checkpoint (required).
    dirpath: Option<PathBuf>,
    /// The file name, without `.ckpt`.
    filename: String,
}

impl Default for OnExceptionCheckpointArgs {
    fn default() -> Self {
        OnExceptionCheckpointArgs { dirpath: None, filename: "on_exception".into() }
    }
}

impl InitArgs for OnExceptionCheckpointArgs {
    type Built = OnExceptionCheckpoint;

    fn build(self) -> Result<OnExceptionCheckpoint> {
        Ok(OnExceptionCheckpoint::new(required("OnExceptionCheckpoint", "dirpath", self.dirpath)?)
            .filename(self.filename))
    }
}

/// `"batch"` or `"epoch"`.
#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WriteAt {
    Batch,
    Epoch,
}

/// `"safetensors"` or `"jsonl"`.
#[derive(Serialize, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Safetensors,
    Jsonl,
}

/// `PredictionWriter`'s init args (Lightning's `BasePredictionWriter` is abstract; this is lit's
/// writer).
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct PredictionWriterArgs {
    /// The directory to write to (required).
    output_dir: Option<PathBuf>,
    /// "batch" (a file per batch) or "epoch" (a file per loader).
    write_interval: WriteAt,
    /// "safetensors" or "jsonl".
    format: Format,
}

impl Default for PredictionWriterArgs {
    fn default() -> Self {
        PredictionWriterArgs { output_dir: None, write_interval: WriteAt::Batch, format: Format::Safetensors }
    }
}

impl InitArgs for PredictionWriterArgs {
    type Built = PredictionWriter;

    fn build(self) -> Result<PredictionWriter> {
        let interval = match self.write_interval {
            WriteAt::Batch => WriteInterval::Batch,
            WriteAt::Epoch => WriteInterval::Epoch,
        };
        let format = match self.format {
            Format::Safetensors => PredictionFormat::Safetensors,
            Format::Jsonl => PredictionFormat::JsonLines,
        };
        Ok(PredictionWriter::new(required("PredictionWriter", "output_dir", self.output_dir)?, interval).format(format))
    }
}

/// One number, or one per parameter group.
#[derive(Serialize, Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

/// An epoch (an integer) or a fraction of `max_epochs` (a float).
#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(untagged)]
enum EpochOrFraction {
    Epoch(i64),
    Fraction(f64),
}

/// `StochasticWeightAveraging`'s init args (`avg_fn`, a function, is not configurable).
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct SwaArgs {
    /// The SWA learning rate, or one per parameter group (required).
    swa_lrs: Option<OneOrMany>,
    /// The epoch averaging starts at: an integer ≥ 1, or a fraction of `max_epochs`.
    swa_epoch_start: EpochOrFraction,
    /// Epochs of annealing to the SWA learning rate.
    annealing_epochs: usize,
    /// "cos" or "linear".
    annealing_strategy: String,
    /// Where the average is kept: "cpu", "cuda", "cuda:N", or null for the module's device.
    device: Option<String>,
}

impl Default for SwaArgs {
    fn default() -> Self {
        SwaArgs {
            swa_lrs: None,
            swa_epoch_start: EpochOrFraction::Fraction(0.8),
            annealing_epochs: 10,
            annealing_strategy: "cos".into(),
            device: Some("cpu".into()),
        }
    }
}

impl InitArgs for SwaArgs {
    type Built = StochasticWeightAveraging;

    fn build(self) -> Result<StochasticWeightAveraging> {
        let lrs = match required("StochasticWeightAveraging", "swa_lrs", self.swa_lrs)? {
            OneOrMany::One(lr) => vec![lr],
            OneOrMany::Many(lrs) => lrs,
        };
        let device = match self.device.as_deref() {
            None => None,
            Some("cpu") => Some(tch::Device::Cpu),
            Some("cuda") => Some(tch::Device::Cuda(0)),
            Some(other) => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Some(tch::Device::Cuda(n)),
                None => {
                    return Err(super::cli_error(format!(
                        "StochasticWeightAveraging: `device` \"{other}\" is not \"cpu\", \"cuda\", \"cuda:N\" or null"
                    )));
                }
            },
        };
        let swa = StochasticWeightAveraging::new(lrs)?;
        let swa = match self.swa_epoch_start {
            EpochOrFraction::Epoch(n) => swa.swa_epoch_start(n)?,
            EpochOrFraction::Fraction(f) => swa.swa_epoch_start(f)?,
        };
        Ok(swa
            .annealing_epochs(self.annealing_epochs)
            .annealing_strategy(self.annealing_strategy.parse()?)
            .device(device))
    }
}

/// `BackboneFinetuning`'s init args (`lambda_func`, a function, is not configurable: the
/// learning rate doubles every epoch, Lightning's default).
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct BackboneFinetuningArgs {
    /// The epoch at which the backbone joins the optimizer.
    unfreeze_backbone_at_epoch: usize,
    /// The backbone's initial learning rate, as a ratio of the current one.
    backbone_initial_ratio_lr: f64,
    /// The backbone's initial learning rate (default: the ratio's).
    backbone_initial_lr: Option<f64>,
    /// Hold the backbone's learning rate at the current one once it would pass it.
    should_align: bool,
    /// Divides the current learning rate for a group given no learning rate.
    initial_denom_lr: f64,
    /// Train the backbone's batch norms throughout.
    train_bn: bool,
    /// Log the learning rates at each epoch's start.
    verbose: bool,
    /// Decimal places of the logged learning rates.
    rounding: i32,
    /// The backbone's `VarStore` path (lit's; Lightning's is the module's `backbone` attribute).
    backbone: String,
}

impl Default for BackboneFinetuningArgs {
    fn default() -> Self {
        BackboneFinetuningArgs {
            unfreeze_backbone_at_epoch: 10,
            backbone_initial_ratio_lr: 0.1,
            backbone_initial_lr: None,
            should_align: true,
            initial_denom_lr: 10.0,
            train_bn: true,
            verbose: false,
            rounding: 12,
            backbone: "backbone".into(),
        }
    }
}

impl InitArgs for BackboneFinetuningArgs {
    type Built = BackboneFinetuning;

    fn build(self) -> Result<BackboneFinetuning> {
        let c = BackboneFinetuning::new()
            .unfreeze_backbone_at_epoch(self.unfreeze_backbone_at_epoch)
            .backbone_initial_ratio_lr(self.backbone_initial_ratio_lr)
            .should_align(self.should_align)
            .initial_denom_lr(self.initial_denom_lr)
            .train_bn(self.train_bn)
            .verbose(self.verbose)
            .rounding(self.rounding)
            .backbone(self.backbone);
        Ok(match self.backbone_initial_lr {
            Some(lr) => c.backbone_initial_lr(lr),
            None => c,
        })
    }
}

/// `TQDMProgressBar`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct TqdmProgressBarArgs {
    /// Update the bar every this many batches (0: no bar).
    refresh_rate: usize,
    /// Keep this many lines free above the bars.
    process_position: usize,
    /// Keep each epoch's bar.
    leave: bool,
}

impl Default for TqdmProgressBarArgs {
    fn default() -> Self {
        TqdmProgressBarArgs { refresh_rate: 1, process_position: 0, leave: false }
    }
}

impl InitArgs for TqdmProgressBarArgs {
    type Built = TqdmProgressBar;

    fn build(self) -> Result<TqdmProgressBar> {
        Ok(TqdmProgressBar::new()
            .refresh_rate(self.refresh_rate)
            .process_position(self.process_position)
            .leave(self.leave))
    }
}

/// `LearningRateFinder`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct LearningRateFinderArgs {
    /// The learning rate of the first step.
    min_lr: f64,
    /// The learning rate the range test ends at.
    max_lr: f64,
    /// Optimizer steps of the range test.
    num_training_steps: usize,
    /// "exponential" or "linear" growth.
    mode: String,
    /// Stop once the smoothed loss exceeds this many times the best (null: never).
    early_stop_threshold: Option<f64>,
    /// Set the module's learning rate hyper-parameter to the suggestion.
    update_attr: bool,
    /// The `#[hparams]` field of the learning rate (default: `lr` or `learning_rate`).
    attr_name: String,
}

impl Default for LearningRateFinderArgs {
    fn default() -> Self {
        LearningRateFinderArgs {
            min_lr: 1e-8,
            max_lr: 1.0,
            num_training_steps: 100,
            mode: "exponential".into(),
            early_stop_threshold: Some(4.0),
            update_attr: true,
            attr_name: String::new(),
        }
    }
}

impl InitArgs for LearningRateFinderArgs {
    type Built = LearningRateFinder;

    fn build(self) -> Result<LearningRateFinder> {
        let mode: LrMode = self.mode.parse()?;
        Ok(LearningRateFinder(
            LrFindOptions::default()
                .min_lr(self.min_lr)
                .max_lr(self.max_lr)
                .num_training(self.num_training_steps)
                .mode(mode)
                .early_stop_threshold(self.early_stop_threshold)
                .update_attr(self.update_attr)
                .attr_name(self.attr_name),
        ))
    }
}

/// Lightning's `LearningRateFinder` callback as the command line has it: `fit` runs
/// [`Tuner::lr_find`](crate::tuner::Tuner::lr_find) with these options before training (a lit
/// callback cannot run a range test inside the `fit` that calls it). As a callback it does nothing.
pub(crate) struct LearningRateFinder(pub(crate) LrFindOptions);

impl Callback for LearningRateFinder {
    fn name(&self) -> &str {
        "LearningRateFinder"
    }
}

/// The init args of `CSVLogger` and `TensorBoardLogger`.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct LoggerArgs {
    /// The root directory (required): the run goes to `save_dir/name/version_N`.
    save_dir: Option<PathBuf>,
    /// The experiment's directory under `save_dir`.
    name: String,
    /// The run's `version_N` (default: the next free number).
    version: Option<usize>,
}

impl Default for LoggerArgs {
    fn default() -> Self {
        LoggerArgs { save_dir: None, name: "lightning_logs".into(), version: None }
    }
}

impl LoggerArgs {
    fn csv(self) -> Result<CsvLogger> {
        let logger = CsvLogger::new(required("CSVLogger", "save_dir", self.save_dir)?).name(self.name);
        Ok(match self.version {
            Some(v) => logger.version(v),
            None => logger,
        })
    }

    fn tensorboard(self) -> Result<TensorBoardLogger> {
        let logger = TensorBoardLogger::new(required("TensorBoardLogger", "save_dir", self.save_dir)?).name(self.name);
        Ok(match self.version {
            Some(v) => logger.version(v),
            None => logger,
        })
    }
}

/// `true`, `false` or `"all"`.
#[derive(Serialize, Deserialize, Clone)]
#[serde(untagged)]
enum BoolOrAll {
    Bool(bool),
    Word(String),
}

/// `MLFlowLogger`'s init args (lit's logger talks to a tracking server: no `save_dir`).
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
struct MlflowArgs {
    /// The experiment the run goes into (created when missing).
    experiment_name: String,
    /// The run's name (the `mlflow.runName` tag).
    run_name: Option<String>,
    /// The tracking server, `http(s)://…` (default: the `MLFLOW_TRACKING_URI` environment variable).
    tracking_uri: Option<String>,
    /// Tags of the run.
    tags: Option<BTreeMap<String, String>>,
    /// Checkpoints as artifacts: false, true (the kept ones, at the end) or "all" (each as saved).
    log_model: BoolOrAll,
    /// The artifact directory checkpoints go under.
    checkpoint_path_prefix: String,
    /// Prepended to every metric's name.
    prefix: String,
    /// Where a new experiment keeps its artifacts.
    artifact_location: Option<String>,
    /// A run to continue instead of starting one.
    run_id: Option<String>,
}

impl Default for MlflowArgs {
    fn default() -> Self {
        MlflowArgs {
            experiment_name: "lightning_logs".into(),
            run_name: None,
            tracking_uri: None,
            tags: None,
            log_model: BoolOrAll::Bool(false),
            checkpoint_path_prefix: String::new(),
            prefix: String::new(),
            artifact_location: None,
            run_id: None,
        }
    }
}

impl InitArgs for MlflowArgs {
    type Built = MlflowLogger;

    fn build(self) -> Result<MlflowLogger> {
        let log_model = match self.log_model {
            BoolOrAll::Bool(on) => LogModel::from(on),
            BoolOrAll::Word(word) if word == "all" => LogModel::All,
            BoolOrAll::Word(other) => {
                return Err(super::cli_error(format!(
                    "MLFlowLogger: `log_model` is true, false or \"all\", got \"{other}\""
                )));
            }
        };
        let mut logger = MlflowLogger::new()
            .experiment_name(self.experiment_name)
            .tags(self.tags.unwrap_or_default())
            .log_model(log_model)
            .checkpoint_path_prefix(self.checkpoint_path_prefix)
            .prefix(self.prefix);
        if let Some(name) = self.run_name {
            logger = logger.run_name(name);
        }
        if let Some(uri) = self.tracking_uri {
            logger = logger.tracking_uri(uri);
        }
        if let Some(location) = self.artifact_location {
            logger = logger.artifact_location(location);
        }
        if let Some(id) = self.run_id {
            logger = logger.run_id(id);
        }
        Ok(logger)
    }
}
