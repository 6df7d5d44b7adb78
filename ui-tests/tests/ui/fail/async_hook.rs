use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    async fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {}
