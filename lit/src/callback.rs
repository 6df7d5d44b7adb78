//! Callbacks: code that is not the model's but runs at the same points (checkpointing, early
//! stopping, monitoring). Every hook is defaulted to nothing; implement the ones you need.

use std::any::Any;

use tch::Tensor;

use crate::ctx::{Ctx, Stage};
use crate::error::{Error, Result};
use crate::module::StepOutput;

/// One batch's prediction, as callbacks see it (see [`Callback::on_prediction`]).
pub struct Predicted<'a> {
    /// The prediction's tensors by name: `predictions` for a single tensor, `predictions_0`,
    /// `predictions_1`, … for tuples and `Vec`s, the keys of a map.
    pub tensors: &'a [(String, Tensor)],
    /// The positions of the batch's samples in its loader's order.
    pub batch_indices: &'a [i64],
    /// The batch's index in its loader.
    pub batch_idx: usize,
    /// The loader's index.
    pub dataloader_idx: usize,
}

/// Where a callback runs among the others in each hook (Lightning's ordering: checkpoint
/// callbacks after every other, so that they see what the others did in the same hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum CallbackOrder {
    /// In the order given (the Trainer's, then the module's `configure_callbacks`).
    #[default]
    Normal,
    /// A checkpoint callback: after every other one. `fast_dev_run` and `barebones` run without
    /// them, and `enable_checkpointing` adds the default `ModelCheckpoint` only when none is given.
    Checkpoint,
}

/// A callback, as Lightning's `Callback`. Hooks run before the module's hook of the same name.
#[allow(unused_variables)]
pub trait Callback: Any {
    /// Where it runs among the other callbacks; [`CallbackOrder::Normal`] by default.
    fn order(&self) -> CallbackOrder {
        CallbackOrder::Normal
    }
    /// A name for messages; the type name by default.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
    /// `setup(stage)`, before the module's.
    fn setup(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// `teardown(stage)`, before the module's.
    fn teardown(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of `fit`.
    fn on_fit_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of `fit`.
    fn on_fit_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After `configure_optimizers`, before the sanity check.
    fn on_pretrain_routine_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Right after `on_pretrain_routine_start`.
    fn on_pretrain_routine_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the sanity check's validation batches.
    fn on_sanity_check_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After the sanity check.
    fn on_sanity_check_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the first training epoch.
    fn on_train_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After the last training epoch.
    fn on_train_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of any epoch (training, validation, test), before the module's.
    fn on_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of any epoch (training, validation, test), before the module's.
    fn on_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a training epoch.
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a training epoch; `cx.callback_metrics()` holds the epoch's reduced values.
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before a training batch.
    fn on_train_batch_start(&mut self, batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a training batch.
    fn on_train_batch_end(&mut self, outputs: Option<&StepOutput>, batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a validation loop.
    fn on_validation_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a validation loop: `cx.callback_metrics()` holds the epoch's values.
    fn on_validation_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a validation epoch.
    fn on_validation_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a validation epoch; its metrics are reduced right after, before
    /// `on_validation_end`.
    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before a validation batch.
    fn on_validation_batch_start(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a validation batch.
    fn on_validation_batch_end(
        &mut self,
        outputs: Option<&StepOutput>,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Start of the test loop.
    fn on_test_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the test loop.
    fn on_test_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the test epoch.
    fn on_test_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the test epoch.
    fn on_test_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before a test batch.
    fn on_test_batch_start(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a test batch.
    fn on_test_batch_end(
        &mut self,
        outputs: Option<&StepOutput>,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Start of the prediction loop.
    fn on_predict_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the prediction loop.
    fn on_predict_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the prediction epoch.
    fn on_predict_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the prediction epoch.
    fn on_predict_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before a prediction batch.
    fn on_predict_batch_start(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a prediction batch.
    fn on_predict_batch_end(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// A prediction batch's output, before `on_predict_batch_end`, when the module's
    /// `Prediction` type holds tensors ([`PredictionTensors`](crate::callbacks::PredictionTensors)).
    fn on_prediction(&mut self, prediction: &Predicted<'_>, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After back-propagation.
    fn on_after_backward(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the optimizer steps.
    fn on_before_optimizer_step(&mut self, optimizer_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before gradients are cleared.
    fn on_before_zero_grad(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the loss is back-propagated.
    fn on_before_backward(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// A run is ending with `error`.
    fn on_exception(&mut self, error: &Error, cx: &mut Ctx) {}
    /// State to store in checkpoints (keyed by `name()`), restored by `load_state_dict`.
    fn state_dict(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores the state a checkpoint stored.
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Merges the module's callbacks into the Trainer's, as Lightning does: a module callback
/// replaces every Trainer callback of the same type; then each keeps its place within its
/// [`Callback::order`].
pub(crate) fn merge(trainer: &mut Vec<Box<dyn Callback>>, module: Vec<Box<dyn Callback>>) {
    let types: Vec<_> = module.iter().map(|c| Any::type_id(&**c)).collect();
    trainer.retain(|c| !types.contains(&Any::type_id(&**c)));
    trainer.extend(module);
    trainer.sort_by_key(|c| c.order());
}
