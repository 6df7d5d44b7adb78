// The smallest module: a VarStore, a training_step returning the loss, an optimizer.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        (&x * &self.w).sum(Kind::Float)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[2]);
    let mut model = Model { vs, w };
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build().unwrap();
    let data = lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    trainer.fit(&mut model, data, ()).unwrap();
    assert_eq!(trainer.global_step(), 1);
}
