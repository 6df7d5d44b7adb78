//! The hook table: every hook's parameters (in the table's order) and what it returns. This
//! mirrors `lit::LightningModule`; `LIT` in a type stands for the path to lit.

/// A parameter of a hook in the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    /// The table's name for it; a user parameter with this name (leading `_` ignored) takes it.
    pub(crate) name: &'static str,
    /// Its type in the table.
    pub(crate) ty: &'static str,
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
    /// `T` or `Result<T>` for this table type.
    Value(&'static str),
    /// Exactly this type.
    Exact(&'static str),
    /// `train_dataloader`.
    TrainLoader,
    /// `val_dataloader` and the like, for this batch type.
    EvalLoaders(&'static str),
}

/// The stage whose batch type a step hook defines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stage {
    Train,
    Val,
    Test,
    Predict,
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
}

const CX: Param = Param { name: "cx", ty: "&mut LIT::Ctx" };
const BATCH_IDX: Param = Param { name: "batch_idx", ty: "usize" };
const DL_IDX: Param = Param { name: "dataloader_idx", ty: "usize" };
const OPT: Param = Param { name: "optimizer", ty: "&mut dyn LIT::optim::Optimizer" };
const OPT_IDX: Param = Param { name: "optimizer_idx", ty: "usize" };
const EPOCH: Param = Param { name: "epoch", ty: "usize" };
const LOSS: Param = Param { name: "loss", ty: "&LIT::__private::tch::Tensor" };
const OUT_REF: Param = Param { name: "outputs", ty: "::core::option::Option<&LIT::StepOutput>" };

const fn p(name: &'static str, ty: &'static str) -> Param {
    Param { name, ty }
}

const fn hook(name: &'static str, params: &'static [Param], ret: Ret) -> Hook {
    Hook { name, params, ret, step: None, generic: false, shared: false }
}

const fn step(name: &'static str, params: &'static [Param], ret: Ret, stage: Stage) -> Hook {
    Hook { name, params, ret, step: Some(stage), generic: false, shared: false }
}

const fn generic(name: &'static str, params: &'static [Param]) -> Hook {
    Hook { name, params, ret: Ret::Value("B"), step: None, generic: true, shared: false }
}

const UNIT: Ret = Ret::Value("()");
const STEP_OUTPUT: Ret = Ret::Value("LIT::StepOutput");

/// Every hook of `lit::LightningModule`.
pub(crate) const HOOKS: &[Hook] = &[
    hook("prepare_data", &[CX], UNIT),
    hook("setup", &[p("stage", "LIT::Stage"), CX], UNIT),
    hook("teardown", &[p("stage", "LIT::Stage"), CX], UNIT),
    hook("configure_callbacks", &[], Ret::Exact("::std::vec::Vec<::std::boxed::Box<dyn LIT::Callback>>")),
    hook("configure_optimizers", &[CX], Ret::Value("LIT::optim::Optimizers")),
    hook("on_post_move_to_device", &[CX], UNIT),
    Hook {
        name: "get_progress_bar_dict",
        params: &[p("metrics", "::std::collections::BTreeMap<::std::string::String, f64>")],
        ret: Ret::Exact("::std::collections::BTreeMap<::std::string::String, f64>"),
        step: None,
        generic: false,
        shared: true,
    },
    hook(
        "on_save_checkpoint",
        &[
            p(
                "checkpoint",
                "&mut LIT::__private::serde_json::Map<::std::string::String, LIT::__private::serde_json::Value>",
            ),
            CX,
        ],
        UNIT,
    ),
    hook(
        "on_load_checkpoint",
        &[
            p(
                "checkpoint",
                "&LIT::__private::serde_json::Map<::std::string::String, LIT::__private::serde_json::Value>",
            ),
            CX,
        ],
        UNIT,
    ),
    hook("train_dataloader", &[CX], Ret::TrainLoader),
    hook("val_dataloader", &[CX], Ret::EvalLoaders("Self::ValBatch")),
    hook("test_dataloader", &[CX], Ret::EvalLoaders("Self::TestBatch")),
    hook("predict_dataloader", &[CX], Ret::EvalLoaders("Self::PredictBatch")),
    generic("on_before_batch_transfer", &[p("batch", "B"), DL_IDX, CX]),
    generic("transfer_batch_to_device", &[p("batch", "B"), p("device", "LIT::__private::tch::Device"), DL_IDX, CX]),
    generic("on_after_batch_transfer", &[p("batch", "B"), DL_IDX, CX]),
    step("training_step", &[p("batch", "Self::TrainBatch"), BATCH_IDX, CX], Ret::TrainStep, Stage::Train),
    hook("training_step_end", &[p("output", "LIT::StepOutput"), CX], STEP_OUTPUT),
    hook("training_epoch_end", &[p("outputs", "::std::vec::Vec<LIT::StepOutput>"), CX], UNIT),
    hook(
        "tbptt_split_batch",
        &[p("batch", "Self::TrainBatch"), p("split_size", "usize"), CX],
        Ret::Value("::std::vec::Vec<Self::TrainBatch>"),
    ),
    step("validation_step", &[p("batch", "Self::ValBatch"), BATCH_IDX, DL_IDX, CX], Ret::EvalStep, Stage::Val),
    hook("validation_step_end", &[p("output", "LIT::StepOutput"), CX], STEP_OUTPUT),
    hook("validation_epoch_end", &[p("outputs", "::std::vec::Vec<::std::vec::Vec<LIT::StepOutput>>"), CX], UNIT),
    step("test_step", &[p("batch", "Self::TestBatch"), BATCH_IDX, DL_IDX, CX], Ret::EvalStep, Stage::Test),
    hook("test_step_end", &[p("output", "LIT::StepOutput"), CX], STEP_OUTPUT),
    hook("test_epoch_end", &[p("outputs", "::std::vec::Vec<::std::vec::Vec<LIT::StepOutput>>"), CX], UNIT),
    step("predict_step", &[p("batch", "Self::PredictBatch"), BATCH_IDX, DL_IDX, CX], Ret::Predict, Stage::Predict),
    hook("on_before_zero_grad", &[OPT, CX], UNIT),
    hook("optimizer_zero_grad", &[EPOCH, BATCH_IDX, OPT, OPT_IDX, CX], UNIT),
    hook("on_before_backward", &[LOSS, CX], UNIT),
    hook("backward", &[LOSS, OPT_IDX, CX], UNIT),
    hook("on_after_backward", &[CX], UNIT),
    hook("on_before_optimizer_step", &[OPT, OPT_IDX, CX], UNIT),
    hook(
        "configure_gradient_clipping",
        &[
            OPT,
            OPT_IDX,
            p("gradient_clip_val", "::core::option::Option<f64>"),
            p("gradient_clip_algorithm", "LIT::GradientClipAlgorithm"),
            CX,
        ],
        UNIT,
    ),
    hook("optimizer_step", &[EPOCH, BATCH_IDX, OPT, OPT_IDX, CX], UNIT),
    hook("on_fit_start", &[CX], UNIT),
    hook("on_fit_end", &[CX], UNIT),
    hook("on_train_start", &[CX], UNIT),
    hook("on_train_end", &[CX], UNIT),
    hook("on_validation_start", &[CX], UNIT),
    hook("on_validation_end", &[CX], UNIT),
    hook("on_test_start", &[CX], UNIT),
    hook("on_test_end", &[CX], UNIT),
    hook("on_predict_start", &[CX], UNIT),
    hook("on_predict_end", &[CX], UNIT),
    hook("on_train_epoch_start", &[CX], UNIT),
    hook("on_train_epoch_end", &[CX], UNIT),
    hook("on_validation_epoch_start", &[CX], UNIT),
    hook("on_validation_epoch_end", &[CX], UNIT),
    hook("on_test_epoch_start", &[CX], UNIT),
    hook("on_test_epoch_end", &[CX], UNIT),
    hook("on_predict_epoch_start", &[CX], UNIT),
    hook("on_predict_epoch_end", &[CX], UNIT),
    hook("on_train_batch_start", &[p("batch", "&Self::TrainBatch"), BATCH_IDX, CX], UNIT),
    hook("on_train_batch_end", &[OUT_REF, p("batch", "&Self::TrainBatch"), BATCH_IDX, CX], UNIT),
    hook("on_validation_batch_start", &[p("batch", "&Self::ValBatch"), BATCH_IDX, DL_IDX, CX], UNIT),
    hook("on_validation_batch_end", &[OUT_REF, p("batch", "&Self::ValBatch"), BATCH_IDX, DL_IDX, CX], UNIT),
    hook("on_test_batch_start", &[p("batch", "&Self::TestBatch"), BATCH_IDX, DL_IDX, CX], UNIT),
    hook("on_test_batch_end", &[OUT_REF, p("batch", "&Self::TestBatch"), BATCH_IDX, DL_IDX, CX], UNIT),
    hook("on_predict_batch_start", &[p("batch", "&Self::PredictBatch"), BATCH_IDX, DL_IDX, CX], UNIT),
    hook(
        "on_predict_batch_end",
        &[p("outputs", "&Self::Prediction"), p("batch", "&Self::PredictBatch"), BATCH_IDX, DL_IDX, CX],
        UNIT,
    ),
    hook("on_validation_model_eval", &[CX], UNIT),
    hook("on_validation_model_train", &[CX], UNIT),
    hook("on_test_model_eval", &[CX], UNIT),
    hook("on_test_model_train", &[CX], UNIT),
    hook("on_predict_model_eval", &[CX], UNIT),
];

/// The hook called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Hook> {
    HOOKS.iter().find(|h| h.name == name)
}

/// The hook name closest to `name`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean(name: &str) -> Option<&'static str> {
    HOOKS
        .iter()
        .map(|h| (distance(name, h.name), h.name))
        .filter(|&(d, hook)| d <= 3.max(hook.len() / 5))
        .min()
        .map(|(_, h)| h)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
