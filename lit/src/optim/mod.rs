//! Optimizers and learning-rate schedulers, as `configure_optimizers` returns them.
//!
//! lit's optimizers ([`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`]) follow `torch.optim`'s update
//! rules step for step and keep their state (step counts, moments) in tensors named after the
//! parameters, so that checkpoints can store and restore them. Parameters can be split into
//! groups with their own learning rate and weight decay (e.g. no decay on biases).

mod algorithms;
mod scheduler;
mod swa_lr;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

pub use algorithms::{Adam, AdamW, RmsProp, Sgd};

pub(crate) use scheduler::ActiveScheduler;
pub use scheduler::{
    ChainedScheduler, ClosedForm, CosineAnnealingLr, ExponentialLr, Interval, LambdaLr, LinearLr, LrScheduler,
    MultiStepLr, OneCycleLr, PlateauMode, ReduceLrOnPlateau, SchedulerConfig, SequentialLr, StepLr,
};
pub use swa_lr::{AnnealStrategy, SwaLr};

use crate::error::{Error, Result};

/// Parameters that share options.
pub struct ParamGroup {
    /// The learning rate now.
    pub lr: f64,
    /// The learning rate the group started with (what schedulers scale).
    pub initial_lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    pub(crate) params: Vec<(String, Tensor)>,
}

impl ParamGroup {
    /// The parameters' names, as in the `VarStore`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }
}

/// An optimizer's state: tensors by name (`exp_avg/l1.weight`, …) and scalars as JSON.
#[derive(Default)]
pub struct OptimizerState {
    /// State tensors.
    pub tensors: BTreeMap<String, Tensor>,
    /// Step count and group options.
    pub meta: serde_json::Value,
}

/// An optimizer the loops drive; the hooks `optimizer_zero_grad`, `optimizer_step` and
/// `configure_gradient_clipping` receive it.
pub trait Optimizer {
    /// The algorithm's name, as PyTorch calls it (`Adam`, `SGD`, …).
    fn name(&self) -> &'static str {
        "Optimizer"
    }
    /// Clears the gradients of the optimized parameters.
    fn zero_grad(&mut self);
    /// Applies one update from the current gradients.
    fn step(&mut self);
    /// The parameter groups.
    fn param_groups(&self) -> &[ParamGroup];
    /// The parameter groups, mutably (to change learning rates).
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];
    /// The state to save in a checkpoint.
    fn state_dict(&self) -> OptimizerState;
    /// Restores a saved state; a state that does not fit (other parameters, other shapes) is an
    /// error and changes nothing.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
    /// Adds a parameter group, as torch.optim's `add_param_group`: `params` by their `VarStore`
    /// names, with `options` overriding the optimizer's learning rate and weight decay. A
    /// parameter already in a group is an error.
    fn add_param_group(&mut self, params: Vec<(String, Tensor)>, options: GroupOptions) -> Result<()> {
        let _ = (params, options);
        Err(Error::msg(format!("the optimizer `{}` cannot add parameter groups", self.name())))
    }

    /// The learning rate of the first group.
    fn lr(&self) -> f64 {
        self.param_groups().first().map_or(0.0, |g| g.lr)
    }
    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) {
        for g in self.param_groups_mut() {
            g.lr = lr;
        }
    }
    /// Scales gradients so that their global 2-norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping (a 0-d tensor, so no
    /// device sync).
    fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        clip_grad_norm(self.param_groups(), max_norm)
    }
    /// Clamps every gradient element to `[-max, max]`.
    fn clip_grad_value(&mut self, max: f64) {
        for mut g in grads(self.param_groups()) {
            let _ = g.clamp_(-max, max);
        }
    }
}

/// The gradients the parameters of `groups` have (those never back-propagated to have none), in
/// group order; each shares storage with its parameter's gradient.
pub(crate) fn grads(groups: &[ParamGroup]) -> Vec<Tensor> {
    groups.iter().flat_map(|g| &g.params).map(|(_, p)| p.grad()).filter(Tensor::defined).collect()
}

pub(crate) fn clip_grad_norm(groups: &[ParamGroup], max_norm: f64) -> Tensor {
    let grads = grads(groups);
    if grads.is_empty() {
        return Tensor::from(0.0f32);
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for g in &grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_(&coef.to_kind(g.kind()));
        }
        total
    })
}

/// Options of one parameter group: a learning rate and weight decay overriding the optimizer's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupOptions {
    /// Learning rate for the group.
    pub lr: Option<f64>,
    /// Weight decay for the group.
    pub weight_decay: Option<f64>,
}

impl GroupOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// With this learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }
    /// With this weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

type Filter = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Rules that split parameters into groups: each parameter goes to the first rule whose filter
/// accepts its name, or to the default group.
#[derive(Clone, Default)]
pub struct Groups {
    only: Option<Filter>,
    rules: Vec<(Filter, GroupOptions)>,
}

impl Groups {
    pub(crate) fn only(&mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.only = Some(std::sync::Arc::new(filter));
    }

    pub(crate) fn add(&mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static, options: GroupOptions) {
        self.rules.push((std::sync::Arc::new(filter), options));
    }

    /// The trainable variables of `vs`, in the order the module created them (PyTorch's
    /// `parameters()` order for a module that registers its layers in the same order), split
    /// into groups.
    pub(crate) fn build(&self, vs: &nn::VarStore, lr: f64, weight_decay: f64) -> Vec<ParamGroup> {
        let variables: Vec<(String, Tensor)> = creation_order(vs)
            .into_iter()
            .filter(|(n, t)| t.requires_grad() && self.only.as_ref().is_none_or(|f| f(n)))
            .collect();
        let mut groups: Vec<ParamGroup> = self
            .rules
            .iter()
            .map(|(_, o)| {
                let lr = o.lr.unwrap_or(lr);
                ParamGroup {
                    lr,
                    initial_lr: lr,
                    weight_decay: o.weight_decay.unwrap_or(weight_decay),
                    params: Vec::new(),
                }
            })
            .collect();
        let mut default = ParamGroup { lr, initial_lr: lr, weight_decay, params: Vec::new() };
        for (name, t) in variables {
            match self.rules.iter().position(|(f, _)| f(&name)) {
                Some(i) => groups[i].params.push((name, t)),
                None => default.params.push((name, t)),
            }
        }
        groups.insert(0, default);
        groups.retain(|g| !g.params.is_empty());
        groups
    }
}

/// `vs`'s variables in the order they were created (by name where that order is not known: a
/// variable tch does not list as trainable, or two sharing storage).
fn creation_order(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut by_name: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let position: std::collections::HashMap<usize, usize> =
        vs.trainable_variables().iter().enumerate().map(|(i, t)| (t.data_ptr() as usize, i)).collect();
    let key = |t: &Tensor| position.get(&(t.data_ptr() as usize)).copied().unwrap_or(usize::MAX);
    let distinct: std::collections::HashSet<usize> = by_name.iter().map(|(_, t)| t.data_ptr() as usize).collect();
    if distinct.len() == by_name.len() {
        by_name.sort_by_key(|(_, t)| key(t)); // stable: unknown ones stay sorted by name, last
    }
    by_name
}

/// Something that builds an [`Optimizer`] over a module's variables.
pub trait OptimizerConfig {
    /// The optimizer over the trainable variables of `vs`.
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>>;
}

/// One optimizer of [`Optimizers`], with its schedulers and how often it steps.
pub(crate) struct OptimizerEntry {
    pub(crate) config: Box<dyn OptimizerConfig>,
    pub(crate) frequency: Option<usize>,
    pub(crate) schedulers: Vec<SchedulerConfig>,
}

/// Built optimizers, their stepping frequencies and their schedulers.
pub(crate) type Built = (Vec<Box<dyn Optimizer>>, Vec<Option<usize>>, Vec<ActiveScheduler>);

/// What `configure_optimizers` returns, in any of Lightning's shapes: one optimizer, several,
/// optimizers with schedulers (each with `interval`, `frequency` and `monitor`), optimizers with
/// a stepping `frequency` (several optimizers taking turns).
#[derive(Default)]
pub struct Optimizers {
    pub(crate) entries: Vec<OptimizerEntry>,
}

impl Optimizers {
    /// No optimizer: training runs the steps but updates nothing (with a warning).
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds an optimizer.
    pub fn with(mut self, config: impl OptimizerConfig + 'static) -> Self {
        self.entries.push(OptimizerEntry { config: Box::new(config), frequency: None, schedulers: Vec::new() });
        self
    }

    /// Adds an optimizer that steps for `frequency` consecutive batches when its turn comes
    /// (Lightning's `{"optimizer": …, "frequency": n}`).
    pub fn with_frequency(mut self, config: impl OptimizerConfig + 'static, frequency: usize) -> Self {
        self.entries.push(OptimizerEntry {
            config: Box::new(config),
            frequency: Some(frequency.max(1)),
            schedulers: Vec::new(),
        });
        self
    }

    /// Adds a learning-rate scheduler to the optimizer added last: a bare scheduler steps every
    /// epoch; a [`SchedulerConfig`] says `interval`, `frequency` and `monitor`.
    pub fn scheduler(mut self, scheduler: impl Into<SchedulerConfig>) -> Self {
        if let Some(entry) = self.entries.last_mut() {
            entry.schedulers.push(scheduler.into());
        }
        self
    }

    /// The number of optimizers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no optimizer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds the optimizers over `vs` and attaches their schedulers; returns the optimizers,
    /// their frequencies and the schedulers.
    pub(crate) fn build(self, vs: &nn::VarStore) -> Result<Built> {
        let (mut optimizers, mut frequencies, mut schedulers) = (Vec::new(), Vec::new(), Vec::new());
        for (i, entry) in self.entries.into_iter().enumerate() {
            let mut optimizer = entry.config.build(vs)?;
            for mut s in entry.schedulers {
                s.scheduler.attach(&mut *optimizer);
                if s.scheduler.needs_metric() && s.monitor.is_none() {
                    return Err(Error::hook("configure_optimizers", "a ReduceLrOnPlateau scheduler needs `monitor`"));
                }
                schedulers.push(ActiveScheduler {
                    scheduler: s.scheduler,
                    optimizer: i,
                    interval: s.interval,
                    frequency: s.frequency,
                    monitor: s.monitor,
                });
            }
            optimizers.push(optimizer);
            frequencies.push(entry.frequency);
        }
        if frequencies.iter().any(Option::is_some) && frequencies.iter().any(Option::is_none) {
            return Err(Error::hook("configure_optimizers", "give every optimizer a frequency, or none"));
        }
        Ok((optimizers, frequencies, schedulers))
    }
}

impl<T: OptimizerConfig + 'static> From<T> for Optimizers {
    fn from(config: T) -> Self {
        Optimizers::none().with(config)
    }
}

/// Reads `name` from a state's tensors, checking its shape against `like`.
pub(crate) fn state_tensor(state: &OptimizerState, name: &str, like: &Tensor) -> Result<Tensor> {
    let t = state.tensors.get(name).ok_or_else(|| Error::msg(format!("optimizer state has no `{name}`")))?;
    if t.size() != like.size() {
        return Err(Error::msg(format!(
            "optimizer state `{name}` has shape {:?}, the parameter {:?}",
            t.size(),
            like.size()
        )));
    }
    Ok(t.to_device(like.device()).to_kind(like.kind()))
}
