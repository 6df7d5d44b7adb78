// A hook's `Result` error type must convert into `lit::Error`: any `std::error::Error`.
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

    fn on_train_start(&mut self) -> Result<(), String> {
        Err("no".to_string())
    }
}

fn main() {}
