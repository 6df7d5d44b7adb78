//! Full checkpoints from inside a run (weights, optimizer and scheduler state, loop position,
//! callback and module state) and restoring them to resume.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use super::{Run, ctx};
use crate::callback::Callback;
use crate::checkpoint::{self, Checkpoint, CheckpointMeta, LoopState, STATE_PREFIX};
use crate::ctx::{CheckpointRequest, Ctx};
use crate::error::{Error, Result};
use crate::module::LightningModule;
use crate::optim::OptimizerState;

/// The metadata and state tensors of a checkpoint of the run as it stands.
pub(crate) fn build_state<M: LightningModule>(
    model: &mut M,
    callbacks: &[Box<dyn Callback>],
    cx: &mut Ctx,
) -> Result<(CheckpointMeta, BTreeMap<String, Tensor>)> {
    let mut meta = CheckpointMeta::new(model.hparams_json(), cx.state.current_epoch, cx.state.global_step);
    meta.loops = match cx.state.epoch_progress {
        Some((epoch, batch_in_epoch)) => LoopState { epoch, batch_in_epoch, total_batch_idx: cx.state.total_batch_idx },
        None => LoopState { epoch: cx.state.next_epoch, batch_in_epoch: 0, total_batch_idx: cx.state.total_batch_idx },
    };
    let mut tensors = BTreeMap::new();
    for (i, opt) in cx.state.optimizers.iter().enumerate() {
        let state = opt.state_dict();
        for (k, t) in state.tensors {
            tensors.insert(format!("{STATE_PREFIX}optimizer.{i}/{k}"), t);
        }
        meta.optimizers.push(state.meta);
    }
    meta.schedulers = cx.state.schedulers.iter().map(|s| s.scheduler.state()).collect();
    if let Some(state) = crate::rng::cpu_state()? {
        tensors.insert(format!("{STATE_PREFIX}rng.cpu"), state);
    }
    if let Some(scaler) = &cx.state.scaler {
        for (name, t) in scaler.state_tensors() {
            tensors.insert(format!("{STATE_PREFIX}grad_scaler/{name}"), t);
        }
    }
    for cb in callbacks {
        if let Some(state) = cb.state_dict() {
            meta.callbacks.insert(cb.name().to_string(), state);
        }
    }
    for (name, t) in crate::callbacks::state_tensors(callbacks) {
        tensors.insert(format!("{STATE_PREFIX}callbacks/{name}"), t);
    }
    if let Some(dm) = cx.datamodule.as_deref() {
        meta.datamodule = dm.state_dict();
    }
    let mut module = serde_json::Map::new();
    model.on_save_checkpoint(&mut module, cx)?;
    meta.module = module;
    Ok((meta, tensors))
}

impl<M: LightningModule> Run<'_, M> {
    /// Writes a full checkpoint of the run to `path`.
    pub(super) fn write_checkpoint(&mut self, path: &Path) -> Result<()> {
        let (meta, state) = build_state(self.model, self.callbacks, ctx!(self))?;
        checkpoint::save_with(path, self.model.var_store(), &state, meta)
    }

    /// Carries out the checkpoint writes and deletions callbacks asked for, in order; a failed
    /// write stops there, so the deletions after it (of older checkpoints) do not happen.
    pub(super) fn process_requests(&mut self) -> Result<()> {
        let requests = std::mem::take(&mut self.cx.requests);
        if requests.is_empty() {
            return Ok(());
        }
        if self.cx.global_rank() == 0 {
            self.carry_out(requests)?;
        }
        // Every rank asked at the same point (the callbacks run everywhere): wait until rank 0's
        // files are complete, so that no rank reads a half-written checkpoint.
        if let Some(pg) = &self.cx.process_group {
            pg.barrier()?;
        }
        Ok(())
    }

    /// Writes and deletes, in order, on rank 0.
    fn carry_out(&mut self, requests: Vec<CheckpointRequest>) -> Result<()> {
        for request in requests {
            match request {
                CheckpointRequest::Save(path) => {
                    self.write_checkpoint(&path)?;
                    self.after_save_checkpoint(&path)?;
                }
                CheckpointRequest::Remove(path) => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(path, e)),
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// Tells the loggers that `path` was written (Lightning's `Logger.after_save_checkpoint`),
    /// with the `ModelCheckpoint`'s view of it: its score and the best checkpoint so far.
    fn after_save_checkpoint(&mut self, path: &Path) -> Result<()> {
        let callback = crate::callbacks::first_of::<crate::callbacks::ModelCheckpoint>(self.callbacks);
        let saved = crate::loggers::SavedCheckpoint {
            path,
            score: callback
                .filter(|c| c.best_model_score().is_some())
                .and_then(|c| c.best_k_models().get(path).copied()),
            best_model_path: callback.and_then(|c| c.best_model_path()),
        };
        self.cx.loggers.iter_mut().try_for_each(|logger| logger.after_save_checkpoint(&saved))
    }

    /// Restores what `fit` needs to continue from `ckpt` (the weights were loaded before): the
    /// loop position, optimizer and scheduler state, callback and module state.
    pub(super) fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let meta = &ckpt.meta;
        if meta.optimizers.len() != self.cx.optimizers.len() {
            return Err(Error::Checkpoint {
                path: ckpt.path().to_path_buf(),
                problem: format!(
                    "holds the state of {} optimizers, but `configure_optimizers` returned {}",
                    meta.optimizers.len(),
                    self.cx.optimizers.len()
                ),
            });
        }
        // The callbacks first, as Lightning restores them before the optimizers (SWA's averaged
        // weights and scheduler, finetuning's parameter groups).
        for cb in self.callbacks.iter_mut() {
            if let Some(state) = meta.callbacks.get(cb.name()) {
                cb.load_state_dict(state)?;
            }
        }
        crate::callbacks::restore_before_optimizers(self.callbacks, &ckpt.state_tensors("callbacks/"), self.cx)?;
        for (i, (opt, opt_meta)) in self.cx.optimizers.iter_mut().zip(&meta.optimizers).enumerate() {
            let state =
                OptimizerState { tensors: ckpt.state_tensors(&format!("optimizer.{i}/")), meta: opt_meta.clone() };
            opt.load_state_dict(&state).map_err(|e| Error::Checkpoint {
                path: ckpt.path().to_path_buf(),
                problem: format!("optimizer {i}: {e}"),
            })?;
        }
        for (s, state) in self.cx.schedulers.iter_mut().zip(&meta.schedulers) {
            s.scheduler.load_state(state)?;
            // The optimizer's learning rates were restored with its state.
        }
        self.model.on_load_checkpoint(&meta.module, ctx!(self))?;
        if let (Some(state), Some(dm)) = (&meta.datamodule, self.datamodule.as_deref_mut()) {
            dm.load_state_dict(state)?;
        }
        if let Some(state) = ckpt.tensors().get(&format!("{STATE_PREFIX}rng.cpu")) {
            crate::rng::set_cpu_state(state)?;
        }
        let scaler_state = ckpt.state_tensors("grad_scaler/");
        if let (Some(scaler), Some(scale), Some(tracker)) =
            (&mut self.cx.scaler, scaler_state.get("scale"), scaler_state.get("growth_tracker"))
        {
            scaler.load_state_tensors(scale, tracker)?;
        }
        self.cx.global_step = meta.global_step;
        self.cx.total_batch_idx = meta.loops.total_batch_idx;
        self.cx.current_epoch = meta.loops.epoch;
        self.cx.next_epoch = meta.loops.epoch;
        Ok(())
    }
}
