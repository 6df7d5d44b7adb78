//! Finetuning callbacks, as Lightning's `callbacks/finetuning.py`: [`BaseFinetuning`] (freeze
//! before training, unfreeze on a schedule) and [`BackboneFinetuning`].

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ModuleParams;
use crate::callback::Callback;
use crate::ctx::{Ctx, Stage, State};
use crate::error::{Error, Result};
use crate::optim::{GroupOptions, Optimizer};

/// A finetuning schedule, as a subclass of Lightning's `BaseFinetuning`: what to freeze before
/// `configure_optimizers`, and what to unfreeze at each epoch's start. Run it with
/// [`Finetuning::new`]. The helpers Lightning's class has are [`ModuleParams`]'s methods
/// (`module.freeze(&["feature_extractor"], true)`,
/// `module.unfreeze_and_add_param_group(&["feature_extractor"], optimizer, None, 10.0, true)`).
///
/// lit's optimizers take the parameters that require grad when `configure_optimizers` builds
/// them, so what `freeze_before_training` freezes stays out of them until a finetuning function
/// adds it as a new parameter group.
pub trait BaseFinetuning: Any {
    /// Freezes what should not train at first (Lightning calls it from the callback's `setup`).
    fn freeze_before_training(&mut self, module: &ModuleParams) -> Result<()>;
    /// At each training epoch's start, for each optimizer: unfreeze and add parameter groups,
    /// change learning rates.
    fn finetune_function(&mut self, module: &ModuleParams, epoch: usize, optimizer: &mut dyn Optimizer) -> Result<()>;
    /// The schedule's own state for checkpoints (beside the parameter groups, which
    /// [`Finetuning`] saves).
    fn state_dict(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores what [`BaseFinetuning::state_dict`] saved.
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        let _ = state;
        Ok(())
    }
}

/// One parameter group as the finetuning callbacks record it (Lightning's
/// `_internal_optimizer_metadata` entries: the group's options and its parameters' names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The learning rate when recorded.
    pub lr: f64,
    /// The group's initial learning rate.
    pub initial_lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// The parameters, by `VarStore` name.
    pub params: Vec<String>,
}

/// What every finetuning callback keeps: each optimizer's parameter groups as they grew, to put
/// them back when a run resumes.
#[derive(Debug, Clone, Default)]
struct GroupHistory {
    groups: BTreeMap<usize, Vec<GroupRecord>>,
    restarting: bool,
}

impl GroupHistory {
    fn records(optimizer: &dyn Optimizer, from: usize) -> Vec<GroupRecord> {
        optimizer.param_groups()[from.min(optimizer.param_groups().len())..]
            .iter()
            .map(|g| GroupRecord {
                lr: g.lr,
                initial_lr: g.initial_lr,
                weight_decay: g.weight_decay,
                params: g.names().map(str::to_string).collect(),
            })
            .collect()
    }

    /// Lightning's `_store`: the groups the first time, then the groups added since.
    fn store(&mut self, index: usize, groups_before: usize, optimizer: &dyn Optimizer) {
        match self.groups.get_mut(&index) {
            None => {
                self.groups.insert(index, Self::records(optimizer, 0));
            }
            Some(recorded) if groups_before != optimizer.param_groups().len() => {
                recorded.extend(Self::records(optimizer, groups_before));
            }
            Some(_) => {}
        }
    }

    /// Lightning's `on_train_epoch_start`: the schedule's function for each optimizer.
    fn epoch_start(&mut self, schedule: &mut dyn BaseFinetuning, cx: &mut Ctx) -> Result<()> {
        let (module, epoch) = (cx.state.module.clone(), cx.state.current_epoch);
        for (index, optimizer) in cx.state.optimizers.iter_mut().enumerate() {
            let before = optimizer.param_groups().len();
            schedule.finetune_function(&module, epoch, &mut **optimizer)?;
            self.store(index, before, &**optimizer);
        }
        Ok(())
    }

    /// When resuming: the groups added after those `configure_optimizers` made are added again,
    /// their parameters trainable again, before the optimizers' state is loaded. (Lightning puts
    /// the groups back but leaves their parameters frozen, so they stop training:
    /// Lightning-AI/pytorch-lightning#21901.)
    fn restore(&mut self, state: &mut State) -> Result<()> {
        if !std::mem::take(&mut self.restarting) {
            return Ok(());
        }
        let params: BTreeMap<String, tch::Tensor> = state.module.named_parameters().into_iter().collect();
        for (index, recorded) in &self.groups {
            let Some(optimizer) = state.optimizers.get_mut(*index) else { continue };
            let present = optimizer.param_groups().len();
            for group in recorded.iter().skip(present) {
                let tensors = group
                    .params
                    .iter()
                    .map(|name| {
                        let t = params.get(name).ok_or_else(|| {
                            Error::msg(format!("finetuning: the checkpoint's parameter group holds `{name}`, which the module does not have"))
                        })?;
                        let _ = t.set_requires_grad(true);
                        Ok((name.clone(), t.shallow_clone()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let options = GroupOptions::new().lr(group.lr).weight_decay(group.weight_decay);
                optimizer.add_param_group(tensors, options)?;
            }
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        let groups: BTreeMap<String, &Vec<GroupRecord>> = self.groups.iter().map(|(k, v)| (k.to_string(), v)).collect();
        serde_json::json!({ "internal_optimizer_metadata": groups })
    }

    fn load(&mut self, state: &serde_json::Value) -> Result<()> {
        self.restarting = true;
        let groups: BTreeMap<String, Vec<GroupRecord>> = match state.get("internal_optimizer_metadata") {
            Some(g) => serde_json::from_value(g.clone())
                .map_err(|e| Error::msg(format!("finetuning: the saved parameter groups do not fit: {e}")))?,
            None => BTreeMap::new(),
        };
        self.groups = groups.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        Ok(())
    }
}

/// Runs a [`BaseFinetuning`] schedule, as a Lightning `BaseFinetuning` subclass runs: its
/// `freeze_before_training` in `setup`, its `finetune_function` at every training epoch's start
/// for every optimizer; the parameter groups it adds are saved in checkpoints and put back on
/// resume.
pub struct Finetuning {
    schedule: Box<dyn BaseFinetuning>,
    name: String,
    history: GroupHistory,
}

impl Finetuning {
    /// A callback running `schedule`.
    pub fn new<F: BaseFinetuning>(schedule: F) -> Self {
        Finetuning {
            name: std::any::type_name::<F>().to_string(),
            schedule: Box::new(schedule),
            history: GroupHistory::default(),
        }
    }

    /// The schedule, as the type it was given as.
    pub fn schedule<F: BaseFinetuning>(&self) -> Option<&F> {
        (&*self.schedule as &dyn Any).downcast_ref()
    }

    /// Each optimizer's parameter groups as recorded (Lightning's `_internal_optimizer_metadata`).
    pub fn internal_optimizer_metadata(&self) -> &BTreeMap<usize, Vec<GroupRecord>> {
        &self.history.groups
    }

    pub(crate) fn restore(&mut self, state: &mut State) -> Result<()> {
        self.history.restore(state)
    }
}

impl Callback for Finetuning {
    fn name(&self) -> &str {
        &self.name
    }
    fn setup(&mut self, _stage: Stage, cx: &mut Ctx) -> Result<()> {
        self.schedule.freeze_before_training(&cx.state.module)
    }
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        self.history.epoch_start(&mut *self.schedule, cx)
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        let mut state = self.history.state();
        if let Some(own) = self.schedule.state_dict() {
            state["schedule"] = own;
        }
        Some(state)
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.history.load(state)?;
        match state.get("schedule") {
            Some(own) => self.schedule.load_state_dict(own),
            None => Ok(()),
        }
    }
}

/// The backbone's learning-rate multiplier for an epoch: Lightning's `lambda_func`.
pub type LambdaFn = Arc<dyn Fn(usize) -> f64 + Send + Sync>;

/// Finetunes a backbone, as Lightning's `BackboneFinetuning(unfreeze_backbone_at_epoch=10,
/// lambda_func=multiplicative, backbone_initial_ratio_lr=0.1, backbone_initial_lr=None,
/// should_align=True, initial_denom_lr=10, train_bn=True, verbose=False, rounding=12)`.
///
/// The backbone is the module's variables under the `VarStore` path `backbone` (Lightning's
/// `pl_module.backbone`; another path with [`BackboneFinetuning::backbone`]). It is frozen
/// before `configure_optimizers` (batch norms stay trainable with `train_bn`); at
/// `unfreeze_backbone_at_epoch` its parameters join the first optimizer as a new group with
/// learning rate `backbone_initial_lr`, or the current one times `backbone_initial_ratio_lr`;
/// at each later epoch that rate is multiplied by `lambda_func(epoch + 1)` (default 2.0) and,
/// with `should_align`, held at the current learning rate once it would pass it.
pub struct BackboneFinetuning {
    unfreeze_backbone_at_epoch: usize,
    lambda_func: LambdaFn,
    backbone_initial_ratio_lr: f64,
    backbone_initial_lr: Option<f64>,
    should_align: bool,
    initial_denom_lr: f64,
    train_bn: bool,
    verbose: bool,
    rounding: i32,
    backbone: String,
    previous_backbone_lr: Option<f64>,
    history: GroupHistory,
}

impl Default for BackboneFinetuning {
    fn default() -> Self {
        BackboneFinetuning {
            unfreeze_backbone_at_epoch: 10,
            lambda_func: Arc::new(|_| 2.0),
            backbone_initial_ratio_lr: 0.1,
            backbone_initial_lr: None,
            should_align: true,
            initial_denom_lr: 10.0,
            train_bn: true,
            verbose: false,
            rounding: 12,
            backbone: "backbone".into(),
            previous_backbone_lr: None,
            history: GroupHistory::default(),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty => $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $t) -> Self {
            self.$name = $conv(value);
            self
        }
    )*};
}

impl BackboneFinetuning {
    /// Lightning's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// The epoch at which the backbone joins the optimizer (default 10).
        unfreeze_backbone_at_epoch: usize => std::convert::identity;
        /// The backbone's initial learning rate, as a ratio of the current one (default 0.1).
        backbone_initial_ratio_lr: f64 => std::convert::identity;
        /// The backbone's initial learning rate (default: the ratio's).
        backbone_initial_lr: f64 => Some;
        /// Hold the backbone's learning rate at the current one once it would pass it (default
        /// true).
        should_align: bool => std::convert::identity;
        /// Divides the current learning rate for the backbone's group when no learning rate is
        /// given to `unfreeze_and_add_param_group` (default 10).
        initial_denom_lr: f64 => std::convert::identity;
        /// Train the backbone's batch norms throughout (default true).
        train_bn: bool => std::convert::identity;
        /// Log the learning rates at each epoch's start (default false).
        verbose: bool => std::convert::identity;
        /// Decimal places of the logged learning rates (default 12).
        rounding: i32 => std::convert::identity;
        /// The backbone's `VarStore` path (default `"backbone"`).
        backbone: impl Into<String> => Into::into;
    }

    /// The backbone's learning-rate multiplier for an epoch (default `|_| 2.0`).
    pub fn lambda_func(mut self, f: impl Fn(usize) -> f64 + Send + Sync + 'static) -> Self {
        self.lambda_func = Arc::new(f);
        self
    }

    /// The backbone's learning rate set at the last epoch's start, once unfrozen.
    pub fn previous_backbone_lr(&self) -> Option<f64> {
        self.previous_backbone_lr
    }

    /// Each optimizer's parameter groups as recorded (Lightning's `_internal_optimizer_metadata`).
    pub fn internal_optimizer_metadata(&self) -> &BTreeMap<usize, Vec<GroupRecord>> {
        &self.history.groups
    }

    pub(crate) fn restore(&mut self, state: &mut State) -> Result<()> {
        self.history.restore(state)
    }

    fn round(&self, x: f64) -> f64 {
        let scale = 10f64.powi(self.rounding);
        (x * scale).round() / scale
    }
}

impl BaseFinetuning for BackboneFinetuning {
    fn freeze_before_training(&mut self, module: &ModuleParams) -> Result<()> {
        module.freeze(&[&self.backbone], self.train_bn)
    }

    fn finetune_function(&mut self, module: &ModuleParams, epoch: usize, optimizer: &mut dyn Optimizer) -> Result<()> {
        let current_lr = optimizer.param_groups().first().map_or(0.0, |g| g.lr);
        if epoch == self.unfreeze_backbone_at_epoch {
            let initial = self.backbone_initial_lr.unwrap_or(current_lr * self.backbone_initial_ratio_lr);
            self.previous_backbone_lr = Some(initial);
            module.unfreeze_and_add_param_group(
                &[&self.backbone],
                optimizer,
                Some(initial),
                self.initial_denom_lr,
                self.train_bn,
            )?;
            if self.verbose {
                tracing::info!(target: "lit", "Current lr: {}, Backbone lr: {}", self.round(current_lr), self.round(initial));
            }
        } else if epoch > self.unfreeze_backbone_at_epoch {
            let previous = self.previous_backbone_lr.unwrap_or(current_lr);
            let next = (self.lambda_func)(epoch + 1) * previous;
            let next = if self.should_align && next > current_lr { current_lr } else { next };
            if let Some(group) = optimizer.param_groups_mut().last_mut() {
                group.lr = next;
            }
            self.previous_backbone_lr = Some(next);
            if self.verbose {
                tracing::info!(target: "lit", "Current lr: {}, Backbone lr: {}", self.round(current_lr), self.round(next));
            }
        }
        Ok(())
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "previous_backbone_lr": self.previous_backbone_lr }))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.previous_backbone_lr = state.get("previous_backbone_lr").and_then(|v| v.as_f64());
        Ok(())
    }
}

impl Callback for BackboneFinetuning {
    /// Lightning's check that the module has a backbone.
    fn on_fit_start(&mut self, cx: &mut Ctx) -> Result<()> {
        if cx.state.module.contains_module(&self.backbone) {
            return Ok(());
        }
        Err(Error::hook(
            "BackboneFinetuning",
            format!(
                "the module has no variables under `{}`: BackboneFinetuning finetunes the variables named `{}.…` (give \
                 another path with `.backbone(…)`)",
                self.backbone, self.backbone
            ),
        ))
    }
    fn setup(&mut self, _stage: Stage, cx: &mut Ctx) -> Result<()> {
        let module = cx.state.module.clone();
        if !module.contains_module(&self.backbone) {
            return Ok(()); // `on_fit_start` said so; `validate` and `test` need no backbone frozen
        }
        self.freeze_before_training(&module)
    }
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        let mut history = std::mem::take(&mut self.history);
        let result = history.epoch_start(self, cx);
        self.history = history;
        result
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        let mut state = self.history.state();
        state["previous_backbone_lr"] = self.previous_backbone_lr.into();
        Some(state)
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.history.load(state)?;
        BaseFinetuning::load_state_dict(self, state)
    }
}
