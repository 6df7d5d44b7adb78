//! What the fit loop does for `StochasticWeightAveraging`'s batch-norm update epoch: measuring
//! the layers' momenta on its first batch.

use super::Run;
use crate::callbacks::StochasticWeightAveraging;
use crate::ctx::Ctx;
use crate::data::Batch;
use crate::error::Result;
use crate::module::LightningModule;

impl<M: LightningModule> Run<'_, M> {
    /// The epochs SWA adds to `max_epochs` (one for the batch-norm update, with batch norms).
    pub(super) fn swa_extra_epochs(&self) -> Result<usize> {
        let Some(swa) = crate::callbacks::first_of::<StochasticWeightAveraging>(self.callbacks) else { return Ok(0) };
        if !M::AUTOMATIC_OPTIMIZATION {
            return Err(crate::Error::hook(
                "StochasticWeightAveraging",
                "SWA needs automatic optimization (in manual optimization the module steps its optimizers itself, \
                 also in the epoch that updates the batch-norm statistics)",
            ));
        }
        Ok(swa.extra_epochs())
    }

    /// Whether this epoch is SWA's batch-norm update: `training_step` runs, no optimizer steps.
    pub(super) fn swa_updating_batch_norm(&self) -> bool {
        crate::callbacks::first_of::<StochasticWeightAveraging>(self.callbacks)
            .is_some_and(StochasticWeightAveraging::updating_batch_norm)
    }

    /// On the update epoch's first batch: runs `training_step` on `batch` twice, with the same
    /// random numbers and without autograd, for SWA to measure each batch-norm layer's momentum.
    /// What those runs log is discarded.
    pub(super) fn swa_measure_momenta(&mut self, batch: &M::TrainBatch, batch_idx: usize) -> Result<()> {
        let Some(update) = crate::callbacks::first_of_mut::<StochasticWeightAveraging>(self.callbacks)
            .and_then(StochasticWeightAveraging::bn_update_to_measure)
        else {
            return Ok(());
        };
        let seed = tch::Tensor::randint(i64::MAX, [1], (tch::Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
        let kept = std::mem::take(&mut self.cx.metrics);
        self.cx.metrics.nan = kept.nan;
        let (model, state, datamodule) = (&mut *self.model, &mut *self.cx, &mut self.datamodule);
        let measured = update.measure(|| {
            tch::manual_seed(seed);
            let cx = &mut Ctx { state: &mut *state, datamodule: datamodule.as_deref_mut() };
            tch::no_grad(|| model.training_step(batch.shallow_clone(), batch_idx, cx)).map(drop)
        });
        self.cx.metrics = kept;
        tch::manual_seed(seed);
        measured
    }
}
