// All mistakes of an impl block are reported in one compile.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor, batch_idx: u32) -> Tensor {
        let _ = batch_idx;
        x
    }

    fn validation_step(self, x: Tensor) {}

    fn on_validation_epoch_ned(&mut self) {}
}

fn main() {
    // No follow-on errors where the module is used.
    let mut model = Model { vs: nn::VarStore::new(Device::Cpu) };
    let data = || lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    Trainer::builder().build().unwrap().fit(&mut model, data(), data()).unwrap();
}
