//! Trains a one-hidden-layer MLP on MNIST (the bundled files in `data/mnist`) through lit's
//! command line (`lit::cli`, Lightning's `LightningCLI`): `fit` trains, then reports the test
//! accuracy and the wall time and checks that the saved checkpoint reloads.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- fit
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- fit --model.hidden 128 --trainer.max_epochs 1
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- fit --print_config > mnist.yaml
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- fit --config mnist.yaml
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- test --ckpt_path /tmp/lit-mnist-example.ckpt
//! scripts/with-torch cargo run --release -p lit-examples --bin mnist -- fit --trainer.devices 2 --trainer.strategy ddp --trainer.accelerator cpu
//! ```

use std::time::Instant;

use lit::cli::{FromConfig, LitCli, Subcommand};
use lit::data::{BoxLoader, DataModule, Mnist, Subset, TensorDataset, random_split};
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

/// Where the data is and how it is batched (the `data:` section of the configuration).
#[hparams]
pub struct DataConfig {
    #[hparams(default = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into())]
    pub dir: String,
    #[hparams(default = 64)]
    pub batch_size: usize,
    #[hparams(default = 1000)]
    pub eval_batch_size: usize,
    #[hparams(default = 5000)]
    pub val_size: usize,
    #[hparams(default = 1)]
    pub num_workers: usize,
    #[hparams(default = 42)]
    pub seed: u64,
}

type Images = TensorDataset<(Tensor, Tensor)>;

/// MNIST's training set split into training and validation, and its test set.
pub struct MnistData {
    cfg: DataConfig,
    train: Option<Subset<Images>>,
    val: Option<Subset<Images>>,
    test: Option<Mnist>,
}

impl FromConfig for MnistData {
    type Config = DataConfig;
    fn from_config(cfg: DataConfig) -> lit::Result<Self> {
        Ok(MnistData { cfg, train: None, val: None, test: None })
    }
}

impl DataModule for MnistData {
    type TrainBatch = Batch;
    type ValBatch = Batch;
    type TestBatch = Batch;
    type PredictBatch = Tensor;

    fn setup(&mut self, stage: Stage) -> lit::Result<()> {
        if matches!(stage, Stage::Fit | Stage::Validate) {
            let full = Mnist::train(&self.cfg.dir)?.into_dataset()?;
            let n = full.len();
            let val = self.cfg.val_size.min(n);
            let mut parts = random_split(full, &[n - val, val], self.cfg.seed)?.into_iter();
            self.train = parts.next();
            self.val = parts.next();
        } else {
            self.test = Some(Mnist::test(&self.cfg.dir)?);
        }
        Ok(())
    }

    fn train_dataloader(&mut self) -> lit::Result<Option<BoxLoader<Batch>>> {
        Ok(self.train.take().map(|train| {
            Box::new(
                DataLoader::new(train)
                    .batch_size(self.cfg.batch_size)
                    .shuffle(true)
                    .seed(self.cfg.seed)
                    .num_workers(self.cfg.num_workers),
            ) as BoxLoader<Batch>
        }))
    }

    fn val_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Batch>>> {
        Ok(self
            .val
            .take()
            .map(|val| Box::new(DataLoader::new(val).batch_size(self.cfg.eval_batch_size)) as _)
            .into_iter()
            .collect())
    }

    fn test_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Batch>>> {
        let Some(test) = self.test.take() else { return Ok(Vec::new()) };
        Ok(vec![Box::new(DataLoader::new(test.into_dataset()?).batch_size(self.cfg.eval_batch_size))])
    }

    fn predict_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Tensor>>> {
        let Some(test) = self.test.take() else { return Ok(Vec::new()) };
        Ok(vec![Box::new(DataLoader::new(TensorDataset::new(test.images)?).batch_size(self.cfg.eval_batch_size))])
    }
}

fn main() -> lit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "lit=info".into()))
        .init();
    let start = Instant::now();
    let mut defaults = lit::TrainerConfig::default();
    defaults.max_epochs = Some(3);
    let cli = LitCli::<LitMnist, MnistData>::new().trainer_defaults(defaults).seed_everything_default(42);
    let Some(mut cli) = cli.build(std::env::args_os())? else { return Ok(()) };
    let outcome = cli.run()?;
    let trainer = &mut cli.trainer;
    match outcome {
        lit::cli::Outcome::Metrics(metrics) if trainer.global_rank() == 0 => {
            for (k, v) in &metrics[0] {
                println!("{k}: {v:.4}");
            }
        }
        lit::cli::Outcome::Predictions(p) if trainer.global_rank() == 0 => {
            println!("{} batches of predictions", p.len());
        }
        _ => {}
    }
    if cli.subcommand != Subcommand::Fit {
        return Ok(());
    }
    let (model, dm) = (&mut cli.model, &mut cli.datamodule);
    let metrics = trainer.test_datamodule(model, dm)?;
    let accuracy = metrics[0]["test_acc"];
    if trainer.global_rank() == 0 {
        println!("test accuracy: {:.2}%", accuracy * 100.0);
        println!("wall time: {:.1} s on {} process(es)", start.elapsed().as_secs_f64(), trainer.world_size());
    }

    // The checkpoint rebuilds the same model: same hparams, same predictions.
    let path = std::env::temp_dir().join("lit-mnist-example.ckpt");
    trainer.save_checkpoint(&path, model)?;
    let mut restored = LitMnist::load_from_checkpoint(&path)?;
    let images = Mnist::test(&dm.cfg.dir)?.images.narrow(0, 0, 100);
    let before = trainer.predict(model, Batches::new(vec![images.shallow_clone()]))?;
    let after = trainer.predict(&mut restored, Batches::new(vec![images]))?;
    let same = before[0].equal(&after[0]);
    if trainer.global_rank() == 0 {
        println!("checkpoint {}: {} MB, reloaded predictions identical: {same}", path.display(), restored.model_size());
    }
    let epochs = trainer.config().max_epochs.unwrap_or(0);
    if (epochs >= 3 && accuracy < 0.97) || !same {
        return Err(lit::Error::msg(format!("test accuracy {accuracy:.4} is below 0.97, or the reload differs")));
    }
    Ok(())
}
