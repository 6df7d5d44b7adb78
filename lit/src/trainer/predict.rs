//! The prediction loop.

use std::collections::BTreeMap;

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
            self.cx.progress.start("Predicting", None);
            for (dl, loader) in loaders.iter_mut().enumerate() {
                self.cx.dataloader_idx = dl;
                let n = self.config.limit_predict_batches.of(loader.len(), "limit_predict_batches")?;
                let mut offset = 0i64;
                for (i, batch) in loader.iter(0)?.take(n).enumerate() {
                    let batch = batch?;
                    for cb in self.callbacks.iter_mut() {
                        cb.on_predict_batch_start(i, dl, ctx!(self))?;
                    }
                    self.model.on_predict_batch_start(&batch, i, dl, ctx!(self))?;
                    let batch = self.transfer(batch, dl)?;
                    let held = batch.shallow_clone();
                    let started = self.cx.profile_start();
                    let out = {
                        let _autocast = self.cx.autocast()?;
                        self.model.predict_step(batch, i, dl, ctx!(self))?
                    };
                    self.cx.profile_end("predict_step", started);
                    if !self.callbacks.is_empty()
                        && let Some(tensors) = M::prediction_tensors(&out)
                    {
                        let n = tensors.first().and_then(|(_, t)| t.size().first().copied()).unwrap_or(0);
                        let batch_indices: Vec<i64> = (offset..offset + n).collect();
                        offset += n;
                        let p = Predicted {
                            tensors: &tensors,
                            batch_indices: &batch_indices,
                            batch_idx: i,
                            dataloader_idx: dl,
                        };
                        for cb in self.callbacks.iter_mut() {
                            cb.on_prediction(&p, ctx!(self))?;
                        }
                    }
                    for cb in self.callbacks.iter_mut() {
                        cb.on_predict_batch_end(i, dl, ctx!(self))?;
                    }
                    self.model.on_predict_batch_end(&out, &held, i, dl, ctx!(self))?;
                    self.cx.check()?;
                    self.cx.progress.advance(BTreeMap::new);
                    predictions.push(out);
                }
            }
            self.cx.dataloader_idx = 0;
            self.cx.num_dataloaders = 1;
            self.cx.progress.finish(BTreeMap::new(), true);
            hook!(self, on_predict_epoch_end());
            hook!(self, on_predict_end());
            Ok(predictions)
        });
        self.cx.grad_enabled = true;
        result
    }
}
