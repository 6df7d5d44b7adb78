use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(truncated_bptt_steps = 4)]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {}
