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

    fn get_progress_bar_dict(&mut self, metrics: std::collections::BTreeMap<String, f64>) -> std::collections::BTreeMap<String, f64> {
        metrics
    }
}

fn main() {}
