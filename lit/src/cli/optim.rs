//! LightningCLI's `optimizer` and `lr_scheduler` keys: torch's optimizer and scheduler classes,
//! with torch's init-arg names and defaults (the subset lit implements), and what they make of
//! the module's `configure_optimizers`.

use serde::{Deserialize, Serialize};

use super::FieldDocs;
use super::builtins::required;
use super::registry::Registry;
use crate::error::Result;
use crate::optim::{
    Adam, AdamW, CosineAnnealingLr, ExponentialLr, Interval, LinearLr, MultiStepLr, Optimizers, PlateauMode,
    ReduceLrOnPlateau, RmsProp, SchedulerConfig, Sgd, StepLr,
};

/// An `optimizer` class's init args: the optimizer they configure, as often as a run asks.
pub(crate) trait CliOptimizer {
    /// The module's optimizers: this one.
    fn optimizers(&self) -> Optimizers;

    /// What torch's constructor refuses (`ValueError`s) or requires, as errors naming the class.
    fn check(self) -> Result<Self>
    where
        Self: Sized,
    {
        Ok(self)
    }
}

/// An `lr_scheduler` class's init args: the scheduler they configure.
pub(crate) trait CliScheduler {
    /// The scheduler, stepped as LightningCLI's `configure_optimizers` returns it.
    fn scheduler(&self) -> SchedulerConfig;

    /// What torch's constructor refuses or requires, as errors naming the class.
    fn check(self) -> Result<Self>
    where
        Self: Sized,
    {
        Ok(self)
    }
}

/// Every class, one line each, under torch's paths (Lightning's for its `ReduceLROnPlateau`,
/// which adds `monitor`).
pub(super) fn register(r: &mut Registry) {
    r.optimizer::<SgdArgs>("torch.optim.SGD");
    r.optimizer::<AdamArgs>("torch.optim.Adam");
    r.optimizer::<AdamWArgs>("torch.optim.AdamW");
    r.optimizer::<RmsPropArgs>("torch.optim.RMSprop");
    r.lr_scheduler::<StepLrArgs>("torch.optim.lr_scheduler.StepLR");
    r.lr_scheduler::<MultiStepLrArgs>("torch.optim.lr_scheduler.MultiStepLR");
    r.lr_scheduler::<ExponentialLrArgs>("torch.optim.lr_scheduler.ExponentialLR");
    r.lr_scheduler::<CosineAnnealingLrArgs>("torch.optim.lr_scheduler.CosineAnnealingLR");
    r.lr_scheduler::<LinearLrArgs>("torch.optim.lr_scheduler.LinearLR");
    r.lr_scheduler::<ReduceLrOnPlateauArgs>("lightning.pytorch.cli.ReduceLROnPlateau");
}

/// `torch.optim.SGD`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct SgdArgs {
    /// The learning rate.
    lr: f64,
    /// The momentum factor.
    momentum: f64,
    /// Dampening of the momentum.
    dampening: f64,
    /// L2 penalty.
    weight_decay: f64,
    /// Nesterov momentum (needs a momentum and no dampening).
    nesterov: bool,
}

impl Default for SgdArgs {
    fn default() -> Self {
        SgdArgs { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl CliOptimizer for SgdArgs {
    fn check(self) -> Result<Self> {
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(super::cli_error("SGD: Nesterov momentum requires a momentum and zero dampening"));
        }
        Ok(self)
    }

    fn optimizers(&self) -> Optimizers {
        Sgd::new(self.lr)
            .momentum(self.momentum)
            .dampening(self.dampening)
            .weight_decay(self.weight_decay)
            .nesterov(self.nesterov)
            .into()
    }
}

/// `torch.optim.Adam`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct AdamArgs {
    /// The learning rate.
    lr: f64,
    /// Coefficients of the running averages of the gradient and its square.
    betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    eps: f64,
    /// L2 penalty.
    weight_decay: f64,
    /// The AMSGrad variant.
    amsgrad: bool,
}

impl Default for AdamArgs {
    fn default() -> Self {
        AdamArgs { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

impl CliOptimizer for AdamArgs {
    fn optimizers(&self) -> Optimizers {
        let (b1, b2) = self.betas;
        Adam::new(self.lr).betas(b1, b2).eps(self.eps).weight_decay(self.weight_decay).amsgrad(self.amsgrad).into()
    }
}

/// `torch.optim.AdamW`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct AdamWArgs {
    /// The learning rate.
    lr: f64,
    /// Coefficients of the running averages of the gradient and its square.
    betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    eps: f64,
    /// Decoupled weight decay.
    weight_decay: f64,
    /// The AMSGrad variant.
    amsgrad: bool,
}

impl Default for AdamWArgs {
    fn default() -> Self {
        AdamWArgs { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-2, amsgrad: false }
    }
}

impl CliOptimizer for AdamWArgs {
    fn optimizers(&self) -> Optimizers {
        let (b1, b2) = self.betas;
        AdamW::new(self.lr).betas(b1, b2).eps(self.eps).weight_decay(self.weight_decay).amsgrad(self.amsgrad).into()
    }
}

/// `torch.optim.RMSprop`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct RmsPropArgs {
    /// The learning rate.
    lr: f64,
    /// Smoothing constant.
    alpha: f64,
    /// Added to the denominator for numerical stability.
    eps: f64,
    /// L2 penalty.
    weight_decay: f64,
    /// The momentum factor.
    momentum: f64,
    /// Normalise by an estimate of the gradient's variance.
    centered: bool,
}

impl Default for RmsPropArgs {
    fn default() -> Self {
        RmsPropArgs { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl CliOptimizer for RmsPropArgs {
    fn optimizers(&self) -> Optimizers {
        RmsProp::new(self.lr)
            .alpha(self.alpha)
            .eps(self.eps)
            .weight_decay(self.weight_decay)
            .momentum(self.momentum)
            .centered(self.centered)
            .into()
    }
}

/// `torch.optim.lr_scheduler.StepLR`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct StepLrArgs {
    /// Epochs between decays (required).
    step_size: Option<usize>,
    /// The decay factor.
    gamma: f64,
}

impl Default for StepLrArgs {
    fn default() -> Self {
        StepLrArgs { step_size: None, gamma: 0.1 }
    }
}

impl CliScheduler for StepLrArgs {
    fn check(self) -> Result<Self> {
        required("StepLR", "step_size", self.step_size)?;
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        StepLr::new(self.step_size.unwrap_or(1), self.gamma).into()
    }
}

/// `torch.optim.lr_scheduler.MultiStepLR`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct MultiStepLrArgs {
    /// The epochs at which to decay (required).
    milestones: Option<Vec<usize>>,
    /// The decay factor.
    gamma: f64,
}

impl Default for MultiStepLrArgs {
    fn default() -> Self {
        MultiStepLrArgs { milestones: None, gamma: 0.1 }
    }
}

impl CliScheduler for MultiStepLrArgs {
    fn check(self) -> Result<Self> {
        required("MultiStepLR", "milestones", self.milestones.as_ref())?;
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        MultiStepLr::new(self.milestones.clone().unwrap_or_default(), self.gamma).into()
    }
}

/// `torch.optim.lr_scheduler.ExponentialLR`'s init args.
#[derive(Serialize, Deserialize, FieldDocs, Default)]
#[serde(default)]
pub(crate) struct ExponentialLrArgs {
    /// The decay factor of every epoch (required).
    gamma: Option<f64>,
}

impl CliScheduler for ExponentialLrArgs {
    fn check(self) -> Result<Self> {
        required("ExponentialLR", "gamma", self.gamma)?;
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        ExponentialLr::new(self.gamma.unwrap_or(1.0)).into()
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR`'s init args.
#[derive(Serialize, Deserialize, FieldDocs, Default)]
#[serde(default)]
pub(crate) struct CosineAnnealingLrArgs {
    /// Epochs of the half cosine (required).
    #[serde(rename = "T_max")]
    t_max: Option<usize>,
    /// The lowest learning rate.
    eta_min: f64,
}

impl CliScheduler for CosineAnnealingLrArgs {
    fn check(self) -> Result<Self> {
        required("CosineAnnealingLR", "T_max", self.t_max)?;
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        CosineAnnealingLr::new(self.t_max.unwrap_or(1), self.eta_min).into()
    }
}

/// `torch.optim.lr_scheduler.LinearLR`'s init args.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct LinearLrArgs {
    /// The factor at the first epoch.
    start_factor: f64,
    /// The factor from `total_iters` on.
    end_factor: f64,
    /// Epochs of the ramp.
    total_iters: usize,
}

impl Default for LinearLrArgs {
    fn default() -> Self {
        LinearLrArgs { start_factor: 1.0 / 3.0, end_factor: 1.0, total_iters: 5 }
    }
}

impl CliScheduler for LinearLrArgs {
    fn check(self) -> Result<Self> {
        let start_ok = self.start_factor > 0.0 && self.start_factor <= 1.0;
        if !start_ok || !(0.0..=1.0).contains(&self.end_factor) {
            return Err(super::cli_error(
                "LinearLR: `start_factor` must be in (0, 1] and `end_factor` in [0, 1], as torch requires",
            ));
        }
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        LinearLr::new(self.start_factor, self.end_factor, self.total_iters).into()
    }
}

/// `lightning.pytorch.cli.ReduceLROnPlateau`'s init args: torch's `ReduceLROnPlateau` and the
/// metric it watches.
#[derive(Serialize, Deserialize, FieldDocs)]
#[serde(default)]
pub(crate) struct ReduceLrOnPlateauArgs {
    /// The logged metric to watch (required).
    monitor: Option<String>,
    /// "min" or "max": which values of `monitor` are better.
    mode: PlateauMode,
    /// The factor applied on a plateau.
    factor: f64,
    /// Epochs without improvement before reducing.
    patience: usize,
    /// The relative improvement that counts.
    threshold: f64,
    /// Epochs to wait after a reduction.
    cooldown: usize,
    /// The lowest learning rate.
    min_lr: f64,
    /// Reductions smaller than this are skipped.
    eps: f64,
}

impl Default for ReduceLrOnPlateauArgs {
    fn default() -> Self {
        let torch = ReduceLrOnPlateau::default();
        ReduceLrOnPlateauArgs {
            monitor: None,
            mode: torch.mode,
            factor: torch.factor,
            patience: torch.patience,
            threshold: torch.threshold,
            cooldown: torch.cooldown,
            min_lr: torch.min_lr,
            eps: torch.eps,
        }
    }
}

impl CliScheduler for ReduceLrOnPlateauArgs {
    fn check(self) -> Result<Self> {
        required("ReduceLROnPlateau", "monitor", self.monitor.as_ref())?;
        if self.factor >= 1.0 {
            return Err(super::cli_error("ReduceLROnPlateau: `factor` should be < 1.0, as torch requires"));
        }
        Ok(self)
    }

    fn scheduler(&self) -> SchedulerConfig {
        let mut torch = ReduceLrOnPlateau::new(self.mode, self.factor, self.patience);
        (torch.threshold, torch.cooldown, torch.min_lr, torch.eps) =
            (self.threshold, self.cooldown, self.min_lr, self.eps);
        SchedulerConfig::new(torch).monitor(self.monitor.clone().unwrap_or_default()).interval(Interval::Epoch)
    }
}
