//! SGD, Adam, AdamW and RMSprop, as `torch.optim` computes them: SGD, Adam and AdamW in
//! libtorch's fused kernels (what `fused=True` calls), one call per parameter group, and RMSprop
//! (and any group the kernels cannot take) tensor by tensor, as torch.optim's single-tensor path.

use std::collections::BTreeMap;

use tch::{Tensor, nn};

use super::{GroupOptions, Groups, Optimizer, OptimizerConfig, OptimizerState, ParamGroup, state_tensor};
use crate::error::Result;

/// Parameters, their per-parameter state tensors and the step count: what every algorithm has.
struct Core {
    groups: Vec<ParamGroup>,
    /// State tensors by `kind/parameter` name.
    state: BTreeMap<String, Tensor>,
    /// Work buffers by `i/parameter` name, reused every step so that a step allocates nothing
    /// (not part of the saved state).
    scratch: BTreeMap<String, Tensor>,
    step: i64,
}

/// A 0-d tensor holding `a`, of `like`'s kind and device.
fn scalar(a: f64, like: &Tensor) -> Tensor {
    let a = if like.kind() == tch::Kind::Float { Tensor::from(a as f32) } else { Tensor::from(a).to_kind(like.kind()) };
    if like.device() == tch::Device::Cpu { a } else { a.to_device(like.device()) }
}

/// `x += a * y` in place, without a temporary as large as `y` (`a` goes in as a 0-d tensor).
fn axpy(x: &mut Tensor, a: f64, y: &Tensor) {
    if a == 1.0 {
        let _ = x.g_add_(y);
    } else {
        let _ = x.addcmul_(y, &scalar(a, y));
    }
}

impl Core {
    fn new(groups: Vec<ParamGroup>) -> Self {
        Core { groups, state: BTreeMap::new(), scratch: BTreeMap::new(), step: 0 }
    }

    /// Every parameter that has a gradient, with its name, gradient and group options
    /// (learning rate, weight decay), in group order; the groups `done` marks are left out.
    fn params_with_grads(&self, done: &[bool]) -> Vec<(String, Tensor, Tensor, f64, f64)> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.get(*i).copied().unwrap_or(false))
            .flat_map(|(_, g)| {
                g.params.iter().map(move |(n, p)| (n.clone(), p.shallow_clone(), p.grad(), g.lr, g.weight_decay))
            })
            .filter(|(_, _, grad, _, _)| grad.defined())
            .collect()
    }

    /// Steps each group in one fused call: `fused(core, group)` with the group's parameters that
    /// have gradients (the same dtype and device, dense), or `false` where it cannot. Returns
    /// which groups were stepped; the caller steps the others tensor by tensor.
    fn fused_groups(&mut self, mut fused: impl FnMut(&mut Core, &FusedGroup) -> bool) -> Vec<bool> {
        (0..self.groups.len())
            .map(|i| {
                let g = &self.groups[i];
                let (mut params, mut grads, mut names) = (Vec::new(), Vec::new(), Vec::new());
                for (name, p) in &g.params {
                    let grad = p.grad();
                    if grad.defined() {
                        params.push(p.shallow_clone());
                        grads.push(grad);
                        names.push(name.clone());
                    }
                }
                let Some(first) = params.first() else { return true };
                let (kind, device) = (first.kind(), first.device());
                let uniform =
                    params.iter().chain(&grads).all(|t| t.kind() == kind && t.device() == device && !t.is_sparse());
                let group = FusedGroup { names, params, grads, lr: g.lr, weight_decay: g.weight_decay };
                uniform && matches!(kind, tch::Kind::Float | tch::Kind::Double) && fused(self, &group)
            })
            .collect()
    }

    /// The state tensors `kind` of a group's parameters, created as zeros where missing.
    fn slots(&mut self, kind: &str, group: &FusedGroup) -> Vec<Tensor> {
        group.names.iter().zip(&group.params).map(|(n, p)| self.slot(kind, n, p)).collect()
    }

    /// Drops the gradients (`set_to_none=True`, PyTorch's default); without lit's libtorch shim
    /// they are zeroed instead.
    fn zero_grad(&mut self) {
        for (_, p) in self.groups.iter_mut().flat_map(|g| g.params.iter_mut()) {
            #[cfg(lit_shim)]
            if crate::shim::clear_grad(p).is_ok() {
                continue;
            }
            p.zero_grad();
        }
    }

    /// Work buffer `i` of parameter `name`, shaped like `p`.
    fn scratch(&mut self, i: usize, name: &str, p: &Tensor) -> Tensor {
        self.scratch.entry(format!("{i}/{name}")).or_insert_with(|| p.zeros_like()).shallow_clone()
    }

    /// The gradient with L2 weight decay added (`grad + weight_decay * param`, in a work buffer),
    /// or the gradient itself without weight decay.
    fn decayed_grad(&mut self, name: &str, p: &Tensor, grad: Tensor, weight_decay: f64) -> Tensor {
        if weight_decay == 0.0 {
            return grad;
        }
        let mut d = self.scratch(0, name, p);
        d.copy_(&grad);
        axpy(&mut d, weight_decay, p);
        d
    }

    /// The state tensor `kind` of parameter `name`, created as zeros like `p`.
    fn slot(&mut self, kind: &str, name: &str, p: &Tensor) -> Tensor {
        self.state.entry(format!("{kind}/{name}")).or_insert_with(|| p.zeros_like()).shallow_clone()
    }

    fn state_dict(&self, options: serde_json::Value) -> OptimizerState {
        let groups: Vec<serde_json::Value> = self
            .groups
            .iter()
            .map(|g| {
                let params: Vec<&str> = g.names().collect();
                serde_json::json!({"lr": g.lr, "initial_lr": g.initial_lr, "weight_decay": g.weight_decay, "params": params})
            })
            .collect();
        OptimizerState {
            tensors: self.state.iter().map(|(k, v)| (k.clone(), v.detach().copy())).collect(),
            meta: serde_json::json!({"step": self.step, "groups": groups, "options": options}),
        }
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let meta = &state.meta;
        let groups = meta.get("groups").and_then(|g| g.as_array()).cloned().unwrap_or_default();
        if groups.len() != self.groups.len() {
            return Err(crate::Error::msg(format!(
                "optimizer state has {} parameter groups, the optimizer {}",
                groups.len(),
                self.groups.len()
            )));
        }
        let mut loaded = BTreeMap::new();
        for key in state.tensors.keys() {
            let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            let param = self.groups.iter().flat_map(|g| &g.params).find(|(n, _)| n == name);
            let Some((_, p)) = param else {
                return Err(crate::Error::msg(format!(
                    "optimizer state `{key}` is for a parameter this optimizer does not have"
                )));
            };
            loaded.insert(key.clone(), state_tensor(state, key, p)?);
        }
        for (g, saved) in self.groups.iter_mut().zip(&groups) {
            let get = |k: &str, d: f64| saved.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
            g.lr = get("lr", g.lr);
            g.initial_lr = get("initial_lr", g.initial_lr);
            g.weight_decay = get("weight_decay", g.weight_decay);
        }
        self.step = meta.get("step").and_then(|s| s.as_i64()).unwrap_or(0);
        self.state = loaded;
        Ok(())
    }
}

/// A parameter group's parameters that have gradients, for one fused kernel call.
struct FusedGroup {
    names: Vec<String>,
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    lr: f64,
    weight_decay: f64,
}

/// What one algorithm adds to [`Core`]: its name, its options and how it updates the
/// parameters. [`RuleOptimizer`] is the optimizer for any rule.
trait UpdateRule: Clone + 'static {
    /// `torch.optim`'s class name.
    fn name(&self) -> &'static str;
    /// The config's parameter groups, learning rate and weight decay.
    fn groups(&self) -> (&Groups, f64, f64);
    /// The options stored with the optimizer's state.
    fn options(&self) -> serde_json::Value;
    /// Updates every parameter that has a gradient; autograd is off and `core.step` counts
    /// this step.
    fn update(&self, core: &mut Core);
}

/// The optimizer of an [`UpdateRule`].
struct RuleOptimizer<R> {
    rule: R,
    core: Core,
}

/// The optimizer over `vs`'s trainable variables that `rule` describes.
fn build<R: UpdateRule>(rule: &R, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
    let (groups, lr, weight_decay) = rule.groups();
    let core = Core::new(groups.build(vs, lr, weight_decay));
    Ok(Box::new(RuleOptimizer { rule: rule.clone(), core }))
}

impl<R: UpdateRule> Optimizer for RuleOptimizer<R> {
    fn name(&self) -> &'static str {
        self.rule.name()
    }
    fn step(&mut self) {
        let _guard = tch::no_grad_guard();
        self.core.step += 1;
        self.rule.update(&mut self.core);
    }
    fn zero_grad(&mut self) {
        self.core.zero_grad();
    }
    fn param_groups(&self) -> &[ParamGroup] {
        &self.core.groups
    }
    fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.core.groups
    }
    fn state_dict(&self) -> OptimizerState {
        let mut state = self.core.state_dict(self.rule.options());
        state.meta["name"] = self.rule.name().into();
        state
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        self.core.load_state_dict(state)
    }
    fn add_param_group(&mut self, params: Vec<(String, Tensor)>, options: GroupOptions) -> Result<()> {
        if let Some((name, _)) = params.iter().find(|(n, _)| self.core.groups.iter().any(|g| g.names().any(|m| m == n)))
        {
            return Err(crate::Error::msg(format!(
                "add_param_group: `{name}` is already in a parameter group of the optimizer"
            )));
        }
        let (_, lr, weight_decay) = self.rule.groups();
        let lr = options.lr.unwrap_or(lr);
        let weight_decay = options.weight_decay.unwrap_or(weight_decay);
        self.core.groups.push(ParamGroup { lr, initial_lr: lr, weight_decay, params });
        Ok(())
    }
}

/// Adds a group rule to a config: parameters whose names `filter` accepts get `options`.
macro_rules! group_method {
    () => {
        /// Parameters whose `VarStore` names `filter` accepts form a group with `options`
        /// (e.g. `|n| n.ends_with(".bias")` with `GroupOptions::new().weight_decay(0.0)`).
        pub fn group(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static, options: GroupOptions) -> Self {
            self.groups.add(filter, options);
            self
        }

        /// Optimizes only the parameters whose `VarStore` names `filter` accepts (e.g. the
        /// generator's, `|n| n.starts_with("generator.")`).
        pub fn params(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
            self.groups.only(filter);
            self
        }
    };
}

/// Stochastic gradient descent, as `torch.optim.SGD`.
#[derive(Clone)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    groups: Groups,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, groups: Groups::default() }
    }
    /// With momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// With dampening of the momentum.
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
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
    group_method!();
}

impl OptimizerConfig for Sgd {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        build(self, vs)
    }
}

impl UpdateRule for Sgd {
    fn name(&self) -> &'static str {
        "SGD"
    }

    fn groups(&self) -> (&Groups, f64, f64) {
        (&self.groups, self.lr, self.weight_decay)
    }

    fn options(&self) -> serde_json::Value {
        serde_json::json!({"momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov})
    }

    fn update(&self, core: &mut Core) {
        let Sgd { momentum, dampening, nesterov, .. } = *self;
        let done = core.fused_groups(|core, group| self.fused(core, group));
        // -lr as a 0-d tensor, made again only when the group's learning rate changes.
        let mut neg_lr: Option<(f64, Tensor)> = None;
        for (name, mut p, g, lr, wd) in core.params_with_grads(&done) {
            let mut d = core.decayed_grad(&name, &p, g, wd);
            if momentum != 0.0 {
                let key = format!("momentum_buffer/{name}");
                let buf = match core.state.get(&key) {
                    None => {
                        let b = d.detach().copy();
                        core.state.insert(key, b.shallow_clone());
                        b
                    }
                    Some(b) => {
                        let mut b = b.shallow_clone();
                        let _ = b.g_mul_scalar_(momentum);
                        axpy(&mut b, 1.0 - dampening, &d);
                        b
                    }
                };
                d = if nesterov {
                    let mut n = core.scratch(1, &name, &p);
                    n.copy_(&d);
                    axpy(&mut n, momentum, &buf);
                    n
                } else {
                    buf
                };
            }
            let neg = match &neg_lr {
                Some((l, t)) if *l == lr => t.shallow_clone(),
                _ => {
                    let t = scalar(-lr, &p);
                    neg_lr = Some((lr, t.shallow_clone()));
                    t
                }
            };
            let _ = p.addcmul_(&d, &neg);
        }
    }
}

impl Sgd {
    /// One group's step in libtorch's fused kernel (`torch.optim.SGD(fused=True)`): parameters
    /// with a momentum buffer in one call, those taking their first step (the kernel fills their
    /// buffers from the gradients) in another.
    #[cfg(lit_shim)]
    fn fused(&self, core: &mut Core, group: &FusedGroup) -> bool {
        use crate::shim::{SgdStep, fused_sgd};
        let h = SgdStep {
            lr: group.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
            weight_decay: group.weight_decay,
        };
        if self.momentum == 0.0 {
            return fused_sgd(&group.params, &group.grads, &[], &h, false).is_ok();
        }
        let key = |name: &str| format!("momentum_buffer/{name}");
        let first: Vec<bool> = group.names.iter().map(|n| !core.state.contains_key(&key(n))).collect();
        for first_step in [false, true] {
            let pick = |ts: &[Tensor]| -> Vec<Tensor> {
                ts.iter().zip(&first).filter(|(_, f)| **f == first_step).map(|(t, _)| t.shallow_clone()).collect()
            };
            let (params, grads) = (pick(&group.params), pick(&group.grads));
            if params.is_empty() {
                continue;
            }
            let names = group.names.iter().zip(&first).filter(|(_, f)| **f == first_step).map(|(n, _)| n);
            let buffers: Vec<Tensor> = if first_step {
                grads.iter().map(Tensor::empty_like).collect()
            } else {
                names.clone().map(|n| core.state[&key(n)].shallow_clone()).collect()
            };
            if fused_sgd(&params, &grads, &buffers, &h, first_step).is_err() {
                return false;
            }
            if first_step {
                for (n, b) in names.zip(buffers) {
                    core.state.insert(key(n), b);
                }
            }
        }
        true
    }

    #[cfg(not(lit_shim))]
    fn fused(&self, _core: &mut Core, _group: &FusedGroup) -> bool {
        false
    }
}

/// Adam, as `torch.optim.Adam`.
#[derive(Clone)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decoupled: bool,
    groups: Groups,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults for the rest.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled: false,
            groups: Groups::default(),
        }
    }
    /// With these betas.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    /// With this epsilon.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// With L2 weight decay (added to the gradient).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// The AMSGrad variant.
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }
    group_method!();
}

/// AdamW (decoupled weight decay), as `torch.optim.AdamW`.
#[derive(Clone)]
pub struct AdamW(Adam);

impl AdamW {
    /// AdamW with learning rate `lr` and PyTorch's defaults (weight decay 0.01).
    pub fn new(lr: f64) -> Self {
        AdamW(Adam { decoupled: true, weight_decay: 0.01, ..Adam::new(lr) })
    }
    /// With these betas.
    pub fn betas(self, beta1: f64, beta2: f64) -> Self {
        AdamW(self.0.betas(beta1, beta2))
    }
    /// With this epsilon.
    pub fn eps(self, eps: f64) -> Self {
        AdamW(self.0.eps(eps))
    }
    /// With this decoupled weight decay.
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        AdamW(self.0.weight_decay(weight_decay))
    }
    /// The AMSGrad variant.
    pub fn amsgrad(self, amsgrad: bool) -> Self {
        AdamW(self.0.amsgrad(amsgrad))
    }
    /// Parameters whose names `filter` accepts form a group with `options`.
    pub fn group(self, filter: impl Fn(&str) -> bool + Send + Sync + 'static, options: GroupOptions) -> Self {
        AdamW(self.0.group(filter, options))
    }
    /// Optimizes only the parameters whose names `filter` accepts.
    pub fn params(self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        AdamW(self.0.params(filter))
    }
}

impl OptimizerConfig for Adam {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        build(self, vs)
    }
}

impl OptimizerConfig for AdamW {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        build(&self.0, vs)
    }
}

impl UpdateRule for Adam {
    fn name(&self) -> &'static str {
        if self.decoupled { "AdamW" } else { "Adam" }
    }

    fn groups(&self) -> (&Groups, f64, f64) {
        (&self.groups, self.lr, self.weight_decay)
    }

    fn options(&self) -> serde_json::Value {
        serde_json::json!({"betas": [self.betas.0, self.betas.1], "eps": self.eps, "amsgrad": self.amsgrad, "decoupled": self.decoupled})
    }

    fn update(&self, core: &mut Core) {
        let Adam { betas: (beta1, beta2), eps, amsgrad, decoupled, .. } = *self;
        let done = core.fused_groups(|core, group| self.fused(core, group));
        let step = core.step as f64;
        let bias1 = 1.0 - beta1.powf(step);
        let bias2_sqrt = (1.0 - beta2.powf(step)).sqrt();
        for (name, mut p, g, lr, wd) in core.params_with_grads(&done) {
            let step_size = lr / bias1;
            if wd != 0.0 && decoupled {
                let _ = p.g_mul_scalar_(1.0 - lr * wd);
            }
            let g = if decoupled { g } else { core.decayed_grad(&name, &p, g, wd) };
            let mut m = core.slot("exp_avg", &name, &p);
            let mut v = core.slot("exp_avg_sq", &name, &p);
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            let _ = m.lerp_(&g, 1.0 - beta1);
            let squared = core.scratch(1, &name, &p);
            let _ = g.mul_out(&squared, &g);
            let _ = v.lerp_(&squared, 1.0 - beta2);
            // sqrt(v) / c + eps = (sqrt(v) + eps * c) / c with c = sqrt(bias_correction2), so
            // param -= step_size * m / denom is param += m / ((sqrt(v) + eps * c) / (-step_size * c)).
            let mut denom = core.scratch(2, &name, &p);
            let v = if amsgrad {
                let max_v = core.slot("max_exp_avg_sq", &name, &p);
                let _ = max_v.maximum_out(&max_v, &v);
                max_v
            } else {
                v
            };
            let _ = v.sqrt_out(&denom);
            let _ = denom.g_add_scalar_(eps * bias2_sqrt).g_div_scalar_(-step_size * bias2_sqrt);
            let _ = p.addcdiv_(&m, &denom);
        }
    }
}

impl Adam {
    /// One group's step in libtorch's fused kernel (`torch.optim.Adam(fused=True)`).
    #[cfg(lit_shim)]
    fn fused(&self, core: &mut Core, group: &FusedGroup) -> bool {
        let (m, v) = (core.slots("exp_avg", group), core.slots("exp_avg_sq", group));
        let max_v = if self.amsgrad { core.slots("max_exp_avg_sq", group) } else { Vec::new() };
        let step = Tensor::from(core.step as f32).to_device(group.params[0].device());
        let h = crate::shim::AdamStep {
            lr: group.lr,
            betas: self.betas,
            weight_decay: group.weight_decay,
            eps: self.eps,
            amsgrad: self.amsgrad,
            decoupled: self.decoupled,
        };
        crate::shim::fused_adam([&group.params, &group.grads, &m, &v, &max_v], &step, &h).is_ok()
    }

    #[cfg(not(lit_shim))]
    fn fused(&self, _core: &mut Core, _group: &FusedGroup) -> bool {
        false
    }
}

/// RMSprop, as `torch.optim.RMSprop`.
#[derive(Clone)]
pub struct RmsProp {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    groups: Groups,
}

impl RmsProp {
    /// RMSprop with learning rate `lr` and PyTorch's defaults for the rest.
    pub fn new(lr: f64) -> Self {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            groups: Groups::default(),
        }
    }
    /// With this smoothing constant.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// With this epsilon.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// With L2 weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// With momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Normalise by the estimated variance of the gradient.
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }
    group_method!();
}

impl OptimizerConfig for RmsProp {
    fn build(&self, vs: &nn::VarStore) -> Result<Box<dyn Optimizer>> {
        build(self, vs)
    }
}

impl UpdateRule for RmsProp {
    fn name(&self) -> &'static str {
        "RMSprop"
    }

    fn groups(&self) -> (&Groups, f64, f64) {
        (&self.groups, self.lr, self.weight_decay)
    }

    fn options(&self) -> serde_json::Value {
        serde_json::json!({"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum, "centered": self.centered})
    }

    fn update(&self, core: &mut Core) {
        let RmsProp { alpha, eps, momentum, centered, .. } = *self;
        for (name, mut p, g, lr, wd) in core.params_with_grads(&[]) {
            let g = core.decayed_grad(&name, &p, g, wd);
            let mut sq = core.slot("square_avg", &name, &p);
            let mut scaled = core.scratch(1, &name, &p);
            scaled.copy_(&g);
            let _ = scaled.g_mul_scalar_(1.0 - alpha);
            let _ = sq.g_mul_scalar_(alpha).addcmul_(&scaled, &g);
            let mut avg = core.scratch(2, &name, &p);
            if centered {
                let mut ga = core.slot("grad_avg", &name, &p);
                let _ = ga.lerp_(&g, 1.0 - alpha);
                avg.copy_(&sq);
                axpy(&mut avg, -1.0, &(&ga * &ga));
            } else {
                avg.copy_(&sq);
            }
            let _ = avg.sqrt_().g_add_scalar_(eps);
            if momentum > 0.0 {
                let mut buf = core.slot("momentum_buffer", &name, &p);
                let _ = buf.g_mul_scalar_(momentum).addcdiv_(&g, &avg);
                axpy(&mut p, -lr, &buf);
            } else {
                let _ = avg.g_div_scalar_(-lr);
                let _ = p.addcdiv_(&g, &avg);
            }
        }
    }
}
