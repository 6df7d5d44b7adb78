//! The built-in callbacks: [`ModelCheckpoint`] (on by default), [`EarlyStopping`],
//! [`LearningRateMonitor`], [`Timer`], [`ModelSummary`], [`GradientAccumulationScheduler`],
//! [`OnExceptionCheckpoint`], [`StochasticWeightAveraging`], [`BackboneFinetuning`] (and
//! [`Finetuning`] for any [`BaseFinetuning`] schedule), [`TqdmProgressBar`] and
//! [`PredictionWriter`]. They decide; the loop acts (a checkpoint request, a stop request).

mod early_stopping;
mod finetuning;
mod model_checkpoint;
mod params;
pub(crate) mod prediction_writer;
mod progress_bar;
mod swa;

use std::time::{Duration, Instant};

pub use crate::callback::{CallbackOrder, Predicted};
pub use crate::progress::{BarMetrics, BarValue};
pub use early_stopping::EarlyStopping;
pub use finetuning::{BackboneFinetuning, BaseFinetuning, Finetuning, GroupRecord, LambdaFn};
pub use model_checkpoint::ModelCheckpoint;
pub(crate) use model_checkpoint::model_checkpoints;
pub use params::{ModuleParams, filter_on_optimizer};
pub use prediction_writer::{PredictionFormat, PredictionTensors, PredictionWriter, WriteInterval, read_predictions};
pub use progress_bar::TqdmProgressBar;
pub use swa::{AvgFn, StochasticWeightAveraging, SwaEpochStart, SwaLrs};

use crate::callback::Callback;
use crate::ctx::Ctx;
use crate::error::{ConfigError, Result};

/// The model summary printed when `fit` starts, to `max_depth` levels of nesting, as
/// Lightning's `ModelSummary(max_depth=1)` callback (`-1`: every level; `0`: no summary). Without
/// it the Trainer prints the top level when `enable_model_summary` is on (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSummary {
    max_depth: i64,
}

impl ModelSummary {
    /// A summary `max_depth` levels deep (`-1`: every level; `0`: none).
    pub fn new(max_depth: i64) -> Self {
        ModelSummary { max_depth }
    }

    /// The depth to summarise to: `None` for every level.
    pub(crate) fn depth(&self) -> Option<usize> {
        usize::try_from(self.max_depth).ok()
    }
}

impl Default for ModelSummary {
    fn default() -> Self {
        ModelSummary::new(1)
    }
}

impl Callback for ModelSummary {}

/// Changes `accumulate_grad_batches` by epoch, as Lightning's
/// `GradientAccumulationScheduler(scheduling={epoch: factor})`: from each listed epoch on, the
/// Trainer accumulates that many batches per optimizer step (before the first listed epoch, 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradientAccumulationScheduler {
    /// (first epoch, factor), sorted by epoch, starting at epoch 0.
    scheduling: Vec<(usize, usize)>,
}

impl GradientAccumulationScheduler {
    /// The schedule `{epoch: factor}`: a factor of 0 or an empty schedule is an error, as in
    /// Lightning.
    pub fn new(scheduling: impl IntoIterator<Item = (usize, usize)>) -> Result<Self> {
        let mut scheduling: Vec<(usize, usize)> = scheduling.into_iter().collect();
        if scheduling.is_empty() {
            return Err(ConfigError::invalid("GradientAccumulationScheduler", "the schedule is empty").into());
        }
        if let Some((epoch, _)) = scheduling.iter().find(|(_, factor)| *factor == 0) {
            return Err(ConfigError::invalid(
                "GradientAccumulationScheduler",
                format!("the factor for epoch {epoch} is 0; accumulate at least 1 batch"),
            )
            .into());
        }
        scheduling.sort_unstable();
        scheduling.dedup_by_key(|(epoch, _)| *epoch);
        if scheduling[0].0 != 0 {
            scheduling.insert(0, (0, 1));
        }
        Ok(GradientAccumulationScheduler { scheduling })
    }

    /// The factor in `epoch`.
    pub fn factor(&self, epoch: usize) -> usize {
        self.scheduling.iter().rev().find(|(first, _)| *first <= epoch).map_or(1, |(_, f)| *f)
    }

    /// Whether every epoch has the same factor.
    pub(crate) fn constant(&self) -> bool {
        self.scheduling.iter().all(|(_, f)| *f == self.scheduling[0].1)
    }
}

impl Callback for GradientAccumulationScheduler {}

/// The callbacks of type `T` among `callbacks` (a built-in the Trainer acts on), in order.
pub(crate) fn of_type<T: Callback>(callbacks: &[Box<dyn Callback>]) -> impl Iterator<Item = &T> {
    callbacks.iter().filter_map(|c| (&**c as &dyn std::any::Any).downcast_ref::<T>())
}

/// The first callback of type `T` among `callbacks`, if there is one.
pub(crate) fn first_of<T: Callback>(callbacks: &[Box<dyn Callback>]) -> Option<&T> {
    of_type(callbacks).next()
}

/// The first callback of type `T` among `callbacks`, mutably.
pub(crate) fn first_of_mut<T: Callback>(callbacks: &mut [Box<dyn Callback>]) -> Option<&mut T> {
    callbacks.iter_mut().find_map(|c| (&mut **c as &mut dyn std::any::Any).downcast_mut::<T>())
}

/// The tensors the built-ins keep in checkpoints beside their JSON state (SWA's averaged
/// weights), as `{callback}/{tensor}`.
pub(crate) fn state_tensors(callbacks: &[Box<dyn Callback>]) -> Vec<(String, tch::Tensor)> {
    of_type::<StochasticWeightAveraging>(callbacks)
        .take(1)
        .flat_map(|swa| swa.state_tensors().into_iter().map(|(k, t)| (format!("StochasticWeightAveraging/{k}"), t)))
        .collect()
}

/// What the built-ins restore once their JSON state is back and before the optimizers' and
/// schedulers' state is (Lightning restores callbacks first): the finetuning callbacks' parameter
/// groups, SWA's averaged weights (a saved SWA scheduler then takes the schedulers' place).
pub(crate) fn restore_before_optimizers(
    callbacks: &mut [Box<dyn Callback>],
    tensors: &std::collections::BTreeMap<String, tch::Tensor>,
    state: &mut crate::ctx::State,
) -> crate::Result<()> {
    for callback in callbacks.iter_mut() {
        let callback = &mut **callback as &mut dyn std::any::Any;
        if let Some(finetuning) = callback.downcast_mut::<BackboneFinetuning>() {
            finetuning.restore(state)?;
        } else if let Some(finetuning) = callback.downcast_mut::<Finetuning>() {
            finetuning.restore(state)?;
        }
    }
    if let Some(swa) = first_of_mut::<StochasticWeightAveraging>(callbacks) {
        let own = tensors
            .iter()
            .filter_map(|(k, t)| Some((k.strip_prefix("StochasticWeightAveraging/")?.to_string(), t.shallow_clone())))
            .collect();
        swa.restore(&own, state)?;
    }
    Ok(())
}

/// Saves a checkpoint when `fit` ends with an error (a hook's error or panic, a data error,
/// Ctrl-C), as Lightning's `OnExceptionCheckpoint(dirpath, filename="on_exception")`: the file is
/// `dirpath/filename.ckpt`, written by rank 0 with the state of the moment the error arose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnExceptionCheckpoint {
    dirpath: std::path::PathBuf,
    filename: String,
}

impl OnExceptionCheckpoint {
    /// Saves `dirpath/on_exception.ckpt`.
    pub fn new(dirpath: impl Into<std::path::PathBuf>) -> Self {
        OnExceptionCheckpoint { dirpath: dirpath.into(), filename: "on_exception".into() }
    }

    /// Another file name (without `.ckpt`).
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = filename.into();
        self
    }

    /// The file it writes.
    pub fn ckpt_path(&self) -> std::path::PathBuf {
        self.dirpath.join(format!("{}.ckpt", self.filename))
    }
}

impl Callback for OnExceptionCheckpoint {}

/// Whether lower or higher values of a monitored metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lower is better (a loss).
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

impl Mode {
    /// Whether `a` is better than `b` by more than `delta`.
    pub(crate) fn better(self, a: f64, b: f64, delta: f64) -> bool {
        match self {
            Mode::Min => a < b - delta,
            Mode::Max => a > b + delta,
        }
    }
}

/// When the learning-rate monitor logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoggingInterval {
    /// Every optimizer step.
    #[default]
    Step,
    /// Every epoch.
    Epoch,
}

/// Logs every optimizer's learning rate (`lr-Adam`, `lr-Adam/pg1` for further groups,
/// `lr-Adam-1` for a second Adam), as Lightning's `LearningRateMonitor`.
#[derive(Debug, Default)]
pub struct LearningRateMonitor {
    interval: LoggingInterval,
}

impl LearningRateMonitor {
    /// Logs at every step (`LoggingInterval::Step`) or epoch.
    pub fn new(interval: LoggingInterval) -> Self {
        LearningRateMonitor { interval }
    }

    fn log(&self, cx: &mut Ctx, on_step: bool) {
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        let entries: Vec<(String, f64)> = cx
            .state
            .optimizers
            .iter()
            .flat_map(|opt| {
                let n = seen.entry(opt.name()).or_default();
                let base = if *n == 0 { format!("lr-{}", opt.name()) } else { format!("lr-{}-{n}", opt.name()) };
                *n += 1;
                opt.param_groups()
                    .iter()
                    .enumerate()
                    .map(|(g, group)| (if g == 0 { base.clone() } else { format!("{base}/pg{g}") }, group.lr))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, lr) in entries {
            cx.log(name, lr).on_step(on_step).on_epoch(!on_step);
        }
    }
}

impl Callback for LearningRateMonitor {
    fn on_train_batch_start(&mut self, _batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        if self.interval == LoggingInterval::Step {
            self.log(cx, true);
        }
        Ok(())
    }
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.interval == LoggingInterval::Epoch {
            self.log(cx, false);
        }
        Ok(())
    }
}

/// Stops training once `duration` of training time has passed (Lightning's `Timer`, which
/// `max_time` adds). The time spent survives resume.
#[derive(Debug)]
pub struct Timer {
    duration: Duration,
    spent_before: Duration,
    started: Option<Instant>,
}

impl Timer {
    /// Stops after `duration`.
    pub fn new(duration: Duration) -> Self {
        Timer { duration, spent_before: Duration::ZERO, started: None }
    }

    /// Parses Lightning's `"DD:HH:MM:SS"` (e.g. `"00:12:00:00"` for twelve hours).
    pub fn parse(text: &str) -> std::result::Result<Duration, ConfigError> {
        let bad = || {
            ConfigError::invalid(
                "max_time",
                format!(
                    "\"{text}\" is neither \"DD:HH:MM:SS\" nor a duration such as \"1h30m\", \"90s\" or \"2d 12h\""
                ),
            )
        };
        let text = text.trim();
        if text.contains(':') {
            let parts: Vec<u64> =
                text.split(':').map(str::parse).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
            let [d, h, m, s] = parts[..] else { return Err(bad()) };
            return Ok(Duration::from_secs(((d * 24 + h) * 60 + m) * 60 + s));
        }
        // A sequence of <number><unit>, units d, h, m, s (spaces allowed between them).
        let mut total = 0.0;
        let mut rest = text;
        while !rest.is_empty() {
            let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
            let value: f64 = rest[..number_end].parse().map_err(|_| bad())?;
            let after = rest[number_end..].trim_start();
            let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
            let seconds = match &after[..unit_end] {
                "d" | "day" | "days" => 86_400.0,
                "h" | "hr" | "hour" | "hours" => 3_600.0,
                "m" | "min" | "minute" | "minutes" => 60.0,
                "s" | "sec" | "second" | "seconds" => 1.0,
                _ => return Err(bad()),
            };
            total += value * seconds;
            rest = after[unit_end..].trim_start();
        }
        if text.is_empty() {
            return Err(bad());
        }
        Ok(Duration::from_secs_f64(total))
    }

    /// Training time so far.
    pub fn elapsed(&self) -> Duration {
        self.spent_before + self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

impl Callback for Timer {
    fn on_train_start(&mut self, _cx: &mut Ctx) -> Result<()> {
        self.started = Some(Instant::now());
        Ok(())
    }
    fn on_train_end(&mut self, _cx: &mut Ctx) -> Result<()> {
        self.spent_before = self.elapsed();
        self.started = None;
        Ok(())
    }
    fn on_train_batch_end(&mut self, _: Option<&crate::StepOutput>, _: usize, cx: &mut Ctx) -> Result<()> {
        if self.elapsed() >= self.duration {
            tracing::info!(target: "lit", elapsed = ?self.elapsed(), "max_time reached: stopping");
            cx.request_stop();
        }
        Ok(())
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"elapsed_secs": self.elapsed().as_secs_f64()}))
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.spent_before = Duration::from_secs_f64(state.get("elapsed_secs").and_then(|v| v.as_f64()).unwrap_or(0.0));
        Ok(())
    }
}
