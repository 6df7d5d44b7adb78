//! Trains a tiny model with the default progress bar, for the test that reads its output when
//! stderr is not a terminal. `progress_demo [epochs] [log_every_n_steps]`.

use lit::data::Batches;
use lit::prelude::*;

#[lightning_module]
struct Tiny {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Tiny {
    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> Tensor {
        let loss = (&x * &self.w).sum(Kind::Float).square();
        cx.log("loss", &loss).prog_bar(true);
        loss
    }

    fn validation_step(&mut self, x: Tensor, cx: &mut Ctx) {
        cx.log("val", (&x * &self.w).sum(Kind::Float)).prog_bar(true);
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        cx.print(format!("epoch {} done", cx.current_epoch()));
    }

    fn get_progress_bar_dict(
        &self,
        mut metrics: std::collections::BTreeMap<String, f64>,
    ) -> std::collections::BTreeMap<String, f64> {
        metrics.insert("v_num".into(), 7.0);
        metrics
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

fn main() -> lit::Result<()> {
    let mut args = std::env::args().skip(1);
    let epochs = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let every = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().ones("w", &[3]);
    let mut model = Tiny { vs, w };
    let batches =
        || Batches::new((0..25).map(|i| Tensor::full([3], i as f64 / 25.0, (Kind::Float, Device::Cpu))).collect());
    let mut trainer =
        Trainer::builder().accelerator("cpu").max_epochs(epochs).log_every_n_steps(every).logger(false).build()?;
    trainer.fit(&mut model, batches(), batches())?;
    Ok(())
}
