//! Lightning's semantics, checked with assertions ported from Lightning's own test suite
//! (`Lightning-AI/pytorch-lightning`, `tests/tests_pytorch/`); each test names the test it ports.

use lit::callbacks::EarlyStopping;
use lit::data::Batches;
use lit::prelude::*;

use crate::common::{quiet_trainer, regression_batches, temp_dir};

/// A module whose loss is always 0 (so early stopping sees no improvement), counting its
/// training steps and the epochs in which a stop had been requested.
#[lightning_module]
struct Flat {
    vs: nn::VarStore,
    w: Tensor,
    steps: usize,
    stop_seen_in_epochs: Vec<usize>,
}

#[lightning_module]
impl Flat {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        Flat { vs, w, steps: 0, stop_seen_in_epochs: Vec::new() }
    }

    fn training_step(&mut self, (x, _): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let loss = x.matmul(&self.w).sum(Kind::Float) * 0.0;
        cx.log("loss", &loss);
        self.steps += 1;
        if cx.should_stop() && !self.stop_seen_in_epochs.contains(&cx.current_epoch()) {
            self.stop_seen_in_epochs.push(cx.current_epoch());
        }
        loss
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

/// Ports `tests_pytorch/trainer/test_trainer.py::test_trainer_min_steps_and_min_epochs_not_reached`:
/// early stopping triggers at the end of epoch 1 (patience 0, a flat loss), yet `min_epochs = 5`
/// epochs of 2 batches all run to their end: `training_step_invoked == min_epochs * 2`, and the
/// stop is visible (`trainer.should_stop`) from epoch 2 on.
#[test]
fn min_epochs_holds_against_early_stopping() -> lit::Result<()> {
    let mut model = Flat::new();
    let mut trainer = quiet_trainer(&temp_dir("min-epochs-early-stop"))
        .min_epochs(5)
        .limit_train_batches(2)
        .limit_val_batches(0)
        .callback(EarlyStopping::new("loss").patience(0))
        .build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(4)), ())?;
    assert_eq!(model.steps, 5 * 2, "training_step_invoked == min_epochs * 2");
    assert_eq!(model.stop_seen_in_epochs, [2, 3, 4], "should_stop from epoch 2 on");
    assert_eq!(trainer.current_epoch(), 5);
    Ok(())
}

/// A callback that requests a stop on the first training batch of every epoch.
struct StopAtOnce;

impl Callback for StopAtOnce {
    fn on_train_batch_start(&mut self, _batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        cx.request_stop();
        Ok(())
    }
}

/// Ports the rule `tests_pytorch/loops/test_training_loop.py::test_should_stop_early_stopping_conditions_not_met`
/// checks on `epoch_loop.done` and `_can_stop_early`: with `should_stop` set, an epoch ends early
/// only once `min_epochs` epochs are *completed* (the one in progress does not count) and
/// `min_steps` steps are taken, so the last required epoch runs to its end. End to end: a stop
/// requested on every epoch's first batch.
#[test]
fn a_stop_waits_for_min_epochs_and_min_steps_to_be_met() -> lit::Result<()> {
    for (min_epochs, min_steps, batches, expected_steps) in
        [(Some(2), None, 3, 6), (Some(3), Some(10), 5, 15), (None, Some(4), 3, 4), (Some(1), None, 3, 3)]
    {
        let mut model = Flat::new();
        let mut builder = quiet_trainer(&temp_dir("min-epochs-steps")).max_epochs(10).callback(StopAtOnce);
        if let Some(m) = min_epochs {
            builder = builder.min_epochs(m);
        }
        if let Some(m) = min_steps {
            builder = builder.min_steps(m);
        }
        let mut trainer = builder.build()?;
        trainer.fit(&mut model, Batches::new(regression_batches(batches)), ())?;
        assert_eq!(
            trainer.global_step(),
            expected_steps,
            "min_epochs {min_epochs:?}, min_steps {min_steps:?}, {batches} batches an epoch"
        );
    }
    Ok(())
}
