// A private config type in a public module: the message names the generated `hparams()` and
// points at the field.
use lit::prelude::*;

#[hparams]
struct Config {
    lr: f64,
}

#[lightning_module]
pub struct Model {
    vs: nn::VarStore,
    #[hparams]
    config: Config,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x * self.config.lr
    }
}

fn main() {}
