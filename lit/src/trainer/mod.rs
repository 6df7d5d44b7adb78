//! The [`Trainer`]: runs a [`LightningModule`]'s hooks in Lightning's order.

mod checkpointing;
mod config;
mod ddp;
mod eval;
mod events;
mod fit;
mod from_checkpoint;
mod options;
mod predict;
mod swa;
mod trial;

use std::collections::BTreeMap;

use tch::Device;

pub use config::{Limit, NonFinitePolicy, TrainerBuilder, TrainerConfig};
pub use from_checkpoint::FromCheckpoint;
pub use options::{Accelerator, OptionValue, Strategy};

use crate::callback::{self, Callback};
use crate::ctx::{Ctx, RunningStage, Stage, State, StopFlag};
use crate::data::{Batch, Loader};
use crate::error::Result;
use crate::module::LightningModule;

/// Loaders handed to `fit`, `validate`, `test` or `predict`: one loader, `Some`/`None`, a
/// `Vec` of loaders, or `()` for "none: ask the module's `*_dataloader` hook". A `&mut` loader
/// works too, so it can be used again afterwards.
pub trait IntoLoaders<'a, B> {
    /// The loaders, or `None` when none were given.
    fn into_loaders(self) -> Option<Vec<Box<dyn Loader<Batch = B> + 'a>>>;
}

impl<'a, B: Batch, L: Loader<Batch = B> + 'a> IntoLoaders<'a, B> for L {
    fn into_loaders(self) -> Option<Vec<Box<dyn Loader<Batch = B> + 'a>>> {
        Some(vec![Box::new(self)])
    }
}
impl<'a, B: Batch, L: Loader<Batch = B> + 'a> IntoLoaders<'a, B> for Option<L> {
    fn into_loaders(self) -> Option<Vec<Box<dyn Loader<Batch = B> + 'a>>> {
        self.map(|l| vec![Box::new(l) as Box<dyn Loader<Batch = B> + 'a>])
    }
}
impl<'a, B: Batch, L: Loader<Batch = B> + 'a> IntoLoaders<'a, B> for Vec<L> {
    fn into_loaders(self) -> Option<Vec<Box<dyn Loader<Batch = B> + 'a>>> {
        Some(self.into_iter().map(|l| Box::new(l) as Box<dyn Loader<Batch = B> + 'a>).collect())
    }
}
impl<B> IntoLoaders<'_, B> for () {
    fn into_loaders(self) -> Option<Vec<Box<dyn Loader<Batch = B>>>> {
        None
    }
}

impl<L: Loader + ?Sized> Loader for &mut L {
    type Batch = L::Batch;
    fn len(&self) -> Option<usize> {
        (**self).len()
    }
    fn iter(&mut self, epoch: usize) -> Result<crate::data::BatchIter<'_, L::Batch>> {
        (**self).iter(epoch)
    }
    fn iter_from(&mut self, epoch: usize, start: usize) -> Result<crate::data::BatchIter<'_, L::Batch>> {
        (**self).iter_from(epoch, start)
    }
    fn shard(&mut self, rank: usize, world: usize) {
        (**self).shard(rank, world)
    }
    fn disable_shuffle(&mut self) {
        (**self).disable_shuffle()
    }
}

type LoaderVec<'a, B> = Vec<Box<dyn Loader<Batch = B> + 'a>>;

/// Runs training, validation, test and prediction loops over a [`LightningModule`], as
/// Lightning's `Trainer`. Build one with [`Trainer::builder`].
pub struct Trainer {
    config: TrainerConfig,
    device: Device,
    callbacks: Vec<Box<dyn Callback>>,
    cx: State,
    hparams_logged: bool,
    ddp: Option<ddp::Ddp>,
    ddp_ready: bool,
    /// Optimizers in place of the module's (`TrainerBuilder::configure_optimizers`).
    configure_optimizers: Option<config::ConfigureOptimizers>,
}

/// Metrics of one evaluation loader, as `test` and `validate` return them.
pub type EvalMetrics = BTreeMap<String, f64>;

impl Trainer {
    /// A builder with Lightning's defaults.
    pub fn builder() -> TrainerBuilder {
        TrainerBuilder::default()
    }

    pub(crate) fn new(
        config: TrainerConfig,
        device: Device,
        callbacks: Vec<Box<dyn Callback>>,
        loggers: Vec<Box<dyn crate::loggers::Logger>>,
    ) -> Self {
        let mut cx = run_state(&config, device, StopFlag::default());
        cx.loggers = loggers;
        cx.progress = crate::progress::Progress::new(config.enable_progress_bar, config.log_every_n_steps);
        if let Some(bar) = crate::callbacks::first_of::<crate::callbacks::TqdmProgressBar>(&callbacks) {
            cx.progress.configure(bar.config(), config.enable_progress_bar && bar.is_enabled());
        }
        Trainer {
            config,
            device,
            callbacks,
            cx,
            hparams_logged: false,
            ddp: None,
            ddp_ready: false,
            configure_optimizers: None,
        }
    }

    /// The optimizers of the current or last `fit` (Lightning's `trainer.optimizers`): their
    /// `name()`, parameter groups and learning rates.
    pub fn optimizers(&self) -> &[Box<dyn crate::optim::Optimizer>] {
        &self.cx.optimizers
    }

    /// The loggers.
    pub fn loggers(&mut self) -> &mut [Box<dyn crate::loggers::Logger>] {
        &mut self.cx.loggers
    }

    /// The first logger's run directory (`lightning_logs/version_N`), once it exists.
    pub fn log_dir(&self) -> Option<&std::path::Path> {
        self.cx.loggers.first().and_then(|l| l.log_dir())
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The device the module runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Epochs completed (after `fit`: the number of epochs trained).
    pub fn current_epoch(&self) -> usize {
        self.cx.current_epoch
    }

    /// Optimizer steps taken.
    pub fn global_step(&self) -> usize {
        self.cx.global_step
    }

    /// Optimizer steps skipped because the loss was not finite (`nonfinite_loss(Skip)`).
    pub fn skipped_steps(&self) -> usize {
        self.cx.skipped_steps
    }

    /// The latest value of every logged metric.
    pub fn callback_metrics(&self) -> BTreeMap<String, f64> {
        self.cx.callback_metrics()
    }

    /// The metrics sent to loggers.
    pub fn logged_metrics(&self) -> BTreeMap<String, f64> {
        self.cx.logged_metrics()
    }

    /// The metrics shown on the progress bar.
    pub fn progress_bar_metrics(&self) -> BTreeMap<String, f64> {
        self.cx.progress_bar_metrics()
    }

    /// A handle that stops training at the next batch boundary when requested (e.g. from a
    /// Ctrl-C handler or another thread).
    pub fn stop_handle(&self) -> StopFlag {
        self.cx.stop.clone()
    }

    /// The callbacks.
    pub fn callbacks(&self) -> &[Box<dyn Callback>] {
        &self.callbacks
    }

    /// Saves a full checkpoint to `path`, atomically: `model`'s variables and hyper-parameters,
    /// the optimizers' and schedulers' state of the last `fit`, the loop position and the
    /// callbacks' state. `Model::load_from_checkpoint(path)` rebuilds the model from it;
    /// `fit_from_checkpoint` continues training from it.
    pub fn save_checkpoint<M: LightningModule>(
        &mut self,
        path: impl AsRef<std::path::Path>,
        model: &mut M,
    ) -> Result<()> {
        // In distributed training rank 0 writes it and every rank waits until it is complete.
        if self.cx.global_rank() == 0 {
            let (meta, state) =
                checkpointing::build_state(model, &self.callbacks, &mut Ctx { state: &mut self.cx, datamodule: None })?;
            crate::checkpoint::save_with(path.as_ref(), model.var_store(), &state, meta)?;
        }
        match &self.cx.process_group {
            Some(pg) => pg.barrier(),
            None => Ok(()),
        }
    }

    /// This process's rank in distributed training (0 on one process).
    pub fn global_rank(&self) -> usize {
        self.cx.global_rank()
    }

    /// The number of processes training together.
    pub fn world_size(&self) -> usize {
        self.cx.world_size()
    }

    /// Continues training from a checkpoint written by `save_checkpoint` or `ModelCheckpoint`:
    /// weights, optimizer and scheduler state, callback state, and the position in the epoch,
    /// so that the run goes on with the next batch of the same shuffled order.
    pub fn fit_from_checkpoint<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        train: impl IntoLoaders<'a, M::TrainBatch>,
        val: impl IntoLoaders<'a, M::ValBatch>,
        ckpt_path: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        let ckpt = crate::checkpoint::Checkpoint::load(ckpt_path)?;
        let (train, val) = (train.into_loaders(), val.into_loaders());
        self.run(None, model, Stage::Fit, |run| run.fit(train, val, Some(ckpt), None))
    }

    /// Runs the test loop with the weights of a checkpoint first: `"best"` or `"last"` (from the
    /// `ModelCheckpoint` callback) or a path.
    pub fn test_from_checkpoint<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        test: impl IntoLoaders<'a, M::TestBatch>,
        ckpt: &str,
    ) -> Result<Vec<EvalMetrics>> {
        let path = self.resolve_checkpoint(ckpt)?;
        crate::checkpoint::Checkpoint::load(&path)?.load_into(model.var_store_mut())?;
        self.test(model, test)
    }

    /// Any entry point from a checkpoint, as Lightning's `ckpt_path=` argument: `"best"` or
    /// `"last"` (the first `ModelCheckpoint`'s) or a path, e.g.
    /// `trainer.ckpt_path("best").test_datamodule(&mut model, &mut dm)`. See [`FromCheckpoint`].
    pub fn ckpt_path(&mut self, ckpt: impl Into<String>) -> FromCheckpoint<'_> {
        FromCheckpoint::new(self, ckpt.into())
    }

    /// The first `ModelCheckpoint` callback (Lightning's `trainer.checkpoint_callback`): its
    /// `best_model_path()`, `best_model_score()`, `last_model_path()`.
    pub fn checkpoint_callback(&self) -> Option<&crate::callbacks::ModelCheckpoint> {
        self.checkpoint_callbacks().next()
    }

    /// The progress bar's callback (Lightning's `trainer.progress_bar_callback`): the given
    /// `TqdmProgressBar`, or the default one; `None` with `enable_progress_bar(false)`.
    pub fn progress_bar_callback(&self) -> Option<&crate::callbacks::TqdmProgressBar> {
        crate::callbacks::first_of(&self.callbacks)
    }

    /// Every `ModelCheckpoint` callback (Lightning's `trainer.checkpoint_callbacks`).
    pub fn checkpoint_callbacks(&self) -> impl Iterator<Item = &crate::callbacks::ModelCheckpoint> {
        crate::callbacks::model_checkpoints(&self.callbacks)
    }

    /// `"best"`, `"last"` or a path, as a checkpoint file.
    /// Loads the weights of checkpoint `ckpt` ("best", "last" or a path) into `model` and hands
    /// the module its saved entries (`on_load_checkpoint`), as Lightning's `ckpt_path=` does
    /// for `validate`, `test` and `predict`.
    pub(crate) fn load_weights<M: LightningModule>(&mut self, model: &mut M, ckpt: &str) -> Result<()> {
        let path = self.resolve_checkpoint(ckpt)?;
        let checkpoint = crate::checkpoint::Checkpoint::load(&path)?;
        checkpoint.load_into(model.var_store_mut())?;
        self.hand_module_state(model, &checkpoint)
    }

    /// The module's `on_load_checkpoint` with the entries it saved in `checkpoint`.
    pub(crate) fn hand_module_state<M: LightningModule>(
        &mut self,
        model: &mut M,
        checkpoint: &crate::checkpoint::Checkpoint,
    ) -> Result<()> {
        model.on_load_checkpoint(&checkpoint.meta.module, &mut Ctx { state: &mut self.cx, datamodule: None })
    }

    pub(crate) fn resolve_checkpoint(&self, ckpt: &str) -> Result<std::path::PathBuf> {
        let found = match (ckpt, self.checkpoint_callback()) {
            ("best", Some(c)) => c.best_model_path().map(std::path::Path::to_path_buf),
            ("last", Some(c)) => c.last_model_path().map(std::path::Path::to_path_buf),
            ("best" | "last", None) => None,
            (path, _) => Some(std::path::PathBuf::from(path)),
        };
        found.ok_or_else(|| {
            crate::Error::msg(format!("no `{ckpt}` checkpoint: the ModelCheckpoint callback has not saved one"))
        })
    }

    /// Trains `model` on `train` (or the module's `train_dataloader`), validating on `val` (or
    /// its `val_dataloader`) as configured.
    pub fn fit<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        train: impl IntoLoaders<'a, M::TrainBatch>,
        val: impl IntoLoaders<'a, M::ValBatch>,
    ) -> Result<()> {
        let (train, val) = (train.into_loaders(), val.into_loaders());
        self.run(None, model, Stage::Fit, |run| run.fit(train, val, None, None))
    }

    /// `fit` on a [`DataModule`](crate::data::DataModule)'s training and validation loaders,
    /// around its `prepare_data`, `setup(Fit)` and `teardown(Fit)`.
    pub fn fit_datamodule<M, D>(&mut self, model: &mut M, datamodule: &mut D) -> Result<()>
    where
        M: LightningModule,
        D: crate::data::DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch>,
    {
        self.fit_datamodule_inner(model, datamodule, None)
    }

    /// `fit_from_checkpoint` on a data module's loaders; the data module's state is restored
    /// from the checkpoint too.
    pub fn fit_datamodule_from_checkpoint<M, D>(
        &mut self,
        model: &mut M,
        datamodule: &mut D,
        ckpt_path: impl AsRef<std::path::Path>,
    ) -> Result<()>
    where
        M: LightningModule,
        D: crate::data::DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch>,
    {
        let ckpt = crate::checkpoint::Checkpoint::load(ckpt_path)?;
        self.fit_datamodule_inner(model, datamodule, Some(ckpt))
    }

    fn fit_datamodule_inner<M, D>(
        &mut self,
        model: &mut M,
        datamodule: &mut D,
        ckpt: Option<crate::checkpoint::Checkpoint>,
    ) -> Result<()>
    where
        M: LightningModule,
        D: crate::data::DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch>,
    {
        self.run(Some(datamodule), model, Stage::Fit, |run| {
            let (train, val) = fit_loaders(run.datamodule::<D>())?;
            let reload: fit::Reload<'_, M> = Box::new(|_, cx| {
                let (train, val) = fit_loaders(cx.datamodule_mut::<D>().expect("the run's data module"))?;
                Ok((vec![train], val))
            });
            run.fit(Some(vec![train]), Some(val), ckpt, Some(reload))
        })
    }

    /// `validate` on a data module's validation loaders.
    pub fn validate_datamodule<M, D>(&mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<EvalMetrics>>
    where
        M: LightningModule,
        D: crate::data::DataModule<ValBatch = M::ValBatch>,
    {
        self.run(Some(datamodule), model, Stage::Validate, |run| {
            let val = run.datamodule::<D>().val_dataloader()?;
            run.validate(Some(val.into_iter().map(|l| l as _).collect()))
        })
    }

    /// `test` on a data module's test loaders.
    pub fn test_datamodule<M, D>(&mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<EvalMetrics>>
    where
        M: LightningModule,
        D: crate::data::DataModule<TestBatch = M::TestBatch>,
    {
        self.run(Some(datamodule), model, Stage::Test, |run| {
            let test = run.datamodule::<D>().test_dataloader()?;
            run.test(Some(test.into_iter().map(|l| l as _).collect()))
        })
    }

    /// `predict` on a data module's prediction loaders.
    pub fn predict_datamodule<M, D>(&mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<M::Prediction>>
    where
        M: LightningModule,
        D: crate::data::DataModule<PredictBatch = M::PredictBatch>,
    {
        self.run(Some(datamodule), model, Stage::Predict, |run| {
            let loaders = run.datamodule::<D>().predict_dataloader()?;
            run.predict_loop(Some(loaders.into_iter().map(|l| l as _).collect()))
        })
    }

    /// Runs one validation epoch; returns the metrics of each loader.
    pub fn validate<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        val: impl IntoLoaders<'a, M::ValBatch>,
    ) -> Result<Vec<EvalMetrics>> {
        let val = val.into_loaders();
        self.run(None, model, Stage::Validate, |run| run.validate(val))
    }

    /// Runs the test loop; returns the metrics of each loader, as Lightning prints them.
    pub fn test<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        test: impl IntoLoaders<'a, M::TestBatch>,
    ) -> Result<Vec<EvalMetrics>> {
        let test = test.into_loaders();
        self.run(None, model, Stage::Test, |run| run.test(test))
    }

    /// Runs `predict_step` over every batch; returns the predictions in order (loader by loader).
    pub fn predict<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        data: impl IntoLoaders<'a, M::PredictBatch>,
    ) -> Result<Vec<M::Prediction>> {
        let data = data.into_loaders();
        self.run(None, model, Stage::Predict, |run| run.predict_loop(data))
    }

    /// Common set-up and tear-down of every entry point.
    fn run<M: LightningModule, T>(
        &mut self,
        datamodule: Option<&mut (dyn crate::data::ErasedDataModule + 'static)>,
        model: &mut M,
        stage: Stage,
        body: impl FnOnce(&mut Run<'_, M>) -> Result<T>,
    ) -> Result<T> {
        self.begin_run(model, stage)?;
        let mut run = Run {
            model,
            callbacks: &mut self.callbacks,
            cx: &mut self.cx,
            datamodule,
            config: &self.config,
            configure_optimizers: self.configure_optimizers.as_ref(),
            datamodule_set_up: false,
        };
        // A panic in a hook (a shape mismatch inside tch, an `unwrap`) ends the run as an error
        // naming where it arose, and the loggers and callbacks still close as after any error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run.setup(stage).and_then(|()| body(&mut run)).and_then(|out| {
                run.teardown(stage)?;
                Ok(out)
            })
        }))
        .unwrap_or_else(|payload| Err(run.panic_error(&*payload)));
        let status = match &result {
            Ok(_) => crate::loggers::RunStatus::Success,
            Err(crate::Error::Interrupted { .. }) => crate::loggers::RunStatus::Interrupted,
            Err(_) => crate::loggers::RunStatus::Failed,
        };
        if let Err(error) = &result {
            run.on_failure(error, stage);
        }
        let finalized = run.finish(stage, status);
        if self.config.detect_anomaly {
            crate::amp::set_detect_anomaly(false)?;
        }
        let result = match (result, &mut self.ddp) {
            (Err(e @ crate::Error::Interrupted { .. }), Some(ddp)) => {
                // Every process stops on Ctrl-C; wait for the launched ones to end.
                let _ = ddp.worker_report();
                Err(e)
            }
            (Err(e), Some(ddp)) => {
                let report = ddp.worker_report();
                Err(match (e, report.is_empty()) {
                    (e, true) => e,
                    (crate::Error::Distributed { operation, message }, false) => {
                        crate::Error::Distributed { operation, message: format!("{message}; {report}") }
                    }
                    (e, false) => crate::Error::Distributed { operation: "ddp", message: format!("{e}; {report}") },
                })
            }
            (result, _) => result,
        };
        let out = result?;
        finalized?;
        Ok(out)
    }

    /// What every run does before its module's hooks: seeds and global flags, the state's
    /// reset for `stage`, joining the process group (once), the hyper-parameters to the loggers
    /// (the first fit), the profiler.
    fn begin_run<M: LightningModule>(&mut self, model: &M, stage: Stage) -> Result<()> {
        if let Some(seed) = self.config.seed {
            tch::manual_seed(seed as i64);
        }
        crate::amp::set_global_flags(
            self.config.deterministic,
            self.config.deterministic_warn_only,
            self.config.benchmark,
        )?;
        if self.config.detect_anomaly {
            crate::amp::set_detect_anomaly(true)?;
        }
        self.cx.stage = stage;
        self.cx.running = match stage {
            Stage::Fit => RunningStage::Training,
            Stage::Validate => RunningStage::Validating,
            Stage::Test => RunningStage::Testing,
            Stage::Predict => RunningStage::Predicting,
        };
        self.cx.metrics.reset();
        self.cx.eval_step_base = 0;
        self.cx.stop.clear();
        self.cx.default_root_dir = self.config.default_root_dir.clone();
        self.cx.training = stage == Stage::Fit;
        self.cx.grad_enabled = true;
        self.join_process_group()?;
        if stage == Stage::Fit && !self.hparams_logged {
            let hparams = model.hparams_json().unwrap_or_else(|| serde_json::json!({}));
            // The first logger claims the run's version; the others take the same one.
            if let Some((first, others)) = self.cx.loggers.split_first_mut() {
                first.log_hyperparams(&hparams)?;
                let version = first.version();
                for logger in others {
                    logger.share_version(&version);
                    logger.log_hyperparams(&hparams)?;
                }
            }
            self.hparams_logged = true;
        }
        if let Some(kind) = self.config.profiler {
            let dir = self.cx.run_dir();
            self.cx.profiler = Some(crate::profiler::Profiler::start(kind, &dir, stage.as_str())?);
        }
        Ok(())
    }

    /// Joins the process group of distributed training, the first time a run needs it (launching
    /// the other processes from rank 0).
    fn join_process_group(&mut self) -> Result<()> {
        if !self.ddp_ready {
            self.ddp_ready = true;
            if let Some((ddp, pg)) = ddp::setup(&self.config)? {
                if pg.rank() != 0 {
                    // Logging, the progress bar and checkpoints happen once, on rank 0.
                    self.cx.loggers.clear();
                    self.cx.progress = crate::progress::Progress::silent();
                }
                self.cx.local_rank = ddp.local_rank;
                // On CUDA each process trains on its own device, `cuda:LOCAL_RANK`.
                self.cx.device = ddp.device(self.cx.device);
                self.cx.process_group = Some(pg);
                self.ddp = Some(ddp);
            }
        }
        Ok(())
    }
}

/// A fresh run state for `config` on `device`: its precision, NaN policy and grad scaler; no
/// loggers, the progress bar off.
fn run_state(config: &TrainerConfig, device: Device, stop: StopFlag) -> State {
    let mut cx = State::new(device, stop);
    cx.metrics.nan = config.nan_metrics;
    cx.precision = config.precision;
    cx.config = config.clone();
    if cx.precision == crate::amp::Precision::F16Mixed {
        cx.scaler = Some(crate::amp::GradScaler::new(device));
    }
    cx
}

/// A data module's training loader (which it must give) and validation loaders.
type FitLoaders<T, V> = (Box<dyn Loader<Batch = T>>, Vec<Box<dyn Loader<Batch = V>>>);

fn fit_loaders<D: crate::data::DataModule>(dm: &mut D) -> Result<FitLoaders<D::TrainBatch, D::ValBatch>> {
    let train = dm.train_dataloader()?.ok_or_else(|| {
        crate::Error::hook("DataModule::train_dataloader", "returned no loader; `fit_datamodule` needs one")
    })?;
    Ok((train, dm.val_dataloader()?))
}

/// One run in progress: the module, the callbacks, the run's state, the data module of a
/// `*_datamodule` run, and the configuration.
pub(crate) struct Run<'t, M> {
    model: &'t mut M,
    callbacks: &'t mut Vec<Box<dyn Callback>>,
    cx: &'t mut State,
    datamodule: Option<&'t mut (dyn crate::data::ErasedDataModule + 'static)>,
    config: &'t TrainerConfig,
    /// Optimizers in place of the module's `configure_optimizers`.
    configure_optimizers: Option<&'t config::ConfigureOptimizers>,
    /// Whether the data module's `setup` ran (its `teardown` then runs, whatever happens).
    datamodule_set_up: bool,
}

/// The context of a hook call: `ctx!(run)` borrows the run's state and data module.
macro_rules! ctx {
    ($run:expr) => {
        &mut crate::ctx::Ctx { state: &mut *$run.cx, datamodule: $run.datamodule.as_deref_mut() }
    };
}
pub(crate) use ctx;

/// Calls a hook on every callback, then on the module, then surfaces `log` errors.
macro_rules! hook {
    ($run:expr, $name:ident($($arg:expr),*)) => {{
        let started = $run.cx.profile_start();
        $run.cx.hook = stringify!($name);
        let cx = $crate::trainer::ctx!($run);
        for cb in $run.callbacks.iter_mut() {
            cb.$name($($arg,)* cx)?;
        }
        $run.model.$name($($arg,)* cx)?;
        $run.cx.hook = "";
        $run.cx.profile_end(stringify!($name), started);
        $run.cx.check()?;
        $run.process_requests()?;
    }};
}
pub(crate) use hook;

impl<M: LightningModule> Run<'_, M> {
    /// The prologue every run shares, in the spec's order: `prepare_data` (the data module's, then
    /// the module's), `configure_callbacks`, the data module's `setup`, (`fit`: `on_fit_start`),
    /// `setup`, the move to the device.
    fn setup(&mut self, stage: Stage) -> Result<()> {
        // As Lightning's data connector: local rank 0 prepares (downloads, writes), then every
        // process waits for it (`_InfiniteBarrier`) before any of them reads the data.
        if crate::data::prepares_data() {
            if let Some(dm) = self.datamodule.as_deref_mut() {
                dm.prepare_data()?;
            }
            self.model.prepare_data(ctx!(self))?;
        }
        if let Some(pg) = &self.cx.process_group {
            pg.barrier()?;
        }
        self.cx.module = crate::callbacks::ModuleParams::new(self.model.var_store());
        let module_callbacks = self.model.configure_callbacks();
        // A trial fit (the tuner's) runs with its own callbacks only, as Lightning's tuner does.
        if !self.cx.trial {
            callback::merge(self.callbacks, module_callbacks);
        }
        // The data module is set up before the module's hooks run, so that they can read its
        // splits through `cx.datamodule()`.
        if let Some(dm) = self.datamodule.as_deref_mut() {
            self.datamodule_set_up = true;
            dm.setup(stage)?;
        }
        if stage == Stage::Fit {
            hook!(self, on_fit_start());
        }
        hook!(self, setup(stage));
        if self.model.var_store().device() != self.cx.device {
            self.model.var_store_mut().set_device(self.cx.device);
        }
        if let Some(kind) = self.cx.precision.param_kind() {
            self.model.var_store_mut().set_kind(kind);
        }
        self.model.on_post_move_to_device(ctx!(self))?;
        if stage == Stage::Fit && self.cx.global_rank() == 0 {
            let depth = match crate::callbacks::first_of::<crate::callbacks::ModelSummary>(self.callbacks) {
                Some(c) => c.depth(),
                None => Some(1),
            };
            if self.config.enable_model_summary && depth != Some(0) {
                let summary = crate::ModelSummary::with_depth(self.model.var_store(), depth);
                self.cx.progress.println(&summary.table());
            }
        }
        Ok(())
    }

    /// After a failed run: the callbacks' `on_exception`, and the data module's `teardown` when
    /// its `setup` ran.
    fn on_failure(&mut self, error: &crate::Error, stage: Stage) {
        tracing::error!(target: "lit", stage = stage.as_str(), %error, "run failed");
        let mut cx = Ctx { state: &mut *self.cx, datamodule: self.datamodule.as_deref_mut() };
        for cb in self.callbacks.iter_mut() {
            cb.on_exception(error, &mut cx);
        }
        let on_exception = crate::callbacks::first_of::<crate::callbacks::OnExceptionCheckpoint>(self.callbacks)
            .map(|c| c.ckpt_path());
        if let Some(path) = on_exception.filter(|_| stage == Stage::Fit && self.cx.global_rank() == 0) {
            match self.write_checkpoint(&path) {
                Ok(()) => self.warn(&format!("OnExceptionCheckpoint: saved {} after the error", path.display())),
                Err(e) => self.warn(&format!("OnExceptionCheckpoint: could not save {}: {e}", path.display())),
            }
        }
        let cx = Ctx { state: &mut *self.cx, datamodule: self.datamodule.as_deref_mut() };
        if self.datamodule_set_up
            && let Some(dm) = cx.datamodule
            && let Err(torn) = dm.teardown(stage)
        {
            tracing::error!(target: "lit", stage = stage.as_str(), error = %torn, "data module teardown failed");
        }
    }

    /// The end of every run, whatever its result: the profiler's report, the loggers closed with
    /// `status`.
    fn finish(&mut self, stage: Stage, status: crate::loggers::RunStatus) -> Result<()> {
        // The reducer's autograd hooks leave the parameters when the run ends.
        self.cx.replica = None;
        if let Some(profiler) = self.cx.profiler.take() {
            let dir = self.cx.run_dir();
            let (report, path) = profiler.finish(&dir, stage.as_str())?;
            if self.cx.global_rank() == 0 {
                self.cx.progress.println(&report);
            }
            tracing::info!(target: "lit", path = %path.display(), "profiler report written");
        }
        // Every logger closes, even after another failed to (a server gone away must not cost
        // the local files); the first failure is reported.
        let mut result = Ok(());
        for logger in self.cx.loggers.iter_mut() {
            let finalized = logger.finalize(status);
            if result.is_ok() {
                result = finalized;
            }
        }
        result
    }

    fn teardown(&mut self, stage: Stage) -> Result<()> {
        if let Some(dm) = self.datamodule.as_deref_mut() {
            self.datamodule_set_up = false;
            dm.teardown(stage)?;
        }
        hook!(self, teardown(stage));
        Ok(())
    }

    /// The data module of a `*_datamodule` run, as the `D` it was given as.
    fn datamodule<D: 'static>(&mut self) -> &mut D {
        self.datamodule
            .as_deref_mut()
            .and_then(|dm| dm.as_any_mut().downcast_mut::<D>())
            .expect("a `*_datamodule` run holds its data module")
    }

    /// `validate`'s body: one validation epoch over `val` (or the module's loaders).
    fn validate<'a>(&mut self, val: Option<LoaderVec<'a, M::ValBatch>>) -> Result<Vec<EvalMetrics>> {
        let mut loaders =
            self.loaders(val, "validation", |m, cx| m.val_dataloader(cx), "val_dataloader", "validate")?;
        self.eval::<eval::Validation>(&mut loaders, RunningStage::Validating)?;
        Ok(self.print_results("Validate", self.cx.metrics.per_dataloader(loaders.len())))
    }

    /// `test`'s body: the test loop over `test` (or the module's loaders).
    fn test<'a>(&mut self, test: Option<LoaderVec<'a, M::TestBatch>>) -> Result<Vec<EvalMetrics>> {
        let mut loaders = self.loaders(test, "test", |m, cx| m.test_dataloader(cx), "test_dataloader", "test")?;
        self.eval::<eval::Test>(&mut loaders, RunningStage::Testing)?;
        Ok(self.print_results("Test", self.cx.metrics.per_dataloader(loaders.len())))
    }

    /// Prints the results table of `validate`/`test` (with the progress bar, on rank 0), as
    /// Lightning does at their end; returns the results.
    fn print_results(&self, stage: &str, results: Vec<EvalMetrics>) -> Vec<EvalMetrics> {
        if self.config.enable_progress_bar
            && self.cx.global_rank() == 0
            && let Some(table) = crate::progress::results_table(stage, &results, crate::progress::terminal_width())
        {
            self.cx.progress.println(&table);
        }
        results
    }

    /// `predict`'s body: the prediction loop over `data` (or the module's loaders).
    fn predict_loop<'a>(&mut self, data: Option<LoaderVec<'a, M::PredictBatch>>) -> Result<Vec<M::Prediction>> {
        let mut loaders =
            self.loaders(data, "prediction", |m, cx| m.predict_dataloader(cx), "predict_dataloader", "predict")?;
        self.predict(&mut loaders)
    }

    /// The loaders given to the entry point, or the module's, sharded in distributed runs.
    fn loaders<'a, B: Batch>(
        &mut self,
        given: Option<LoaderVec<'a, B>>,
        stage: &'static str,
        hook: impl FnOnce(&mut M, &mut Ctx) -> Result<Vec<Box<dyn Loader<Batch = B>>>>,
        hook_name: &'static str,
        method: &'static str,
    ) -> Result<LoaderVec<'a, B>> {
        let mut loaders: LoaderVec<'a, B> = match given {
            Some(loaders) => loaders,
            None => hook(self.model, ctx!(self))?.into_iter().map(|l| l as Box<dyn Loader<Batch = B> + 'a>).collect(),
        };
        // Distributed: each process reads its own share, as Lightning's `DistributedSampler`
        // does for every stage (predictions are each process's own).
        if let Some(pg) = &self.cx.process_group {
            let (rank, world) = (pg.rank(), pg.world_size());
            loaders.iter_mut().for_each(|l| (**l).shard(rank, world));
        }
        if loaders.is_empty() && method != "fit" {
            return Err(crate::error::DataError::Missing { stage, method, hook: hook_name }.into());
        }
        Ok(loaders)
    }

    /// The data module's `on_before_batch_transfer` / `on_after_batch_transfer`, in a
    /// `*_datamodule` run.
    fn datamodule_transfer_hook<B: Batch>(&mut self, batch: B, dataloader_idx: usize, after: bool) -> Result<B> {
        let Some(dm) = self.datamodule.as_deref_mut() else { return Ok(batch) };
        let out = dm.transfer_hook(Box::new(batch), dataloader_idx, after)?;
        out.downcast::<B>()
            .map(|b| *b)
            .map_err(|_| crate::Error::hook("DataModule::on_batch_transfer", "the hook changed the batch's type"))
    }

    /// Moves a batch to the device through the three transfer hooks.
    fn transfer<B: Batch>(&mut self, batch: B, dataloader_idx: usize) -> Result<B> {
        let started = self.cx.profile_start();
        let batch = self.model.on_before_batch_transfer(batch, dataloader_idx, ctx!(self))?;
        let batch = self.datamodule_transfer_hook(batch, dataloader_idx, false)?;
        let batch = self.model.transfer_batch_to_device(batch, self.cx.device, dataloader_idx, ctx!(self))?;
        let batch = match self.cx.precision.param_kind() {
            Some(kind) => batch.cast_floats(kind),
            None => batch,
        };
        let batch = self.model.on_after_batch_transfer(batch, dataloader_idx, ctx!(self))?;
        let batch = self.datamodule_transfer_hook(batch, dataloader_idx, true)?;
        self.cx.batch_size = batch.batch_size().unwrap_or(1);
        self.cx.profile_end("transfer_batch_to_device", started);
        Ok(batch)
    }
}
