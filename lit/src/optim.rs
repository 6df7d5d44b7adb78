//! Optimizers as `configure_optimizers` returns them.
//!
//! A config ([`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`]) describes an optimizer; the Trainer builds
//! it over the module's trainable variables once the module is on its device.

use tch::nn;

use crate::error::Result;

/// An optimizer the loops drive: the hooks `optimizer_zero_grad`, `optimizer_step` and
/// `configure_gradient_clipping` receive it.
pub trait Optimizer {
    /// Clears the gradients of the optimized variables.
    fn zero_grad(&mut self);
    /// Applies one update from the current gradients.
    fn step(&mut self);
    /// The learning rate (of the first parameter group).
    fn lr(&self) -> f64;
    /// Sets the learning rate of every parameter group.
    fn set_lr(&mut self, lr: f64);
    /// Scales gradients so that their global 2-norm is at most `max_norm`.
    fn clip_grad_norm(&mut self, max_norm: f64);
    /// Clamps every gradient element to `[-max, max]`.
    fn clip_grad_value(&mut self, max: f64);
}

/// Something that builds an [`Optimizer`] over a module's variables.
pub trait OptimizerConfig {
    /// The optimizer over the trainable variables of `vs`.
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>>;
}

/// What `configure_optimizers` returns: one or several optimizer configs.
#[derive(Default)]
pub struct Optimizers {
    configs: Vec<Box<dyn OptimizerConfig>>,
}

impl Optimizers {
    /// No optimizer: `fit` reports that `configure_optimizers` must return one.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds an optimizer.
    pub fn with(mut self, config: impl OptimizerConfig + 'static) -> Self {
        self.configs.push(Box::new(config));
        self
    }

    /// The number of optimizers.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether there is no optimizer.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    pub(crate) fn build(&self, vs: &nn::VarStore) -> Result<Vec<Box<dyn Optimizer>>> {
        self.configs.iter().map(|c| c.build(vs)).collect()
    }
}

/// libtorch's own optimizer behind the [`Optimizer`] trait.
struct Torch {
    inner: nn::Optimizer,
    lr: f64,
}

impl Optimizer for Torch {
    fn zero_grad(&mut self) {
        self.inner.zero_grad();
    }
    fn step(&mut self) {
        self.inner.step();
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        self.inner.set_lr(lr);
    }
    fn clip_grad_norm(&mut self, max_norm: f64) {
        self.inner.clip_grad_norm(max_norm);
    }
    fn clip_grad_value(&mut self, max: f64) {
        self.inner.clip_grad_value(max);
    }
}

fn torch(config: impl nn::OptimizerConfig, vs: &nn::VarStore, lr: f64) -> Result<Box<dyn Optimizer>> {
    Ok(Box::new(Torch { inner: config.build(vs, lr)?, lr }))
}

macro_rules! optimizer_config {
    ($name:ident) => {
        impl From<$name> for Optimizers {
            fn from(config: $name) -> Self {
                Optimizers::none().with(config)
            }
        }
    };
}

/// Stochastic gradient descent, as `torch.optim.SGD`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: none).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
    /// With momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// With Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    /// With L2 weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl OptimizerConfig for Sgd {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        torch(nn::sgd(self.momentum, self.dampening, self.weight_decay, self.nesterov), vs, self.lr)
    }
}
optimizer_config!(Sgd);

/// Adam, as `torch.optim.Adam`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// Coefficients of the running averages of the gradient and its square.
    pub betas: (f64, f64),
    /// Added to the denominator for stability.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// The AMSGrad variant.
    pub amsgrad: bool,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults for the rest.
    pub fn new(lr: f64) -> Self {
        Adam { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
    /// With these betas.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    /// With L2 weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl OptimizerConfig for Adam {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        let c = nn::adam(self.betas.0, self.betas.1, self.weight_decay).eps(self.eps).amsgrad(self.amsgrad);
        torch(c, vs, self.lr)
    }
}
optimizer_config!(Adam);

/// AdamW (decoupled weight decay), as `torch.optim.AdamW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// Coefficients of the running averages of the gradient and its square.
    pub betas: (f64, f64),
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// AdamW with learning rate `lr` and PyTorch's defaults (weight decay 0.01).
    pub fn new(lr: f64) -> Self {
        AdamW { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.01 }
    }
    /// With this weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl OptimizerConfig for AdamW {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        torch(nn::adamw(self.betas.0, self.betas.1, self.weight_decay).eps(self.eps), vs, self.lr)
    }
}
optimizer_config!(AdamW);

/// RMSprop, as `torch.optim.RMSprop`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsProp {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant.
    pub alpha: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Normalise by the estimated variance of the gradient.
    pub centered: bool,
}

impl RmsProp {
    /// RMSprop with learning rate `lr` and PyTorch's defaults for the rest.
    pub fn new(lr: f64) -> Self {
        RmsProp { lr, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl OptimizerConfig for RmsProp {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        torch(nn::rms_prop(self.alpha, self.eps, self.weight_decay, self.momentum, self.centered), vs, self.lr)
    }
}
optimizer_config!(RmsProp);
