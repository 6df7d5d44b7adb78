//! Trains a one-hidden-layer MLP on MNIST (the bundled files in `data/mnist`), prints the test
//! accuracy and the wall time, and checks that the saved checkpoint reloads.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist [-- [DATA_DIR] [--devices N --strategy ddp]]
//! ```
//!
//! With `--devices 2 --strategy ddp` the Trainer starts a second process and trains on both,
//! each on half of every batch's samples.

use std::time::Instant;

use lit::data::{Mnist, random_split};
use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(default = 256)]
    pub hidden: i64,
    #[hparams(default = 1e-3)]
    pub lr: f64,
}

#[lightning_module]
pub struct LitMnist {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    #[hparams]
    cfg: Config,
}

type Batch = (Tensor, Tensor);

#[lightning_module]
impl LitMnist {
    fn new(cfg: Config) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 784, cfg.hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 10, Default::default());
        LitMnist { vs, l1, l2, cfg }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }

    /// Loss and accuracy of one batch.
    fn evaluate(&self, (x, y): Batch) -> (Tensor, Tensor) {
        let logits = self.forward(&x);
        (logits.cross_entropy_for_logits(&y), logits.accuracy_for_logits(&y))
    }

    fn training_step(&mut self, (x, y): Batch, cx: &mut Ctx) -> Tensor {
        let loss = self.forward(&x).cross_entropy_for_logits(&y);
        cx.log("train_loss", &loss).prog_bar(true);
        loss
    }

    fn validation_step(&mut self, batch: Batch, cx: &mut Ctx) {
        let (loss, acc) = self.evaluate(batch);
        cx.log("val_loss", &loss).prog_bar(true);
        cx.log("val_acc", &acc).prog_bar(true);
    }

    fn test_step(&mut self, batch: Batch, cx: &mut Ctx) {
        let (loss, acc) = self.evaluate(batch);
        cx.log("test_loss", &loss);
        cx.log("test_acc", &acc);
    }

    fn predict_step(&mut self, x: Tensor) -> Tensor {
        self.forward(&x).argmax(-1, false)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(self.cfg.lr).into()
    }
}

fn main() -> lit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "lit=info".into()))
        .init();
    let mut dir: String = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into();
    let (mut devices, mut strategy) = (1, String::from("auto"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--devices" => {
                devices = args.next().and_then(|n| n.parse().ok()).ok_or_else(|| lit::Error::msg("--devices N"))?
            }
            "--strategy" => strategy = args.next().ok_or_else(|| lit::Error::msg("--strategy NAME"))?,
            other => dir = other.to_string(),
        }
    }
    let start = Instant::now();
    seed_everything(42);

    let full = Mnist::train(&dir)?.into_dataset()?;
    let mut parts = random_split(full, &[55_000, 5_000], 42)?.into_iter();
    let (train, val) = (parts.next().expect("two parts"), parts.next().expect("two parts"));
    let test = Mnist::test(&dir)?;
    let test_images = test.images.narrow(0, 0, 100);

    let train = DataLoader::new(train).batch_size(64).shuffle(true).seed(42).num_workers(1);
    let val = DataLoader::new(val).batch_size(1000);
    let mut test = DataLoader::new(test.into_dataset()?).batch_size(1000);

    let mut model = LitMnist::new(Config::default());
    let mut trainer = Trainer::builder()
        .max_epochs(3)
        .accelerator(if devices > 1 { "cpu" } else { "auto" })
        .devices(devices)
        .strategy(strategy)
        .build()?;
    trainer.fit(&mut model, train, val)?;
    let metrics = trainer.test(&mut model, &mut test)?;
    let accuracy = metrics[0]["test_acc"];
    if trainer.global_rank() == 0 {
        println!("test accuracy: {:.2}%", accuracy * 100.0);
        println!("wall time: {:.1} s on {} process(es)", start.elapsed().as_secs_f64(), trainer.world_size());
    }

    // The checkpoint rebuilds the same model: same hparams, same predictions.
    let path = std::env::temp_dir().join("lit-mnist-example.ckpt");
    trainer.save_checkpoint(&path, &mut model)?;
    let mut restored = LitMnist::load_from_checkpoint(&path)?;
    let before = trainer.predict(&mut model, Batches::new(vec![test_images.shallow_clone()]))?;
    let after = trainer.predict(&mut restored, Batches::new(vec![test_images]))?;
    let same = before[0].equal(&after[0]);
    if trainer.global_rank() == 0 {
        println!("checkpoint {}: {} MB, reloaded predictions identical: {same}", path.display(), restored.model_size());
    }
    if accuracy < 0.97 || !same {
        return Err(lit::Error::msg(format!("test accuracy {accuracy:.4} is below 0.97, or the reload differs")));
    }
    Ok(())
}
