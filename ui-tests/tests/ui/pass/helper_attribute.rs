// `#[helper]` keeps a method whose name is a near miss of a hook's (here `train_step`, one
// edit from `training_step`) as a plain method.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Model {
    #[helper]
    fn train_step(&self, x: &Tensor) -> Tensor {
        (x * &self.w).sum(Kind::Float)
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.train_step(&x)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[2]);
    let model = Model { vs, w };
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu));
    assert_eq!(model.train_step(&x).double_value(&[]), 0.0);
}
