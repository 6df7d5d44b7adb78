//! Trains a one-hidden-layer MLP on MNIST (the bundled files in `data/mnist`) and prints the
//! test accuracy and the wall time.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist [-- DATA_DIR]
//! ```

use std::time::Instant;

use lit::data::{Mnist, random_split};
use lit::prelude::*;

struct LitMnist {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    lr: f64,
}

impl LitMnist {
    fn new(hidden: i64, lr: f64) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 784, hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", hidden, 10, Default::default());
        LitMnist { vs, l1, l2, lr }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }

    /// Loss and accuracy of one batch.
    fn evaluate(&self, (x, y): (Tensor, Tensor)) -> (Tensor, Tensor) {
        let logits = self.forward(&x);
        (logits.cross_entropy_for_logits(&y), logits.accuracy_for_logits(&y))
    }
}

type Batch = (Tensor, Tensor);

impl LightningModule for LitMnist {
    type TrainBatch = Batch;
    type ValBatch = Batch;
    type TestBatch = Batch;
    type PredictBatch = Tensor;
    type Prediction = Tensor;

    const HOOKS: Hooks = Hooks { validation_step: true, test_step: true, predict_step: true, ..Hooks::TRAINING_ONLY };

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn training_step(&mut self, (x, y): Batch, _batch_idx: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        let loss = self.forward(&x).cross_entropy_for_logits(&y);
        cx.log("train_loss", &loss).prog_bar(true);
        Ok(Some(loss.into()))
    }

    fn validation_step(&mut self, batch: Batch, _: usize, _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        let (loss, acc) = self.evaluate(batch);
        cx.log("val_loss", &loss).prog_bar(true);
        cx.log("val_acc", &acc).prog_bar(true);
        Ok(None)
    }

    fn test_step(&mut self, batch: Batch, _: usize, _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        let (loss, acc) = self.evaluate(batch);
        cx.log("test_loss", &loss);
        cx.log("test_acc", &acc);
        Ok(None)
    }

    fn predict_step(&mut self, x: Tensor, _: usize, _: usize, _cx: &mut Ctx) -> Result<Tensor> {
        Ok(self.forward(&x).argmax(-1, false))
    }

    fn configure_optimizers(&mut self, _cx: &mut Ctx) -> Result<Optimizers> {
        Ok(Adam::new(self.lr).into())
    }
}

fn main() -> lit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "lit=info".into()))
        .init();
    let dir = std::env::args().nth(1).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into());
    let start = Instant::now();
    seed_everything(42);

    let full = Mnist::train(&dir)?.into_dataset()?;
    let mut parts = random_split(full, &[55_000, 5_000], 42)?.into_iter();
    let (train, val) = (parts.next().expect("two parts"), parts.next().expect("two parts"));
    let test = Mnist::test(&dir)?.into_dataset()?;

    let train = DataLoader::new(train).batch_size(64).shuffle(true).seed(42).num_workers(1);
    let val = DataLoader::new(val).batch_size(1000);
    let mut test = DataLoader::new(test).batch_size(1000);

    let mut model = LitMnist::new(256, 1e-3);
    let mut trainer = Trainer::builder().max_epochs(3).accelerator("auto").build()?;
    trainer.fit(&mut model, train, val)?;
    let metrics = trainer.test(&mut model, &mut test)?;
    let accuracy = metrics[0]["test_acc"];

    println!("test accuracy: {:.2}%", accuracy * 100.0);
    println!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    if accuracy < 0.97 {
        return Err(lit::Error::msg(format!("test accuracy {accuracy:.4} is below 0.97")));
    }
    Ok(())
}
