//! What every metric shares: named state tensors with their reductions ([`States`]), a
//! metric's configuration and arithmetic ([`Kernel`]), and the clonable handle around both
//! ([`Shared`]) that the public metric types wrap.

use std::sync::{Arc, Mutex, MutexGuard};

use tch::{Device, Tensor};

use super::{Reduction, combine, metric_error};
use crate::error::Result;

/// One state tensor: its name (torchmetrics'), how it combines, and its value after a reset.
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) reduction: Reduction,
    pub(crate) default: Tensor,
}

impl Spec {
    pub(crate) fn new(name: &'static str, reduction: Reduction, default: Tensor) -> Self {
        Spec { name, reduction, default }
    }
}

enum Value {
    One(Tensor),
    /// A concatenated state, kept as its batches until read.
    Many(Vec<Tensor>),
}

/// A metric's state tensors.
pub(crate) struct States {
    specs: Vec<Spec>,
    values: Vec<Value>,
}

impl States {
    pub(crate) fn new(specs: Vec<Spec>, device: Device) -> Self {
        let specs: Vec<Spec> = specs.into_iter().map(|s| Spec { default: s.default.to_device(device), ..s }).collect();
        let values = specs.iter().map(Self::initial).collect();
        States { specs, values }
    }

    fn initial(spec: &Spec) -> Value {
        match spec.reduction {
            Reduction::Cat => Value::Many(Vec::new()),
            _ => Value::One(spec.default.copy()),
        }
    }

    fn index(&self, name: &str) -> usize {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("metric state `{name}` is not declared"))
    }

    /// The value of state `name` (a concatenated state joined into one tensor).
    pub(crate) fn get(&self, name: &str) -> Tensor {
        let i = self.index(name);
        match &self.values[i] {
            Value::One(t) => t.shallow_clone(),
            Value::Many(parts) if parts.is_empty() => self.specs[i].default.shallow_clone(),
            Value::Many(parts) if parts.len() == 1 => parts[0].shallow_clone(),
            Value::Many(parts) => Tensor::cat(parts, 0),
        }
    }

    /// `state = state + x` (out of place: the type promotes as in torchmetrics' `self.x = self.x + x`).
    pub(crate) fn add(&mut self, name: &str, x: &Tensor) {
        let i = self.index(name);
        if let Value::One(t) = &mut self.values[i] {
            *t = &*t + x;
        }
    }

    /// `state += x` (in place: the state keeps its type, as torchmetrics' `self.x += x`).
    pub(crate) fn add_(&mut self, name: &str, x: &Tensor) {
        let i = self.index(name);
        if let Value::One(t) = &mut self.values[i] {
            let _ = t.g_add_(x);
        }
    }

    /// Replaces state `name`.
    pub(crate) fn set(&mut self, name: &str, x: Tensor) {
        let i = self.index(name);
        self.values[i] = match self.specs[i].reduction {
            Reduction::Cat => Value::Many(vec![x]),
            _ => Value::One(x),
        };
    }

    /// Appends a batch to concatenated state `name`.
    pub(crate) fn push(&mut self, name: &str, x: Tensor) {
        let i = self.index(name);
        if let Value::Many(parts) = &mut self.values[i] {
            parts.push(x);
        }
    }

    /// Adds `other`'s state (a batch's) to this one, each tensor by its reduction.
    pub(crate) fn merge(&mut self, other: &States) -> Result<()> {
        for (i, spec) in self.specs.iter().enumerate() {
            match (&mut self.values[i], &other.values[i]) {
                (Value::Many(mine), Value::Many(theirs)) => mine.extend(theirs.iter().map(Tensor::shallow_clone)),
                (Value::One(mine), Value::One(theirs)) => *mine = combine(spec.reduction, mine, theirs)?,
                _ => unreachable!("states of one kernel have one layout"),
            }
        }
        Ok(())
    }

    pub(crate) fn reset(&mut self) {
        self.values = self.specs.iter().map(Self::initial).collect();
    }

    /// Moves every state tensor to `device` (where the inputs are).
    pub(crate) fn move_to(&mut self, device: Device) {
        if self.specs.first().is_none_or(|s| s.default.device() == device) {
            return;
        }
        for spec in &mut self.specs {
            spec.default = spec.default.to_device(device);
        }
        for value in &mut self.values {
            match value {
                Value::One(t) => *t = t.to_device(device),
                Value::Many(parts) => parts.iter_mut().for_each(|t| *t = t.to_device(device)),
            }
        }
    }

    pub(crate) fn named(&self) -> Vec<(String, Tensor)> {
        self.specs.iter().map(|s| (s.name.to_string(), self.get(s.name))).collect()
    }

    pub(crate) fn reductions(&self) -> Vec<(String, Reduction)> {
        self.specs.iter().map(|s| (s.name.to_string(), s.reduction)).collect()
    }

    /// Replaces the state with `named` (every state, by name; shapes checked except along a
    /// concatenated state's first dimension).
    pub(crate) fn load(&mut self, metric: &str, named: &[(String, Tensor)]) -> Result<()> {
        let mut values = Vec::with_capacity(self.specs.len());
        for spec in &self.specs {
            let Some((_, t)) = named.iter().find(|(n, _)| n == spec.name) else {
                return Err(metric_error(metric, format!("the state to load has no `{}`", spec.name)));
            };
            let (want, got) = (spec.default.size(), t.size());
            let fits = match spec.reduction {
                Reduction::Cat => want.len() == got.len() && want[1..] == got[1..],
                _ => want == got || want.is_empty(),
            };
            if !fits {
                return Err(metric_error(
                    metric,
                    format!("state `{}` has shape {got:?}, which does not fit {want:?}", spec.name),
                ));
            }
            let t = t.to_device(spec.default.device()).copy();
            values.push(match spec.reduction {
                Reduction::Cat => Value::Many(vec![t]),
                _ => Value::One(t),
            });
        }
        if let Some((extra, _)) = named.iter().find(|(n, _)| !self.specs.iter().any(|s| s.name == n)) {
            return Err(metric_error(metric, format!("the state to load has `{extra}`, which this metric has not")));
        }
        self.values = values;
        Ok(())
    }
}

/// A metric's configuration and arithmetic; the state lives in [`States`].
pub(crate) trait Kernel: Clone + Send + Sync + 'static {
    /// torchmetrics' class name, e.g. `MulticlassAccuracy`.
    fn name(&self) -> String;
    /// The state tensors at their defaults.
    fn specs(&self) -> Vec<Spec>;
    /// An error for an invalid configuration (checked before every update and compute).
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Adds a batch to `s`, a fresh state: validates, then writes the batch's state.
    fn update(&self, s: &mut States, a: &Tensor, b: &Tensor) -> Result<()>;
    /// The value of state `s`.
    fn compute(&self, s: &States) -> Result<Tensor>;
}

struct Inner {
    states: States,
    forward: Option<Tensor>,
    updates: usize,
}

/// A clonable handle on a metric: the configuration, and the state behind a mutex that every
/// clone shares.
pub(crate) struct Shared<K> {
    pub(crate) kernel: Arc<K>,
    inner: Arc<Mutex<Inner>>,
}

impl<K> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared { kernel: Arc::clone(&self.kernel), inner: Arc::clone(&self.inner) }
    }
}

impl<K: Kernel> std::fmt::Debug for Shared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(&self.kernel.name()).field("updates", &self.lock().updates).finish()
    }
}

impl<K: Kernel> Shared<K> {
    pub(crate) fn new(kernel: K) -> Self {
        let states = States::new(kernel.specs(), Device::Cpu);
        Shared { kernel: Arc::new(kernel), inner: Arc::new(Mutex::new(Inner { states, forward: None, updates: 0 })) }
    }

    /// A new metric (own, default state) with the configuration changed by `change`: what the
    /// builder methods return.
    pub(crate) fn configure(&self, change: impl FnOnce(&mut K)) -> Self {
        let mut kernel = (*self.kernel).clone();
        change(&mut kernel);
        Shared::new(kernel)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a state that is still consistent tensors.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of one batch alone.
    fn batch(&self, a: &Tensor, b: &Tensor) -> Result<States> {
        self.kernel.check()?;
        let mut batch = States::new(self.kernel.specs(), a.device());
        tch::no_grad(|| self.kernel.update(&mut batch, &a.detach(), &b.detach()))?;
        Ok(batch)
    }

    pub(crate) fn update(&self, a: &Tensor, b: &Tensor) -> Result<()> {
        let batch = self.batch(a, b)?;
        let mut inner = self.lock();
        inner.states.move_to(a.device());
        tch::no_grad(|| inner.states.merge(&batch))?;
        inner.updates += 1;
        Ok(())
    }

    pub(crate) fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let batch = self.batch(a, b)?;
        let value = tch::no_grad(|| self.kernel.compute(&batch))?;
        let mut inner = self.lock();
        inner.states.move_to(a.device());
        tch::no_grad(|| inner.states.merge(&batch))?;
        inner.updates += 1;
        inner.forward = Some(value.shallow_clone());
        Ok(value)
    }

    pub(crate) fn compute(&self) -> Result<Tensor> {
        self.kernel.check()?;
        let inner = self.lock();
        if inner.updates == 0 {
            tracing::debug!(target: "lit", metric = %self.kernel.name(), "compute before any update: the value of the default state");
        }
        tch::no_grad(|| self.kernel.compute(&inner.states))
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.states.reset();
        inner.forward = None;
        inner.updates = 0;
    }

    pub(crate) fn forward_value(&self) -> Option<Tensor> {
        self.lock().forward.as_ref().map(Tensor::shallow_clone)
    }

    pub(crate) fn update_count(&self) -> usize {
        self.lock().updates
    }

    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        self.lock().states.named()
    }

    pub(crate) fn reductions(&self) -> Vec<(String, Reduction)> {
        self.lock().states.reductions()
    }

    pub(crate) fn load_state(&self, named: &[(String, Tensor)]) -> Result<()> {
        let mut inner = self.lock();
        inner.states.load(&self.kernel.name(), named)?;
        inner.forward = None;
        Ok(())
    }

    pub(crate) fn fresh(&self) -> Self {
        Shared::new((*self.kernel).clone())
    }
}

/// Implements [`Metric`](super::Metric) (and, with `update`, [`Update`](super::Update)) for a
/// public metric type, a newtype around [`Shared`].
macro_rules! metric_type {
    ($ty:ident) => {
        impl $ty {
            /// The value over everything seen since the last reset ([`Metric::compute`](crate::metrics::Metric::compute)).
            pub fn compute(&self) -> $crate::Result<tch::Tensor> {
                self.0.compute()
            }
            /// Forgets every batch ([`Metric::reset`](crate::metrics::Metric::reset)).
            pub fn reset(&self) {
                self.0.reset()
            }
        }
        impl $crate::metrics::Metric for $ty {
            fn name(&self) -> String {
                $crate::metrics::state::Kernel::name(&*self.0.kernel)
            }
            fn compute(&self) -> $crate::Result<tch::Tensor> {
                self.0.compute()
            }
            fn reset(&self) {
                self.0.reset()
            }
            fn forward_value(&self) -> Option<tch::Tensor> {
                self.0.forward_value()
            }
            fn update_count(&self) -> usize {
                self.0.update_count()
            }
            fn state(&self) -> Vec<(String, tch::Tensor)> {
                self.0.state()
            }
            fn reductions(&self) -> Vec<(String, $crate::metrics::Reduction)> {
                self.0.reductions()
            }
            fn load_state(&self, state: &[(String, tch::Tensor)]) -> $crate::Result<()> {
                self.0.load_state(state)
            }
            fn fresh(&self) -> Box<dyn $crate::metrics::Metric> {
                Box::new($ty(self.0.fresh()))
            }
            fn handle(&self) -> Box<dyn $crate::metrics::Metric> {
                Box::new(self.clone())
            }
        }
    };
    ($ty:ident, update) => {
        metric_type!($ty);
        impl $ty {
            /// Adds a batch of predictions and targets ([`Update::update`](crate::metrics::Update::update)).
            pub fn update(&self, preds: &tch::Tensor, target: &tch::Tensor) -> $crate::Result<()> {
                self.0.update(preds, target)
            }
            /// Adds a batch and returns the value on it alone ([`Update::forward`](crate::metrics::Update::forward)).
            pub fn forward(&self, preds: &tch::Tensor, target: &tch::Tensor) -> $crate::Result<tch::Tensor> {
                self.0.forward(preds, target)
            }
        }
        impl $crate::metrics::Update for $ty {
            fn update(&self, preds: &tch::Tensor, target: &tch::Tensor) -> $crate::Result<()> {
                self.0.update(preds, target)
            }
            fn forward(&self, preds: &tch::Tensor, target: &tch::Tensor) -> $crate::Result<tch::Tensor> {
                self.0.forward(preds, target)
            }
            fn boxed(&self) -> Box<dyn $crate::metrics::Update> {
                Box::new(self.clone())
            }
            fn boxed_fresh(&self) -> Box<dyn $crate::metrics::Update> {
                Box::new($ty(self.0.fresh()))
            }
        }
    };
}
pub(crate) use metric_type;
