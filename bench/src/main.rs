//! lit against a hand-written tch loop, on the two tasks of `shared/bench/anchor_lightning.py`.
//!
//! ```text
//! scripts/with-torch cargo build --release -p lit-bench
//! scripts/with-torch target/release/lit-bench [mlp|rnn|all] [--epochs N] [--progress]
//! scripts/with-torch target/release/lit-bench optim
//! scripts/with-torch target/release/lit-bench ddp [ROUNDS]
//! scripts/with-torch target/release/lit-bench precision [--device cpu|cuda] [--epochs N]
//! ```
//!
//! Speed: one process trains both variants over the same pre-made batches, alternating epochs
//! (lit, hand-written, lit, …). lit runs one `fit` of `1 + N` epochs; a callback runs a
//! hand-written epoch at the end of each lit epoch. A lit epoch is the wall time from the end of
//! the previous hand-written epoch (or `on_train_start`) to its `on_train_epoch_end`, so it
//! includes all of lit's per-epoch work. The first epoch of each is a warm-up and is dropped; the
//! medians of the other `N` (default 6) are compared.
//!
//! Memory: the binary runs itself again (`rss TASK lit|hand|data EPOCHS`) to train one variant
//! alone and print its peak resident memory (`VmHWM`); `data` only makes the batches.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

use lit::prelude::*;
use lit::tch;
use lit::tch::Reduction;
use lit::tch::nn::{OptimizerConfig, RNN};

const DEFAULT_EPOCHS: usize = 6;
/// Epochs each child process trains for the memory measurement.
const RSS_EPOCHS: usize = 2;

type Pair = (Tensor, Tensor);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Mlp,
    Rnn,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Mlp => "mlp",
            Task::Rnn => "rnn",
        }
    }

    fn parse(s: &str) -> Option<Task> {
        match s {
            "mlp" => Some(Task::Mlp),
            "rnn" => Some(Task::Rnn),
            _ => None,
        }
    }

    /// The pre-made batches, as the anchor makes them (views into one tensor).
    fn batches(self) -> Vec<Pair> {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        let (x, y, bs) = match self {
            Task::Mlp => {
                (Tensor::randn([60_000, 784], opts), Tensor::randint(10, [60_000], (Kind::Int64, Device::Cpu)), 64)
            }
            Task::Rnn => {
                let x = Tensor::randn([300, 100, 10], opts);
                let halves = x.chunk(2, -1);
                let y = (&halves[0] + &halves[1]) / 2;
                (x, y, 30)
            }
        };
        let n = x.size()[0];
        (0..n)
            .step_by(bs as usize)
            .map(|i| {
                let len = bs.min(n - i);
                (x.narrow(0, i, len), y.narrow(0, i, len))
            })
            .collect()
    }
}

enum Layers {
    Mlp { l1: nn::Linear, l2: nn::Linear },
    Rnn { lstm: nn::LSTM, out: nn::Linear },
}

/// The model of a task: the same code for both variants.
struct Net {
    task: Task,
    vs: nn::VarStore,
    layers: Layers,
}

impl Net {
    fn new(task: Task) -> Net {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let layers = match task {
            Task::Mlp => Layers::Mlp {
                l1: nn::linear(&root / "l1", 784, 256, Default::default()),
                l2: nn::linear(&root / "l2", 256, 10, Default::default()),
            },
            Task::Rnn => Layers::Rnn {
                lstm: nn::lstm(&root / "rnn", 10, 20, nn::RNNConfig { batch_first: true, ..Default::default() }),
                out: nn::linear(&root / "out", 20, 5, Default::default()),
            },
        };
        Net { task, vs, layers }
    }

    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        match &self.layers {
            Layers::Mlp { l1, l2 } => x.apply(l1).relu().apply(l2).cross_entropy_for_logits(y),
            Layers::Rnn { lstm, out } => lstm.seq(x).0.apply(out).mse_loss(y, Reduction::Mean),
        }
    }

    /// The hand-written loop's optimizer: the one lit's Trainer steps (`lit::optim::Adam`/`Sgd`,
    /// libtorch's fused kernels), called directly, so that the comparison is the loop alone.
    fn optimizer(&self) -> Box<dyn lit::optim::Optimizer> {
        use lit::optim::OptimizerConfig as _;
        let opt = match self.task {
            Task::Mlp => Adam::new(1e-3).build(&self.vs),
            Task::Rnn => Sgd::new(0.02).build(&self.vs),
        };
        opt.expect("building the optimizer")
    }
}

/// The hand-written variant: a model, its optimizer and the batches.
struct Hand {
    net: Net,
    opt: Box<dyn lit::optim::Optimizer>,
    batches: Vec<Pair>,
}

impl Hand {
    fn new(task: Task, batches: &[Pair]) -> Hand {
        let net = Net::new(task);
        let opt = net.optimizer();
        Hand { net, opt, batches: batches.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect() }
    }

    /// One epoch; returns the last batch's loss.
    fn epoch(&mut self) -> f64 {
        let mut last = None;
        for (x, y) in &self.batches {
            let loss = self.net.loss(x, y);
            self.opt.zero_grad();
            loss.backward();
            self.opt.step();
            last = Some(loss);
        }
        last.map_or(f64::NAN, |l| l.double_value(&[]))
    }
}

/// The lit variant: the same model as a LightningModule.
struct LitNet(Net);

impl LightningModule for LitNet {
    type TrainBatch = Pair;
    type ValBatch = Pair;
    type TestBatch = Pair;
    type PredictBatch = Tensor;
    type Prediction = Tensor;

    fn var_store(&self) -> &nn::VarStore {
        &self.0.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.0.vs
    }

    fn training_step(&mut self, (x, y): Pair, _batch_idx: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
        let loss = self.0.loss(&x, &y);
        cx.log("train_loss", &loss);
        Ok(Some(loss.into()))
    }

    fn configure_optimizers(&mut self, _cx: &mut Ctx) -> Result<Optimizers> {
        Ok(match self.0.task {
            Task::Mlp => Adam::new(1e-3).into(),
            Task::Rnn => Sgd::new(0.02).into(),
        })
    }
}

/// `--progress`: lit shows its progress bar (plain lines when stderr is not a terminal).
static PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// As the anchor's Lightning run: no progress bar, model summary, checkpoints or logger, unless
/// `--progress` turns the progress bar on.
fn trainer(epochs: usize) -> lit::TrainerBuilder {
    Trainer::builder()
        .max_epochs(epochs)
        .accelerator("cpu")
        .num_sanity_val_steps(0)
        .enable_progress_bar(PROGRESS.load(std::sync::atomic::Ordering::Relaxed))
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .logger(false)
}

fn lit_loss(trainer: &Trainer) -> f64 {
    trainer.callback_metrics().get("train_loss").copied().unwrap_or(f64::NAN)
}

#[derive(Default)]
struct Times {
    lit: Vec<f64>,
    hand: Vec<f64>,
    hand_loss: f64,
}

/// Times lit's epochs and runs a hand-written epoch after each.
struct Alternate {
    hand: Hand,
    times: Rc<RefCell<Times>>,
    mark: Instant,
}

impl Callback for Alternate {
    fn on_train_start(&mut self, _cx: &mut Ctx) -> Result<()> {
        self.mark = Instant::now();
        Ok(())
    }

    fn on_train_epoch_end(&mut self, _cx: &mut Ctx) -> Result<()> {
        let lit = self.mark.elapsed().as_secs_f64();
        let start = Instant::now();
        let loss = self.hand.epoch();
        let hand = start.elapsed().as_secs_f64();
        let mut times = self.times.borrow_mut();
        times.lit.push(lit);
        times.hand.push(hand);
        times.hand_loss = loss;
        drop(times);
        self.mark = Instant::now();
        Ok(())
    }
}

struct Speed {
    lit: Vec<f64>,
    hand: Vec<f64>,
    lit_loss: f64,
    hand_loss: f64,
}

fn speed(task: Task, epochs: usize) -> Result<Speed> {
    let batches = task.batches();
    let times = Rc::new(RefCell::new(Times::default()));
    let alternate = Alternate { hand: Hand::new(task, &batches), times: Rc::clone(&times), mark: Instant::now() };
    let mut model = LitNet(Net::new(task));
    let mut trainer = trainer(1 + epochs).callback(alternate).build()?;
    trainer.fit(&mut model, Batches::new(batches), ())?;
    let lit_loss = lit_loss(&trainer);
    let times = std::mem::take(&mut *times.borrow_mut());
    Ok(Speed { lit: times.lit[1..].to_vec(), hand: times.hand[1..].to_vec(), lit_loss, hand_loss: times.hand_loss })
}

/// Peak resident memory of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child process: trains one variant alone, prints `peak_rss_kib=N loss=L`.
fn rss_child(task: Task, variant: &str, epochs: usize) -> Result<()> {
    let batches = task.batches();
    let loss = match variant {
        "lit" => {
            let mut model = LitNet(Net::new(task));
            let mut trainer = trainer(epochs).build()?;
            trainer.fit(&mut model, Batches::new(batches), ())?;
            lit_loss(&trainer)
        }
        "hand" => {
            let mut hand = Hand::new(task, &batches);
            (0..epochs).map(|_| hand.epoch()).last().unwrap_or(f64::NAN)
        }
        "data" => f64::NAN,
        other => return Err(lit::Error::msg(format!("unknown variant `{other}`"))),
    };
    println!("peak_rss_kib={} loss={loss}", peak_rss_kib());
    Ok(())
}

/// Runs `rss_child` in a new process; returns the peak RSS in MiB.
fn rss(task: Task, variant: &str) -> Result<f64> {
    let exe = std::env::current_exe().map_err(lit::Error::msg)?;
    let out = Command::new(exe)
        .args(["rss", task.name(), variant, &RSS_EPOCHS.to_string()])
        .output()
        .map_err(lit::Error::msg)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kib = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("peak_rss_kib="))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| out.status.success());
    match kib {
        Some(kib) => Ok(kib as f64 / 1024.0),
        None => Err(lit::Error::msg(format!(
            "rss child {} {variant} failed ({}): {stdout}{}",
            task.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn usage() -> lit::Error {
    lit::Error::msg(
        "usage: lit-bench [mlp|rnn|all] [--epochs N] [--progress]   (N timed epochs after a warm-up, default 6; \
         --progress: lit shows its progress bar); lit-bench optim; lit-bench ddp [ROUNDS]; lit-bench precision",
    )
}

/// PyTorch's side of `lit-bench optim`: `torch.optim.Adam(fused=True)` and
/// `SGD(momentum=0.9, fused=True)` on the same parameters, timed as lit's are.
const TORCH_OPTIM: &str = r#"
import sys, time, torch
torch.manual_seed(0)
l1, l2 = torch.nn.Linear(784, 256), torch.nn.Linear(256, 10)
l2(l1(torch.randn(64, 784)).relu()).sum().backward()
params = list(l1.parameters()) + list(l2.parameters())
if sys.argv[1] == "adam":
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
else:
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, fused=True)
rounds = []
for _ in range(7):
    t = time.perf_counter()
    for _ in range(200):
        opt.step()
    rounds.append((time.perf_counter() - t) / 200 * 1e6)
print(sorted(rounds)[3])
"#;

/// Microseconds per step of PyTorch's fused optimizer `name`, timed by the torch environment's
/// Python (`LIT_TORCH_PYTHON`, set by scripts/with-torch); `None` without it.
fn torch_optim_step(name: &str) -> Option<f64> {
    let python = std::env::var("LIT_TORCH_PYTHON").ok()?;
    let threads = tch::get_num_threads().to_string();
    let out = Command::new(python).args(["-c", TORCH_OPTIM, name]).env("OMP_NUM_THREADS", threads).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `lit-bench optim`: one optimizer step of lit's Adam and SGD (momentum 0.9) against tch's
/// (libtorch's C++ `torch::optim`) and PyTorch's `fused=True` (timed by the torch environment's
/// Python in the same run), on the MLP's parameters with fixed gradients; median of 7 rounds of
/// 200 steps, three alternations, the middle one reported.
fn optim_speed() -> Result<()> {
    use lit::optim::OptimizerConfig as _;
    let make = || {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 784, 256, Default::default());
        let l2 = nn::linear(vs.root() / "l2", 256, 10, Default::default());
        let x = Tensor::randn([64, 784], (Kind::Float, Device::Cpu));
        l2.forward(&l1.forward(&x).relu()).sum(Kind::Float).backward();
        vs
    };
    let time = |step: &mut dyn FnMut()| {
        let mut rounds = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..200 {
                step();
            }
            rounds.push(t.elapsed().as_secs_f64() / 200.0 * 1e6);
        }
        rounds.sort_by(f64::total_cmp);
        rounds[3]
    };
    println!("optimizer step on the mlp's parameters (203,530), microseconds per step, median of 7 x 200");
    println!("{:<6} {:>10} {:>10} {:>14} {:>10} {:>10}", "optim", "lit", "tch", "torch fused", "lit/tch", "lit/fused");
    for (name, is_adam) in [("adam", true), ("sgd", false)] {
        let (vs_lit, vs_tch) = (make(), make());
        let mut lit_opt =
            if is_adam { Adam::new(1e-3).build(&vs_lit)? } else { Sgd::new(0.01).momentum(0.9).build(&vs_lit)? };
        let mut tch_opt = if is_adam {
            nn::Adam::default().build(&vs_tch, 1e-3)?
        } else {
            nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs_tch, 0.01)?
        };
        let (mut l, mut t, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            l.push(time(&mut || lit_opt.step()));
            t.push(time(&mut || tch_opt.step()));
            p.extend(torch_optim_step(name));
        }
        l.sort_by(f64::total_cmp);
        t.sort_by(f64::total_cmp);
        p.sort_by(f64::total_cmp);
        let fused = p.get(p.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{name:<6} {:>10.1} {:>10.1} {:>14.1} {:>10.3} {:>10.3}",
            l[1],
            t[1],
            fused,
            l[1] / t[1],
            l[1] / fused
        );
    }
    Ok(())
}

/// The models of `lit-bench ddp`: the mlp task's (203,530 parameters) and one of 20,037,642
/// (784-4096-4096-10), where overlapping the all-reduce with backward decides.
const DDP_MODELS: [&str; 2] = ["mlp", "mlp20m"];

/// A DDP bench model: linear layers with ReLU between them, as `bench/ddp_torch.py` builds it.
#[lightning_module]
struct DdpNet {
    vs: nn::VarStore,
    layers: Vec<nn::Linear>,
}

impl DdpNet {
    fn new(name: &str) -> Result<Self> {
        let sizes: &[i64] = match name {
            "mlp" => &[784, 256, 10],
            "mlp20m" => &[784, 4096, 4096, 10],
            other => return Err(lit::Error::msg(format!("unknown ddp bench model {other}"))),
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(vs.root() / i, w[0], w[1], Default::default()))
            .collect();
        Ok(DdpNet { vs, layers })
    }
}

#[lightning_module]
impl DdpNet {
    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i + 1 < self.layers.len() {
                h = h.relu();
            }
        }
        h.cross_entropy_for_logits(&y)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(1e-3).into()
    }
}

/// Times each training step (`on_train_batch_start` to `on_train_batch_end`).
struct StepTimer {
    start: Option<Instant>,
    steps: Rc<RefCell<Vec<f64>>>,
}

impl Callback for StepTimer {
    fn on_train_batch_start(&mut self, _batch_idx: usize, _cx: &mut Ctx) -> Result<()> {
        self.start = Some(Instant::now());
        Ok(())
    }
    fn on_train_batch_end(&mut self, _out: Option<&StepOutput>, _batch_idx: usize, _cx: &mut Ctx) -> Result<()> {
        if let Some(start) = self.start.take() {
            self.steps.borrow_mut().push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    }
}

/// `lit-bench ddp-lit MODEL STEPS`: lit's DDP (2 processes, one torch thread each, Adam, a batch
/// of 64 per process) over `STEPS` steps; rank 0 prints the median step time in milliseconds
/// over the steps after the first 5.
fn ddp_lit(name: &str, steps: usize) -> Result<()> {
    tch::set_num_threads(1);
    let mut net = DdpNet::new(name)?;
    tch::manual_seed(1);
    let batches: Vec<Pair> = (0..2 * steps)
        .map(|_| {
            (
                Tensor::randn([64, 784], (Kind::Float, Device::Cpu)),
                Tensor::randint(10, [64], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let times = Rc::new(RefCell::new(Vec::new()));
    let mut trainer =
        trainer(1).devices(2).strategy("ddp").callback(StepTimer { start: None, steps: times.clone() }).build()?;
    trainer.fit(&mut net, Batches::new(batches), ())?;
    if trainer.global_rank() == 0 {
        println!("{:.3}", median(&times.borrow()[5..]));
    }
    Ok(())
}

/// `lit-bench ddp`: a training step of lit's DDP against PyTorch's `DistributedDataParallel`
/// (`bench/ddp_torch.py`), both on Gloo with 2 processes of one torch thread each, the same
/// models, batch (64 per process) and optimizer (Adam). Each side runs as whole processes,
/// alternating, `ROUNDS` times per model; the medians are compared.
fn ddp_speed(args: &[String]) -> Result<()> {
    let rounds: usize = args.first().and_then(|r| r.parse().ok()).unwrap_or(3);
    let python = std::env::var("LIT_TORCH_PYTHON")
        .map_err(|_| lit::Error::msg("LIT_TORCH_PYTHON is not set: run through scripts/with-torch"))?;
    let exe = std::env::current_exe().map_err(|e| lit::Error::msg(e.to_string()))?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ddp_torch.py");
    let measure = |mut command: Command, what: &str| -> Result<f64> {
        let out = command.output().map_err(|e| lit::Error::msg(format!("{what}: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().and_then(|l| l.trim().parse().ok()).ok_or_else(|| {
            lit::Error::msg(format!("{what} printed no time: {text} {}", String::from_utf8_lossy(&out.stderr)))
        })
    };
    println!("DDP training step, 2 processes on Gloo, 1 torch thread each, batch 64 per process, Adam;");
    println!("milliseconds per step (median over steps 6..N), {rounds} alternating rounds, median [range]");
    println!("{:<8} {:>12} {:>22} {:>22} {:>10}", "model", "parameters", "lit", "torch DDP", "lit/torch");
    for name in DDP_MODELS {
        let steps = if name == "mlp" { 200 } else { 25 };
        let (mut lit_ms, mut torch_ms) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut lit_run = Command::new(&exe);
            lit_run.args(["ddp-lit", name, &steps.to_string()]);
            for var in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
                lit_run.env_remove(var);
            }
            lit_ms.push(measure(lit_run, "lit-bench ddp-lit")?);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| lit::Error::msg(e.to_string()))?
                .port();
            let mut torch_run = Command::new(&python);
            torch_run.arg(&script).args([name, &steps.to_string(), &port.to_string()]).env("OMP_NUM_THREADS", "1");
            torch_ms.push(measure(torch_run, "bench/ddp_torch.py")?);
        }
        let summary = |v: &[f64]| {
            (
                median(v),
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        let (l, l_lo, l_hi) = summary(&lit_ms);
        let (t, t_lo, t_hi) = summary(&torch_ms);
        let params = DdpNet::new(name)?.vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>();
        println!(
            "{name:<8} {params:>12} {:>22} {:>22} {:>10.3}",
            format!("{l:.2} [{l_lo:.2}-{l_hi:.2}]"),
            format!("{t:.2} [{t_lo:.2}-{t_hi:.2}]"),
            l / t
        );
    }
    Ok(())
}

/// The hand-written loop at a precision: lit's Adam called directly, the forward pass under autocast for the mixed
/// precisions, and for "16-mixed" the loss scaling a hand-written PyTorch loop does with
/// `torch.amp.GradScaler` (scale, unscale and check, skip or step, update).
fn hand_epoch_at(
    net: &Net,
    opt: &mut dyn lit::optim::Optimizer,
    batches: &[Pair],
    precision: lit::amp::Precision,
) -> Result<f64> {
    let device = net.vs.device();
    let mut scale = Tensor::from_slice(&[65536.0f32]).to_device(device);
    let tracker = Tensor::from_slice(&[0i32]).to_device(device);
    let mut last = f64::NAN;
    for (x, y) in batches {
        let loss = {
            let _autocast = precision.autocast_kind().map(|k| lit::amp::AutocastGuard::enter(device, k)).transpose()?;
            net.loss(x, y)
        };
        opt.zero_grad();
        if precision == lit::amp::Precision::F16Mixed {
            (&loss * scale.reshape([])).backward();
            let inv = scale.reciprocal();
            let mut found = Tensor::zeros([1], (Kind::Float, device));
            tch::no_grad(|| {
                for v in net.vs.trainable_variables() {
                    let mut g = v.grad();
                    if g.defined() {
                        g.internal_amp_non_finite_check_and_unscale(&mut found, &inv);
                    }
                }
            });
            if found.double_value(&[0]) == 0.0 {
                opt.step();
            }
            let _ = scale.internal_amp_update_scale_(&tracker, &found, 2.0, 0.5, 2000);
        } else {
            loss.backward();
            opt.step();
        }
        last = loss.double_value(&[]);
    }
    Ok(last)
}

/// `lit-bench precision`: seconds per epoch of the mlp task, lit and hand-written, at each
/// precision the device supports, alternating epochs.
fn precision_speed(args: &[String]) -> Result<()> {
    let mut device = if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu };
    let mut epochs = 3;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--device" => {
                device = match it.next().map(String::as_str) {
                    Some("cpu") => Device::Cpu,
                    Some("cuda") => Device::Cuda(0),
                    _ => return Err(lit::Error::msg("--device takes cpu or cuda")),
                }
            }
            "--epochs" => epochs = it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0).ok_or_else(usage)?,
            other => return Err(lit::Error::msg(format!("unknown argument `{other}`"))),
        }
    }
    let precisions: &[&str] =
        if device.is_cuda() { &["32-true", "bf16-mixed", "16-mixed"] } else { &["32-true", "bf16-mixed"] };
    let batches: Vec<Pair> =
        Task::Mlp.batches().into_iter().map(|(x, y)| (x.to_device(device), y.to_device(device))).collect();
    println!("mlp task on {device:?}: seconds per epoch, median of {epochs} after 1 warm-up, lit and hand alternating");
    println!(
        "{:<11} {:>9} {:>9} {:>6} {:>10} {:>10}",
        "precision", "lit s", "hand s", "ratio", "lit loss", "hand loss"
    );
    let mut fp32 = None;
    for &name in precisions {
        let precision: lit::amp::Precision = name.parse()?;
        let (mut lit_t, mut hand_t) = (Vec::new(), Vec::new());
        let mut model = LitNet(Net::new(Task::Mlp));
        let mut hand = Net::new(Task::Mlp);
        hand.vs.set_device(device);
        let mut opt = hand.optimizer();
        let accelerator = if device.is_cuda() { "cuda" } else { "cpu" };
        let (mut lit_loss_last, mut hand_loss) = (f64::NAN, f64::NAN);
        for _ in 0..=epochs {
            // One `fit` of one epoch per timed epoch: the timing includes each fit's set-up.
            let mut trainer = trainer(1).accelerator(accelerator).precision(name).build()?;
            let data = Batches::new(batches.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect());
            let start = Instant::now();
            trainer.fit(&mut model, data, ())?;
            if device.is_cuda() {
                tch::Cuda::synchronize(0);
            }
            lit_t.push(start.elapsed().as_secs_f64());
            lit_loss_last = lit_loss(&trainer);
            let start = Instant::now();
            hand_loss = hand_epoch_at(&hand, &mut *opt, &batches, precision)?;
            hand_t.push(start.elapsed().as_secs_f64());
        }
        let (l, h) = (median(&lit_t[1..]), median(&hand_t[1..]));
        println!("{name:<11} {l:>9.4} {h:>9.4} {:>6.3} {lit_loss_last:>10.4} {hand_loss:>10.4}", l / h);
        match fp32 {
            None => fp32 = Some(l),
            Some(base) => println!("{name} speed-up over 32-true (lit): {:.2}x", base / l),
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("precision") {
        return precision_speed(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("optim") {
        return optim_speed();
    }
    if args.first().map(String::as_str) == Some("ddp") {
        return ddp_speed(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("ddp-lit") {
        let name = args.get(1).ok_or_else(usage)?;
        let steps = args.get(2).and_then(|s| s.parse().ok()).filter(|&s: &usize| s > 5).ok_or_else(usage)?;
        return ddp_lit(name, steps);
    }
    if args.first().map(String::as_str) == Some("rss") {
        let task = args.get(1).and_then(|t| Task::parse(t)).ok_or_else(usage)?;
        let variant = args.get(2).ok_or_else(usage)?;
        let epochs = args.get(3).and_then(|e| e.parse().ok()).unwrap_or(RSS_EPOCHS);
        return rss_child(task, variant, epochs);
    }

    let mut tasks = vec![Task::Mlp, Task::Rnn];
    let mut epochs = DEFAULT_EPOCHS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--epochs" => epochs = it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0).ok_or_else(usage)?,
            "all" => tasks = vec![Task::Mlp, Task::Rnn],
            "--progress" => PROGRESS.store(true, std::sync::atomic::Ordering::Relaxed),
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            t => tasks = vec![Task::parse(t).ok_or_else(usage)?],
        }
    }

    println!(
        "lit vs hand-written tch: median of {epochs} epochs after 1 warm-up, alternating; peak RSS of {RSS_EPOCHS} \
         epochs, each in its own process; {} torch threads",
        tch::get_num_threads()
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &task in &tasks {
        let s = speed(task, epochs)?;
        let (lit_rss, hand_rss, data_rss) = (rss(task, "lit")?, rss(task, "hand")?, rss(task, "data")?);
        let (lit_t, hand_t) = (median(&s.lit), median(&s.hand));
        rows.push(format!(
            "{:<5} {:>12.4} {:>13.4} {:>6.3} {:>17.1} {:>18.1} {:>6.3}",
            task.name(),
            lit_t,
            hand_t,
            lit_t / hand_t,
            lit_rss,
            hand_rss,
            lit_rss / hand_rss
        ));
        let fmt = |v: &[f64]| v.iter().map(|t| format!("{t:.4}")).collect::<Vec<_>>().join(" ");
        let paired: Vec<f64> = s.lit.iter().zip(&s.hand).map(|(l, h)| l / h).collect();
        notes.push(format!(
            "{}: final loss lit {:.6} hand {:.6}; median of per-epoch ratios {:.3}; epochs lit [{}] hand [{}]; \
             batches alone {:.1} MiB",
            task.name(),
            s.lit_loss,
            s.hand_loss,
            median(&paired),
            fmt(&s.lit),
            fmt(&s.hand),
            data_rss
        ));
    }
    println!(
        "{:<5} {:>12} {:>13} {:>6} {:>17} {:>18} {:>6}",
        "task", "lit s/epoch", "hand s/epoch", "ratio", "lit peak RSS MiB", "hand peak RSS MiB", "ratio"
    );
    for row in rows {
        println!("{row}");
    }
    for note in notes {
        println!("{note}");
    }
    Ok(())
}
