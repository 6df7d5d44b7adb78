//! The order of hook calls, the training flag and the autograd mode inside every hook, for fit
//! (sanity check, mid-epoch validation, limits, max_steps ending mid-epoch), validate, test and
//! predict, against the order documented on `LightningModule`.

use std::sync::{Arc, Mutex};

use lit::data::Batches;
use lit::prelude::*;
use lit::{Loaders, RunningStage};

use crate::common::{grad_mode, regression_batches};

pub(crate) type B = (Tensor, Tensor);

/// One recorded call: the hook (with indices for batch hooks), the training flag the context
/// reported and the autograd mode observed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) hook: String,
    pub(crate) training: bool,
    pub(crate) grad: bool,
}

pub(crate) type Journal = Arc<Mutex<Vec<Call>>>;

/// Records a call with the mode the context reports and the autograd mode observed.
pub(crate) fn record(calls: &Journal, hook: impl Into<String>, cx: &Ctx) {
    calls.lock().unwrap().push(Call { hook: hook.into(), training: cx.training(), grad: grad_mode() });
}

struct Recorder {
    vs: nn::VarStore,
    layer: nn::Linear,
    calls: Journal,
    /// Loaders the data hooks hand out when the entry point gets none.
    loaders: usize,
}

impl Recorder {
    fn new(calls: Journal) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 2, 1, Default::default());
        Recorder { vs, layer, calls, loaders: 0 }
    }

    fn rec(&self, hook: impl Into<String>, cx: &Ctx) {
        record(&self.calls, hook, cx);
    }

    fn loss(&self, (x, y): B) -> Tensor {
        self.layer.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn loaders(&self, n: usize) -> Loaders<B> {
        (0..self.loaders).map(|_| Box::new(Batches::new(regression_batches(n))) as Box<dyn Loader<Batch = B>>).collect()
    }
}

macro_rules! record {
    ($($name:ident),* $(,)?) => {$(
        fn $name(&mut self, cx: &mut Ctx) -> Result<()> {
            self.rec(stringify!($name), cx);
            Ok(())
        }
    )*};
}

macro_rules! record_mode {
    ($($name:ident => $training:expr),* $(,)?) => {$(
        fn $name(&mut self, cx: &mut Ctx) -> Result<()> {
            self.rec(stringify!($name), cx);
            cx.set_training($training);
            Ok(())
        }
    )*};
}

impl LightningModule for Recorder {
    type TrainBatch = B;
    type ValBatch = B;
    type TestBatch = B;
    type PredictBatch = B;
    type Prediction = Tensor;

    const HOOKS: Hooks = Hooks {
        validation_step: true,
        test_step: true,
        predict_step: true,
        training_epoch_end: true,
        validation_epoch_end: true,
        test_epoch_end: true,
        configure_optimizers: true,
    };

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn prepare_data(&mut self, cx: &mut Ctx) -> Result<()> {
        self.rec("prepare_data", cx);
        Ok(())
    }
    fn setup(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("setup:{}", stage.as_str()), cx);
        Ok(())
    }
    fn teardown(&mut self, stage: Stage, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("teardown:{}", stage.as_str()), cx);
        Ok(())
    }
    fn configure_optimizers(&mut self, cx: &mut Ctx) -> Result<Optimizers> {
        self.rec("configure_optimizers", cx);
        Ok(Sgd::new(0.01).into())
    }

    fn train_dataloader(&mut self, cx: &mut Ctx) -> Result<Option<Box<dyn Loader<Batch = B>>>> {
        self.rec("train_dataloader", cx);
        Ok(self.loaders(10).into_iter().next())
    }
    fn val_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<B>> {
        self.rec("val_dataloader", cx);
        Ok(self.loaders(3))
    }
    fn test_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<B>> {
        self.rec("test_dataloader", cx);
        Ok(self.loaders(3))
    }
    fn predict_dataloader(&mut self, cx: &mut Ctx) -> Result<Loaders<B>> {
        self.rec("predict_dataloader", cx);
        Ok(self.loaders(3))
    }

    fn on_before_batch_transfer<T: lit::data::Batch>(&mut self, batch: T, _: usize, cx: &mut Ctx) -> Result<T> {
        self.rec("on_before_batch_transfer", cx);
        Ok(batch)
    }
    fn transfer_batch_to_device<T: lit::data::Batch>(
        &mut self,
        batch: T,
        device: Device,
        _: usize,
        cx: &mut Ctx,
    ) -> Result<T> {
        self.rec("transfer_batch_to_device", cx);
        Ok(batch.to_device(device))
    }
    fn on_after_batch_transfer<T: lit::data::Batch>(&mut self, batch: T, _: usize, cx: &mut Ctx) -> Result<T> {
        self.rec("on_after_batch_transfer", cx);
        Ok(batch)
    }

    fn training_step(&mut self, batch: B, batch_idx: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        self.rec(format!("training_step:{batch_idx}"), cx);
        let loss = self.loss(batch);
        cx.log("train_loss", &loss);
        Ok(Some(loss.into()))
    }
    fn training_step_end(&mut self, out: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        self.rec("training_step_end", cx);
        Ok(out)
    }
    fn training_epoch_end(&mut self, outputs: Vec<StepOutput>, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("training_epoch_end:{}", outputs.len()), cx);
        Ok(())
    }
    fn validation_step(&mut self, batch: B, i: usize, dl: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        self.rec(format!("validation_step:{i}/{dl}"), cx);
        let loss = self.loss(batch);
        cx.log("val_loss", &loss);
        Ok(Some(loss.into()))
    }
    fn validation_step_end(&mut self, out: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        self.rec("validation_step_end", cx);
        Ok(out)
    }
    fn validation_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()> {
        let counts: Vec<usize> = outputs.iter().map(Vec::len).collect();
        self.rec(format!("validation_epoch_end:{counts:?}"), cx);
        Ok(())
    }
    fn test_step(&mut self, batch: B, i: usize, dl: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        self.rec(format!("test_step:{i}/{dl}"), cx);
        let loss = self.loss(batch);
        cx.log("test_loss", &loss);
        Ok(None)
    }
    fn test_step_end(&mut self, out: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
        self.rec("test_step_end", cx);
        Ok(out)
    }
    fn test_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()> {
        let counts: Vec<usize> = outputs.iter().map(Vec::len).collect();
        self.rec(format!("test_epoch_end:{counts:?}"), cx);
        Ok(())
    }
    fn predict_step(&mut self, (x, _): B, i: usize, dl: usize, cx: &mut Ctx) -> Result<Tensor> {
        self.rec(format!("predict_step:{i}/{dl}"), cx);
        Ok(self.layer.forward(&x))
    }

    fn on_before_zero_grad(&mut self, _: &mut dyn Optimizer, cx: &mut Ctx) -> Result<()> {
        self.rec("on_before_zero_grad", cx);
        Ok(())
    }
    fn optimizer_zero_grad(
        &mut self,
        _: usize,
        _: usize,
        opt: &mut dyn Optimizer,
        _: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        self.rec("optimizer_zero_grad", cx);
        opt.zero_grad();
        Ok(())
    }
    fn on_before_backward(&mut self, _: &Tensor, cx: &mut Ctx) -> Result<()> {
        self.rec("on_before_backward", cx);
        Ok(())
    }
    fn backward(&mut self, loss: &Tensor, _: usize, cx: &mut Ctx) -> Result<()> {
        self.rec("backward", cx);
        loss.backward();
        Ok(())
    }
    fn on_before_optimizer_step(&mut self, _: &mut dyn Optimizer, _: usize, cx: &mut Ctx) -> Result<()> {
        self.rec("on_before_optimizer_step", cx);
        Ok(())
    }
    fn configure_gradient_clipping(
        &mut self,
        _: &mut dyn Optimizer,
        _: usize,
        _: Option<f64>,
        _: lit::GradientClipAlgorithm,
        cx: &mut Ctx,
    ) -> Result<()> {
        self.rec("configure_gradient_clipping", cx);
        Ok(())
    }
    fn optimizer_step(&mut self, _: usize, _: usize, opt: &mut dyn Optimizer, _: usize, cx: &mut Ctx) -> Result<()> {
        self.rec("optimizer_step", cx);
        opt.step();
        Ok(())
    }

    fn on_train_batch_start(&mut self, _: &B, i: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_train_batch_start:{i}"), cx);
        Ok(())
    }
    fn on_train_batch_end(&mut self, out: Option<&StepOutput>, _: &B, i: usize, cx: &mut Ctx) -> Result<()> {
        assert!(out.is_some_and(|o| o.loss.is_some()), "on_train_batch_end gets the step's output");
        self.rec(format!("on_train_batch_end:{i}"), cx);
        Ok(())
    }
    fn on_validation_batch_start(&mut self, _: &B, i: usize, dl: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_validation_batch_start:{i}/{dl}"), cx);
        Ok(())
    }
    fn on_validation_batch_end(
        &mut self,
        _: Option<&StepOutput>,
        _: &B,
        i: usize,
        dl: usize,
        cx: &mut Ctx,
    ) -> Result<()> {
        self.rec(format!("on_validation_batch_end:{i}/{dl}"), cx);
        Ok(())
    }
    fn on_test_batch_start(&mut self, _: &B, i: usize, dl: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_test_batch_start:{i}/{dl}"), cx);
        Ok(())
    }
    fn on_test_batch_end(&mut self, _: Option<&StepOutput>, _: &B, i: usize, dl: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_test_batch_end:{i}/{dl}"), cx);
        Ok(())
    }
    fn on_predict_batch_start(&mut self, _: &B, i: usize, dl: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_predict_batch_start:{i}/{dl}"), cx);
        Ok(())
    }
    fn on_predict_batch_end(&mut self, _: &Tensor, _: &B, i: usize, dl: usize, cx: &mut Ctx) -> Result<()> {
        self.rec(format!("on_predict_batch_end:{i}/{dl}"), cx);
        Ok(())
    }

    record!(
        on_post_move_to_device,
        on_fit_start,
        on_fit_end,
        on_pretrain_routine_start,
        on_pretrain_routine_end,
        on_epoch_start,
        on_epoch_end,
        on_train_start,
        on_train_end,
        on_validation_start,
        on_validation_end,
        on_test_start,
        on_test_end,
        on_predict_start,
        on_predict_end,
        on_train_epoch_start,
        on_train_epoch_end,
        on_validation_epoch_start,
        on_validation_epoch_end,
        on_test_epoch_start,
        on_test_epoch_end,
        on_predict_epoch_start,
        on_predict_epoch_end,
        on_after_backward,
    );
    record_mode!(
        on_validation_model_eval => false,
        on_validation_model_train => true,
        on_test_model_eval => false,
        on_test_model_train => true,
        on_predict_model_eval => false,
    );
}

/// Builds the expected journal: hook names plus the training flag and autograd mode each hook
/// must see.
#[derive(Default)]
struct Expect {
    calls: Vec<Call>,
    training: bool,
    grad: bool,
}

impl Expect {
    fn new() -> Self {
        Expect { calls: Vec::new(), training: true, grad: true }
    }
    fn push(&mut self, hook: impl Into<String>) -> &mut Self {
        self.calls.push(Call { hook: hook.into(), training: self.training, grad: self.grad });
        self
    }
    fn all(&mut self, hooks: &[&str]) -> &mut Self {
        for h in hooks {
            self.push(*h);
        }
        self
    }
    /// The spec's `fit` prologue, up to the sanity check.
    fn fit_prologue(&mut self) -> &mut Self {
        self.all(&[
            "prepare_data",
            "on_fit_start",
            "setup:fit",
            "on_post_move_to_device",
            "configure_optimizers",
            "on_pretrain_routine_start",
            "on_pretrain_routine_end",
        ])
    }
    fn transfer(&mut self) -> &mut Self {
        self.all(&["on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"])
    }
    fn train_batch(&mut self, i: usize) -> &mut Self {
        self.push(format!("on_train_batch_start:{i}")).transfer().push(format!("training_step:{i}"));
        self.all(&[
            "training_step_end",
            "on_before_zero_grad",
            "optimizer_zero_grad",
            "on_before_backward",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "configure_gradient_clipping",
            "optimizer_step",
        ]);
        self.push(format!("on_train_batch_end:{i}"))
    }
    /// An evaluation loop of `stage` ("validation" or "test") over `batches` per loader.
    fn eval(&mut self, stage: &str, batches: &[usize], restore_training: bool) -> &mut Self {
        self.push(format!("on_{stage}_model_eval"));
        self.training = false;
        self.grad = false;
        self.push(format!("on_{stage}_start")).push("on_epoch_start").push(format!("on_{stage}_epoch_start"));
        for (dl, &n) in batches.iter().enumerate() {
            for i in 0..n {
                self.push(format!("on_{stage}_batch_start:{i}/{dl}")).transfer();
                self.push(format!("{stage}_step:{i}/{dl}"));
                if stage == "validation" {
                    // test_step returns None here, so there is no test_step_end.
                    self.push("validation_step_end");
                }
                self.push(format!("on_{stage}_batch_end:{i}/{dl}"));
            }
        }
        let kept: Vec<usize> =
            if stage == "validation" { batches.to_vec() } else { batches.iter().map(|_| 0).collect() };
        self.push(format!("{stage}_epoch_end:{kept:?}"));
        self.push(format!("on_{stage}_epoch_end")).push("on_epoch_end").push(format!("on_{stage}_end"));
        self.push(format!("on_{stage}_model_train"));
        self.training = restore_training;
        self.grad = true;
        self
    }
}

fn journal() -> (Journal, Recorder) {
    let calls = Journal::default();
    (calls.clone(), Recorder::new(calls))
}

fn assert_journal(calls: &Journal, expected: &Expect) {
    let got = calls.lock().unwrap().clone();
    for (i, (g, e)) in got.iter().zip(&expected.calls).enumerate() {
        assert_eq!(
            g,
            e,
            "call {i} differs; calls so far: {:#?}",
            &got[..=i].iter().map(|c| &c.hook).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        got.len(),
        expected.calls.len(),
        "number of calls; got {:#?}",
        got.iter().map(|c| &c.hook).collect::<Vec<_>>()
    );
}

/// The fit scenario of `fit_runs_hooks_in_lightning_order`, for any module.
pub(crate) fn fit_scenario<M: LightningModule<TrainBatch = B, ValBatch = B>>(model: &mut M) -> lit::Result<Trainer> {
    let mut trainer = Trainer::builder()
        .accelerator("cpu")
        .max_epochs(2)
        .max_steps(9)
        .limit_train_batches(6)
        .limit_val_batches(2)
        .val_check_interval(3)
        .build()?;
    trainer.fit(model, Batches::new(regression_batches(10)), Batches::new(regression_batches(3)))?;
    Ok(trainer)
}

/// The journal of the hand-written recorder in the fit scenario.
pub(crate) fn hand_written_fit_journal() -> lit::Result<Vec<Call>> {
    let (calls, mut model) = journal();
    fit_scenario(&mut model)?;
    let calls = calls.lock().unwrap().clone();
    Ok(calls)
}

/// The spec's "Hooks" pseudocode, line by line (`fit` → `train_on_device` → `train_loop` →
/// `val_loop`), as Lightning's `tests_pytorch/models/test_hooks.py::test_trainer_model_hook_system_fit`
/// checks its expected call list; with the later hooks lit also has where Lightning 2.6 calls them.
#[test]
fn fit_runs_hooks_in_lightning_order() -> lit::Result<()> {
    let (calls, mut model) = journal();
    let mut trainer = Trainer::builder()
        .accelerator("cpu")
        .max_epochs(2)
        .max_steps(9)
        .limit_train_batches(6)
        .limit_val_batches(2)
        .val_check_interval(3)
        .build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(10)), Batches::new(regression_batches(3)))?;

    let mut e = Expect::new();
    e.fit_prologue();
    e.eval("validation", &[2], true); // sanity check: num_sanity_val_steps = 2
    e.push("on_train_start");
    // Epoch 0: six batches (limit_train_batches), validation after batches 2 and 5.
    e.all(&["on_epoch_start", "on_train_epoch_start"]);
    for i in 0..6 {
        e.train_batch(i);
        if (i + 1) % 3 == 0 {
            e.eval("validation", &[2], true);
        }
    }
    e.all(&["training_epoch_end:6", "on_train_epoch_end", "on_epoch_end"]);
    // Epoch 1: max_steps = 9 is reached at batch 2, after which validation is still due.
    e.all(&["on_epoch_start", "on_train_epoch_start"]);
    for i in 0..3 {
        e.train_batch(i);
    }
    e.eval("validation", &[2], true);
    e.all(&[
        "training_epoch_end:3",
        "on_train_epoch_end",
        "on_epoch_end",
        "on_train_end",
        "on_fit_end",
        "teardown:fit",
    ]);
    assert_journal(&calls, &e);

    assert_eq!(trainer.global_step(), 9);
    assert_eq!(trainer.current_epoch(), 2);
    Ok(())
}

#[test]
fn fit_asks_the_module_for_loaders_when_given_none() -> lit::Result<()> {
    let (calls, mut model) = journal();
    model.loaders = 1;
    let mut trainer =
        Trainer::builder().accelerator("cpu").max_epochs(1).limit_train_batches(2).num_sanity_val_steps(1).build()?;
    trainer.fit(&mut model, (), ())?;

    let mut e = Expect::new();
    e.fit_prologue();
    e.push("val_dataloader");
    e.eval("validation", &[1], true);
    e.all(&["train_dataloader", "on_train_start", "on_epoch_start", "on_train_epoch_start"]);
    e.train_batch(0).train_batch(1);
    // With two of ten batches allowed, the epoch ends at batch 1: validation over all 3 batches.
    e.eval("validation", &[3], true);
    e.all(&[
        "training_epoch_end:2",
        "on_train_epoch_end",
        "on_epoch_end",
        "on_train_end",
        "on_fit_end",
        "teardown:fit",
    ]);
    assert_journal(&calls, &e);
    Ok(())
}

#[test]
fn validate_test_and_predict_run_hooks_in_order_with_autograd_off() -> lit::Result<()> {
    let (calls, mut model) = journal();
    let mut trainer = Trainer::builder().accelerator("cpu").limit_test_batches(2).build()?;

    let val = trainer.validate(&mut model, Batches::new(regression_batches(2)))?;
    assert_eq!(val.len(), 1);
    assert!(val[0].contains_key("val_loss"), "validate returns the logged metrics: {val:?}");

    let two_loaders = vec![Batches::new(regression_batches(3)), Batches::new(regression_batches(1))];
    let test = trainer.test(&mut model, two_loaders)?;
    assert_eq!(test.len(), 2, "one metrics map per test loader");
    assert!(test[0].contains_key("test_loss/dataloader_idx_0") && !test[0].contains_key("test_loss/dataloader_idx_1"));
    assert!(test[1].contains_key("test_loss/dataloader_idx_1"));

    let predictions = trainer.predict(&mut model, Batches::new(regression_batches(2)))?;
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0].size(), [4, 1]);

    let mut e = Expect::new();
    e.training = false; // outside fit, the module starts in evaluation mode
    e.all(&["prepare_data", "setup:validate", "on_post_move_to_device"]);
    e.eval("validation", &[2], true).push("teardown:validate");
    e.training = false;
    e.all(&["prepare_data", "setup:test", "on_post_move_to_device"]);
    e.eval("test", &[2, 1], true).push("teardown:test");
    e.training = false;
    e.all(&["prepare_data", "setup:predict", "on_post_move_to_device", "on_predict_model_eval"]);
    e.grad = false;
    e.all(&["on_predict_start", "on_predict_epoch_start"]);
    for i in 0..2 {
        e.push(format!("on_predict_batch_start:{i}/0")).transfer();
        e.push(format!("predict_step:{i}/0")).push(format!("on_predict_batch_end:{i}/0"));
    }
    e.all(&["on_predict_epoch_end", "on_predict_end"]);
    e.grad = true;
    e.push("teardown:predict");
    assert_journal(&calls, &e);
    Ok(())
}

#[test]
fn callback_hooks_run_before_the_modules() -> lit::Result<()> {
    struct Cb(Journal);
    impl Callback for Cb {
        fn on_fit_start(&mut self, _: &mut Ctx) -> Result<()> {
            self.0.lock().unwrap().push(Call { hook: "cb.on_fit_start".into(), training: true, grad: true });
            Ok(())
        }
        fn on_sanity_check_start(&mut self, cx: &mut Ctx) -> Result<()> {
            assert_eq!(cx.running_stage(), RunningStage::SanityChecking);
            self.0.lock().unwrap().push(Call { hook: "cb.on_sanity_check_start".into(), training: true, grad: true });
            Ok(())
        }
        fn on_sanity_check_end(&mut self, cx: &mut Ctx) -> Result<()> {
            assert!(cx.sanity_checking());
            self.0.lock().unwrap().push(Call { hook: "cb.on_sanity_check_end".into(), training: true, grad: true });
            Ok(())
        }
        fn on_validation_end(&mut self, cx: &mut Ctx) -> Result<()> {
            let sanity = cx.sanity_checking();
            let has_val_loss = cx.callback_metrics().contains_key("val_loss");
            let hook = format!("cb.on_validation_end:sanity={sanity}:val_loss={has_val_loss}");
            self.0.lock().unwrap().push(Call { hook, training: false, grad: false });
            Ok(())
        }
    }
    let (calls, mut model) = journal();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).callback(Cb(calls.clone())).build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(2)), Batches::new(regression_batches(2)))?;
    let hooks: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.hook.clone())
        .filter(|h| {
            h.starts_with("cb.") || ["on_fit_start", "on_validation_start", "on_validation_end"].contains(&h.as_str())
        })
        .collect();
    assert_eq!(
        hooks,
        [
            "cb.on_fit_start",
            "on_fit_start",
            "cb.on_sanity_check_start",
            "on_validation_start",
            "cb.on_validation_end:sanity=true:val_loss=true",
            "on_validation_end",
            "cb.on_sanity_check_end",
            "on_validation_start",
            "cb.on_validation_end:sanity=false:val_loss=true",
            "on_validation_end",
        ]
    );
    // The sanity check's metrics are discarded; the real validation's remain.
    assert!(trainer.callback_metrics().contains_key("val_loss"));
    Ok(())
}
