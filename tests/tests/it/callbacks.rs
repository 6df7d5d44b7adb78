//! `StochasticWeightAveraging`, `BackboneFinetuning` (with `BaseFinetuning`'s helpers) and the
//! progress bar's configuration (`TqdmProgressBar`), each against Lightning's own tests, and SWA
//! and the bar's number format against Lightning itself.

use std::collections::BTreeMap;
use std::path::Path;

use lit::callbacks::{
    BackboneFinetuning, BarValue, BaseFinetuning, Finetuning, ModelCheckpoint, ModuleParams, StochasticWeightAveraging,
    SwaEpochStart, TqdmProgressBar,
};
use lit::data::{DataLoader, TensorDataset};
use lit::optim::{AnnealStrategy, GroupOptions, Interval, LambdaLr, SchedulerConfig, StepLr};
use lit::prelude::*;
use lit::tch::Reduction;

use crate::common::{capture_logs, quiet_trainer, temp_dir};

// ---------------------------------------------------------------------------------------------
// Helpers

fn python() -> String {
    std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch")
}

/// Runs a Python script with `args`; fails the test with its output when it fails.
fn run_python(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut cmd = std::process::Command::new(python());
    cmd.arg("-c").arg(script);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The module's variables by name, copied.
fn snapshot(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
}

fn callback<T: 'static>(trainer: &Trainer) -> &T {
    trainer
        .callbacks()
        .iter()
        .find_map(|c| (&**c as &dyn std::any::Any).downcast_ref::<T>())
        .expect("the callback is among the Trainer's")
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1.0);
    assert!(diff <= tol * scale, "{what}: differ by {diff}\n{a}\n{b}");
}

// ---------------------------------------------------------------------------------------------
// StochasticWeightAveraging

/// Which scheduler `SwaModel` configures.
#[derive(Clone, Copy, PartialEq)]
enum Sched {
    /// `StepLR(step_size=1)` every epoch (Lightning's `SwaTestModel`).
    Epoch,
    /// The same every optimizer step.
    Step,
    /// `LambdaLR(lambda _: 0.1)` (Lightning's `CustomSchedulerModel`).
    Lambda,
    /// Adam over two groups with learning rates 0.1 and 0.2, no scheduler.
    TwoGroups,
}

/// What a module sees at an epoch's start (after the callbacks' hook).
struct EpochStart {
    epoch: usize,
    weights: BTreeMap<String, Tensor>,
    /// Each parameter group's `(lr, initial_lr)`.
    groups: Vec<(f64, f64)>,
}

/// What `SwaModel` sees while it trains.
#[derive(Default)]
struct Record {
    epoch_starts: Vec<EpochStart>,
    backward_calls: usize,
}

/// Lightning's `SwaTestModel`: `Linear(32, 32)`, an optional `BatchNorm1d(32)`, ReLU,
/// `Linear(32, 2)`, named as the `nn.Sequential` `layer` names them, trained by SGD(0.1) on
/// the mean squared distance of its output to ones (`BoringModel`'s loss).
#[lightning_module]
struct SwaModel {
    vs: nn::VarStore,
    first: nn::Linear,
    bn: Option<nn::BatchNorm>,
    last: nn::Linear,
    sched: Sched,
    crash_on_epoch: Option<usize>,
    record: Record,
}

#[lightning_module]
impl SwaModel {
    fn with(batchnorm: bool, sched: Sched) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = vs.root() / "layer";
        let first = nn::linear(&layer / 0, 32, 32, Default::default());
        let bn = batchnorm.then(|| nn::batch_norm1d(&layer / 1, 32, Default::default()));
        let last = nn::linear(&layer / if batchnorm { 3 } else { 2 }, 32, 2, Default::default());
        SwaModel { vs, first, bn, last, sched, crash_on_epoch: None, record: Record::default() }
    }

    /// The activations the batch norm normalises.
    fn hidden(&self, x: &Tensor) -> Tensor {
        self.first.forward(x)
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.hidden(x);
        let h = match &self.bn {
            Some(bn) => bn.forward_t(&h, train),
            None => h,
        };
        self.last.forward(&h.relu())
    }

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> lit::Result<Tensor> {
        if self.crash_on_epoch.is_some_and(|e| cx.current_epoch() >= e) {
            return Err(lit::Error::msg("SWA crash test"));
        }
        let out = self.forward(&x, cx.training());
        Ok(out.mse_loss(&out.ones_like(), Reduction::Mean))
    }

    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let mut optimizer = cx.optimizer(0)?;
        let groups = optimizer.optimizer().param_groups().iter().map(|g| (g.lr, g.initial_lr)).collect();
        let weights = snapshot(&self.vs);
        self.record.epoch_starts.push(EpochStart { epoch: cx.current_epoch(), weights, groups });
        Ok(())
    }

    fn on_before_backward(&mut self, _loss: &Tensor) {
        self.record.backward_calls += 1;
    }

    fn configure_optimizers(&self) -> Optimizers {
        let sgd = Optimizers::from(Sgd::new(0.1));
        match self.sched {
            Sched::Epoch => sgd.scheduler(StepLr::new(1, 0.1)),
            Sched::Step => sgd.scheduler(SchedulerConfig::new(StepLr::new(1, 0.1)).interval(Interval::Step)),
            Sched::Lambda => sgd.scheduler(LambdaLr::new(|_| 0.1)),
            Sched::TwoGroups => Adam::new(0.1)
                .group(|n| n.starts_with("layer.2") || n.starts_with("layer.3"), GroupOptions::new().lr(0.2))
                .into(),
        }
    }
}

/// Ten samples, five batches of two (Lightning's tests limit `RandomDataset(32, 64)` to five
/// batches; see the README for why the loader here has exactly five).
fn swa_data() -> Tensor {
    Tensor::arange(10 * 32, (Kind::Float, Device::Cpu)).view([10, 32]).sin()
}

fn swa_loader() -> DataLoader<TensorDataset<Tensor>> {
    DataLoader::new(TensorDataset::new(swa_data()).unwrap()).batch_size(2)
}

/// A fresh `SwaModel` starting from `init`'s weights (tests running in parallel draw from
/// libtorch's global generator, so each run copies one set of initial weights).
fn swa_model(init: &SwaModel, sched: Sched) -> SwaModel {
    let mut m = SwaModel::with(init.bn.is_some(), sched);
    m.vs.copy(&init.vs).unwrap();
    m
}

/// Lightning's `train_with_swa`: 5 epochs of 5 batches, accumulating 2, SWA from epoch 2.
fn train_with_swa(root: &Path, model: &mut SwaModel) -> lit::Result<Trainer> {
    let swa = StochasticWeightAveraging::new(0.1)?.swa_epoch_start(2)?;
    let mut trainer = quiet_trainer(root).max_epochs(5).accumulate_grad_batches(2).callback(swa).build()?;
    trainer.fit(model, swa_loader(), ())?;
    Ok(trainer)
}

/// `update_bn` computed here: the mean over the batches of each batch's mean and unbiased
/// variance of the batch norm's input.
fn expected_bn_stats(model: &SwaModel) -> (Tensor, Tensor) {
    let x = swa_data();
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let h = lit::tch::no_grad(|| model.hidden(&x.narrow(0, 2 * i, 2))).to_kind(Kind::Double);
        means.push(h.mean_dim(0, false, Kind::Double));
        vars.push(h.var_dim(0, true, false));
    }
    (
        Tensor::stack(&means, 0).mean_dim(0, false, Kind::Double),
        Tensor::stack(&vars, 0).mean_dim(0, false, Kind::Double),
    )
}

/// Ports `test_swa_callback_initial_state`.
#[test]
fn swa_callback_initial_state() -> lit::Result<()> {
    let swa = StochasticWeightAveraging::new(0.01)?
        .swa_epoch_start(0.1)?
        .annealing_epochs(1)
        .annealing_strategy(AnnealStrategy::Linear)
        .avg_fn(|avg, _, _| avg.shallow_clone());
    assert_eq!(swa.swa_lrs(), [0.01]);
    assert_eq!(swa.start(), SwaEpochStart::Fraction(0.1));
    assert_eq!(swa.annealing_epoch_count(), 1);
    assert_eq!(swa.strategy(), AnnealStrategy::Linear);
    assert!(swa.average().is_empty(), "no averaged model before fit");
    assert_eq!(swa.n_averaged(), None);
    Ok(())
}

/// Ports `test_swa_raises`.
#[test]
fn swa_raises() {
    let start =
        |s: SwaEpochStart| StochasticWeightAveraging::new(0.1).unwrap().swa_epoch_start(s).unwrap_err().to_string();
    for bad in [SwaEpochStart::Epoch(0), SwaEpochStart::Fraction(1.5), SwaEpochStart::Epoch(-1)] {
        assert!(start(bad).contains(">0 integer or a float between 0 and 1"), "{}", start(bad));
    }
    let e = StochasticWeightAveraging::new([0.2, -1.0]).unwrap_err().to_string();
    assert!(e.contains("positive float, or a list of positive floats"), "{e}");
    assert!(StochasticWeightAveraging::new(0.0).is_err());
}

/// Ports `test_swa_callback` (with and without a batch norm): from `swa_start` the learning
/// rate follows SWALR, the averaged weights are the mean of the weights at the start of each SWA
/// epoch (computed here independently), the batch-norm epoch runs `training_step` without a
/// backward, and its statistics are `update_bn`'s.
#[test]
fn swa_callback() -> lit::Result<()> {
    for batchnorm in [false, true] {
        let root = temp_dir(&format!("swa-callback-{batchnorm}"));
        let mut model = swa_model(&SwaModel::with(batchnorm, Sched::Epoch), Sched::Epoch);
        let trainer = train_with_swa(&root, &mut model)?;
        let swa: &StochasticWeightAveraging = callback(&trainer);
        let (swa_start, swa_end) = (swa.swa_start().unwrap(), swa.swa_end());
        assert_eq!((swa_start, swa_end), (1, 4));
        // No backward in the batch-norm update epoch.
        assert_eq!(model.record.backward_calls, 5 * 5);
        assert_eq!(trainer.current_epoch(), if batchnorm { 6 } else { 5 });
        assert_eq!(swa.n_averaged(), Some(4), "update_parameters ran once per epoch from swa_start");
        // Stepped once when created and at the end of each SWA epoch.
        assert_eq!(swa.scheduler_step_count(), Some(5));

        // The average: the mean of the weights at the start of epochs 1..=4.
        let starts = &model.record.epoch_starts;
        let averaged: Vec<&BTreeMap<String, Tensor>> = starts[1..5].iter().map(|s| &s.weights).collect();
        for (name, value) in snapshot(&model.vs) {
            if name.contains("running_") {
                continue;
            }
            let mean = Tensor::stack(&averaged.iter().map(|w| w[&name].shallow_clone()).collect::<Vec<_>>(), 0)
                .mean_dim(0, false, Kind::Float);
            assert_close(&value, &mean, 1e-6, &format!("averaged `{name}`"));
            assert!(swa.average()[&name].allclose(&value, 0.0, 0.0, false), "the module holds the average");
        }
        // SWALR: the learning rate at the start of epochs 0..5.
        let lrs: Vec<f64> = starts.iter().map(|s| s.groups[0].0).collect();
        let cos = |t: f64| (1.0 - (std::f64::consts::PI * t).cos()) / 2.0;
        let mut expected = vec![0.1, 0.1 * 0.1];
        for k in 1..=3 {
            let a = cos(k as f64 / 10.0);
            expected.push(0.1 * a + 0.01 * (1.0 - a));
        }
        for (got, want) in lrs.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-15, "learning rates {lrs:?}, SWALR's {expected:?}");
        }
        assert!(starts[1..].iter().all(|s| s.groups[0].1 == 0.1), "initial_lr is the SWA learning rate");
        if batchnorm {
            let (mean, var) = expected_bn_stats(&model);
            let bn = model.bn.as_ref().unwrap();
            assert_close(&bn.running_mean.to_kind(Kind::Double), &mean, 1e-5, "running_mean");
            assert_close(&bn.running_var.to_kind(Kind::Double), &var, 1e-5, "running_var");
            assert_eq!(starts[5].epoch, 5, "the batch-norm epoch");
            for (name, value) in &starts[5].weights {
                if !name.contains("running_") {
                    assert!(value.equal(&snapshot(&model.vs)[name]), "the update epoch changes no weight");
                }
            }
        }
    }
    Ok(())
}

/// The whole of `test_swa_callback`'s run against Lightning's own `StochasticWeightAveraging`
/// (lightning 2.6 in the project's Python environment), from the same initial weights and data:
/// the learning rate at each epoch's start, the final weights and the batch-norm statistics.
#[test]
fn swa_matches_lightning() -> lit::Result<()> {
    const SCRIPT: &str = r#"
import sys, warnings, torch
from torch import nn
from safetensors.torch import load_file, save_file
import lightning.pytorch as pl
from lightning.pytorch.callbacks import StochasticWeightAveraging

inputs, out_path, batchnorm = load_file(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
x = inputs.pop("x")

class SwaTestModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        layers = [nn.Linear(32, 32)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(32))
        layers += [nn.ReLU(), nn.Linear(32, 2)]
        self.layer = nn.Sequential(*layers)
        self.lrs = []

    def training_step(self, batch, batch_idx):
        out = self.layer(batch)
        return nn.functional.mse_loss(out, torch.ones_like(out))

    def on_train_epoch_start(self):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.last_start = {k: v.detach().clone() for k, v in self.layer.named_parameters()}

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

model = SwaTestModel()
missing, unexpected = model.load_state_dict(inputs, strict=False)
assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
trainer = pl.Trainer(max_epochs=5, accumulate_grad_batches=2, accelerator="cpu", logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    callbacks=[StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=2)])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    trainer.fit(model, torch.utils.data.DataLoader(x, batch_size=2))
out = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
out["lrs"] = torch.tensor(model.lrs, dtype=torch.float64)
out.update({f"last_epoch_start.layer.{k}": v for k, v in model.last_start.items()})
save_file(out, out_path)
print(trainer.current_epoch)
"#;
    for batchnorm in [false, true] {
        let root = temp_dir(&format!("swa-lightning-{batchnorm}"));
        let init = SwaModel::with(batchnorm, Sched::Epoch);
        let (input, output) = (root.join("init.safetensors"), root.join("lightning.safetensors"));
        let mut named: Vec<(String, Tensor)> = init.vs.variables().into_iter().collect();
        named.push(("x".into(), swa_data()));
        Tensor::write_safetensors(&named, &input)?;

        let mut model = swa_model(&init, Sched::Epoch);
        let trainer = train_with_swa(&root, &mut model)?;
        let epochs = run_python(SCRIPT, &[&input, &output, &if batchnorm { "1" } else { "0" }]);
        assert_eq!(epochs.trim(), trainer.current_epoch().to_string(), "epochs run");

        let lightning: BTreeMap<String, Tensor> = Tensor::read_safetensors(&output)?.into_iter().collect();
        let lrs: Vec<f64> = model.record.epoch_starts.iter().map(|s| s.groups[0].0).collect();
        let want = Vec::<f64>::try_from(&lightning["lrs"])?;
        assert_eq!(lrs.len(), want.len(), "epochs run: {lrs:?} and Lightning's {want:?}");
        for (a, b) in lrs.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-15 * b.abs(), "learning rates {lrs:?}, Lightning's {want:?}");
        }
        for (name, value) in snapshot(&model.vs) {
            // Lightning's batch-norm epoch ends with one optimizer step on the gradients left
            // from the last training step (it skips `zero_grad` with the backward), which moves
            // its weights off the average; lit keeps the average, the weights that epoch started
            // with in both. The statistics are computed before that step.
            let theirs = match batchnorm && !name.contains("running_") {
                true => &lightning[&format!("last_epoch_start.{name}")],
                false => &lightning[&name],
            };
            // lit's SGD steps in libtorch's fused kernel, Lightning's in torch's for-each one.
            assert_close(&value, theirs, 1e-5, &format!("`{name}` after SWA"));
        }
    }
    Ok(())
}

/// Ports `test_swa_callback_scheduler_step` and `test_swa_warns`: a scheduler stepping every
/// optimizer step is replaced by SWALR, with a warning and the swap named.
#[test]
fn swa_warns_and_replaces_a_step_scheduler() -> lit::Result<()> {
    let root = temp_dir("swa-step-scheduler");
    let mut model = swa_model(&SwaModel::with(true, Sched::Step), Sched::Step);
    let (trainer, logs) = capture_logs(|| train_with_swa(&root, &mut model));
    let trainer = trainer?;
    assert!(logs.contains("SWA is currently only supported every epoch"), "{logs}");
    assert!(logs.contains("Swapping scheduler `StepLr` for `SwaLr`"), "{logs}");
    let swa: &StochasticWeightAveraging = callback(&trainer);
    assert_eq!(swa.n_averaged(), Some(4));
    assert_eq!(model.record.backward_calls, 25);
    // Three optimizer steps an epoch in epoch 0 (StepLR every step), then SWALR every epoch.
    let lrs: Vec<f64> = model.record.epoch_starts.iter().map(|s| s.groups[0].0).collect();
    assert!((lrs[1] - 1e-4).abs() < 1e-18, "{lrs:?}");
    assert!(lrs[2] > lrs[1] && lrs[3] > lrs[2], "annealing towards the SWA learning rate: {lrs:?}");
    Ok(())
}

/// Ports `test_swa_multiple_lrs`: one SWA learning rate per parameter group; the groups keep
/// their learning rates at the first SWA epoch's start and take the SWA ones as `initial_lr`.
#[test]
fn swa_multiple_lrs() -> lit::Result<()> {
    let root = temp_dir("swa-multiple-lrs");
    let mut model = swa_model(&SwaModel::with(false, Sched::TwoGroups), Sched::TwoGroups);
    let swa = StochasticWeightAveraging::new([0.123, 0.321])?;
    let mut trainer = quiet_trainer(&root).fast_dev_run(1).callback(swa).build()?;
    trainer.fit(&mut model, swa_loader(), ())?;
    let start = &model.record.epoch_starts[0];
    assert_eq!(start.epoch, 0);
    assert_eq!(start.groups, [(0.1, 0.123), (0.2, 0.321)]);
    Ok(())
}

/// Ports `test_swa_resume_training_from_checkpoint` and its `_custom_scheduler` variant (a
/// crash before SWA starts and after): resumed from the last checkpoint with a new callback, the
/// run ends with exactly the weights, statistics and `n_averaged` of an uninterrupted one.
#[test]
fn swa_resume_training_from_checkpoint() -> lit::Result<()> {
    for sched in [Sched::Epoch, Sched::Lambda] {
        let init = SwaModel::with(true, sched);
        let swa =
            || -> lit::Result<StochasticWeightAveraging> { StochasticWeightAveraging::new(0.1)?.swa_epoch_start(3) };
        let trainer = |root: &Path| -> lit::Result<Trainer> {
            Trainer::builder()
                .accelerator("cpu")
                .enable_progress_bar(false)
                .enable_model_summary(false)
                .logger(false)
                .default_root_dir(root)
                .max_epochs(5)
                .accumulate_grad_batches(2)
                .callback(swa()?)
                .callback(ModelCheckpoint::new().dirpath(root.join("checkpoints")))
                .build()
        };
        let straight_root = temp_dir("swa-resume-straight");
        let mut straight = swa_model(&init, sched);
        trainer(&straight_root)?.fit(&mut straight, swa_loader(), ())?;

        for crash_on_epoch in [1, 3] {
            let root = temp_dir(&format!("swa-resume-{crash_on_epoch}"));
            let mut crashing = swa_model(&init, sched);
            crashing.crash_on_epoch = Some(crash_on_epoch);
            let e = trainer(&root)?.fit(&mut crashing, swa_loader(), ()).unwrap_err().to_string();
            assert!(e.contains("SWA crash test"), "{e}");
            let files: Vec<_> =
                std::fs::read_dir(root.join("checkpoints")).unwrap().map(|f| f.unwrap().path()).collect();
            assert_eq!(files.len(), 1, "{files:?}");

            let mut resumed = swa_model(&SwaModel::with(true, sched), sched);
            let mut t = trainer(&root)?;
            t.fit_from_checkpoint(&mut resumed, swa_loader(), (), &files[0])?;
            let swa: &StochasticWeightAveraging = callback(&t);
            assert_eq!(swa.n_averaged(), Some(3), "epochs 2, 3 and 4 averaged");
            let first_epoch = resumed.record.epoch_starts[0].epoch;
            assert_eq!(first_epoch, crash_on_epoch);
            assert_eq!(resumed.record.backward_calls, (5 - first_epoch) * 5);
            let (a, b) = (snapshot(&straight.vs), snapshot(&resumed.vs));
            for (name, value) in &a {
                assert!(value.equal(&b[name]), "`{name}` differs after resuming from epoch {crash_on_epoch}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// BackboneFinetuning and BaseFinetuning

/// 64 samples of 32 features, in batches of 2 (Lightning's `RandomDataset(32, 64)`).
fn finetuning_loader() -> DataLoader<TensorDataset<Tensor>> {
    let x = Tensor::arange(64 * 32, (Kind::Float, Device::Cpu)).view([64, 32]).cos();
    DataLoader::new(TensorDataset::new(x).unwrap()).batch_size(2)
}

fn no_bias() -> nn::LinearConfig {
    nn::LinearConfig { bias: false, ..Default::default() }
}

/// Lightning's `FinetuningBoringModel` of `test_finetuning_callback` (a backbone of
/// `Linear(32, 32, bias=False)`, `BatchNorm1d(32)`, ReLU, and a `Linear(32, 2)` head trained by
/// SGD(0.1) with `StepLR(gamma=0.7)`), or with `simple` `BackboneBoringModel` (a
/// `Linear(32, 32)` backbone under a `Linear(32, 2)` head, SGD over every trainable parameter
/// with `StepLR(step_size=1)`).
#[lightning_module]
struct BackboneModel {
    vs: nn::VarStore,
    backbone: nn::Linear,
    bn: Option<nn::BatchNorm>,
    layer: nn::Linear,
    starts: Vec<EpochStart>,
}

#[lightning_module]
impl BackboneModel {
    fn with(simple: bool) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let (backbone, bn) = match simple {
            true => (nn::linear(&root / "backbone", 32, 32, Default::default()), None),
            false => (
                nn::linear(&root / "backbone" / 0, 32, 32, no_bias()),
                Some(nn::batch_norm1d(&root / "backbone" / 1, 32, Default::default())),
            ),
        };
        let layer = nn::linear(&root / "layer", 32, 2, Default::default());
        BackboneModel { vs, backbone, bn, layer, starts: Vec::new() }
    }

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> Tensor {
        let h = self.backbone.forward(&x);
        let h = match &self.bn {
            Some(bn) => bn.forward_t(&h, cx.training()).relu(),
            None => h,
        };
        let out = self.layer.forward(&h);
        out.mse_loss(&out.ones_like(), Reduction::Mean)
    }

    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let groups = cx.optimizer(0)?.optimizer().param_groups().iter().map(|g| (g.lr, g.initial_lr)).collect();
        self.starts.push(EpochStart { epoch: cx.current_epoch(), weights: snapshot(&self.vs), groups });
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        match self.bn {
            Some(_) => {
                Optimizers::from(Sgd::new(0.1).params(|n| n.starts_with("layer."))).scheduler(StepLr::new(1, 0.7))
            }
            None => Optimizers::from(Sgd::new(0.1)).scheduler(StepLr::new(1, 0.1)),
        }
    }
}

/// Ports `test_finetuning_callback`: the backbone is frozen until epoch 3, then joins the
/// optimizer at a tenth of the head's learning rate, doubling each epoch until it meets the
/// head's (from epoch 6 on they are equal).
#[test]
fn finetuning_callback() -> lit::Result<()> {
    let root = temp_dir("finetuning-callback");
    let mut model = BackboneModel::with(false);
    let mut trainer = quiet_trainer(&root)
        .max_epochs(8)
        .limit_train_batches(4)
        .callback(BackboneFinetuning::new().unfreeze_backbone_at_epoch(3))
        .build()?;
    trainer.fit(&mut model, finetuning_loader(), ())?;
    let finetuning: &BackboneFinetuning = callback(&trainer);
    let mut backbone_lr = 0.1 * 0.7f64.powi(3) * 0.1;
    for start in &model.starts {
        let current = 0.1 * 0.7f64.powi(start.epoch as i32);
        assert!((start.groups[0].0 - current).abs() < 1e-15, "the head's learning rate, epoch {}", start.epoch);
        if start.epoch < 3 {
            assert_eq!(start.groups.len(), 1, "the backbone is not in the optimizer before epoch 3");
            continue;
        }
        if start.epoch > 3 {
            backbone_lr = (2.0 * backbone_lr).min(current);
        }
        let (head, backbone) = (start.groups[0].0, start.groups[1].0);
        assert!(
            (backbone - backbone_lr).abs() < 1e-15,
            "epoch {}: backbone lr {backbone}, want {backbone_lr}",
            start.epoch
        );
        match start.epoch < 6 {
            true => assert!(backbone <= head),
            false => assert_eq!(backbone, head),
        }
    }
    assert_eq!(finetuning.previous_backbone_lr(), Some(model.starts[7].groups[1].0));
    // The backbone's weights change only once it is in the optimizer.
    let w = |e: usize| model.starts[e].weights["backbone.0.weight"].shallow_clone();
    assert!(w(0).equal(&w(3)), "frozen until epoch 3");
    assert!(!w(3).equal(&w(4)), "trained from epoch 3");
    Ok(())
}

/// Lightning's `BackboneFinetuning.on_fit_start` check: a module without a backbone is an error
/// naming the path.
#[test]
fn finetuning_needs_a_backbone() -> lit::Result<()> {
    let root = temp_dir("finetuning-no-backbone");
    let mut model = BackboneModel::with(true);
    let mut trainer =
        quiet_trainer(&root).max_epochs(1).callback(BackboneFinetuning::new().backbone("encoder")).build()?;
    let e = trainer.fit(&mut model, finetuning_loader(), ()).unwrap_err().to_string();
    assert!(e.contains("no variables under `encoder`"), "{e}");
    Ok(())
}

/// `Linear(32, 32)`, `BatchNorm1d(32)`, ReLU, `Linear(32, 2)` as `backbone.0`, `backbone.1`,
/// `backbone.3` (the `nn.Sequential` of `test_freeze_unfreeze_function`).
fn sequential_backbone() -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = vs.root() / "backbone";
    let _ = nn::linear(&backbone / 0, 32, 32, Default::default());
    let _ = nn::batch_norm1d(&backbone / 1, 32, Default::default());
    let _ = nn::linear(&backbone / 3, 32, 2, Default::default());
    vs
}

/// Ports `test_freeze_unfreeze_function` (less `track_running_stats`, which tch's `BatchNorm`
/// does not have).
#[test]
fn freeze_unfreeze_function() -> lit::Result<()> {
    let vs = sequential_backbone();
    let module = ModuleParams::new(&vs);
    let trainable = |name: &str| module.parameter(name).unwrap().requires_grad();
    module.freeze(&[""], true)?;
    assert!(!trainable("backbone.0.weight"));
    assert!(trainable("backbone.1.weight"));
    assert!(!trainable("backbone.3.weight"));

    module.freeze(&[""], false)?;
    assert!(!trainable("backbone.0.weight"));
    assert!(!trainable("backbone.1.weight"));
    assert!(!trainable("backbone.3.weight"));

    module.make_trainable(&[""])?;
    assert!(trainable("backbone.0.weight"));
    assert!(trainable("backbone.1.weight"));
    assert!(trainable("backbone.3.weight"));

    module.freeze(&["backbone.0"], false)?;
    assert!(!trainable("backbone.0.weight"));

    module.freeze(&["backbone.1", "backbone.3"], true)?;
    assert!(trainable("backbone.1.weight"));
    assert!(!trainable("backbone.3.weight"));

    let e = module.freeze(&["backbon"], true).unwrap_err().to_string();
    assert!(e.contains("no variable under `backbon`") && e.contains("backbone"), "{e}");
    Ok(())
}

/// Ports `test_unfreeze_and_add_param_group_function`.
#[test]
fn unfreeze_and_add_param_group_function() -> lit::Result<()> {
    use lit::optim::OptimizerConfig;
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = vs.root() / "backbone";
    for i in 0..5 {
        let _ = nn::linear(&backbone / i, 32, 32, no_bias());
    }
    let _ = nn::batch_norm1d(&backbone / 5, 32, Default::default());
    let module = ModuleParams::new(&vs);
    let mut optimizer = Sgd::new(0.01).params(|n| n.starts_with("backbone.0.")).build(&vs)?;

    let (added, logs) =
        capture_logs(|| module.unfreeze_and_add_param_group(&["backbone.0"], &mut *optimizer, None, 10.0, true));
    added?;
    assert!(logs.contains("The provided params to be frozen already exist"), "{logs}");
    assert_eq!(optimizer.param_groups().len(), 1);
    assert_eq!(optimizer.param_groups()[0].lr, 0.01);

    let _ = module.parameter("backbone.1.weight").unwrap().set_requires_grad(false);
    module.unfreeze_and_add_param_group(&["backbone.1"], &mut *optimizer, None, 10.0, true)?;
    assert_eq!(optimizer.param_groups().len(), 2);
    assert_eq!(optimizer.param_groups()[1].lr, 0.001);
    assert_eq!(optimizer.param_groups()[1].names().collect::<Vec<_>>(), ["backbone.1.weight"]);
    assert!(module.parameter("backbone.1.weight").unwrap().requires_grad());

    let (added, logs) =
        capture_logs(|| module.unfreeze_and_add_param_group(&[""], &mut *optimizer, Some(100.0), 10.0, false));
    added?;
    assert!(logs.contains("The provided params to be frozen already exist"), "{logs}");
    assert_eq!(optimizer.param_groups().len(), 3);
    assert_eq!(optimizer.param_groups()[2].lr, 100.0);
    let names: Vec<&str> = optimizer.param_groups()[2].names().collect();
    assert_eq!(names, ["backbone.2.weight", "backbone.3.weight", "backbone.4.weight"]);
    assert_eq!(optimizer.param_groups()[0].names().collect::<Vec<_>>(), ["backbone.0.weight"]);
    Ok(())
}

/// Ports the parameter count of `test_complex_nested_model`: a parent module with a parameter of
/// its own (`parent_param`) beside nested layers; freezing the encoder with `train_bn` freezes
/// the parent's parameter and leaves the batch norms trainable.
#[test]
fn complex_nested_model() -> lit::Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = vs.root() / "encoder";
    let block = |p: nn::Path<'_>, with_parent: bool| {
        let conv = if with_parent { &p / "module_dict" / "conv" } else { &p / "conv" };
        let _ = nn::conv2d(conv, 3, 3, 3, Default::default());
        if with_parent {
            let _ = p.zeros("parent_param", &[1]);
        }
        let _ = nn::batch_norm2d(&p / "bn", 3, Default::default());
    };
    block(&encoder / 0, true);
    block(&encoder / 1, false);
    block(vs.root() / "decoder", false);
    let module = ModuleParams::new(&vs);
    module.freeze(&["encoder"], true)?;
    assert!(!module.parameter("encoder.0.module_dict.conv.weight").unwrap().requires_grad());
    assert!(!module.parameter("encoder.0.parent_param").unwrap().requires_grad());
    assert!(module.parameter("encoder.0.bn.weight").unwrap().requires_grad());
    module.make_trainable(&[""])?;
    assert_eq!(module.filter_params(&["encoder"], true, true)?.len(), 9);
    assert_eq!(module.batch_norm_layers("").len(), 3);
    Ok(())
}

/// `n` linear layers `layer.0`, `layer.1`, … (`biases[i]`: whether layer i has a bias), the last
/// one `32 → 2`, trained on `BoringModel`'s loss by SGD(0.1) over every trainable parameter.
#[lightning_module]
struct LayersModel {
    vs: nn::VarStore,
    layers: Vec<nn::Linear>,
    starts: Vec<EpochStart>,
}

#[lightning_module]
impl LayersModel {
    fn with(biases: &[bool]) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layers = biases
            .iter()
            .enumerate()
            .map(|(i, &bias)| {
                let out = if i + 1 == biases.len() { 2 } else { 32 };
                nn::linear(vs.root() / "layer" / i, 32, out, nn::LinearConfig { bias, ..Default::default() })
            })
            .collect();
        LayersModel { vs, layers, starts: Vec::new() }
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        let out = self.layers.iter().fold(x, |h, l| l.forward(&h));
        out.mse_loss(&out.ones_like(), Reduction::Mean)
    }

    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let groups = cx.optimizer(0)?.optimizer().param_groups().iter().map(|g| (g.lr, g.initial_lr)).collect();
        self.starts.push(EpochStart { epoch: cx.current_epoch(), weights: snapshot(&self.vs), groups });
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
}

/// Lightning's `OnEpochLayerFinetuning`: layer `epoch + 1` joins the optimizer at each epoch's
/// start.
struct OnEpochLayerFinetuning;

impl BaseFinetuning for OnEpochLayerFinetuning {
    fn freeze_before_training(&mut self, module: &ModuleParams) -> lit::Result<()> {
        // Lightning freezes all of `layer` and still gives `layer[0]` to SGD (torch.optim takes
        // frozen parameters); lit's optimizers take the trainable ones, so `layer.0` stays so.
        module.freeze(&["layer.1", "layer.2", "layer.3", "layer.4", "layer.5"], true)
    }
    fn finetune_function(
        &mut self,
        module: &ModuleParams,
        epoch: usize,
        optimizer: &mut dyn Optimizer,
    ) -> lit::Result<()> {
        module.unfreeze_and_add_param_group(&[&format!("layer.{}", epoch + 1)], optimizer, None, 10.0, true)
    }
}

/// Ports `test_base_finetuning_internal_optimizer_metadata`: the groups added each epoch are
/// recorded with their parameters' names; resumed for more epochs than there are layers, the
/// schedule fails on the missing `layer.6`.
#[test]
fn base_finetuning_internal_optimizer_metadata() -> lit::Result<()> {
    let root = temp_dir("finetuning-metadata");
    let biases = [false, true, false, true, false, true];
    let mut model = LayersModel::with(&biases);
    let mut trainer = quiet_trainer(&root)
        .max_epochs(5)
        .limit_train_batches(1)
        .callback(Finetuning::new(OnEpochLayerFinetuning))
        .callback(ModelCheckpoint::new().dirpath(&root).save_last(true))
        .build()?;
    trainer.fit(&mut model, finetuning_loader(), ())?;
    let finetuning: &Finetuning = callback(&trainer);
    assert!(finetuning.schedule::<OnEpochLayerFinetuning>().is_some());
    let groups = &finetuning.internal_optimizer_metadata()[&0];
    assert_eq!(groups.len(), 6);
    let names: Vec<Vec<&str>> = groups.iter().map(|g| g.params.iter().map(String::as_str).collect()).collect();
    // In the order the module created them: tch's `nn::linear` creates the bias first.
    assert_eq!(
        names,
        [
            vec!["layer.0.weight"],
            vec!["layer.1.bias", "layer.1.weight"],
            vec!["layer.2.weight"],
            vec!["layer.3.bias", "layer.3.weight"],
            vec!["layer.4.weight"],
            vec!["layer.5.bias", "layer.5.weight"],
        ]
    );
    let last = trainer.checkpoint_callback().unwrap().last_model_path().unwrap().to_path_buf();
    let mut model = LayersModel::with(&biases);
    let mut trainer = quiet_trainer(&root).max_epochs(10).callback(Finetuning::new(OnEpochLayerFinetuning)).build()?;
    let e = trainer.fit_from_checkpoint(&mut model, finetuning_loader(), (), &last).unwrap_err().to_string();
    assert!(e.contains("no variable under `layer.6`"), "{e}");
    Ok(())
}

/// Lightning's `TestCallbacksRestoreCallback`: layers 0 to 2 frozen, layer `epoch - 1` joins
/// the optimizer from epoch 1 on.
struct RestoreFinetuning;

impl BaseFinetuning for RestoreFinetuning {
    fn freeze_before_training(&mut self, module: &ModuleParams) -> lit::Result<()> {
        module.freeze(&["layer.0", "layer.1", "layer.2"], true)
    }
    fn finetune_function(
        &mut self,
        module: &ModuleParams,
        epoch: usize,
        optimizer: &mut dyn Optimizer,
    ) -> lit::Result<()> {
        if epoch >= 1 {
            module.unfreeze_and_add_param_group(&[&format!("layer.{}", epoch - 1)], optimizer, None, 10.0, true)?;
        }
        Ok(())
    }
}

/// Ports `test_callbacks_restore`: the recorded groups, and a run resumed from the last
/// checkpoint with its groups put back before the optimizer's state. The resumed run ends with
/// exactly an uninterrupted run's weights, its unfrozen layers still training (where Lightning
/// leaves them frozen after a resume, Lightning-AI/pytorch-lightning#21901).
#[test]
fn callbacks_restore() -> lit::Result<()> {
    let biases = [true; 4];
    let init = LayersModel::with(&biases);
    let fresh = || {
        let mut m = LayersModel::with(&biases);
        m.vs.copy(&init.vs).unwrap();
        m
    };
    let root = temp_dir("finetuning-restore");
    let trainer = |epochs: usize| {
        quiet_trainer(&root)
            .max_epochs(epochs)
            .limit_train_batches(1)
            .callback(Finetuning::new(RestoreFinetuning))
            .callback(ModelCheckpoint::new().dirpath(&root).save_last(true))
            .build()
    };
    let mut model = fresh();
    let mut first = trainer(2)?;
    first.fit(&mut model, finetuning_loader(), ())?;
    let groups = &callback::<Finetuning>(&first).internal_optimizer_metadata()[&0];
    assert_eq!(groups.len(), 2, "the original group and one added");
    let record = |lr: f64, params: &[&str]| lit::callbacks::GroupRecord {
        lr,
        initial_lr: lr,
        weight_decay: 0.0,
        params: params.iter().map(|p| p.to_string()).collect(),
    };
    // (tch's `nn::linear` creates the bias before the weight.)
    assert_eq!(groups[0], record(0.1, &["layer.3.bias", "layer.3.weight"]));
    assert_eq!(groups[1], record(0.01, &["layer.0.bias", "layer.0.weight"]));

    let last = first.checkpoint_callback().unwrap().last_model_path().unwrap().to_path_buf();
    let mut resumed = fresh();
    trainer(3)?.fit_from_checkpoint(&mut resumed, finetuning_loader(), (), &last)?;
    let mut straight = fresh();
    let straight_root = temp_dir("finetuning-restore-straight");
    quiet_trainer(&straight_root)
        .max_epochs(3)
        .limit_train_batches(1)
        .callback(Finetuning::new(RestoreFinetuning))
        .build()?
        .fit(&mut straight, finetuning_loader(), ())?;
    let start = &resumed.starts[0];
    assert_eq!((start.epoch, start.groups.len()), (2, 3), "two groups restored, the third added at epoch 2");
    assert!(
        !start.weights["layer.0.weight"].equal(&snapshot(&resumed.vs)["layer.0.weight"]),
        "layer.0, unfrozen before the checkpoint, trains after the resume"
    );
    let (a, b) = (snapshot(&straight.vs), snapshot(&resumed.vs));
    for (name, value) in &a {
        assert!(value.equal(&b[name]), "`{name}` differs from the uninterrupted run's");
    }
    Ok(())
}

/// Ports `test_callbacks_restore_backbone`: `BackboneFinetuning` resumed after its unfreeze
/// epoch continues the backbone's schedule from the checkpoint.
#[test]
fn callbacks_restore_backbone() -> lit::Result<()> {
    let root = temp_dir("finetuning-restore-backbone");
    let init = BackboneModel::with(true);
    let fresh = || {
        let mut m = BackboneModel::with(true);
        m.vs.copy(&init.vs).unwrap();
        m
    };
    let trainer = |epochs: usize| {
        quiet_trainer(&root)
            .max_epochs(epochs)
            .limit_train_batches(1)
            .callback(ModelCheckpoint::new().dirpath(&root).save_last(true))
            .callback(BackboneFinetuning::new().unfreeze_backbone_at_epoch(1))
            .build()
    };
    let mut first = trainer(2)?;
    first.fit(&mut fresh(), finetuning_loader(), ())?;
    let last = first.checkpoint_callback().unwrap().last_model_path().unwrap().to_path_buf();
    let mut resumed = fresh();
    let mut second = trainer(3)?;
    second.fit_from_checkpoint(&mut resumed, finetuning_loader(), (), &last)?;
    let mut straight = fresh();
    let mut third = trainer(3)?;
    third.fit(&mut straight, finetuning_loader(), ())?;
    let (a, b) = (callback::<BackboneFinetuning>(&second), callback::<BackboneFinetuning>(&third));
    assert_eq!(a.previous_backbone_lr(), b.previous_backbone_lr());
    // Epoch 2: twice epoch 1's 0.01 * 0.1, aligned to the head's 0.001.
    let head = resumed.starts.last().unwrap().groups[0].0;
    assert!((head - 0.001).abs() < 1e-15);
    assert_eq!(a.previous_backbone_lr(), Some(head));
    for (name, value) in &snapshot(&straight.vs) {
        assert!(value.equal(&snapshot(&resumed.vs)[name]), "`{name}` differs from the uninterrupted run's");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TqdmProgressBar

/// Ports `test_tqdm_format_num`, and checks the formatting against Lightning's own
/// `Tqdm.format_num` on numbers of every magnitude.
#[test]
fn tqdm_format_num() {
    let cases: [(BarValue, &str); 8] = [
        (1.into(), "1"),
        (1.0.into(), "1.000"),
        (0.1.into(), "0.100"),
        (1e-3.into(), "0.001"),
        (1e-5.into(), "1e-5"),
        ("1.0".into(), "1.000"),
        ("10000".into(), "10000"),
        ("abc".into(), "abc"),
    ];
    for (value, expected) in cases {
        assert_eq!(value.format(), expected, "{value:?}");
    }

    let mut floats =
        vec![0.0, -0.0, 123.456, 12345.678, -0.5, 0.123456, 1e16, 2.5e-7, 99999.0, 0.00012345, 7.0, f64::NAN];
    floats.extend([f64::INFINITY, 1.0 / 3.0, 2.0f64.sqrt() * 1e5, 9.9995, 0.0009995, 1e100, -123456789.0]);
    let ints = [0i64, 7, -3, 12345, 123456789];
    let texts = ["1.0", "abc", "12", "x1.5", "inf", "1e3"];
    let mut values: Vec<BarValue> = floats.iter().map(|&f| BarValue::Float(f)).collect();
    values.extend(ints.iter().map(|&i| BarValue::Int(i)));
    values.extend(texts.iter().map(|&t| BarValue::Text(t.into())));
    let literal = |v: &BarValue| match v {
        BarValue::Float(f) if f.is_nan() => "float('nan')".to_string(),
        BarValue::Float(f) if f.is_infinite() => "float('inf')".to_string(),
        BarValue::Float(f) => format!("float.fromhex('{}')", hex_float(*f)),
        BarValue::Int(i) => i.to_string(),
        BarValue::Text(t) => format!("{t:?}"),
    };
    let script = format!(
        "from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm\nfor v in [{}]:\n    print(Tqdm.format_num(v))",
        values.iter().map(literal).collect::<Vec<_>>().join(", ")
    );
    let lightning = run_python(&script, &[]);
    let ours: Vec<String> = values.iter().map(BarValue::format).collect();
    assert_eq!(ours, lightning.lines().collect::<Vec<_>>(), "values {values:?}");
}

/// `f` as Python's `float.hex` reads it.
fn hex_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0x0p+0".into() } else { "0x0p+0".into() };
    }
    let bits = f.to_bits();
    let sign = if bits >> 63 == 1 { "-" } else { "" };
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = bits & ((1 << 52) - 1);
    format!("{sign}0x1.{mantissa:013x}p{exp:+}")
}

/// Ports `test_tqdm_progress_bar_misconfiguration`.
#[test]
fn tqdm_progress_bar_misconfiguration() {
    let e = Trainer::builder()
        .callback(TqdmProgressBar::new())
        .callback(TqdmProgressBar::new())
        .build()
        .err()
        .expect("two progress bars")
        .to_string();
    assert!(e.contains("several progress bars") && e.contains("only one progress bar is supported"), "{e}");
    let e = Trainer::builder().callback(TqdmProgressBar::new()).enable_progress_bar(false).build().err().unwrap();
    assert!(e.to_string().contains("`enable_progress_bar`") && e.to_string().contains("TqdmProgressBar"), "{e}");
}

/// Ports `test_tqdm_progress_bar_on`, `test_tqdm_progress_bar_off` and
/// `test_tqdm_progress_bar_default_value`.
#[test]
fn tqdm_progress_bar_on_off_and_default() -> lit::Result<()> {
    let trainer = Trainer::builder().build()?;
    let bar = trainer.progress_bar_callback().expect("the default bar");
    assert_eq!(bar.get_refresh_rate(), 1);
    assert!(!bar.get_leave() && bar.get_process_position() == 0);
    let bars = trainer.callbacks().iter().filter(|c| (&***c as &dyn std::any::Any).is::<TqdmProgressBar>()).count();
    assert_eq!(bars, 1);

    let trainer = Trainer::builder().callback(TqdmProgressBar::new().refresh_rate(0)).build()?;
    let bar = trainer.progress_bar_callback().expect("set, though it will not print");
    assert_eq!(bar.get_refresh_rate(), 0);
    assert!(!bar.is_enabled());

    let trainer = Trainer::builder().enable_progress_bar(false).build()?;
    assert!(trainer.progress_bar_callback().is_none());
    Ok(())
}

/// Run by `tqdm_progress_bar_value_on_colab_and_env` in a process of its own (it sets
/// environment variables).
#[test]
#[ignore = "run in its own process by tqdm_progress_bar_value_on_colab_and_env"]
fn tqdm_refresh_rate_environment() -> lit::Result<()> {
    // SAFETY: this test runs alone in its process (`--test-threads=1`), so no other thread
    // reads the environment while it is changed.
    unsafe { std::env::set_var("COLAB_GPU", "1") };
    assert_eq!(Trainer::builder().build()?.progress_bar_callback().unwrap().get_refresh_rate(), 20);
    let trainer = Trainer::builder().callback(TqdmProgressBar::new()).build()?;
    assert_eq!(trainer.progress_bar_callback().unwrap().get_refresh_rate(), 20);
    let trainer = Trainer::builder().callback(TqdmProgressBar::new().refresh_rate(19)).build()?;
    assert_eq!(trainer.progress_bar_callback().unwrap().get_refresh_rate(), 19);
    // SAFETY: as above.
    unsafe { std::env::remove_var("COLAB_GPU") };
    for (refresh_rate, env_value, expected) in [(0, 1, 1), (1, 0, 1), (1, 1, 1), (2, 1, 2), (1, 2, 2)] {
        // SAFETY: as above.
        unsafe { std::env::set_var("TQDM_MINITERS", env_value.to_string()) };
        assert_eq!(TqdmProgressBar::new().refresh_rate(refresh_rate).get_refresh_rate(), expected);
    }
    Ok(())
}

/// Ports `test_tqdm_progress_bar_value_on_colab` and
/// `test_tqdm_progress_bar_refresh_rate_via_env_variable`.
#[test]
fn tqdm_progress_bar_value_on_colab_and_env() {
    crate::common::run_in_own_process("callbacks::tqdm_refresh_rate_environment");
}

/// A module logging `a`, `b` and `c` to the progress bar (Lightning's
/// `test_tensor_to_float_conversion`), with validation and test steps.
#[lightning_module]
struct BarModel {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl BarModel {
    fn with() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().ones("w", &[3]);
        BarModel { vs, w }
    }

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> Tensor {
        cx.log("a", Tensor::from(0.123f32)).prog_bar(true).on_epoch(false);
        cx.log("b", Tensor::from_slice(&[1i64]).sum(Kind::Float)).prog_bar(true).on_epoch(false);
        cx.log("c", 2).prog_bar(true).on_epoch(false);
        (&x * &self.w).sum(Kind::Float).square()
    }

    fn validation_step(&mut self, x: Tensor) {
        let _ = x;
    }

    fn test_step(&mut self, x: Tensor) {
        let _ = x;
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

fn bar_batches(n: usize) -> lit::data::Batches<Tensor> {
    lit::data::Batches::new((0..n).map(|i| Tensor::full([3], i as f64 / 10.0, (Kind::Float, Device::Cpu))).collect())
}

/// Writes a marker line between the cases of `tqdm_lines`, to stderr itself (as the bar does;
/// `eprintln!` would be captured by the test harness).
fn case(name: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "CASE {name}");
}

/// The progress lines of several runs, off a terminal (stderr is a pipe here); run by the tests
/// below in a process of their own, which then read its stderr.
#[test]
#[ignore = "run in its own process by the progress-bar tests"]
fn tqdm_lines() -> lit::Result<()> {
    let root = temp_dir("tqdm-lines");
    let quiet = || {
        Trainer::builder()
            .accelerator("cpu")
            .default_root_dir(&root)
            .enable_model_summary(false)
            .enable_checkpointing(false)
            .logger(false)
            .num_sanity_val_steps(0)
            .max_epochs(1)
    };
    for (train, val, rate) in [(2, 3, 1), (0, 0, 3), (1, 0, 3), (1, 1, 3), (5, 0, 3), (5, 2, 3), (5, 2, 6)] {
        case(&format!("train {train} {val} {rate}"));
        let bar = TqdmProgressBar::new().refresh_rate(rate);
        let mut trainer = quiet().callback(bar).build()?;
        trainer.fit(&mut BarModel::with(), bar_batches(train), (val > 0).then(|| bar_batches(val)))?;
    }
    for (test, rate) in [(1, 3), (3, 1), (5, 3)] {
        case(&format!("test {test} {rate}"));
        let mut trainer = quiet().callback(TqdmProgressBar::new().refresh_rate(rate)).build()?;
        trainer.test(&mut BarModel::with(), bar_batches(test))?;
    }
    case("refresh 0");
    let mut trainer = quiet().callback(TqdmProgressBar::new().refresh_rate(0)).build()?;
    trainer.fit(&mut BarModel::with(), bar_batches(4), bar_batches(2))?;

    case("v_num");
    let logged = |bar: TqdmProgressBar| {
        Trainer::builder()
            .accelerator("cpu")
            .default_root_dir(&root)
            .enable_model_summary(false)
            .enable_checkpointing(false)
            .with_logger(CsvLogger::new(&root))
            .max_epochs(1)
            .callback(bar)
            .build()
    };
    logged(TqdmProgressBar::new())?.fit(&mut BarModel::with(), bar_batches(2), ())?;
    case("get_metrics");
    let custom = TqdmProgressBar::new().get_metrics(|mut items| {
        items.remove("v_num");
        items.insert("my_metric", 123);
        items
    });
    logged(custom)?.fit(&mut BarModel::with(), bar_batches(2), ())?;

    case("resume");
    let mut first = quiet().max_steps(3).callback(TqdmProgressBar::new().refresh_rate(1)).build()?;
    let mut model = BarModel::with();
    first.fit(&mut model, bar_batches(5), ())?;
    let path = root.join("mid-epoch.ckpt");
    first.save_checkpoint(&path, &mut model)?;
    let mut resumed = quiet().callback(TqdmProgressBar::new().refresh_rate(1)).build()?;
    resumed.fit_from_checkpoint(&mut BarModel::with(), bar_batches(5), (), &path)?;
    case("end");
    Ok(())
}

/// The progress lines of each case of `tqdm_lines`, by case name.
fn tqdm_cases() -> BTreeMap<String, Vec<String>> {
    let out = crate::common::run_in_own_process("callbacks::tqdm_lines");
    let mut cases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("CASE ") {
            current = Some(name.to_string());
        } else if let Some(name) = &current
            && line.contains("it/s]")
        {
            cases.entry(name.clone()).or_default().push(line.to_string());
        }
    }
    cases
}

/// The counts a loop's lines show, as Lightning's `MockTqdm.n_values` records a bar's `n`
/// (without repeats, and from the 0 a bar starts at).
fn n_values(lines: Option<&Vec<String>>, label: &str) -> Option<Vec<usize>> {
    let mut n = vec![0];
    for line in lines?.iter().filter(|l| l.starts_with(&format!("{label}: "))) {
        let count = line[label.len() + 2..].split('/').next().unwrap().parse().unwrap();
        if n.last() != Some(&count) {
            n.push(count);
        }
    }
    (n.len() > 1).then_some(n)
}

/// Ports `test_train_progress_bar_update_amount`, `test_test_progress_bar_update_amount`,
/// `test_get_progress_bar_metrics`, `test_tensor_to_float_conversion`,
/// `test_tqdm_progress_bar_on` with `refresh_rate=0`, and the main bar's position after a resume
/// (Lightning's `n = batch_idx + 1`).
#[test]
fn tqdm_progress_bar_updates_and_metrics() {
    let cases = tqdm_cases();
    type Expected = (usize, usize, usize, Option<&'static [usize]>, Option<&'static [usize]>);
    let train: [Expected; 7] = [
        (2, 3, 1, Some(&[0, 1, 2]), Some(&[0, 1, 2, 3])),
        (0, 0, 3, None, None),
        (1, 0, 3, Some(&[0, 1]), None),
        (1, 1, 3, Some(&[0, 1]), Some(&[0, 1])),
        (5, 0, 3, Some(&[0, 3, 5]), None),
        (5, 2, 3, Some(&[0, 3, 5]), Some(&[0, 2])),
        (5, 2, 6, Some(&[0, 5]), Some(&[0, 2])),
    ];
    for (t, v, rate, train_updates, val_updates) in train {
        let lines = cases.get(&format!("train {t} {v} {rate}"));
        assert_eq!(n_values(lines, "Epoch 0").as_deref(), train_updates, "train {t} {v} {rate}: {lines:?}");
        assert_eq!(n_values(lines, "Validation").as_deref(), val_updates, "train {t} {v} {rate}: {lines:?}");
    }
    for (t, rate, updates) in [(1, 3, [0, 1].as_slice()), (3, 1, &[0, 1, 2, 3]), (5, 3, &[0, 3, 5])] {
        let lines = cases.get(&format!("test {t} {rate}"));
        assert_eq!(n_values(lines, "Testing").as_deref(), Some(updates), "test {t} {rate}: {lines:?}");
    }
    assert_eq!(cases.get("refresh 0"), None, "refresh_rate 0 shows nothing");

    let with_version = &cases["v_num"];
    assert!(with_version.iter().all(|l| l.ends_with("] v_num=0, a=0.123, b=1.000, c=2.000")), "{with_version:?}");
    let custom = &cases["get_metrics"];
    assert!(custom.iter().all(|l| l.ends_with("] a=0.123, b=1.000, c=2.000, my_metric=123")), "{custom:?}");

    let resumed = &cases["resume"];
    let counts: Vec<&str> = resumed.iter().map(|l| l.split(" [").next().unwrap()).collect();
    assert_eq!(
        counts,
        [
            "Epoch 0: 1/5",
            "Epoch 0: 2/5",
            "Epoch 0: 3/5",
            "Epoch 0: 3/5",
            "Epoch 0: 4/5",
            "Epoch 0: 5/5",
            "Epoch 0: 5/5"
        ]
    );
}

/// Logs a score in its `on_train_epoch_end` (10 at epoch 0, 9 at epoch 1, …); no validation.
#[lightning_module]
struct EpochEndScore {
    vs: nn::VarStore,
    l: nn::Linear,
}

#[lightning_module]
impl EpochEndScore {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = nn::linear(vs.root() / "l", 2, 1, Default::default());
        EpochEndScore { vs, l }
    }
    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.l.forward(&x).mse_loss(&y, Reduction::Mean)
    }
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        let score = 10.0 - cx.current_epoch() as f64;
        cx.log("epoch_score", Tensor::from(score as f32));
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

#[test]
fn monitoring_callbacks_see_what_the_module_logs_in_on_train_epoch_end() -> lit::Result<()> {
    // Lightning 2.6's fit loop calls `on_train_epoch_end` on the callbacks that monitor no
    // metric, then the module, then the monitoring ones (checkpoints, early stopping), "otherwise
    // they wouldn't be able to monitor a key logged in `LightningModule.on_train_epoch_end`".
    let dir = temp_dir("cb-epoch-end-monitor");
    let batches = || Batches::new(crate::common::regression_batches(2));
    let checkpoint = ModelCheckpoint::new().dirpath(&dir).monitor("epoch_score").mode(Mode::Min);
    let mut trainer = quiet_trainer(&dir).enable_checkpointing(true).max_epochs(3).callback(checkpoint).build()?;
    trainer.fit(&mut EpochEndScore::new(), batches(), ())?;
    let best = trainer.checkpoint_callback().unwrap();
    assert_eq!(best.best_model_score(), Some(8.0), "the last epoch's score, seen in that epoch");
    assert!(best.best_model_path().unwrap().ends_with("epoch=2-step=6.ckpt"), "{:?}", best.best_model_path());

    let stop = EarlyStopping::new("epoch_score").mode(Mode::Max).patience(0);
    let mut trainer = quiet_trainer(&dir).max_epochs(5).callback(stop).build()?;
    trainer.fit(&mut EpochEndScore::new(), batches(), ())?;
    assert_eq!(trainer.current_epoch(), 2, "epoch 1's score was worse than epoch 0's: stopped after it");
    Ok(())
}
