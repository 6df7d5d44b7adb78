use lit::prelude::*;

struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        let _ = &self.vs;
        x
    }
}

fn main() {}
