//! The bundled MNIST files load, and a small MLP learns from a slice of them through the Trainer.

use lit::data::{DataLoader, Mnist, TensorDataset};
use lit::prelude::*;

use crate::common::repo_root;

#[test]
fn bundled_mnist_has_the_standard_shapes() -> lit::Result<()> {
    let dir = repo_root().join("data/mnist");
    let train = Mnist::train(&dir)?;
    let test = Mnist::test(&dir)?;
    assert_eq!(train.images.size(), [60_000, 784]);
    assert_eq!(train.labels.size(), [60_000]);
    assert_eq!(test.images.size(), [10_000, 784]);
    assert_eq!(train.labels.min().int64_value(&[]), 0);
    assert_eq!(train.labels.max().int64_value(&[]), 9);
    // The first training label of MNIST is a 5, the first test label a 7.
    assert_eq!(train.labels.int64_value(&[0]), 5);
    assert_eq!(test.labels.int64_value(&[0]), 7);
    // Normalised pixels: mean about 0, standard deviation about 1.
    let mean = train.images.mean(Kind::Float).double_value(&[]);
    assert!(mean.abs() < 0.01, "mean {mean}");
    Ok(())
}

struct Mlp {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    /// The dtype of the logits in the last training step.
    step_kind: Option<Kind>,
}

impl Mlp {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 784, 64, Default::default());
        let l2 = nn::linear(vs.root() / "l2", 64, 10, Default::default());
        Mlp { vs, l1, l2, step_kind: None }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }
}

impl LightningModule for Mlp {
    type TrainBatch = (Tensor, Tensor);
    type ValBatch = (Tensor, Tensor);
    type TestBatch = (Tensor, Tensor);
    type PredictBatch = Tensor;
    type Prediction = Tensor;
    const HOOKS: Hooks = Hooks { test_step: true, ..Hooks::TRAINING_ONLY };

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
    fn training_step(&mut self, (x, y): (Tensor, Tensor), _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        let logits = self.forward(&x);
        self.step_kind = Some(logits.kind());
        let loss = logits.cross_entropy_for_logits(&y);
        cx.log("train_loss", &loss).on_epoch(true);
        Ok(Some(loss.into()))
    }
    fn test_step(&mut self, (x, y): (Tensor, Tensor), _: usize, _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        cx.log("test_acc", self.forward(&x).accuracy_for_logits(&y));
        Ok(None)
    }
    fn configure_optimizers(&mut self, _: &mut Ctx) -> Result<Optimizers> {
        Ok(Adam::new(1e-3).into())
    }
}

/// Images and labels.
type Labelled = TensorDataset<(Tensor, Tensor)>;

/// The first 10,000 training and 2,000 test images of the bundled MNIST.
fn slices() -> lit::Result<(Labelled, Labelled)> {
    let dir = repo_root().join("data/mnist");
    let (train, test) = (Mnist::train(&dir)?, Mnist::test(&dir)?);
    Ok((
        TensorDataset::new((train.images.narrow(0, 0, 10_000), train.labels.narrow(0, 0, 10_000)))?,
        TensorDataset::new((test.images.narrow(0, 0, 2_000), test.labels.narrow(0, 0, 2_000)))?,
    ))
}

#[test]
fn an_mlp_learns_mnist_through_the_trainer() -> lit::Result<()> {
    let (train, test) = slices()?;

    seed_everything(1);
    let mut model = Mlp::new();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(2).build()?;
    trainer.fit(&mut model, DataLoader::new(train).batch_size(32).shuffle(true).num_workers(2), ())?;
    assert_eq!(trainer.global_step(), 2 * 313);
    let metrics = trainer.callback_metrics();
    let (step, epoch) = (metrics["train_loss_step"], metrics["train_loss_epoch"]);
    assert!(epoch < 0.5, "epoch-mean training loss {epoch}");
    assert!(step.is_finite());

    let result = trainer.test(&mut model, DataLoader::new(test).batch_size(500))?;
    let acc = result[0]["test_acc"];
    assert!(acc > 0.9, "test accuracy {acc} after two epochs on 10,000 images");
    Ok(())
}

/// Test accuracy after training on a slice of MNIST at `precision`, from the weights `init`.
fn accuracy_at(precision: &str, init: &nn::VarStore) -> lit::Result<(f64, Mlp)> {
    let (train, test) = slices()?;
    let mut model = Mlp::new();
    model.vs.copy(init)?;
    let mut trainer = Trainer::builder()
        .accelerator("cpu")
        .precision(precision)
        .max_epochs(2)
        .enable_progress_bar(false)
        .enable_checkpointing(false)
        .logger(false)
        .build()?;
    trainer.fit(&mut model, DataLoader::new(train).batch_size(64).shuffle(true), ())?;
    let acc = trainer.test(&mut model, DataLoader::new(test).batch_size(500))?[0]["test_acc"];
    Ok((acc, model))
}

#[test]
fn bf16_mixed_trains_mnist_as_well_as_fp32() -> lit::Result<()> {
    // Both start from the same weights: tests running in parallel draw from libtorch's global
    // generator too, so seeding it before each model would not make them equal.
    seed_everything(1);
    let init = Mlp::new();
    let (fp32, model32) = accuracy_at("32-true", &init.vs)?;
    let (bf16, model16) = accuracy_at("bf16-mixed", &init.vs)?;
    // Autocast ran the forward pass in bfloat16; the variables stayed float32.
    assert_eq!(model32.step_kind, Some(Kind::Float));
    assert_eq!(model16.step_kind, Some(Kind::BFloat16));
    assert!(model16.vs.variables().values().all(|v| v.kind() == Kind::Float));
    assert!(fp32 > 0.9, "fp32 accuracy {fp32}");
    assert!((fp32 - bf16).abs() <= 0.005, "bf16-mixed accuracy {bf16} against fp32 {fp32}");
    Ok(())
}
