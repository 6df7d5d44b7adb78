//! Support for the code `#[lightning_module]` and `#[hparams]` generate. Not a public API: names
//! here may change in any release.

use tch::{Tensor, nn};

use crate::data::{Batch, Loader};
use crate::error::{Error, Result};
use crate::module::StepOutput;
use crate::optim::Optimizers;

pub use serde;
pub use serde_json;
pub use tch;

/// What `#[lightning_module]` on a struct knows: where the variables and hyper-parameters are.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `#[lightning_module]` on its struct definition",
    label = "the impl block's hooks need the struct's `VarStore`",
    note = "put `#[lightning_module]` on the struct as well as on its impl block"
)]
pub trait ModelParts {
    /// The `#[hparams]` field's type, or `()`.
    type Hparams: crate::Hparams;
    /// The `VarStore` field.
    fn var_store(&self) -> &nn::VarStore;
    /// The `VarStore` field, mutably.
    fn var_store_mut(&mut self) -> &mut nn::VarStore;
    /// The `#[hparams]` field, if any.
    fn hparams(&self) -> Option<&Self::Hparams>;
    /// The `#[hparams]` field, mutably, if any.
    fn hparams_mut(&mut self) -> Option<&mut Self::Hparams>;
    /// Replaces the `#[hparams]` field with `value`, JSON of its type (a provided method, so
    /// that the generated call adds no error of its own to a module whose parts are wrong).
    fn replace_hparams_json(&mut self, value: serde_json::Value) -> Result<()> {
        let Some(hparams) = self.hparams_mut() else {
            return Err(Error::msg("the module has no `#[hparams]` field to set"));
        };
        *hparams = serde_json::from_value(value).map_err(|e| {
            Error::msg(format!("the hyper-parameters do not fit `{}`: {e}", std::any::type_name::<Self::Hparams>()))
        })?;
        Ok(())
    }
}

/// The constructor `load_from_checkpoint` calls: `new(hparams)` or the `#[init]` method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no constructor that `load_from_checkpoint` can call",
    note = "write `fn new(hparams: YourHparams) -> Self` (or mark your constructor `#[init]`) in the `#[lightning_module]` impl block"
)]
pub trait Init: ModelParts + Sized {
    /// Builds the module from its hyper-parameters.
    fn init(hparams: Self::Hparams) -> Result<Self>;
}

/// Calls a module's `new` from `load_from_checkpoint` when `new` takes the hparams, and reports
/// otherwise (by autoref specialisation, as [`ExampleProbe`]): `new(hidden: usize)` is a
/// constructor, not necessarily the one that takes the hparams, and must compile.
pub struct InitProbe<T, A>(std::marker::PhantomData<fn() -> (T, A)>);

impl<T, A> InitProbe<T, A> {
    /// The probe.
    pub fn new() -> Self {
        InitProbe(std::marker::PhantomData)
    }
}

impl<T, A> Default for InitProbe<T, A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe's method when `new` takes the hparams.
pub trait ViaHparamsArg<T: ModelParts> {
    /// `new(hparams)`.
    fn call<R: IntoHookResult<T>>(&self, new: impl FnOnce(T::Hparams) -> R, hparams: T::Hparams) -> Result<T>;
}

impl<T: ModelParts> ViaHparamsArg<T> for &InitProbe<T, T::Hparams> {
    fn call<R: IntoHookResult<T>>(&self, new: impl FnOnce(T::Hparams) -> R, hparams: T::Hparams) -> Result<T> {
        new(hparams).into_hook_result()
    }
}

/// The probe's method when `new` takes something else.
pub trait ViaOtherArg<T: ModelParts, A> {
    /// An error saying how to name the constructor that takes the hparams.
    fn call<R>(&self, new: impl FnOnce(A) -> R, hparams: T::Hparams) -> Result<T>;
}

impl<T: ModelParts, A> ViaOtherArg<T, A> for InitProbe<T, A> {
    fn call<R>(&self, _new: impl FnOnce(A) -> R, _hparams: T::Hparams) -> Result<T> {
        Err(Error::msg(format!(
            "`{}::new` takes `{}`, not the hparams, so `load_from_checkpoint` cannot call it; \
             mark the constructor that takes the hparams `#[init]`",
            std::any::type_name::<T>(),
            std::any::type_name::<A>()
        )))
    }
}

/// The hparams JSON of a module, for checkpoints and loggers.
pub fn hparams_json<M: ModelParts>(m: &M) -> Option<serde_json::Value> {
    m.hparams().and_then(|h| serde_json::to_value(h).ok())
}

/// What a `training_step` may return.
#[diagnostic::on_unimplemented(
    message = "`training_step` cannot return `{Self}`",
    label = "return a `Tensor` (the loss), a `StepOutput`, `Option<_>` of those (None skips the batch), `()`, or `Result<_, E>` of any of them (`lit::Result`, or an error type implementing `std::error::Error + Send + Sync + 'static`)"
)]
pub trait IntoTrainStep {
    /// The table's form.
    fn into_train_step(self) -> Result<Option<StepOutput>>;
}

/// Nothing: no optimizer step for this batch (what manual optimization returns).
impl IntoTrainStep for () {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        Ok(None)
    }
}
impl IntoTrainStep for Tensor {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        Ok(Some(StepOutput::loss(self)))
    }
}
impl IntoTrainStep for StepOutput {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        Ok(Some(self))
    }
}
impl<T: IntoTrainStep> IntoTrainStep for Option<T> {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        self.map_or(Ok(None), T::into_train_step)
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<T: IntoTrainStep, E: Into<Error>> IntoTrainStep for Result<T, E> {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        self.map_err(Into::into).and_then(T::into_train_step)
    }
}
/// `(loss, hiddens)`, for truncated back-propagation through time.
impl<H: Hiddens> IntoTrainStep for (Tensor, H) {
    fn into_train_step(self) -> Result<Option<StepOutput>> {
        let mut out = StepOutput::loss(self.0);
        out.hiddens = Some(self.1.into_tensors());
        Ok(Some(out))
    }
}

/// What a `validation_step` or `test_step` may return.
#[diagnostic::on_unimplemented(
    message = "an evaluation step cannot return `{Self}`",
    label = "return `()`, a `Tensor`, a `StepOutput`, `Option<_>` of those, or `Result<_, E>` of any of them (`lit::Result`, or an error type implementing `std::error::Error + Send + Sync + 'static`)"
)]
pub trait IntoEvalStep {
    /// The table's form.
    fn into_eval_step(self) -> Result<Option<StepOutput>>;
}

impl IntoEvalStep for () {
    fn into_eval_step(self) -> Result<Option<StepOutput>> {
        Ok(None)
    }
}
impl IntoEvalStep for Tensor {
    fn into_eval_step(self) -> Result<Option<StepOutput>> {
        Ok(Some(StepOutput::loss(self)))
    }
}
impl IntoEvalStep for StepOutput {
    fn into_eval_step(self) -> Result<Option<StepOutput>> {
        Ok(Some(self))
    }
}
impl<T: IntoEvalStep> IntoEvalStep for Option<T> {
    fn into_eval_step(self) -> Result<Option<StepOutput>> {
        self.map_or(Ok(None), T::into_eval_step)
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<T: IntoEvalStep, E: Into<Error>> IntoEvalStep for Result<T, E> {
    fn into_eval_step(self) -> Result<Option<StepOutput>> {
        self.map_err(Into::into).and_then(T::into_eval_step)
    }
}

/// A hook's return value as the table wants it: `T` itself or `Result<T, E>` with an error that
/// converts into [`Error`] (any `std::error::Error + Send + Sync + 'static`).
#[diagnostic::on_unimplemented(
    message = "this hook cannot return `{Self}`",
    label = "return `{T}` or `Result<{T}, E>` (`lit::Result<{T}>`, or any error type implementing `std::error::Error + Send + Sync + 'static`)"
)]
pub trait IntoHookResult<T> {
    /// The table's form.
    fn into_hook_result(self) -> Result<T>;
}

impl<T> IntoHookResult<T> for T {
    fn into_hook_result(self) -> Result<T> {
        Ok(self)
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<T, E: Into<Error>> IntoHookResult<T> for Result<T, E> {
    fn into_hook_result(self) -> Result<T> {
        self.map_err(Into::into)
    }
}

/// What `configure_optimizers` may return: anything `Into<Optimizers>` (an optimizer such as
/// `Adam::new(1e-3)`, or `Optimizers`), or `Result` of it.
#[diagnostic::on_unimplemented(
    message = "`configure_optimizers` cannot return `{Self}`",
    label = "return an optimizer (e.g. `Adam::new(1e-3)`), `Optimizers`, or `Result<_, E>` of them"
)]
pub trait IntoOptimizers {
    /// The table's form.
    fn into_optimizers(self) -> Result<Optimizers>;
}

impl<T: Into<Optimizers>> IntoOptimizers for T {
    fn into_optimizers(self) -> Result<Optimizers> {
        Ok(self.into())
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<T: Into<Optimizers>, E: Into<Error>> IntoOptimizers for Result<T, E> {
    fn into_optimizers(self) -> Result<Optimizers> {
        self.map(Into::into).map_err(Into::into)
    }
}

/// The `forward` that `to_torchscript` and `to_onnx` trace. Nothing implements it: the macro
/// generates the export methods with this bound when `forward` cannot be traced, so that calling
/// them is an error that says what to write.
#[diagnostic::on_unimplemented(
    message = "`to_torchscript` and `to_onnx` trace `forward`, and this module has no `forward` they can call",
    label = "needs a method `fn forward(&self, x: &Tensor) -> Tensor` (or `x: Tensor`, or `forward(&self, x: &Tensor, train: bool)`) in the `#[lightning_module]` impl block",
    note = "`forward` may also return a tuple or `Vec` of tensors; for other signatures call `lit::export::to_torchscript` / `lit::export::to_onnx` with a closure"
)]
pub trait TraceableForward {}

/// What `train_dataloader` may return: a loader, `Option`/`Result` of one.
#[diagnostic::on_unimplemented(
    message = "`train_dataloader` cannot return `{Self}`",
    label = "return a loader of the training batch type (e.g. a `DataLoader`), `Option<_>` of one, or `lit::Result<_>`"
)]
pub trait IntoTrainLoader<B> {
    /// The table's form.
    fn into_train_loader(self) -> Result<Option<Box<dyn Loader<Batch = B>>>>;
}

impl<B: Batch, L: Loader<Batch = B> + 'static> IntoTrainLoader<B> for L {
    fn into_train_loader(self) -> Result<Option<Box<dyn Loader<Batch = B>>>> {
        Ok(Some(Box::new(self)))
    }
}
impl<B: Batch, L: Loader<Batch = B> + 'static> IntoTrainLoader<B> for Option<L> {
    fn into_train_loader(self) -> Result<Option<Box<dyn Loader<Batch = B>>>> {
        Ok(self.map(|l| Box::new(l) as Box<dyn Loader<Batch = B>>))
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<B, T: IntoTrainLoader<B>, E: Into<Error>> IntoTrainLoader<B> for Result<T, E> {
    fn into_train_loader(self) -> Result<Option<Box<dyn Loader<Batch = B>>>> {
        self.map_err(Into::into).and_then(T::into_train_loader)
    }
}

/// What `val_dataloader`, `test_dataloader` and `predict_dataloader` may return: a loader, a
/// `Vec` of loaders, or `Result` of those.
#[diagnostic::on_unimplemented(
    message = "an evaluation data hook cannot return `{Self}`",
    label = "return a loader of the stage's batch type, a `Vec` of them, or `lit::Result<_>`"
)]
pub trait IntoEvalLoaders<B> {
    /// The table's form.
    fn into_eval_loaders(self) -> Result<crate::Loaders<B>>;
}

impl<B: Batch, L: Loader<Batch = B> + 'static> IntoEvalLoaders<B> for L {
    fn into_eval_loaders(self) -> Result<crate::Loaders<B>> {
        Ok(vec![Box::new(self)])
    }
}
impl<B: Batch, L: Loader<Batch = B> + 'static> IntoEvalLoaders<B> for Vec<L> {
    fn into_eval_loaders(self) -> Result<crate::Loaders<B>> {
        Ok(self.into_iter().map(|l| Box::new(l) as Box<dyn Loader<Batch = B>>).collect())
    }
}
// Not named in errors: the traits' messages say which `Result`s fit.
#[diagnostic::do_not_recommend]
impl<B, T: IntoEvalLoaders<B>, E: Into<Error>> IntoEvalLoaders<B> for Result<T, E> {
    fn into_eval_loaders(self) -> Result<crate::Loaders<B>> {
        self.map_err(Into::into).and_then(T::into_eval_loaders)
    }
}

/// Recurrent state carried between truncated-BPTT chunks: a tensor, a tuple of tensors, or a
/// `Vec` of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be carried as `hiddens`",
    label = "use a `Tensor`, a tuple of tensors such as `(h, c)`, or `Vec<Tensor>`"
)]
pub trait Hiddens: Sized {
    /// The tensors, in order.
    fn into_tensors(self) -> Vec<Tensor>;
    /// Back from the tensors.
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self>;
}

impl Hiddens for Tensor {
    fn into_tensors(self) -> Vec<Tensor> {
        vec![self]
    }
    fn from_tensors(mut tensors: Vec<Tensor>) -> Result<Self> {
        match tensors.len() {
            1 => Ok(tensors.remove(0)),
            n => Err(Error::hook("training_step", format!("expected 1 hiddens tensor, got {n}"))),
        }
    }
}
impl Hiddens for Vec<Tensor> {
    fn into_tensors(self) -> Vec<Tensor> {
        self
    }
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        Ok(tensors)
    }
}
impl Hiddens for (Tensor, Tensor) {
    fn into_tensors(self) -> Vec<Tensor> {
        vec![self.0, self.1]
    }
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        let n = tensors.len();
        let mut it = tensors.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => Ok((a, b)),
            _ => Err(Error::hook("training_step", format!("expected 2 hiddens tensors, got {n}"))),
        }
    }
}

/// The hiddens a TBPTT chunk receives: the previous chunk's, converted to the user's type.
pub fn take_hiddens<H: Hiddens>(cx: &mut crate::Ctx) -> Result<Option<H>> {
    cx.state.hiddens.take().map(H::from_tensors).transpose()
}

/// A batch that truncated BPTT can split along the time dimension (dim 1).
#[diagnostic::on_unimplemented(
    message = "the training batch `{Self}` cannot be split for truncated BPTT",
    label = "the default split handles a `Tensor` or a tuple of tensors; write `tbptt_split_batch` for other batches"
)]
pub trait TbpttSplit: Sized {
    /// Chunks of at most `size` time steps.
    fn tbptt_split(self, size: usize) -> Result<Vec<Self>>;
}

impl TbpttSplit for Tensor {
    fn tbptt_split(self, size: usize) -> Result<Vec<Self>> {
        if self.dim() < 2 {
            return Err(Error::hook(
                "tbptt_split_batch",
                format!("a batch tensor of shape {:?} has no time dimension (dim 1) to split", self.size()),
            ));
        }
        Ok(self.f_split(size as i64, 1)?)
    }
}

macro_rules! tuple_split {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: TbpttSplit),+> TbpttSplit for ($($name,)+) {
            #[allow(non_snake_case)]
            fn tbptt_split(self, size: usize) -> Result<Vec<Self>> {
                $(let $name = self.$idx.tbptt_split(size)?;)+
                let lens = [$($name.len()),+];
                if lens.iter().any(|&l| l != lens[0]) {
                    return Err(Error::hook("tbptt_split_batch", format!(
                        "the tensors of the batch split into different numbers of chunks: {lens:?}; they need the same length along dim 1"
                    )));
                }
                $(let mut $name = $name.into_iter();)+
                Ok((0..lens[0]).map(|_| ($($name.next().expect("checked length"),)+)).collect())
            }
        }
    };
}
tuple_split!(A 0);
tuple_split!(A 0, B 1);
tuple_split!(A 0, B 1, C 2);
tuple_split!(A 0, B 1, C 2, D 3);

/// Makes no parameter require grad, as Lightning's `freeze` (buffers never do).
pub fn freeze(vs: &mut nn::VarStore) {
    vs.freeze();
}

/// Makes every parameter require grad, as Lightning's `unfreeze` (also one frozen by hand or by
/// a finetuning schedule; buffers such as running statistics stay as they are).
pub fn unfreeze(vs: &mut nn::VarStore) {
    vs.unfreeze();
}

/// Megabytes of parameters and buffers.
pub fn model_size(vs: &nn::VarStore) -> f64 {
    let bytes: usize = vs.variables().values().map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum();
    bytes as f64 / 1e6
}

/// Rebuilds a module from a checkpoint: hparams, constructor, weights.
pub fn load_from_checkpoint<M: Init + crate::LightningModule>(path: &std::path::Path) -> Result<M> {
    let ckpt = crate::checkpoint::Checkpoint::load(path)?;
    let hparams = ckpt.hparams::<M::Hparams>()?;
    let mut model = M::init(hparams)?;
    ckpt.load_into(crate::LightningModule::var_store_mut(&mut model))?;
    // As Lightning's `load_from_checkpoint`, the module gets its saved entries, in the context
    // of a Trainer that runs nothing.
    let mut trainer = crate::Trainer::builder()
        .accelerator("cpu")
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .logger(false)
        .build()?;
    trainer.hand_module_state(&mut model, &ckpt)?;
    Ok(model)
}

/// Implemented by the macro for a module with an `#[example_input]` field or method.
pub trait HasExampleInput {
    /// The example input.
    fn example_input(&self) -> Tensor;
}

/// Finds a module's example input, or reports that it has none (by autoref specialisation:
/// `(&&ExampleProbe(model)).example()` picks `ViaExampleInput` when the module implements
/// [`HasExampleInput`], and `ViaNoExampleInput` otherwise).
pub struct ExampleProbe<'a, T>(pub &'a T);

/// The probe's method when the module has an example input.
pub trait ViaExampleInput {
    /// The example input.
    fn example(&self) -> Result<Tensor>;
}

impl<T: HasExampleInput> ViaExampleInput for &ExampleProbe<'_, T> {
    fn example(&self) -> Result<Tensor> {
        Ok(self.0.example_input())
    }
}

/// The probe's method when the module has none.
pub trait ViaNoExampleInput {
    /// An error saying how to add one.
    fn example(&self) -> Result<Tensor>;
}

impl<T> ViaNoExampleInput for ExampleProbe<'_, T> {
    fn example(&self) -> Result<Tensor> {
        Err(crate::Error::Export {
            format: "model",
            message: format!(
                "`{}` has no example input to trace `forward` with; mark a field or method `#[example_input]`, \
                 or use `to_torchscript_with` / `to_onnx_with`",
                std::any::type_name::<T>()
            ),
        })
    }
}

/// What `forward` returns, as the list of traced outputs.
pub trait IntoTraceOutputs {
    /// The output tensors.
    fn into_trace_outputs(self) -> Vec<Tensor>;
}

impl IntoTraceOutputs for Tensor {
    fn into_trace_outputs(self) -> Vec<Tensor> {
        vec![self]
    }
}

impl IntoTraceOutputs for Vec<Tensor> {
    fn into_trace_outputs(self) -> Vec<Tensor> {
        self
    }
}

impl IntoTraceOutputs for (Tensor, Tensor) {
    fn into_trace_outputs(self) -> Vec<Tensor> {
        vec![self.0, self.1]
    }
}

impl IntoTraceOutputs for (Tensor, Tensor, Tensor) {
    fn into_trace_outputs(self) -> Vec<Tensor> {
        vec![self.0, self.1, self.2]
    }
}

/// Finds a prediction's tensors (autoref specialisation, as [`ExampleProbe`]):
/// `(&&PredictionProbe(p)).tensors()` is `Some` when the prediction type implements
/// [`PredictionTensors`](crate::callbacks::PredictionTensors).
pub struct PredictionProbe<'a, T>(pub &'a T);

/// The probe's method for predictions that hold tensors.
pub trait ViaPredictionTensors {
    /// The tensors.
    fn tensors(&self) -> Option<Vec<(String, Tensor)>>;
}

impl<T: crate::callbacks::PredictionTensors> ViaPredictionTensors for &PredictionProbe<'_, T> {
    fn tensors(&self) -> Option<Vec<(String, Tensor)>> {
        Some(self.0.prediction_tensors())
    }
}

/// The probe's method for other predictions.
pub trait ViaNoPredictionTensors {
    /// `None`.
    fn tensors(&self) -> Option<Vec<(String, Tensor)>>;
}

impl<T> ViaNoPredictionTensors for PredictionProbe<'_, T> {
    fn tensors(&self) -> Option<Vec<(String, Tensor)>> {
        None
    }
}
