// Lightning hook names lit does not have say what to use instead.
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

    fn configure_model(&mut self) {}

    fn on_hpc_save(&mut self) {}

    fn on_sanity_check_start(&mut self) {}

    fn lr_scheduler_step(&mut self) {}
}

fn main() {}
