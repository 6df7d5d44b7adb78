// The README's example: three mistakes, reported in one compile, and nothing more where the
// module is used.
use lit::prelude::*;

#[lightning_module]
struct Model { vs: nn::VarStore }

#[lightning_module]
impl Model {
    fn training_step(&mut self, _x: Tensor) -> String {
        String::new()
    }
    fn validation_step(&mut self, _x: Tensor, _batch_idx: u32) {}
    fn on_train_epoch_ned(&mut self) {}
}

fn main() {
    let mut model = Model { vs: nn::VarStore::new(Device::Cpu) };
    let data = || lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    Trainer::builder().build().unwrap().fit(&mut model, data(), data()).unwrap();
}
