// What Lightning keeps on `self` is on the context in lit; each use says what to write.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        let loss = x.sum(Kind::Float);
        self.log("train_loss", &loss);
        if self.current_epoch > 3 {
            let _ = self.global_step;
        }
        loss
    }

    fn on_train_epoch_end(&mut self) {
        let _ = self.trainer;
        let _ = self.optimizers();
    }
}

fn main() {}
