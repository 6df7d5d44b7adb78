// Misspelt hooks are errors whatever their prefix, not plain methods that never run.
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

    fn validaton_step(&mut self, x: Tensor) {
        let _ = x;
    }

    fn configure_optimizer(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
}

fn main() {
    let mut model = Model { vs: nn::VarStore::new(Device::Cpu) };
    let mut trainer = Trainer::builder().build().unwrap();
    let data = || lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    trainer.fit(&mut model, data(), data()).unwrap();
}
