//! The context `cx: &mut Ctx` that the Trainer passes to hooks: what Lightning keeps on `self`
//! but belongs to the run (logging, epoch and step counters, device, mode, stop requests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::loggers::Logger;
use crate::metric_store::{LogOptions, LogValue, MetricStore, Reduce};
use crate::optim::{ActiveScheduler, Optimizer};
use crate::progress::Progress;

/// What the Trainer was asked to do; `setup` and `teardown` receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `Trainer::fit`.
    Fit,
    /// `Trainer::validate`.
    Validate,
    /// `Trainer::test`.
    Test,
    /// `Trainer::predict`.
    Predict,
}

impl Stage {
    /// Lightning's name for it: "fit", "validate", "test", "predict".
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fit => "fit",
            Stage::Validate => "validate",
            Stage::Test => "test",
            Stage::Predict => "predict",
        }
    }
}

/// Which loop is running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunningStage {
    /// The training epochs.
    Training,
    /// The validation batches run before training to catch bugs early.
    SanityChecking,
    /// A validation loop.
    Validating,
    /// A test loop.
    Testing,
    /// A prediction loop.
    Predicting,
}

/// A shared flag that asks the loops to stop at the next batch boundary.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Asks the running loop to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The run's state: what hooks read and write through [`Ctx`] and what the loops keep between
/// hook calls (optimizers, schedulers, loggers, progress, profiler, process group).
pub(crate) struct State {
    pub(crate) stage: Stage,
    pub(crate) running: RunningStage,
    pub(crate) training: bool,
    pub(crate) grad_enabled: bool,
    pub(crate) in_step: bool,
    pub(crate) current_epoch: usize,
    pub(crate) global_step: usize,
    pub(crate) batch_size: usize,
    pub(crate) dataloader_idx: usize,
    pub(crate) num_dataloaders: usize,
    /// The Trainer's configuration, for [`Ctx::trainer`].
    pub(crate) config: crate::TrainerConfig,
    /// Training batches per epoch (after `limit_train_batches`), when the loader's length is known.
    pub(crate) num_training_batches: Option<usize>,
    /// Validation batches per loader (after `limit_val_batches`), once the loaders are known.
    pub(crate) num_val_batches: Vec<usize>,
    /// Batches per optimizer step in this epoch (`accumulate_grad_batches`, or the
    /// `GradientAccumulationScheduler`'s factor).
    pub(crate) accumulate_grad_batches: usize,
    /// Whether the factor changes between epochs (a `GradientAccumulationScheduler`).
    pub(crate) accumulation_varies: bool,
    /// Whether the training loader is known (its length may still be unknown: an endless one).
    pub(crate) training_length_known: bool,
    /// The logger step of the current evaluation epoch's first batch: evaluation step values go
    /// to the loggers at their own step, batches of earlier evaluation epochs of the run counted.
    pub(crate) eval_step_base: usize,
    pub(crate) device: Device,
    pub(crate) metrics: MetricStore,
    pub(crate) stop: StopFlag,
    pub(crate) error: Option<Error>,
    pub(crate) hiddens: Option<Vec<Tensor>>,
    pub(crate) loggers: Vec<Box<dyn Logger>>,
    pub(crate) progress: Progress,
    pub(crate) optimizers: Vec<Box<dyn Optimizer>>,
    /// `write_prediction`: the values to write at the end of the evaluation loop, by file and name.
    predictions_to_write: BTreeMap<std::path::PathBuf, BTreeMap<String, Vec<Tensor>>>,
    /// `toggle_optimizer`: each optimizer parameter's `requires_grad` before the toggle, by name.
    toggled: BTreeMap<String, bool>,
    pub(crate) frequencies: Vec<Option<usize>>,
    pub(crate) schedulers: Vec<ActiveScheduler>,
    pub(crate) optimizer_idx: usize,
    pub(crate) total_batch_idx: usize,
    /// Checkpoint writes and deletions callbacks asked for; the loop carries them out.
    pub(crate) requests: Vec<CheckpointRequest>,
    /// The epoch being trained and the batches of it done, until its end hooks start.
    pub(crate) epoch_progress: Option<(usize, usize)>,
    /// The epoch a resumed run would start.
    pub(crate) next_epoch: usize,
    pub(crate) validation_enabled: bool,
    pub(crate) default_root_dir: std::path::PathBuf,
    pub(crate) skipped_steps: usize,
    /// Without a `nonfinite_loss` policy: whether a NaN or infinite loss was reported in this run.
    pub(crate) nonfinite_loss_reported: bool,
    /// The hook running now (empty between hooks), and the batch being processed: where a panic
    /// arose, for its error.
    pub(crate) hook: &'static str,
    pub(crate) batch_idx: Option<usize>,
    /// In distributed training: whether some process had Ctrl-C pressed, as the last gradient
    /// all-reduce agreed (all processes then stop at the same batch).
    pub(crate) interrupt_agreed: bool,
    /// Keys logged with `logger(true)` while there was no logger, already warned about.
    pub(crate) warned_no_logger: std::collections::BTreeSet<String>,
    pub(crate) process_group: Option<crate::dist::ProcessGroup>,
    /// In distributed training, during `fit`: the module's replica (gradient reducer, buffers).
    pub(crate) replica: Option<crate::dist::Replica>,
    pub(crate) local_rank: usize,
    pub(crate) precision: crate::amp::Precision,
    pub(crate) scaler: Option<crate::amp::GradScaler>,
    pub(crate) profiler: Option<crate::profiler::Profiler>,
    /// The module's variables, for the built-in callbacks that act on them (SWA, finetuning).
    pub(crate) module: crate::callbacks::ModuleParams,
    /// A trial fit (the tuner's range test): no module callbacks, no checkpoint on a panic.
    pub(crate) trial: bool,
}

/// What a hook receives: the run's state and, in a `*_datamodule` run, the data module,
/// both borrowed for the hook call. The loops own the state; they make a `Ctx` for each call.
pub struct Ctx<'a> {
    pub(crate) state: &'a mut State,
    pub(crate) datamodule: Option<&'a mut (dyn crate::data::ErasedDataModule + 'static)>,
}

/// What a callback asked of the loop about checkpoints.
pub(crate) enum CheckpointRequest {
    Save(std::path::PathBuf),
    Remove(std::path::PathBuf),
}

impl State {
    pub(crate) fn new(device: Device, stop: StopFlag) -> Self {
        State {
            stage: Stage::Fit,
            running: RunningStage::Training,
            training: true,
            grad_enabled: true,
            in_step: false,
            current_epoch: 0,
            global_step: 0,
            batch_size: 1,
            dataloader_idx: 0,
            num_dataloaders: 1,
            config: crate::TrainerConfig::default(),
            num_training_batches: None,
            num_val_batches: Vec::new(),
            accumulate_grad_batches: 1,
            accumulation_varies: false,
            training_length_known: false,
            eval_step_base: 0,
            device,
            metrics: MetricStore::default(),
            stop,
            error: None,
            hiddens: None,
            loggers: Vec::new(),
            progress: Progress::new(false, 50),
            optimizers: Vec::new(),
            toggled: BTreeMap::new(),
            predictions_to_write: BTreeMap::new(),
            frequencies: Vec::new(),
            schedulers: Vec::new(),
            optimizer_idx: 0,
            total_batch_idx: 0,
            requests: Vec::new(),
            epoch_progress: None,
            next_epoch: 0,
            validation_enabled: false,
            default_root_dir: std::path::PathBuf::from("."),
            skipped_steps: 0,
            nonfinite_loss_reported: false,
            hook: "",
            batch_idx: None,
            warned_no_logger: Default::default(),
            interrupt_agreed: false,
            process_group: None,
            replica: None,
            local_rank: 0,
            precision: crate::amp::Precision::F32,
            scaler: None,
            profiler: None,
            module: Default::default(),
            trial: false,
        }
    }

    /// With the simple profiler: the start of an action to time.
    pub(crate) fn profile_start(&self) -> Option<std::time::Instant> {
        matches!(self.profiler, Some(crate::profiler::Profiler::Simple(_))).then(std::time::Instant::now)
    }

    /// With the simple profiler: records `action`, begun at `start`.
    pub(crate) fn profile_end(&mut self, action: &'static str, start: Option<std::time::Instant>) {
        if let (Some(start), Some(crate::profiler::Profiler::Simple(p))) = (start, &mut self.profiler) {
            p.record(action, start.elapsed());
        }
    }

    /// Autocast for a step hook, when the precision is mixed.
    pub(crate) fn autocast(&self) -> Result<Option<crate::amp::AutocastGuard>> {
        self.precision.autocast_kind().map(|kind| crate::amp::AutocastGuard::enter(self.device, kind)).transpose()
    }

    /// Forgets what `write_prediction` kept (the sanity check's).
    pub(crate) fn discard_predictions(&mut self) {
        self.predictions_to_write.clear();
    }

    /// Writes what `write_prediction` kept; returns the files.
    pub(crate) fn flush_predictions(&mut self) -> Result<Vec<std::path::PathBuf>> {
        let mut written = Vec::new();
        for (file, values) in std::mem::take(&mut self.predictions_to_write) {
            let file = if self.world_size() > 1 {
                let stem = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                let ext = file.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
                file.with_file_name(format!("{stem}_rank_{}{ext}", self.global_rank()))
            } else {
                file
            };
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let tensors = values
                .into_iter()
                .map(|(name, parts)| {
                    Ok((
                        name.clone(),
                        Tensor::f_cat(&parts, 0).map_err(|e| {
                            Error::hook(
                                "write_prediction",
                                format!("the values of `{name}` do not join along dim 0: {e}"),
                            )
                        })?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            crate::callbacks::prediction_writer::write_safetensors(&file, tensors)?;
            written.push(file);
        }
        Ok(written)
    }

    /// The error for a panic that ended the run: the hook that ran, the loop, epoch and batch,
    /// and the panic's message without libtorch's C++ frames.
    pub(crate) fn panicked(&mut self, payload: &(dyn std::any::Any + Send)) -> Error {
        let hook = std::mem::take(&mut self.hook);
        let mut at = match self.running {
            RunningStage::Training => format!("in epoch {}", self.current_epoch),
            RunningStage::SanityChecking => "in the sanity check".into(),
            RunningStage::Validating => format!("in validation (epoch {})", self.current_epoch),
            RunningStage::Testing => "in testing".into(),
            RunningStage::Predicting => "in prediction".into(),
        };
        if let Some(batch) = self.batch_idx.take() {
            at.push_str(&format!(", batch {batch}"));
            if self.num_dataloaders > 1 {
                at.push_str(&format!(" of loader {}", self.dataloader_idx));
            }
        }
        let message = crate::error::torch_message(&crate::error::panic_message(payload));
        Error::Hook {
            hook: if hook.is_empty() { "a hook" } else { hook },
            message: format!("panicked {at}: {message}"),
        }
    }

    /// Takes an error recorded by a `log` call (which cannot return one itself).
    pub(crate) fn check(&mut self) -> Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    fn params_of(&self, opt: Opt) -> impl Iterator<Item = &(String, Tensor)> {
        self.optimizers[opt.0].param_groups().iter().flat_map(|g| g.params.iter())
    }

    pub(crate) fn global_rank(&self) -> usize {
        self.process_group.as_ref().map_or(0, |pg| pg.rank())
    }

    pub(crate) fn world_size(&self) -> usize {
        self.process_group.as_ref().map_or(1, |pg| pg.world_size())
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop.is_requested()
    }

    pub(crate) fn callback_metrics(&self) -> BTreeMap<String, f64> {
        self.metrics.callback_metrics()
    }

    pub(crate) fn logged_metrics(&self) -> BTreeMap<String, f64> {
        self.metrics.logged_metrics()
    }

    pub(crate) fn progress_bar_metrics(&self) -> BTreeMap<String, f64> {
        self.metrics.progress_bar_metrics()
    }

    /// The run's directory: the first logger's, or `default_root_dir` without one.
    pub(crate) fn run_dir(&self) -> std::path::PathBuf {
        self.loggers
            .first()
            .and_then(|l| l.log_dir())
            .map_or_else(|| self.default_root_dir.clone(), std::path::Path::to_path_buf)
    }

    /// Where checkpoints go by default: `checkpoints/` in the log directory; for a first logger
    /// without a directory (MLflow's), in `default_root_dir/<name>/<version>` as Lightning; in
    /// `default_root_dir` without a logger.
    pub(crate) fn checkpoints_dir(&self) -> std::path::PathBuf {
        let remote = (self.loggers.first())
            .filter(|l| l.log_dir().is_none())
            .map(|l| (l.name(), l.version()))
            .filter(|(name, version)| !name.is_empty() && !version.is_empty());
        match (remote, self.log_dir()) {
            (Some((name, version)), _) => self.default_root_dir.join(name).join(version),
            (None, Some(dir)) => dir,
            (None, None) => self.default_root_dir.clone(),
        }
        .join("checkpoints")
    }

    pub(crate) fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.loggers.iter().find_map(|l| l.log_dir().map(std::path::Path::to_path_buf))
    }
}

impl Ctx<'_> {
    /// Logs a scalar, as Lightning's `self.log`: `cx.log("val_loss", &loss).prog_bar(true);`.
    /// The value is kept as a tensor (no device sync); options are set on the returned builder
    /// and the value is recorded when it goes out of scope.
    pub fn log(&mut self, name: impl Into<String>, value: impl Into<Metric>) -> Log<'_> {
        let training_step = self.state.running == RunningStage::Training && self.state.in_step;
        let options = LogOptions {
            on_step: training_step,
            on_epoch: !training_step,
            prog_bar: false,
            logger: true,
            reduce_fx: Reduce::Mean,
            batch_size: None,
            sync_dist: false,
        };
        Log { cx: &mut *self.state, name: name.into(), value: Some(value.into().0), options, logger_asked: false }
    }

    /// Logs several scalars with default options, as Lightning's `self.log_dict`.
    pub fn log_dict<K: Into<String>, V: Into<Metric>>(&mut self, values: impl IntoIterator<Item = (K, V)>) {
        for (k, v) in values {
            self.log(k, v);
        }
    }

    /// Prints a line on rank 0 without breaking the progress bar (Lightning's `self.print`).
    pub fn print(&self, message: impl std::fmt::Display) {
        self.state.progress.println(&message.to_string());
    }

    /// The first logger, as Lightning's `self.logger`.
    pub fn logger(&mut self) -> Option<&mut dyn Logger> {
        self.state.loggers.first_mut().map(|l| &mut **l)
    }

    /// The logger of type `L`, to reach its experiment handle:
    /// `cx.logger_as::<TensorBoardLogger>()?.experiment()?.add_image(…, cx.global_step())`.
    pub fn logger_as<L: Logger>(&mut self) -> Option<&mut L> {
        self.state.loggers.iter_mut().find_map(|l| l.as_any_mut().downcast_mut::<L>())
    }

    /// Every logger.
    pub fn loggers(&mut self) -> &mut [Box<dyn Logger>] {
        &mut self.state.loggers
    }

    /// The stage the Trainer was asked to run.
    pub fn stage(&self) -> Stage {
        self.state.stage
    }

    /// The loop running now.
    pub fn running_stage(&self) -> RunningStage {
        self.state.running
    }

    /// Whether the sanity check is running (Lightning's `trainer.sanity_checking`).
    pub fn sanity_checking(&self) -> bool {
        self.state.running == RunningStage::SanityChecking
    }

    /// Whether layers should behave as in training (dropout on, batch-norm updating): pass it
    /// to `forward_t`.
    pub fn training(&self) -> bool {
        self.state.training
    }

    /// Switches the training flag; the `on_*_model_eval` / `on_*_model_train` hooks do this.
    pub fn set_training(&mut self, training: bool) {
        self.state.training = training;
    }

    /// Whether autograd records operations in the current loop.
    pub fn grad_enabled(&self) -> bool {
        self.state.grad_enabled
    }

    /// The current epoch, from 0.
    pub fn current_epoch(&self) -> usize {
        self.state.current_epoch
    }

    /// Optimizer steps taken so far.
    pub fn global_step(&self) -> usize {
        self.state.global_step
    }

    /// The device the module and batches are on.
    pub fn device(&self) -> Device {
        self.state.device
    }

    /// The data module of a `fit_datamodule` (`validate_`, `test_`, `predict_datamodule`) run,
    /// if it is a `D` (Lightning's `self.trainer.datamodule`).
    pub fn datamodule<D: 'static>(&self) -> Option<&D> {
        self.datamodule.as_deref().and_then(|dm| dm.as_any().downcast_ref::<D>())
    }

    /// [`Ctx::datamodule`], mutable.
    pub fn datamodule_mut<D: 'static>(&mut self) -> Option<&mut D> {
        self.datamodule.as_deref_mut().and_then(|dm| dm.as_any_mut().downcast_mut::<D>())
    }

    /// The run's precision (`"32-true"`, `"bf16-mixed"`, …).
    pub fn precision(&self) -> crate::amp::Precision {
        self.state.precision
    }

    /// Whether the step hooks run under autocast (a mixed precision).
    pub fn use_amp(&self) -> bool {
        self.state.precision.is_mixed()
    }

    /// The gradient scaler of "16-mixed" (for manual optimization that steps on its own).
    pub fn grad_scaler(&mut self) -> Option<&mut crate::amp::GradScaler> {
        self.state.scaler.as_mut()
    }

    /// The simple profiler's records so far (for callbacks and tests).
    pub fn simple_profiler(&self) -> Option<&crate::profiler::SimpleProfiler> {
        match &self.state.profiler {
            Some(crate::profiler::Profiler::Simple(p)) => Some(p),
            _ => None,
        }
    }

    /// This process's rank among all processes (0 on one process).
    pub fn global_rank(&self) -> usize {
        self.state.global_rank()
    }

    /// This process's rank on its machine (0 on one process).
    pub fn local_rank(&self) -> usize {
        self.state.local_rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.state.world_size()
    }

    /// The process group of distributed training, for collectives of your own.
    pub fn process_group(&self) -> Option<&crate::dist::ProcessGroup> {
        self.state.process_group.as_ref()
    }

    /// Every process's `tensor`, stacked along a new first dimension in rank order, as
    /// Lightning's `self.all_gather(data)`; on one process, `tensor` itself (Lightning's
    /// single-device strategy returns it unchanged). Gradients do not flow through it (no
    /// `sync_grads`).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        match &self.state.process_group {
            Some(pg) => pg.all_gather(tensor),
            None => Ok(tensor.shallow_clone()),
        }
    }

    /// The index of the evaluation loader the current batch came from.
    pub fn dataloader_idx(&self) -> usize {
        self.state.dataloader_idx
    }

    /// Asks the Trainer to stop training at the next batch boundary (Lightning's
    /// `trainer.should_stop = True`); `min_epochs` and `min_steps` still hold.
    pub fn request_stop(&self) {
        self.state.stop.request();
    }

    /// Whether a stop was requested.
    pub fn should_stop(&self) -> bool {
        self.state.should_stop()
    }

    /// The latest value of every logged metric (step values during an epoch, epoch values
    /// after it): what checkpoint and early-stopping callbacks monitor. Reading syncs the device.
    pub fn callback_metrics(&self) -> BTreeMap<String, f64> {
        self.state.callback_metrics()
    }

    /// The metrics sent to loggers.
    pub fn logged_metrics(&self) -> BTreeMap<String, f64> {
        self.state.logged_metrics()
    }

    /// The metrics shown on the progress bar.
    pub fn progress_bar_metrics(&self) -> BTreeMap<String, f64> {
        self.state.progress_bar_metrics()
    }

    /// Asks the Trainer to write a full checkpoint (weights, optimizer and scheduler state, loop
    /// position, callback state) to `path` once the current hook returns.
    pub fn save_checkpoint(&mut self, path: impl Into<std::path::PathBuf>) {
        self.state.requests.push(CheckpointRequest::Save(path.into()));
    }

    /// Asks the Trainer to delete the checkpoint at `path` after the saves asked for before it
    /// have succeeded (so that a failed save never costs an older checkpoint).
    pub fn remove_checkpoint(&mut self, path: impl Into<std::path::PathBuf>) {
        self.state.requests.push(CheckpointRequest::Remove(path.into()));
    }

    /// The first logger's run directory (`…/lightning_logs/version_N`), if there is one.
    pub fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.state.log_dir()
    }

    /// The Trainer's `default_root_dir`.
    pub fn default_root_dir(&self) -> &std::path::Path {
        &self.state.default_root_dir
    }

    /// Whether this fit validates (a validation step and loaders exist).
    pub fn has_validation(&self) -> bool {
        self.state.validation_enabled
    }

    /// With several optimizers in automatic optimization, the one `training_step` runs for
    /// (Lightning's `optimizer_idx`).
    pub fn optimizer_idx(&self) -> usize {
        self.state.optimizer_idx
    }

    /// The number of optimizers `configure_optimizers` returned.
    pub fn num_optimizers(&self) -> usize {
        self.state.optimizers.len()
    }

    /// Manual optimization: optimizer `index`, as Lightning's `self.optimizers()[index]`. Its
    /// `step()` counts as a global step.
    pub fn optimizer(&mut self, index: usize) -> Result<OptimizerHandle<'_>> {
        if index >= self.state.optimizers.len() {
            return Err(Error::msg(format!(
                "optimizer {index} does not exist: `configure_optimizers` returned {}",
                self.state.optimizers.len()
            )));
        }
        Ok(OptimizerHandle { cx: &mut *self.state, index })
    }

    /// Keeps `value` (one batch's predictions) under `name`, to be written to `filename` when the
    /// test (or validation) loop ends (Lightning 1.3's `write_prediction`). The file is
    /// safetensors: each name's values concatenated along the first dimension (0-d values
    /// stacked); Python reads it with `safetensors.torch.load_file(filename)`. With several
    /// processes each writes `{stem}_rank_{r}.{extension}`, as Lightning did.
    pub fn write_prediction(
        &mut self,
        name: impl Into<String>,
        value: &Tensor,
        filename: impl Into<std::path::PathBuf>,
    ) {
        let value = value.detach().to_device(Device::Cpu);
        let value = if value.dim() == 0 { value.unsqueeze(0) } else { value };
        self.state.predictions_to_write.entry(filename.into()).or_default().entry(name.into()).or_default().push(value);
    }

    /// [`Ctx::write_prediction`] for every entry of `values` (Lightning's
    /// `write_prediction_dict`).
    pub fn write_prediction_dict<K: Into<String>>(
        &mut self,
        values: impl IntoIterator<Item = (K, Tensor)>,
        filename: impl Into<std::path::PathBuf>,
    ) {
        let filename = filename.into();
        for (name, value) in values {
            self.write_prediction(name, &value, filename.clone());
        }
    }

    /// A read-only view of the Trainer: its configuration and state (what a LightningModule
    /// reads through `self.trainer`).
    pub fn trainer(&self) -> TrainerView<'_> {
        TrainerView { cx: self.state }
    }

    /// Manual optimization: every optimizer at once, as Lightning's
    /// `opt_g, opt_d = self.optimizers()`: `let [g, d] = cx.optimizers()?;`. The handles are
    /// plain indices, so `cx` stays free for `manual_backward`; they act through it
    /// (`g.zero_grad(cx)`, `g.step(cx)?`). An error names the count when it is not `N`.
    pub fn optimizers<const N: usize>(&self) -> Result<[Opt; N]> {
        if self.state.optimizers.len() != N {
            return Err(Error::msg(format!(
                "`cx.optimizers()` asked for {N} optimizers, but `configure_optimizers` returned {}",
                self.state.optimizers.len()
            )));
        }
        Ok(std::array::from_fn(Opt))
    }

    /// Only `opt`'s parameters require grad until [`Ctx::untoggle_optimizer`] (Lightning's
    /// `toggle_optimizer`): the others' `requires_grad` is recorded and turned off, so that
    /// `backward` computes no gradient for them.
    pub fn toggle_optimizer(&mut self, opt: Opt) {
        let mut state = BTreeMap::new();
        for (name, param) in (0..self.state.optimizers.len()).flat_map(|i| self.state.params_of(Opt(i))) {
            if !state.contains_key(name) {
                state.insert(name.clone(), param.requires_grad());
                let _ = param.shallow_clone().set_requires_grad(false);
            }
        }
        for (name, param) in self.state.params_of(opt) {
            let _ = param.shallow_clone().set_requires_grad(state[name]);
        }
        self.state.toggled = state;
    }

    /// Gives the other optimizers' parameters back the `requires_grad` they had before
    /// [`Ctx::toggle_optimizer`] (Lightning's `untoggle_optimizer`).
    pub fn untoggle_optimizer(&mut self, opt: Opt) {
        let state = std::mem::take(&mut self.state.toggled);
        let others = (0..self.state.optimizers.len()).filter(|&i| i != opt.0);
        for (name, param) in others.flat_map(|i| self.state.params_of(Opt(i))) {
            if let Some(&requires_grad) = state.get(name) {
                let _ = param.shallow_clone().set_requires_grad(requires_grad);
            }
        }
    }

    /// Manual optimization: back-propagates `loss` (Lightning's `self.manual_backward`).
    /// With "16-mixed" the loss is scaled first.
    pub fn manual_backward(&mut self, loss: &Tensor) -> Result<()> {
        // In distributed training this backward averages the gradients across the processes
        // (Lightning's DDP `pre_backward` in manual optimization).
        if let Some(replica) = &mut self.state.replica {
            replica.before_backward(loss)?;
        }
        match &self.state.scaler {
            Some(scaler) => Ok(scaler.scale_loss(loss).f_backward()?),
            None => Ok(loss.f_backward()?),
        }
    }

    /// Manual optimization: steps learning-rate scheduler `index` (in the order
    /// `configure_optimizers` attached them), with the monitored value for `ReduceLrOnPlateau`.
    pub fn lr_scheduler_step(&mut self, index: usize, metric: Option<f64>) -> Result<()> {
        let (schedulers, optimizers) = (&mut self.state.schedulers, &mut self.state.optimizers);
        let s = schedulers.get_mut(index).ok_or_else(|| Error::msg(format!("lr scheduler {index} does not exist")))?;
        s.scheduler.step(&mut *optimizers[s.optimizer], metric)
    }

    /// The learning rates of every optimizer's groups, as a `LearningRateMonitor` reads them.
    pub fn learning_rates(&self) -> Vec<Vec<f64>> {
        self.state.optimizers.iter().map(|o| o.param_groups().iter().map(|g| g.lr).collect()).collect()
    }

    /// Truncated BPTT: the detached hiddens the previous chunk returned (`None` for the first
    /// chunk of a batch).
    pub fn take_hiddens(&mut self) -> Option<Vec<Tensor>> {
        self.state.hiddens.take()
    }
}

/// A value `cx.log` accepts: a scalar tensor, a number, or a metric object of
/// [`lit::metrics`](crate::metrics) (`&metric`, `&mut metric` or a boxed handle), which the
/// Trainer computes at the epoch's end and then resets, as Lightning logs a torchmetrics object.
pub struct Metric(LogValue);

impl From<&Tensor> for Metric {
    fn from(t: &Tensor) -> Self {
        Metric(LogValue::Tensor(t.detach()))
    }
}
impl From<Tensor> for Metric {
    fn from(t: Tensor) -> Self {
        Metric(LogValue::Tensor(t.detach()))
    }
}
macro_rules! number_metric {
    ($($t:ty),*) => {$(
        impl From<$t> for Metric {
            fn from(v: $t) -> Self { Metric(LogValue::Tensor(Tensor::from(v as f64))) }
        }
    )*};
}
number_metric!(f64, f32, i64, i32, usize, u32);
impl<M: crate::metrics::Metric + Clone + 'static> From<&M> for Metric {
    fn from(m: &M) -> Self {
        Metric(LogValue::Object(Box::new(m.clone())))
    }
}
impl<M: crate::metrics::Metric + Clone + 'static> From<&mut M> for Metric {
    fn from(m: &mut M) -> Self {
        Metric(LogValue::Object(Box::new(m.clone())))
    }
}
impl From<Box<dyn crate::metrics::Metric>> for Metric {
    fn from(m: Box<dyn crate::metrics::Metric>) -> Self {
        Metric(LogValue::Object(m))
    }
}

/// A `log` call being configured; recorded when dropped.
pub struct Log<'a> {
    cx: &'a mut State,
    name: String,
    value: Option<LogValue>,
    options: LogOptions,
    /// Whether `logger(true)` was asked for explicitly (then a Trainer without loggers warns).
    logger_asked: bool,
}

impl Log<'_> {
    /// Record each step's value.
    pub fn on_step(mut self, on: bool) -> Self {
        self.options.on_step = on;
        self
    }
    /// Reduce over the epoch.
    pub fn on_epoch(mut self, on: bool) -> Self {
        self.options.on_epoch = on;
        self
    }
    /// Show on the progress bar.
    pub fn prog_bar(mut self, on: bool) -> Self {
        self.options.prog_bar = on;
        self
    }
    /// Send to the loggers (default true).
    pub fn logger(mut self, on: bool) -> Self {
        self.options.logger = on;
        self.logger_asked = on;
        self
    }
    /// The epoch reduction (default mean).
    pub fn reduce_fx(mut self, reduce: Reduce) -> Self {
        self.options.reduce_fx = reduce;
        self
    }
    /// The samples behind this value, weighting the epoch mean.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.options.batch_size = Some(batch_size);
        self
    }
    /// Reduce the epoch value across processes in distributed training (the mean weighted by
    /// every process's batch sizes, or the global sum, max or min); nothing to do on one process.
    pub fn sync_dist(mut self, on: bool) -> Self {
        self.options.sync_dist = on;
        self
    }
}

impl Drop for Log<'_> {
    fn drop(&mut self) {
        let Some(value) = self.value.take() else { return };
        if let LogValue::Tensor(value) = &value
            && value.numel() != 1
        {
            let error = Error::hook(
                "log",
                format!("`{}` must be a scalar, got a tensor of shape {:?}", self.name, value.size()),
            );
            self.cx.error.get_or_insert(error);
            return;
        }
        let mut name = std::mem::take(&mut self.name);
        // Within a batch of one of several evaluation loaders (not in the epoch hooks), as
        // Lightning adds the suffix only while a loader's batch is current.
        if self.cx.num_dataloaders > 1 && self.cx.running != RunningStage::Training && self.cx.in_step {
            name = format!("{name}/dataloader_idx_{}", self.cx.dataloader_idx);
        }
        if self.logger_asked
            && self.cx.loggers.is_empty()
            && self.cx.global_rank() == 0
            && self.cx.warned_no_logger.insert(name.clone())
        {
            crate::warning::warn(&format!(
                "`{name}` is logged with logger(true), but the Trainer has no logger: add one with \
                 `.with_logger(…)`, or drop `logger(true)`"
            ));
        }
        let batch_size = self.options.batch_size.unwrap_or(self.cx.batch_size);
        let training = self.cx.running == RunningStage::Training;
        if let Err(error) = self.cx.metrics.log(name, value, self.options, batch_size, training) {
            self.cx.error.get_or_insert(error);
        }
    }
}

/// An optimizer in manual optimization; `step` goes through the Trainer, which counts it.
pub struct OptimizerHandle<'a> {
    cx: &'a mut State,
    index: usize,
}

/// The Trainer seen from a hook, read-only ([`Ctx::trainer`]; Lightning's `self.trainer`).
#[derive(Clone, Copy)]
pub struct TrainerView<'a> {
    cx: &'a State,
}

impl TrainerView<'_> {
    /// Every option the Trainer was built with.
    pub fn config(&self) -> &crate::TrainerConfig {
        &self.cx.config
    }
    /// The epoch training stops at (Lightning's default of 1000 when neither `max_epochs` nor
    /// `max_steps` is set), or `None` when only `max_steps` limits it.
    pub fn max_epochs(&self) -> Option<usize> {
        self.cx.config.epoch_limit()
    }
    /// The optimizer step training stops at.
    pub fn max_steps(&self) -> Option<usize> {
        self.cx.config.max_steps
    }
    /// The current epoch.
    pub fn current_epoch(&self) -> usize {
        self.cx.current_epoch
    }
    /// Optimizer steps so far.
    pub fn global_step(&self) -> usize {
        self.cx.global_step
    }
    /// Training batches per epoch (after `limit_train_batches` and, in distributed training,
    /// this process's share), as Lightning's `num_training_batches`: known in
    /// `configure_optimizers` when the loaders were given to `fit` or come from a data module,
    /// otherwise from the start of training; `None` while unknown or for a loader without a
    /// length.
    pub fn num_training_batches(&self) -> Option<usize> {
        self.cx.num_training_batches
    }
    /// Batches accumulated per optimizer step in this epoch (Lightning's
    /// `trainer.accumulate_grad_batches`): the Trainer's option, or a
    /// `GradientAccumulationScheduler`'s factor for the epoch.
    pub fn accumulate_grad_batches(&self) -> usize {
        self.cx.accumulate_grad_batches
    }
    /// Validation batches per loader (after `limit_val_batches`), as Lightning's
    /// `num_val_batches`, once the validation loaders are known (empty before).
    pub fn num_val_batches(&self) -> &[usize] {
        &self.cx.num_val_batches
    }
    /// The optimizer steps the whole fit will take, as Lightning's `estimated_stepping_batches`:
    /// `ceil(num_training_batches / accumulate_grad_batches) * max_epochs`, at most `max_steps`;
    /// `max_steps` for a loader without a length. Size a one-cycle or cosine schedule with it in
    /// `configure_optimizers`. `None` while the training loader is not known yet (a module's own
    /// `train_dataloader` is called after `configure_optimizers`), or for endless training.
    pub fn estimated_stepping_batches(&self) -> Option<usize> {
        let config = &self.cx.config;
        let Some(epochs) = config.epoch_limit() else { return config.max_steps };
        if self.cx.accumulation_varies {
            return None; // Lightning: "cannot be computed with different accumulate_grad_batches"
        }
        let per_epoch = match self.cx.num_training_batches {
            Some(batches) => batches.div_ceil(self.cx.accumulate_grad_batches.max(1)),
            None if self.cx.training_length_known => return config.max_steps,
            None => return None,
        };
        let total = per_epoch * epochs.max(1);
        Some(config.max_steps.map_or(total, |m| total.min(m)))
    }
    /// The entry point running (`fit`, `validate`, `test`, `predict`).
    pub fn stage(&self) -> Stage {
        self.cx.stage
    }
    /// The loop running now (training, validating, sanity checking, …).
    pub fn state(&self) -> RunningStage {
        self.cx.running
    }
    /// Whether the sanity check is running.
    pub fn sanity_checking(&self) -> bool {
        self.cx.running == RunningStage::SanityChecking
    }
    /// Whether a stop was requested.
    pub fn should_stop(&self) -> bool {
        self.cx.should_stop()
    }
    /// The reduced metrics callbacks see.
    pub fn callback_metrics(&self) -> BTreeMap<String, f64> {
        self.cx.callback_metrics()
    }
    /// The metrics sent to the loggers.
    pub fn logged_metrics(&self) -> BTreeMap<String, f64> {
        self.cx.logged_metrics()
    }
    /// The first logger's run directory.
    pub fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.cx.log_dir()
    }
    /// This process's rank among all.
    pub fn global_rank(&self) -> usize {
        self.cx.global_rank()
    }
    /// Whether this is rank 0.
    pub fn is_global_zero(&self) -> bool {
        self.cx.global_rank() == 0
    }
    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.cx.world_size()
    }
}

/// One of the run's optimizers in manual optimization, by position (see [`Ctx::optimizers`]):
/// copyable, so several can be held while the context is used for `manual_backward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt(usize);

impl Opt {
    /// Its position in what `configure_optimizers` returned.
    pub fn index(self) -> usize {
        self.0
    }
    /// Clears the gradients of the optimizer's parameters.
    pub fn zero_grad(self, cx: &mut Ctx) {
        cx.state.optimizers[self.0].zero_grad();
    }
    /// Applies one update; counts as a global step. With "16-mixed" the gradients are unscaled
    /// first, and a step whose gradients hold inf or NaN is skipped (the scale shrinks).
    pub fn step(self, cx: &mut Ctx) -> Result<()> {
        self.step_on(cx.state)
    }
    fn step_on(self, state: &mut State) -> Result<()> {
        let optimizer = &mut *state.optimizers[self.0];
        if let Some(scaler) = &mut state.scaler {
            scaler.step(optimizer)?;
            scaler.update()?;
        } else {
            optimizer.step();
        }
        state.global_step += 1;
        Ok(())
    }
    /// The learning rate of the first group.
    pub fn lr(self, cx: &Ctx) -> f64 {
        cx.state.optimizers[self.0].lr()
    }
    /// Sets the learning rate of every group.
    pub fn set_lr(self, cx: &mut Ctx, lr: f64) {
        cx.state.optimizers[self.0].set_lr(lr);
    }
}

impl OptimizerHandle<'_> {
    /// Clears the gradients of the optimizer's parameters.
    pub fn zero_grad(&mut self) {
        self.cx.optimizers[self.index].zero_grad();
    }
    /// Applies one update; counts as a global step (see [`Opt::step`]).
    pub fn step(&mut self) -> Result<()> {
        Opt(self.index).step_on(self.cx)
    }
    /// The learning rate of the first group.
    pub fn lr(&self) -> f64 {
        self.cx.optimizers[self.index].lr()
    }
    /// Sets the learning rate of every group.
    pub fn set_lr(&mut self, lr: f64) {
        self.cx.optimizers[self.index].set_lr(lr);
    }
    /// The optimizer itself (clipping, state).
    pub fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut *self.cx.optimizers[self.index]
    }
}
