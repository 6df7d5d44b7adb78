use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {}
