//! Lightning's semantics, checked with assertions ported from Lightning's own test suite
//! (`Lightning-AI/pytorch-lightning`, `tests/tests_pytorch/`); each test names the test it ports.

mod logging;
mod trainer;

use lit::callbacks::{EarlyStopping, Mode, ModelCheckpoint};
use lit::data::Batches;
use lit::prelude::*;

use crate::common::{quiet_trainer, regression_batches, temp_dir};

/// `n` batches of `rows` random rows of 32 features (Lightning's `RandomDataset(32, n * rows)`
/// with `batch_size=rows`).
fn random_batches(n: usize, rows: i64) -> Batches<Tensor> {
    Batches::new((0..n).map(|_| Tensor::randn([rows, 32], (Kind::Float, Device::Cpu))).collect())
}

/// Lightning's `BoringModel` layer: `Linear(32, 2)`.
fn boring_layer(vs: &nn::VarStore) -> nn::Linear {
    nn::linear(vs.root() / "layer", 32, 2, Default::default())
}

/// `BoringModel.step`: the MSE of the layer's output against ones.
fn boring_loss(layer: &nn::Linear, x: &Tensor) -> Tensor {
    let preds = layer.forward(x);
    preds.mse_loss(&preds.ones_like(), lit::tch::Reduction::Mean)
}

/// A module whose loss is always 0 (so early stopping sees no improvement), counting its
/// training steps and the epochs in which a stop had been requested.
#[lightning_module]
struct Flat {
    vs: nn::VarStore,
    w: Tensor,
    steps: usize,
    stop_seen_in_epochs: Vec<usize>,
}

#[lightning_module]
impl Flat {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        Flat { vs, w, steps: 0, stop_seen_in_epochs: Vec::new() }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let loss = x.matmul(&self.w).sum(Kind::Float) * 0.0;
        cx.log("loss", &loss);
        self.steps += 1;
        if cx.should_stop() && !self.stop_seen_in_epochs.contains(&cx.current_epoch()) {
            self.stop_seen_in_epochs.push(cx.current_epoch());
        }
        loss
    }

    fn validation_step(&mut self, (x, _): (Tensor, Tensor), cx: &mut Ctx) {
        cx.log("val_loss", x.sum(Kind::Float).double_value(&[]));
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Ports `tests_pytorch/trainer/test_trainer.py::test_trainer_min_steps_and_min_epochs_not_reached`:
/// early stopping triggers at the end of epoch 1 (patience 0, a flat loss), yet `min_epochs = 5`
/// epochs of 2 batches all run to their end: `training_step_invoked == min_epochs * 2`, and the
/// stop is visible (`trainer.should_stop`) from epoch 2 on.
#[test]
fn min_epochs_holds_against_early_stopping() -> lit::Result<()> {
    let mut model = Flat::new();
    let mut trainer = quiet_trainer(&temp_dir("min-epochs-early-stop"))
        .min_epochs(5)
        .limit_train_batches(2)
        .limit_val_batches(0)
        .callback(EarlyStopping::new("loss").patience(0))
        .build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(4)), ())?;
    assert_eq!(model.steps, 5 * 2, "training_step_invoked == min_epochs * 2");
    assert_eq!(model.stop_seen_in_epochs, [2, 3, 4], "should_stop from epoch 2 on");
    assert_eq!(trainer.current_epoch(), 5);
    Ok(())
}

/// A callback that requests a stop at every training batch.
struct StopAtOnce;

impl Callback for StopAtOnce {
    fn on_train_batch_start(&mut self, _batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        cx.request_stop();
        Ok(())
    }
}

/// Ports the rule `tests_pytorch/loops/test_training_loop.py::test_should_stop_early_stopping_conditions_not_met`
/// checks on `epoch_loop.done` and `_can_stop_early`: with `should_stop` set, an epoch ends early
/// only once `min_epochs` epochs are *completed* (the one in progress does not count) and
/// `min_steps` steps are taken, so the last required epoch runs to its end. End to end: a stop
/// requested on every epoch's first batch.
#[test]
fn a_stop_waits_for_min_epochs_and_min_steps_to_be_met() -> lit::Result<()> {
    for (min_epochs, min_steps, batches, expected_steps) in
        [(Some(2), None, 3, 6), (Some(3), Some(10), 5, 15), (None, Some(4), 3, 4), (Some(1), None, 3, 3)]
    {
        let mut model = Flat::new();
        let mut builder = quiet_trainer(&temp_dir("min-epochs-steps")).max_epochs(10).callback(StopAtOnce);
        if let Some(m) = min_epochs {
            builder = builder.min_epochs(m);
        }
        if let Some(m) = min_steps {
            builder = builder.min_steps(m);
        }
        let mut trainer = builder.build()?;
        trainer.fit(&mut model, Batches::new(regression_batches(batches)), ())?;
        assert_eq!(
            trainer.global_step(),
            expected_steps,
            "min_epochs {min_epochs:?}, min_steps {min_steps:?}, {batches} batches an epoch"
        );
    }
    Ok(())
}

fn checkpoint_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").file_name().into_string().expect("utf-8")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Ports `tests_pytorch/checkpointing/test_model_checkpoint.py::test_model_checkpoint_every_n_epochs`
/// (every_n_epochs in 0..4, 5 epochs of one batch, `filename="{epoch}"`, `save_top_k=-1`): the
/// checkpoints are those of the epochs `e` with `(e + 1) % every_n_epochs == 0`, none for 0.
#[test]
fn model_checkpoint_saves_every_n_epochs() -> lit::Result<()> {
    for every_n_epochs in 0..4 {
        let root = temp_dir(&format!("every-n-epochs-{every_n_epochs}"));
        let dir = root.join("ckpts");
        let callback =
            ModelCheckpoint::new().dirpath(&dir).filename("{epoch}").save_top_k(-1).every_n_epochs(every_n_epochs);
        let mut trainer = quiet_trainer(&root)
            .enable_checkpointing(true)
            .max_epochs(5)
            .limit_train_batches(1)
            .limit_val_batches(1)
            .callback(callback)
            .build()?;
        trainer.fit(&mut Flat::new(), Batches::new(regression_batches(2)), Batches::new(regression_batches(1)))?;
        let expected: Vec<String> = if every_n_epochs > 0 {
            (0..5).filter(|e| (e + 1) % every_n_epochs == 0).map(|e| format!("epoch={e}.ckpt")).collect()
        } else {
            Vec::new()
        };
        assert_eq!(checkpoint_files(&dir), expected, "every_n_epochs = {every_n_epochs}");
    }
    Ok(())
}

/// Ports `tests_pytorch/checkpointing/test_model_checkpoint.py::test_invalid_top_k`,
/// `::test_none_monitor_top_k` and `::test_invalid_trigger_combination`: `save_top_k < -1` is invalid, and without a monitor only -1, 0 and 1
/// are valid ("No quantity for top_k to track").
#[test]
fn model_checkpoint_rejects_a_top_k_it_cannot_track() -> lit::Result<()> {
    let fit_with = |callback: ModelCheckpoint| -> lit::Result<()> {
        let root = temp_dir("invalid-top-k");
        let mut trainer = quiet_trainer(&root).enable_checkpointing(true).max_epochs(1).callback(callback).build()?;
        trainer.fit(&mut Flat::new(), Batches::new(regression_batches(1)), ())
    };
    let e = fit_with(ModelCheckpoint::new().save_top_k(-3)).unwrap_err().to_string();
    assert!(e.contains("Must be >= -1"), "{e}");
    let e = fit_with(ModelCheckpoint::new().save_top_k(3)).unwrap_err().to_string();
    assert!(e.contains("ModelCheckpoint(save_top_k=3, monitor=None) is not a valid"), "{e}");
    // These should not fail.
    for k in [-1, 0, 1] {
        fit_with(ModelCheckpoint::new().save_top_k(k))?;
    }
    // With a monitor, any k is fine.
    fit_with(ModelCheckpoint::new().monitor("step").save_top_k(3))?;

    // Ports `::test_invalid_trigger_combination`: at most one of every_n_train_steps,
    // every_n_epochs and train_time_interval.
    let minute = std::time::Duration::from_secs(60);
    for callback in [
        ModelCheckpoint::new().every_n_train_steps(1).every_n_epochs(2),
        ModelCheckpoint::new().train_time_interval(minute).every_n_epochs(2),
        ModelCheckpoint::new().train_time_interval(minute).every_n_train_steps(2),
    ] {
        let e = fit_with(callback).unwrap_err().to_string();
        assert!(e.contains("Combination of parameters every_n_train_steps"), "{e}");
    }
    // These should not fail.
    fit_with(ModelCheckpoint::new().every_n_train_steps(0).every_n_epochs(3))?;
    fit_with(ModelCheckpoint::new().every_n_train_steps(4).every_n_epochs(0))?;
    fit_with(ModelCheckpoint::new().every_n_epochs(0).train_time_interval(minute))?;
    Ok(())
}

/// `epoch` and `step` are monitor candidates, as in Lightning (`_monitor_candidates`): with
/// `monitor("step")`, `mode(Max)` and `save_top_k(2)` the newest two checkpoints are kept, and
/// `trainer.checkpoint_callback()` reports the best (Lightning's `trainer.checkpoint_callback`).
#[test]
fn model_checkpoint_monitors_step_and_epoch() -> lit::Result<()> {
    let root = temp_dir("monitor-step");
    let dir = root.join("ckpts");
    let callback = ModelCheckpoint::new().dirpath(&dir).monitor("step").mode(Mode::Max).save_top_k(2);
    let mut trainer = quiet_trainer(&root).enable_checkpointing(true).max_epochs(4).callback(callback).build()?;
    trainer.fit(&mut Flat::new(), Batches::new(regression_batches(2)), ())?;
    assert_eq!(checkpoint_files(&dir), ["epoch=2-step=6.ckpt", "epoch=3-step=8.ckpt"]);
    let best = trainer.checkpoint_callback().expect("a ModelCheckpoint");
    assert_eq!(best.best_model_path(), Some(dir.join("epoch=3-step=8.ckpt").as_path()));
    assert_eq!(best.best_model_score(), Some(8.0));

    let root = temp_dir("monitor-epoch");
    let dir = root.join("ckpts");
    let callback = ModelCheckpoint::new().dirpath(&dir).monitor("epoch").mode(Mode::Min).save_top_k(1);
    let mut trainer = quiet_trainer(&root).enable_checkpointing(true).max_epochs(3).callback(callback).build()?;
    trainer.fit(&mut Flat::new(), Batches::new(regression_batches(2)), ())?;
    assert_eq!(checkpoint_files(&dir), ["epoch=0-step=2.ckpt"], "the lowest epoch is best with mode min");
    Ok(())
}

/// Port of `checkpointing/test_model_checkpoint.py::test_model_checkpoint_saveload_ckpt` (the
/// `dirpath` change): resuming with a checkpoint directory other than the one the checkpoint's
/// state was written for restores only `best_model_path`; the old directory's files are never
/// rotated out by the new run.
#[test]
fn a_resumed_run_in_another_directory_leaves_the_old_checkpoints_alone() -> lit::Result<()> {
    let root = temp_dir("ckpt-dir-change");
    let (first, second) = (root.join("first"), root.join("second"));
    let keep_two =
        |dir: &std::path::Path| ModelCheckpoint::new().dirpath(dir).monitor("step").mode(Mode::Max).save_top_k(2);
    let mut trainer =
        quiet_trainer(&root).enable_checkpointing(true).max_epochs(2).callback(keep_two(&first)).build()?;
    trainer.fit(&mut Flat::new(), Batches::new(regression_batches(2)), ())?;
    let before = checkpoint_files(&first);
    assert_eq!(before, ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]);

    let resume_from = first.join("epoch=1-step=4.ckpt");
    let mut trainer =
        quiet_trainer(&root).enable_checkpointing(true).max_epochs(5).callback(keep_two(&second)).build()?;
    trainer.fit_from_checkpoint(&mut Flat::new(), Batches::new(regression_batches(2)), (), &resume_from)?;
    assert_eq!(checkpoint_files(&first), before, "the first run's files are untouched");
    assert_eq!(checkpoint_files(&second), ["epoch=3-step=8.ckpt", "epoch=4-step=10.ckpt"]);
    let callback = trainer.checkpoint_callback().expect("a ModelCheckpoint");
    assert!(callback.best_k_models().keys().all(|p| p.starts_with(&second)), "{:?}", callback.best_k_models());
    assert_eq!(callback.best_model_path(), Some(second.join("epoch=4-step=10.ckpt").as_path()));

    // In the same directory the state is restored whole, and the rotation goes on there.
    let mut trainer =
        quiet_trainer(&root).enable_checkpointing(true).max_epochs(6).callback(keep_two(&second)).build()?;
    trainer.fit_from_checkpoint(
        &mut Flat::new(),
        Batches::new(regression_batches(2)),
        (),
        second.join("epoch=4-step=10.ckpt"),
    )?;
    assert_eq!(checkpoint_files(&second), ["epoch=4-step=10.ckpt", "epoch=5-step=12.ckpt"]);
    Ok(())
}

/// The Trainer's `EarlyStopping` callback.
fn early_stopping(trainer: &lit::Trainer) -> &EarlyStopping {
    trainer
        .callbacks()
        .iter()
        .find_map(|c| (&**c as &dyn std::any::Any).downcast_ref::<EarlyStopping>())
        .expect("an EarlyStopping callback")
}

/// The early-stopping reason reads as Lightning's message: the metric, how many checks it did
/// not improve for, and the best score as a number.
#[test]
fn early_stopping_says_why_with_the_best_score() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("early-stop-reason"))
        .max_epochs(10)
        .limit_val_batches(0)
        .callback(EarlyStopping::new("loss").patience(2))
        .build()?;
    trainer.fit(&mut Flat::new(), Batches::new(regression_batches(2)), ())?;
    let stopper = early_stopping(&trainer);
    assert_eq!(
        stopper.reason(),
        Some("monitored metric `loss` did not improve in the last 2 records; best score: 0.000")
    );
    assert_eq!(stopper.stopped_epoch(), Some(2));
    Ok(())
}

/// Logs `loss` in both training (per step) and validation (per epoch, a fixed 7.0).
#[lightning_module]
struct SameName {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl SameName {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        SameName { vs, w }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let loss = x.matmul(&self.w).sum(Kind::Float);
        cx.log("loss", &loss);
        loss
    }

    fn validation_step(&mut self, _batch: (Tensor, Tensor), cx: &mut Ctx) {
        cx.log("loss", 7.0);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// One name logged in `training_step` and in `validation_step` (with each hook's own default
/// options) is accepted, as Lightning 2.6 accepts it; the validation value, reduced last, is the
/// one in `callback_metrics` after the epoch.
#[test]
fn one_name_may_be_logged_in_training_and_in_validation() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("same-name")).max_epochs(2).build()?;
    trainer.fit(&mut SameName::new(), Batches::new(regression_batches(3)), Batches::new(regression_batches(2)))?;
    assert_eq!(trainer.callback_metrics()["loss"], 7.0);
    Ok(())
}

/// Logs `test_loss` per step and per epoch in `test_step`.
#[lightning_module]
struct TwoLoaders {
    vs: nn::VarStore,
}

#[lightning_module]
impl TwoLoaders {
    fn new() -> Self {
        TwoLoaders { vs: nn::VarStore::new(Device::Cpu) }
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        x.sum(Kind::Float)
    }

    fn test_step(&mut self, x: Tensor, dataloader_idx: usize, cx: &mut Ctx) {
        let loss = x.sum(Kind::Float) + dataloader_idx as f64;
        cx.log("test_loss", &loss).on_step(true).on_epoch(true);
    }
}

/// Ports `tests_pytorch/trainer/logging_/test_eval_loop_logging.py::test_multi_dataloaders_add_suffix_properly`
/// (two test loaders, `test_loss` logged with `on_step=True, on_epoch=True`):
/// `"test_loss_epoch/dataloader_idx_0" in results[0]` and `"…_idx_1" in results[1]`.
#[test]
fn several_loaders_suffix_their_keys_as_lightning_does() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("two-loaders")).limit_test_batches(2).build()?;
    let ones = || Batches::new((0..3).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
    let results = trainer.test(&mut TwoLoaders::new(), vec![ones(), ones()])?;
    assert_eq!(results.len(), 2);
    assert!(results[0].contains_key("test_loss_epoch/dataloader_idx_0"), "{:?}", results[0]);
    assert!(results[1].contains_key("test_loss_epoch/dataloader_idx_1"), "{:?}", results[1]);
    assert_eq!(results[1]["test_loss_epoch/dataloader_idx_1"], 3.0);
    Ok(())
}

/// Logs `foo` = dataloader_idx + 1 in `test_step` and their sum in `on_test_epoch_end`.
#[lightning_module]
struct EpochEndLogger {
    vs: nn::VarStore,
    outputs: [f64; 2],
}

#[lightning_module]
impl EpochEndLogger {
    fn new() -> Self {
        EpochEndLogger { vs: nn::VarStore::new(Device::Cpu), outputs: [0.0; 2] }
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        x.sum(Kind::Float)
    }

    fn test_step(&mut self, _x: Tensor, dataloader_idx: usize, cx: &mut Ctx) {
        let value = dataloader_idx as f64 + 1.0;
        cx.log("foo", value);
        self.outputs[dataloader_idx] += value;
    }

    fn on_test_epoch_end(&mut self, cx: &mut Ctx) {
        cx.log("foobar", self.outputs.iter().sum::<f64>());
    }
}

/// Ports `tests_pytorch/trainer/logging_/test_eval_loop_logging.py::test_logging_multi_dataloader_on_epoch_end`:
/// what is logged in `on_test_epoch_end` gets included in the results of each dataloader,
/// `results == [{"foo/dataloader_idx_0": 1, "foobar": 3}, {"foo/dataloader_idx_1": 2, "foobar": 3}]`.
#[test]
fn a_value_logged_at_epoch_end_is_in_every_loaders_results() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("epoch-end-two-loaders")).limit_test_batches(1).build()?;
    let ones = || Batches::new((0..2).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
    let results = trainer.test(&mut EpochEndLogger::new(), vec![ones(), ones()])?;
    let expected = |i: usize, foo: f64| {
        [(format!("foo/dataloader_idx_{i}"), foo), ("foobar".to_string(), 3.0)].into_iter().collect()
    };
    assert_eq!(results, vec![expected(0, 1.0), expected(1, 2.0)]);
    Ok(())
}

/// One `log_metrics` call: the metrics and the step.
type Call = (Vec<(String, f64)>, usize);

/// A logger that records every `log_metrics` call (Lightning's tests mock `log_metrics`).
#[derive(Clone, Default)]
struct Recording(std::sync::Arc<std::sync::Mutex<Vec<Call>>>);

impl lit::loggers::Logger for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn version(&self) -> String {
        "version_0".into()
    }
    fn log_dir(&self) -> Option<&std::path::Path> {
        None
    }
    fn log_hyperparams(&mut self, _params: &serde_json::Value) -> lit::Result<()> {
        Ok(())
    }
    fn log_metrics(&mut self, metrics: &std::collections::BTreeMap<String, f64>, step: usize) -> lit::Result<()> {
        let metrics = metrics.iter().map(|(k, v)| (k.clone(), *v)).collect();
        self.0.lock().unwrap().push((metrics, step));
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Recording {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Logs its batch index per step in validation (`val_log_{fit,validate}`) and test (`test_log`).
#[lightning_module]
struct EvalStepLogger {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl EvalStepLogger {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        EvalStepLogger { vs, w }
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        x.dot(&self.w)
    }

    fn validation_step(&mut self, _x: Tensor, batch_idx: usize, cx: &mut Ctx) {
        let name = format!("val_log_{}", cx.stage().as_str());
        cx.log(name, batch_idx as f64).on_step(true).on_epoch(false);
    }

    fn test_step(&mut self, _x: Tensor, batch_idx: usize, cx: &mut Ctx) {
        cx.log("test_log", batch_idx as f64).on_step(true).on_epoch(false);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Ports `tests_pytorch/trainer/logging_/test_eval_loop_logging.py::test_eval_step_logging`
/// (num_dataloaders 1 and 2, limit 4 evaluation batches, 3 epochs): every evaluation step value
/// reaches the logger on its own, at the evaluation's own step (`step + limit_batches * epoch`
/// in fit, `step` in validate and test), with the loader suffix when there are two loaders and
/// no `epoch` key; and none of them is in `callback_metrics` or in `test()`'s results.
#[test]
fn evaluation_step_values_reach_the_loggers_at_their_own_step() -> lit::Result<()> {
    for num_dataloaders in [1, 2] {
        let recording = Recording::default();
        let mut trainer = quiet_trainer(&temp_dir("eval-step-logging"))
            .max_epochs(3)
            .limit_train_batches(1)
            .limit_val_batches(4)
            .limit_test_batches(4)
            .with_logger(recording.clone())
            .build()?;
        let batches = || Batches::new((0..6).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
        let loaders = || (0..num_dataloaders).map(|_| batches()).collect::<Vec<_>>();
        let suffix = |dl: usize| if num_dataloaders == 2 { format!("/dataloader_idx_{dl}") } else { String::new() };
        let mut model = EvalStepLogger::new();

        trainer.fit(&mut model, batches(), loaders())?;
        let fit_calls: Vec<Call> = (0..3)
            .flat_map(|epoch| (0..num_dataloaders).flat_map(move |dl| (0..4).map(move |step| (epoch, dl, step))))
            .map(|(epoch, dl, step)| (vec![(format!("val_log_fit{}", suffix(dl)), step as f64)], step + 4 * epoch))
            .collect();
        assert_eq!(recording.take(), fit_calls, "fit, {num_dataloaders} loader(s)");
        assert!(
            trainer.callback_metrics().keys().all(|k| !k.starts_with("val_log")),
            "{:?}",
            trainer.callback_metrics()
        );

        trainer.validate(&mut model, loaders())?;
        let validate_calls: Vec<_> = (0..num_dataloaders)
            .flat_map(|dl| (0..4).map(move |step| (dl, step)))
            .map(|(dl, step)| (vec![(format!("val_log_validate{}", suffix(dl)), step as f64)], step))
            .collect();
        assert_eq!(recording.take(), validate_calls, "validate, {num_dataloaders} loader(s)");

        let results = trainer.test(&mut model, loaders())?;
        let test_calls: Vec<_> = (0..num_dataloaders)
            .flat_map(|dl| (0..4).map(move |step| (dl, step)))
            .map(|(dl, step)| (vec![(format!("test_log{}", suffix(dl)), step as f64)], step))
            .collect();
        assert_eq!(recording.take(), test_calls, "test, {num_dataloaders} loader(s)");
        assert!(results.iter().all(|r| r.is_empty()), "step values are not results: {results:?}");
    }
    Ok(())
}

/// Three blocks of linear layers as in Lightning's toggle tests (`layer_1[0, 2, 4]`,
/// `layer_2[1, 3, 5]`, `layer_3[1, 3, 5]`), some weights frozen beforehand, and a `base` layer
/// in no optimizer that makes the loss.
#[lightning_module]
struct Toggling {
    vs: nn::VarStore,
    layers: Vec<(String, nn::Linear)>,
    base: nn::Linear,
    optimizers: usize,
    /// `requires_grad` of every layer's weight, seen after each toggle.
    seen: Vec<Vec<(String, bool)>>,
}

#[lightning_module(automatic_optimization = false)]
impl Toggling {
    fn new(optimizers: usize) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let names = ["layer_1.0", "layer_1.2", "layer_1.4", "layer_2.1", "layer_2.3", "layer_2.5"];
        let third = ["layer_3.1", "layer_3.3", "layer_3.5"];
        let all: Vec<&str> = names.iter().chain(if optimizers == 3 { &third[..] } else { &[] }).copied().collect();
        let layers: Vec<(String, nn::Linear)> = all
            .iter()
            .map(|&name| {
                let (block, index) = name.split_once('.').expect("block.index");
                (name.to_string(), nn::linear(vs.root() / block / index, 32, 32, Default::default()))
            })
            .collect();
        // Some weights require no gradient to begin with, to check that untoggling keeps them so.
        let frozen: &[&str] = if optimizers == 3 {
            &["layer_1.2", "layer_1.4", "layer_2.1", "layer_2.3", "layer_3.1", "layer_3.5"]
        } else {
            &["layer_1.2", "layer_1.4", "layer_2.1", "layer_2.3"]
        };
        for (name, layer) in &layers {
            if frozen.contains(&name.as_str()) {
                let _ = layer.ws.shallow_clone().set_requires_grad(false);
            }
        }
        let base = nn::linear(vs.root() / "base", 32, 2, Default::default());
        Toggling { vs, layers, base, optimizers, seen: Vec::new() }
    }

    #[helper]
    fn flags(&self) -> Vec<(String, bool)> {
        self.layers.iter().map(|(n, l)| (n.clone(), l.ws.requires_grad())).collect()
    }

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> lit::Result<()> {
        let opts: Vec<Opt> = match self.optimizers {
            2 => cx.optimizers::<2>()?.to_vec(),
            _ => cx.optimizers::<3>()?.to_vec(),
        };
        for opt in opts {
            cx.toggle_optimizer(opt);
            let loss = self.base.forward(&x).sum(Kind::Float);
            opt.zero_grad(cx);
            cx.manual_backward(&loss)?;
            self.seen.push(self.flags());
            opt.step(cx)?;
            cx.untoggle_optimizer(opt);
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        let in_blocks = |blocks: &'static [&'static str]| move |n: &str| blocks.iter().any(|b| n.starts_with(b));
        if self.optimizers == 2 {
            Optimizers::none()
                .with(Sgd::new(0.1).params(in_blocks(&["layer_1."])))
                .with(Adam::new(0.1).params(in_blocks(&["layer_2."])))
        } else {
            Optimizers::none()
                .with(Sgd::new(0.1).params(in_blocks(&["layer_1.", "layer_2."])))
                .with(Adam::new(0.1).params(in_blocks(&["layer_2.", "layer_3."])))
                .with(Sgd::new(0.1).params(in_blocks(&["layer_3.", "layer_1."])))
        }
    }
}

/// Which layers' weights require grad, by name.
fn requiring(seen: &[(String, bool)]) -> Vec<&str> {
    seen.iter().filter(|(_, r)| *r).map(|(n, _)| n.as_str()).collect()
}

fn toggle_run(optimizers: usize) -> lit::Result<Toggling> {
    let mut model = Toggling::new(optimizers);
    let mut trainer = quiet_trainer(&temp_dir("toggle")).max_epochs(1).limit_train_batches(2).build()?;
    let batches = Batches::new((0..2).map(|_| Tensor::ones([4, 32], (Kind::Float, Device::Cpu))).collect());
    trainer.fit(&mut model, batches, ())?;
    assert_eq!(model.seen.len(), 2 * optimizers, "one look per optimizer per batch");
    Ok(model)
}

/// Ports `tests_pytorch/core/test_lightning_module.py::test_toggle_untoggle_2_optimizers_no_shared_parameters`:
/// `opt1, opt2 = self.optimizers()`; with opt1 toggled only `layer_1[0]` requires grad (its
/// frozen weights stay frozen, all of `layer_2` is off); with opt2 toggled only `layer_2[5]`.
#[test]
fn toggle_optimizer_with_two_optimizers_and_no_shared_parameters() -> lit::Result<()> {
    let model = toggle_run(2)?;
    for batch in model.seen.chunks(2) {
        assert_eq!(requiring(&batch[0]), ["layer_1.0"]);
        assert_eq!(requiring(&batch[1]), ["layer_2.5"]);
    }
    // Untoggling gave every weight back its own state.
    assert_eq!(requiring(&model.flags()), ["layer_1.0", "layer_2.5"]);
    // `new(optimizers: usize)` is a constructor, not one that takes hparams: the module compiles,
    // and `load_from_checkpoint` says which constructor it needs.
    let path = temp_dir("toggle-load").join("m.ckpt");
    let mut trainer = quiet_trainer(&temp_dir("toggle-save")).build()?;
    let mut model = model;
    trainer.save_checkpoint(&path, &mut model)?;
    let e = Toggling::load_from_checkpoint(&path).err().expect("no constructor takes the hparams").to_string();
    assert!(e.contains("takes `usize`, not the hparams") && e.contains("#[init]"), "{e}");
    Ok(())
}

/// Ports `tests_pytorch/core/test_lightning_module.py::test_toggle_untoggle_3_optimizers_shared_parameters`
/// (each optimizer holds two of the three blocks): toggling opt1 leaves `layer_1[0]` and
/// `layer_2[5]`, opt2 `layer_2[5]` and `layer_3[3]`, opt3 `layer_1[0]` and `layer_3[3]`.
#[test]
fn toggle_optimizer_with_three_optimizers_and_shared_parameters() -> lit::Result<()> {
    let model = toggle_run(3)?;
    for batch in model.seen.chunks(3) {
        assert_eq!(requiring(&batch[0]), ["layer_1.0", "layer_2.5"]);
        assert_eq!(requiring(&batch[1]), ["layer_2.5", "layer_3.3"]);
        assert_eq!(requiring(&batch[2]), ["layer_1.0", "layer_3.3"]);
    }
    assert_eq!(requiring(&model.flags()), ["layer_1.0", "layer_2.5", "layer_3.3"]);
    Ok(())
}

/// Reads the Trainer through `cx.trainer()` in its hooks.
#[lightning_module]
struct TrainerReader {
    vs: nn::VarStore,
    w: Tensor,
    read: Vec<String>,
}

#[lightning_module]
impl TrainerReader {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        TrainerReader { vs, w, read: Vec::new() }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let t = cx.trainer();
        self.read.push(format!(
            "train epoch={} step={} batches={:?} max_epochs={:?} max_steps={:?} accumulate={} state={:?}",
            t.current_epoch(),
            t.global_step(),
            t.num_training_batches(),
            t.max_epochs(),
            t.max_steps(),
            t.config().accumulate_grad_batches,
            t.state(),
        ));
        x.matmul(&self.w).sum(Kind::Float)
    }

    fn validation_step(&mut self, _batch: (Tensor, Tensor), cx: &mut Ctx) {
        let t = cx.trainer();
        self.read.push(format!("val sanity={} stage={:?} zero={}", t.sanity_checking(), t.stage(), t.is_global_zero()));
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// What a LightningModule reads through `self.trainer` (its configuration and state) is read
/// through `cx.trainer()`.
#[test]
fn hooks_read_the_trainer_through_the_context() -> lit::Result<()> {
    let mut model = TrainerReader::new();
    let mut trainer = quiet_trainer(&temp_dir("trainer-view"))
        .max_epochs(2)
        .limit_train_batches(2)
        .limit_val_batches(1)
        .num_sanity_val_steps(1)
        .build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(3)), Batches::new(regression_batches(1)))?;
    let train = |epoch: usize, step: usize| {
        format!(
            "train epoch={epoch} step={step} batches=Some(2) max_epochs=Some(2) max_steps=None accumulate=1 state=Training"
        )
    };
    let val = |sanity: bool| format!("val sanity={sanity} stage=Fit zero=true");
    assert_eq!(model.read, [val(true), train(0, 0), train(0, 1), val(false), train(1, 2), train(1, 3), val(false)]);
    Ok(())
}

/// Writes its test predictions with the spec's `write_prediction` and `write_prediction_dict`.
#[lightning_module]
struct Writes {
    vs: nn::VarStore,
    file: std::path::PathBuf,
}

#[lightning_module]
impl Writes {
    fn new(file: std::path::PathBuf) -> Self {
        Writes { vs: nn::VarStore::new(Device::Cpu), file }
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        x.sum(Kind::Float)
    }

    fn test_step(&mut self, x: Tensor, batch_idx: usize, cx: &mut Ctx) {
        let file = self.file.clone();
        cx.write_prediction("pred", &(&x * 2.0), file.clone());
        cx.write_prediction_dict([("idx", Tensor::from(batch_idx as i64)), ("sum", x.sum(Kind::Float))], file);
    }
}

/// The spec's `write_prediction(name, value, filename)` and `write_prediction_dict(dict,
/// filename)`: after `test`, the file holds each name's values over every batch, and PyTorch's
/// safetensors reads it.
#[test]
fn test_step_writes_predictions_to_a_file_python_reads() -> lit::Result<()> {
    let file = temp_dir("write-prediction").join("out/predictions.safetensors");
    let mut trainer = quiet_trainer(&temp_dir("write-prediction-run")).build()?;
    let batches = Batches::new((0..3).map(|i| Tensor::full([2], i as f64, (Kind::Float, Device::Cpu))).collect());
    trainer.test(&mut Writes::new(file.clone()), batches)?;
    let saved = lit::callbacks::read_predictions(&file)?;
    assert_eq!(saved["pred"], Tensor::from_slice(&[0.0f32, 0.0, 2.0, 2.0, 4.0, 4.0]));
    assert_eq!(saved["idx"], Tensor::from_slice(&[0i64, 1, 2]));
    assert_eq!(saved["sum"], Tensor::from_slice(&[0.0f32, 2.0, 4.0]));
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let script = "import sys\nfrom safetensors.torch import load_file\nd = load_file(sys.argv[1])\nprint(sorted((k, v.tolist()) for k, v in d.items()))";
    let out = std::process::Command::new(python).arg("-c").arg(script).arg(&file).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[('idx', [0, 1, 2]), ('pred', [0.0, 0.0, 2.0, 2.0, 4.0, 4.0]), ('sum', [0.0, 2.0, 4.0])]"
    );
    Ok(())
}

/// Logs `losses[current_epoch]` as `monitored` in `on_validation_epoch_end`, as the models of
/// Lightning's early-stopping tests do.
#[lightning_module]
struct Scripted {
    vs: nn::VarStore,
    w: Tensor,
    losses: Vec<f64>,
}

#[lightning_module]
impl Scripted {
    fn new(losses: &[f64]) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        Scripted { vs, w, losses: losses.to_vec() }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor)) -> Tensor {
        x.matmul(&self.w).sum(Kind::Float)
    }

    fn validation_step(&mut self, _batch: (Tensor, Tensor)) {}

    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) {
        let loss = self.losses[cx.current_epoch().min(self.losses.len() - 1)];
        cx.log("monitored", loss);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// The epoch training stopped at (`trainer.current_epoch - 1` in Lightning's tests).
fn stop_epoch(losses: &[f64], early_stopping: EarlyStopping, max_epochs: usize) -> lit::Result<usize> {
    let mut trainer = quiet_trainer(&temp_dir("early-stopping"))
        .max_epochs(max_epochs)
        .num_sanity_val_steps(0)
        .limit_train_batches(1)
        .limit_val_batches(1)
        .callback(early_stopping)
        .build()?;
    trainer.fit(
        &mut Scripted::new(losses),
        Batches::new(regression_batches(1)),
        Batches::new(regression_batches(1)),
    )?;
    Ok(trainer.current_epoch() - 1)
}

/// Ports `tests_pytorch/callbacks/test_early_stopping.py::test_early_stopping_patience`:
/// `([6, 5, 5, 5, 5, 5], patience 3) → epoch 4`, `([6, 5, 4, 4, 3, 3], 1) → 3`,
/// `([6, 5, 6, 5, 5, 5], 3) → 4`.
#[test]
fn early_stopping_waits_for_patience() -> lit::Result<()> {
    let cases: [(&[f64], usize, usize); 3] = [
        (&[6.0, 5.0, 5.0, 5.0, 5.0, 5.0], 3, 4),
        (&[6.0, 5.0, 4.0, 4.0, 3.0, 3.0], 1, 3),
        (&[6.0, 5.0, 6.0, 5.0, 5.0, 5.0], 3, 4),
    ];
    for (losses, patience, expected) in cases {
        let early = EarlyStopping::new("monitored").patience(patience);
        assert_eq!(stop_epoch(losses, early, 10)?, expected, "{losses:?}, patience {patience}");
    }
    Ok(())
}

/// Ports `tests_pytorch/callbacks/test_early_stopping.py::test_early_stopping_thresholds`
/// (default patience 3): no thresholds `[8, 4, 2, 3, 4, 5, 8, 10] → 5`; `stopping_threshold=2.9`
/// on `[9, 8, 7, 6, 5, 6, 4, 3, 2, 1] → 8`; `divergence_threshold=15.9` on
/// `[9, 4, 2, 16, 32, 64] → 3`.
#[test]
fn early_stopping_thresholds() -> lit::Result<()> {
    let patience3 = || EarlyStopping::new("monitored").patience(3);
    assert_eq!(stop_epoch(&[8.0, 4.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0], patience3(), 20)?, 5);
    let losses = [9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 4.0, 3.0, 2.0, 1.0];
    assert_eq!(stop_epoch(&losses, patience3().stopping_threshold(2.9), 20)?, 8);
    assert_eq!(stop_epoch(&[9.0, 4.0, 2.0, 16.0, 32.0, 64.0], patience3().divergence_threshold(15.9), 20)?, 3);
    Ok(())
}

/// Ports `tests_pytorch/callbacks/test_early_stopping.py::test_early_stopping_on_non_finite_monitor`:
/// losses `[4, 3, inf|nan, 2, 1]` with `check_finite` stop at epoch 2, and `stopped_epoch == 2`.
#[test]
fn early_stopping_stops_on_a_non_finite_monitor() -> lit::Result<()> {
    for stop_value in [f64::INFINITY, f64::NAN] {
        let losses = [4.0, 3.0, stop_value, 2.0, 1.0];
        let mut trainer = quiet_trainer(&temp_dir("early-stopping-finite"))
            .max_epochs(10)
            .limit_train_batches(1)
            .limit_val_batches(1)
            .callback(EarlyStopping::new("monitored").check_finite(true))
            .build()?;
        trainer.fit(
            &mut Scripted::new(&losses),
            Batches::new(regression_batches(1)),
            Batches::new(regression_batches(1)),
        )?;
        assert_eq!(trainer.current_epoch() - 1, 2, "{stop_value}");
        let stopper = early_stopping(&trainer);
        assert_eq!(stopper.stopped_epoch(), Some(2), "{stop_value}");
    }
    Ok(())
}

/// Requests a stop at the end of every training epoch, as the test below forces early stopping's
/// criteria to say "stop" at every check.
struct StopAtEveryEpochEnd;

impl Callback for StopAtEveryEpochEnd {
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        cx.request_stop();
        Ok(())
    }
}

/// Ports `tests_pytorch/callbacks/test_early_stopping.py::test_min_epochs_min_steps_global_step`
/// (a stop signalled after every epoch): training goes on until `min_steps` are reached and
/// `min_epochs` exhausted; `current_epoch == max(ceil(min_steps / batches), min_epochs)` and
/// `global_step == stop_step` for the eight cases of the Lightning test.
#[test]
fn min_epochs_and_min_steps_against_a_stop_after_every_epoch() -> lit::Result<()> {
    let cases = [
        (3, 0, 10, 10),
        (5, 0, 10, 10),
        (3, 2, 0, 6),
        (5, 2, 0, 10),
        (3, 1, 10, 10),
        (5, 1, 10, 10),
        (3, 3, 10, 10),
        (5, 3, 10, 15),
    ];
    for (limit_train_batches, min_epochs, min_steps, stop_step) in cases {
        let mut trainer = quiet_trainer(&temp_dir("min-epochs-min-steps"))
            .limit_val_batches(0)
            .limit_train_batches(limit_train_batches)
            .min_epochs(min_epochs)
            .min_steps(min_steps)
            .enable_model_summary(false)
            .callback(StopAtEveryEpochEnd)
            .build()?;
        trainer.fit(&mut Flat::new(), Batches::new(regression_batches(8)), ())?;
        let expected_epochs = min_steps.div_ceil(limit_train_batches).max(min_epochs);
        let case = format!("{limit_train_batches} batches, min_epochs {min_epochs}, min_steps {min_steps}");
        assert_eq!(trainer.current_epoch(), expected_epochs, "{case}");
        assert_eq!(trainer.global_step(), stop_step, "{case}");
    }
    Ok(())
}

/// Counts training epochs and (non-sanity) validation epochs.
#[lightning_module]
struct EpochCounter {
    vs: nn::VarStore,
    w: Tensor,
    train_epoch_calls: usize,
    val_epoch_calls: usize,
}

#[lightning_module]
impl EpochCounter {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        EpochCounter { vs, w, train_epoch_calls: 0, val_epoch_calls: 0 }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor)) -> Tensor {
        x.matmul(&self.w).sum(Kind::Float)
    }

    fn validation_step(&mut self, _batch: (Tensor, Tensor)) {}

    fn on_train_epoch_start(&mut self) {
        self.train_epoch_calls += 1;
    }

    fn on_validation_epoch_start(&mut self, cx: &mut Ctx) {
        if !cx.sanity_checking() {
            self.val_epoch_calls += 1;
        }
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.01)
    }
}

/// Ports `tests_pytorch/trainer/flags/test_val_check_interval.py::test_val_check_interval`
/// (max_epochs 1..3, `val_check_interval = 1 / denominator` for 1, 3, 4, 64 training batches):
/// `train_epoch_calls == max_epochs` and `val_epoch_calls == max_epochs * denominator`.
#[test]
fn val_check_interval_fractions_validate_denominator_times_an_epoch() -> lit::Result<()> {
    for max_epochs in [1, 2, 3] {
        for denominator in [1, 3, 4] {
            let mut model = EpochCounter::new();
            let mut trainer = quiet_trainer(&temp_dir("val-check-interval"))
                .max_epochs(max_epochs)
                .val_check_interval(1.0 / denominator as f64)
                .limit_val_batches(1)
                .enable_model_summary(false)
                .build()?;
            trainer.fit(&mut model, Batches::new(regression_batches(64)), Batches::new(regression_batches(1)))?;
            assert_eq!(model.train_epoch_calls, max_epochs);
            assert_eq!(model.val_epoch_calls, max_epochs * denominator, "1/{denominator}, {max_epochs} epochs");
        }
    }
    Ok(())
}

/// Ports `tests_pytorch/trainer/flags/test_check_val_every_n_epoch.py::test_check_val_every_n_epoch`
/// (`check_val_every_n_epoch=2`, no sanity check): 1 epoch → 0 validation loops, 4 → 2, 5 → 2.
#[test]
fn check_val_every_n_epoch_skips_the_epochs_between() -> lit::Result<()> {
    for (max_epochs, expected_val_loop_calls) in [(1, 0), (4, 2), (5, 2)] {
        let mut model = EpochCounter::new();
        let mut trainer = quiet_trainer(&temp_dir("check-val-every"))
            .max_epochs(max_epochs)
            .num_sanity_val_steps(0)
            .limit_val_batches(2)
            .check_val_every_n_epoch(2)
            .enable_model_summary(false)
            .build()?;
        trainer.fit(&mut model, Batches::new(regression_batches(2)), Batches::new(regression_batches(2)))?;
        assert_eq!(model.val_epoch_calls, expected_val_loop_calls, "{max_epochs} epochs");
    }
    Ok(())
}

/// Ports `tests_pytorch/loggers/test_csv.py::test_file_logger_automatic_versioning` (with
/// `version_0`, `version_1`, `version_nonumber` and `other` present, the version is 2),
/// `::test_file_logger_manual_versioning` (a given version is used) and
/// `::test_file_logger_log_metrics` (step 10: a header holding every name, and one row).
#[test]
fn the_csv_logger_versions_and_writes_as_lightnings() -> lit::Result<()> {
    use lit::loggers::{CsvLogger, Logger};

    let root = temp_dir("csv-versions");
    for dir in ["exp/version_0", "exp/version_1", "exp/version_nonumber", "exp/other"] {
        std::fs::create_dir_all(root.join(dir)).expect("make the run directories");
    }
    assert_eq!(Logger::version(&CsvLogger::new(&root).name("exp")), "version_2");
    assert_eq!(Logger::version(&CsvLogger::new(&root).name("exp").version(1)), "version_1");

    let mut logger = CsvLogger::new(temp_dir("csv-metrics"));
    let metrics: std::collections::BTreeMap<String, f64> =
        [("float", 0.3), ("int", 1.0), ("FloatTensor", 0.1), ("IntTensor", 1.0)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
    logger.log_metrics(&metrics, 10)?;
    logger.save()?;
    let text = std::fs::read_to_string(logger.log_dir().expect("made").join("metrics.csv")).expect("metrics.csv");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(metrics.keys().all(|n| lines[0].contains(n.as_str())), "{text}");
    Ok(())
}
