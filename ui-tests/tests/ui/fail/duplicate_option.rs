use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(automatic_optimization = false, automatic_optimization = true)]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {}
