//! Precision: parsing and checking at `build()`, float64 runs, autocast's extent, the gradient
//! scaler, and (on a CUDA machine) mixed precision on the GPU.

use lit::amp::{AutocastGuard, GradScaler, Precision};
use lit::optim::OptimizerConfig;
use lit::prelude::*;

use crate::common::{quiet_trainer, regression_batches, temp_dir};

#[lightning_module]
struct Probe {
    vs: nn::VarStore,
    fc: nn::Linear,
    seen: Vec<String>,
}

#[lightning_module]
impl Probe {
    fn new() -> Self {
        seed_everything(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", 2, 1, Default::default());
        Probe { vs, fc, seen: Vec::new() }
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let out = x.apply(&self.fc);
        self.seen.push(format!(
            "step x={:?} out={:?} autocast={} precision={} amp={}",
            x.kind(),
            out.kind(),
            AutocastGuard::is_enabled(cx.device().is_cuda()),
            cx.precision(),
            cx.use_amp()
        ));
        out.to_kind(y.kind()).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn on_after_backward(&mut self, cx: &mut Ctx) {
        self.seen.push(format!("backward autocast={}", AutocastGuard::is_enabled(cx.device().is_cuda())));
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.05).into()
    }
}

fn trainer(root: &std::path::Path, precision: &str) -> lit::Result<Trainer> {
    quiet_trainer(root).accelerator("cpu").precision(precision).max_epochs(1).enable_model_summary(false).build()
}

#[test]
fn precision_is_checked_at_build() {
    let root = temp_dir("precision-build");
    let message = trainer(&root, "16-mixed").err().unwrap().to_string();
    assert!(message.contains("precision") && message.contains("CUDA") && message.contains("bf16-mixed"), "{message}");
    let message = trainer(&root, "fp8").err().unwrap().to_string();
    assert!(message.contains("unknown precision \"fp8\"") && message.contains("bf16-mixed"), "{message}");
    assert_eq!("64".parse::<Precision>().unwrap(), Precision::F64);
    assert_eq!(Precision::Bf16Mixed.to_string(), "bf16-mixed");
}

#[test]
fn float64_runs_convert_the_variables_and_the_batches() -> lit::Result<()> {
    let root = temp_dir("precision-64");
    let mut model = Probe::new();
    trainer(&root, "64")?.fit(&mut model, Batches::new(regression_batches(3)), ())?;
    assert!(model.vs.variables().values().all(|v| v.kind() == Kind::Double));
    assert_eq!(model.seen[0], "step x=Double out=Double autocast=false precision=64-true amp=false");
    Ok(())
}

#[test]
fn autocast_covers_the_step_but_not_backward() -> lit::Result<()> {
    let root = temp_dir("precision-autocast");
    let mut model = Probe::new();
    trainer(&root, "bf16-mixed")?.fit(&mut model, Batches::new(regression_batches(2)), ())?;
    assert_eq!(
        model.seen,
        [
            "step x=Float out=BFloat16 autocast=true precision=bf16-mixed amp=true",
            "backward autocast=false",
            "step x=Float out=BFloat16 autocast=true precision=bf16-mixed amp=true",
            "backward autocast=false",
        ]
    );
    assert!(!AutocastGuard::is_enabled(false), "autocast left on after fit");
    assert!(model.vs.variables().values().all(|v| v.kind() == Kind::Float));
    Ok(())
}

/// A variable store with one parameter `w = [1, 2]` and an SGD optimizer (lr 1) over it.
fn sgd_over_one_parameter() -> (nn::VarStore, Tensor, Box<dyn Optimizer>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]));
    let opt = Sgd::new(1.0).build(&vs).unwrap();
    (vs, w, opt)
}

fn set_grad(w: &Tensor, values: &[f32]) {
    let mut g = w.grad();
    if !g.defined() {
        (w * 0.0).sum(Kind::Float).backward();
        g = w.grad();
    }
    lit::tch::no_grad(|| g.copy_(&Tensor::from_slice(values)));
}

#[test]
fn the_grad_scaler_skips_steps_with_inf_gradients_and_lowers_the_scale() -> lit::Result<()> {
    let (_vs, w, mut opt) = sgd_over_one_parameter();
    let mut scaler = GradScaler::with_options(Device::Cpu, 1024.0, 2.0, 0.5, 2);
    assert_eq!(scaler.scale_loss(&Tensor::from(3.0f32)).double_value(&[]), 3072.0);

    // An infinite gradient: no step, the scale halves.
    set_grad(&w, &[f32::INFINITY, 1.0]);
    assert!(!scaler.step(&mut *opt)?);
    scaler.update()?;
    assert_eq!(Vec::<f32>::try_from(&w)?, [1.0, 2.0]);
    assert_eq!(scaler.scale(), 512.0);
    assert_eq!(scaler.skipped_steps(), 1);

    // NaN too.
    set_grad(&w, &[0.0, f32::NAN]);
    assert!(!scaler.step(&mut *opt)?);
    scaler.update()?;
    assert_eq!(scaler.scale(), 256.0);

    // Finite gradients are divided by the scale before the step; after `growth_interval` (2)
    // clean steps the scale doubles.
    set_grad(&w, &[256.0, 512.0]);
    assert!(scaler.step(&mut *opt)?);
    scaler.update()?;
    assert_eq!(Vec::<f32>::try_from(&w)?, [0.0, 0.0]);
    assert_eq!(scaler.scale(), 256.0);
    set_grad(&w, &[0.0, 0.0]);
    assert!(scaler.step(&mut *opt)?);
    scaler.update()?;
    assert_eq!(scaler.scale(), 512.0);
    assert_eq!(scaler.skipped_steps(), 2);
    Ok(())
}

#[test]
fn the_grad_scaler_unscales_once_before_clipping() -> lit::Result<()> {
    let (_vs, w, mut opt) = sgd_over_one_parameter();
    let mut scaler = GradScaler::with_options(Device::Cpu, 4.0, 2.0, 0.5, 100);
    set_grad(&w, &[4.0, 8.0]);
    scaler.unscale(&mut *opt)?;
    assert_eq!(Vec::<f32>::try_from(w.grad())?, [1.0, 2.0]);
    // `step` after an explicit `unscale` does not divide again.
    assert!(scaler.step(&mut *opt)?);
    assert_eq!(Vec::<f32>::try_from(&w)?, [0.0, 0.0]);
    Ok(())
}

/// CUDA runs: skipped without a CUDA device, unless `LIT_TEST_CUDA=1` demands one.
fn cuda_or_skip(test: &str) -> bool {
    if lit::tch::Cuda::is_available() {
        return true;
    }
    assert!(std::env::var("LIT_TEST_CUDA").is_err(), "LIT_TEST_CUDA is set but libtorch finds no CUDA device");
    eprintln!("{test}: skipped (no CUDA device; set LIT_TEST_CUDA=1 on a GPU machine to require it)");
    false
}

fn cuda_fit(precision: &str, root: &std::path::Path) -> lit::Result<(Probe, Trainer)> {
    let mut model = Probe::new();
    let mut trainer = Trainer::builder()
        .accelerator("cuda")
        .precision(precision)
        .max_epochs(20)
        .default_root_dir(root)
        .enable_progress_bar(false)
        .logger(false)
        .build()?;
    trainer.fit(&mut model, Batches::new(regression_batches(8)), ())?;
    Ok((model, trainer))
}

#[test]
fn cuda_trains_at_every_precision() -> lit::Result<()> {
    if !cuda_or_skip("cuda_trains_at_every_precision") {
        return Ok(());
    }
    for (precision, out) in [("32-true", "Float"), ("bf16-mixed", "BFloat16"), ("16-mixed", "Half")] {
        let root = temp_dir(&format!("cuda-{precision}"));
        let (model, trainer) = cuda_fit(precision, &root)?;
        assert!(model.vs.device().is_cuda());
        assert!(model.seen[0].contains(&format!("out={out} autocast={}", precision != "32-true")), "{}", model.seen[0]);
        assert_eq!(trainer.global_step(), 20 * 8);
        // The weights stay float32 and finite, and fit the regression (y = 0.5 * sum(x)).
        assert!(model.vs.variables().values().all(|v| v.kind() == Kind::Float));
        let w: Vec<f32> = Vec::try_from(model.fc.ws.to_device(Device::Cpu).flatten(0, -1))?;
        assert!(w.iter().all(|v| (v - 0.5).abs() < 0.1), "{precision}: weights {w:?}");
    }
    Ok(())
}

#[test]
fn cuda_16_mixed_checkpoints_hold_the_scaler_state() -> lit::Result<()> {
    if !cuda_or_skip("cuda_16_mixed_checkpoints_hold_the_scaler_state") {
        return Ok(());
    }
    let root = temp_dir("cuda-scaler");
    let (mut model, mut trainer) = cuda_fit("16-mixed", &root)?;
    let path = root.join("scaler.ckpt");
    trainer.save_checkpoint(&path, &mut model)?;
    let ckpt = lit::checkpoint::Checkpoint::load(&path)?;
    let scale = ckpt.tensors().get("__lit__/grad_scaler/scale").expect("the checkpoint holds the scale");
    assert!(scale.double_value(&[0]) > 0.0);
    assert!(ckpt.tensors().contains_key("__lit__/grad_scaler/growth_tracker"));
    Ok(())
}
