//! `torch.optim.swa_utils.SWALR`: anneals each group's learning rate to a fixed SWA learning
//! rate.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::{LrScheduler, Optimizer};
use crate::error::{Error, Result};

/// How [`SwaLr`] moves from the learning rate to the SWA learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnealStrategy {
    /// Cosine annealing (`"cos"`, the default).
    #[default]
    Cos,
    /// Linear annealing (`"linear"`).
    Linear,
}

impl AnnealStrategy {
    fn anneal(self, t: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => (1.0 - (PI * t).cos()) / 2.0,
            AnnealStrategy::Linear => t,
        }
    }
}

impl std::str::FromStr for AnnealStrategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cos" => Ok(AnnealStrategy::Cos),
            "linear" => Ok(AnnealStrategy::Linear),
            other => Err(Error::msg(format!("anneal_strategy must be one of 'cos' or 'linear', instead got {other}"))),
        }
    }
}

/// Anneals each parameter group's learning rate to its SWA learning rate over
/// `anneal_epochs` steps, then keeps it there, as `torch.optim.swa_utils.SWALR` (step for
/// step: each step starts from the group's current learning rate, as PyTorch's recursion does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwaLr {
    swa_lrs: Vec<f64>,
    anneal_epochs: usize,
    anneal_strategy: AnnealStrategy,
    last_epoch: i64,
    step_count: usize,
    last_lr: Vec<f64>,
}

impl SwaLr {
    /// `SWALR(optimizer, swa_lr)`: one SWA learning rate for every group, or one per group.
    pub fn new(swa_lrs: impl Into<Vec<f64>>) -> Self {
        SwaLr {
            swa_lrs: swa_lrs.into(),
            anneal_epochs: 10,
            anneal_strategy: AnnealStrategy::Cos,
            last_epoch: -1,
            step_count: 0,
            last_lr: Vec::new(),
        }
    }
    /// Steps of annealing (default 10).
    pub fn anneal_epochs(mut self, epochs: usize) -> Self {
        self.anneal_epochs = epochs;
        self
    }
    /// Cosine (default) or linear annealing.
    pub fn anneal_strategy(mut self, strategy: AnnealStrategy) -> Self {
        self.anneal_strategy = strategy;
        self
    }
    /// The index of the last epoch (PyTorch's `last_epoch`, default -1).
    pub fn last_epoch(mut self, last_epoch: i64) -> Self {
        self.last_epoch = last_epoch;
        self
    }
    /// The SWA learning rate of each group (after `attach`).
    pub fn swa_lrs(&self) -> &[f64] {
        &self.swa_lrs
    }
    /// How many times it has stepped, counting the step `attach` takes (PyTorch's
    /// `_step_count`).
    pub fn step_count(&self) -> usize {
        self.step_count
    }

    /// One step: PyTorch's `get_lr` from the groups' current learning rates.
    fn advance(&mut self, optimizer: &mut dyn Optimizer) {
        self.step_count += 1;
        self.last_epoch += 1;
        let anneal = self.anneal_epochs.max(1) as f64;
        let mut step = self.step_count as f64 - 1.0;
        if self.anneal_epochs == 0 {
            step = step.max(1.0);
        }
        let prev_alpha = self.anneal_strategy.anneal(((step - 1.0) / anneal).clamp(0.0, 1.0));
        let alpha = self.anneal_strategy.anneal((step / anneal).clamp(0.0, 1.0));
        self.last_lr = optimizer
            .param_groups_mut()
            .iter_mut()
            .zip(&self.swa_lrs)
            .map(|(group, &swa_lr)| {
                let prev =
                    if prev_alpha == 1.0 { swa_lr } else { (group.lr - prev_alpha * swa_lr) / (1.0 - prev_alpha) };
                group.lr = swa_lr * alpha + prev * (1.0 - alpha);
                group.lr
            })
            .collect();
    }
}

impl LrScheduler for SwaLr {
    fn attach(&mut self, optimizer: &mut dyn Optimizer) {
        let groups = optimizer.param_groups().len();
        if self.swa_lrs.len() == 1 {
            self.swa_lrs = vec![self.swa_lrs[0]; groups];
        }
        self.step_count = 0;
        self.advance(optimizer);
    }

    fn step(&mut self, optimizer: &mut dyn Optimizer, _metric: Option<f64>) -> Result<()> {
        self.advance(optimizer);
        Ok(())
    }

    fn last_lr(&self) -> Vec<f64> {
        self.last_lr.clone()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        *self = serde_json::from_value(state.clone())
            .map_err(|e| Error::msg(format!("SwaLr: the saved scheduler state does not fit: {e}")))?;
        Ok(())
    }

    fn name(&self) -> String {
        "SwaLr".into()
    }
}

impl From<SwaLr> for super::SchedulerConfig {
    fn from(scheduler: SwaLr) -> Self {
        super::SchedulerConfig {
            scheduler: Box::new(scheduler),
            interval: super::Interval::Epoch,
            frequency: 1,
            monitor: None,
        }
    }
}
