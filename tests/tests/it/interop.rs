//! Lightning interoperability, with the real `lightning` package: `scripts/to-lightning` turns a
//! lit checkpoint into a Lightning checkpoint that `LightningModule.load_from_checkpoint` loads and
//! `trainer.fit(ckpt_path=…)` resumes from, and `scripts/from-lightning` brings the weights of a
//! Lightning checkpoint or a PyTorch `state_dict` into a lit module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lit::callbacks::ModelCheckpoint;
use lit::checkpoint::Checkpoint;
use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

use crate::common::{repo_root, temp_dir};

type B = (Tensor, Tensor);

#[hparams]
pub struct NetConfig {
    pub lr: f64,
    pub hidden: i64,
    /// `"adam"`, or `"sgd"` (with momentum 0.9).
    pub optimizer: String,
}

fn config(optimizer: &str) -> NetConfig {
    NetConfig { lr: 0.01, hidden: 4, optimizer: optimizer.into() }
}

/// The lit twin of `Net` in [`PYTHON_NET`]: the same layers under the same names.
#[lightning_module]
struct Net {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    #[hparams]
    cfg: NetConfig,
}

#[lightning_module]
impl Net {
    fn new(cfg: NetConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 2, cfg.hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 1, Default::default());
        Net { vs, l1, l2, cfg }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).tanh())
    }

    fn training_step(&mut self, (x, y): B) -> Tensor {
        self.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn configure_optimizers(&self) -> Optimizers {
        match self.cfg.optimizer.as_str() {
            "sgd" => Sgd::new(self.cfg.lr).momentum(0.9).into(),
            _ => Adam::new(self.cfg.lr).into(),
        }
    }
}

/// The Python side: the equivalent LightningModule and the same data (same libtorch ops, so the
/// same values), written next to the checkpoints and imported by the scripts below.
const PYTHON_NET: &str = r#"
import torch
import lightning as L
from torch import nn


class Net(L.LightningModule):
    def __init__(self, lr, hidden, optimizer):
        super().__init__()
        self.save_hyperparameters()
        self.l1 = nn.Linear(2, hidden)
        self.l2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class NetSgd(Net):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data():
    x = torch.arange(24, dtype=torch.float32).view(12, 2).sin()
    y = torch.arange(12, dtype=torch.float32).view(12, 1).cos()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def probe_input():
    return torch.arange(6, dtype=torch.float32).view(3, 2).cos()


def trainer(root, max_epochs, callbacks=()):
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, callbacks=list(callbacks),
    )
"#;

/// 12 samples in 3 batches of 4, unshuffled: [`PYTHON_NET`]'s `data()`.
fn data() -> DataLoader<TensorDataset<B>> {
    let x = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([12, 2]).sin();
    let y = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([12, 1]).cos();
    DataLoader::new(TensorDataset::new((x, y)).unwrap()).batch_size(4)
}

fn probe_input() -> Tensor {
    Tensor::arange(6, (Kind::Float, Device::Cpu)).view([3, 2]).cos()
}

fn quiet(root: &Path) -> lit::TrainerBuilder {
    Trainer::builder()
        .accelerator("cpu")
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .logger(false)
        .default_root_dir(root)
}

fn python() -> String {
    std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch")
}

/// Runs `scripts/<name>` with the project's Python.
fn script(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts").join(name));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run the script")
}

/// Runs a Python snippet with the root (holding `interop_net.py`) importable; returns its stdout.
fn run_python(root: &Path, code: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(code).env("PYTHONPATH", root);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An expected failure: exit status 1 and the reason on stderr (`to-lightning: error: …`), not a
/// Python traceback.
fn check_clear_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(": error: "), "{stderr}");
    assert!(!stderr.contains("Traceback"), "an expected error shows a traceback:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` is not in:\n{stderr}");
    }
}

fn write_python_net(root: &Path) -> PathBuf {
    let path = root.join("interop_net.py");
    std::fs::write(&path, PYTHON_NET).unwrap();
    path
}

/// lit trains 2 epochs and keeps `last.ckpt`; returns it with the model.
fn trained_lit(root: &Path, optimizer: &str) -> lit::Result<(PathBuf, Net)> {
    let dir = root.join("ckpts");
    let mut model = Net::new(config(optimizer));
    let callback = ModelCheckpoint::new().dirpath(&dir).save_last(true);
    quiet(root).max_epochs(2).callback(callback).build()?.fit(&mut model, data(), ())?;
    Ok((dir.join("last.ckpt"), model))
}

const CHECK_LOAD_AND_RESUME: &str = r#"
import json, sys
import torch
import lightning as L
from safetensors.torch import load_file
from interop_net import Net, data, probe_input, trainer

lit_ckpt, converted, lit_after, root = sys.argv[1:5]
lit_logits = torch.tensor(json.loads(sys.argv[5]))
hparams = json.loads(sys.argv[6])
lit = load_file(lit_ckpt)
lit_vars = {k: v for k, v in lit.items() if not k.startswith("__lit__/")}

# LightningModule.load_from_checkpoint: hparams from `hyper_parameters`, weights strictly.
model = Net.load_from_checkpoint(converted)
assert dict(model.hparams) == hparams, dict(model.hparams)
sd = model.state_dict()
assert sorted(sd) == sorted(lit_vars), (sorted(sd), sorted(lit_vars))
for name, t in sd.items():
    assert torch.equal(t, lit_vars[name]), name
with torch.no_grad():
    logits = model(probe_input())
logits_diff = float((logits.flatten() - lit_logits).abs().max())

seen = {}
class Probe(L.Callback):
    def on_train_start(self, trainer, module):
        # Lightning restored the loops and the optimizer before training starts.
        seen["start"] = [trainer.current_epoch, trainer.global_step]
        seen["batches_that_stepped"] = trainer.fit_loop.epoch_loop._batches_that_stepped
        opt = trainer.optimizers[0]
        names = {p: n for n, p in module.named_parameters()}
        seen["optimizer"] = type(opt).__name__
        seen["steps"] = sorted({float(s["step"]) for s in opt.state.values() if "step" in s})
        seen["state_for"] = sorted(names[p] for p in opt.state)
        seen["state_kinds"] = sorted({k for s in opt.state.values() for k in s})
        for p, s in opt.state.items():
            for key, value in s.items():
                if key != "step":
                    assert torch.equal(value, lit[f"__lit__/optimizer.0/{key}/{names[p]}"]), (names[p], key)
        seen["lr"] = opt.param_groups[0]["lr"]

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        seen.setdefault("first_batch", [trainer.current_epoch, trainer.global_step, batch_idx])

t = trainer(root, 3, [Probe()])
t.fit(model, data(), ckpt_path=converted)
seen["end"] = [t.current_epoch, t.global_step]

# Lightning's third epoch against lit's own third epoch from the same checkpoint.
after = load_file(lit_after)
seen["weights_rel_diff"] = max(
    float((p.detach() - after[n]).norm() / after[n].norm()) for n, p in model.named_parameters()
)
seen["logits_diff"] = logits_diff
print(json.dumps(seen))
"#;

/// lit trains 2 epochs with `optimizer`, the checkpoint is converted, and Lightning loads it and
/// trains a third epoch from it; lit trains its own third epoch from the same checkpoint. Returns
/// what the Python side saw.
fn resume_in_lightning(name: &str, optimizer: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let root = temp_dir(name);
    write_python_net(&root);
    let (last, model) = trained_lit(&root, optimizer)?;
    let meta = Checkpoint::load(&last)?.meta;
    assert_eq!((meta.epoch, meta.global_step, meta.loops.epoch, meta.loops.batch_in_epoch), (1, 6, 2, 0));
    let logits: Vec<f32> = Vec::try_from(lit::tch::no_grad(|| model.forward(&probe_input())).flatten(0, -1))?;

    let after = root.join("lit-epoch3.ckpt");
    let mut resumed = Net::new(config(optimizer));
    let mut trainer = quiet(&root).max_epochs(3).enable_checkpointing(false).build()?;
    trainer.fit_from_checkpoint(&mut resumed, data(), (), &last)?;
    assert_eq!((trainer.current_epoch(), trainer.global_step()), (3, 9));
    trainer.save_checkpoint(&after, &mut resumed)?;

    let converted = root.join("lightning.ckpt");
    let module = format!("{}:Net", root.join("interop_net.py").display());
    check_ok(&script("to-lightning", &[&"--module", &module, &last, &converted]), "scripts/to-lightning");

    let hparams = serde_json::json!({"lr": 0.01, "hidden": 4, "optimizer": optimizer}).to_string();
    let logits = serde_json::to_string(&logits)?;
    let out = run_python(&root, CHECK_LOAD_AND_RESUME, &[&last, &converted, &after, &root, &logits, &hparams]);
    let seen: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
    assert_eq!(seen["start"], serde_json::json!([2, 6]), "Lightning resumes at lit's epoch and step: {seen}");
    assert_eq!(seen["batches_that_stepped"], serde_json::json!(6), "{seen}");
    assert_eq!(seen["first_batch"], serde_json::json!([2, 6, 0]), "the first batch Lightning trains: {seen}");
    assert_eq!(seen["end"], serde_json::json!([3, 9]), "one more epoch of 3 batches: {seen}");
    assert_eq!(seen["state_for"], serde_json::json!(["l1.bias", "l1.weight", "l2.bias", "l2.weight"]), "{seen}");
    assert_eq!(seen["lr"], serde_json::json!(0.01));
    let logits_diff = seen["logits_diff"].as_f64().unwrap();
    assert!(logits_diff <= 1e-6, "logits differ by {logits_diff} between lit and Lightning");
    let rel = seen["weights_rel_diff"].as_f64().unwrap();
    assert!(rel <= 1e-5, "after one more epoch, Lightning's weights differ from lit's by {rel} (relative)");
    Ok(seen)
}

/// As Lightning's `tests_pytorch/models/test_restore.py::test_correct_step_and_epoch` (epoch,
/// global step and `_batches_that_stepped` in `on_train_start` and after `fit`) and
/// `test_load_model_from_checkpoint` (hparams and weights): the converted checkpoint restores
/// the weights and hparams (`load_from_checkpoint`), and `trainer.fit(ckpt_path=…)` continues at
/// lit's epoch and global step with lit's Adam state (moments and step count), so Lightning's
/// next epoch matches lit's.
#[test]
fn lightning_loads_and_resumes_a_lit_checkpoint() -> Result<(), Box<dyn std::error::Error>> {
    let seen = resume_in_lightning("interop-to-lightning", "adam")?;
    assert_eq!(seen["optimizer"], "Adam");
    assert_eq!(seen["steps"], serde_json::json!([6.0]), "Adam's step count is lit's: {seen}");
    assert_eq!(seen["state_kinds"], serde_json::json!(["exp_avg", "exp_avg_sq", "step"]), "{seen}");
    Ok(())
}

/// The same with SGD and momentum: lit's `momentum_buffer`s become `torch.optim.SGD`'s.
#[test]
fn lightning_resumes_sgd_momentum_from_a_lit_checkpoint() -> Result<(), Box<dyn std::error::Error>> {
    let seen = resume_in_lightning("interop-to-lightning-sgd", "sgd")?;
    assert_eq!(seen["optimizer"], "SGD");
    assert_eq!(seen["state_kinds"], serde_json::json!(["momentum_buffer"]), "{seen}");
    Ok(())
}

const CHECK_WITHIN_EPOCH: &str = r#"
import json, sys
import lightning as L
from interop_net import Net, data, trainer

converted, root = sys.argv[1:3]
seen = {}
class Probe(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        seen.setdefault("first_batch", [trainer.current_epoch, trainer.global_step, batch_idx])

model = Net.load_from_checkpoint(converted)
t = trainer(root, 3, [Probe()])
t.fit(model, data(), ckpt_path=converted)
seen["end"] = [t.current_epoch, t.global_step]
print(json.dumps(seen))
"#;

/// Checkpoints lit wrote within an epoch resume where lit would, as Lightning's own do
/// (`tests_pytorch/models/test_restore.py::test_restarting_mid_epoch_raises_warning`; Lightning
/// restarts a data loader that is not resumable, with that warning): after batch 1 of epoch 1
/// the next batch is batch 1 (0-based) at step 4; after the last batch of an epoch (a checkpoint
/// every 3 steps of 3-batch epochs) the next is the first of the next epoch. lit's checkpoint does
/// not record the epoch's length: from epoch 1 on it follows from the batches trained, in epoch 0
/// `--epoch-batches` says it (without it the script says that it assumes mid-epoch).
#[test]
fn lightning_resumes_lit_checkpoints_written_within_an_epoch() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("interop-within-epoch");
    write_python_net(&root);
    let dir = root.join("ckpts");
    let mut model = Net::new(config("adam"));
    let every_3 = ModelCheckpoint::new().dirpath(&dir).every_n_train_steps(3).save_top_k(-1).filename("{step}");
    quiet(&root).max_epochs(2).callback(every_3).build()?.fit(&mut model, data(), ())?;
    let mut trainer = quiet(&root).max_epochs(2).max_steps(4).enable_checkpointing(false).build()?;
    let mid = root.join("mid.ckpt");
    let mut stopped = Net::new(config("adam"));
    trainer.fit(&mut stopped, data(), ())?;
    trainer.save_checkpoint(&mid, &mut stopped)?;
    let (step3, step6) = (dir.join("step=3.ckpt"), dir.join("step=6.ckpt"));
    for (path, at) in [(&mid, (1, 1, 4)), (&step3, (0, 3, 3)), (&step6, (1, 3, 6))] {
        let loops = Checkpoint::load(path)?.meta.loops;
        assert_eq!((loops.epoch, loops.batch_in_epoch, loops.total_batch_idx), at, "{}", path.display());
    }

    let module = format!("{}:Net", root.join("interop_net.py").display());
    let cases: [(&PathBuf, &[&str], [usize; 3]); 3] =
        [(&mid, &[], [1, 4, 1]), (&step6, &[], [2, 6, 0]), (&step3, &["--epoch-batches", "3"], [1, 3, 0])];
    for (i, (path, extra, first)) in cases.into_iter().enumerate() {
        let converted = root.join(format!("converted-{i}.ckpt"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--module", &module];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        args.extend([path as &dyn AsRef<std::ffi::OsStr>, &converted]);
        check_ok(&script("to-lightning", &args), "scripts/to-lightning");
        let out = run_python(&root, CHECK_WITHIN_EPOCH, &[&converted, &root]);
        let seen: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        assert_eq!(seen["first_batch"], serde_json::json!(first), "{}: {seen}", path.display());
        assert_eq!(seen["end"], serde_json::json!([3, 9]), "{}: {seen}", path.display());
    }
    let out = script("to-lightning", &[&step3, &root.join("unsure.ckpt")]);
    check_ok(&out, "scripts/to-lightning");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("batch 3 of epoch 0") && stderr.contains("--epoch-batches"), "{stderr}");
    Ok(())
}

/// Without `--module` the parameter order of the optimizer state is lit's (sorted by name):
/// the weights and hparams still load; and what cannot be converted is a one-line error.
#[test]
fn to_lightning_reports_what_it_cannot_convert() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("interop-to-errors");
    write_python_net(&root);
    let (last, _) = trained_lit(&root, "adam")?;

    let plain = root.join("plain.ckpt");
    let out = script("to-lightning", &[&last, &plain]);
    check_ok(&out, "scripts/to-lightning without --module");
    let code =
        "import sys\nfrom interop_net import Net\nm = Net.load_from_checkpoint(sys.argv[1])\nprint(dict(m.hparams))";
    assert_eq!(run_python(&root, code, &[&plain]).trim(), "{'lr': 0.01, 'hidden': 4, 'optimizer': 'adam'}");

    let garbage = root.join("garbage.ckpt");
    std::fs::write(&garbage, b"not a checkpoint")?;
    let out = script("to-lightning", &[&garbage, &root.join("out.ckpt")]);
    check_clear_error(&out, &["garbage.ckpt", "not a lit checkpoint"]);

    let missing = root.join("absent.ckpt");
    let out = script("to-lightning", &[&missing, &root.join("out.ckpt")]);
    check_clear_error(&out, &["absent.ckpt"]);

    // The Python module's optimizer is not lit's: say which is which.
    let module = format!("{}:NetSgd", root.join("interop_net.py").display());
    let out = script("to-lightning", &[&"--module", &module, &last, &root.join("out.ckpt")]);
    check_clear_error(&out, &["Adam", "SGD"]);

    let out = script("to-lightning", &[&"--module", &"no_such_module:Net", &last, &root.join("out.ckpt")]);
    check_clear_error(&out, &["no_such_module"]);
    assert!(!root.join("out.ckpt").exists(), "nothing is written on an error");
    Ok(())
}

const MAKE_LIGHTNING_CHECKPOINT: &str = r#"
import json, sys
import torch
from safetensors.torch import save_file
from interop_net import Net, data, probe_input, trainer

root = sys.argv[1]
torch.manual_seed(3)
model = Net(lr=0.02, hidden=5, optimizer="adam")
t = trainer(root, 1)
t.fit(model, data())
t.save_checkpoint(f"{root}/lightning.ckpt")
sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
save_file(sd, f"{root}/expected.safetensors")
# A plain PyTorch state_dict of a wrapper holding the network as `model`, and one lacking a key.
torch.save({f"model.{k}": v for k, v in sd.items()}, f"{root}/wrapped.pt")
torch.save({k: v for k, v in sd.items() if k != "l2.bias"}, f"{root}/partial.pt")
with torch.no_grad():
    print(json.dumps(model(probe_input()).flatten().tolist()))
"#;

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn assert_bitwise_equal(vs: &nn::VarStore, expected: &[(String, Tensor)]) {
    let ours = weights(vs);
    let mut expected: Vec<(String, Tensor)> = expected.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ours.iter().map(|(n, _)| n).collect::<Vec<_>>(), expected.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for ((name, a), (_, b)) in ours.iter().zip(&expected) {
        assert!(a.equal(b), "`{name}` differs from the Lightning module's");
    }
}

fn load_error(result: lit::Result<()>) -> String {
    match result {
        Err(e @ lit::Error::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!("expected a checkpoint error, got {other:?}"),
        Ok(()) => panic!("expected a checkpoint error"),
    }
}

/// The reverse, for weights: a Lightning checkpoint (its `state_dict` and `hyper_parameters`)
/// becomes a lit checkpoint that `Net::load_from_checkpoint` rebuilds bitwise, as
/// `LightningModule.load_from_checkpoint` does in Python (`test_restore.py::test_model_saving_loading`);
/// a plain PyTorch `state_dict` loads with `Checkpoint::load(…)?.load_into(…)`, `model.` prefixes
/// stripped on request, and keys that do not fit are lit's usual error naming them.
#[test]
fn lit_loads_the_weights_of_a_lightning_checkpoint() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("interop-from-lightning");
    write_python_net(&root);
    let out = run_python(&root, MAKE_LIGHTNING_CHECKPOINT, &[&root]);
    let theirs: Vec<f64> = serde_json::from_str(out.lines().last().unwrap_or_default())?;
    let expected = Tensor::read_safetensors(root.join("expected.safetensors"))?;

    let converted = root.join("from-lightning.safetensors");
    check_ok(&script("from-lightning", &[&root.join("lightning.ckpt"), &converted]), "scripts/from-lightning");
    let model = Net::load_from_checkpoint(&converted)?;
    assert_eq!((model.cfg.lr, model.cfg.hidden), (0.02, 5), "hparams come from `hyper_parameters`");
    assert_eq!(model.cfg.optimizer, "adam");
    assert_bitwise_equal(&model.vs, &expected);
    let ours: Vec<f32> = Vec::try_from(lit::tch::no_grad(|| model.forward(&probe_input())).flatten(0, -1))?;
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((*a as f64 - b).abs() <= 1e-6, "logits: lit {ours:?}, Lightning {theirs:?}");
    }
    let meta = Checkpoint::load(&converted)?.meta;
    assert_eq!((meta.epoch, meta.global_step), (0, 0), "only weights come across");

    // A plain state_dict of a wrapper: strip `model.` to fit.
    let stripped = root.join("wrapped.safetensors");
    let out = script("from-lightning", &[&"--strip-prefix", &"model.", &root.join("wrapped.pt"), &stripped]);
    check_ok(&out, "scripts/from-lightning --strip-prefix");
    let mut fresh = Net::new(NetConfig { lr: 0.02, hidden: 5, optimizer: "adam".into() });
    Checkpoint::load(&stripped)?.load_into(&mut fresh.vs)?;
    assert_bitwise_equal(&fresh.vs, &expected);

    // Not stripped: lit names the keys that do not fit, and loads nothing.
    let unstripped = root.join("unstripped.safetensors");
    check_ok(&script("from-lightning", &[&root.join("wrapped.pt"), &unstripped]), "scripts/from-lightning");
    let mut other = Net::new(NetConfig { lr: 0.02, hidden: 5, optimizer: "adam".into() });
    let before = weights(&other.vs);
    let e = load_error(Checkpoint::load(&unstripped)?.load_into(&mut other.vs));
    assert!(e.contains("missing variables") && e.contains("unexpected variables [\"model.l1.bias\""), "{e}");
    assert_bitwise_equal(&other.vs, &before);

    let partial = root.join("partial.safetensors");
    check_ok(&script("from-lightning", &[&root.join("partial.pt"), &partial]), "scripts/from-lightning");
    let e = load_error(Checkpoint::load(&partial)?.load_into(&mut other.vs));
    assert!(e.contains("missing variables [\"l2.bias\"]"), "{e}");

    // Wrong inputs are one-line errors.
    let garbage = root.join("garbage.pt");
    std::fs::write(&garbage, b"not a checkpoint")?;
    check_clear_error(&script("from-lightning", &[&garbage, &root.join("x.safetensors")]), &["garbage.pt"]);
    let out =
        script("from-lightning", &[&"--strip-prefix", &"net.", &root.join("wrapped.pt"), &root.join("x.safetensors")]);
    check_clear_error(&out, &["net."]);
    assert!(!root.join("x.safetensors").exists(), "nothing is written on an error");
    Ok(())
}
