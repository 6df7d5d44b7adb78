use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor, hiddens: Option<Tensor>) -> (Tensor, Tensor) {
        (x, hiddens.unwrap())
    }
}

fn main() {}
