//! The hook table: [`LightningModule`].

use std::collections::BTreeMap;

use tch::{Device, Tensor, nn};

use crate::callback::Callback;
use crate::ctx::{Ctx, Stage};
use crate::data::{Batch, Loader};
use crate::error::Result;
use crate::optim::{Optimizer, Optimizers};

/// What a training, validation or test step returns: the loss (training needs one to step the
/// optimizer) and any extra tensors, which reach `*_step_end` and `*_epoch_end`.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// The loss to back-propagate.
    pub loss: Option<Tensor>,
    /// Anything else the step wants to hand on, by name.
    pub extras: BTreeMap<String, Tensor>,
    /// Truncated BPTT: the recurrent state to hand to the next chunk (detached by the Trainer).
    pub hiddens: Option<Vec<Tensor>>,
}

impl StepOutput {
    /// An output with only a loss.
    pub fn loss(loss: Tensor) -> Self {
        StepOutput { loss: Some(loss), extras: BTreeMap::new(), hiddens: None }
    }

    /// Adds an extra tensor.
    pub fn with(mut self, name: impl Into<String>, value: Tensor) -> Self {
        self.extras.insert(name.into(), value);
        self
    }

    /// The same output with every tensor detached from the graph (what epoch-end hooks get).
    pub fn detach(&self) -> Self {
        StepOutput {
            loss: self.loss.as_ref().map(Tensor::detach),
            extras: self.extras.iter().map(|(k, v)| (k.clone(), v.detach())).collect(),
            hiddens: self.hiddens.as_ref().map(|h| h.iter().map(Tensor::detach).collect()),
        }
    }
}

impl From<Tensor> for StepOutput {
    fn from(loss: Tensor) -> Self {
        StepOutput::loss(loss)
    }
}

/// Which optional hooks a module implements. The loops read it: without `validation_step`
/// there is no validation loop and no sanity check, and step outputs are kept for an
/// `*_epoch_end` hook only when it exists. `#[lightning_module]` fills it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks {
    /// `validation_step` is implemented.
    pub validation_step: bool,
    /// `test_step` is implemented.
    pub test_step: bool,
    /// `predict_step` is implemented.
    pub predict_step: bool,
    /// `training_epoch_end` is implemented.
    pub training_epoch_end: bool,
    /// `validation_epoch_end` is implemented.
    pub validation_epoch_end: bool,
    /// `test_epoch_end` is implemented.
    pub test_epoch_end: bool,
    /// `configure_optimizers` is implemented (the command line's `optimizer` replaces it, and
    /// says so).
    pub configure_optimizers: bool,
}

impl Hooks {
    /// Only `training_step`.
    pub const TRAINING_ONLY: Hooks = Hooks {
        validation_step: false,
        test_step: false,
        predict_step: false,
        training_epoch_end: false,
        validation_epoch_end: false,
        test_epoch_end: false,
        configure_optimizers: false,
    };
}

/// A gradient clipping algorithm (`gradient_clip_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientClipAlgorithm {
    /// Scale all gradients so that their global 2-norm is at most the value.
    #[default]
    Norm,
    /// Clamp each gradient element to `[-value, value]`.
    Value,
}

/// Shorthand for the loaders a data hook returns.
pub type Loaders<B> = Vec<Box<dyn Loader<Batch = B>>>;

/// A LightningModule: the model's tch code organised into hooks that the [`Trainer`] calls.
///
/// Write it with `#[lightning_module]` or implement it by hand. Every hook but
/// `training_step` and the variable-store accessors has Lightning's default. Each hook gets the
/// run's context `cx` ([`Ctx`]): logging, counters, device, training flag.
///
/// # Order of calls
///
/// This is the one place the order is written down; the loops follow it and the tests check it.
/// Where a callback has the same hook, the callbacks run first, then the module.
///
/// ```text
/// fit(model, train, val):
///     prepare_data()
///     configure_callbacks()                  # merged into the Trainer's callbacks
///     on_fit_start()                         # callbacks, then module
///     setup("fit")
///     <module moved to the device>; on_post_move_to_device()
///     configure_optimizers()
///     on_pretrain_routine_start()
///     <a checkpoint's state restored>        # fit_from_checkpoint
///     on_pretrain_routine_end()
///     val_dataloader()                       # when no validation loader was given to fit
///     if validation_step and num_sanity_val_steps > 0:
///         on_sanity_check_start()            # callbacks only
///         val_loop(num_sanity_val_steps batches per loader)   # metrics discarded
///         on_sanity_check_end()              # callbacks only
///     train_dataloader()                     # when no training loader was given to fit
///     on_train_start()
///     for epoch in epochs:                   # until max_epochs / max_steps / a stop request
///         train_epoch()
///     on_train_end()
///     on_fit_end()
///     teardown("fit")
///
/// train_epoch():                             # autograd on, cx.training() true
///     on_epoch_start()
///     on_train_epoch_start()
///     for batch_idx, batch in train batches:
///         on_train_batch_start(batch, batch_idx)
///         batch = on_before_batch_transfer(batch)
///         batch = transfer_batch_to_device(batch)
///         batch = on_after_batch_transfer(batch)
///         out = training_step(batch, batch_idx)          # None: skip the rest of the step
///         out = training_step_end(out)
///         if out has a loss:                              # per optimizer (accumulation:
///                                                         # zero_grad on a window's first
///                                                         # batch, the step on its last)
///             on_before_zero_grad(optimizer)
///             optimizer_zero_grad(epoch, batch_idx, optimizer)
///             on_before_backward(loss)
///             backward(loss)
///             on_after_backward()
///             on_before_optimizer_step(optimizer)
///             configure_gradient_clipping(optimizer)
///             optimizer_step(epoch, batch_idx, optimizer)
///         on_train_batch_end(out, batch, batch_idx)
///         if val_check_interval says so: val_loop()
///         if global_step == max_steps or a stop was requested: break
///     <epoch-interval schedulers step>       # when the epoch ran to its end
///     training_epoch_end(outputs)            # when implemented
///     on_train_epoch_end()                   # checkpoint and early-stopping callbacks after it
///     on_epoch_end()
///
/// val_loop():                                # test_loop() alike, with test_* hooks
///     on_validation_model_eval()             # cx.training() false
///     <autograd off>
///     on_validation_start()
///     on_epoch_start()
///     on_validation_epoch_start()
///     for dataloader_idx, loader in val loaders:
///         for batch_idx, batch in loader:
///             on_validation_batch_start(batch, batch_idx, dataloader_idx)
///             batch = on_before_batch_transfer(batch)
///             batch = transfer_batch_to_device(batch)
///             batch = on_after_batch_transfer(batch)
///             out = validation_step(batch, batch_idx, dataloader_idx)
///             out = validation_step_end(out)
///             on_validation_batch_end(out, batch, batch_idx, dataloader_idx)
///     validation_epoch_end(outputs)          # when implemented
///     on_validation_epoch_end()
///     on_epoch_end()
///     on_validation_end()
///     on_validation_model_train()            # cx.training() true again
///     <autograd back on>
///
/// validate / test / predict(model, loaders):
///     prepare_data(); configure_callbacks(); setup(stage);
///     <module moved>; on_post_move_to_device();
///     {val,test,predict}_dataloader()        # when none was given
///     val_loop() / test_loop() / predict_loop()
///     teardown(stage)
///
/// predict_loop():
///     on_predict_model_eval(); <autograd off>
///     on_predict_start()
///     on_predict_epoch_start()
///     for dataloader_idx, loader in predict loaders:
///         for batch_idx, batch in loader:
///             on_predict_batch_start(batch, batch_idx, dataloader_idx)
///             <batch transfer hooks>
///             out = predict_step(batch, batch_idx, dataloader_idx)
///             on_predict_batch_end(out, batch, batch_idx, dataloader_idx)
///     on_predict_epoch_end()
///     on_predict_end()
/// ```
///
/// In the source, each block above is one function: `fit` is `Run::fit` and `train_loop` is
/// `Run::train_epoch` (with `train_batch` and `step` for the optimization) in `trainer/fit.rs`;
/// `val_loop`/`test_loop` is `Run::eval_epoch` in `trainer/eval.rs`, whose `eval_stage!` table
/// names the validation and test hooks by role; `predict_loop` is `Run::predict` in
/// `trainer/predict.rs`; the prologue and `teardown` are `Run::setup`/`Run::teardown` in
/// `trainer/mod.rs`.
///
/// [`Trainer`]: crate::Trainer
#[allow(unused_variables)]
pub trait LightningModule {
    /// A training batch.
    type TrainBatch: Batch;
    /// A validation batch.
    type ValBatch: Batch;
    /// A test batch.
    type TestBatch: Batch;
    /// A prediction batch.
    type PredictBatch: Batch;
    /// What `predict_step` returns for one batch.
    type Prediction;

    /// Which optional hooks exist.
    const HOOKS: Hooks = Hooks::TRAINING_ONLY;

    /// A prediction's tensors, for callbacks that write predictions; `None` when `Prediction`
    /// holds none. `#[lightning_module]` implements it for every
    /// [`PredictionTensors`](crate::callbacks::PredictionTensors) type.
    fn prediction_tensors(prediction: &Self::Prediction) -> Option<Vec<(String, Tensor)>> {
        let _ = prediction;
        None
    }

    /// Truncated back-propagation through time: split each training batch into chunks of this
    /// many time steps (dim 1) with [`LightningModule::tbptt_split_batch`], run
    /// `training_step` and an optimizer step per chunk, and hand each chunk the detached
    /// `hiddens` of the previous one (`cx.take_hiddens()`; the step returns them in
    /// [`StepOutput::hiddens`]).
    const TRUNCATED_BPTT_STEPS: Option<usize> = None;

    /// Whether the Trainer steps the optimizers (Lightning's `automatic_optimization`).
    const AUTOMATIC_OPTIMIZATION: bool = true;

    /// The module's hyper-parameters as JSON, stored in checkpoints and sent to loggers
    /// (`#[hparams]` fields provide it).
    fn hparams_json(&self) -> Option<serde_json::Value> {
        None
    }

    /// Replaces the module's hyper-parameters with `hparams`, JSON of its `#[hparams]` type, as
    /// the tuner's `update_attr` sets the learning rate (`#[hparams]` fields provide it). A module
    /// without hyper-parameters refuses.
    fn set_hparams_json(&mut self, hparams: serde_json::Value) -> Result<()> {
        let _ = hparams;
        Err(crate::Error::msg("the module has no `#[hparams]` field to set"))
    }

    /// The module's variables.
    fn var_store(&self) -> &nn::VarStore;
    /// The module's variables, mutably (to move them to a device).
    fn var_store_mut(&mut self) -> &mut nn::VarStore;

    // ----- set-up and tear-down -----

    /// Downloads or writes data to disk, once per machine.
    fn prepare_data(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Builds what depends on the stage (splits, vocabularies, layers).
    fn setup(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Releases what `setup` built.
    fn teardown(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Callbacks the module brings; they replace Trainer callbacks of the same type.
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }
    /// The optimizers: one, or several.
    fn configure_optimizers(&mut self, cx: &mut Ctx) -> Result<Optimizers> {
        Ok(Optimizers::none())
    }
    /// Adds the module's own entries to a checkpoint being written.
    fn on_save_checkpoint(
        &mut self,
        checkpoint: &mut serde_json::Map<String, serde_json::Value>,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Reads the module's own entries from a checkpoint being read: when `fit` resumes, when
    /// `validate`, `test` or `predict` take a `ckpt_path`, and in `load_from_checkpoint`.
    fn on_load_checkpoint(
        &mut self,
        checkpoint: &serde_json::Map<String, serde_json::Value>,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// What the progress bar shows, from the `prog_bar` metrics (Lightning's
    /// `get_progress_bar_dict`): add, rename or drop entries.
    fn get_progress_bar_dict(&self, metrics: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        metrics
    }
    /// Called once the variables are on the training device.
    fn on_post_move_to_device(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    // ----- data -----

    /// The training loader, when `fit` is given none.
    fn train_dataloader(&mut self, cx: &mut Ctx) -> Result<Option<Box<dyn Loader<Batch = Self::TrainBatch>>>> {
        Ok(None)
    }
    /// The validation loaders, when none are given.
    fn val_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<Self::ValBatch>> {
        Ok(Vec::new())
    }
    /// The test loaders, when none are given.
    fn test_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<Self::TestBatch>> {
        Ok(Vec::new())
    }
    /// The prediction loaders, when none are given.
    fn predict_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<Self::PredictBatch>> {
        Ok(Vec::new())
    }
    /// Changes a batch before it is moved to the device.
    fn on_before_batch_transfer<B: Batch>(&mut self, batch: B, dataloader_idx: usize, cx: &mut Ctx) -> Result<B> {
        Ok(batch)
    }
    /// Moves a batch to `device`.
    fn transfer_batch_to_device<B: Batch>(
        &mut self,
        batch: B,
        device: Device,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<B> {
        Ok(batch.to_device(device))
    }
    /// Changes a batch once it is on the device (e.g. GPU augmentation).
    fn on_after_batch_transfer<B: Batch>(&mut self, batch: B, dataloader_idx: usize, cx: &mut Ctx) -> Result<B> {
        Ok(batch)
    }

    // ----- steps -----

    /// One training step: returns the loss (or an output holding it), or `None` to skip the
    /// batch.
    fn training_step(&mut self, batch: Self::TrainBatch, batch_idx: usize, cx: &mut Ctx) -> Result<Option<StepOutput>>;
    /// Splits a training batch into chunks of `split_size` time steps for truncated BPTT.
    /// `#[lightning_module(truncated_bptt_steps = N)]` generates one that splits every tensor
    /// along dim 1.
    fn tbptt_split_batch(
        &mut self,
        batch: Self::TrainBatch,
        split_size: usize,
        cx: &mut Ctx,
    ) -> Result<Vec<Self::TrainBatch>> {
        let _ = (batch, split_size);
        Err(crate::Error::hook(
            "tbptt_split_batch",
            "truncated_bptt_steps is set but the module does not implement `tbptt_split_batch`",
        ))
    }
    /// Post-processes a training step's output.
    fn training_step_end(&mut self, output: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        Ok(output)
    }
    /// Receives every training step's (detached) output at the end of the epoch.
    fn training_epoch_end(&mut self, outputs: Vec<StepOutput>, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// One validation step.
    fn validation_step(
        &mut self,
        batch: Self::ValBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<Option<StepOutput>> {
        Ok(None)
    }
    /// Post-processes a validation step's output.
    fn validation_step_end(&mut self, output: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        Ok(output)
    }
    /// Receives the validation outputs, one list per loader.
    fn validation_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// One test step.
    fn test_step(
        &mut self,
        batch: Self::TestBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<Option<StepOutput>> {
        Ok(None)
    }
    /// Post-processes a test step's output.
    fn test_step_end(&mut self, output: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        Ok(output)
    }
    /// Receives the test outputs, one list per loader.
    fn test_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// One prediction step. Only called when [`Hooks::predict_step`] is set.
    fn predict_step(
        &mut self,
        batch: Self::PredictBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<Self::Prediction> {
        Err(crate::Error::hook("predict_step", "the module does not implement `predict_step`"))
    }

    // ----- optimization -----

    /// Before gradients are cleared.
    fn on_before_zero_grad(&mut self, optimizer: &mut dyn Optimizer, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Clears gradients.
    fn optimizer_zero_grad(
        &mut self,
        epoch: usize,
        batch_idx: usize,
        optimizer: &mut dyn Optimizer,
        optimizer_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        optimizer.zero_grad();
        Ok(())
    }
    /// Before the loss is back-propagated.
    fn on_before_backward(&mut self, loss: &Tensor, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Back-propagates the loss.
    fn backward(&mut self, loss: &Tensor, optimizer_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(loss.f_backward()?)
    }
    /// After back-propagation, before the step: gradients can be inspected here.
    fn on_after_backward(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the optimizer steps.
    fn on_before_optimizer_step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        optimizer_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Clips gradients as the Trainer's `gradient_clip_val` and `gradient_clip_algorithm` say.
    fn configure_gradient_clipping(
        &mut self,
        optimizer: &mut dyn Optimizer,
        optimizer_idx: usize,
        gradient_clip_val: Option<f64>,
        gradient_clip_algorithm: GradientClipAlgorithm,
        cx: &mut Ctx,
    ) -> Result<()> {
        match (gradient_clip_val, gradient_clip_algorithm) {
            (Some(v), GradientClipAlgorithm::Norm) => {
                let _ = optimizer.clip_grad_norm(v);
            }
            (Some(v), GradientClipAlgorithm::Value) => optimizer.clip_grad_value(v),
            (None, _) => {}
        }
        Ok(())
    }
    /// Steps the optimizer.
    fn optimizer_step(
        &mut self,
        epoch: usize,
        batch_idx: usize,
        optimizer: &mut dyn Optimizer,
        optimizer_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        optimizer.step();
        Ok(())
    }

    // ----- run hooks -----

    /// Start of `fit`.
    fn on_fit_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of `fit`.
    fn on_fit_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After `configure_optimizers`, before a checkpoint's state is restored and the sanity check.
    fn on_pretrain_routine_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a checkpoint's state is restored (if any), before the sanity check.
    fn on_pretrain_routine_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the first training epoch.
    fn on_train_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After the last training epoch.
    fn on_train_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a validation loop.
    fn on_validation_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a validation loop.
    fn on_validation_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the test loop.
    fn on_test_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the test loop.
    fn on_test_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the prediction loop.
    fn on_predict_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the prediction loop.
    fn on_predict_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    // ----- epoch hooks -----

    /// Start of any epoch: training (before `on_train_epoch_start`), validation and test (after
    /// `on_{validation,test}_start`, before `on_{validation,test}_epoch_start`).
    fn on_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of any epoch: training (after `on_train_epoch_end`), validation and test (after
    /// `on_{validation,test}_epoch_end`, before `on_{validation,test}_end`).
    fn on_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a training epoch.
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a training epoch. As in Lightning 2.6, the callbacks that monitor a metric
    /// (checkpoints, early stopping) run their `on_train_epoch_end` after this one, and see what
    /// it logs.
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of a validation epoch.
    fn on_validation_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of a validation epoch.
    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the test epoch.
    fn on_test_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the test epoch.
    fn on_test_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Start of the prediction epoch.
    fn on_predict_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// End of the prediction epoch.
    fn on_predict_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    // ----- batch hooks -----

    /// Before a training batch is moved and stepped.
    fn on_train_batch_start(&mut self, batch: &Self::TrainBatch, batch_idx: usize, cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After a training batch; `outputs` is `None` when the step skipped it.
    fn on_train_batch_end(
        &mut self,
        outputs: Option<&StepOutput>,
        batch: &Self::TrainBatch,
        batch_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Before a validation batch.
    fn on_validation_batch_start(
        &mut self,
        batch: &Self::ValBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// After a validation batch.
    fn on_validation_batch_end(
        &mut self,
        outputs: Option<&StepOutput>,
        batch: &Self::ValBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Before a test batch.
    fn on_test_batch_start(
        &mut self,
        batch: &Self::TestBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// After a test batch.
    fn on_test_batch_end(
        &mut self,
        outputs: Option<&StepOutput>,
        batch: &Self::TestBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// Before a prediction batch.
    fn on_predict_batch_start(
        &mut self,
        batch: &Self::PredictBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    /// After a prediction batch.
    fn on_predict_batch_end(
        &mut self,
        outputs: &Self::Prediction,
        batch: &Self::PredictBatch,
        batch_idx: usize,
        dataloader_idx: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }

    // ----- modes -----

    /// Puts the model in evaluation mode for validation (default: `cx.set_training(false)`).
    fn on_validation_model_eval(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.set_training(false);
        Ok(())
    }
    /// Puts the model back in training mode after validation.
    fn on_validation_model_train(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.set_training(true);
        Ok(())
    }
    /// Puts the model in evaluation mode for testing.
    fn on_test_model_eval(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.set_training(false);
        Ok(())
    }
    /// Puts the model back in training mode after testing.
    fn on_test_model_train(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.set_training(true);
        Ok(())
    }
    /// Puts the model in evaluation mode for prediction.
    fn on_predict_model_eval(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.set_training(false);
        Ok(())
    }
}
