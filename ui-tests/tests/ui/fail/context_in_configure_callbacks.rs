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

    fn configure_callbacks(&mut self, cx: &mut Ctx) -> Vec<Box<dyn Callback>> {
        let _ = cx;
        Vec::new()
    }
}

fn main() {}
