// `forward` is a plain method (any signature compiles); export needs one it can trace.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn forward(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.forward(&x, &x)
    }
}

fn main() {
    let model = Model { vs: nn::VarStore::new(Device::Cpu) };
    model.to_onnx("model.onnx").unwrap();
}
