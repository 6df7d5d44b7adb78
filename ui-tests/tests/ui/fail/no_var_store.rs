// A struct mistake is reported once: the impl block and `fit` report nothing more.
use lit::prelude::*;

#[lightning_module]
struct Model {
    layer: nn::Linear,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.layer.forward(&x).sum(Kind::Float)
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Model { layer: nn::linear(vs.root(), 2, 1, Default::default()) };
    let data = lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    Trainer::builder().build().unwrap().fit(&mut model, data, ()).unwrap();
}
