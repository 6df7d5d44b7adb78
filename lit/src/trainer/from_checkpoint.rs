//! `trainer.ckpt_path("best").test(…)`: any entry point, with loaders or a data module, from a
//! checkpoint, as Lightning's `ckpt_path=` argument.

use super::{EvalMetrics, IntoLoaders, Trainer};
use crate::data::DataModule;
use crate::error::Result;
use crate::module::LightningModule;

/// The Trainer's entry points, each starting from a checkpoint: `"best"` or `"last"` (the first
/// `ModelCheckpoint`'s) or a path. `fit` restores the whole training state and continues;
/// `validate`, `test` and `predict` load the weights first, as Lightning does with `ckpt_path`.
///
/// ```ignore
/// trainer.fit_datamodule(&mut model, &mut dm)?;
/// let results = trainer.ckpt_path("best").test_datamodule(&mut model, &mut dm)?;
/// ```
pub struct FromCheckpoint<'t> {
    trainer: &'t mut Trainer,
    ckpt: String,
}

impl<'t> FromCheckpoint<'t> {
    pub(super) fn new(trainer: &'t mut Trainer, ckpt: String) -> Self {
        FromCheckpoint { trainer, ckpt }
    }

    /// The checkpoint's weights loaded into `model`, and its entries handed to the module's
    /// `on_load_checkpoint`.
    fn load_weights<M: LightningModule>(&mut self, model: &mut M) -> Result<()> {
        self.trainer.load_weights(model, &self.ckpt)
    }

    /// `fit`, continuing from the checkpoint (weights, optimizers, schedulers, callbacks and the
    /// position in the epoch).
    pub fn fit<'a, M: LightningModule>(
        self,
        model: &mut M,
        train: impl IntoLoaders<'a, M::TrainBatch>,
        val: impl IntoLoaders<'a, M::ValBatch>,
    ) -> Result<()> {
        let path = self.trainer.resolve_checkpoint(&self.ckpt)?;
        self.trainer.fit_from_checkpoint(model, train, val, path)
    }

    /// `fit_datamodule`, continuing from the checkpoint (the data module's state too).
    pub fn fit_datamodule<M, D>(self, model: &mut M, datamodule: &mut D) -> Result<()>
    where
        M: LightningModule,
        D: DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch>,
    {
        let path = self.trainer.resolve_checkpoint(&self.ckpt)?;
        self.trainer.fit_datamodule_from_checkpoint(model, datamodule, path)
    }

    /// `validate` with the checkpoint's weights.
    pub fn validate<'a, M: LightningModule>(
        mut self,
        model: &mut M,
        val: impl IntoLoaders<'a, M::ValBatch>,
    ) -> Result<Vec<EvalMetrics>> {
        self.load_weights(model)?;
        self.trainer.validate(model, val)
    }

    /// `validate_datamodule` with the checkpoint's weights.
    pub fn validate_datamodule<M, D>(mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<EvalMetrics>>
    where
        M: LightningModule,
        D: DataModule<ValBatch = M::ValBatch>,
    {
        self.load_weights(model)?;
        self.trainer.validate_datamodule(model, datamodule)
    }

    /// `test` with the checkpoint's weights.
    pub fn test<'a, M: LightningModule>(
        mut self,
        model: &mut M,
        test: impl IntoLoaders<'a, M::TestBatch>,
    ) -> Result<Vec<EvalMetrics>> {
        self.load_weights(model)?;
        self.trainer.test(model, test)
    }

    /// `test_datamodule` with the checkpoint's weights.
    pub fn test_datamodule<M, D>(mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<EvalMetrics>>
    where
        M: LightningModule,
        D: DataModule<TestBatch = M::TestBatch>,
    {
        self.load_weights(model)?;
        self.trainer.test_datamodule(model, datamodule)
    }

    /// `predict` with the checkpoint's weights.
    pub fn predict<'a, M: LightningModule>(
        mut self,
        model: &mut M,
        data: impl IntoLoaders<'a, M::PredictBatch>,
    ) -> Result<Vec<M::Prediction>> {
        self.load_weights(model)?;
        self.trainer.predict(model, data)
    }

    /// `predict_datamodule` with the checkpoint's weights.
    pub fn predict_datamodule<M, D>(mut self, model: &mut M, datamodule: &mut D) -> Result<Vec<M::Prediction>>
    where
        M: LightningModule,
        D: DataModule<PredictBatch = M::PredictBatch>,
    {
        self.load_weights(model)?;
        self.trainer.predict_datamodule(model, datamodule)
    }
}
