use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, cx: &mut Ctx) -> Tensor {
        let _ = cx;
        self.w.sum(Kind::Float)
    }
}

fn main() {}
