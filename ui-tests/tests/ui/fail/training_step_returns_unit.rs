use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) {
        cx.log("x", &x);
    }
}

fn main() {}
