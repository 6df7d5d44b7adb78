//! Ports of Lightning's logging tests (`tests_pytorch/trainer/logging_/test_train_loop_logging.py`,
//! `test_logger_connector.py`, and `trainer/test_trainer.py::test_log_every_n_steps`).
//!
//! Lightning's `BoringModel` is [`Boring`] here: a `Linear(32, 2)` whose loss is the MSE of its
//! output against ones, trained with SGD (lr 0.1), on loaders of `[1, 32]` random rows (64 per
//! epoch, as `DataLoader(RandomDataset(32, 64))`). lit's metric maps hold `f64`s, so Lightning's
//! checks that `callback_metrics` and `logged_metrics` hold tensors and `progress_bar_metrics`
//! floats have no counterpart: the types are fixed by the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use lit::loggers::{CsvLogger, Logger};
use lit::prelude::*;

use super::{boring_layer, boring_loss, random_batches};
use crate::common::{quiet_trainer, temp_dir};

fn keys(metrics: &BTreeMap<String, f64>) -> BTreeSet<String> {
    metrics.keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A map of names to one value.
fn all_equal(names: &[&str], value: f64) -> BTreeMap<String, f64> {
    names.iter().map(|n| (n.to_string(), value)).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// Asserts two metric maps have the same keys and (within 1e-6) the same values.
fn assert_metrics(actual: &BTreeMap<String, f64>, expected: &BTreeMap<String, f64>, what: &str) {
    assert_eq!(keys(actual), keys(expected), "{what}: {actual:?}");
    for (k, v) in expected {
        assert!(close(actual[k], *v), "{what}: `{k}` is {}, expected {v}", actual[k]);
    }
}

/// The Trainer's callback of type `T`.
fn callback<T: 'static>(trainer: &Trainer) -> &T {
    trainer
        .callbacks()
        .iter()
        .find_map(|c| (&**c as &dyn std::any::Any).downcast_ref::<T>())
        .expect("the callback is registered")
}

/// Logs the seven combinations of `test__training_step__log` in `training_step`.
#[lightning_module]
struct SevenWays {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl SevenWays {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        SevenWays { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        let loss = boring_loss(&self.layer, &batch);
        // Logger only.
        cx.log("default", &loss);
        cx.log("l_s", &loss).on_step(true).on_epoch(false).prog_bar(false).logger(true);
        cx.log("l_e", &loss).on_step(false).on_epoch(true).prog_bar(false).logger(true);
        cx.log("l_se", &loss).on_step(true).on_epoch(true).prog_bar(false).logger(true);
        // Progress bar only.
        cx.log("p_s", &loss).on_step(true).on_epoch(false).prog_bar(true).logger(false);
        cx.log("p_e", &loss).on_step(false).on_epoch(true).prog_bar(true).logger(false);
        cx.log("p_se", &loss).on_step(true).on_epoch(true).prog_bar(true).logger(false);
        loss
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test__training_step__log`: values
/// logged in `training_step` with every combination of `on_step`, `on_epoch`, `prog_bar` and
/// `logger` land under the right keys: `logged_metrics == {default, l_e, l_s, l_se_step,
/// l_se_epoch}`, `progress_bar_metrics == {p_e, p_s, p_se_step, p_se_epoch}`, and
/// `callback_metrics` is their union plus the bare `l_se` and `p_se` (2 epochs of 2 batches,
/// `log_every_n_steps=1`, a `ModelCheckpoint` monitoring `l_se`).
#[test]
fn logged_keys_follow_on_step_on_epoch_prog_bar_and_logger() -> lit::Result<()> {
    let root = temp_dir("conf-log-training-step");
    let mut trainer = quiet_trainer(&root)
        .enable_checkpointing(true)
        .limit_train_batches(2)
        .limit_val_batches(2)
        .max_epochs(2)
        .log_every_n_steps(1)
        .callback(ModelCheckpoint::new().dirpath(root.join("ckpts")).monitor("l_se"))
        .build()?;
    trainer.fit(&mut SevenWays::new(), random_batches(64, 1), ())?;

    let logged = set(&["default", "l_e", "l_s", "l_se_step", "l_se_epoch"]);
    assert_eq!(keys(&trainer.logged_metrics()), logged);
    let pbar = set(&["p_e", "p_s", "p_se_step", "p_se_epoch"]);
    assert_eq!(keys(&trainer.progress_bar_metrics()), pbar);
    let callback: BTreeSet<String> = logged.union(&pbar).cloned().chain(set(&["p_se", "l_se"])).collect();
    assert_eq!(keys(&trainer.callback_metrics()), callback);
    assert_eq!(callback.len(), 11);
    Ok(())
}

/// Logs `a` per step and epoch and `a1`, `a2` with `log_dict` in `training_step`, and `b1`,
/// `b` (on the progress bar) in `on_train_epoch_end`.
#[lightning_module]
struct EpochEndLog {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl EpochEndLog {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        EpochEndLog { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        let loss = boring_loss(&self.layer, &batch);
        cx.log("a", &loss).on_step(true).on_epoch(true);
        cx.log_dict([("a1", &loss), ("a2", &loss)]);
        loss
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        cx.log("b1", Tensor::from(1.0f32));
        cx.log("b", Tensor::from(2.0f32)).on_epoch(true).prog_bar(true).logger(true);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test__training_step__epoch_end__log`:
/// `log_dict` in `training_step` and logging in `on_train_epoch_end` give
/// `logged_metrics == {a_step, a_epoch, b, b1, a1, a2}`, `progress_bar_metrics == {b}`, and
/// `callback_metrics` their union plus `a`.
#[test]
fn log_dict_and_epoch_end_logging_give_lightnings_keys() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("conf-log-epoch-end"))
        .limit_train_batches(2)
        .limit_val_batches(2)
        .max_epochs(2)
        .log_every_n_steps(1)
        .build()?;
    trainer.fit(&mut EpochEndLog::new(), random_batches(64, 1), ())?;

    let logged = set(&["a_step", "a_epoch", "b", "b1", "a1", "a2"]);
    assert_eq!(keys(&trainer.logged_metrics()), logged);
    let pbar = set(&["b"]);
    assert_eq!(keys(&trainer.progress_bar_metrics()), pbar);
    let callback: BTreeSet<String> = logged.union(&pbar).cloned().chain(set(&["a"])).collect();
    assert_eq!(keys(&trainer.callback_metrics()), callback);
    Ok(())
}

/// Logs `batch_idx` as `foo` (a long tensor) in training and as `bar` (a float) in
/// validation, epoch-only, reduced with `reduce`.
#[lightning_module]
struct ReduceFx {
    vs: nn::VarStore,
    layer: nn::Linear,
    reduce: Reduce,
}

#[lightning_module]
impl ReduceFx {
    fn new(reduce: Reduce) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        ReduceFx { vs, layer, reduce }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        cx.log("foo", Tensor::from(batch_idx as i64)).on_step(false).on_epoch(true).reduce_fx(self.reduce);
        boring_loss(&self.layer, &batch)
    }

    fn validation_step(&mut self, _batch: Tensor, batch_idx: usize, cx: &mut Ctx) {
        cx.log("bar", Tensor::from(batch_idx as i64).to_kind(Kind::Float))
            .on_step(false)
            .on_epoch(true)
            .reduce_fx(self.reduce);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test__training_step__log_max_reduce_fx`
/// (`(3, min, 0)`, `(3, torch.max, 2)`, `(11, max, 10)`, `(5, "avg", 2)`, `(5, "SUM", 10)`;
/// lit's `Reduce` enum stands for Python's functions and case-insensitive strings, `"avg"`
/// being the mean): the epoch value of `batch_idx` over `batches` batches, in training
/// (`foo`) and validation (`bar`), is `logged_metrics["foo"] == logged_metrics["bar"] == result`.
#[test]
fn epoch_values_are_reduced_with_reduce_fx() -> lit::Result<()> {
    let cases = [
        (3, Reduce::Min, 0.0),
        (3, Reduce::Max, 2.0),
        (11, Reduce::Max, 10.0),
        (5, Reduce::Mean, 2.0),
        (5, Reduce::Sum, 10.0),
    ];
    for (batches, reduce, result) in cases {
        let mut trainer = quiet_trainer(&temp_dir("conf-log-reduce-fx"))
            .limit_train_batches(batches)
            .limit_val_batches(batches)
            .max_epochs(2)
            .build()?;
        trainer.fit(&mut ReduceFx::new(reduce), random_batches(64, 1), random_batches(64, 1))?;
        let logged = trainer.logged_metrics();
        assert_eq!(logged["foo"], result, "{batches} batches, {reduce:?}");
        assert_eq!(logged["bar"], result, "{batches} batches, {reduce:?}");
    }
    Ok(())
}

/// Logs `count` under `{hook}_{idx}` for each combination of options in the training hooks,
/// as the callback of `test_log_works_in_train_callback` does.
#[derive(Default)]
struct LoggingCallback {
    count: usize,
    call_counter: BTreeMap<String, usize>,
    logged_values: BTreeMap<String, Vec<f64>>,
    /// (on_step, on_epoch, prog_bar) of each key.
    logged_arguments: BTreeMap<String, (bool, bool, bool)>,
}

impl LoggingCallback {
    fn make_logging(&mut self, hook: &str, on_steps: &[bool], on_epochs: &[bool], prog_bars: &[bool], cx: &mut Ctx) {
        *self.call_counter.entry(hook.to_string()).or_default() += 1;
        // `itertools.product(on_steps, on_epochs, prog_bars)`, enumerated.
        let product = on_steps
            .iter()
            .flat_map(|&s| on_epochs.iter().flat_map(move |&e| prog_bars.iter().map(move |&p| (s, e, p))));
        for (idx, (on_step, on_epoch, prog_bar)) in product.enumerate() {
            let fx = format!("{hook}_{idx}");
            if !on_step && !on_epoch {
                // Lightning raises here ("is not useful") and the count does not go up; see
                // `logging_neither_per_step_nor_per_epoch_is_an_error`.
                continue;
            }
            cx.log(fx.clone(), self.count as f64).on_step(on_step).on_epoch(on_epoch).prog_bar(prog_bar);
            self.logged_values.entry(fx.clone()).or_default().push(self.count as f64);
            self.logged_arguments.insert(fx, (on_step, on_epoch, prog_bar));
            self.count += 1;
        }
    }
}

const CHOICES: [bool; 2] = [false, true];

impl Callback for LoggingCallback {
    fn on_train_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        self.make_logging("on_train_start", &[false], &[true], &CHOICES, cx);
        Ok(())
    }
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        self.make_logging("on_train_epoch_start", &[false], &[true], &CHOICES, cx);
        Ok(())
    }
    fn on_train_batch_start(&mut self, _batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        self.make_logging("on_train_batch_start", &CHOICES, &CHOICES, &CHOICES, cx);
        Ok(())
    }
    fn on_train_batch_end(&mut self, _: Option<&StepOutput>, _batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        self.make_logging("on_train_batch_end", &CHOICES, &CHOICES, &CHOICES, cx);
        Ok(())
    }
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        self.make_logging("on_train_epoch_end", &[false], &[true], &CHOICES, cx);
        Ok(())
    }
}

/// Logs `train_loss` on the progress bar and keeps every loss.
#[lightning_module]
struct SeenLosses {
    vs: nn::VarStore,
    layer: nn::Linear,
    seen_losses: Vec<f64>,
}

#[lightning_module]
impl SeenLosses {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        SeenLosses { vs, layer, seen_losses: Vec::new() }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        let loss = boring_loss(&self.layer, &batch);
        self.seen_losses.push(loss.double_value(&[]));
        cx.log("train_loss", &loss).prog_bar(true);
        loss
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_log_works_in_train_callback`
/// (lit's callback hooks log through `cx.log`): a callback logs a counter under every option
/// combination in `on_train_start`, `on_train_epoch_start`, `on_train_batch_start/end` and
/// `on_train_epoch_end` (2 batches, 1 epoch). Each bare key's value is the mean of its values
/// when `on_epoch`, else the last (`np.max`); a key is on the progress bar exactly when
/// `prog_bar and (on_step ^ on_epoch)`; `train_loss` is the last loss in the progress bar and
/// callback metrics; each hook ran as often as Lightning calls it.
#[test]
fn callbacks_log_in_the_training_hooks() -> lit::Result<()> {
    let mut model = SeenLosses::new();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-callback"))
        .limit_train_batches(2)
        .limit_val_batches(0)
        .num_sanity_val_steps(0)
        .max_epochs(1)
        .callback(LoggingCallback::default())
        .build()?;
    trainer.fit(&mut model, random_batches(64, 1), ())?;
    let cb: &LoggingCallback = callback(&trainer);
    let (pbar, callback_metrics) = (trainer.progress_bar_metrics(), trainer.callback_metrics());

    let last_loss = *model.seen_losses.last().expect("trained");
    assert_eq!(pbar["train_loss"], last_loss);
    assert_eq!(callback_metrics["train_loss"], last_loss);

    let calls: BTreeMap<String, usize> = [
        ("on_train_start", 1),
        ("on_train_epoch_start", 1),
        ("on_train_batch_start", 2),
        ("on_train_batch_end", 2),
        ("on_train_epoch_end", 1),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    assert_eq!(cb.call_counter, calls);

    for (fx, value) in &callback_metrics {
        let Some(&(_, on_epoch, _)) = cb.logged_arguments.get(fx) else { continue };
        let values = &cb.logged_values[fx];
        let expected = if on_epoch {
            values.iter().sum::<f64>() / values.len() as f64
        } else {
            values.iter().copied().fold(f64::MIN, f64::max)
        };
        assert_eq!(*value, expected, "{fx}: values {values:?}");
    }
    // The values the rule above gives, written out.
    let expected = [
        ("on_train_start_0", 0.0),
        ("on_train_start_1", 1.0),
        ("on_train_epoch_start_0", 2.0),
        ("on_train_epoch_start_1", 3.0),
        ("on_train_epoch_end_0", 28.0),
        ("on_train_epoch_end_1", 29.0),
        ("on_train_batch_start_2", 10.0),
        ("on_train_batch_start_3", 11.0),
        ("on_train_batch_start_4", 18.0),
        ("on_train_batch_start_5", 19.0),
        ("on_train_batch_start_6", 14.0),
        ("on_train_batch_start_7", 15.0),
        ("on_train_batch_end_2", 16.0),
        ("on_train_batch_end_3", 17.0),
        ("on_train_batch_end_4", 24.0),
        ("on_train_batch_end_5", 25.0),
        ("on_train_batch_end_6", 20.0),
        ("on_train_batch_end_7", 21.0),
    ];
    for (fx, value) in expected {
        assert_eq!(callback_metrics.get(fx), Some(&value), "{fx}: {callback_metrics:?}");
    }

    for (fx, &(on_step, on_epoch, prog_bar)) in &cb.logged_arguments {
        let should_include = prog_bar && (on_step ^ on_epoch);
        assert_eq!(pbar.contains_key(fx), should_include, "{fx} on the progress bar: {pbar:?}");
    }
    Ok(())
}

/// Logs `foo` with `on_step` and `on_epoch` both off in `training_step`.
#[lightning_module]
struct NeitherStepNorEpoch {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl NeitherStepNorEpoch {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        NeitherStepNorEpoch { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        cx.log("foo", 1.0).on_step(false).on_epoch(false);
        boring_loss(&self.layer, &batch)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_log_works_in_train_callback` and
/// `trainer/logging_/test_logger_connector.py::test_result_collection_on_tensor_with_mean_reduction`,
/// their `on_step=False, on_epoch=False` case (a `MisconfigurationException` matching "is not
/// useful", and "on_step=False, on_epoch=False"): a value logged neither per step nor per epoch
/// is an error.
#[test]
fn logging_neither_per_step_nor_per_epoch_is_an_error() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("conf-log-neither")).limit_train_batches(1).max_epochs(1).build()?;
    let error = trainer.fit(&mut NeitherStepNorEpoch::new(), random_batches(64, 1), ());
    let message = error.expect_err("logging with on_step=False, on_epoch=False fails").to_string();
    assert!(message.contains("is not useful"), "{message}");
    assert!(message.contains("on_step(false) and on_epoch(false)"), "{message}");
    Ok(())
}

/// `cx.log(name, v)` with `sync_dist` and the given options.
fn log(cx: &mut Ctx, name: &str, v: f64, on_step: bool, on_epoch: bool, reduce: Reduce) {
    cx.log(name, v).on_step(on_step).on_epoch(on_epoch).sync_dist(true).reduce_fx(reduce);
}

/// The module of `test_logging_sync_dist_true`: every reduction, with `sync_dist`.
#[lightning_module]
struct SyncDist {
    vs: nn::VarStore,
    layer: nn::Linear,
    fake_result: f64,
}

#[lightning_module]
impl SyncDist {
    fn new(fake_result: f64) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        SyncDist { vs, layer, fake_result }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let rank = cx.global_rank() as f64;
        let value = self.fake_result + rank;
        let bi = batch_idx as f64;
        log(cx, "foo", value, true, false, Reduce::Sum);
        log(cx, "foo_2", 2.0, true, false, Reduce::Sum);
        log(cx, "foo_3", 2.0, true, false, Reduce::Mean);
        log(cx, "foo_4", value, true, false, Reduce::Mean);
        log(cx, "foo_5", bi + rank, true, false, Reduce::Max);

        log(cx, "foo_6", value, false, true, Reduce::Sum);
        log(cx, "foo_7", 2.0, false, true, Reduce::Sum);
        log(cx, "foo_8", 2.0, false, true, Reduce::Mean);
        log(cx, "foo_9", value, false, true, Reduce::Mean);
        log(cx, "foo_10", bi, false, true, Reduce::Max);
        log(cx, "foo_11", bi + rank, true, true, Reduce::Mean);
        boring_loss(&self.layer, &batch)
    }

    fn validation_step(&mut self, _batch: Tensor, batch_idx: usize, cx: &mut Ctx) {
        let rank = cx.global_rank() as f64;
        cx.log("bar", self.fake_result).on_step(false).on_epoch(true).sync_dist(true).reduce_fx(Reduce::Sum);
        cx.log("bar_2", self.fake_result).on_step(false).on_epoch(true).sync_dist(true).reduce_fx(Reduce::Mean);
        cx.log("bar_3", batch_idx as f64 + rank).on_step(false).on_epoch(true).sync_dist(true).reduce_fx(Reduce::Max);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_logging_sync_dist_true[1-cpu]`
/// (one process, 3 training and 3 validation batches): the assertions that hold for one device
/// (`foo_2 == 2`, `foo_3 == 2`, `foo_7 == 6`, `foo_8 == 2`, `foo_10 == 2`, `bar == 3`,
/// `bar_2 == 1`, `bar_3 == 2`), and the values Lightning's semantics give for the keys whose
/// assertions are vacuous there (`assert x == a if multi else b`): `foo == 1`, `foo_4 == 1`,
/// `foo_5 == 2`, `foo_6 == 3`, `foo_9 == 1`, `foo_11_step == 2`, `foo_11 == 1`.
#[test]
fn sync_dist_reductions_on_one_process() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("conf-log-sync-dist"))
        .max_epochs(1)
        .limit_train_batches(3)
        .limit_val_batches(3)
        .build()?;
    trainer.fit(&mut SyncDist::new(1.0), random_batches(64, 1), random_batches(64, 1))?;
    let metrics = trainer.callback_metrics();
    // Asserted by Lightning.
    assert_eq!(metrics["foo_2"], 2.0);
    assert_eq!(metrics["foo_3"], 2.0);
    assert_eq!(metrics["foo_7"], 6.0);
    assert_eq!(metrics["foo_8"], 2.0);
    assert_eq!(metrics["foo_10"], 2.0);
    assert_eq!(metrics["bar"], 3.0);
    assert_eq!(metrics["bar_2"], 1.0);
    assert_eq!(metrics["bar_3"], 2.0);
    // Derived from Lightning's semantics (the test's own assertions are vacuous on one device).
    assert_eq!(metrics["foo"], 1.0);
    assert_eq!(metrics["foo_4"], 1.0);
    assert_eq!(metrics["foo_5"], 2.0);
    assert_eq!(metrics["foo_6"], 3.0);
    assert_eq!(metrics["foo_9"], 1.0);
    assert_eq!(metrics["foo_11_step"], 2.0);
    assert_eq!(metrics["foo_11"], 1.0);
    Ok(())
}

/// Logs the epoch as `foo` in `training_step` and as `foo_2` in `on_train_epoch_end`, both
/// epoch values on the progress bar.
#[lightning_module]
struct EpochOnBar {
    vs: nn::VarStore,
    layer: nn::Linear,
    on_train_epoch_end_called: bool,
}

#[lightning_module]
impl EpochOnBar {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        EpochOnBar { vs, layer, on_train_epoch_end_called: false }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        let epoch = Tensor::from(cx.current_epoch() as i64);
        cx.log("foo", epoch).on_step(false).on_epoch(true).prog_bar(true);
        boring_loss(&self.layer, &batch)
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        let epoch = Tensor::from(cx.current_epoch() as i64);
        cx.log("foo_2", epoch).prog_bar(true).on_epoch(true).sync_dist(true).reduce_fx(Reduce::Sum);
        self.on_train_epoch_end_called = true;
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Reads the progress bar's metrics in `on_train_end`, as the progress bar of the test below.
#[derive(Default)]
struct BarAtTrainEnd {
    /// `(current_epoch, foo, foo_2)` seen in `on_train_end`.
    seen: Option<(usize, Option<f64>, Option<f64>)>,
}

impl Callback for BarAtTrainEnd {
    fn on_train_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let metrics = cx.progress_bar_metrics();
        self.seen = Some((cx.current_epoch(), metrics.get("foo").copied(), metrics.get("foo_2").copied()));
        Ok(())
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_progress_bar_metrics_contains_values_on_train_epoch_end`
/// (2 epochs of 1 batch): in `on_train_end`, where `current_epoch == 2`, the progress bar holds
/// the last epoch's values of what `training_step` and `on_train_epoch_end` logged:
/// `foo == foo_2 == current_epoch - 1`; both hooks ran.
#[test]
fn the_progress_bar_holds_the_last_epoch_end_values() -> lit::Result<()> {
    let mut model = EpochOnBar::new();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-bar-epoch-end"))
        .max_epochs(2)
        .limit_train_batches(1)
        .limit_val_batches(0)
        .callback(BarAtTrainEnd::default())
        .build()?;
    trainer.fit(&mut model, random_batches(64, 1), ())?;
    assert!(model.on_train_epoch_end_called);
    let (current_epoch, foo, foo_2) = callback::<BarAtTrainEnd>(&trainer).seen.expect("on_train_end ran");
    assert_eq!(current_epoch, 2);
    assert_eq!(foo, Some((current_epoch - 1) as f64));
    assert_eq!(foo_2, Some((current_epoch - 1) as f64));
    Ok(())
}

/// Logs `val_loss` only during the sanity check, and looks at the metric maps at the first
/// training batch.
#[lightning_module]
struct SanityOnly {
    vs: nn::VarStore,
    layer: nn::Linear,
    /// The three maps (progress bar, logged, callback) at batch 0, before logging.
    at_first_batch: Vec<[BTreeMap<String, f64>; 3]>,
}

#[lightning_module]
impl SanityOnly {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        SanityOnly { vs, layer, at_first_batch: Vec::new() }
    }

    fn validation_step(&mut self, batch: Tensor, cx: &mut Ctx) {
        let x = boring_loss(&self.layer, &batch);
        if cx.sanity_checking() {
            cx.log("val_loss", &x).prog_bar(true).logger(true);
        }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let loss = boring_loss(&self.layer, &batch);
        if batch_idx == 0 {
            self.at_first_batch.push([cx.progress_bar_metrics(), cx.logged_metrics(), cx.callback_metrics()]);
        }
        cx.log("train_loss", &loss).prog_bar(true).logger(true);
        loss
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_sanity_metrics_are_reset`: what
/// the sanity check logged is gone when training starts (all three maps are empty at the first
/// training batch) and `val_loss` is not on the progress bar after fit.
#[test]
fn sanity_check_metrics_are_reset_before_training() -> lit::Result<()> {
    let mut model = SanityOnly::new();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-sanity-reset"))
        .max_epochs(1)
        .limit_train_batches(1)
        .limit_val_batches(2)
        .num_sanity_val_steps(2)
        .build()?;
    trainer.fit(&mut model, random_batches(64, 1), random_batches(64, 1))?;
    assert_eq!(model.at_first_batch.len(), 1);
    for map in &model.at_first_batch[0] {
        assert!(map.is_empty(), "{map:?}");
    }
    assert!(!trainer.progress_bar_metrics().contains_key("val_loss"));
    Ok(())
}

/// Logs 1.0 summed in the batch hooks and 3.0 in the epoch-end hooks, checking there that every
/// callback metric is 3.
#[lightning_module]
struct SumOnBatchStart {
    vs: nn::VarStore,
    layer: nn::Linear,
    /// `(hook, sanity checking, callback_metrics)` at each epoch-end check.
    checks: Vec<(&'static str, bool, BTreeMap<String, f64>)>,
}

#[lightning_module]
impl SumOnBatchStart {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        SumOnBatchStart { vs, layer, checks: Vec::new() }
    }

    fn training_step(&mut self, batch: Tensor) -> Tensor {
        boring_loss(&self.layer, &batch)
    }

    fn validation_step(&mut self, _batch: Tensor) {}

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        cx.log("on_train_epoch_end", 3.0).reduce_fx(Reduce::Mean);
        self.checks.push(("on_train_epoch_end", cx.sanity_checking(), cx.callback_metrics()));
    }

    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) {
        cx.log("on_validation_epoch_end", 3.0).reduce_fx(Reduce::Mean);
        self.checks.push(("on_validation_epoch_end", cx.sanity_checking(), cx.callback_metrics()));
    }

    fn on_train_batch_start(&mut self, cx: &mut Ctx) {
        cx.log("on_train_batch_start", 1.0).on_step(false).on_epoch(true).reduce_fx(Reduce::Sum);
    }

    fn on_train_batch_end(&mut self, cx: &mut Ctx) {
        cx.log("on_train_batch_end", 1.0).on_step(false).on_epoch(true).reduce_fx(Reduce::Sum);
    }

    fn on_validation_batch_start(&mut self, cx: &mut Ctx) {
        cx.log("on_validation_batch_start", 1.0).reduce_fx(Reduce::Sum);
    }

    fn on_validation_batch_end(&mut self, cx: &mut Ctx) {
        cx.log("on_validation_batch_end", 1.0).reduce_fx(Reduce::Sum);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_on_epoch_logging_with_sum_and_on_batch_start`
/// (3 training and 3 validation batches of 2 rows, 3 sanity batches): 1.0 logged with
/// `reduce_fx="sum"` in the batch hooks and 3.0 in the epoch-end hooks make every value of
/// `callback_metrics` 3 in `on_train_epoch_end` and `on_validation_epoch_end`, during the sanity
/// check and the real run (the check of `trainer._results` is internal and not ported).
#[test]
fn sums_logged_in_batch_hooks_are_seen_at_epoch_end() -> lit::Result<()> {
    let mut model = SumOnBatchStart::new();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-sum-batch-start"))
        .limit_train_batches(3)
        .limit_val_batches(3)
        .num_sanity_val_steps(3)
        .max_epochs(1)
        .build()?;
    trainer.fit(&mut model, random_batches(32, 2), random_batches(32, 2))?;
    let ran: Vec<(&str, bool)> = model.checks.iter().map(|(hook, sanity, _)| (*hook, *sanity)).collect();
    assert_eq!(
        ran,
        [("on_validation_epoch_end", true), ("on_validation_epoch_end", false), ("on_train_epoch_end", false)]
    );
    for (hook, sanity, metrics) in &model.checks {
        assert!(metrics.values().all(|&v| v == 3.0), "{hook} (sanity {sanity}): {metrics:?}");
    }
    Ok(())
}

/// One `log_metrics` call: the metrics and the step.
type Call = (BTreeMap<String, f64>, usize);

/// A logger that records every `log_metrics` call (Lightning's tests mock
/// `TensorBoardLogger.log_metrics`).
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Call>>>);

impl Logger for Recording {
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
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> lit::Result<()> {
        self.0.lock().unwrap().push((metrics.clone(), step));
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Recording {
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
}

fn call(metrics: &[(&str, f64)], step: usize) -> Call {
    (metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(), step)
}

/// Whether `expected` appears in `calls` as a contiguous run (`mock.assert_has_calls`).
fn has_calls<T: PartialEq>(calls: &[T], expected: &[T]) -> bool {
    expected.is_empty() || calls.windows(expected.len()).any(|w| w == expected)
}

/// Logs 0.0 as `foo` per step and per epoch.
#[lightning_module]
struct FooStepEpoch {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl FooStepEpoch {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        FooStepEpoch { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        cx.log("foo", 0.0).on_step(true).on_epoch(true);
        boring_loss(&self.layer, &batch)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_log_metrics_epoch_step_values`
/// (2 epochs of 2 batches, `log_every_n_steps=1`): the logger receives, in a row,
/// `{foo_step, epoch: 0}` at steps 0 and 1, `{foo_epoch, epoch: 0}` at step 1 (the last batch's
/// step), then the same for epoch 1 at steps 2, 3 and 3.
#[test]
fn step_and_epoch_values_reach_the_logger_at_lightnings_steps() -> lit::Result<()> {
    let recording = Recording::default();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-epoch-step-values"))
        .limit_train_batches(2)
        .limit_val_batches(0)
        .max_epochs(2)
        .log_every_n_steps(1)
        .with_logger(recording.clone())
        .build()?;
    trainer.fit(&mut FooStepEpoch::new(), random_batches(64, 1), ())?;
    let expected = [
        call(&[("foo_step", 0.0), ("epoch", 0.0)], 0),
        call(&[("foo_step", 0.0), ("epoch", 0.0)], 1),
        call(&[("foo_epoch", 0.0), ("epoch", 0.0)], 1),
        call(&[("foo_step", 0.0), ("epoch", 1.0)], 2),
        call(&[("foo_step", 0.0), ("epoch", 1.0)], 3),
        call(&[("foo_epoch", 0.0), ("epoch", 1.0)], 3),
    ];
    let calls = recording.calls();
    assert!(has_calls(&calls, &expected), "{calls:?}");
    Ok(())
}

/// Logs 123 in `on_train_start`.
#[lightning_module]
struct LogOnTrainStart {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl LogOnTrainStart {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        LogOnTrainStart { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor) -> Tensor {
        boring_loss(&self.layer, &batch)
    }

    fn on_train_start(&mut self, cx: &mut Ctx) {
        cx.log("foo", 123);
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_train_loop_logging.py::test_log_on_train_start` (2 epochs of
/// 1 batch): a value logged in `on_train_start` reaches the logger once, with the first epoch's
/// values: the calls are exactly `[({"foo": 123.0, "epoch": 0}, step 0)]`.
#[test]
fn a_value_logged_on_train_start_is_logged_once() -> lit::Result<()> {
    let recording = Recording::default();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-on-train-start"))
        .limit_train_batches(1)
        .limit_val_batches(0)
        .max_epochs(2)
        .log_every_n_steps(1)
        .with_logger(recording.clone())
        .build()?;
    trainer.fit(&mut LogOnTrainStart::new(), random_batches(64, 1), ())?;
    assert_eq!(recording.calls(), [call(&[("foo", 123.0), ("epoch", 0.0)], 0)]);
    assert!(trainer.config().max_epochs.is_some_and(|m| m > 1));
    Ok(())
}

/// Logs value `v = batch_idx + 1` with `batch_size = v²` under all sixteen option
/// combinations but the (F, F) ones, and keeps the three metric maps after the last step.
#[lightning_module]
struct MeanReduction {
    vs: nn::VarStore,
    layer: nn::Linear,
    /// (progress bar, logged, callback) at the end of the last batch.
    at_last_step: Option<[BTreeMap<String, f64>; 3]>,
}

#[lightning_module]
impl MeanReduction {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        MeanReduction { vs, layer, at_last_step: None }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let v = (batch_idx + 1) as f64;
        let batch_size = (batch_idx + 1) * (batch_idx + 1);
        for prog_bar in [false, true] {
            for logger in [false, true] {
                for (on_step, on_epoch) in [(true, true), (false, true), (true, false)] {
                    // (False, False) is an error in Lightning; see
                    // `logging_neither_per_step_nor_per_epoch_is_an_error`.
                    let mut name = "loss".to_string();
                    for (on, suffix) in
                        [(on_step, "_on_step"), (on_epoch, "_on_epoch"), (prog_bar, "_prog_bar"), (logger, "_logger")]
                    {
                        if on {
                            name.push_str(suffix);
                        }
                    }
                    cx.log(name, v)
                        .on_step(on_step)
                        .on_epoch(on_epoch)
                        .batch_size(batch_size)
                        .prog_bar(prog_bar)
                        .logger(logger);
                }
            }
        }
        boring_loss(&self.layer, &batch)
    }

    fn on_train_batch_end(&mut self, batch_idx: usize, cx: &mut Ctx) {
        if batch_idx == 8 {
            self.at_last_step = Some([cx.progress_bar_metrics(), cx.logged_metrics(), cx.callback_metrics()]);
        }
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_logger_connector.py::test_result_collection_on_tensor_with_mean_reduction`
/// (through `training_step` and `.batch_size(n)`, not the internal `_ResultCollection`): values
/// 1..9 logged with batch sizes 1², …, 9². After the last step, the step metrics are all 9 under
/// Lightning's 4 progress-bar keys, 4 logger keys and 12 callback keys; after the epoch, the
/// epoch metrics are the batch-size-weighted mean `Σv·v² / Σv² = 2025 / 285` under its 4
/// progress-bar keys, 4 logger keys and 12 callback keys. lit's maps keep the step values beside
/// the epoch values (as Lightning's `trainer.*_metrics` do), so each final map is the step
/// metrics updated with the epoch metrics.
#[test]
fn epoch_means_are_weighted_by_batch_size() -> lit::Result<()> {
    let mut model = MeanReduction::new();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-mean-reduction"))
        .limit_train_batches(9)
        .limit_val_batches(0)
        .max_epochs(1)
        .build()?;
    trainer.fit(&mut model, random_batches(64, 1), ())?;

    let max = 9.0;
    let step_pbar = all_equal(
        &[
            "loss_on_step_on_epoch_prog_bar_step",
            "loss_on_step_on_epoch_prog_bar_logger_step",
            "loss_on_step_prog_bar",
            "loss_on_step_prog_bar_logger",
        ],
        max,
    );
    let step_log = all_equal(
        &[
            "loss_on_step_on_epoch_logger_step",
            "loss_on_step_logger",
            "loss_on_step_on_epoch_prog_bar_logger_step",
            "loss_on_step_prog_bar_logger",
        ],
        max,
    );
    let step_callback = all_equal(
        &[
            "loss_on_step",
            "loss_on_step_logger",
            "loss_on_step_on_epoch",
            "loss_on_step_on_epoch_logger",
            "loss_on_step_on_epoch_logger_step",
            "loss_on_step_on_epoch_prog_bar",
            "loss_on_step_on_epoch_prog_bar_logger",
            "loss_on_step_on_epoch_prog_bar_logger_step",
            "loss_on_step_on_epoch_prog_bar_step",
            "loss_on_step_on_epoch_step",
            "loss_on_step_prog_bar",
            "loss_on_step_prog_bar_logger",
        ],
        max,
    );
    let [pbar, log, callback] = model.at_last_step.take().expect("batch 8 ran");
    assert_metrics(&pbar, &step_pbar, "step progress bar metrics");
    assert_metrics(&log, &step_log, "step logged metrics");
    assert_metrics(&callback, &step_callback, "step callback metrics");

    let mean = 2025.0 / 285.0;
    let epoch_pbar = all_equal(
        &[
            "loss_on_epoch_prog_bar",
            "loss_on_epoch_prog_bar_logger",
            "loss_on_step_on_epoch_prog_bar_epoch",
            "loss_on_step_on_epoch_prog_bar_logger_epoch",
        ],
        mean,
    );
    let epoch_log = all_equal(
        &[
            "loss_on_epoch_logger",
            "loss_on_epoch_prog_bar_logger",
            "loss_on_step_on_epoch_logger_epoch",
            "loss_on_step_on_epoch_prog_bar_logger_epoch",
        ],
        mean,
    );
    let epoch_callback = all_equal(
        &[
            "loss_on_epoch",
            "loss_on_epoch_logger",
            "loss_on_epoch_prog_bar",
            "loss_on_epoch_prog_bar_logger",
            "loss_on_step_on_epoch",
            "loss_on_step_on_epoch_epoch",
            "loss_on_step_on_epoch_logger",
            "loss_on_step_on_epoch_logger_epoch",
            "loss_on_step_on_epoch_prog_bar",
            "loss_on_step_on_epoch_prog_bar_epoch",
            "loss_on_step_on_epoch_prog_bar_logger",
            "loss_on_step_on_epoch_prog_bar_logger_epoch",
        ],
        mean,
    );
    let updated = |step: &BTreeMap<String, f64>, epoch: &BTreeMap<String, f64>| {
        let mut all = step.clone();
        all.extend(epoch.iter().map(|(k, v)| (k.clone(), *v)));
        all
    };
    assert_metrics(&trainer.progress_bar_metrics(), &updated(&step_pbar, &epoch_pbar), "progress bar metrics");
    assert_metrics(&trainer.logged_metrics(), &updated(&step_log, &epoch_log), "logged metrics");
    assert_metrics(&trainer.callback_metrics(), &updated(&step_callback, &epoch_callback), "callback metrics");
    Ok(())
}

/// Logs `-batch_idx` under the name `epoch`.
#[lightning_module]
struct LogsEpoch {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl LogsEpoch {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        LogsEpoch { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        cx.log("epoch", -(batch_idx as f64)).logger(true);
        boring_loss(&self.layer, &batch)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

fn fit_logging_epoch(logger: bool) -> lit::Result<Trainer> {
    let root = temp_dir(&format!("conf-log-epoch-key-{logger}"));
    let mut builder = quiet_trainer(&root).limit_train_batches(2).limit_val_batches(0).max_epochs(1);
    if logger {
        builder = builder.with_logger(CsvLogger::new(&root));
    }
    let mut trainer = builder.build()?;
    trainer.fit(&mut LogsEpoch::new(), random_batches(64, 1), ())?;
    Ok(trainer)
}

/// Port of `trainer/logging_/test_logger_connector.py::test_logged_metrics_has_logged_epoch_value`
/// (`logger` False and True, the latter a CSV logger; 2 batches): a user's `epoch` key is not
/// replaced by the automatic one: `logged_metrics == {"epoch": -1}`.
#[test]
fn a_logged_epoch_key_is_the_users_value() -> lit::Result<()> {
    for logger in [false, true] {
        let trainer = fit_logging_epoch(logger)?;
        let expected: BTreeMap<String, f64> = [("epoch".to_string(), -1.0)].into();
        assert_eq!(trainer.logged_metrics(), expected, "logger {logger}");
    }
    Ok(())
}

/// Port of `trainer/logging_/test_logger_connector.py::test_logged_metrics_has_logged_epoch_value[False]`,
/// the run whose warning `logging_for_the_logger_without_a_logger_warns` looks for.
#[test]
#[ignore = "run by logging_for_the_logger_without_a_logger_warns, in a process of its own"]
fn logging_without_a_logger_child() {
    fit_logging_epoch(false).unwrap();
}

/// Port of `trainer/logging_/test_logger_connector.py::test_logged_metrics_has_logged_epoch_value[False]`,
/// its warning: `log("epoch", ..., logger=True)` with no logger warns, naming the key, that there is no
/// logger (Lightning: "You called `self.log('epoch', ..., logger=True)` but have no logger
/// configured").
#[test]
fn logging_for_the_logger_without_a_logger_warns() {
    let output = crate::common::run_in_own_process("conformance::logging::logging_without_a_logger_child");
    assert!(output.contains("warning") && output.contains("epoch") && output.contains("no logger"), "{output}");
}

/// Logs as `test_result_collection_no_batch_size_extraction` does at batch 0, and one more
/// epoch value at batch 1 that shows the accumulated value and batch size.
#[lightning_module]
struct ExplicitBatchSize {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl ExplicitBatchSize {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        ExplicitBatchSize { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let log_val = Tensor::from(7.0f32);
        if batch_idx == 0 {
            cx.log("step_log_val", &log_val).on_step(true).on_epoch(false);
            cx.log("epoch_log_val", &log_val).on_step(false).on_epoch(true).batch_size(10);
            cx.log("epoch_sum_log_val", &log_val).on_step(true).on_epoch(true).reduce_fx(Reduce::Sum);
        } else {
            // The batch's own size (1 row).
            cx.log("epoch_log_val", 1.0).on_step(false).on_epoch(true);
        }
        boring_loss(&self.layer, &batch)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Port of `trainer/logging_/test_logger_connector.py::test_result_collection_no_batch_size_extraction`
/// (through `training_step`; the torchmetrics part is left out): with `batch_size=10` given,
/// the epoch accumulator of `epoch_log_val` holds `7·10 = 70` over a batch size of 10, not the
/// batch's own size of 1; Lightning asserts the accumulator, which lit does not expose, so a
/// second batch adds 1.0 over its own size 1 and the epoch mean must be `(70 + 1) / (10 + 1)`.
/// A step-only value is not accumulated (`step_log_val == 7`), and the sum reduction gives 7.
#[test]
fn an_explicit_batch_size_weights_the_epoch_mean() -> lit::Result<()> {
    let mut trainer = quiet_trainer(&temp_dir("conf-log-batch-size"))
        .limit_train_batches(2)
        .limit_val_batches(0)
        .max_epochs(1)
        .build()?;
    trainer.fit(&mut ExplicitBatchSize::new(), random_batches(64, 1), ())?;
    let metrics = trainer.callback_metrics();
    assert_eq!(metrics["step_log_val"], 7.0);
    assert!(close(metrics["epoch_log_val"], 71.0 / 11.0), "{metrics:?}");
    assert_eq!(metrics["epoch_sum_log_val_epoch"], 7.0);
    assert!(!metrics.contains_key("step_log_val_epoch"), "{metrics:?}");
    Ok(())
}

/// Logs -1 as `foo`, per step.
#[lightning_module]
struct FooPerStep {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl FooPerStep {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = boring_layer(&vs);
        FooPerStep { vs, layer }
    }

    fn training_step(&mut self, batch: Tensor, cx: &mut Ctx) -> Tensor {
        cx.log("foo", -1);
        boring_loss(&self.layer, &batch)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// The steps of `log_metrics` calls of a run with `train_batches` batches an epoch.
fn logged_steps(train_batches: usize, max_steps: usize, log_interval: usize) -> lit::Result<Vec<usize>> {
    let recording = Recording::default();
    let mut trainer = quiet_trainer(&temp_dir("conf-log-every-n-steps"))
        .log_every_n_steps(log_interval)
        .limit_train_batches(train_batches)
        .limit_val_batches(0)
        .max_steps(max_steps)
        .with_logger(recording.clone())
        .build()?;
    trainer.fit(&mut FooPerStep::new(), random_batches(64, 1), ())?;
    Ok(recording.calls().into_iter().map(|(_, step)| step).collect())
}

/// Port of `trainer/test_trainer.py::test_log_every_n_steps[10-10-1]` and `[3-10-1]`: the logger
/// is called at the steps `range(log_interval - 1, max_steps, log_interval)`, in a row.
#[test]
fn log_every_n_steps_logs_at_every_nth_step() -> lit::Result<()> {
    for (train_batches, max_steps, log_interval) in [(10, 10, 1), (3, 10, 1)] {
        let steps = logged_steps(train_batches, max_steps, log_interval)?;
        let expected: Vec<usize> = (log_interval - 1..max_steps).step_by(log_interval).collect();
        assert!(has_calls(&steps, &expected), "({train_batches}, {max_steps}, {log_interval}): {steps:?}");
    }
    Ok(())
}

/// Port of `trainer/test_trainer.py::test_log_every_n_steps[3-10-5]`: with 3 batches an epoch
/// and `log_every_n_steps=5`, the logger is called at steps 4 and 9 in a row; step values left
/// unlogged at an epoch's end are not sent then (Lightning sends only epoch metrics there).
#[test]
fn log_every_n_steps_does_not_flush_step_values_at_epoch_end() -> lit::Result<()> {
    let (train_batches, max_steps, log_interval) = (3, 10, 5);
    let steps = logged_steps(train_batches, max_steps, log_interval)?;
    let expected: Vec<usize> = (log_interval - 1..max_steps).step_by(log_interval).collect();
    assert_eq!(expected, [4, 9]);
    assert!(has_calls(&steps, &expected), "({train_batches}, {max_steps}, {log_interval}): {steps:?}");
    Ok(())
}
