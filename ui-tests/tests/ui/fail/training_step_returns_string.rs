use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, _x: Tensor) -> String {
        String::from("loss")
    }
}

fn main() {}
