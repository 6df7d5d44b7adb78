use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }

    fn on_after_batch_transfer(&mut self, batch: Tensor) -> Tensor {
        batch
    }
}

fn main() {}
