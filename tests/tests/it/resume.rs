//! Exact resume, the checkpoint callbacks, and checkpoints that PyTorch reads.

use std::process::Command;

use lit::callbacks::{EarlyStopping, LearningRateMonitor, Mode, ModelCheckpoint};
use lit::checkpoint::Checkpoint;
use lit::data::{Batches, DataLoader, TensorDataset};
use lit::optim::{SchedulerConfig, StepLr};
use lit::prelude::*;

use crate::common::temp_dir;

type B = (Tensor, Tensor);

#[hparams]
pub struct MlpConfig {
    pub hidden: i64,
}

/// A small MLP on a synthetic regression task, with Adam and an epoch scheduler.
#[lightning_module]
struct Mlp {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    #[hparams]
    cfg: MlpConfig,
}

#[lightning_module]
impl Mlp {
    fn new(cfg: MlpConfig) -> Self {
        seed_everything(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 6, cfg.hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 2, Default::default());
        Mlp { vs, l1, l2, cfg }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu())
    }

    fn training_step(&mut self, (x, y): B, cx: &mut Ctx) -> Tensor {
        let loss = self.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("train_loss", &loss);
        loss
    }

    fn validation_step(&mut self, (x, y): B, batch_idx: usize, cx: &mut Ctx) {
        // A scripted validation loss, so that tests know which epoch is best.
        let scripted = [0.5, 0.3, 0.4, 0.2, 0.6, 0.7, 0.8, 0.9];
        let _ = (x, y, batch_idx);
        cx.log("val_loss", scripted[cx.current_epoch().min(scripted.len() - 1)]);
    }

    fn configure_optimizers(&self) -> Optimizers {
        Optimizers::from(Adam::new(1e-2)).scheduler(SchedulerConfig::new(StepLr::new(1, 0.7)))
    }
}

fn data() -> DataLoader<TensorDataset<B>> {
    let x = Tensor::arange(64 * 6, (Kind::Float, Device::Cpu)).view([64, 6]).sin();
    let y = Tensor::arange(64 * 2, (Kind::Float, Device::Cpu)).view([64, 2]).cos();
    DataLoader::new(TensorDataset::new((x, y)).unwrap()).batch_size(8).shuffle(true).seed(9)
}

fn weights(m: &Mlp) -> Vec<Tensor> {
    let mut vars: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().map(|(_, t)| t).collect()
}

fn quiet(root: &std::path::Path) -> lit::TrainerBuilder {
    Trainer::builder()
        .accelerator("cpu")
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .default_root_dir(root)
        .num_sanity_val_steps(0)
}

#[test]
fn an_interrupted_run_resumes_to_bitwise_the_same_weights() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("resume-exact");
    // Every run starts from these weights: tests running in parallel draw from libtorch's global
    // generator too, so seeding it in `new` alone would not make the runs start equal.
    let init = Mlp::new(MlpConfig { hidden: 16 });
    let fresh = || -> lit::Result<Mlp> {
        let mut m = Mlp::new(MlpConfig { hidden: 16 });
        m.vs.copy(&init.vs)?;
        Ok(m)
    };
    // Straight: two epochs of 8 batches.
    let mut straight = fresh()?;
    quiet(&root).max_epochs(2).build()?.fit(&mut straight, data(), ())?;

    for stop_at in [3, 8, 11] {
        // Interrupted after `stop_at` steps (mid-epoch 1 for 11, at the epoch boundary for 8),
        // saved, and resumed by a new process's worth of objects.
        let mut first = fresh()?;
        let mut trainer = quiet(&root).max_epochs(2).max_steps(stop_at).build()?;
        trainer.fit(&mut first, data(), ())?;
        let path = root.join(format!("interrupted-{stop_at}.ckpt"));
        trainer.save_checkpoint(&path, &mut first)?;
        let loops = Checkpoint::load(&path)?.meta.loops;
        assert_eq!((loops.epoch, loops.batch_in_epoch), (stop_at / 8, stop_at % 8), "where the run stopped");

        let mut resumed = Mlp::new(MlpConfig { hidden: 16 });
        let mut trainer = quiet(&root).max_epochs(2).build()?;
        trainer.fit_from_checkpoint(&mut resumed, data(), (), &path)?;
        assert_eq!(trainer.global_step(), 16, "global_step continues without a gap or a repeat");
        assert_eq!(trainer.current_epoch(), 2);
        for (a, b) in weights(&straight).iter().zip(weights(&resumed)) {
            assert!(a.equal(&b), "weights differ after resuming at step {stop_at}");
        }
    }
    Ok(())
}

#[test]
fn model_checkpoint_keeps_the_best_k_and_test_loads_the_best() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("topk");
    let dir = root.join("ckpts");
    let callback = ModelCheckpoint::new()
        .dirpath(&dir)
        .monitor("val_loss")
        .mode(Mode::Min)
        .save_top_k(2)
        .save_last(true)
        .filename("{epoch}-{val_loss:.2f}");
    let mut model = Mlp::new(MlpConfig { hidden: 8 });
    let mut trainer = quiet(&root).max_epochs(6).callback(callback).build()?;
    trainer.fit(&mut model, data(), data())?;
    let mut files: Vec<String> =
        std::fs::read_dir(&dir)?.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    // Scripted val_loss by epoch: 0.5, 0.3, 0.4, 0.2, 0.6, 0.7: the best two are epochs 3 and 1.
    assert_eq!(files, ["epoch=1-val_loss=0.30.ckpt", "epoch=3-val_loss=0.20.ckpt", "last.ckpt"]);
    let best = Checkpoint::load(dir.join("epoch=3-val_loss=0.20.ckpt"))?;
    assert_eq!(best.meta.epoch, 3);
    assert_eq!(best.meta.loops.epoch, 3, "a checkpoint at an epoch-end validation resumes the epoch's end");

    // test_from_checkpoint("best") loads epoch 3's weights first.
    let reloaded = Mlp::load_from_checkpoint(dir.join("epoch=3-val_loss=0.20.ckpt"))?;
    let mut fresh = Mlp::new(MlpConfig { hidden: 8 });
    trainer.test_from_checkpoint(&mut fresh, Batches::new(vec![]), "best").ok();
    for (a, b) in weights(&reloaded).iter().zip(weights(&fresh)) {
        assert!(a.equal(&b), "test_from_checkpoint(\"best\") loads the best weights");
    }

    // Lightning's `ckpt_path=` on any entry point: `trainer.ckpt_path("best").validate(…)` and
    // `.predict(…)` load the best weights, `"last"` the last checkpoint's, a path that file's;
    // `fit` continues from it.
    for (ckpt, expected) in [("best", dir.join("epoch=3-val_loss=0.20.ckpt")), ("last", dir.join("last.ckpt"))] {
        let reloaded = Mlp::load_from_checkpoint(&expected)?;
        for stage in ["validate", "predict"] {
            let mut fresh = Mlp::new(MlpConfig { hidden: 8 });
            match stage {
                "validate" => drop(trainer.ckpt_path(ckpt).validate(&mut fresh, Batches::new(vec![]))),
                _ => drop(trainer.ckpt_path(ckpt).predict(&mut fresh, Batches::new(vec![]))),
            }
            for (a, b) in weights(&reloaded).iter().zip(weights(&fresh)) {
                assert!(a.equal(&b), "ckpt_path({ckpt:?}).{stage} loads that checkpoint's weights");
            }
        }
    }
    let mut resumed = Mlp::new(MlpConfig { hidden: 8 });
    let mut again = quiet(&root).max_epochs(7).build()?;
    let last = dir.join("last.ckpt").display().to_string();
    again.ckpt_path(last).fit(&mut resumed, data(), data())?;
    assert_eq!(again.current_epoch(), 7, "fit continues from the last checkpoint's epoch 6");
    let mut no_callback = quiet(&root).max_epochs(1).enable_checkpointing(false).build()?;
    let e = no_callback.ckpt_path("best").validate(&mut resumed, data()).unwrap_err().to_string();
    assert!(e.contains("no `best` checkpoint"), "{e}");
    Ok(())
}

#[test]
fn early_stopping_stops_on_a_plateau_and_keeps_its_state() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("early");
    let mut model = Mlp::new(MlpConfig { hidden: 8 });
    let mut trainer = quiet(&root).max_epochs(8).callback(EarlyStopping::new("val_loss").patience(2)).build()?;
    trainer.fit(&mut model, data(), data())?;
    // Best 0.2 at epoch 3; epochs 4 and 5 do not improve: stop after epoch 5.
    assert_eq!(trainer.current_epoch(), 6);
    let state = trainer.callbacks().iter().find_map(|c| c.state_dict().filter(|s| s.get("wait").is_some())).unwrap();
    assert!((state["best"].as_f64().unwrap() - 0.2).abs() < 1e-12, "{state}");
    assert_eq!(state["wait"], 2);

    let mut restored = EarlyStopping::new("val_loss");
    restored.load_state_dict(&state)?;
    assert!(restored.best_score().is_some_and(|b| (b - 0.2).abs() < 1e-12));

    let e = quiet(&root)
        .max_epochs(1)
        .callback(EarlyStopping::new("val_acc"))
        .build()?
        .fit(&mut Mlp::new(MlpConfig { hidden: 8 }), data(), data())
        .unwrap_err()
        .to_string();
    assert!(e.contains("EarlyStopping monitors `val_acc`, which was not logged") && e.contains("val_loss"), "{e}");
    Ok(())
}

#[test]
fn learning_rates_are_logged_and_max_time_stops() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("lrmon");
    let mut model = Mlp::new(MlpConfig { hidden: 8 });
    let mut trainer = quiet(&root).max_epochs(2).callback(LearningRateMonitor::default()).build()?;
    trainer.fit(&mut model, data(), ())?;
    let lr = trainer.callback_metrics()["lr-Adam"];
    assert!((lr - 1e-2 * 0.7).abs() < 1e-9, "the second epoch's learning rate, {lr}");

    let mut trainer = quiet(&root).max_epochs(100).max_time("00:00:00:00").build()?;
    trainer.fit(&mut Mlp::new(MlpConfig { hidden: 8 }), data(), ())?;
    assert_eq!(trainer.global_step(), 1, "max_time 0 stops after the first step");
    let e = quiet(&root).max_time("12 fortnights").build().err().expect("a bad max_time").to_string();
    assert!(e.contains("`max_time`") && e.contains("DD:HH:MM:SS"), "{e}");
    Ok(())
}

#[test]
fn a_failed_save_keeps_the_earlier_checkpoints() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("unwritable");
    let dir = root.join("ckpts");
    let mut model = Mlp::new(MlpConfig { hidden: 8 });
    let mut trainer =
        quiet(&root).max_epochs(1).callback(ModelCheckpoint::new().dirpath(&dir).save_top_k(-1)).build()?;
    trainer.fit(&mut model, data(), ())?;
    let kept: Vec<_> = std::fs::read_dir(&dir)?.collect();
    assert_eq!(kept.len(), 1);
    // The checkpoint directory's parent becomes a file: the next save cannot be written.
    let blocked = root.join("blocked");
    std::fs::write(&blocked, b"not a directory")?;
    let mut trainer =
        quiet(&root).max_epochs(1).callback(ModelCheckpoint::new().dirpath(blocked.join("ckpts"))).build()?;
    let e = trainer.fit(&mut model, data(), ()).unwrap_err().to_string();
    assert!(e.contains("blocked"), "the error names the path: {e}");
    assert_eq!(std::fs::read_dir(&dir)?.count(), 1, "earlier checkpoints are intact");
    Ok(())
}

#[test]
fn a_flipped_bit_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("bitflip");
    let path = root.join("m.ckpt");
    let mut model = Mlp::new(MlpConfig { hidden: 8 });
    quiet(&root).build()?.save_checkpoint(&path, &mut model)?;
    let mut bytes = std::fs::read(&path)?;
    let at = bytes.len() - 10; // inside the last tensor's data
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes)?;
    let e = Mlp::load_from_checkpoint(&path).err().expect("a corrupt checkpoint").to_string();
    assert!(e.contains("m.ckpt") && e.contains("corrupt (checksum mismatch)"), "{e}");
    Ok(())
}

#[test]
fn pytorch_reads_the_weights_and_computes_the_same_logits() -> Result<(), Box<dyn std::error::Error>> {
    let root = temp_dir("pytorch");
    let path = root.join("mlp.ckpt");
    let mut model = Mlp::new(MlpConfig { hidden: 32 });
    quiet(&root).max_epochs(1).build()?.fit(&mut model, data(), ())?;
    let mut trainer = quiet(&root).build()?;
    trainer.save_checkpoint(&path, &mut model)?;

    let x = Tensor::arange(4 * 6, (Kind::Float, Device::Cpu)).view([4, 6]).cos();
    let ours: Vec<f32> = Vec::try_from(lit::tch::no_grad(|| model.forward(&x)).flatten(0, -1)).unwrap();
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let script = r#"
import sys, json, torch
from safetensors.torch import load_file
w = load_file(sys.argv[1])
net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
net.load_state_dict({"0.weight": w["l1.weight"], "0.bias": w["l1.bias"], "2.weight": w["l2.weight"], "2.bias": w["l2.bias"]})
x = torch.arange(4 * 6, dtype=torch.float32).view(4, 6).cos()
with torch.no_grad():
    print(json.dumps(net(x).flatten().tolist()))
"#;
    let out = Command::new(python).arg("-c").arg(script).arg(&path).output().expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    let diff: f64 = ours.iter().zip(&theirs).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = theirs.iter().map(|b| b * b).sum::<f64>().sqrt();
    assert!(diff / norm <= 1e-6, "relative difference {} between lit and PyTorch", diff / norm);
    Ok(())
}

#[test]
fn resume_restores_the_random_generator() {
    // In its own process: the tests of this binary share libtorch's global generator.
    let out = Command::new(env!("CARGO_BIN_EXE_dropout_resume")).arg(temp_dir("dropout-resume")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "resumed weights equal the uninterrupted run's: true");
}
