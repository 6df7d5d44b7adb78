use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step<T: Into<Tensor>>(&mut self, x: T) -> Tensor {
        x.into()
    }
}

fn main() {}
