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

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> Tensor {
        cx.log("x", &x);
        x
    }
}

fn main() {}
