// Hooks under `#[cfg(...)]`: a switched-off hook does not exist (the trait's default runs, no
// recursion), and one hook may be defined twice under exclusive cfgs.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
    epochs_started: usize,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> Tensor {
        (&x * &self.w).sum(Kind::Float)
    }

    // Never compiled: the generated hook is switched off with it.
    #[cfg(any())]
    fn on_train_start(&mut self, cx: &mut Ctx) {
        let _ = cx;
        panic!("switched off");
    }

    // Another arity under a false cfg is fine as well.
    #[cfg(any())]
    fn on_train_end(&mut self) {}

    #[cfg(unix)]
    fn on_train_epoch_start(&mut self) {
        self.epochs_started += 1;
    }

    #[cfg(not(unix))]
    fn on_train_epoch_start(&mut self) {
        self.epochs_started += 1;
    }

    #[cfg(unix)]
    fn validation_step(&mut self, x: Tensor, cx: &mut Ctx) {
        cx.log("val", &x.sum(Kind::Float));
    }

    #[cfg(not(unix))]
    fn validation_step(&mut self, x: Tensor, cx: &mut Ctx) {
        cx.log("val", &x.sum(Kind::Float));
    }

    fn configure_optimizers(&self) -> Adam {
        Adam::new(0.1)
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[2]);
    let mut model = Model { vs, w, epochs_started: 0 };
    let mut trainer =
        Trainer::builder().accelerator("cpu").max_epochs(2).enable_progress_bar(false).enable_checkpointing(false).logger(false).build().unwrap();
    let data = || lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    trainer.fit(&mut model, data(), data()).unwrap();
    assert_eq!(trainer.global_step(), 2);
    assert_eq!(model.epochs_started, 2);
    assert!(<Model as LightningModule>::HOOKS.validation_step);
}
