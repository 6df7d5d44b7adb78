//! Trainer configuration, logging semantics and errors from runs.

use lit::data::Batches;
use lit::prelude::*;
use lit::{ConfigError, Error, TrainerConfig};

use crate::common::regression_batches;

fn build_error(builder: lit::TrainerBuilder) -> String {
    match builder.build() {
        Err(e @ Error::Config(_)) => e.to_string(),
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("expected a configuration error"),
    }
}

#[test]
fn bad_configurations_are_errors_at_build() {
    let e = build_error(Trainer::builder().max_epochs(0).max_steps(0));
    assert!(e.contains("max_epochs and max_steps are both 0"), "{e}");
    let e = build_error(Trainer::builder().limit_train_batches(1.5));
    assert!(e.contains("`limit_train_batches`") && e.contains("got 1.5"), "{e}");
    let e = build_error(Trainer::builder().limit_val_batches(-2));
    assert!(e.contains("`limit_val_batches`"), "{e}");
    let e = build_error(Trainer::builder().val_check_interval(0));
    assert!(e.contains("`val_check_interval`"), "{e}");
    let e = build_error(Trainer::builder().check_val_every_n_epoch(0));
    assert!(e.contains("`check_val_every_n_epoch`"), "{e}");
    let e = build_error(Trainer::builder().min_epochs(5).max_epochs(2));
    assert!(e.contains("min_epochs (5) is larger than max_epochs (2)"), "{e}");
    let e = build_error(Trainer::builder().accelerator("tpu"));
    assert!(e.contains("unknown accelerator \"tpu\""), "{e}");
    let e = build_error(Trainer::builder().gradient_clip_val(-1.0));
    assert!(e.contains("`gradient_clip_val`"), "{e}");
    let e = build_error(Trainer::builder().num_sanity_val_steps(-3));
    assert!(e.contains("`num_sanity_val_steps`"), "{e}");
}

#[test]
fn cuda_without_a_gpu_is_an_error_at_build() {
    if lit::tch::Cuda::is_available() {
        return; // this check is about machines without CUDA
    }
    for accelerator in ["cuda", "gpu", "cuda:0"] {
        let e = build_error(Trainer::builder().accelerator(accelerator));
        assert!(e.contains(&format!("accelerator `{accelerator}` is not available")), "{e}");
    }
    let trainer = Trainer::builder().accelerator("auto").build().unwrap();
    assert_eq!(trainer.device(), Device::Cpu);
}

#[test]
fn the_config_deserialises_and_rejects_unknown_keys() {
    let config: TrainerConfig =
        serde_json::from_str(r#"{"max_epochs": 3, "limit_train_batches": 0.5, "limit_val_batches": 10}"#).unwrap();
    assert_eq!(config.max_epochs, Some(3));
    assert_eq!(config.limit_train_batches, lit::Limit::Fraction(0.5));
    assert_eq!(config.limit_val_batches, lit::Limit::Batches(10));
    assert_eq!(config.num_sanity_val_steps, 2);
    let e = serde_json::from_str::<TrainerConfig>(r#"{"max_epoch": 3}"#).unwrap_err().to_string();
    assert!(e.contains("unknown field `max_epoch`"), "{e}");
    let _: ConfigError = ConfigError::Unavailable("x".into(), "y".into());
}

/// A module that logs chosen values so that reductions can be checked exactly.
struct Logs {
    vs: nn::VarStore,
    w: Tensor,
    fail_at: Option<usize>,
    no_optimizer: bool,
}

impl Logs {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[1]);
        Logs { vs, w, fail_at: None, no_optimizer: false }
    }
}

impl LightningModule for Logs {
    type TrainBatch = (Tensor, Tensor);
    type ValBatch = (Tensor, Tensor);
    type TestBatch = Tensor;
    type PredictBatch = Tensor;
    type Prediction = Tensor;
    const HOOKS: Hooks = Hooks { validation_step: true, test_step: true, ..Hooks::TRAINING_ONLY };

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
    fn training_step(&mut self, (x, _): (Tensor, Tensor), i: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        if self.fail_at == Some(i) {
            return Err(Error::msg(format!("batch {i} is cursed")));
        }
        cx.log("idx", i as f64).on_epoch(true).reduce_fx(Reduce::Sum);
        cx.log("idx_max", i as f64).on_step(false).on_epoch(true).reduce_fx(Reduce::Max);
        if i == 1 {
            return Ok(None); // skip this batch
        }
        Ok(Some((&self.w * x.sum(Kind::Float)).sum(Kind::Float).into()))
    }
    fn validation_step(&mut self, _: (Tensor, Tensor), i: usize, _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        // Batch i has i + 1 samples: the epoch mean is weighted by them.
        cx.log("val_value", (i * 10) as f64).batch_size(i + 1).prog_bar(true);
        Ok(None)
    }
    fn test_step(&mut self, x: Tensor, _: usize, _: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        cx.log("bad", &x);
        Ok(None)
    }
    fn configure_optimizers(&mut self, _: &mut Ctx) -> Result<Optimizers> {
        Ok(if self.no_optimizer { Optimizers::none() } else { Sgd::new(0.1).into() })
    }
}

#[test]
fn logged_values_reduce_as_lightning_does() -> lit::Result<()> {
    let mut model = Logs::new();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).num_sanity_val_steps(0).build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(4)), Batches::new(regression_batches(3)))?;
    let m = trainer.callback_metrics();
    assert_eq!(m["idx_step"], 3.0, "the last step's value");
    assert_eq!(m["idx_epoch"], 0.0 + 1.0 + 2.0 + 3.0, "summed over the epoch");
    assert_eq!(m["idx"], 6.0, "the plain key holds the latest value");
    assert_eq!(m["idx_max"], 3.0);
    assert!(!m.contains_key("idx_max_step"), "on_step off: no step key");
    // Weighted mean: (0*1 + 10*2 + 20*3) / (1 + 2 + 3).
    assert!((m["val_value"] - 80.0 / 6.0).abs() < 1e-9, "{}", m["val_value"]);
    assert!(trainer.progress_bar_metrics().contains_key("val_value"));
    // Batch 1 returned None: three optimizer steps for four batches.
    assert_eq!(trainer.global_step(), 3);
    Ok(())
}

#[test]
fn errors_from_hooks_and_logging_end_the_run() -> lit::Result<()> {
    let mut model = Logs::new();
    model.fail_at = Some(2);
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build()?;
    let e = trainer.fit(&mut model, Batches::new(regression_batches(4)), ()).unwrap_err();
    assert!(e.to_string().contains("batch 2 is cursed"), "{e}");

    let mut model = Logs::new();
    let e = trainer.test(&mut model, Batches::new(vec![Tensor::zeros([3], (Kind::Float, Device::Cpu))])).unwrap_err();
    assert!(e.to_string().contains("`bad` must be a scalar, got a tensor of shape [3]"), "{e}");

    // No optimizer: Lightning warns and trains nothing.
    let mut model = Logs::new();
    model.no_optimizer = true;
    let before = model.w.copy();
    let mut fresh = Trainer::builder().accelerator("cpu").max_epochs(1).build()?;
    fresh.fit(&mut model, Batches::new(regression_batches(2)), ())?;
    assert!(model.w.equal(&before), "nothing was updated");
    assert_eq!(fresh.global_step(), 0);

    let mut model = Logs::new();
    let e = trainer.fit(&mut model, (), ()).unwrap_err();
    assert!(e.to_string().contains("no training data") && e.to_string().contains("train_dataloader"), "{e}");
    let e =
        trainer.predict(&mut model, Batches::new(vec![Tensor::zeros([1], (Kind::Float, Device::Cpu))])).unwrap_err();
    assert!(e.to_string().contains("`predict_step`"), "{e}");
    Ok(())
}

#[test]
fn a_failing_loader_fails_fit() -> lit::Result<()> {
    struct Broken;
    impl lit::data::Dataset for Broken {
        type Item = (Tensor, Tensor);
        fn len(&self) -> usize {
            8
        }
        fn get(&self, i: usize) -> lit::Result<(Tensor, Tensor)> {
            if i == 5 {
                panic!("disk on fire");
            }
            Ok((Tensor::ones([2], (Kind::Float, Device::Cpu)), Tensor::ones([1], (Kind::Float, Device::Cpu))))
        }
    }
    let mut model = Logs::new();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build()?;
    let loader = DataLoader::new(Broken).batch_size(2).num_workers(2);
    let e = trainer.fit(&mut model, loader, ()).unwrap_err().to_string();
    assert!(e.contains("disk on fire") && e.contains("batch 2"), "{e}");
    Ok(())
}

#[test]
fn a_stop_request_ends_training_after_min_epochs() -> lit::Result<()> {
    struct StopNow;
    impl Callback for StopNow {
        fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> Result<()> {
            cx.request_stop();
            Ok(())
        }
    }
    let mut model = Logs::new();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(10).min_epochs(3).callback(StopNow).build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(4)), ())?;
    assert_eq!(trainer.current_epoch(), 3, "stopped as soon as min_epochs allowed");
    Ok(())
}
