//! The Trainer's configuration: a serde struct and its builder, validated at `build()`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::amp::Precision;
use crate::error::{ConfigError, Result};
use crate::module::GradientClipAlgorithm;

use super::options::{Accelerator, OptionValue, Strategy};

/// A number of batches, or a fraction of a loader's batches (`limit_*_batches`,
/// `val_check_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    /// This many batches.
    Batches(usize),
    /// This fraction of the batches, in `[0, 1]`.
    Fraction(f64),
}

impl Default for Limit {
    fn default() -> Self {
        Limit::Fraction(1.0)
    }
}

impl From<usize> for Limit {
    fn from(n: usize) -> Self {
        Limit::Batches(n)
    }
}
impl From<i32> for Limit {
    fn from(n: i32) -> Self {
        // A negative count is kept as a (bad) fraction so that `build()` reports it.
        usize::try_from(n).map_or(Limit::Fraction(n as f64), Limit::Batches)
    }
}
impl From<f64> for Limit {
    fn from(f: f64) -> Self {
        Limit::Fraction(f)
    }
}

impl Limit {
    fn check(self, option: &'static str) -> Result<(), ConfigError> {
        match self {
            Limit::Fraction(f) if !(0.0..=1.0).contains(&f) => Err(ConfigError::invalid(
                option,
                format!("must be a count of batches or a fraction in [0.0, 1.0], got {f}"),
            )),
            _ => Ok(()),
        }
    }

    /// The number of batches this limit allows out of `len` (`None`: unknown length).
    pub(crate) fn of(self, len: Option<usize>, option: &'static str) -> Result<usize, ConfigError> {
        match (self, len) {
            (Limit::Batches(n), Some(len)) => Ok(n.min(len)),
            (Limit::Batches(n), None) => Ok(n),
            (Limit::Fraction(1.0), _) => Ok(len.unwrap_or(usize::MAX)),
            (Limit::Fraction(f), Some(len)) => Ok((len as f64 * f) as usize),
            (Limit::Fraction(f), None) => Err(ConfigError::invalid(
                option,
                format!("the fraction {f} needs a loader whose length is known; give a count of batches"),
            )),
        }
    }
}

/// Everything the Trainer can be told; `Trainer::builder()` sets it field by field, or it
/// deserialises from a config file. Field names, spellings and defaults are Lightning's. New
/// options may be added in any release: start from `TrainerConfig::default()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, crate::cli::FieldDocs)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TrainerConfig {
    /// Stop after this many epochs (unset with `max_steps` unset: 1000).
    pub max_epochs: Option<usize>,
    /// Train at least this many epochs, even if a stop is requested.
    pub min_epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Train at least this many steps, even if a stop is requested.
    pub min_steps: Option<usize>,
    /// Training batches per epoch.
    pub limit_train_batches: Limit,
    /// Validation batches per loader.
    pub limit_val_batches: Limit,
    /// Test batches per loader.
    pub limit_test_batches: Limit,
    /// Prediction batches per loader.
    pub limit_predict_batches: Limit,
    /// Validation batches per loader run before training (-1: all).
    pub num_sanity_val_steps: i64,
    /// Validate every this many epochs.
    pub check_val_every_n_epoch: usize,
    /// Validate every this many training batches, or this fraction of an epoch.
    pub val_check_interval: Limit,
    /// "cpu", "cuda" (or "gpu"), "cuda:N", or "auto".
    pub accelerator: Accelerator,
    /// Devices (processes) per machine; more than 1 trains with `strategy` "ddp".
    pub devices: usize,
    /// Machines.
    pub num_nodes: usize,
    /// "auto" (one process, or ddp with several devices) or "ddp".
    pub strategy: Strategy,
    /// How long a collective may wait for the other processes before failing, in seconds.
    pub ddp_timeout_secs: u64,
    /// How long joining the process group may wait for the other processes (a wrong
    /// `MASTER_ADDR`/`MASTER_PORT`, a process that never started), in seconds.
    pub ddp_join_timeout_secs: u64,
    /// DDP: search each step's graph for parameters that take no part in the loss and reduce
    /// without them (DDP's `find_unused_parameters`; also the strategy
    /// `"ddp_find_unused_parameters_true"`). Needed when some parameters get no gradient in some
    /// steps; it costs a graph traversal per step.
    pub ddp_find_unused_parameters: bool,
    /// DDP: gradients are views into the all-reduce buckets instead of copies (DDP's
    /// `gradient_as_bucket_view`: less memory, no copy back).
    pub ddp_gradient_as_bucket_view: bool,
    /// DDP: gradients are all-reduced in buckets of this many MiB, each as soon as backward has
    /// filled it (DDP's `bucket_cap_mb`, default 25).
    pub ddp_bucket_cap_mb: f64,
    /// Seeds libtorch's generators when a run starts.
    pub seed: Option<u64>,
    /// "32-true" (default), "64-true", "bf16-mixed", "16-mixed" (CUDA), "bf16-true" or "16-true";
    /// see [`Precision`].
    pub precision: Precision,
    /// Use deterministic algorithms only (`torch.use_deterministic_algorithms`): an operation
    /// without a deterministic implementation fails (or, with `deterministic_warn_only`, warns).
    pub deterministic: bool,
    /// With `deterministic`: warn instead of failing on non-deterministic operations.
    pub deterministic_warn_only: bool,
    /// cuDNN's algorithm autotuning (`torch.backends.cudnn.benchmark`); unset leaves libtorch's
    /// default (off).
    pub benchmark: Option<bool>,
    /// Where logs and checkpoints go.
    pub default_root_dir: PathBuf,
    /// Clip gradients at this value.
    pub gradient_clip_val: Option<f64>,
    /// How to clip.
    pub gradient_clip_algorithm: GradientClipAlgorithm,
    /// Accumulate gradients over this many batches before stepping (the loss is divided by it;
    /// the epoch's last, partial window is stepped too).
    pub accumulate_grad_batches: usize,
    /// Show a progress bar (plain lines when stderr is not a terminal).
    pub enable_progress_bar: bool,
    /// Print the model summary when `fit` starts.
    pub enable_model_summary: bool,
    /// Send step metrics to the loggers every this many optimizer steps (and plain progress
    /// lines every this many batches).
    pub log_every_n_steps: usize,
    /// Log to a CSV logger under `default_root_dir` when no other logger is given.
    pub logger: bool,
    /// What a NaN epoch metric does.
    pub nan_metrics: crate::NanPolicy,
    /// Add a `ModelCheckpoint` callback unless one is given.
    pub enable_checkpointing: bool,
    /// Stop training after this much time, `"DD:HH:MM:SS"` or a duration such as `"1h30m"`
    /// (adds a `Timer` callback).
    pub max_time: Option<String>,
    /// On Ctrl-C, stop after the current step, save a resumable checkpoint and return
    /// `Error::Interrupted` (a second Ctrl-C exits at once).
    pub handle_sigint: bool,
    /// Check every loss for NaN/Inf (one device sync per step): fail, or skip the step and count it.
    pub nonfinite_loss: Option<NonFinitePolicy>,
    /// A quick check that everything runs (0: off; Lightning's `True` is 1): this many batches
    /// of training, validation, test and prediction, one epoch, no sanity check, no loggers and
    /// no checkpoints. A configuration file may also say `true` (1) or `false` (0).
    #[serde(deserialize_with = "count_or_bool")]
    pub fast_dev_run: usize,
    /// Train (and validate) on the same first batches every epoch, without shuffling: a count or
    /// a fraction of the training batches (0: off).
    pub overfit_batches: Limit,
    /// Autograd's anomaly detection: `backward` fails naming the forward operation that produced
    /// NaN (slow; for debugging).
    pub detect_anomaly: bool,
    /// Everything that costs speed off: progress bar, model summary, loggers, checkpoints.
    pub barebones: bool,
    /// `"simple"`: time per hook and loop action, reported at the end of each run and written
    /// to the log directory (`fit-profile.txt`); `"pytorch"`: libtorch's operator profile as a
    /// Chrome trace (`fit-pytorch-trace.json`).
    pub profiler: Option<crate::profiler::ProfilerKind>,
    /// Ask the loaders' sources (the module's or data module's `*_dataloader`) for new loaders
    /// every this many epochs (0: never). Loaders handed to `fit` directly are kept.
    pub reload_dataloaders_every_n_epochs: usize,
}

/// A count, or `true` for 1 and `false` for 0 (Lightning's `fast_dev_run=True`).
fn count_or_bool<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum CountOrBool {
        Count(usize),
        Bool(bool),
    }
    Ok(match CountOrBool::deserialize(d)? {
        CountOrBool::Count(n) => n,
        CountOrBool::Bool(b) => usize::from(b),
    })
}

/// What a NaN or infinite loss does when `nonfinite_loss` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// End the run with `Error::NonFiniteLoss`.
    Error,
    /// Skip the optimizer step and count it (`trainer.skipped_steps()`).
    Skip,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            max_epochs: None,
            min_epochs: None,
            max_steps: None,
            min_steps: None,
            limit_train_batches: Limit::default(),
            limit_val_batches: Limit::default(),
            limit_test_batches: Limit::default(),
            limit_predict_batches: Limit::default(),
            num_sanity_val_steps: 2,
            check_val_every_n_epoch: 1,
            val_check_interval: Limit::default(),
            accelerator: Accelerator::Auto,
            devices: 1,
            num_nodes: 1,
            strategy: Strategy::Auto,
            ddp_timeout_secs: 1800,
            ddp_join_timeout_secs: 60,
            ddp_find_unused_parameters: false,
            ddp_gradient_as_bucket_view: false,
            ddp_bucket_cap_mb: 25.0,
            seed: None,
            precision: Precision::F32,
            deterministic: false,
            deterministic_warn_only: false,
            benchmark: None,
            default_root_dir: PathBuf::from("."),
            gradient_clip_val: None,
            gradient_clip_algorithm: GradientClipAlgorithm::Norm,
            accumulate_grad_batches: 1,
            enable_progress_bar: true,
            enable_model_summary: true,
            log_every_n_steps: 50,
            logger: true,
            nan_metrics: crate::NanPolicy::Warn,
            enable_checkpointing: true,
            max_time: None,
            handle_sigint: true,
            nonfinite_loss: None,
            fast_dev_run: 0,
            overfit_batches: Limit::Batches(0),
            detect_anomaly: false,
            barebones: false,
            profiler: None,
            reload_dataloaders_every_n_epochs: 0,
        }
    }
}

impl TrainerConfig {
    /// How DDP's reducer buckets and reduces gradients.
    pub(crate) fn reducer_options(&self) -> crate::dist::ReducerOptions {
        crate::dist::ReducerOptions {
            bucket_bytes_cap: (self.ddp_bucket_cap_mb * 1024.0 * 1024.0) as i64,
            find_unused_parameters: self.ddp_find_unused_parameters
                || self.strategy == Strategy::DdpFindUnusedParametersTrue,
            gradient_as_bucket_view: self.ddp_gradient_as_bucket_view,
        }
    }

    /// Checks every option and combination, and picks the device.
    pub fn validate(&self) -> Result<Device> {
        if self.max_epochs == Some(0) && self.max_steps == Some(0) {
            return Err(ConfigError::invalid(
                "max_epochs",
                "max_epochs and max_steps are both 0: nothing would be trained",
            )
            .into());
        }
        if let (Some(min), Some(max)) = (self.min_epochs, self.max_epochs)
            && min > max
        {
            return Err(ConfigError::invalid(
                "min_epochs",
                format!("min_epochs ({min}) is larger than max_epochs ({max})"),
            )
            .into());
        }
        self.limit_train_batches.check("limit_train_batches")?;
        self.limit_val_batches.check("limit_val_batches")?;
        self.limit_test_batches.check("limit_test_batches")?;
        self.limit_predict_batches.check("limit_predict_batches")?;
        match self.val_check_interval {
            Limit::Batches(0) => {
                return Err(ConfigError::invalid("val_check_interval", "must be at least 1 batch").into());
            }
            Limit::Fraction(f) if f <= 0.0 || f > 1.0 => {
                return Err(ConfigError::invalid(
                    "val_check_interval",
                    format!("a fraction must lie in (0.0, 1.0], got {f}"),
                )
                .into());
            }
            _ => {}
        }
        if self.check_val_every_n_epoch == 0 {
            return Err(ConfigError::invalid("check_val_every_n_epoch", "must be at least 1").into());
        }
        if self.num_sanity_val_steps < -1 {
            return Err(ConfigError::invalid(
                "num_sanity_val_steps",
                format!("must be -1 (all) or at least 0, got {}", self.num_sanity_val_steps),
            )
            .into());
        }
        if let Some(v) = self.gradient_clip_val
            && !(v >= 0.0 && v.is_finite())
        {
            return Err(
                ConfigError::invalid("gradient_clip_val", format!("must be a finite value ≥ 0, got {v}")).into()
            );
        }
        if self.accumulate_grad_batches == 0 {
            return Err(ConfigError::invalid("accumulate_grad_batches", "must be at least 1").into());
        }
        if self.log_every_n_steps == 0 {
            return Err(ConfigError::invalid("log_every_n_steps", "must be at least 1").into());
        }
        if !(self.ddp_bucket_cap_mb > 0.0 && self.ddp_bucket_cap_mb.is_finite()) {
            return Err(ConfigError::invalid(
                "ddp_bucket_cap_mb",
                format!("must be a finite number of MiB above 0, got {}", self.ddp_bucket_cap_mb),
            )
            .into());
        }
        let processes = self.devices * self.num_nodes;
        if processes == 0 {
            return Err(ConfigError::invalid("devices", "must be at least 1").into());
        }
        if (processes > 1 || self.strategy.is_ddp()) && !crate::dist::ProcessGroup::available() {
            return Err(ConfigError::invalid(
                "strategy",
                "distributed training needs torch.distributed, which this build of lit lacks (install libgloo-dev and rebuild)",
            )
            .into());
        }
        if self.deterministic && self.benchmark == Some(true) {
            return Err(ConfigError::invalid(
                "benchmark",
                "cuDNN autotuning picks algorithms by timing them, which is not deterministic; drop `benchmark` or `deterministic`",
            )
            .into());
        }
        let device = resolve_device(self.accelerator)?;
        if device.is_cuda() && processes > 1 {
            if !crate::dist::ProcessGroup::nccl_available() {
                return Err(ConfigError::invalid(
                    "strategy",
                    "ddp on CUDA devices needs NCCL, which this build of lit lacks (its headers come with the \
                     torch wheel's nvidia-nccl and nvidia-cuda-cccl packages, which scripts/with-torch installs; \
                     rebuild lit through it); or train on the CPU (Gloo)",
                )
                .into());
            }
            let found = tch::Cuda::device_count() as usize;
            if self.devices > found {
                return Err(ConfigError::invalid(
                    "devices",
                    format!("{} processes on CUDA need one device each; this machine has {found}", self.devices),
                )
                .into());
            }
        }
        self.precision.check_device(device)?;
        Ok(device)
    }

    /// What `fast_dev_run`, `overfit_batches` and `barebones` imply for the other options.
    fn apply_debugging_flags(&mut self) {
        if self.fast_dev_run > 0 {
            let n = Limit::Batches(self.fast_dev_run);
            self.limit_train_batches = n;
            self.limit_val_batches = n;
            self.limit_test_batches = n;
            self.limit_predict_batches = n;
            self.max_epochs = Some(1);
            self.max_steps = Some(self.fast_dev_run);
            self.min_epochs = None;
            self.min_steps = None;
            self.num_sanity_val_steps = 0;
            self.val_check_interval = Limit::Fraction(1.0);
            self.check_val_every_n_epoch = 1;
            self.logger = false;
            self.enable_checkpointing = false;
            self.max_time = None;
        }
        if self.overfitting() {
            self.limit_train_batches = self.overfit_batches;
            self.limit_val_batches = self.overfit_batches;
        }
        if self.barebones {
            self.enable_progress_bar = false;
            self.enable_model_summary = false;
            self.logger = false;
            self.enable_checkpointing = false;
        }
    }

    /// Whether `overfit_batches` is on.
    pub(crate) fn overfitting(&self) -> bool {
        self.overfit_batches != Limit::Batches(0) && self.overfit_batches != Limit::Fraction(0.0)
    }

    /// The number of epochs to stop at (Lightning's 1000 when neither limit is set).
    pub(crate) fn epoch_limit(&self) -> Option<usize> {
        match (self.max_epochs, self.max_steps) {
            (None, None) => Some(1000),
            (epochs, _) => epochs,
        }
    }
}

pub(super) fn resolve_device(accelerator: Accelerator) -> Result<Device, ConfigError> {
    let cuda = tch::Cuda::is_available();
    let unavailable = |why: String| ConfigError::Unavailable(accelerator.to_string(), why);
    match accelerator {
        Accelerator::Cpu => Ok(Device::Cpu),
        Accelerator::Auto => Ok(if cuda { Device::Cuda(0) } else { Device::Cpu }),
        Accelerator::Gpu | Accelerator::Cuda(None) if cuda => Ok(Device::Cuda(0)),
        Accelerator::Gpu | Accelerator::Cuda(None) => {
            Err(unavailable("libtorch finds no CUDA device on this machine".into()))
        }
        Accelerator::Cuda(Some(n)) if n < tch::Cuda::device_count() as usize => Ok(Device::Cuda(n)),
        Accelerator::Cuda(Some(n)) => Err(unavailable(format!(
            "this machine has {} CUDA devices, so index {n} does not exist",
            tch::Cuda::device_count()
        ))),
    }
}

/// Builds a [`Trainer`](crate::Trainer): `Trainer::builder().max_epochs(3).build()?`.
#[derive(Default)]
pub struct TrainerBuilder {
    pub(crate) config: TrainerConfig,
    pub(crate) callbacks: Vec<Box<dyn crate::Callback>>,
    pub(crate) loggers: Vec<Box<dyn crate::loggers::Logger>>,
    /// Optimizers in place of the module's `configure_optimizers`.
    pub(crate) configure_optimizers: Option<ConfigureOptimizers>,
    /// The first option given as text that is not one of its spellings, reported by `build`.
    error: Option<ConfigError>,
}

/// What [`TrainerBuilder::configure_optimizers`] takes.
pub(crate) type ConfigureOptimizers = Box<dyn Fn(&mut crate::Ctx) -> Result<crate::optim::Optimizers>>;

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty => $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $t) -> Self {
            self.config.$name = $conv(value);
            self
        }
    )*};
}

/// Setters of options with a fixed set of values: the value, or its text.
macro_rules! parsed_setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty => $wrap:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: impl OptionValue<$t>) -> Self {
            match value.into_option() {
                Ok(value) => self.config.$name = $wrap(value),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
            self
        }
    )*};
}

impl TrainerBuilder {
    /// A builder starting from `config`.
    pub fn from_config(config: TrainerConfig) -> Self {
        TrainerBuilder { config, ..TrainerBuilder::default() }
    }

    setters! {
        /// Stop after this many epochs.
        max_epochs: usize => Some;
        /// Train at least this many epochs.
        min_epochs: usize => Some;
        /// Stop after this many optimizer steps.
        max_steps: usize => Some;
        /// Train at least this many optimizer steps.
        min_steps: usize => Some;
        /// Training batches per epoch: a count (`10`) or a fraction (`0.25`).
        limit_train_batches: impl Into<Limit> => Into::into;
        /// Validation batches per loader.
        limit_val_batches: impl Into<Limit> => Into::into;
        /// Test batches per loader.
        limit_test_batches: impl Into<Limit> => Into::into;
        /// Prediction batches per loader.
        limit_predict_batches: impl Into<Limit> => Into::into;
        /// Validation batches per loader before training (default 2, -1: all, 0: none).
        num_sanity_val_steps: i64 => std::convert::identity;
        /// Validate every this many epochs.
        check_val_every_n_epoch: usize => std::convert::identity;
        /// Validate every this many batches (`100`) or fraction of an epoch (`0.25`).
        val_check_interval: impl Into<Limit> => Into::into;
        /// Devices (processes) per machine (1).
        devices: usize => std::convert::identity;
        /// Machines (1).
        num_nodes: usize => std::convert::identity;
        /// Seconds a collective waits for the other processes (default 1800).
        ddp_timeout_secs: u64 => std::convert::identity;
        /// Seconds joining the process group waits for the other processes (default 60).
        ddp_join_timeout_secs: u64 => std::convert::identity;
        /// DDP's `find_unused_parameters` (default false).
        ddp_find_unused_parameters: bool => std::convert::identity;
        /// DDP's `gradient_as_bucket_view` (default false).
        ddp_gradient_as_bucket_view: bool => std::convert::identity;
        /// DDP's `bucket_cap_mb` (default 25).
        ddp_bucket_cap_mb: f64 => std::convert::identity;
        /// Seed libtorch's generators when a run starts.
        seed: u64 => Some;
        /// Deterministic algorithms only (default false).
        deterministic: bool => std::convert::identity;
        /// With `deterministic`: warn on non-deterministic operations instead of failing.
        deterministic_warn_only: bool => std::convert::identity;
        /// cuDNN autotuning (default: libtorch's, off).
        benchmark: bool => Some;
        /// Where logs and checkpoints go.
        default_root_dir: impl Into<PathBuf> => Into::into;
        /// Clip gradients at this value.
        gradient_clip_val: f64 => Some;
        /// Clip by global norm (default) or by value.
        gradient_clip_algorithm: GradientClipAlgorithm => std::convert::identity;
        /// Accumulate gradients over this many batches (default 1).
        accumulate_grad_batches: usize => std::convert::identity;
        /// Show a progress bar (default true).
        enable_progress_bar: bool => std::convert::identity;
        /// Print the model summary when `fit` starts (default true).
        enable_model_summary: bool => std::convert::identity;
        /// Log step metrics every this many steps (default 50).
        log_every_n_steps: usize => std::convert::identity;
        /// `false`: no default CSV logger (loggers added with `with_logger` are still used).
        logger: bool => std::convert::identity;
        /// Warn (default) or fail on a NaN epoch metric.
        nan_metrics: crate::NanPolicy => std::convert::identity;
        /// Add a `ModelCheckpoint` callback unless one is given (default true).
        enable_checkpointing: bool => std::convert::identity;
        /// Stop training after this much time, `"DD:HH:MM:SS"` or `"1h30m"`, `"90s"`, `"2d 12h"`.
        max_time: impl Into<String> => |t: _| Some(Into::into(t));
        /// Handle Ctrl-C by saving a resumable checkpoint (default true).
        handle_sigint: bool => std::convert::identity;
        /// Check losses for NaN/Inf and fail or skip.
        nonfinite_loss: NonFinitePolicy => Some;
        /// Run this many batches of each loop, once, writing nothing (Lightning's `True` is 1).
        fast_dev_run: usize => std::convert::identity;
        /// Train and validate on the same first batches every epoch: a count or a fraction.
        overfit_batches: impl Into<Limit> => Into::into;
        /// Autograd's anomaly detection (slow).
        detect_anomaly: bool => std::convert::identity;
        /// Progress bar, model summary, loggers and checkpoints off.
        barebones: bool => std::convert::identity;
        /// Make the loaders again every this many epochs (0: never).
        reload_dataloaders_every_n_epochs: usize => std::convert::identity;
    }

    parsed_setters! {
        /// "cpu", "cuda", "gpu", "cuda:N" or "auto" (default), or an [`Accelerator`].
        accelerator: Accelerator => std::convert::identity;
        /// "auto" (default) or "ddp", or a [`Strategy`].
        strategy: Strategy => std::convert::identity;
        /// "32-true" (default), "64-true", "bf16-mixed", "16-mixed" (CUDA), "bf16-true", "16-true",
        /// or a [`Precision`].
        precision: Precision => std::convert::identity;
        /// "simple" or "pytorch", or a [`ProfilerKind`](crate::profiler::ProfilerKind).
        profiler: crate::profiler::ProfilerKind => Some;
    }

    /// Adds a logger (several may be added); without any, a `CsvLogger` under
    /// `default_root_dir` is used.
    pub fn with_logger(mut self, logger: impl crate::loggers::Logger) -> Self {
        self.loggers.push(Box::new(logger));
        self
    }

    /// Adds a callback.
    pub fn callback(mut self, callback: impl crate::Callback) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// The optimizers (and schedulers) of every run, in place of what the module's
    /// `configure_optimizers` returns: what LightningCLI's `optimizer` and `lr_scheduler` keys
    /// do (`lit::cli` uses it for them). Called where the module's would be, with its context.
    pub fn configure_optimizers(
        mut self,
        configure: impl Fn(&mut crate::Ctx) -> Result<crate::optim::Optimizers> + 'static,
    ) -> Self {
        self.configure_optimizers = Some(Box::new(configure));
        self
    }

    /// Validates the configuration and makes the Trainer.
    pub fn build(mut self) -> Result<crate::Trainer> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        self.config.apply_debugging_flags();
        let device = self.config.validate()?;
        let mut callbacks = self.callbacks;
        let summary = crate::callbacks::first_of::<crate::callbacks::ModelSummary>(&callbacks);
        if !self.config.enable_model_summary && !self.config.barebones && summary.is_some() {
            return Err(ConfigError::invalid(
                "enable_model_summary",
                "is false, but a `ModelSummary` callback was given: remove one of the two",
            )
            .into());
        }
        // One progress bar, as Lightning's callback connector: the given one, or the default.
        match crate::callbacks::of_type::<crate::callbacks::TqdmProgressBar>(&callbacks).count() {
            0 if self.config.enable_progress_bar => {
                let mut bar = crate::callbacks::TqdmProgressBar::new();
                bar.default_lines = Some(self.config.log_every_n_steps);
                callbacks.push(Box::new(bar));
            }
            0 => {}
            1 if !self.config.enable_progress_bar => {
                return Err(ConfigError::invalid(
                    "enable_progress_bar",
                    "is false (or `barebones` is on), but a `TqdmProgressBar` was given: remove one of the two",
                )
                .into());
            }
            1 => {}
            _ => {
                return Err(ConfigError::invalid(
                    "callbacks",
                    "holds several progress bars (`TqdmProgressBar`), but only one progress bar is supported",
                )
                .into());
            }
        }
        let is_checkpoint = |c: &dyn crate::Callback| c.order() == crate::callback::CallbackOrder::Checkpoint;
        if self.config.fast_dev_run > 0 || self.config.barebones {
            callbacks.retain(|c| !is_checkpoint(&**c));
            self.loggers.clear();
        }
        if self.config.enable_checkpointing && !callbacks.iter().any(|c| is_checkpoint(&**c)) {
            callbacks.push(Box::new(crate::callbacks::ModelCheckpoint::default()));
        }
        if let Some(max_time) = &self.config.max_time {
            callbacks.push(Box::new(crate::callbacks::Timer::new(crate::callbacks::Timer::parse(max_time)?)));
        }
        let mut loggers = self.loggers;
        if self.config.logger && loggers.is_empty() {
            loggers.push(Box::new(crate::loggers::CsvLogger::new(self.config.default_root_dir.clone())));
        }
        let mut trainer = crate::Trainer::new(self.config, device, callbacks, loggers);
        trainer.configure_optimizers = self.configure_optimizers;
        Ok(trainer)
    }
}
