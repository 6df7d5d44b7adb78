// The `#[hparams]` field's type must itself be `#[hparams]`.
use lit::prelude::*;

#[derive(Clone, Debug)]
pub struct Config {
    pub lr: f64,
}

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    #[hparams]
    config: Config,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {}
