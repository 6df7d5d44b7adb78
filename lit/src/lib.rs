//! lit: PyTorch Lightning's `LightningModule` and `Trainer` for Rust, on tch (libtorch).
//!
//! Organise plain tch code into a struct implementing [`LightningModule`] (by hand, or with
//! `#[lightning_module]`), and let the [`Trainer`] run the loops: training, validation, test
//! and prediction in Lightning's order, train and eval modes, autograd modes, device placement
//! and logging. The order of hooks is documented once, on [`LightningModule`].
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
// Hooks take `cx: &mut Ctx`, as users write them; the context's lifetime stays implicit.
#![allow(elided_lifetimes_in_paths)]

// Lets code generated for users (`::lit::…` paths) compile inside lit too (`#[derive(FieldDocs)]`).
extern crate self as lit;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod amp;
mod callback;
pub mod callbacks;
pub mod checkpoint;
pub mod cli;
mod ctx;
pub mod data;
pub mod dist;
mod error;
pub mod export;
pub mod image;
mod interrupt;
pub mod loggers;
mod metric_store;
pub mod metrics;
mod module;
pub mod optim;
pub mod profiler;
mod progress;
mod protobuf;
mod rng;
#[cfg(lit_shim)]
mod shim;
mod summary;
mod trainer;
pub mod tuner;
mod warning;

pub use callback::Callback;
pub use ctx::{Ctx, Log, Metric, Opt, OptimizerHandle, RunningStage, Stage, StopFlag, TrainerView};
pub use error::{ConfigError, DataError, Error, Result};
pub use metric_store::{LogOptions, NanPolicy, Reduce};
pub use module::{GradientClipAlgorithm, Hooks, LightningModule, Loaders, StepOutput};
pub use summary::ModelSummary;
pub use trainer::{
    Accelerator, EvalMetrics, FromCheckpoint, IntoLoaders, Limit, NonFinitePolicy, OptionValue, Strategy, Trainer,
    TrainerBuilder, TrainerConfig,
};
pub use warning::set_stderr_warnings;

/// Re-exported macros: `#[lightning_module]` on a struct and its impl block, `#[hparams]` on a
/// config struct.
pub use lit_macros::{hparams, lightning_module};

/// A module's hyper-parameters: what `#[hparams]` derives. They go into every checkpoint and
/// reach the loggers (Lightning's `save_hyperparameters`, done for you).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hyper-parameter set",
    label = "the `#[hparams]` field's type must be a hyper-parameter set",
    note = "add `#[hparams]` to the definition of `{Self}` (it derives `Clone`, `Debug`, `Serialize`, `Deserialize` and `lit::Hparams`)"
)]
pub trait Hparams: serde::Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug {}

#[diagnostic::do_not_recommend]
impl Hparams for () {}

/// tch, re-exported so that user code and lit agree on one version.
pub use tch;

/// Seeds libtorch's random generators (CPU and CUDA), as Lightning's `seed_everything`.
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// What most modules need: `use lit::prelude::*;`.
pub mod prelude {
    pub use crate::callbacks::{
        BackboneFinetuning, BaseFinetuning, EarlyStopping, Finetuning, LearningRateMonitor, LoggingInterval, Mode,
        ModelCheckpoint, ModuleParams, StochasticWeightAveraging, TqdmProgressBar,
    };
    pub use crate::data::{Batch, Batches, DataLoader, Dataset, Loader, TensorDataset};
    pub use crate::loggers::{CsvLogger, TensorBoardLogger};
    pub use crate::metrics::{
        Accuracy, Auroc, Average, F1Score, MeanMetric, Metric as _, MetricCollection, Update as _,
    };
    pub use crate::optim::{
        Adam, AdamW, ChainedScheduler, CosineAnnealingLr, ExponentialLr, GroupOptions, Interval, LambdaLr, LinearLr,
        MultiStepLr, OneCycleLr, Optimizer, Optimizers, PlateauMode, ReduceLrOnPlateau, RmsProp, SchedulerConfig,
        SequentialLr, Sgd, StepLr,
    };
    pub use crate::tuner::{LrFindOptions, LrFinder, LrMode, Tuner};
    pub use crate::{
        Callback, Ctx, Hooks, Hparams, LightningModule, Opt, Reduce, Result, Stage, StepOutput, Trainer,
        TrainerBuilder, TrainerConfig, hparams, lightning_module, seed_everything,
    };
    pub use tch::nn::{self, Module, ModuleT, RNN};
    pub use tch::{Device, Kind, Tensor};
}
