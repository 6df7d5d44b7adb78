//! A small convolutional network on the bundled MNIST, as a LightningCLI program: the model's
//! hyper-parameters, the data module's configuration, the Trainer's options, its callbacks and
//! its logger come from `examples/cnn.yaml` and from flags. The model keeps `lit::metrics`
//! objects (accuracy and F1), sizes a one-cycle learning-rate schedule with
//! `estimated_stepping_batches()`, and takes its number of classes from the data module (an
//! argument link). After `fit` it tests the best checkpoint. Lightning's `LearningRateFinder` in
//! the callbacks runs a learning-rate range test first and trains at its suggestion.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- fit --config examples/cnn.yaml
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- fit --config examples/cnn.yaml --model.channels 32 --trainer.max_epochs 3
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- fit --config examples/cnn.yaml --trainer.callbacks.help EarlyStopping
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- fit --config examples/cnn.yaml --trainer.logger=MLFlowLogger --trainer.logger.tracking_uri=http://127.0.0.1:5000
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- fit --config examples/cnn.yaml --trainer.callbacks+=LearningRateFinder --trainer.callbacks.num_training_steps=40
//! scripts/with-torch cargo run --release -p lit-examples --bin cnn -- test --config examples/cnn.yaml --ckpt_path lit_logs/cnn/version_0/checkpoints/last.ckpt
//! ```

use lit::cli::{FromConfig, LitCli, Outcome, Subcommand};
use lit::data::{BoxLoader, DataModule, Mnist, Subset, TensorDataset, random_split};
use lit::metrics::{Accuracy, Average, F1Score};
use lit::prelude::*;

/// The network's shape and its optimisation (the `model:` section).
#[hparams]
pub struct CnnConfig {
    /// Channels of the first convolution; the second has twice as many.
    #[hparams(default = 8)]
    pub channels: i64,
    /// Peak learning rate of the one-cycle schedule.
    #[hparams(default = 0.01)]
    pub lr: f64,
    /// Dropout before the classifier.
    #[hparams(default = 0.1)]
    pub dropout: f64,
    /// Classes to tell apart (linked from the data module's `num_classes`).
    #[hparams(default = 10)]
    pub num_classes: i64,
}

#[lightning_module]
pub struct Cnn {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc: nn::Linear,
    #[hparams]
    cfg: CnnConfig,
    train_acc: Accuracy,
    val_acc: Accuracy,
    val_f1: F1Score,
    test_acc: Accuracy,
    test_f1: F1Score,
}

type Batch = (Tensor, Tensor);

#[lightning_module]
impl Cnn {
    fn new(cfg: CnnConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        // Two strided convolutions: 28×28 → 14×14 → 7×7.
        let (c1, c2) = (cfg.channels, 2 * cfg.channels);
        let conv1 =
            nn::conv2d(vs.root() / "conv1", 1, c1, 5, nn::ConvConfig { stride: 2, padding: 2, ..Default::default() });
        let conv2 =
            nn::conv2d(vs.root() / "conv2", c1, c2, 3, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() });
        let fc = nn::linear(vs.root() / "fc", c2 * 7 * 7, cfg.num_classes, Default::default());
        let k = cfg.num_classes;
        Cnn {
            vs,
            conv1,
            conv2,
            fc,
            train_acc: Accuracy::multiclass(k),
            val_acc: Accuracy::multiclass(k),
            val_f1: F1Score::multiclass(k).average(Average::Macro),
            test_acc: Accuracy::multiclass(k),
            test_f1: F1Score::multiclass(k).average(Average::Macro),
            cfg,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.view([-1, 1, 28, 28])
            .apply(&self.conv1)
            .relu()
            .apply(&self.conv2)
            .relu()
            .flatten(1, -1)
            .dropout(self.cfg.dropout, train)
            .apply(&self.fc)
    }

    fn training_step(&mut self, (x, y): Batch, cx: &mut Ctx) -> lit::Result<Tensor> {
        let logits = self.forward_t(&x, cx.training());
        let loss = logits.cross_entropy_for_logits(&y);
        let _batch_acc = self.train_acc.forward(&logits, &y)?; // the step value `train_acc` shows
        cx.log("train_loss", &loss).prog_bar(true);
        cx.log("train_acc", &self.train_acc).prog_bar(true);
        Ok(loss)
    }

    fn validation_step(&mut self, (x, y): Batch, cx: &mut Ctx) -> lit::Result<()> {
        let logits = self.forward_t(&x, false);
        cx.log("val_loss", logits.cross_entropy_for_logits(&y)).prog_bar(true);
        self.val_acc.update(&logits, &y)?;
        self.val_f1.update(&logits, &y)?;
        cx.log("val_acc", &self.val_acc).prog_bar(true);
        cx.log("val_f1", &self.val_f1);
        Ok(())
    }

    fn test_step(&mut self, (x, y): Batch, cx: &mut Ctx) -> lit::Result<()> {
        let logits = self.forward_t(&x, false);
        self.test_acc.update(&logits, &y)?;
        self.test_f1.update(&logits, &y)?;
        cx.log("test_acc", &self.test_acc);
        cx.log("test_f1", &self.test_f1);
        Ok(())
    }

    fn predict_step(&mut self, x: Tensor) -> Tensor {
        self.forward_t(&x, false).argmax(-1, false)
    }

    /// AdamW under a one-cycle schedule over the whole run, stepped every batch: the run's
    /// length (`max_epochs`, `limit_train_batches`, `accumulate_grad_batches`) is known here.
    fn configure_optimizers(&self, cx: &mut Ctx) -> Optimizers {
        let total = cx.trainer().estimated_stepping_batches().unwrap_or(1).max(1);
        Optimizers::from(AdamW::new(self.cfg.lr))
            .scheduler(SchedulerConfig::new(OneCycleLr::new(self.cfg.lr, total)).interval(Interval::Step))
    }
}

/// Where the data is and how it is batched (the `data:` section).
#[hparams]
pub struct DataConfig {
    /// The directory of MNIST's gzipped IDX files.
    #[hparams(default = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into())]
    pub dir: String,
    /// Training batch size.
    #[hparams(default = 64)]
    pub batch_size: usize,
    /// Validation and test batch size.
    #[hparams(default = 500)]
    pub eval_batch_size: usize,
    /// Training images held out for validation.
    #[hparams(default = 5000)]
    pub val_size: usize,
    /// Loader worker threads.
    #[hparams(default = 1)]
    pub num_workers: usize,
    /// Seed of the split and the shuffling.
    #[hparams(default = 42)]
    pub seed: u64,
}

type Images = TensorDataset<(Tensor, Tensor)>;

/// MNIST's training set split into training and validation, and its test set.
pub struct MnistData {
    cfg: DataConfig,
    /// The number of classes, which the model's `num_classes` is linked to.
    pub num_classes: i64,
    train: Option<Subset<Images>>,
    val: Option<Subset<Images>>,
    test: Option<Mnist>,
}

impl FromConfig for MnistData {
    type Config = DataConfig;
    fn from_config(cfg: DataConfig) -> lit::Result<Self> {
        Ok(MnistData { cfg, num_classes: 10, train: None, val: None, test: None })
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "lit=warn".into()))
        .init();
    let cli = LitCli::<Cnn, MnistData>::new().link_on_instantiate(
        "data.num_classes",
        "model.num_classes",
        |dm: &MnistData| dm.num_classes,
    );
    let Some(mut cli) = cli.build(std::env::args_os())? else { return Ok(()) };
    let outcome = cli.run()?;
    // Known once the run has joined its processes (under DDP every process runs this).
    let rank0 = cli.trainer.global_rank() == 0;
    let metrics = match outcome {
        Outcome::Metrics(metrics) => metrics,
        Outcome::Predictions(p) => {
            if rank0 {
                println!("{} batches of predictions", p.len());
            }
            return Ok(());
        }
        Outcome::Fitted if cli.subcommand == Subcommand::Fit => {
            // With `LearningRateFinder` among the callbacks, the range test ran before training.
            if rank0 && let Some(lr) = cli.lr_finder.as_ref().and_then(|f| f.suggestion()) {
                println!("learning rate finder suggested: {lr:.3e}");
            }
            // As Lightning's `trainer.test(ckpt_path="best")`: the best checkpoint by the
            // configured ModelCheckpoint's monitor (the last one without a monitor).
            if rank0 && let Some(best) = cli.trainer.checkpoint_callback().and_then(|c| c.best_model_path()) {
                println!("best checkpoint: {}", best.display());
            }
            let (model, dm) = (&mut cli.model, &mut cli.datamodule);
            cli.trainer.ckpt_path("best").test_datamodule(model, dm)?
        }
        Outcome::Fitted => return Ok(()),
    };
    if rank0 {
        for (k, v) in &metrics[0] {
            println!("{k}: {v:.4}");
        }
        if let Some(dir) = cli.trainer.log_dir() {
            println!("log directory: {}", dir.display());
        }
    }
    Ok(())
}
