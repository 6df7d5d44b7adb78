use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(truncated_bptt_steps = 0)]
impl Model {
    fn training_step(&mut self, x: Tensor, hiddens: Option<Tensor>) -> (Tensor, Tensor) {
        (x.shallow_clone(), hiddens.unwrap_or(x))
    }
}

fn main() {}
