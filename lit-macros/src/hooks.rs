//! The hook table: every hook of `lit::LightningModule` and `lit::Callback`, written once.
//!
//! Each entry gives the hook's name, its parameters (name and typed role, in the trait's order),
//! what it returns, the stage whose batch type a step hook defines, whether `lit::Hooks` records
//! its presence, and which of its parameters the `Callback` trait's hook of the same name leaves
//! out. The macro recognises, validates and generates hooks from this table alone; a test
//! (`tests` below) parses `lit/src` and fails when the traits or `lit::Hooks` drift from it.

use proc_macro2::TokenStream;
use quote::quote;

/// The stage whose batch type a step hook defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Train,
    Val,
    Test,
    Predict,
}

impl Stage {
    pub(crate) const ALL: [Stage; 4] = [Stage::Train, Stage::Val, Stage::Test, Stage::Predict];

    /// The associated type of `LightningModule` that holds this stage's batch.
    pub(crate) fn batch_type(self) -> &'static str {
        match self {
            Stage::Train => "TrainBatch",
            Stage::Val => "ValBatch",
            Stage::Test => "TestBatch",
            Stage::Predict => "PredictBatch",
        }
    }
}

/// The type of a hook parameter (or of what a hook returns), by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `&mut lit::Ctx`.
    Ctx,
    /// An index or count: `usize`.
    Usize,
    /// `lit::Stage`.
    RunStage,
    /// A stage's batch, by value.
    Batch(Stage),
    /// A stage's batch, by reference.
    BatchRef(Stage),
    /// The batch of the generic transfer hooks: `B`.
    Generic,
    /// `tch::Device`.
    Device,
    /// `&mut dyn lit::optim::Optimizer`.
    Optimizer,
    /// `&tch::Tensor`.
    Loss,
    /// `lit::StepOutput`.
    StepOutput,
    /// `Option<&lit::StepOutput>`.
    OutputRef,
    /// `Vec<lit::StepOutput>`.
    Outputs,
    /// `Vec<Vec<lit::StepOutput>>`: one list per loader.
    LoaderOutputs,
    /// `&Self::Prediction`.
    PredictionRef,
    /// `&mut serde_json::Map<String, Value>`.
    CheckpointMut,
    /// `&serde_json::Map<String, Value>`.
    Checkpoint,
    /// `BTreeMap<String, f64>`.
    Metrics,
    /// `Option<f64>`.
    ClipVal,
    /// `lit::GradientClipAlgorithm`.
    ClipAlgorithm,
    /// `Vec<Box<dyn lit::Callback>>`.
    Callbacks,
    /// `Vec<Self::TrainBatch>`.
    Chunks,
    /// `()`.
    Unit,
    /// `&lit::Error` (callbacks' `on_exception`).
    ErrorRef,
    /// `&lit::callbacks::Predicted<'_>` (callbacks' `on_prediction`).
    Predicted,
}

impl Ty {
    /// The type as code, with `lit` the path to the runtime crate.
    pub(crate) fn tokens(self, lit: &TokenStream) -> TokenStream {
        let json = quote!(#lit::__private::serde_json);
        let string = quote!(::std::string::String);
        match self {
            Ty::Ctx => quote!(&mut #lit::Ctx),
            Ty::Usize => quote!(usize),
            Ty::RunStage => quote!(#lit::Stage),
            Ty::Batch(stage) => {
                let name = quote::format_ident!("{}", stage.batch_type());
                quote!(Self::#name)
            }
            Ty::BatchRef(stage) => {
                let name = quote::format_ident!("{}", stage.batch_type());
                quote!(&Self::#name)
            }
            Ty::Generic => quote!(B),
            Ty::Device => quote!(#lit::__private::tch::Device),
            Ty::Optimizer => quote!(&mut dyn #lit::optim::Optimizer),
            Ty::Loss => quote!(&#lit::__private::tch::Tensor),
            Ty::StepOutput => quote!(#lit::StepOutput),
            Ty::OutputRef => quote!(::core::option::Option<&#lit::StepOutput>),
            Ty::Outputs => quote!(::std::vec::Vec<#lit::StepOutput>),
            Ty::LoaderOutputs => quote!(::std::vec::Vec<::std::vec::Vec<#lit::StepOutput>>),
            Ty::PredictionRef => quote!(&Self::Prediction),
            Ty::CheckpointMut => quote!(&mut #json::Map<#string, #json::Value>),
            Ty::Checkpoint => quote!(&#json::Map<#string, #json::Value>),
            Ty::Metrics => quote!(::std::collections::BTreeMap<#string, f64>),
            Ty::ClipVal => quote!(::core::option::Option<f64>),
            Ty::ClipAlgorithm => quote!(#lit::GradientClipAlgorithm),
            Ty::Callbacks => quote!(::std::vec::Vec<::std::boxed::Box<dyn #lit::Callback>>),
            Ty::Chunks => quote!(::std::vec::Vec<Self::TrainBatch>),
            Ty::Unit => quote!(()),
            Ty::ErrorRef => quote!(&#lit::Error),
            Ty::Predicted => quote!(&#lit::callbacks::Predicted<'_>),
        }
    }
}

/// A parameter of a hook in the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    /// The table's name for it; a user parameter with this name (leading `_` ignored) takes it.
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
}

/// What a hook returns, and how the user's return value is converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Ret {
    /// `training_step`: a loss, a `StepOutput`, `Option`/`Result` of those.
    TrainStep,
    /// `validation_step` / `test_step`: as training, or `()`.
    EvalStep,
    /// `predict_step`: any value, or `Result` of it; it becomes `Prediction`.
    Predict,
    /// `T` or `Result<T, E>` for this table type.
    Value(Ty),
    /// `configure_optimizers`: anything `Into<Optimizers>` (one optimizer config, `Optimizers`),
    /// or `Result` of it.
    Optimizers,
    /// Exactly this type, no `Result`.
    Exact(Ty),
    /// `train_dataloader`.
    TrainLoader,
    /// `val_dataloader` and the like, for this stage's batch type.
    EvalLoaders(Stage),
}

impl Ret {
    /// The return type of the hook's method in the `LightningModule` trait.
    pub(crate) fn table_type(self, lit: &TokenStream) -> TokenStream {
        let step_output = quote!(#lit::Result<::core::option::Option<#lit::StepOutput>>);
        match self {
            Ret::TrainStep | Ret::EvalStep => step_output,
            Ret::Predict => quote!(#lit::Result<Self::Prediction>),
            Ret::Value(ty) => {
                let ty = ty.tokens(lit);
                quote!(#lit::Result<#ty>)
            }
            Ret::Optimizers => quote!(#lit::Result<#lit::optim::Optimizers>),
            Ret::Exact(ty) => ty.tokens(lit),
            Ret::TrainLoader => quote!(
                #lit::Result<::core::option::Option<::std::boxed::Box<dyn #lit::data::Loader<Batch = Self::TrainBatch>>>>
            ),
            Ret::EvalLoaders(stage) => {
                let batch = Ty::Batch(stage).tokens(lit);
                quote!(#lit::Result<#lit::Loaders<#batch>>)
            }
        }
    }
}

/// Which hooks of the `Callback` trait a table hook has.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cb {
    /// Callbacks do not have it.
    No,
    /// Callbacks have it, without these of the module's parameters.
    #[cfg_attr(not(test), allow(dead_code))]
    Without(&'static [&'static str]),
}

/// Who implements a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `LightningModule` (and callbacks, as `Hook::callback` says).
    Module,
    /// `Callback` only (the sanity check, predictions written, exceptions).
    CallbackOnly,
}

/// One hook.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hook {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [Param],
    pub(crate) ret: Ret,
    /// A step hook: its first parameter is the batch, by value, and defines this stage's type.
    pub(crate) step: Option<Stage>,
    /// Generic over the batch type (`<B: Batch>`), as the transfer hooks are.
    pub(crate) generic: bool,
    /// Takes `&self`: the hook only reads the module.
    pub(crate) shared: bool,
    /// `lit::Hooks` has a flag saying whether the module implements it.
    pub(crate) flag: bool,
    #[cfg_attr(not(test), allow(dead_code))] // read by the test that compares the table with lit
    pub(crate) callback: Cb,
    pub(crate) owner: Owner,
}

const CX: Param = Param { name: "cx", ty: Ty::Ctx };
const BATCH_IDX: Param = Param { name: "batch_idx", ty: Ty::Usize };
const DL_IDX: Param = Param { name: "dataloader_idx", ty: Ty::Usize };
const OPT: Param = Param { name: "optimizer", ty: Ty::Optimizer };
const OPT_IDX: Param = Param { name: "optimizer_idx", ty: Ty::Usize };
const EPOCH: Param = Param { name: "epoch", ty: Ty::Usize };
const LOSS: Param = Param { name: "loss", ty: Ty::Loss };
const OUT_REF: Param = Param { name: "outputs", ty: Ty::OutputRef };
const STAGE: Param = Param { name: "stage", ty: Ty::RunStage };

const fn p(name: &'static str, ty: Ty) -> Param {
    Param { name, ty }
}

const fn batch(stage: Stage) -> Param {
    Param { name: "batch", ty: Ty::BatchRef(stage) }
}

/// A hook of the module only.
const fn hook(name: &'static str, params: &'static [Param], ret: Ret) -> Hook {
    Hook {
        name,
        params,
        ret,
        step: None,
        generic: false,
        shared: false,
        flag: false,
        callback: Cb::No,
        owner: Owner::Module,
    }
}

/// A hook of the module and of callbacks (with the same parameters unless `.without(…)`).
const fn both(name: &'static str, params: &'static [Param]) -> Hook {
    Hook { callback: Cb::Without(&[]), ..hook(name, params, UNIT) }
}

impl Hook {
    const fn without(self, dropped: &'static [&'static str]) -> Hook {
        Hook { callback: Cb::Without(dropped), ..self }
    }

    const fn flagged(self) -> Hook {
        Hook { flag: true, ..self }
    }

    const fn shared(self) -> Hook {
        Hook { shared: true, ..self }
    }

    /// Whether the module side of the table has it.
    pub(crate) fn on_module(&self) -> bool {
        self.owner == Owner::Module
    }

    /// The parameter names `Callback`'s hook of this name takes, if callbacks have it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn callback_params(&self) -> Option<Vec<&'static str>> {
        match self.callback {
            Cb::No => None,
            Cb::Without(dropped) => Some(self.params.iter().map(|p| p.name).filter(|n| !dropped.contains(n)).collect()),
        }
    }
}

const fn step(name: &'static str, params: &'static [Param], ret: Ret, stage: Stage) -> Hook {
    // Every module has a `training_step`; the other stages' steps are optional, and flagged.
    Hook { step: Some(stage), flag: !matches!(stage, Stage::Train), ..hook(name, params, ret) }
}

const fn generic(name: &'static str, params: &'static [Param]) -> Hook {
    Hook { generic: true, ..hook(name, params, Ret::Value(Ty::Generic)) }
}

const fn callback_only(name: &'static str, params: &'static [Param], ret: Ret) -> Hook {
    Hook { owner: Owner::CallbackOnly, callback: Cb::Without(&[]), ..hook(name, params, ret) }
}

const UNIT: Ret = Ret::Value(Ty::Unit);
const STEP_OUTPUT: Ret = Ret::Value(Ty::StepOutput);
const BATCH: &[&str] = &["batch"];

/// Every hook, in the order of the `LightningModule` trait (then the callback-only ones).
pub(crate) const HOOKS: &[Hook] = &[
    // set-up and tear-down
    hook("prepare_data", &[CX], UNIT),
    both("setup", &[STAGE, CX]),
    both("teardown", &[STAGE, CX]),
    hook("configure_callbacks", &[], Ret::Exact(Ty::Callbacks)),
    hook("configure_optimizers", &[CX], Ret::Optimizers).flagged(),
    hook("on_save_checkpoint", &[p("checkpoint", Ty::CheckpointMut), CX], UNIT),
    hook("on_load_checkpoint", &[p("checkpoint", Ty::Checkpoint), CX], UNIT),
    hook("get_progress_bar_dict", &[p("metrics", Ty::Metrics)], Ret::Exact(Ty::Metrics)).shared(),
    hook("on_post_move_to_device", &[CX], UNIT),
    // data
    hook("train_dataloader", &[CX], Ret::TrainLoader),
    hook("val_dataloader", &[CX], Ret::EvalLoaders(Stage::Val)),
    hook("test_dataloader", &[CX], Ret::EvalLoaders(Stage::Test)),
    hook("predict_dataloader", &[CX], Ret::EvalLoaders(Stage::Predict)),
    generic("on_before_batch_transfer", &[p("batch", Ty::Generic), DL_IDX, CX]),
    generic("transfer_batch_to_device", &[p("batch", Ty::Generic), p("device", Ty::Device), DL_IDX, CX]),
    generic("on_after_batch_transfer", &[p("batch", Ty::Generic), DL_IDX, CX]),
    // steps
    step("training_step", &[p("batch", Ty::Batch(Stage::Train)), BATCH_IDX, CX], Ret::TrainStep, Stage::Train),
    hook(
        "tbptt_split_batch",
        &[p("batch", Ty::Batch(Stage::Train)), p("split_size", Ty::Usize), CX],
        Ret::Value(Ty::Chunks),
    ),
    hook("training_step_end", &[p("output", Ty::StepOutput), CX], STEP_OUTPUT),
    hook("training_epoch_end", &[p("outputs", Ty::Outputs), CX], UNIT).flagged(),
    step("validation_step", &[p("batch", Ty::Batch(Stage::Val)), BATCH_IDX, DL_IDX, CX], Ret::EvalStep, Stage::Val),
    hook("validation_step_end", &[p("output", Ty::StepOutput), CX], STEP_OUTPUT),
    hook("validation_epoch_end", &[p("outputs", Ty::LoaderOutputs), CX], UNIT).flagged(),
    step("test_step", &[p("batch", Ty::Batch(Stage::Test)), BATCH_IDX, DL_IDX, CX], Ret::EvalStep, Stage::Test),
    hook("test_step_end", &[p("output", Ty::StepOutput), CX], STEP_OUTPUT),
    hook("test_epoch_end", &[p("outputs", Ty::LoaderOutputs), CX], UNIT).flagged(),
    step("predict_step", &[p("batch", Ty::Batch(Stage::Predict)), BATCH_IDX, DL_IDX, CX], Ret::Predict, Stage::Predict),
    // optimization
    both("on_before_zero_grad", &[OPT, CX]).without(&["optimizer"]),
    hook("optimizer_zero_grad", &[EPOCH, BATCH_IDX, OPT, OPT_IDX, CX], UNIT),
    both("on_before_backward", &[LOSS, CX]).without(&["loss"]),
    hook("backward", &[LOSS, OPT_IDX, CX], UNIT),
    both("on_after_backward", &[CX]),
    both("on_before_optimizer_step", &[OPT, OPT_IDX, CX]).without(&["optimizer"]),
    hook(
        "configure_gradient_clipping",
        &[OPT, OPT_IDX, p("gradient_clip_val", Ty::ClipVal), p("gradient_clip_algorithm", Ty::ClipAlgorithm), CX],
        UNIT,
    ),
    hook("optimizer_step", &[EPOCH, BATCH_IDX, OPT, OPT_IDX, CX], UNIT),
    // run hooks
    both("on_fit_start", &[CX]),
    both("on_fit_end", &[CX]),
    both("on_pretrain_routine_start", &[CX]),
    both("on_pretrain_routine_end", &[CX]),
    both("on_train_start", &[CX]),
    both("on_train_end", &[CX]),
    both("on_validation_start", &[CX]),
    both("on_validation_end", &[CX]),
    both("on_test_start", &[CX]),
    both("on_test_end", &[CX]),
    both("on_predict_start", &[CX]),
    both("on_predict_end", &[CX]),
    // epoch hooks
    both("on_epoch_start", &[CX]),
    both("on_epoch_end", &[CX]),
    both("on_train_epoch_start", &[CX]),
    both("on_train_epoch_end", &[CX]),
    both("on_validation_epoch_start", &[CX]),
    both("on_validation_epoch_end", &[CX]),
    both("on_test_epoch_start", &[CX]),
    both("on_test_epoch_end", &[CX]),
    both("on_predict_epoch_start", &[CX]),
    both("on_predict_epoch_end", &[CX]),
    // batch hooks
    both("on_train_batch_start", &[batch(Stage::Train), BATCH_IDX, CX]).without(BATCH),
    both("on_train_batch_end", &[OUT_REF, batch(Stage::Train), BATCH_IDX, CX]).without(BATCH),
    both("on_validation_batch_start", &[batch(Stage::Val), BATCH_IDX, DL_IDX, CX]).without(BATCH),
    both("on_validation_batch_end", &[OUT_REF, batch(Stage::Val), BATCH_IDX, DL_IDX, CX]).without(BATCH),
    both("on_test_batch_start", &[batch(Stage::Test), BATCH_IDX, DL_IDX, CX]).without(BATCH),
    both("on_test_batch_end", &[OUT_REF, batch(Stage::Test), BATCH_IDX, DL_IDX, CX]).without(BATCH),
    both("on_predict_batch_start", &[batch(Stage::Predict), BATCH_IDX, DL_IDX, CX]).without(BATCH),
    both("on_predict_batch_end", &[p("outputs", Ty::PredictionRef), batch(Stage::Predict), BATCH_IDX, DL_IDX, CX])
        .without(&["outputs", "batch"]),
    // modes
    hook("on_validation_model_eval", &[CX], UNIT),
    hook("on_validation_model_train", &[CX], UNIT),
    hook("on_test_model_eval", &[CX], UNIT),
    hook("on_test_model_train", &[CX], UNIT),
    hook("on_predict_model_eval", &[CX], UNIT),
    // callbacks only
    callback_only("on_sanity_check_start", &[CX], UNIT),
    callback_only("on_sanity_check_end", &[CX], UNIT),
    callback_only("on_prediction", &[p("prediction", Ty::Predicted), CX], UNIT),
    callback_only("on_exception", &[p("error", Ty::ErrorRef), CX], Ret::Exact(Ty::Unit)),
];

/// Names a Lightning user may write that lit does not have as module hooks, and what to use.
pub(crate) const INSTEAD: &[(&str, &str)] = &[
    ("on_predict_model_train", "prediction does not return to training: there is no `on_predict_model_train`"),
    ("on_validation_model_zero_grad", "lit has no `on_validation_model_zero_grad`; use `on_validation_model_train`"),
    (
        "lr_scheduler_step",
        "lit steps schedulers itself; configure them in `configure_optimizers` (`.scheduler(…)`, `SchedulerConfig`)",
    ),
    ("configure_sharded_model", "lit has no `configure_sharded_model`; build layers in `new` or in `setup`"),
    ("configure_model", "lit has no `configure_model`; build layers in `new` or in `setup`"),
    ("on_hpc_save", "lit has no `on_hpc_save`; use `on_save_checkpoint`"),
    ("on_hpc_load", "lit has no `on_hpc_load`; use `on_load_checkpoint`"),
    ("on_train_dataloader", "lit has no `on_train_dataloader`; use `train_dataloader`"),
    ("on_val_dataloader", "lit has no `on_val_dataloader`; use `val_dataloader`"),
    ("on_test_dataloader", "lit has no `on_test_dataloader`; use `test_dataloader`"),
    ("on_predict_dataloader", "lit has no `on_predict_dataloader`; use `predict_dataloader`"),
];

/// The module hook called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Hook> {
    HOOKS.iter().find(|h| h.name == name && h.on_module())
}

/// What to use instead of `name`, a Lightning name lit does not have as a module hook.
pub(crate) fn instead(name: &str) -> Option<String> {
    if HOOKS.iter().any(|h| h.name == name && h.owner == Owner::CallbackOnly) {
        return Some(format!("`{name}` is a callback hook: implement it on a `lit::Callback`"));
    }
    INSTEAD.iter().find(|(n, _)| *n == name).map(|(_, m)| m.to_string())
}

/// The module hook name closest to `name`, if it is close enough to be a likely typo.
///
/// Close enough: at most two edits for names of up to 12 characters, three for longer ones;
/// and never for names shorter than 5 characters (`step`, `log` are everyday helper names).
pub(crate) fn did_you_mean(name: &str) -> Option<&'static str> {
    if name.len() < 5 {
        return None;
    }
    HOOKS
        .iter()
        .filter(|h| h.on_module())
        .map(|h| (strsim::levenshtein(name, h.name), h.name))
        .filter(|&(d, hook)| d > 0 && d <= if hook.len() <= 12 { 2 } else { 3 })
        .min()
        .map(|(_, h)| h)
}

#[cfg(test)]
mod tests;
