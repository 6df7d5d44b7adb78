// `#[helper]` is for near misses, not for a hook itself.
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

    #[helper]
    fn on_train_start(&mut self) {}
}

fn main() {}
