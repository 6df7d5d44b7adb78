//! Optimizers and schedulers against trajectories recorded from `torch.optim`
//! (`tests/data/optim_reference.py`), saved state, accumulation, clipping, several optimizers,
//! manual optimization and schedulers driven by the Trainer.

use std::sync::{Arc, Mutex};

use lit::data::Batches;
use lit::optim::{
    CosineAnnealingLr, ExponentialLr, GroupOptions, Interval, LambdaLr, LinearLr, MultiStepLr, OneCycleLr,
    OptimizerConfig, PlateauMode, ReduceLrOnPlateau, SchedulerConfig, SequentialLr, StepLr,
};
use lit::prelude::*;
use serde_json::Value;

use crate::common::quiet;

fn reference() -> Value {
    let path = crate::common::repo_root().join("tests/data/optim_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// The reference problem: parameters `w` [3, 4] and `b` [4] in a VarStore, inputs and targets.
fn problem() -> (nn::VarStore, Tensor, Tensor, Tensor, Tensor) {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().add("w", (Tensor::arange(12, F64).view([3, 4]).sin() * 0.5).detach(), true);
    let b = vs.root().add("b", (Tensor::arange(4, F64).cos() * 0.1).detach(), true);
    let r = Tensor::arange(5, F64).view([5, 1]);
    let x = (&r * 0.7 + Tensor::arange(3, F64).view([1, 3])).sin();
    let y = (&r + Tensor::arange(4, F64).view([1, 4]) * 0.3).cos();
    (vs, w, b, x, y)
}

fn loss(w: &Tensor, b: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    (x.matmul(w) + b - y).square().mean(Kind::Double) + w.pow_tensor_scalar(4).sum(Kind::Double) * 0.1
}

fn run(config: &dyn OptimizerConfig, steps: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (vs, w, b, x, y) = problem();
    let mut opt = config.build(&vs).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        opt.zero_grad();
        let l = loss(&w, &b, &x, &y);
        l.backward();
        opt.step();
        losses.push(l.double_value(&[]));
    }
    (losses, Vec::<f64>::try_from(w.flatten(0, -1)).unwrap(), Vec::<f64>::try_from(&b).unwrap())
}

#[test]
fn optimizers_follow_torch_optim() {
    let reference = reference();
    let cases: Vec<(&str, Box<dyn OptimizerConfig>)> = vec![
        ("sgd", Box::new(Sgd::new(0.1))),
        ("sgd_momentum_dampening", Box::new(Sgd::new(0.05).momentum(0.9).dampening(0.1))),
        ("sgd_nesterov_wd", Box::new(Sgd::new(0.05).momentum(0.9).nesterov(true).weight_decay(0.01))),
        ("adam", Box::new(Adam::new(0.01))),
        ("adam_wd_amsgrad", Box::new(Adam::new(0.02).betas(0.8, 0.99).weight_decay(0.01).amsgrad(true))),
        ("adamw", Box::new(AdamW::new(0.01).weight_decay(0.1))),
        ("rmsprop", Box::new(RmsProp::new(0.01))),
        ("rmsprop_centered_momentum_wd", Box::new(RmsProp::new(0.01).momentum(0.9).centered(true).weight_decay(0.01))),
        (
            "adamw_groups",
            Box::new(
                AdamW::new(0.01).weight_decay(0.1).group(|n| n == "b", GroupOptions::new().lr(0.05).weight_decay(0.0)),
            ),
        ),
    ];
    for (name, config) in cases {
        let expected = &reference["optimizers"][name];
        let (losses, w, b) = run(&*config, 20);
        let (dl, dw, db) = (
            rel(&losses, &floats(&expected["losses"])),
            rel(&w, &floats(&expected["w"])),
            rel(&b, &floats(&expected["b"])),
        );
        assert!(dl <= 1e-5 && dw <= 1e-5 && db <= 1e-5, "{name}: relative differences loss {dl:e}, w {dw:e}, b {db:e}");
    }
}

#[test]
fn optimizer_state_round_trips() {
    let (vs, w, b, x, y) = problem();
    let mut opt = Adam::new(0.01).build(&vs).unwrap();
    let step = |opt: &mut Box<dyn Optimizer>| {
        opt.zero_grad();
        loss(&w, &b, &x, &y).backward();
        opt.step();
    };
    for _ in 0..10 {
        step(&mut opt);
    }
    let state = opt.state_dict();
    assert_eq!(state.meta["step"], 10);
    assert!(state.tensors.contains_key("exp_avg/w") && state.tensors.contains_key("exp_avg_sq/b"));
    // A new optimizer restored from the state continues exactly as the first one does.
    let mut resumed = Adam::new(0.01).build(&vs).unwrap();
    resumed.load_state_dict(&state).unwrap();
    let snapshot = (w.copy(), b.copy());
    for _ in 0..10 {
        step(&mut opt);
    }
    let continued = (w.copy(), b.copy());
    tch_no_grad_copy(&w, &snapshot.0);
    tch_no_grad_copy(&b, &snapshot.1);
    for _ in 0..10 {
        step(&mut resumed);
    }
    assert!(w.equal(&continued.0) && b.equal(&continued.1), "resumed optimizer diverged");

    // A state for other parameters is refused.
    let other = nn::VarStore::new(Device::Cpu);
    let _ = other.root().add("w", Tensor::zeros([2, 2], F64), true);
    let mut wrong = Adam::new(0.01).build(&other).unwrap();
    let e = wrong.load_state_dict(&state).expect_err("a state for other parameters").to_string();
    assert!(e.contains("shape") || e.contains("does not have"), "{e}");
}

fn tch_no_grad_copy(dst: &Tensor, src: &Tensor) {
    lit::tch::no_grad(|| {
        let mut d = dst.shallow_clone();
        d.copy_(src);
    });
}

fn lrs(config: impl Into<SchedulerConfig>, steps: usize) -> Vec<f64> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().add("p", Tensor::zeros([1], F64), true);
    let mut opt = Sgd::new(0.1).build(&vs).unwrap();
    let mut sched = config.into().into_scheduler();
    sched.attach(&mut *opt);
    let mut lrs = vec![opt.lr()];
    for _ in 0..steps {
        sched.step(&mut *opt, None).unwrap();
        lrs.push(opt.lr());
    }
    lrs
}

#[test]
fn schedulers_follow_torch_lr_scheduler() {
    let reference = reference();
    let expected = |name: &str| floats(&reference["schedulers"][name]);
    let cases: Vec<(&str, Vec<f64>)> = vec![
        ("step", lrs(StepLr::new(5, 0.5), 29)),
        ("multistep", lrs(MultiStepLr::new([3, 7, 12], 0.3), 29)),
        ("exponential", lrs(ExponentialLr::new(0.9), 29)),
        ("cosine", lrs(CosineAnnealingLr::new(10, 0.001), 29)),
        ("linear", lrs(LinearLr::new(0.1, 1.0, 5), 29)),
        ("lambda", lrs(LambdaLr::new(|e| 0.95f64.powi(e as i32)), 29)),
        ("onecycle", lrs(OneCycleLr::new(1.0, 30), 29)),
        ("sequential", lrs(SequentialLr::new(LinearLr::new(0.1, 1.0, 5)).then(5, CosineAnnealingLr::new(10, 0.0)), 29)),
    ];
    for (name, got) in cases {
        let want = expected(name);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-8), "{name} step {i}: lit {g}, torch {w}");
        }
        assert_eq!(got.len(), want.len(), "{name}");
    }

    let plateau = &reference["schedulers"]["plateau"];
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().add("p", Tensor::zeros([1], F64), true);
    let mut opt = Sgd::new(0.1).build(&vs).unwrap();
    let mut sched = SchedulerConfig::from(ReduceLrOnPlateau::new(PlateauMode::Min, 0.5, 2)).into_scheduler();
    sched.attach(&mut *opt);
    let got: Vec<f64> = floats(&plateau["metrics"])
        .into_iter()
        .map(|m| {
            sched.step(&mut *opt, Some(m)).unwrap();
            opt.lr()
        })
        .collect();
    assert_eq!(got, floats(&plateau["lrs"]));
}

type B = (Tensor, Tensor);

/// A linear model, its optimizer chosen by the test.
#[lightning_module]
struct Linear {
    vs: nn::VarStore,
    layer: nn::Linear,
    make: fn() -> Optimizers,
    grad_norms: Vec<f64>,
    grad_max: Vec<f64>,
}

#[lightning_module]
impl Linear {
    fn build(make: fn() -> Optimizers) -> Self {
        lit::seed_everything(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 3, 2, Default::default());
        Linear { vs, layer, make, grad_norms: Vec::new(), grad_max: Vec::new() }
    }

    fn training_step(&mut self, (x, y): B, cx: &mut Ctx) -> Tensor {
        let loss = self.layer.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("train_loss", &loss);
        loss
    }

    fn validation_step(&mut self, (x, y): B, cx: &mut Ctx) {
        cx.log("val_loss", self.layer.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean));
    }

    fn optimizer_step(&mut self, optimizer: &mut dyn Optimizer) {
        let grads: Vec<Tensor> = self.vs.trainable_variables().iter().map(Tensor::grad).collect();
        let norm = grads.iter().map(|g| g.square().sum(Kind::Float).double_value(&[])).sum::<f64>().sqrt();
        let max = grads.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
        self.grad_norms.push(norm);
        self.grad_max.push(max);
        optimizer.step();
    }

    fn configure_optimizers(&self) -> Optimizers {
        (self.make)()
    }
}

fn data(n: i64, batch: i64) -> Vec<B> {
    let x = Tensor::arange(n * 3, (Kind::Float, Device::Cpu)).view([n, 3]).sin();
    let y = Tensor::arange(n * 2, (Kind::Float, Device::Cpu)).view([n, 2]).cos() * 3.0;
    (0..n / batch).map(|i| (x.narrow(0, i * batch, batch), y.narrow(0, i * batch, batch))).collect()
}

fn weights(m: &Linear) -> Tensor {
    Tensor::cat(&[m.layer.ws.flatten(0, -1), m.layer.bs.as_ref().unwrap().shallow_clone()], 0)
}

#[test]
fn accumulating_n_batches_equals_one_batch_n_times_larger() -> lit::Result<()> {
    let sgd = || Optimizers::from(Sgd::new(0.1));
    let mut small = Linear::build(sgd);
    let mut big = Linear::build(sgd);
    // The same start: tests running in parallel draw from libtorch's global generator too, so
    // the seed in `build` alone does not guarantee it.
    big.vs.copy(&small.vs)?;
    assert!(weights(&small).equal(&weights(&big)));
    quiet().max_epochs(3).accumulate_grad_batches(4).build()?.fit(&mut small, Batches::new(data(8, 2)), ())?;
    quiet().max_epochs(3).build()?.fit(&mut big, Batches::new(data(8, 8)), ())?;
    let diff = (weights(&small) - weights(&big)).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "weights differ by {diff}");
    assert_eq!(small.grad_norms.len(), 3, "one step per window of 4 batches");

    // An epoch of 5 batches with windows of 2: the last, partial window is stepped too.
    let mut odd = Linear::build(sgd);
    let mut trainer = quiet().max_epochs(1).accumulate_grad_batches(2).build()?;
    trainer.fit(&mut odd, Batches::new(data(10, 2)), ())?;
    assert_eq!((odd.grad_norms.len(), trainer.global_step()), (3, 3));
    Ok(())
}

#[test]
fn clipping_bounds_the_gradients() -> lit::Result<()> {
    let sgd = || Optimizers::from(Sgd::new(0.01));
    let mut unclipped = Linear::build(sgd);
    quiet().max_epochs(1).build()?.fit(&mut unclipped, Batches::new(data(8, 2)), ())?;
    assert!(
        unclipped.grad_norms.iter().any(|&n| n > 0.5),
        "the test needs large gradients: {:?}",
        unclipped.grad_norms
    );

    let mut by_norm = Linear::build(sgd);
    quiet().max_epochs(1).gradient_clip_val(0.5).build()?.fit(&mut by_norm, Batches::new(data(8, 2)), ())?;
    assert!(by_norm.grad_norms.iter().all(|&n| n <= 0.5 + 1e-5), "{:?}", by_norm.grad_norms);

    let mut by_value = Linear::build(sgd);
    quiet()
        .max_epochs(1)
        .gradient_clip_val(0.05)
        .gradient_clip_algorithm(lit::GradientClipAlgorithm::Value)
        .build()?
        .fit(&mut by_value, Batches::new(data(8, 2)), ())?;
    assert!(by_value.grad_max.iter().all(|&m| m <= 0.05 + 1e-7), "{:?}", by_value.grad_max);
    Ok(())
}

#[test]
fn schedulers_step_by_interval_and_frequency() -> lit::Result<()> {
    let make = || {
        Optimizers::from(Sgd::new(0.1))
            .scheduler(SchedulerConfig::new(StepLr::new(1, 0.5)).interval(Interval::Step).frequency(2))
    };
    let mut model = Linear::build(make);
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut model, Batches::new(data(10, 2)), ())?;
    // Five steps, the scheduler stepping after steps 2 and 4.
    let lr = Arc::new(Mutex::new(0.0));
    struct ReadLr(Arc<Mutex<f64>>);
    impl Callback for ReadLr {
        fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
            *self.0.lock().unwrap() = cx.learning_rates()[0][0];
            Ok(())
        }
    }
    let mut model = Linear::build(make);
    quiet().max_epochs(1).callback(ReadLr(lr.clone())).build()?.fit(&mut model, Batches::new(data(10, 2)), ())?;
    assert!((*lr.lock().unwrap() - 0.025).abs() < 1e-12, "lr {}", lr.lock().unwrap());

    // An epoch scheduler monitoring a metric that is not logged is an error naming it.
    let plateau = || {
        Optimizers::from(Sgd::new(0.1)).scheduler(SchedulerConfig::new(ReduceLrOnPlateau::default()).monitor("val_acc"))
    };
    let mut model = Linear::build(plateau);
    let e =
        quiet().max_epochs(1).build()?.fit(&mut model, Batches::new(data(4, 2)), Batches::new(data(4, 2))).unwrap_err();
    assert!(
        e.to_string().contains("monitors `val_acc`, which was not logged") && e.to_string().contains("val_loss"),
        "{e}"
    );
    Ok(())
}

/// Two parameter sets, each with its own optimizer (a GAN's shape).
#[lightning_module]
struct TwoParts {
    vs: nn::VarStore,
    a: Tensor,
    b: Tensor,
    calls: Vec<(usize, usize)>,
    frequencies: bool,
    optimized: Vec<Vec<String>>,
}

#[lightning_module]
impl TwoParts {
    fn build(frequencies: bool) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().sub("a").ones("w", &[2]);
        let b = vs.root().sub("b").ones("w", &[2]);
        TwoParts { vs, a, b, calls: Vec::new(), frequencies, optimized: Vec::new() }
    }

    fn on_train_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        for i in 0..cx.num_optimizers() {
            let mut handle = cx.optimizer(i)?;
            let names = handle.optimizer().param_groups().iter().flat_map(|g| g.names().map(String::from)).collect();
            self.optimized.push(names);
        }
        Ok(())
    }

    fn training_step(&mut self, x: Tensor, batch_idx: usize, optimizer_idx: usize) -> Tensor {
        self.calls.push((batch_idx, optimizer_idx));
        let w = if optimizer_idx == 0 { &self.a } else { &self.b };
        (w * &x).sum(Kind::Float).square()
    }

    fn configure_optimizers(&self) -> Optimizers {
        let (a, b) = (Sgd::new(0.01).params(|n| n.starts_with("a.")), Sgd::new(0.01).params(|n| n.starts_with("b.")));
        if self.frequencies {
            Optimizers::none().with_frequency(a, 1).with_frequency(b, 2)
        } else {
            Optimizers::none().with(a).with(b)
        }
    }
}

#[test]
fn several_optimizers_take_turns() -> lit::Result<()> {
    let batches = || Batches::new((0..6).map(|i| Tensor::full([2], i as f64, (Kind::Float, Device::Cpu))).collect());
    let mut model = TwoParts::build(false);
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut model, batches(), ())?;
    let expected: Vec<(usize, usize)> = (0..6).flat_map(|i| [(i, 0), (i, 1)]).collect();
    assert_eq!(model.calls, expected, "training_step runs once per optimizer");
    assert_eq!(
        model.optimized,
        [vec!["a.w".to_string()], vec!["b.w".to_string()]],
        "each optimizer has its own parameters"
    );
    assert_eq!(trainer.global_step(), 6);

    let mut model = TwoParts::build(true);
    let before_b = model.b.copy();
    quiet().max_epochs(1).build()?.fit(&mut model, batches(), ())?;
    assert_eq!(model.calls, [(0, 0), (1, 1), (2, 1), (3, 0), (4, 1), (5, 1)], "frequencies 1 and 2");
    assert!(!model.b.equal(&before_b), "each optimizer updates its own parameters");
    Ok(())
}

/// Manual optimization, as Lightning's `automatic_optimization = False`.
#[lightning_module]
struct Manual {
    vs: nn::VarStore,
    w: Tensor,
    step_it: bool,
}

#[lightning_module(automatic_optimization = false)]
impl Manual {
    fn build(step_it: bool) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().ones("w", &[2]);
        Manual { vs, w, step_it }
    }

    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> lit::Result<Tensor> {
        let loss = (&self.w * &x).sum(Kind::Float).square();
        if self.step_it {
            cx.optimizer(0)?.zero_grad();
            cx.manual_backward(&loss)?;
            cx.optimizer(0)?.step()?;
        }
        Ok(loss)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

#[test]
fn manual_optimization_steps_only_when_told() -> lit::Result<()> {
    let batches = || Batches::new((0..4).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
    let mut idle = Manual::build(false);
    let before = idle.w.copy();
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut idle, batches(), ())?;
    assert!(idle.w.equal(&before), "a returned loss is not stepped in manual mode");
    assert_eq!(trainer.global_step(), 0);

    let mut busy = Manual::build(true);
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut busy, batches(), ())?;
    assert_eq!(trainer.global_step(), 4, "each optimizer step counts");
    assert!(!busy.w.equal(&before));
    Ok(())
}

/// SGD, Adam and AdamW step in libtorch's fused kernels: lit's trajectories equal those of
/// `torch.optim.*(fused=True)` on the reference problem, to the last bit.
#[test]
fn sgd_and_adam_equal_torch_optim_fused() {
    let script = r#"
import json, torch
F = torch.float64
def problem():
    w = (torch.arange(12, dtype=F).view(3, 4).sin() * 0.5).requires_grad_()
    b = (torch.arange(4, dtype=F).cos() * 0.1).requires_grad_()
    r = torch.arange(5, dtype=F).view(5, 1)
    x = (r * 0.7 + torch.arange(3, dtype=F).view(1, 3)).sin()
    y = (r + torch.arange(4, dtype=F).view(1, 4) * 0.3).cos()
    return w, b, x, y
cases = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, fused=True),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, fused=True),
    "sgd_momentum_dampening": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, fused=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, fused=True),
    "adam_wd_amsgrad": lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, fused=True),
}
out = {}
for name, make in cases.items():
    w, b, x, y = problem()
    opt = make([w, b])
    for _ in range(20):
        opt.zero_grad()
        ((x @ w + b - y).square().mean() + w.pow(4).sum() * 0.1).backward()
        opt.step()
    out[name] = w.detach().flatten().tolist() + b.detach().tolist()
print(json.dumps(out))
"#;
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let out = std::process::Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let expected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases: Vec<(&str, Box<dyn OptimizerConfig>)> = vec![
        ("sgd", Box::new(Sgd::new(0.1))),
        ("sgd_nesterov_wd", Box::new(Sgd::new(0.05).momentum(0.9).nesterov(true).weight_decay(0.01))),
        ("sgd_momentum_dampening", Box::new(Sgd::new(0.05).momentum(0.9).dampening(0.1))),
        ("adam", Box::new(Adam::new(0.01))),
        ("adam_wd_amsgrad", Box::new(Adam::new(0.02).betas(0.8, 0.99).weight_decay(0.01).amsgrad(true))),
        ("adamw", Box::new(AdamW::new(0.01).weight_decay(0.1))),
    ];
    for (name, config) in cases {
        let (_, w, b) = run(&*config, 20);
        let ours: Vec<f64> = w.into_iter().chain(b).collect();
        let theirs = floats(&expected[name]);
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-15, "{name}: largest difference {worst:e} from torch.optim's fused kernel");
    }
}
