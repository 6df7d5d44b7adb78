use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor, batch_idx: i64) -> Tensor {
        let _ = batch_idx;
        x
    }
}

fn main() {}
