use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(truncated_bptt_steps = 4)]
impl Model {
    fn training_step(&mut self, x: Tensor, hiddens: Tensor) -> (Tensor, Tensor) {
        (x, hiddens)
    }
}

fn main() {}
