//! The module's variables as callbacks see them (Lightning hands `pl_module` to every callback
//! hook): parameters by `VarStore` name, freezing by module path, and the batch-norm layers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tch::{Tensor, nn};

use crate::error::{Error, Result};
use crate::optim::{GroupOptions, Optimizer};

/// A live view of a module's `VarStore`, for callbacks that act on the module's parameters
/// (Lightning's `pl_module` in `BaseFinetuning` and `StochasticWeightAveraging`).
///
/// Modules are named by `VarStore` path: `"backbone"` is every variable named `backbone.…`,
/// `"backbone.0"` one layer of it, `""` the whole module. A layer is the variables that share
/// a path up to their last `.`; a batch-norm layer is one with `running_mean` and
/// `running_var`.
#[derive(Clone, Default)]
pub struct ModuleParams {
    vars: Option<Arc<Mutex<nn::Variables>>>,
}

impl std::fmt::Debug for ModuleParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.named_parameters().iter().map(|(n, _)| n)).finish()
    }
}

/// Whether the variable `name` lies under the module path `module`.
fn under(name: &str, module: &str) -> bool {
    module.is_empty() || name == module || name.strip_prefix(module).is_some_and(|rest| rest.starts_with('.'))
}

/// The layer a variable belongs to: its name up to the last `.`.
fn layer_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(layer, _)| layer)
}

impl ModuleParams {
    /// The variables of `vs` (a view: later changes to `vs` are seen).
    pub fn new(vs: &nn::VarStore) -> Self {
        ModuleParams { vars: Some(vs.variables_.clone()) }
    }

    /// Every variable (parameters and buffers such as batch-norm statistics) by name.
    fn variables(&self) -> HashMap<String, Tensor> {
        let Some(vars) = &self.vars else { return HashMap::new() };
        let vars = vars.lock().unwrap_or_else(|e| e.into_inner());
        vars.named_variables.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }

    /// The parameters (the variables the module created trainable, frozen or not) by name, in
    /// the order the module created them (PyTorch's `named_parameters()` order for a module
    /// that registers its layers in the same order).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let Some(vars) = &self.vars else { return Vec::new() };
        let vars = vars.lock().unwrap_or_else(|e| e.into_inner());
        let by_ptr: HashMap<usize, &String> =
            vars.named_variables.iter().map(|(n, t)| (t.data_ptr() as usize, n)).collect();
        let mut seen = BTreeSet::new();
        let mut params: Vec<(String, Tensor)> = vars
            .trainable_variables
            .iter()
            .filter_map(|v| {
                by_ptr.get(&(v.tensor.data_ptr() as usize)).map(|n| ((*n).clone(), v.tensor.shallow_clone()))
            })
            .filter(|(n, _)| seen.insert(n.clone()))
            .collect();
        if params.len() != vars.trainable_variables.len() {
            // Tensors without storage of their own (empty, or sharing it) cannot be told apart
            // by address: every variable but batch-norm statistics, by name.
            params = vars
                .named_variables
                .iter()
                .filter(|(n, _)| !n.ends_with(".running_mean") && !n.ends_with(".running_var"))
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect();
            params.sort_by(|a, b| a.0.cmp(&b.0));
        }
        params
    }

    /// The parameter `name`, if the module has it.
    pub fn parameter(&self, name: &str) -> Option<Tensor> {
        self.named_parameters().into_iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Whether any variable lies under the module path `module`.
    pub fn contains_module(&self, module: &str) -> bool {
        self.variables().keys().any(|n| under(n, module))
    }

    /// The batch-norm layers under `module`: their paths.
    pub fn batch_norm_layers(&self, module: &str) -> Vec<String> {
        let vars = self.variables();
        let mut layers: Vec<String> = vars
            .keys()
            .filter_map(|n| n.strip_suffix(".running_mean"))
            .filter(|l| vars.contains_key(&format!("{l}.running_var")) && under(l, module))
            .map(str::to_string)
            .collect();
        layers.sort();
        layers
    }

    /// The running mean and variance of the batch-norm layer `layer`.
    pub(crate) fn batch_norm_stats(&self, layer: &str) -> Option<(Tensor, Tensor)> {
        let vars = self.variables();
        Some((
            vars.get(&format!("{layer}.running_mean"))?.shallow_clone(),
            vars.get(&format!("{layer}.running_var"))?.shallow_clone(),
        ))
    }

    /// An error naming `module` when no variable lies under it.
    fn check_modules(&self, modules: &[&str]) -> Result<()> {
        let vars = self.variables();
        for module in modules {
            if !vars.keys().any(|n| under(n, module)) {
                let top: BTreeSet<&str> = vars.keys().map(|n| n.split('.').next().unwrap_or(n)).collect();
                return Err(Error::msg(format!(
                    "the module has no variable under `{module}`; its top-level modules are: {}",
                    top.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The parameters under `modules`, each with whether its layer is a batch norm.
    fn selected(&self, modules: &[&str]) -> Result<Vec<(String, Tensor, bool)>> {
        self.check_modules(modules)?;
        let batch_norms: BTreeSet<String> = self.batch_norm_layers("").into_iter().collect();
        Ok(self
            .named_parameters()
            .into_iter()
            .filter(|(n, _)| modules.iter().any(|m| under(n, m)))
            .map(|(n, t)| {
                let bn = batch_norms.contains(layer_of(&n));
                (n, t, bn)
            })
            .collect())
    }

    /// Freezes the parameters under `modules` (`requires_grad` off), as Lightning's
    /// `BaseFinetuning.freeze`; with `train_bn`, batch-norm layers are made trainable instead.
    /// A frozen batch norm still updates its running statistics in training mode (tch's
    /// `BatchNorm` has no `track_running_stats` switch).
    pub fn freeze(&self, modules: &[&str], train_bn: bool) -> Result<()> {
        for (_, t, bn) in self.selected(modules)? {
            let _ = t.set_requires_grad(bn && train_bn);
        }
        Ok(())
    }

    /// Makes every parameter under `modules` trainable (`requires_grad` on), as Lightning's
    /// `BaseFinetuning.make_trainable`.
    pub fn make_trainable(&self, modules: &[&str]) -> Result<()> {
        for (_, t, _) in self.selected(modules)? {
            let _ = t.set_requires_grad(true);
        }
        Ok(())
    }

    /// The parameters under `modules` whose `requires_grad` is `requires_grad`, leaving out
    /// batch-norm layers unless `train_bn`, as Lightning's `BaseFinetuning.filter_params`.
    pub fn filter_params(
        &self,
        modules: &[&str],
        train_bn: bool,
        requires_grad: bool,
    ) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .selected(modules)?
            .into_iter()
            .filter(|(_, t, bn)| (train_bn || !bn) && t.requires_grad() == requires_grad)
            .map(|(n, t, _)| (n, t))
            .collect())
    }

    /// Unfreezes `modules` and adds their parameters to `optimizer` as a new group, as
    /// Lightning's `BaseFinetuning.unfreeze_and_add_param_group`: with learning rate `lr`, or
    /// without one the first group's divided by `initial_denom_lr`; batch-norm layers join only
    /// with `train_bn`; parameters the optimizer already has are skipped with a warning.
    pub fn unfreeze_and_add_param_group(
        &self,
        modules: &[&str],
        optimizer: &mut dyn Optimizer,
        lr: Option<f64>,
        initial_denom_lr: f64,
        train_bn: bool,
    ) -> Result<()> {
        self.make_trainable(modules)?;
        let lr = match lr {
            Some(lr) => lr,
            None => {
                let first = optimizer.param_groups().first().map(|g| g.lr).ok_or_else(|| {
                    Error::msg(
                        "unfreeze_and_add_param_group: the optimizer has no parameter group to take the learning \
                         rate from; give `lr`",
                    )
                })?;
                first / initial_denom_lr
            }
        };
        let params = filter_on_optimizer(&*optimizer, self.filter_params(modules, train_bn, true)?);
        if !params.is_empty() {
            optimizer.add_param_group(params, GroupOptions::new().lr(lr))?;
        }
        Ok(())
    }
}

/// The parameters of `params` that `optimizer` does not have yet (by name), as Lightning's
/// `BaseFinetuning.filter_on_optimizer`; the others are left out with a warning.
pub fn filter_on_optimizer(optimizer: &dyn Optimizer, params: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let present: BTreeSet<&str> = optimizer.param_groups().iter().flat_map(|g| g.names()).collect();
    let (removed, kept): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, _)| present.contains(n.as_str()));
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|(n, _)| format!("`{n}`")).collect();
        crate::warning::warn(&format!(
            "The provided params to be frozen already exist within another group of this optimizer. Those \
             parameters will be skipped ({}). HINT: lit's optimizers take the parameters that require grad when \
             `configure_optimizers` builds them: freeze these before (in `freeze_before_training`)",
            names.join(", ")
        ));
    }
    kept
}
