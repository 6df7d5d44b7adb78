//! [`DataModule`]: the data of a task in one place (Lightning's `LightningDataModule`): how to
//! download or prepare it, how to split it per stage, and its loaders.

use std::any::Any;

use crate::ctx::Stage;
use crate::data::{Batch, Loader};
use crate::error::Result;

/// A boxed loader of a data module.
pub type BoxLoader<B> = Box<dyn Loader<Batch = B>>;

/// The data side of a task, shared by every model trained on it. The Trainer's
/// [`fit_datamodule`](crate::Trainer::fit_datamodule), `validate_datamodule`,
/// `test_datamodule` and `predict_datamodule` call, in order: `prepare_data` (once per machine:
/// in the process of local rank 0), `setup(stage)`, the stage's `*_dataloader`s, the run, and
/// `teardown(stage)` (also when the run fails). During the run, hooks reach the data module with
/// `cx.datamodule::<D>()`, and checkpoints hold its `state_dict`.
#[allow(unused_variables)]
pub trait DataModule: 'static {
    /// Training batches.
    type TrainBatch: Batch;
    /// Validation batches.
    type ValBatch: Batch;
    /// Test batches.
    type TestBatch: Batch;
    /// Prediction batches.
    type PredictBatch: Batch;

    /// Downloads or writes what every process then reads; runs once per machine.
    fn prepare_data(&mut self) -> Result<()> {
        Ok(())
    }
    /// Loads and splits the data for `stage`; runs in every process.
    fn setup(&mut self, stage: Stage) -> Result<()> {
        Ok(())
    }
    /// The training loader (none: `fit_datamodule` fails, naming this hook).
    fn train_dataloader(&mut self) -> Result<Option<BoxLoader<Self::TrainBatch>>> {
        Ok(None)
    }
    /// Validation loaders (none: no validation).
    fn val_dataloader(&mut self) -> Result<Vec<BoxLoader<Self::ValBatch>>> {
        Ok(Vec::new())
    }
    /// Test loaders.
    fn test_dataloader(&mut self) -> Result<Vec<BoxLoader<Self::TestBatch>>> {
        Ok(Vec::new())
    }
    /// Prediction loaders.
    fn predict_dataloader(&mut self) -> Result<Vec<BoxLoader<Self::PredictBatch>>> {
        Ok(Vec::new())
    }
    /// After the run of `stage`.
    fn teardown(&mut self, stage: Stage) -> Result<()> {
        Ok(())
    }
    /// A batch of any stage as it leaves its loader, before it moves to the device (after the
    /// module's own `on_before_batch_transfer`), e.g. CPU-side augmentation.
    fn on_before_batch_transfer<B: Batch>(&mut self, batch: B, dataloader_idx: usize) -> Result<B> {
        Ok(batch)
    }
    /// A batch on the device (after the module's own `on_after_batch_transfer`), e.g. GPU-side
    /// augmentation.
    fn on_after_batch_transfer<B: Batch>(&mut self, batch: B, dataloader_idx: usize) -> Result<B> {
        Ok(batch)
    }
    /// State saved in checkpoints written during `fit_datamodule` (e.g. a curriculum's
    /// position); `None` saves nothing.
    fn state_dict(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores what `state_dict` returned, when a run resumes from a checkpoint.
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// A data module seen from inside a run (by `cx.datamodule()` and checkpoints), whatever its
/// batch types.
pub(crate) trait ErasedDataModule {
    fn state_dict(&self) -> Option<serde_json::Value>;
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()>;
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    fn prepare_data(&mut self) -> Result<()>;
    fn setup(&mut self, stage: Stage) -> Result<()>;
    fn teardown(&mut self, stage: Stage) -> Result<()>;
    /// `on_before_batch_transfer` (`after == false`) or `on_after_batch_transfer` on a batch of
    /// one of the data module's batch types.
    fn transfer_hook(&mut self, batch: Box<dyn Any>, dataloader_idx: usize, after: bool) -> Result<Box<dyn Any>>;
}

/// Calls a transfer hook on `batch` if it is a `B`.
fn typed_hook<D: DataModule, B: Batch>(
    dm: &mut D,
    batch: Box<dyn Any>,
    dataloader_idx: usize,
    after: bool,
) -> std::result::Result<Result<Box<dyn Any>>, Box<dyn Any>> {
    let batch = batch.downcast::<B>()?;
    let out = if after {
        dm.on_after_batch_transfer(*batch, dataloader_idx)
    } else {
        dm.on_before_batch_transfer(*batch, dataloader_idx)
    };
    Ok(out.map(|b| Box::new(b) as Box<dyn Any>))
}

impl<D: DataModule> ErasedDataModule for D {
    fn transfer_hook(&mut self, batch: Box<dyn Any>, dataloader_idx: usize, after: bool) -> Result<Box<dyn Any>> {
        let batch = match typed_hook::<D, D::TrainBatch>(self, batch, dataloader_idx, after) {
            Ok(out) => return out,
            Err(batch) => batch,
        };
        let batch = match typed_hook::<D, D::ValBatch>(self, batch, dataloader_idx, after) {
            Ok(out) => return out,
            Err(batch) => batch,
        };
        let batch = match typed_hook::<D, D::TestBatch>(self, batch, dataloader_idx, after) {
            Ok(out) => return out,
            Err(batch) => batch,
        };
        match typed_hook::<D, D::PredictBatch>(self, batch, dataloader_idx, after) {
            Ok(out) => out,
            // A batch of another type (a loader given directly): nothing to call.
            Err(batch) => Ok(batch),
        }
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        DataModule::state_dict(self)
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        DataModule::load_state_dict(self, state)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn prepare_data(&mut self) -> Result<()> {
        DataModule::prepare_data(self)
    }
    fn setup(&mut self, stage: Stage) -> Result<()> {
        DataModule::setup(self, stage)
    }
    fn teardown(&mut self, stage: Stage) -> Result<()> {
        DataModule::teardown(self, stage)
    }
}

/// Whether this process prepares the data: local rank 0 (`LOCAL_RANK` unset or 0).
pub(crate) fn prepares_data() -> bool {
    std::env::var("LOCAL_RANK").map_or(true, |r| r.trim() == "0")
}
