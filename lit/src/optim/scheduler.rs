//! Learning-rate schedulers, as `torch.optim.lr_scheduler` computes them, and how the Trainer
//! steps them (`interval`, `frequency`, `monitor`).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::Optimizer;
use crate::error::{Error, Result};

/// A learning-rate scheduler attached to one optimizer.
pub trait LrScheduler {
    /// Binds the scheduler to its optimizer and sets the learning rates of step 0 (PyTorch does
    /// this when a scheduler is created).
    fn attach(&mut self, optimizer: &mut dyn Optimizer);
    /// Advances one step (or epoch); `metric` is the monitored value, for schedulers that need one.
    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>) -> Result<()>;
    /// Whether `step` needs a monitored metric.
    fn needs_metric(&self) -> bool {
        false
    }
    /// The learning rates set by the last step, per group.
    fn last_lr(&self) -> Vec<f64>;
    /// The state to save in a checkpoint.
    fn state(&self) -> serde_json::Value;
    /// Restores a saved state.
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()>;
    /// The scheduler's name for messages (`StepLr`, …).
    fn name(&self) -> String {
        short_type_name::<Self>()
    }
}

/// A type's name without its module path (`StepLr` for `lit::optim::StepLr`).
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// A schedule given in closed form: the learning rate at step `t` from the group's initial one.
pub trait ClosedForm {
    /// The learning rate at step `t`.
    fn lr_at(&self, base: f64, t: usize) -> f64;
    /// The initial learning rate this schedule sets on the optimizer, if it sets one
    /// (OneCycle starts from `max_lr / div_factor`).
    fn initial_lr(&self, base: f64) -> f64 {
        base
    }
}

/// A closed-form schedule bound to an optimizer.
struct Scheduled<S> {
    schedule: S,
    base_lrs: Vec<f64>,
    last_epoch: usize,
    last_lr: Vec<f64>,
}

impl<S: ClosedForm> LrScheduler for Scheduled<S> {
    fn attach(&mut self, optimizer: &mut dyn Optimizer) {
        for g in optimizer.param_groups_mut() {
            g.initial_lr = self.schedule.initial_lr(g.initial_lr);
        }
        self.base_lrs = optimizer.param_groups().iter().map(|g| g.initial_lr).collect();
        self.apply(optimizer);
    }

    fn step(&mut self, optimizer: &mut dyn Optimizer, _metric: Option<f64>) -> Result<()> {
        self.last_epoch += 1;
        self.apply(optimizer);
        Ok(())
    }

    fn last_lr(&self) -> Vec<f64> {
        self.last_lr.clone()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({"last_epoch": self.last_epoch, "base_lrs": self.base_lrs})
    }

    fn name(&self) -> String {
        short_type_name::<S>()
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.last_epoch = state
            .get("last_epoch")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::msg("scheduler state has no `last_epoch`"))? as usize;
        if let Some(b) = state.get("base_lrs").and_then(|v| serde_json::from_value(v.clone()).ok()) {
            self.base_lrs = b;
        }
        Ok(())
    }
}

impl<S: ClosedForm> Scheduled<S> {
    fn apply(&mut self, optimizer: &mut dyn Optimizer) {
        self.last_lr = self.base_lrs.iter().map(|&b| self.schedule.lr_at(b, self.last_epoch)).collect();
        for (g, &lr) in optimizer.param_groups_mut().iter_mut().zip(&self.last_lr) {
            g.lr = lr;
        }
    }
}

/// Multiplies the learning rate by `gamma` every `step_size` steps, as `StepLR`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLr {
    /// Steps between decays.
    pub step_size: usize,
    /// Decay factor.
    pub gamma: f64,
}

impl StepLr {
    /// `StepLR(step_size, gamma)`.
    pub fn new(step_size: usize, gamma: f64) -> Self {
        StepLr { step_size: step_size.max(1), gamma }
    }
}

impl ClosedForm for StepLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        base * self.gamma.powi((t / self.step_size) as i32)
    }
}

/// Multiplies the learning rate by `gamma` at each milestone, as `MultiStepLR`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiStepLr {
    /// Steps at which to decay.
    pub milestones: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}

impl MultiStepLr {
    /// `MultiStepLR(milestones, gamma)`.
    pub fn new(milestones: impl Into<Vec<usize>>, gamma: f64) -> Self {
        MultiStepLr { milestones: milestones.into(), gamma }
    }
}

impl ClosedForm for MultiStepLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        base * self.gamma.powi(self.milestones.iter().filter(|&&m| m <= t).count() as i32)
    }
}

/// Multiplies the learning rate by `gamma` every step, as `ExponentialLR`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExponentialLr {
    /// Decay factor.
    pub gamma: f64,
}

impl ExponentialLr {
    /// `ExponentialLR(gamma)`.
    pub fn new(gamma: f64) -> Self {
        ExponentialLr { gamma }
    }
}

impl ClosedForm for ExponentialLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        base * self.gamma.powi(t as i32)
    }
}

/// Cosine annealing from the initial learning rate to `eta_min` over `t_max` steps, as
/// `CosineAnnealingLR`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealingLr {
    /// Steps of a half cosine period.
    pub t_max: usize,
    /// The minimum learning rate.
    pub eta_min: f64,
}

impl CosineAnnealingLr {
    /// `CosineAnnealingLR(T_max, eta_min)`.
    pub fn new(t_max: usize, eta_min: f64) -> Self {
        CosineAnnealingLr { t_max: t_max.max(1), eta_min }
    }
}

impl ClosedForm for CosineAnnealingLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        self.eta_min + (base - self.eta_min) * (1.0 + (PI * t as f64 / self.t_max as f64).cos()) / 2.0
    }
}

/// Scales the learning rate linearly from `start_factor` to `end_factor` over `total_iters`
/// steps, as `LinearLR`: a linear warm-up with `LinearLr::warmup(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearLr {
    /// Factor at step 0.
    pub start_factor: f64,
    /// Factor from `total_iters` on.
    pub end_factor: f64,
    /// Steps of the ramp.
    pub total_iters: usize,
}

impl LinearLr {
    /// `LinearLR(start_factor, end_factor, total_iters)`.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: usize) -> Self {
        LinearLr { start_factor, end_factor, total_iters: total_iters.max(1) }
    }
    /// A warm-up from `1 / (steps + 1)` of the learning rate to all of it over `steps` steps.
    pub fn warmup(steps: usize) -> Self {
        LinearLr::new(1.0 / (steps as f64 + 1.0), 1.0, steps)
    }
}

impl ClosedForm for LinearLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        let progress = t.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (self.start_factor + (self.end_factor - self.start_factor) * progress)
    }
}

/// The learning rate times a function of the step, as `LambdaLR`.
pub struct LambdaLr(Box<dyn Fn(usize) -> f64>);

impl LambdaLr {
    /// `LambdaLR(lr_lambda)`.
    pub fn new(f: impl Fn(usize) -> f64 + 'static) -> Self {
        LambdaLr(Box::new(f))
    }
}

impl ClosedForm for LambdaLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        base * (self.0)(t)
    }
}

/// The one-cycle policy, as `OneCycleLR` (cosine annealing, two phases): up from
/// `max_lr / div_factor` to `max_lr` over `pct_start` of `total_steps`, then down to
/// `max_lr / div_factor / final_div_factor`. (Momentum is not cycled.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OneCycleLr {
    /// The peak learning rate.
    pub max_lr: f64,
    /// Steps in the cycle.
    pub total_steps: usize,
    /// Fraction of the cycle spent increasing.
    pub pct_start: f64,
    /// `max_lr / div_factor` is the initial learning rate.
    pub div_factor: f64,
    /// `initial / final_div_factor` is the final learning rate.
    pub final_div_factor: f64,
}

impl OneCycleLr {
    /// `OneCycleLR(max_lr, total_steps)` with PyTorch's defaults.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        OneCycleLr { max_lr, total_steps, pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

impl ClosedForm for OneCycleLr {
    fn initial_lr(&self, _base: f64) -> f64 {
        self.max_lr / self.div_factor
    }
    fn lr_at(&self, _base: f64, t: usize) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let up_end = self.pct_start * self.total_steps as f64 - 1.0;
        let down_end = self.total_steps as f64 - 1.0;
        let t = t as f64;
        if t <= up_end {
            cos_anneal(initial, self.max_lr, t / up_end)
        } else {
            cos_anneal(self.max_lr, min, (t - up_end) / (down_end - up_end))
        }
    }
}

/// Schedules one after another, as `SequentialLR`: schedule `i` runs from milestone `i - 1`,
/// counting its steps from 0 (e.g. a linear warm-up, then cosine annealing).
pub struct SequentialLr {
    schedules: Vec<Box<dyn ClosedForm>>,
    milestones: Vec<usize>,
}

impl SequentialLr {
    /// The first schedule.
    pub fn new(first: impl ClosedForm + 'static) -> Self {
        SequentialLr { schedules: vec![Box::new(first)], milestones: Vec::new() }
    }
    /// Then `next`, from step `milestone` on.
    pub fn then(mut self, milestone: usize, next: impl ClosedForm + 'static) -> Self {
        self.milestones.push(milestone);
        self.schedules.push(Box::new(next));
        self
    }
}

impl ClosedForm for SequentialLr {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        let i = self.milestones.iter().filter(|&&m| m <= t).count();
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        self.schedules[i].lr_at(base, t - start)
    }
}

/// Several schedules applied together, as `ChainedScheduler`: their factors multiply.
pub struct ChainedScheduler(Vec<Box<dyn ClosedForm>>);

impl ChainedScheduler {
    /// The first schedule.
    pub fn new(first: impl ClosedForm + 'static) -> Self {
        ChainedScheduler(vec![Box::new(first)])
    }
    /// And `next`.
    pub fn and(mut self, next: impl ClosedForm + 'static) -> Self {
        self.0.push(Box::new(next));
        self
    }
}

impl ClosedForm for ChainedScheduler {
    fn lr_at(&self, base: f64, t: usize) -> f64 {
        self.0.iter().fold(base, |lr, s| s.lr_at(lr, t))
    }
}

/// Whether lower or higher values of the monitored metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMode {
    /// Lower is better (a loss).
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// Reduces the learning rate when a monitored metric stops improving, as `ReduceLROnPlateau`
/// (relative threshold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    /// Lower or higher is better.
    pub mode: PlateauMode,
    /// Factor applied on a plateau.
    pub factor: f64,
    /// Steps without improvement before reducing.
    pub patience: usize,
    /// Relative improvement that counts.
    pub threshold: f64,
    /// Steps to wait after a reduction.
    pub cooldown: usize,
    /// The lowest learning rate.
    pub min_lr: f64,
    /// Reductions smaller than this are skipped.
    pub eps: f64,
    best: Option<f64>,
    num_bad: usize,
    cooldown_counter: usize,
    last_lr: Vec<f64>,
}

impl Default for ReduceLrOnPlateau {
    fn default() -> Self {
        ReduceLrOnPlateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
            best: None,
            num_bad: 0,
            cooldown_counter: 0,
            last_lr: Vec::new(),
        }
    }
}

impl ReduceLrOnPlateau {
    /// `ReduceLROnPlateau(mode, factor, patience)` with PyTorch's other defaults.
    pub fn new(mode: PlateauMode, factor: f64, patience: usize) -> Self {
        ReduceLrOnPlateau { mode, factor, patience, ..Self::default() }
    }

    fn is_better(&self, value: f64) -> bool {
        match (self.best, self.mode) {
            (None, _) => true,
            (Some(best), PlateauMode::Min) => value < best * (1.0 - self.threshold),
            (Some(best), PlateauMode::Max) => value > best * (1.0 + self.threshold),
        }
    }
}

impl LrScheduler for ReduceLrOnPlateau {
    fn attach(&mut self, optimizer: &mut dyn Optimizer) {
        self.last_lr = optimizer.param_groups().iter().map(|g| g.lr).collect();
    }

    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>) -> Result<()> {
        let value = metric.ok_or_else(|| Error::msg("ReduceLrOnPlateau needs a monitored metric"))?;
        if self.is_better(value) {
            self.best = Some(value);
            self.num_bad = 0;
        } else {
            self.num_bad += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad = 0;
        }
        if self.num_bad > self.patience {
            for g in optimizer.param_groups_mut() {
                let new = (g.lr * self.factor).max(self.min_lr);
                if g.lr - new > self.eps {
                    g.lr = new;
                }
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad = 0;
        }
        self.last_lr = optimizer.param_groups().iter().map(|g| g.lr).collect();
        Ok(())
    }

    fn needs_metric(&self) -> bool {
        true
    }

    fn last_lr(&self) -> Vec<f64> {
        self.last_lr.clone()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({"best": self.best, "num_bad": self.num_bad, "cooldown_counter": self.cooldown_counter})
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.best = state.get("best").and_then(|v| v.as_f64());
        self.num_bad = state.get("num_bad").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        self.cooldown_counter = state.get("cooldown_counter").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        Ok(())
    }
}

/// When a scheduler steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// After every optimizer step.
    Step,
    /// At the end of every training epoch.
    #[default]
    Epoch,
}

/// A scheduler with Lightning's stepping options.
pub struct SchedulerConfig {
    pub(crate) scheduler: Box<dyn LrScheduler>,
    pub(crate) interval: Interval,
    pub(crate) frequency: usize,
    pub(crate) monitor: Option<String>,
}

impl SchedulerConfig {
    /// A scheduler stepping every epoch.
    pub fn new(scheduler: impl Into<SchedulerConfig>) -> Self {
        scheduler.into()
    }
    /// Step every optimizer step or every epoch.
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }
    /// Step every `frequency` intervals.
    pub fn frequency(mut self, frequency: usize) -> Self {
        self.frequency = frequency.max(1);
        self
    }
    /// The scheduler itself, to drive by hand (`attach` it to its optimizer first).
    pub fn into_scheduler(self) -> Box<dyn LrScheduler> {
        self.scheduler
    }
    /// The logged metric a `ReduceLrOnPlateau` watches (e.g. `"val_loss"`).
    pub fn monitor(mut self, key: impl Into<String>) -> Self {
        self.monitor = Some(key.into());
        self
    }
}

fn config(scheduler: Box<dyn LrScheduler>) -> SchedulerConfig {
    SchedulerConfig { scheduler, interval: Interval::Epoch, frequency: 1, monitor: None }
}

impl<S: ClosedForm + 'static> From<S> for SchedulerConfig {
    fn from(schedule: S) -> Self {
        config(Box::new(Scheduled { schedule, base_lrs: Vec::new(), last_epoch: 0, last_lr: Vec::new() }))
    }
}

impl From<ReduceLrOnPlateau> for SchedulerConfig {
    fn from(s: ReduceLrOnPlateau) -> Self {
        config(Box::new(s)).monitor("val_loss")
    }
}

/// A scheduler bound to optimizer `optimizer` during a run.
pub(crate) struct ActiveScheduler {
    pub(crate) scheduler: Box<dyn LrScheduler>,
    pub(crate) optimizer: usize,
    pub(crate) interval: Interval,
    pub(crate) frequency: usize,
    pub(crate) monitor: Option<String>,
}
