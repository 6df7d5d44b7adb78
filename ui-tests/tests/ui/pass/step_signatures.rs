// Every way a step hook may be written: parameters left out or named freely, and each allowed
// return type.
use lit::prelude::*;

type B = (Tensor, Tensor);

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    // Batch only, returning the loss.
    fn training_step(&mut self, (x, _y): B) -> Tensor {
        x.sum(Kind::Float)
    }
    // All parameters, in the table's order, returning Option (None skips the batch).
    fn validation_step(&mut self, batch: B, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) -> Option<Tensor> {
        cx.log("v", batch_idx as f64 + dataloader_idx as f64);
        Some(batch.0)
    }
    // Unnamed index and the context, returning nothing.
    fn test_step(&self, _batch: B, i: usize, cx: &mut Ctx) {
        cx.log("i", i as f64);
    }
    // Result of a value.
    fn predict_step(&mut self, x: Tensor, _dataloader_idx: usize) -> lit::Result<Vec<f32>> {
        Ok(Vec::<f32>::try_from(x.flatten(0, -1))?)
    }
    fn training_step_end(&mut self, out: StepOutput) -> lit::Result<StepOutput> {
        Ok(out)
    }
    fn validation_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>) {
        assert!(!outputs.is_empty());
    }
}

fn assert_types<M: LightningModule<TrainBatch = B, ValBatch = B, TestBatch = B, PredictBatch = Tensor, Prediction = Vec<f32>>>() {}

fn main() {
    assert_types::<Model>();
    let hooks = <Model as LightningModule>::HOOKS;
    assert!(hooks.validation_step && hooks.test_step && hooks.predict_step && hooks.validation_epoch_end);
    assert!(!hooks.training_epoch_end && !hooks.test_epoch_end);
}
