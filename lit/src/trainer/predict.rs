//! The prediction loop: the evaluation loop's batches (`each_batch`) with the prediction hooks,
//! keeping every batch's prediction.

use super::events::Event;
use super::{LoaderVec, Run, ctx, hook};
use crate::callbacks::Predicted;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::module::LightningModule;

impl<M: LightningModule> Run<'_, M> {
    pub(super) fn predict(&mut self, loaders: &mut LoaderVec<'_, M::PredictBatch>) -> Result<Vec<M::Prediction>> {
        if !M::HOOKS.predict_step {
            return Err(Error::hook("predict_step", "the module does not implement it"));
        }
        self.model.on_predict_model_eval(ctx!(self))?;
        self.cx.grad_enabled = false;
        let result = tch::no_grad(|| {
            hook!(self, on_predict_start());
            hook!(self, on_predict_epoch_start());
            let mut predictions = Vec::new();
            self.cx.num_dataloaders = loaders.len();
            let counts = loaders
                .iter()
                .map(|l| Ok(self.config.limit_predict_batches.of(l.len(), "limit_predict_batches")?))
                .collect::<Result<Vec<usize>>>()?;
            self.emit(Event::LoopStart { label: "Predicting".into(), total: super::eval::total(&counts) })?;
            // Each loader's samples are numbered from 0 (`Predicted::batch_indices`).
            let mut offsets = vec![0i64; loaders.len()];
            self.each_batch(loaders, &counts, |run, batch, i, dl| {
                for cb in run.callbacks.iter_mut() {
                    cb.on_predict_batch_start(i, dl, ctx!(run))?;
                }
                run.model.on_predict_batch_start(&batch, i, dl, ctx!(run))?;
                let batch = run.transfer(batch, dl)?;
                let held = batch.shallow_clone();
                let out = run.step_hook("predict_step", |m, cx| m.predict_step(batch, i, dl, cx))?;
                if !run.callbacks.is_empty()
                    && let Some(tensors) = M::prediction_tensors(&out)
                {
                    let n = tensors.first().and_then(|(_, t)| t.size().first().copied()).unwrap_or(0);
                    let batch_indices: Vec<i64> = (offsets[dl]..offsets[dl] + n).collect();
                    offsets[dl] += n;
                    let p = Predicted {
                        tensors: &tensors,
                        batch_indices: &batch_indices,
                        batch_idx: i,
                        dataloader_idx: dl,
                    };
                    for cb in run.callbacks.iter_mut() {
                        cb.on_prediction(&p, ctx!(run))?;
                    }
                }
                for cb in run.callbacks.iter_mut() {
                    cb.on_predict_batch_end(i, dl, ctx!(run))?;
                }
                run.model.on_predict_batch_end(&out, &held, i, dl, ctx!(run))?;
                run.cx.check()?;
                run.emit(Event::PredictBatchEnd)?;
                predictions.push(out);
                Ok(())
            })?;
            self.cx.num_dataloaders = 1;
            self.emit(Event::PredictEnd)?;
            hook!(self, on_predict_epoch_end());
            hook!(self, on_predict_end());
            Ok(predictions)
        });
        self.cx.grad_enabled = true;
        result
    }
}
