// `crate = "…"` for a renamed dependency or a re-export, and manual optimization declared.
use lit::prelude::*;

mod reexport {
    pub use lit as engine;
}

#[lightning_module(crate = "reexport::engine")]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(crate = "reexport::engine", automatic_optimization = false)]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x
    }
}

fn main() {
    assert!(!<Model as LightningModule>::AUTOMATIC_OPTIMIZATION);
}
