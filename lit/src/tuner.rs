//! The tuner: Lightning's `Tuner(trainer).lr_find(model, …)`, a learning-rate range test.
//!
//! [`Tuner::lr_find`] trains the module for up to `num_training` optimizer steps while the
//! learning rate grows from `min_lr` to `max_lr` (exponentially or linearly, by Lightning's
//! formulas), records the smoothed loss after each step, stops early once the loss diverges, and
//! suggests the rate where the loss falls fastest. The range test is a `fit` of the Trainer with
//! its own callback only, no loggers and no checkpoints; afterwards the Trainer, the module's
//! weights and the random generator are as they were, and with `update_attr` the module's
//! `#[hparams]` learning rate is the suggestion, so the next `fit` trains with it.
//!
//! ```no_run
//! # use lit::prelude::*;
//! # fn run<M: LightningModule<ValBatch = ()>>(model: &mut M, mut train: impl lit::data::Loader<Batch = M::TrainBatch>) -> lit::Result<()> {
//! let mut trainer = Trainer::builder().max_epochs(3).build()?;
//! let finder = Tuner::new(&mut trainer).lr_find(model, &mut train, (), LrFindOptions::default())?;
//! finder.plot("lr_find.svg", true)?;
//! println!("suggested learning rate: {:?}", finder.suggestion());
//! trainer.fit(model, train, ())?; // with the suggestion, set in the module's `#[hparams]`
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::callback::Callback;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::module::{LightningModule, StepOutput};
use crate::trainer::{IntoLoaders, Limit, Trainer, TrainerConfig};

/// How the learning rate grows during the range test (Lightning's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrMode {
    /// From `min_lr` to `max_lr` by a constant factor per step (Lightning's `_ExponentialLR`).
    #[default]
    Exponential,
    /// From `min_lr` to `max_lr` by a constant increment per step (Lightning's `_LinearLR`).
    Linear,
}

impl LrMode {
    /// The learning rate of optimizer step `step` (0-based) of a range test of `num_training`
    /// steps. As Lightning's schedulers (stepped once when made and after every optimizer step),
    /// step 0 runs at `min_lr` and step k ≥ 1 at the fraction r = (k + 1) / `num_training` of the
    /// way: `min_lr · (max_lr / min_lr)^r` or `min_lr + r · (max_lr − min_lr)`.
    pub fn lr(self, min_lr: f64, max_lr: f64, num_training: usize, step: usize) -> f64 {
        if step == 0 {
            return min_lr;
        }
        let r = (step + 1) as f64 / num_training as f64;
        match self {
            LrMode::Exponential => min_lr * (max_lr / min_lr).powf(r),
            LrMode::Linear => min_lr + r * (max_lr - min_lr),
        }
    }
}

impl fmt::Display for LrMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LrMode::Exponential => "exponential",
            LrMode::Linear => "linear",
        })
    }
}

impl FromStr for LrMode {
    type Err = TunerError;
    /// `"exponential"` or `"linear"`, in any case (as Lightning lower-cases `mode`).
    fn from_str(text: &str) -> Result<Self, TunerError> {
        match text.to_lowercase().as_str() {
            "exponential" => Ok(LrMode::Exponential),
            "linear" => Ok(LrMode::Linear),
            _ => Err(TunerError::invalid("mode", format!("should be either of `linear`, `exponential`, got `{text}`"))),
        }
    }
}

/// What [`Tuner::lr_find`] is asked to do, with the defaults of Lightning's `Tuner.lr_find`.
/// Deserialises from a configuration file (every field optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LrFindOptions {
    /// The learning rate of the first step (1e-8).
    pub min_lr: f64,
    /// The learning rate the range test ends at (1.0).
    pub max_lr: f64,
    /// Optimizer steps of the range test, one learning rate each (100).
    pub num_training: usize,
    /// How the learning rate grows (exponentially).
    pub mode: LrMode,
    /// Stop once the smoothed loss exceeds this many times the best so far (4.0); `None`: never.
    pub early_stop_threshold: Option<f64>,
    /// Set the module's learning rate (an `#[hparams]` field) to the suggestion (true).
    pub update_attr: bool,
    /// The `#[hparams]` field holding the learning rate (`"optimizer.lr"` for a nested one);
    /// empty: `lr` or `learning_rate`, whichever exists.
    pub attr_name: String,
}

impl Default for LrFindOptions {
    fn default() -> Self {
        LrFindOptions {
            min_lr: 1e-8,
            max_lr: 1.0,
            num_training: 100,
            mode: LrMode::Exponential,
            early_stop_threshold: Some(4.0),
            update_attr: true,
            attr_name: String::new(),
        }
    }
}

impl LrFindOptions {
    /// With this first learning rate.
    pub fn min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = min_lr;
        self
    }
    /// With this last learning rate.
    pub fn max_lr(mut self, max_lr: f64) -> Self {
        self.max_lr = max_lr;
        self
    }
    /// With this many steps.
    pub fn num_training(mut self, num_training: usize) -> Self {
        self.num_training = num_training;
        self
    }
    /// With this growth.
    pub fn mode(mut self, mode: LrMode) -> Self {
        self.mode = mode;
        self
    }
    /// With this divergence threshold (`None`: run all `num_training` steps).
    pub fn early_stop_threshold(mut self, threshold: Option<f64>) -> Self {
        self.early_stop_threshold = threshold;
        self
    }
    /// Whether to set the module's learning rate to the suggestion.
    pub fn update_attr(mut self, update_attr: bool) -> Self {
        self.update_attr = update_attr;
        self
    }
    /// The `#[hparams]` field that holds the learning rate.
    pub fn attr_name(mut self, attr_name: impl Into<String>) -> Self {
        self.attr_name = attr_name.into();
        self
    }

    /// Checks the options before anything runs.
    fn check(&self) -> Result<(), TunerError> {
        if self.num_training < 2 {
            return Err(TunerError::invalid(
                "num_training",
                format!("must be at least 2 (a range test tries that many learning rates), got {}", self.num_training),
            ));
        }
        let lowest = if self.mode == LrMode::Exponential { "above 0 (exponential mode)" } else { "0 or more" };
        let low_ok = if self.mode == LrMode::Exponential { self.min_lr > 0.0 } else { self.min_lr >= 0.0 };
        if !self.min_lr.is_finite() || !low_ok {
            return Err(TunerError::invalid("min_lr", format!("must be finite and {lowest}, got {}", self.min_lr)));
        }
        if !self.max_lr.is_finite() || self.max_lr <= self.min_lr {
            return Err(TunerError::invalid(
                "max_lr",
                format!("must be finite and above `min_lr` ({}), got {}", self.min_lr, self.max_lr),
            ));
        }
        if let Some(t) = self.early_stop_threshold.filter(|t| !t.is_finite() || *t <= 0.0) {
            return Err(TunerError::invalid(
                "early_stop_threshold",
                format!("must be a positive number (or `None` to run every step), got {t}"),
            ));
        }
        Ok(())
    }
}

/// A problem with `lr_find`'s options or with the module it tunes. It reaches the caller as a
/// [`lit::Error`](crate::Error); `error.downcast_ref::<TunerError>()` gives it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunerError {
    /// An option has a value it cannot take.
    #[error("lr_find option `{option}`: {problem}")]
    Invalid {
        /// The option, e.g. `min_lr`.
        option: &'static str,
        /// Why the value is wrong.
        problem: String,
    },
    /// `configure_optimizers` did not return exactly one optimizer.
    #[error(
        "lr_find: `configure_optimizers` returned {}, but the learning rate finder works with a single optimizer only",
        optimizers(*.count)
    )]
    Optimizers {
        /// How many it returned.
        count: usize,
    },
    /// `update_attr` cannot find the learning rate among the module's hyper-parameters.
    #[error("lr_find: {0}")]
    LrAttr(String),
    /// The plot's file is not an SVG file.
    #[error("lr_find plot {}: lit draws SVG; give a path ending in `.svg`", .0.display())]
    PlotFormat(std::path::PathBuf),
}

fn optimizers(count: usize) -> String {
    match count {
        0 => "no optimizer".into(),
        1 => "1 optimizer".into(),
        n => format!("{n} optimizers"),
    }
}

impl TunerError {
    fn invalid(option: &'static str, problem: impl fmt::Display) -> Self {
        TunerError::Invalid { option, problem: problem.to_string() }
    }
}

/// The learning rates tried and the smoothed loss after each (Lightning's `results`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LrFindResults {
    /// The learning rate of each recorded step.
    pub lr: Vec<f64>,
    /// The smoothed loss after it (NaN where `training_step` returned no loss).
    pub loss: Vec<f64>,
}

/// What a range test found (Lightning's `_LRFinder`): its [`results`](LrFinder::results), a
/// [`suggestion`](LrFinder::suggestion), and a [`plot`](LrFinder::plot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LrFinder {
    /// How the learning rate grew.
    pub mode: LrMode,
    /// The first learning rate.
    pub min_lr: f64,
    /// The last learning rate.
    pub max_lr: f64,
    /// The steps asked for.
    pub num_training: usize,
    /// The learning rates and smoothed losses recorded.
    pub results: LrFindResults,
}

impl LrFinder {
    /// A finder holding `results` (e.g. to compute a suggestion for results kept elsewhere).
    pub fn new(mode: LrMode, min_lr: f64, max_lr: f64, num_training: usize, results: LrFindResults) -> Self {
        LrFinder { mode, min_lr, max_lr, num_training, results }
    }

    /// The suggested learning rate, skipping the first 10 points and the last one (Lightning's
    /// defaults); see [`LrFinder::suggestion_with`].
    pub fn suggestion(&self) -> Option<f64> {
        self.suggestion_with(10, 1)
    }

    /// The learning rate where the smoothed loss falls fastest: the most negative gradient of the
    /// loss with respect to the learning rate (numpy's `np.gradient(loss, lr)`: second-order
    /// central differences inside, one-sided at the ends), over the finite points after the first
    /// `skip_begin` and before the last `skip_end`. `None`, with a warning, when fewer than two
    /// finite points remain. (`skip_end = 0` skips nothing; Lightning's `[skip_begin:-0]` is
    /// empty.)
    pub fn suggestion_with(&self, skip_begin: usize, skip_end: usize) -> Option<f64> {
        self.suggestion_index(skip_begin, skip_end).map(|i| self.results.lr[i])
    }

    /// The index in [`results`](LrFinder::results) of [`suggestion_with`](LrFinder::suggestion_with)'s
    /// learning rate (Lightning's `_optimal_idx`).
    pub fn suggestion_index(&self, skip_begin: usize, skip_end: usize) -> Option<usize> {
        let n = self.results.lr.len().min(self.results.loss.len());
        let end = n.saturating_sub(skip_end);
        let (index, (lrs, losses)): (Vec<usize>, (Vec<f64>, Vec<f64>)) = (skip_begin.min(end)..end)
            .filter(|&i| self.results.loss[i].is_finite())
            .map(|i| (i, (self.results.lr[i], self.results.loss[i])))
            .unzip();
        if losses.len() < 2 {
            crate::warning::warn(
                "Failed to compute suggestion for learning rate because there are not enough points. Increase the \
                 loop iteration limits or the size of your dataset/dataloader.",
            );
            return None;
        }
        Some(index[argmin(&gradient(&losses, &lrs))])
    }

    /// The loss against the learning rate as an SVG document (a log scale in exponential mode),
    /// the suggestion marked with a red dot when `suggest`.
    pub fn to_svg(&self, suggest: bool) -> String {
        let points: Vec<(f64, f64)> = self.results.lr.iter().copied().zip(self.results.loss.iter().copied()).collect();
        let marker = if suggest { self.suggestion_index(10, 1).map(|i| points[i]) } else { None };
        crate::loggers::plot::chart_svg(&crate::loggers::plot::Chart {
            title: "Loss",
            x_name: "Learning rate",
            points: &points,
            log_x: self.mode == LrMode::Exponential,
            marker,
        })
    }

    /// Writes [`to_svg`](LrFinder::to_svg) to `path`, which must end in `.svg` (Lightning's
    /// `plot(suggest=…)`, drawn without matplotlib).
    pub fn plot(&self, path: impl AsRef<Path>, suggest: bool) -> Result<()> {
        let path = path.as_ref();
        if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
            return Err(TunerError::PlotFormat(path.to_path_buf()).into());
        }
        std::fs::write(path, self.to_svg(suggest)).map_err(|e| Error::io(path, e))
    }
}

/// `np.gradient(f, x)` (edge order 1) for strictly ordered coordinates `x`.
fn gradient(f: &[f64], x: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut out = vec![0.0; n];
    out[0] = (f[1] - f[0]) / (x[1] - x[0]);
    out[n - 1] = (f[n - 1] - f[n - 2]) / (x[n - 1] - x[n - 2]);
    for i in 1..n - 1 {
        let (dx1, dx2) = (x[i] - x[i - 1], x[i + 1] - x[i]);
        let a = -dx2 / (dx1 * (dx1 + dx2));
        let b = (dx2 - dx1) / (dx1 * dx2);
        let c = dx1 / (dx2 * (dx1 + dx2));
        out[i] = a * f[i - 1] + b * f[i] + c * f[i + 1];
    }
    out
}

/// The index of the smallest value, the first of equal ones; a NaN counts as smallest (as
/// `np.argmin` and `torch.argmin`).
fn argmin(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v < values[best] {
            best = i;
        }
    }
    best
}

/// Lightning's `Tuner`: tunes a module's hyper-parameters with a Trainer's runs.
pub struct Tuner<'t> {
    trainer: &'t mut Trainer,
}

impl<'t> Tuner<'t> {
    /// A tuner that runs `trainer`.
    pub fn new(trainer: &'t mut Trainer) -> Self {
        Tuner { trainer }
    }

    /// The learning-rate range test (Lightning's `Tuner.lr_find`), on `train` (or the module's
    /// `train_dataloader`), validating on `val` as `fit` would (at most `num_training` batches per
    /// loader, no sanity check).
    ///
    /// The module's single optimizer trains for up to `num_training` optimizer steps (within the
    /// Trainer's `max_epochs` and `limit_train_batches`, counted on from the Trainer's epoch and
    /// step), its learning rate set before each step by [`LrMode::lr`] and its schedulers left
    /// out. After each step the loss is smoothed as Lightning smooths it (`avg = 0.98·avg +
    /// 0.02·loss`, divided by `1 − 0.98^(global_step + 1)`); once a smoothed loss exceeds
    /// `early_stop_threshold` times the best one, the test stops. The Trainer's callbacks (and
    /// the module's `configure_callbacks`), loggers, progress bar and checkpoints sit it out.
    ///
    /// Afterwards the module's variables, the Trainer's state (epoch, step, optimizers,
    /// schedulers, callbacks, loggers, configuration) and the CPU random generator are as they
    /// were, also when the test fails. With `update_attr`, the module's learning rate (the
    /// `#[hparams]` field `lr` or `learning_rate`, or `attr_name`) is then set to the suggestion,
    /// if there is one; a module without such a field is an error before anything runs.
    ///
    /// With `fast_dev_run`, nothing runs: a warning, and a finder with no results.
    pub fn lr_find<'a, M: LightningModule>(
        &mut self,
        model: &mut M,
        train: impl IntoLoaders<'a, M::TrainBatch>,
        val: impl IntoLoaders<'a, M::ValBatch>,
        options: LrFindOptions,
    ) -> Result<LrFinder> {
        self.lr_find_with(model, options, |trainer, model| trainer.fit(model, train, val))
    }

    /// [`lr_find`](Tuner::lr_find) on a [`DataModule`](crate::data::DataModule)'s loaders, around
    /// its `prepare_data`, `setup(Fit)` and `teardown(Fit)` (Lightning's `datamodule=`).
    pub fn lr_find_datamodule<M, D>(
        &mut self,
        model: &mut M,
        datamodule: &mut D,
        options: LrFindOptions,
    ) -> Result<LrFinder>
    where
        M: LightningModule,
        D: crate::data::DataModule<TrainBatch = M::TrainBatch, ValBatch = M::ValBatch>,
    {
        self.lr_find_with(model, options, |trainer, model| trainer.fit_datamodule(model, datamodule))
    }

    fn lr_find_with<M: LightningModule>(
        &mut self,
        model: &mut M,
        options: LrFindOptions,
        fit: impl FnOnce(&mut Trainer, &mut M) -> Result<()>,
    ) -> Result<LrFinder> {
        options.check()?;
        let mut finder =
            LrFinder::new(options.mode, options.min_lr, options.max_lr, options.num_training, LrFindResults::default());
        if self.trainer.config().fast_dev_run > 0 {
            crate::warning::warn("Skipping learning rate finder since `fast_dev_run` is enabled.");
            return Ok(finder);
        }
        let attr = options.update_attr.then(|| LrAttr::find(model.hparams_json(), &options.attr_name)).transpose()?;
        let start = self.trainer.global_step();
        let num_training = options.num_training;
        let callback = LrCallback::new(&options);
        let configure = |config: &mut TrainerConfig| {
            // As Lightning's `__lr_finder_reset_params`: the epoch loop's `max_steps` counts on
            // from the current step, `max_epochs` stays what the Trainer resolved it to.
            config.max_epochs = config.epoch_limit();
            config.max_steps = Some(start + num_training);
            config.limit_val_batches = Limit::Batches(num_training);
            config.num_sanity_val_steps = 0;
        };
        let ((), callbacks) = self.trainer.trial(model, vec![Box::new(callback)], configure, fit)?;
        let callback = crate::callbacks::first_of::<LrCallback>(&callbacks)
            .ok_or_else(|| Error::msg("lr_find: the range test's callback went missing"))?;
        let steps = callback.last_step.saturating_sub(start);
        if callback.lrs.is_empty() {
            let config = self.trainer.config();
            crate::warning::warn(&format!(
                "lr_find trained no step: the Trainer is at epoch {} (max_epochs {:?}) and step {start} (max_steps \
                 {:?}), or the training loader is empty",
                self.trainer.current_epoch(),
                config.epoch_limit(),
                config.max_steps,
            ));
        } else if steps != num_training {
            tracing::info!(target: "lit", "LR finder stopped early after {steps} steps due to diverging loss.");
        }
        finder.results = LrFindResults { lr: callback.lrs.clone(), loss: callback.losses.clone() };
        if let (Some(attr), Some(lr)) = (attr, finder.suggestion()) {
            attr.set(model, lr)?;
            tracing::info!(target: "lit", "Learning rate set to {lr}");
        }
        Ok(finder)
    }
}

/// Where the learning rate is in the module's hyper-parameters: a path of keys into their JSON.
struct LrAttr {
    path: Vec<String>,
    hparams: Value,
}

impl LrAttr {
    /// Lightning's `_determine_lr_attr_name`: `attr_name` if given, else `lr`, else
    /// `learning_rate`.
    fn find(hparams: Option<Value>, attr_name: &str) -> Result<Self, TunerError> {
        let Some(hparams) = hparams.filter(Value::is_object) else {
            return Err(TunerError::LrAttr(
                "update_attr needs the learning rate in the module's `#[hparams]`, and the module has none; add \
                 one with a field `lr` or `learning_rate`, or pass `update_attr(false)` and read `suggestion()`"
                    .into(),
            ));
        };
        let path: Vec<String> = if attr_name.is_empty() {
            let Some(name) = ["lr", "learning_rate"].into_iter().find(|n| hparams.get(n).is_some()) else {
                return Err(TunerError::LrAttr(
                    "When using the learning rate finder, the module's `#[hparams]` should have one of these fields: \
                     `lr`, `learning_rate`. If your learning rate has a different name, set it with \
                     `LrFindOptions::attr_name`."
                        .into(),
                ));
            };
            vec![name.to_string()]
        } else {
            attr_name.split('.').map(str::to_string).collect()
        };
        let found = path.iter().try_fold(&hparams, |v, key| v.get(key));
        match found {
            None => Err(TunerError::LrAttr(format!(
                "The attribute name for the learning rate was set to `{attr_name}`, but the module's `#[hparams]` \
                 have no such field"
            ))),
            Some(v) if !(v.is_f64() || v.is_null()) => Err(TunerError::LrAttr(format!(
                "the learning rate's field `{}` of the module's `#[hparams]` holds {v}, not a floating-point number",
                path.join(".")
            ))),
            Some(_) => Ok(LrAttr { path, hparams }),
        }
    }

    /// Sets the field to `lr` in the module.
    fn set<M: LightningModule>(mut self, model: &mut M, lr: f64) -> Result<()> {
        let mut slot = &mut self.hparams;
        for key in &self.path {
            slot = &mut slot[key.as_str()];
        }
        *slot = Value::from(lr);
        model.set_hparams_json(self.hparams)
    }
}

/// The range test's callback (Lightning's `_LRCallback` and its scheduler in one): sets the
/// learning rate before each batch, records it and the smoothed loss at the end of each
/// accumulation window, and requests a stop once the loss diverges.
struct LrCallback {
    mode: LrMode,
    min_lr: f64,
    max_lr: f64,
    num_training: usize,
    early_stop_threshold: Option<f64>,
    beta: f64,
    /// The Trainer's step when the test started.
    start_step: usize,
    /// The Trainer's step after the last recorded batch.
    last_step: usize,
    avg_loss: f64,
    best_loss: f64,
    lrs: Vec<f64>,
    losses: Vec<f64>,
}

impl LrCallback {
    fn new(options: &LrFindOptions) -> Self {
        LrCallback {
            mode: options.mode,
            min_lr: options.min_lr,
            max_lr: options.max_lr,
            num_training: options.num_training,
            early_stop_threshold: options.early_stop_threshold,
            beta: 0.98,
            start_step: 0,
            last_step: 0,
            avg_loss: 0.0,
            best_loss: 0.0,
            lrs: Vec::new(),
            losses: Vec::new(),
        }
    }

    /// Whether `batch_idx` closes an accumulation window (Lightning records only those).
    fn records(batch_idx: usize, cx: &Ctx) -> bool {
        (batch_idx + 1).is_multiple_of(cx.state.accumulate_grad_batches.max(1))
    }

    /// Rank 0's `stop` on every process (Lightning's `strategy.broadcast(should_stop)`).
    fn agreed(stop: bool, cx: &Ctx) -> Result<bool> {
        match &cx.state.process_group {
            Some(pg) => Ok(pg.broadcast_bytes(&[u8::from(stop)], 0)?.first() == Some(&1)),
            None => Ok(stop),
        }
    }
}

impl Callback for LrCallback {
    fn on_pretrain_routine_start(&mut self, cx: &mut Ctx) -> Result<()> {
        // Lightning's `_exchange_scheduler`: one optimizer, every group at `min_lr`, and the
        // range test's schedule instead of the module's schedulers.
        let count = cx.state.optimizers.len();
        if count != 1 {
            return Err(TunerError::Optimizers { count }.into());
        }
        cx.state.schedulers.clear();
        for group in cx.state.optimizers[0].param_groups_mut() {
            group.lr = self.min_lr;
            group.initial_lr = self.min_lr;
        }
        self.start_step = cx.state.global_step;
        self.last_step = self.start_step;
        Ok(())
    }

    fn on_train_batch_start(&mut self, batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        let step = cx.state.global_step - self.start_step;
        let lr = self.mode.lr(self.min_lr, self.max_lr, self.num_training, step);
        if let Some(optimizer) = cx.state.optimizers.first_mut() {
            optimizer.set_lr(lr);
        }
        if Self::records(batch_idx, cx) {
            self.lrs.push(lr);
        }
        Ok(())
    }

    fn on_train_batch_end(&mut self, outputs: Option<&StepOutput>, batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        self.last_step = cx.state.global_step;
        if !Self::records(batch_idx, cx) {
            return Ok(());
        }
        let Some(loss) = outputs.and_then(|o| o.loss.as_ref()) else {
            // A skipped step: NaN, which the suggestion leaves out, beside the recorded rate.
            self.losses.push(f64::NAN);
            return Ok(());
        };
        // Lightning's step output holds the loss divided by `accumulate_grad_batches`.
        let current = loss.double_value(&[]) / cx.state.accumulate_grad_batches.max(1) as f64;
        // Steps of the test: Lightning counts the Trainer's global step, the same on a fresh
        // Trainer; after earlier training its first step would look divergent (the best loss
        // is only set at global step 1).
        let step = cx.state.global_step - self.start_step;
        self.avg_loss = self.beta * self.avg_loss + (1.0 - self.beta) * current;
        // `powf`, as Python's `**`: the same libm `pow`, so the same bits.
        let smoothed = self.avg_loss / (1.0 - self.beta.powf((step + 1) as f64));
        let diverged = self.early_stop_threshold.is_some_and(|t| step > 1 && smoothed > t * self.best_loss);
        if Self::agreed(diverged, cx)? {
            cx.request_stop();
        }
        if smoothed < self.best_loss || step == 1 {
            self.best_loss = smoothed;
        }
        self.losses.push(smoothed);
        Ok(())
    }

    fn on_train_end(&mut self, cx: &mut Ctx) -> Result<()> {
        // Every process suggests from rank 0's losses (Lightning broadcasts its results).
        if let Some(pg) = &cx.state.process_group {
            let bytes: Vec<u8> = self.losses.iter().flat_map(|l| l.to_le_bytes()).collect();
            let bytes = pg.broadcast_bytes(&bytes, 0)?;
            self.losses = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        }
        Ok(())
    }
}
