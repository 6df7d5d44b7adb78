//! The fit loop (epochs) and the training epoch (batches).

use super::config::Limit;
use super::events::Event;
use super::{LoaderVec, Run, ctx, eval, hook};
use crate::ctx::RunningStage;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::module::{LightningModule, StepOutput};

/// Makes a fit's loaders again for `reload_dataloaders_every_n_epochs` (the data module's
/// `*_dataloader`s).
pub(crate) type Reload<'r, M> = Box<
    dyn FnMut(
            &mut M,
            &mut crate::ctx::Ctx,
        ) -> Result<(
            Vec<Box<dyn crate::data::Loader<Batch = <M as LightningModule>::TrainBatch>>>,
            Vec<Box<dyn crate::data::Loader<Batch = <M as LightningModule>::ValBatch>>>,
        )> + 'r,
>;

/// Where a fit's loaders come from when they are made again: a data module's reload, or the
/// module's `*_dataloader` hooks for the loaders that were not given.
struct LoaderSources<'r, M: LightningModule> {
    reload: Option<Reload<'r, M>>,
    train_from_hooks: bool,
    val_from_hooks: bool,
}

/// When, within an epoch, validation runs.
struct ValSchedule {
    /// Validate after every this many batches; `None`: after the last batch.
    every: Option<usize>,
    enabled: bool,
}

impl<M: LightningModule> Run<'_, M> {
    pub(super) fn fit<'a>(
        &mut self,
        train: Option<LoaderVec<'a, M::TrainBatch>>,
        val: Option<LoaderVec<'a, M::ValBatch>>,
        ckpt: Option<crate::checkpoint::Checkpoint>,
        reload: Option<Reload<'_, M>>,
    ) -> Result<()> {
        let (train_from_hooks, val_from_hooks) = (train.is_none(), val.is_none());
        let schedule =
            crate::callbacks::first_of::<crate::callbacks::GradientAccumulationScheduler>(self.callbacks).cloned();
        if let Some(schedule) = &schedule {
            if self.config.accumulate_grad_batches != 1 {
                return Err(crate::error::ConfigError::invalid(
                    "accumulate_grad_batches",
                    "is set and a `GradientAccumulationScheduler` is given: remove one of the two",
                )
                .into());
            }
            if !M::AUTOMATIC_OPTIMIZATION {
                return Err(Error::hook(
                    "fit",
                    "a `GradientAccumulationScheduler` needs automatic optimization (the module accumulates itself)",
                ));
            }
            self.cx.accumulation_varies = !schedule.constant();
        } else {
            self.cx.accumulation_varies = false;
        }
        self.cx.accumulate_grad_batches = match &schedule {
            Some(schedule) => schedule.factor(self.cx.current_epoch),
            None => self.config.accumulate_grad_batches.max(1),
        };
        // The run's length, for `configure_optimizers` (`estimated_stepping_batches`), when the
        // training loaders are already here.
        let mut train = train;
        self.cx.training_length_known = false;
        if let Some(train) = train.as_mut() {
            let mut none = Vec::new();
            self.shard(train, &mut none);
            self.note_training_length(train.first().map(|l| l.len()));
        }
        let configured = match self.configure_optimizers {
            Some(configure) => configure(ctx!(self))?,
            None => self.model.configure_optimizers(ctx!(self))?,
        };
        let (optimizers, frequencies, schedulers) = configured.build(self.model.var_store())?;
        if optimizers.is_empty() && M::AUTOMATIC_OPTIMIZATION {
            self.warn(
                "`configure_optimizers` returned no optimizer: training runs `training_step` but updates nothing",
            );
        }
        if let Some(pg) = &self.cx.process_group {
            // Every process starts from rank 0's weights.
            tch::no_grad(|| -> Result<()> {
                let mut variables: Vec<(String, tch::Tensor)> =
                    self.model.var_store().variables().into_iter().collect();
                variables.sort_by(|a, b| a.0.cmp(&b.0));
                let mut tensors: Vec<tch::Tensor> = variables.into_iter().map(|(_, v)| v).collect();
                pg.broadcast_coalesced(&mut tensors, 0)
            })?;
            self.cx.replica =
                Some(crate::dist::Replica::new(self.model.var_store(), pg, self.config.reducer_options())?);
        }
        self.cx.optimizers = optimizers;
        self.cx.frequencies = frequencies;
        self.cx.schedulers = schedulers;
        self.cx.epoch_progress = None;
        self.cx.nonfinite_loss_reported = false;
        self.cx.interrupt_agreed = false;
        let mut resume_batch = 0;
        hook!(self, on_pretrain_routine_start());
        // Between the two, as Lightning's pre-training routine restores a checkpoint.
        if let Some(ckpt) = &ckpt {
            ckpt.load_into(self.model.var_store_mut())?;
            self.restore(ckpt)?;
            resume_batch = ckpt.meta.loops.batch_in_epoch;
            let (epoch, step) = (ckpt.meta.loops.epoch, ckpt.meta.global_step);
            if self.config.enable_progress_bar {
                self.cx.progress.println(&format!(
                "Restored all states from the checkpoint at {} (epoch {epoch}, batch {resume_batch} of it, step {step})",
                ckpt.path().display()
                ));
            }
            tracing::info!(target: "lit", path = %ckpt.path().display(), epoch, step, "restored from checkpoint");
        }
        hook!(self, on_pretrain_routine_end());

        let mut val = match M::HOOKS.validation_step {
            true => self.loaders(val, "validation", |m, cx| m.val_dataloader(cx), "val_dataloader", "fit")?,
            false => Vec::new(),
        };
        // lit's Ctrl-C handler for this `fit` only; the previous one is back when it returns.
        let _sigint = self.config.handle_sigint.then(crate::interrupt::install);
        crate::interrupt::clear();
        self.cx.validation_enabled = !val.is_empty();
        self.cx.num_val_batches =
            val.iter().map(|l| self.config.limit_val_batches.of(l.len(), "limit_val_batches").unwrap_or(0)).collect();
        self.sanity_check(&mut val)?;

        let train = self.loaders(
            train,
            "training",
            |m, cx| m.train_dataloader(cx).map(|l| l.into_iter().collect()),
            "train_dataloader",
            "fit",
        )?;
        let train = self.prepare_loaders(train, &mut val)?;

        // As Lightning's fit loop, skipped whole (no `on_train_start`) when it has nothing to do.
        // SWA on a module with batch norms trains one epoch more, to update their statistics.
        let swa_epochs = self.swa_extra_epochs()?;
        let max_epochs = self.config.epoch_limit().map(|m| m + swa_epochs);
        let no_batches = self.config.limit_train_batches.of(train.len(), "limit_train_batches").ok() == Some(0);
        if max_epochs == Some(0) || self.config.max_steps == Some(0) {
            self.warn("`max_epochs` or `max_steps` is 0: `fit` trains nothing");
        } else if no_batches {
            self.warn("the training loader has no batches (or `limit_train_batches` is 0): `fit` trains nothing");
        } else {
            hook!(self, on_train_start());
            let sources = LoaderSources { reload, train_from_hooks, val_from_hooks };
            self.epochs(max_epochs, resume_batch, train, val, sources)?;
            hook!(self, on_train_end());
        }
        hook!(self, on_fit_end());
        self.cx.replica = None;
        Ok(())
    }

    /// The epochs of a fit, from the current one until `max_epochs`, `max_steps` or an allowed
    /// stop; the loaders are made again every `reload_dataloaders_every_n_epochs`.
    fn epochs<'a>(
        &mut self,
        max_epochs: Option<usize>,
        mut resume_batch: usize,
        mut train: Box<dyn crate::data::Loader<Batch = M::TrainBatch> + 'a>,
        mut val: LoaderVec<'a, M::ValBatch>,
        mut sources: LoaderSources<'_, M>,
    ) -> Result<()> {
        let mut epoch = self.cx.current_epoch;
        let (first_epoch, every) = (epoch, self.config.reload_dataloaders_every_n_epochs);
        loop {
            if max_epochs.is_some_and(|m| epoch >= m) || self.max_steps_reached() || self.stop_allowed(epoch) {
                break;
            }
            if every > 0 && epoch > first_epoch && epoch.is_multiple_of(every) {
                // `reload_dataloaders_every_n_epochs`: the loaders' sources are asked again.
                let (new_train, new_val) = match sources.reload.as_mut() {
                    Some(reload) => {
                        let (t, v) = reload(self.model, ctx!(self))?;
                        (Some(t), Some(v))
                    }
                    None => (
                        sources
                            .train_from_hooks
                            .then(|| self.model.train_dataloader(ctx!(self)).map(|l| l.into_iter().collect()))
                            .transpose()?,
                        (sources.val_from_hooks && M::HOOKS.validation_step)
                            .then(|| self.model.val_dataloader(ctx!(self)))
                            .transpose()?,
                    ),
                };
                if let Some(v) = new_val {
                    val = v.into_iter().map(|l| l as Box<dyn crate::data::Loader<Batch = M::ValBatch> + 'a>).collect();
                    self.cx.validation_enabled = !val.is_empty();
                }
                if let Some(t) = new_train {
                    let t =
                        t.into_iter().map(|l| l as Box<dyn crate::data::Loader<Batch = M::TrainBatch> + 'a>).collect();
                    train = self.prepare_loaders(t, &mut val)?;
                } else {
                    let mut none = Vec::new();
                    self.shard(&mut none, &mut val);
                }
            }
            self.cx.current_epoch = epoch;
            self.train_epoch(epoch, std::mem::take(&mut resume_batch), &mut *train, &mut val)?;
            epoch += 1;
        }
        self.cx.current_epoch = epoch;
        Ok(())
    }

    /// Records the training loader's batches per epoch (`len`: the loader's length, if known),
    /// after `limit_train_batches`.
    fn note_training_length(&mut self, len: Option<Option<usize>>) {
        self.cx.training_length_known = len.is_some();
        self.cx.num_training_batches = len
            .and_then(|len| self.config.limit_train_batches.of(len, "limit_train_batches").ok())
            .filter(|&n| n != usize::MAX);
    }

    /// Shards the loaders for distributed training, checks there is one training loader, and
    /// turns its shuffling off for `overfit_batches`.
    fn prepare_loaders<'a>(
        &mut self,
        mut train: LoaderVec<'a, M::TrainBatch>,
        val: &mut LoaderVec<'a, M::ValBatch>,
    ) -> Result<Box<dyn crate::data::Loader<Batch = M::TrainBatch> + 'a>> {
        self.shard(&mut train, val);
        let Some(mut train) = train.pop().filter(|_| train.is_empty()) else {
            return Err(match train.len() {
                0 => crate::error::DataError::Missing { stage: "training", method: "fit", hook: "train_dataloader" }
                    .into(),
                n => Error::hook("fit", format!("takes one training loader, got {}", n + 1)),
            });
        };
        if self.config.overfitting() {
            train.disable_shuffle();
        }
        Ok(train)
    }

    /// Distributed training: each process reads its own share of every loader.
    fn shard(&self, train: &mut LoaderVec<'_, M::TrainBatch>, val: &mut LoaderVec<'_, M::ValBatch>) {
        if let Some(pg) = &self.cx.process_group {
            let (rank, world) = (pg.rank(), pg.world_size());
            train.iter_mut().for_each(|l| l.shard(rank, world));
            val.iter_mut().for_each(|l| l.shard(rank, world));
        }
    }

    /// Ctrl-C: saves a resumable checkpoint, `interrupted.ckpt` where the run's checkpoints go
    /// (the first `ModelCheckpoint`'s directory; without one, `checkpoints/` in the log directory
    /// or in `default_root_dir`), and returns the error that ends the run.
    fn interrupted(&mut self) -> Error {
        crate::interrupt::clear();
        let path = self.checkpoint_dir().join("interrupted.ckpt");
        // Rank 0 writes it; every rank waits until it is complete.
        let written = match self.cx.global_rank() {
            0 => self.write_checkpoint(&path),
            _ => Ok(()),
        };
        let written = written.and_then(|()| self.cx.process_group.as_ref().map_or(Ok(()), |pg| pg.barrier()));
        let checkpoint = match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::error!(target: "lit", error = %e, "could not save a checkpoint after Ctrl-C");
                None
            }
        };
        tracing::warn!(target: "lit", ?checkpoint, "training interrupted");
        Error::Interrupted { checkpoint }
    }

    /// Without a `nonfinite_loss` policy, a NaN or infinite training loss is still reported, once
    /// a run. The loss is read (a device sync) only where the loggers are written to anyway,
    /// every `log_every_n_steps` steps, and at the epoch's last batch; a NaN poisons the weights,
    /// so the losses after it show it too.
    fn check_loss(&mut self, out: Option<&StepOutput>, epoch: usize, batch_idx: usize) {
        if self.config.nonfinite_loss.is_some() || self.cx.nonfinite_loss_reported {
            return;
        }
        let Some(value) = out.and_then(|o| o.loss.as_ref()).map(|l| l.double_value(&[])) else { return };
        if !value.is_finite() {
            self.cx.nonfinite_loss_reported = true;
            self.warn(&format!(
                "the training loss was NaN or infinite in epoch {epoch} ({value} at batch {batch_idx}), and training \
                 went on with it; `nonfinite_loss(NonFinitePolicy::Error)` stops at the first such batch, `Skip` \
                 skips its step"
            ));
        }
    }

    /// Where the run's checkpoints go: the first `ModelCheckpoint`'s directory; without one,
    /// `checkpoints/` in the log directory or in `default_root_dir`.
    fn checkpoint_dir(&mut self) -> std::path::PathBuf {
        match crate::callbacks::model_checkpoints(self.callbacks).next() {
            Some(callback) => callback.dir(&*ctx!(self)),
            None => self.cx.checkpoints_dir(),
        }
    }

    /// The error for a panic that ended the run. When it arose in `training_step` before
    /// anything of its batch was applied (the first optimizer, at the start of an accumulation
    /// window, one process, automatic optimization, no TBPTT), the run's state is whole: a
    /// resumable `on_exception.ckpt` is saved first, as on Ctrl-C, and the error names it.
    pub(super) fn panic_error(&mut self, payload: &(dyn std::any::Any + Send)) -> Error {
        let accumulate = self.cx.accumulate_grad_batches.max(1);
        let whole = self.cx.stage == crate::Stage::Fit
            && self.cx.running == RunningStage::Training
            && self.cx.hook == "training_step"
            && self.cx.optimizer_idx == 0
            && self.cx.batch_idx.is_some_and(|b| b.is_multiple_of(accumulate))
            && self.cx.process_group.is_none()
            && M::AUTOMATIC_OPTIMIZATION
            && M::TRUNCATED_BPTT_STEPS.is_none()
            && !self.cx.trial;
        let error = self.cx.panicked(payload);
        if !whole {
            return error;
        }
        let path = self.checkpoint_dir().join("on_exception.ckpt");
        match (error, self.write_checkpoint(&path)) {
            (Error::Hook { hook, message }, Ok(())) => Error::Hook {
                hook,
                message: format!("{message} (a resumable checkpoint was saved first: {})", path.display()),
            },
            (error, Err(e)) => {
                tracing::error!(target: "lit", error = %e, "could not save a checkpoint after a panic");
                error
            }
            (error, Ok(())) => error,
        }
    }

    /// Whether the epoch ended before its last batch (max_steps or a stop request).
    fn stopped_early(&self, limit: usize) -> bool {
        let done = self.cx.epoch_progress.map_or(0, |(_, d)| d);
        done < limit && (self.max_steps_reached() || self.cx.should_stop())
    }

    fn max_steps_reached(&self) -> bool {
        self.config.max_steps.is_some_and(|s| self.cx.global_step >= s)
    }

    /// Whether a requested stop may take effect now (`min_epochs`/`min_steps` are met).
    fn stop_allowed(&self, epochs_done: usize) -> bool {
        self.cx.should_stop()
            && self.config.min_epochs.is_none_or(|m| epochs_done >= m)
            && self.config.min_steps.is_none_or(|m| self.cx.global_step >= m)
    }

    fn sanity_check(&mut self, val: &mut LoaderVec<'_, M::ValBatch>) -> Result<()> {
        let steps = self.config.num_sanity_val_steps;
        if val.is_empty() || steps == 0 {
            return Ok(());
        }
        self.cx.running = RunningStage::SanityChecking;
        self.ddp_before_eval()?;
        for cb in self.callbacks.iter_mut() {
            cb.on_sanity_check_start(ctx!(self))?;
        }
        let limit = if steps < 0 { Limit::Fraction(1.0) } else { Limit::Batches(steps as usize) };
        self.eval_limited::<eval::Validation>(val, RunningStage::SanityChecking, Some(limit))?;
        for cb in self.callbacks.iter_mut() {
            cb.on_sanity_check_end(ctx!(self))?;
        }
        self.cx.metrics.reset();
        self.cx.running = RunningStage::Training;
        Ok(())
    }

    fn val_schedule(&self, batches: usize, has_val: bool, epoch: usize) -> Result<ValSchedule> {
        let enabled = has_val && (epoch + 1).is_multiple_of(self.config.check_val_every_n_epoch);
        let every = match self.config.val_check_interval {
            Limit::Fraction(1.0) => None,
            Limit::Fraction(f) if batches == usize::MAX => {
                return Err(crate::error::ConfigError::invalid(
                    "val_check_interval",
                    format!("the fraction {f} needs a training loader whose length is known"),
                )
                .into());
            }
            Limit::Fraction(f) => Some(((batches as f64 * f) as usize).max(1)),
            Limit::Batches(n) => Some(n),
        };
        Ok(ValSchedule { every, enabled })
    }

    fn train_epoch(
        &mut self,
        epoch: usize,
        start: usize,
        train: &mut dyn crate::data::Loader<Batch = M::TrainBatch>,
        val: &mut LoaderVec<'_, M::ValBatch>,
    ) -> Result<()> {
        let limit = self.config.limit_train_batches.of(train.len(), "limit_train_batches")?;
        self.note_training_length(Some(train.len()));
        if let Some(schedule) =
            crate::callbacks::first_of::<crate::callbacks::GradientAccumulationScheduler>(self.callbacks)
        {
            self.cx.accumulate_grad_batches = schedule.factor(epoch);
        }
        let schedule = self.val_schedule(limit, !val.is_empty(), epoch)?;
        let keep_outputs = M::HOOKS.training_epoch_end;
        let mut outputs = Vec::new();
        self.cx.running = RunningStage::Training;
        hook!(self, on_epoch_start());
        hook!(self, on_train_epoch_start());
        let steps_before = self.cx.global_step;
        let total = Some(limit).filter(|&n| n != usize::MAX);
        self.emit(Event::LoopStart { label: format!("Epoch {epoch}").into(), total })?;

        let mut batches = train.iter_from(epoch, start)?.take(limit.saturating_sub(start)).peekable();
        let mut batch_idx = start;
        self.cx.epoch_progress = Some((epoch, start));
        loop {
            let started = self.cx.profile_start();
            let Some(batch) = batches.next() else { break };
            self.cx.profile_end("get_train_batch", started);
            let batch = batch?;
            let is_last = batches.peek().is_none();
            self.cx.batch_idx = Some(batch_idx);
            self.cx.in_step = true;
            let stepped = self.cx.global_step;
            let out = self.train_batch(epoch, batch, batch_idx, is_last)?;
            self.cx.in_step = false;
            self.emit(Event::TrainBatchEnd { stepped: self.cx.global_step != stepped })?;
            if is_last || self.cx.global_step.is_multiple_of(self.config.log_every_n_steps) {
                self.check_loss(out.as_ref(), epoch, batch_idx);
            }
            if keep_outputs && let Some(out) = out {
                outputs.push(out.detach());
            }
            let validate = schedule.enabled
                && match schedule.every {
                    Some(n) => (batch_idx + 1).is_multiple_of(n),
                    None => is_last,
                };
            // Ctrl-C is taken where an accumulation window closes, so that the checkpoint holds
            // no half-accumulated gradients and a resumed run is exact.
            let window_closed =
                !M::AUTOMATIC_OPTIMIZATION || Window::of(self.cx.accumulate_grad_batches, batch_idx, is_last).steps;
            batch_idx += 1;
            self.cx.epoch_progress = Some((epoch, batch_idx));
            self.process_requests()?;
            if validate {
                self.ddp_before_eval()?;
                self.eval_limited::<eval::Validation>(val, RunningStage::Validating, None)?;
                self.cx.running = RunningStage::Training;
                self.process_requests()?;
            }
            // In distributed training (automatic optimization) the processes agree on it through
            // the gradient all-reduce; otherwise this process's Ctrl-C decides.
            let interrupted = match (&self.cx.process_group, M::AUTOMATIC_OPTIMIZATION) {
                (Some(_), true) => std::mem::take(&mut self.cx.interrupt_agreed),
                _ => crate::interrupt::requested(),
            };
            if window_closed && interrupted {
                return Err(self.interrupted());
            }
            if self.max_steps_reached() || self.stop_allowed(epoch) {
                break;
            }
        }
        drop(batches);
        self.cx.batch_idx = None;
        if !M::AUTOMATIC_OPTIMIZATION && batch_idx > start && self.cx.global_step == steps_before {
            self.warn(&format!(
                "manual optimization: epoch {epoch} ran {} batches and no optimizer stepped, so nothing was trained; \
                 in `training_step` call `cx.manual_backward(&loss)?` and then `cx.optimizer(0)?.step()?`",
                batch_idx - start
            ));
        }

        // The epoch's reductions are visible to the epoch-end hooks (a checkpoint callback may
        // monitor them); what those hooks log is reduced after them. The epoch schedulers step
        // first, so that a checkpoint written by an epoch-end hook holds the whole epoch.
        self.cx.metrics.end_epoch(true, self.cx.process_group.as_ref())?;
        let finished = self.cx.epoch_progress.is_some_and(|(_, done)| done >= limit) || !self.stopped_early(limit);
        if finished {
            // A partial epoch (max_steps, a stop request) steps its epoch schedulers when a
            // resumed run finishes it.
            // (Not in SWA's batch-norm update epoch, which takes no optimizer step.)
            if !self.swa_updating_batch_norm() {
                self.step_schedulers(crate::optim::Interval::Epoch, epoch + 1)?;
            }
            self.cx.epoch_progress = None;
            self.cx.next_epoch = epoch + 1;
        }
        if keep_outputs {
            self.model.training_epoch_end(outputs, ctx!(self))?;
            self.cx.check()?;
        }
        self.train_epoch_end_hooks()?;
        hook!(self, on_epoch_end());
        self.cx.metrics.end_epoch(true, self.cx.process_group.as_ref())?;
        self.emit(Event::TrainEpochEnd { epoch })
    }

    /// `on_train_epoch_end` in Lightning 2.6's order: the callbacks that monitor no metric, the
    /// module, then the ones that do (checkpoints, early stopping), which thus see what the
    /// module logged in its hook.
    fn train_epoch_end_hooks(&mut self) -> Result<()> {
        let started = self.cx.profile_start();
        self.cx.hook = "on_train_epoch_end";
        let monitors = |cb: &dyn crate::Callback| {
            cb.order() == crate::callback::CallbackOrder::Checkpoint
                || (cb as &dyn std::any::Any).is::<crate::callbacks::EarlyStopping>()
        };
        for cb in self.callbacks.iter_mut().filter(|cb| !monitors(&***cb)) {
            cb.on_train_epoch_end(ctx!(self))?;
        }
        self.model.on_train_epoch_end(ctx!(self))?;
        self.cx.metrics.end_epoch(true, self.cx.process_group.as_ref())?;
        for cb in self.callbacks.iter_mut().filter(|cb| monitors(&***cb)) {
            cb.on_train_epoch_end(ctx!(self))?;
        }
        self.cx.hook = "";
        self.cx.profile_end("on_train_epoch_end", started);
        self.cx.check()?;
        self.process_requests()
    }

    /// A warning the user sees without a `tracing` subscriber: on the console (through the
    /// progress bar, unless the Trainer is silent) and as a `tracing` event.
    pub(super) fn warn(&self, message: &str) {
        crate::warning::warn_with(message, |line| self.cx.progress.warn(line));
    }

    /// One training batch; returns its output.
    fn train_batch(
        &mut self,
        epoch: usize,
        batch: M::TrainBatch,
        batch_idx: usize,
        is_last: bool,
    ) -> Result<Option<StepOutput>> {
        for cb in self.callbacks.iter_mut() {
            cb.on_train_batch_start(batch_idx, ctx!(self))?;
        }
        self.model.on_train_batch_start(&batch, batch_idx, ctx!(self))?;
        let batch = self.transfer(batch, 0)?;
        let kept = batch.shallow_clone();
        // SWA's batch-norm update epoch: `training_step` only, no optimizer steps.
        let bn_update = self.swa_updating_batch_norm();
        if bn_update {
            self.swa_measure_momenta(&kept, batch_idx)?;
        }
        let out = tch::with_grad(|| -> Result<Option<StepOutput>> {
            if !M::AUTOMATIC_OPTIMIZATION {
                self.cx.optimizer_idx = 0;
                return self.step(epoch, batch, batch_idx, None);
            }
            let active = if bn_update { Vec::new() } else { self.active_optimizers() };
            let stepped_before = self.cx.global_step;
            let mut out = None;
            let mut stepped = false;
            for &idx in &active {
                self.cx.optimizer_idx = idx;
                let batch = batch.shallow_clone();
                let window = Window::of(self.cx.accumulate_grad_batches, batch_idx, is_last);
                let o = match M::TRUNCATED_BPTT_STEPS {
                    None => self.step(epoch, batch, batch_idx, Some((idx, window)))?,
                    Some(steps) => self.tbptt_steps(epoch, batch, batch_idx, steps, idx, window)?,
                };
                stepped |= o.as_ref().is_some_and(|o| o.loss.is_some()) && window.steps;
                if o.is_some() {
                    out = o;
                }
            }
            if active.is_empty() {
                // No optimizer: the step runs for its outputs and logs; nothing is updated.
                self.cx.optimizer_idx = 0;
                out = self.step(epoch, batch, batch_idx, None)?;
            }
            if stepped && self.cx.global_step == stepped_before {
                self.cx.global_step += 1;
                self.step_schedulers(crate::optim::Interval::Step, self.cx.global_step)?;
            }
            Ok(out)
        })?;
        for cb in self.callbacks.iter_mut() {
            cb.on_train_batch_end(out.as_ref(), batch_idx, ctx!(self))?;
        }
        self.model.on_train_batch_end(out.as_ref(), &kept, batch_idx, ctx!(self))?;
        self.cx.check()?;
        self.cx.total_batch_idx += 1;
        Ok(out)
    }

    /// The optimizers that step on this batch: all of them, or with frequencies the one whose
    /// turn it is (turns counted over all batches of the run).
    fn active_optimizers(&self) -> Vec<usize> {
        let freqs = &self.cx.frequencies;
        if freqs.iter().all(Option::is_none) {
            return (0..freqs.len()).collect();
        }
        let cycle: usize = freqs.iter().map(|f| f.unwrap_or(1)).sum();
        let mut pos = self.cx.total_batch_idx % cycle.max(1);
        for (i, f) in freqs.iter().enumerate() {
            let f = f.unwrap_or(1);
            if pos < f {
                return vec![i];
            }
            pos -= f;
        }
        Vec::new()
    }

    /// `training_step`, `training_step_end` and, when there is a loss and an optimizer, the
    /// optimization of optimizer `optimize.0` in accumulation window `optimize.1`.
    fn step(
        &mut self,
        epoch: usize,
        batch: M::TrainBatch,
        batch_idx: usize,
        optimize: Option<(usize, Window)>,
    ) -> Result<Option<StepOutput>> {
        if let (Some(replica), Some(pg)) = (&mut self.cx.replica, &self.cx.process_group) {
            // Gradients are reduced in this step unless it is inside an accumulation window.
            let grad_sync = match optimize {
                Some((_, window)) => window.steps,
                None => !M::AUTOMATIC_OPTIMIZATION,
            };
            replica.before_training_forward(pg, grad_sync)?;
        }
        let out = self.step_hook("training_step", |m, cx| m.training_step(batch, batch_idx, cx))?;
        let Some(out) = out else {
            self.cx.check()?;
            return Ok(None);
        };
        self.cx.check()?;
        let out = self.model.training_step_end(out, ctx!(self))?;
        if let (Some(policy), Some(loss)) = (self.config.nonfinite_loss, &out.loss) {
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                match policy {
                    crate::NonFinitePolicy::Error => {
                        return Err(Error::NonFiniteLoss { epoch, batch_idx, value });
                    }
                    crate::NonFinitePolicy::Skip => {
                        self.warn(&format!(
                            "non-finite training loss ({value}) at epoch {epoch}, batch {batch_idx}: step skipped"
                        ));
                        self.cx.skipped_steps += 1;
                        return Ok(None);
                    }
                }
            }
        }
        if let (Some(loss), Some((idx, window))) = (&out.loss, optimize) {
            self.optimize(epoch, batch_idx, loss, idx, window)?;
        }
        Ok(Some(out))
    }

    /// Truncated BPTT: one step (and optimizer step) per chunk of `steps` time steps, each chunk
    /// receiving the previous chunk's hiddens, detached. Returns the last chunk's output.
    fn tbptt_steps(
        &mut self,
        epoch: usize,
        batch: M::TrainBatch,
        batch_idx: usize,
        steps: usize,
        idx: usize,
        window: Window,
    ) -> Result<Option<StepOutput>> {
        let chunks = self.model.tbptt_split_batch(batch, steps, ctx!(self))?;
        let mut last = None;
        self.cx.hiddens = None;
        for chunk in chunks {
            let out = self.step(epoch, chunk, batch_idx, Some((idx, window)));
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    self.cx.hiddens = None;
                    return Err(e);
                }
            };
            self.cx.hiddens =
                out.as_ref().and_then(|o| o.hiddens.as_ref()).map(|h| h.iter().map(tch::Tensor::detach).collect());
            if out.as_ref().is_some_and(|o| o.loss.is_some()) && window.steps {
                self.cx.global_step += 1;
                self.step_schedulers(crate::optim::Interval::Step, self.cx.global_step)?;
            }
            if out.is_some() {
                last = out;
            }
        }
        self.cx.hiddens = None;
        Ok(last)
    }

    /// Zero-grad (at the start of an accumulation window), backward (of the loss divided by the
    /// window's size) and, at the end of the window, clipping and the step, with their hooks.
    fn optimize(
        &mut self,
        epoch: usize,
        batch_idx: usize,
        loss: &tch::Tensor,
        idx: usize,
        window: Window,
    ) -> Result<()> {
        let (clip, algorithm) = (self.config.gradient_clip_val, self.config.gradient_clip_algorithm);
        // The optimizers leave the context while the hooks hold one of them.
        let mut optimizers = std::mem::take(&mut self.cx.optimizers);
        let result = (|| -> Result<()> {
            let opt = &mut *optimizers[idx];
            if window.zero_grad {
                for cb in self.callbacks.iter_mut() {
                    cb.on_before_zero_grad(ctx!(self))?;
                }
                self.model.on_before_zero_grad(opt, ctx!(self))?;
                let started = self.cx.profile_start();
                self.model.optimizer_zero_grad(epoch, batch_idx, opt, idx, ctx!(self))?;
                self.cx.profile_end("optimizer_zero_grad", started);
            }
            let divided;
            let loss = if window.size > 1 {
                divided = loss / window.size as f64;
                &divided
            } else {
                loss
            };
            for cb in self.callbacks.iter_mut() {
                cb.on_before_backward(ctx!(self))?;
            }
            self.model.on_before_backward(loss, ctx!(self))?;
            // Distributed training: backward averages the gradients across the processes,
            // bucket by bucket while it runs; beside them goes whether Ctrl-C was pressed, so
            // that every process learns of any process's interrupt at the same step.
            let interrupt = match (&mut self.cx.replica, &self.cx.process_group) {
                (Some(replica), Some(pg)) if window.steps => {
                    replica.before_backward(loss)?;
                    let pressed = if crate::interrupt::requested() { 1.0 } else { 0.0 };
                    let mut flag = tch::Tensor::from_slice(&[pressed as f32]);
                    let work = pg.all_reduce_async(&mut flag)?;
                    Some((flag, work))
                }
                _ => None,
            };
            let started = self.cx.profile_start();
            self.cx.hook = "backward";
            match self.cx.scaler.as_ref().map(|s| s.scale_loss(loss)) {
                Some(scaled) => self.model.backward(&scaled, idx, ctx!(self)),
                None => self.model.backward(loss, idx, ctx!(self)),
            }
            .map_err(|e| backward_error(e, epoch, batch_idx))?;
            self.cx.hook = "";
            self.cx.profile_end("backward", started);
            if let Some((flag, work)) = interrupt {
                work.wait()?;
                self.cx.interrupt_agreed = flag.double_value(&[0]) > 0.0;
            }
            hook!(self, on_after_backward());
            if window.steps {
                // "16-mixed": hooks and clipping see unscaled gradients; a step with inf/NaN
                // gradients is skipped and the scale shrinks.
                if let Some(scaler) = &mut self.cx.scaler {
                    scaler.unscale(opt)?;
                }
                for cb in self.callbacks.iter_mut() {
                    cb.on_before_optimizer_step(idx, ctx!(self))?;
                }
                self.model.on_before_optimizer_step(opt, idx, ctx!(self))?;
                self.model.configure_gradient_clipping(opt, idx, clip, algorithm, ctx!(self))?;
                if self.cx.scaler.as_mut().is_none_or(|s| s.take_found_inf().is_none_or(|found| !found)) {
                    let started = self.cx.profile_start();
                    self.model.optimizer_step(epoch, batch_idx, opt, idx, ctx!(self))?;
                    self.cx.profile_end("optimizer_step", started);
                }
                if let Some(scaler) = &mut self.cx.scaler {
                    scaler.update()?;
                }
            }
            self.cx.check()
        })();
        self.cx.optimizers = optimizers;
        result
    }

    /// Distributed training: the validation forward passes inside `fit` start from rank 0's
    /// buffers, as DDP's do.
    fn ddp_before_eval(&mut self) -> Result<()> {
        match (&mut self.cx.replica, &self.cx.process_group) {
            (Some(replica), Some(pg)) => replica.before_eval_forward(pg),
            _ => Ok(()),
        }
    }

    /// Steps the schedulers of `interval` whose frequency divides `count` (steps or epochs).
    fn step_schedulers(&mut self, interval: crate::optim::Interval, count: usize) -> Result<()> {
        // In manual optimization the module steps its schedulers (`cx.lr_scheduler_step`), as
        // in Lightning.
        if !M::AUTOMATIC_OPTIMIZATION {
            return Ok(());
        }
        for i in 0..self.cx.schedulers.len() {
            let s = &self.cx.schedulers[i];
            if s.interval != interval || !count.is_multiple_of(s.frequency) {
                continue;
            }
            let metric = match &s.monitor {
                Some(key) if s.scheduler.needs_metric() => {
                    let metrics = self.cx.callback_metrics();
                    let value = metrics.get(key).copied().ok_or_else(|| {
                        Error::hook(
                            "lr_scheduler",
                            format!(
                                "ReduceLrOnPlateau monitors `{key}`, which was not logged; logged: {:?}",
                                metrics.keys().collect::<Vec<_>>()
                            ),
                        )
                    })?;
                    Some(value)
                }
                _ => None,
            };
            let opt_idx = self.cx.schedulers[i].optimizer;
            let (schedulers, optimizers) = (&mut self.cx.schedulers, &mut self.cx.optimizers);
            schedulers[i].scheduler.step(&mut *optimizers[opt_idx], metric)?;
        }
        Ok(())
    }
}

/// A failed back-propagation of `training_step`'s loss, said as such: a loss with no graph
/// (detached, or computed without autograd) is the common cause.
fn backward_error(error: Error, epoch: usize, batch_idx: usize) -> Error {
    match error {
        Error::Torch(e) => {
            let message = crate::error::torch_message(&e.to_string());
            let hint = if message.contains("does not require grad") {
                ": it has no autograd graph (was it detached, or computed under `no_grad`?)"
            } else {
                ""
            };
            Error::Hook {
                hook: "training_step",
                message: format!(
                    "the loss of epoch {epoch}, batch {batch_idx} cannot be back-propagated{hint}; libtorch: {message}"
                ),
            }
        }
        other => other,
    }
}

/// Where a batch falls in its gradient-accumulation window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Batches per window (the loss is divided by it).
    size: usize,
    /// The first batch of a window: clear gradients first.
    zero_grad: bool,
    /// The last batch of a window (or of the epoch): step.
    steps: bool,
}

impl Window {
    fn of(accumulate: usize, batch_idx: usize, is_last: bool) -> Self {
        let size = accumulate.max(1);
        Window {
            size,
            zero_grad: batch_idx.is_multiple_of(size),
            steps: (batch_idx + 1).is_multiple_of(size) || is_last,
        }
    }
}
