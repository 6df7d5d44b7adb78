//! Stochastic weight averaging, as Lightning's `StochasticWeightAveraging` callback.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tch::{Device, Kind, Tensor};

use super::ModuleParams;
use crate::callback::Callback;
use crate::ctx::{Ctx, Stage};
use crate::error::{ConfigError, Error, Result};
use crate::optim::{ActiveScheduler, AnnealStrategy, Interval, LrScheduler, Optimizer, SwaLr};

/// The epoch SWA starts at: Lightning's `swa_epoch_start`, an integer (the epoch, counted from 1)
/// or a fraction of `max_epochs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwaEpochStart {
    /// From this epoch on, counted from 1 (epoch index `n - 1`).
    Epoch(i64),
    /// From epoch `floor(fraction * max_epochs)` on, counted from 1.
    Fraction(f64),
}

macro_rules! epoch_start_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for SwaEpochStart {
            fn from(n: $t) -> Self {
                SwaEpochStart::Epoch(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
    )*};
}
epoch_start_from_int!(i32, i64, u32, u64, usize);

impl From<f64> for SwaEpochStart {
    fn from(f: f64) -> Self {
        SwaEpochStart::Fraction(f)
    }
}

/// SWA learning rates: one for every parameter group, or one per group.
#[derive(Debug, Clone, PartialEq)]
pub struct SwaLrs(Vec<f64>);

impl From<f64> for SwaLrs {
    fn from(lr: f64) -> Self {
        SwaLrs(vec![lr])
    }
}
impl From<Vec<f64>> for SwaLrs {
    fn from(lrs: Vec<f64>) -> Self {
        SwaLrs(lrs)
    }
}
impl From<&[f64]> for SwaLrs {
    fn from(lrs: &[f64]) -> Self {
        SwaLrs(lrs.to_vec())
    }
}
impl<const N: usize> From<[f64; N]> for SwaLrs {
    fn from(lrs: [f64; N]) -> Self {
        SwaLrs(lrs.to_vec())
    }
}

/// How two weights are averaged: `(averaged, current, n_averaged) -> new average`.
pub type AvgFn = Arc<dyn Fn(&Tensor, &Tensor, i64) -> Tensor + Send + Sync>;

/// The SWA learning-rate scheduler, shared between the run's schedulers (which step it) and the
/// callback (which saves its state).
#[derive(Clone)]
struct SharedSwaLr(Arc<Mutex<SwaLr>>);

impl SharedSwaLr {
    fn with<T>(&self, f: impl FnOnce(&mut SwaLr) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LrScheduler for SharedSwaLr {
    fn attach(&mut self, optimizer: &mut dyn Optimizer) {
        self.with(|s| s.attach(optimizer))
    }
    fn step(&mut self, optimizer: &mut dyn Optimizer, metric: Option<f64>) -> Result<()> {
        self.with(|s| s.step(optimizer, metric))
    }
    fn last_lr(&self) -> Vec<f64> {
        self.with(|s| s.last_lr())
    }
    fn state(&self) -> serde_json::Value {
        self.with(|s| s.state())
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.with(|s| s.load_state(state))
    }
    fn name(&self) -> String {
        "SwaLr".into()
    }
}

/// Averages the module's weights over the last epochs of training, as Lightning's
/// `StochasticWeightAveraging(swa_lrs, swa_epoch_start=0.8, annealing_epochs=10,
/// annealing_strategy="cos", avg_fn=None, device="cpu")`.
///
/// From the start epoch on, the first optimizer's learning rate follows
/// `torch.optim.swa_utils.SWALR` (replacing the module's scheduler, which must step every
/// epoch) and at the start of each epoch up to the last the weights are added to a running
/// average. When training ends the average is copied into the module; a module with batch-norm
/// layers trains one epoch more in which no optimizer steps: the average is copied in at its
/// start and the batch-norm statistics are recomputed over it as `torch.optim.swa_utils.update_bn`
/// does (a cumulative average over the epoch's batches, momentum `None`). The averaged weights,
/// `n_averaged` and the scheduler's state are saved in checkpoints and restored on resume.
pub struct StochasticWeightAveraging {
    swa_lrs: Vec<f64>,
    swa_epoch_start: SwaEpochStart,
    annealing_epochs: usize,
    annealing_strategy: AnnealStrategy,
    avg_fn: Option<AvgFn>,
    device: Option<Device>,
    // The run's state.
    average: BTreeMap<String, Tensor>,
    n_averaged: Option<i64>,
    init_n_averaged: i64,
    latest_update_epoch: i64,
    initialized: bool,
    scheduler: Option<SharedSwaLr>,
    scheduler_state: Option<serde_json::Value>,
    max_epochs: usize,
    contains_batch_norm: bool,
    bn_update: Option<BnUpdate>,
}

impl std::fmt::Debug for StochasticWeightAveraging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StochasticWeightAveraging")
            .field("swa_lrs", &self.swa_lrs)
            .field("swa_epoch_start", &self.swa_epoch_start)
            .field("annealing_epochs", &self.annealing_epochs)
            .field("annealing_strategy", &self.annealing_strategy)
            .field("n_averaged", &self.n_averaged)
            .finish_non_exhaustive()
    }
}

impl StochasticWeightAveraging {
    /// SWA with these learning rates (one, or one per parameter group), starting at 80% of
    /// `max_epochs`. Learning rates that are not positive are an error, as in Lightning.
    pub fn new(swa_lrs: impl Into<SwaLrs>) -> Result<Self> {
        let SwaLrs(swa_lrs) = swa_lrs.into();
        if swa_lrs.is_empty() || !swa_lrs.iter().all(|lr| *lr > 0.0 && lr.is_finite()) {
            return Err(ConfigError::invalid(
                "StochasticWeightAveraging",
                format!("`swa_lrs` should be a positive float, or a list of positive floats; got {swa_lrs:?}"),
            )
            .into());
        }
        Ok(StochasticWeightAveraging {
            swa_lrs,
            swa_epoch_start: SwaEpochStart::Fraction(0.8),
            annealing_epochs: 10,
            annealing_strategy: AnnealStrategy::Cos,
            avg_fn: None,
            device: Some(Device::Cpu),
            average: BTreeMap::new(),
            n_averaged: None,
            init_n_averaged: 0,
            latest_update_epoch: -1,
            initialized: false,
            scheduler: None,
            scheduler_state: None,
            max_epochs: 0,
            contains_batch_norm: false,
            bn_update: None,
        })
    }

    /// The epoch averaging starts at: an integer ≥ 1 (counted from 1) or a fraction in `[0, 1]`
    /// of `max_epochs` (default 0.8); anything else is an error, as in Lightning.
    pub fn swa_epoch_start(mut self, start: impl Into<SwaEpochStart>) -> Result<Self> {
        let start = start.into();
        let valid = match start {
            SwaEpochStart::Epoch(n) => n >= 1,
            SwaEpochStart::Fraction(f) => (0.0..=1.0).contains(&f),
        };
        if !valid {
            return Err(ConfigError::invalid(
                "StochasticWeightAveraging",
                format!("swa_epoch_start should be a >0 integer or a float between 0 and 1; got {start:?}"),
            )
            .into());
        }
        self.swa_epoch_start = start;
        Ok(self)
    }

    /// Epochs of annealing to the SWA learning rate (default 10).
    pub fn annealing_epochs(mut self, epochs: usize) -> Self {
        self.annealing_epochs = epochs;
        self
    }

    /// Cosine (default) or linear annealing.
    pub fn annealing_strategy(mut self, strategy: AnnealStrategy) -> Self {
        self.annealing_strategy = strategy;
        self
    }

    /// The averaging function `(averaged, current, n_averaged) -> new average` (default: the
    /// equally weighted running mean `averaged + (current - averaged) / (n_averaged + 1)`).
    pub fn avg_fn(mut self, avg_fn: impl Fn(&Tensor, &Tensor, i64) -> Tensor + Send + Sync + 'static) -> Self {
        self.avg_fn = Some(Arc::new(avg_fn));
        self
    }

    /// Where the averaged weights are kept (default the CPU, as Lightning's; `None`: the
    /// module's device).
    pub fn device(mut self, device: Option<Device>) -> Self {
        self.device = device;
        self
    }

    /// The SWA learning rates as given.
    pub fn swa_lrs(&self) -> &[f64] {
        &self.swa_lrs
    }

    /// The start epoch as given (an integer once `fit` has resolved a fraction).
    pub fn start(&self) -> SwaEpochStart {
        self.swa_epoch_start
    }

    /// The epochs of annealing.
    pub fn annealing_epoch_count(&self) -> usize {
        self.annealing_epochs
    }

    /// The annealing strategy.
    pub fn strategy(&self) -> AnnealStrategy {
        self.annealing_strategy
    }

    /// The first epoch (0-based) whose starting weights are averaged, once `fit` has resolved
    /// the start (Lightning's `swa_start`).
    pub fn swa_start(&self) -> Option<usize> {
        match self.swa_epoch_start {
            SwaEpochStart::Epoch(n) => Some((n - 1).max(0) as usize),
            SwaEpochStart::Fraction(_) => None,
        }
    }

    /// The last epoch (0-based) whose starting weights are averaged: `max_epochs - 1`.
    pub fn swa_end(&self) -> usize {
        self.max_epochs.saturating_sub(1)
    }

    /// How many weight sets have been averaged.
    pub fn n_averaged(&self) -> Option<i64> {
        self.n_averaged
    }

    /// The averaged parameters by name (empty before `fit`).
    pub fn average(&self) -> &BTreeMap<String, Tensor> {
        &self.average
    }

    /// The SWA scheduler's step count (PyTorch's `_step_count`), once it exists.
    pub fn scheduler_step_count(&self) -> Option<usize> {
        self.scheduler.as_ref().map(|s| s.with(|s| s.step_count()))
    }

    /// Epochs the fit loop adds: one for the batch-norm update, when the module has batch norms.
    pub(crate) fn extra_epochs(&self) -> usize {
        usize::from(self.contains_batch_norm)
    }

    /// The batch-norm update epoch's state, while it runs and its momenta are not yet measured.
    pub(crate) fn bn_update_to_measure(&mut self) -> Option<&mut BnUpdate> {
        self.bn_update.as_mut().filter(|b| !b.measured)
    }

    /// Whether the batch-norm update epoch is running (no optimizer steps in it).
    pub(crate) fn updating_batch_norm(&self) -> bool {
        self.bn_update.is_some()
    }

    /// The tensors saved beside the JSON state: the averaged weights.
    pub(crate) fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.average.iter().map(|(n, t)| (format!("average/{n}"), t.shallow_clone())).collect()
    }

    /// Restores the averaged weights saved by [`Self::state_tensors`]; with a saved scheduler
    /// state, the run's schedulers are cleared (the SWA scheduler replaces them when its epoch
    /// starts, as Lightning's `_clear_schedulers`).
    pub(crate) fn restore(&mut self, tensors: &BTreeMap<String, Tensor>, state: &mut crate::ctx::State) -> Result<()> {
        for (key, saved) in tensors {
            let Some(name) = key.strip_prefix("average/") else { continue };
            let device = self.device.unwrap_or(state.device);
            match self.average.get_mut(name) {
                Some(avg) => tch::no_grad(|| avg.copy_(&saved.to_device(avg.device()).to_kind(avg.kind()))),
                None => {
                    self.average.insert(name.to_string(), saved.to_device(device).copy());
                }
            }
        }
        if self.scheduler_state.is_some() {
            state.schedulers.clear();
        }
        Ok(())
    }

    fn update_parameters(&mut self, module: &ModuleParams) {
        let n = self.n_averaged.unwrap_or(0);
        let avg_fn = self.avg_fn.clone();
        tch::no_grad(|| {
            for (name, p) in module.named_parameters() {
                let p = p.detach();
                let Some(avg) = self.average.get_mut(&name) else {
                    self.average.insert(name, p.to_device(self.device.unwrap_or(p.device())).copy());
                    continue;
                };
                let p = p.to_device(avg.device());
                let src = match (&avg_fn, n) {
                    (_, 0) => p,
                    (Some(f), _) => f(avg, &p, n),
                    (None, _) => &*avg + (&p - &*avg) / (n + 1) as f64,
                };
                avg.copy_(&src);
            }
        });
        self.n_averaged = Some(n + 1);
    }

    fn transfer_weights(&self, module: &ModuleParams) {
        tch::no_grad(|| {
            for (name, p) in module.named_parameters() {
                if let Some(avg) = self.average.get(&name) {
                    p.detach().copy_(&avg.to_device(p.device()));
                }
            }
        });
    }

    /// Lightning's initialisation at the first SWA epoch: the SWA scheduler on the first
    /// optimizer, in place of the module's scheduler.
    fn initialize(&mut self, cx: &mut Ctx) -> Result<()> {
        let state = &mut *cx.state;
        let optimizer = state
            .optimizers
            .first_mut()
            .ok_or_else(|| Error::hook("StochasticWeightAveraging", "SWA needs an optimizer"))?;
        let groups = optimizer.param_groups().len();
        let swa_lrs = match self.swa_lrs.len() {
            1 => vec![self.swa_lrs[0]; groups],
            n if n == groups => self.swa_lrs.clone(),
            n => {
                return Err(Error::hook(
                    "StochasticWeightAveraging",
                    format!("`swa_lrs` has {n} values but the optimizer has {groups} parameter groups"),
                ));
            }
        };
        for (group, lr) in optimizer.param_groups_mut().iter_mut().zip(&swa_lrs) {
            group.initial_lr = *lr;
        }
        let last_epoch = match self.annealing_strategy {
            AnnealStrategy::Cos => self.max_epochs as i64,
            AnnealStrategy::Linear => -1,
        };
        let mut scheduler = SharedSwaLr(Arc::new(Mutex::new(
            SwaLr::new(swa_lrs)
                .anneal_epochs(self.annealing_epochs)
                .anneal_strategy(self.annealing_strategy)
                .last_epoch(last_epoch),
        )));
        scheduler.attach(&mut **optimizer);
        match &self.scheduler_state {
            Some(saved) => scheduler.load_state(saved)?,
            None if state.current_epoch != self.swa_start().unwrap_or(0) => crate::warning::warn(
                "SWA is initializing after swa_start without any checkpoint data. This may be caused by loading a \
                 checkpoint from an older version of lit.",
            ),
            None => {}
        }
        self.scheduler = Some(scheduler.clone());
        let active = ActiveScheduler {
            scheduler: Box::new(scheduler),
            optimizer: 0,
            interval: Interval::Epoch,
            frequency: 1,
            monitor: None,
        };
        match state.schedulers.first_mut() {
            Some(first) => {
                if first.interval != Interval::Epoch || first.frequency != 1 {
                    crate::warning::warn(&format!(
                        "SWA is currently only supported every epoch. Found `{}` stepping every {} {:?}",
                        first.scheduler.name(),
                        first.frequency,
                        first.interval
                    ));
                }
                tracing::info!(target: "lit", "Swapping scheduler `{}` for `SwaLr`", first.scheduler.name());
                *first = active;
            }
            None => state.schedulers.push(active),
        }
        if self.n_averaged.is_none() {
            self.n_averaged = Some(self.init_n_averaged);
        }
        Ok(())
    }
}

impl Callback for StochasticWeightAveraging {
    fn setup(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        if stage == Stage::Fit {
            // Lightning's deep copy of the module: the parameters, where the average is kept.
            let device = self.device.unwrap_or(cx.state.device);
            self.average = cx
                .state
                .module
                .named_parameters()
                .into_iter()
                .map(|(n, p)| (n, tch::no_grad(|| p.detach().to_device(device).copy())))
                .collect();
        }
        Ok(())
    }

    /// Lightning's `on_fit_start` checks, once the optimizers exist.
    fn on_pretrain_routine_start(&mut self, cx: &mut Ctx) -> Result<()> {
        let state = &*cx.state;
        if state.optimizers.len() != 1 {
            return Err(Error::hook(
                "StochasticWeightAveraging",
                format!(
                    "SWA currently works with 1 optimizer; `configure_optimizers` returned {}",
                    state.optimizers.len()
                ),
            ));
        }
        if state.schedulers.len() > 1 {
            return Err(Error::hook(
                "StochasticWeightAveraging",
                format!("SWA currently not supported for more than 1 lr_scheduler; got {}", state.schedulers.len()),
            ));
        }
        let max_epochs = state
            .config
            .epoch_limit()
            .ok_or_else(|| Error::hook("StochasticWeightAveraging", "SWA needs `max_epochs`"))?;
        if let SwaEpochStart::Fraction(f) = self.swa_epoch_start {
            self.swa_epoch_start = SwaEpochStart::Epoch((max_epochs as f64 * f) as i64);
        }
        self.max_epochs = max_epochs;
        self.contains_batch_norm = !state.module.batch_norm_layers("").is_empty();
        Ok(())
    }

    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        let epoch = cx.state.current_epoch;
        let (start, end) = (self.swa_start().unwrap_or(0), self.swa_end());
        if !self.initialized && (start..=end).contains(&epoch) {
            self.initialized = true;
            self.initialize(cx)?;
        }
        let module = cx.state.module.clone();
        if (start..=end).contains(&epoch) && epoch as i64 > self.latest_update_epoch {
            self.update_parameters(&module);
            self.latest_update_epoch = epoch as i64;
        }
        if epoch == end + 1 {
            self.transfer_weights(&module);
            self.bn_update = Some(BnUpdate::start(&module));
        }
        Ok(())
    }

    fn on_train_batch_end(&mut self, _: Option<&crate::StepOutput>, _: usize, _cx: &mut Ctx) -> Result<()> {
        if let Some(update) = self.bn_update.as_mut().filter(|u| u.measured) {
            update.after_batch();
        }
        Ok(())
    }

    fn on_train_epoch_end(&mut self, _cx: &mut Ctx) -> Result<()> {
        self.bn_update = None;
        Ok(())
    }

    fn on_train_end(&mut self, cx: &mut Ctx) -> Result<()> {
        // The fit loop counts the epoch it ended before this hook.
        let last = cx.state.current_epoch.checked_sub(1);
        let end = self.swa_end();
        if self.contains_batch_norm && last == Some(end + 1) {
            // The batch-norm update epoch ran: the module holds the average and new statistics
            // (lit never changes the layers' momenta, so there are none to put back).
        } else if last == Some(end) {
            self.transfer_weights(&cx.state.module);
        }
        Ok(())
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "n_averaged": self.n_averaged.unwrap_or(0),
            "latest_update_epoch": self.latest_update_epoch,
            "scheduler_state": self.scheduler.as_ref().map(|s| s.state()),
        }))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.init_n_averaged = state.get("n_averaged").and_then(|v| v.as_i64()).unwrap_or(0);
        self.latest_update_epoch = state.get("latest_update_epoch").and_then(|v| v.as_i64()).unwrap_or(-1);
        self.scheduler_state = state.get("scheduler_state").filter(|s| !s.is_null()).cloned();
        Ok(())
    }
}

/// One batch-norm layer in the update epoch: its statistics, its momentum (measured), and the
/// cumulative averages in double precision.
struct BnLayer {
    name: String,
    mean: Tensor,
    var: Tensor,
    momentum: Option<f64>,
    avg_mean: Tensor,
    avg_var: Tensor,
}

/// `torch.optim.swa_utils.update_bn` over an epoch of `training_step`s: the statistics are
/// reset, then after each batch set to the average of the batches' statistics so far (PyTorch's
/// `momentum=None`). tch's layers keep their own momentum `m`, so a batch moves a statistic from
/// `a` to `a + m (b - a)`; knowing `m`, the batch's `b` is recovered and averaged in. `m` is
/// measured on the first batch, from two runs of it from known statistics.
pub(crate) struct BnUpdate {
    layers: Vec<BnLayer>,
    batches: usize,
    measured: bool,
}

impl BnUpdate {
    /// Resets every batch-norm layer's statistics (mean 0, variance 1, as
    /// `reset_running_stats`).
    fn start(module: &ModuleParams) -> Self {
        let layers = module
            .batch_norm_layers("")
            .into_iter()
            .filter_map(|name| {
                let (mean, var) = module.batch_norm_stats(&name)?;
                let avg_mean = mean.zeros_like().to_kind(Kind::Double);
                let avg_var = var.ones_like().to_kind(Kind::Double);
                Some(BnLayer { name, mean, var, momentum: None, avg_mean, avg_var })
            })
            .collect();
        let update = BnUpdate { layers, batches: 0, measured: false };
        update.fill(0.0, 1.0);
        update
    }

    fn fill(&self, mean: f64, var: f64) {
        tch::no_grad(|| {
            for layer in &self.layers {
                let _ = layer.mean.shallow_clone().fill_(mean);
                let _ = layer.var.shallow_clone().fill_(var);
            }
        });
    }

    /// Each layer's statistics, mean and variance end to end, in double precision.
    fn read(&self) -> Vec<Tensor> {
        self.layers
            .iter()
            .map(|l| Tensor::cat(&[l.mean.to_kind(Kind::Double), l.var.to_kind(Kind::Double)], 0))
            .collect()
    }

    /// Measures each layer's momentum: `forward` (one batch's `training_step`, the same random
    /// numbers each time) runs from statistics 0 and from statistics 1; the difference of the
    /// results is `1 - m` in every channel. Layers the step does not use keep their reset
    /// statistics. A layer whose channels disagree (the two runs differed) is an error.
    pub(crate) fn measure(&mut self, mut forward: impl FnMut() -> Result<()>) -> Result<()> {
        self.fill(0.0, 0.0);
        forward()?;
        let from_zero = self.read();
        self.fill(1.0, 1.0);
        forward()?;
        let from_one = self.read();
        for ((layer, r0), r1) in self.layers.iter_mut().zip(from_zero).zip(from_one) {
            let r0 = Vec::<f64>::try_from(r0.to_device(Device::Cpu))?;
            let r1 = Vec::<f64>::try_from(r1.to_device(Device::Cpu))?;
            let ulp = match layer.mean.kind() {
                Kind::Half => 2f64.powi(-10),
                Kind::BFloat16 => 2f64.powi(-7),
                Kind::Double => 2f64.powi(-52),
                _ => 2f64.powi(-23),
            };
            // Each channel's estimate of m and its rounding error.
            let estimates: Vec<(f64, f64)> =
                r0.iter().zip(&r1).map(|(a, b)| (1.0 - (b - a), ulp * (a.abs() + b.abs() + 1.0))).collect();
            let weight: f64 = estimates.iter().map(|(_, e)| 1.0 / (e * e)).sum();
            let m = estimates.iter().map(|(m, e)| m / (e * e)).sum::<f64>() / weight;
            if let Some((bad, _)) = estimates.iter().find(|(mc, e)| (mc - m).abs() > 16.0 * e + 1e-9) {
                return Err(Error::hook(
                    "StochasticWeightAveraging",
                    format!(
                        "batch norm `{}`: two runs of `training_step` on the same batch moved its statistics \
                         differently (momentum {m} in one channel, {bad} in another), so they cannot be \
                         recomputed as `update_bn` does; does something random before it ignore `tch::manual_seed`, \
                         or does the layer run more than once per step?",
                        layer.name
                    ),
                ));
            }
            let unused = estimates.iter().all(|(mc, e)| mc.abs() <= 16.0 * e + 1e-12);
            layer.momentum = (!unused).then_some(m);
        }
        self.fill(0.0, 1.0);
        self.measured = true;
        Ok(())
    }

    /// After a batch: `avg += (new - avg) / (m n)` for each statistic, written back to the layer
    /// so that the layer holds the average of the batches so far.
    fn after_batch(&mut self) {
        self.batches += 1;
        let n = self.batches as f64;
        tch::no_grad(|| {
            for layer in &mut self.layers {
                let Some(m) = layer.momentum else { continue };
                for (stat, avg) in [(&layer.mean, &mut layer.avg_mean), (&layer.var, &mut layer.avg_var)] {
                    let moved = stat.to_kind(Kind::Double) - &*avg;
                    let _ = avg.g_add_(&(moved / (m * n)));
                    stat.shallow_clone().copy_(&avg.to_kind(stat.kind()));
                }
            }
        });
    }
}
