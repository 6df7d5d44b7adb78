//! Faults: Ctrl-C, SIGKILL during checkpoint writes, non-finite losses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lit::checkpoint::Checkpoint;
use lit::data::Batches;
use lit::prelude::*;

use crate::common::temp_dir;

fn trainee(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainee"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits until `path` exists (the child is training and checkpointing).
fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the trainee exited early");
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
                .collect()
        })
        .unwrap_or_default()
}

fn resume(ckpt: &Path, dir: &Path) -> String {
    let out = trainee(&["resume", ckpt.to_str().unwrap(), dir.to_str().unwrap(), "3"]).output().unwrap();
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ctrl_c_saves_a_resumable_checkpoint() {
    let dir = temp_dir("sigint");
    let mut child = trainee(&["train", dir.to_str().unwrap()]).spawn().unwrap();
    wait_for(&dir.join("ckpts/last.ckpt"), &mut child);
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let path = stdout.trim().strip_prefix("interrupted: ").expect("the checkpoint path").to_string();
    assert!(path.ends_with("ckpts/interrupted.ckpt"), "where ModelCheckpoint writes: {path}");
    let ckpt = Checkpoint::load(&path).unwrap();
    assert!(ckpt.meta.global_step > 0);
    let resumed = resume(Path::new(&path), &dir);
    assert_eq!(
        resumed.trim(),
        format!("resumed at step {}, now at step {}", ckpt.meta.global_step, ckpt.meta.global_step + 3)
    );
}

#[test]
fn sigkill_during_checkpoint_writes_leaves_only_loadable_checkpoints() {
    let dir = temp_dir("sigkill");
    let ckpts = dir.join("ckpts");
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut kills = 0;
    while kills < 20 {
        let last = ckpts.join("last.ckpt");
        let before = std::fs::metadata(&last).and_then(|m| m.modified()).ok();
        let mut child = trainee(&["train", dir.to_str().unwrap()]).spawn().unwrap();
        // Wait until this process is writing checkpoints (one per step), then kill it at a
        // random moment of the next 0–100 ms.
        let start = Instant::now();
        while std::fs::metadata(&last).and_then(|m| m.modified()).ok() == before {
            assert!(child.try_wait().unwrap().is_none(), "the trainee exited early");
            assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint after 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_micros((seed >> 33) % 100_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        for path in checkpoints(&ckpts) {
            if let Err(e) = Checkpoint::load(&path) {
                panic!("after kill {kills}, {} does not load: {e}", path.display());
            }
        }
    }
    let newest = checkpoints(&ckpts)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap())
        .expect("checkpoints were written");
    let step = Checkpoint::load(&newest).unwrap().meta.global_step;
    assert_eq!(resume(&newest, &dir).trim(), format!("resumed at step {step}, now at step {}", step + 3));
}

#[lightning_module]
struct Exploding {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Exploding {
    fn training_step(&mut self, x: Tensor, batch_idx: usize) -> Tensor {
        let loss = (&self.w * &x).sum(Kind::Float);
        if batch_idx == 1 { loss * f64::NAN } else { loss }
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
}

#[test]
fn a_non_finite_loss_fails_or_is_skipped() -> lit::Result<()> {
    let build = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().ones("w", &[2]);
        Exploding { vs, w }
    };
    let batches = || Batches::new((0..3).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
    let quiet = || {
        Trainer::builder()
            .accelerator("cpu")
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .logger(false)
            .enable_checkpointing(false)
    };

    let e = quiet()
        .max_epochs(1)
        .nonfinite_loss(lit::NonFinitePolicy::Error)
        .build()?
        .fit(&mut build(), batches(), ())
        .unwrap_err();
    assert!(matches!(e, lit::Error::NonFiniteLoss { batch_idx: 1, .. }), "{e}");
    assert!(e.to_string().contains("batch 1 in epoch 0 is NaN"), "{e}");

    let mut model = build();
    let mut trainer = quiet().max_epochs(1).nonfinite_loss(lit::NonFinitePolicy::Skip).build()?;
    trainer.fit(&mut model, batches(), ())?;
    assert_eq!((trainer.global_step(), trainer.skipped_steps()), (2, 1));
    assert!(model.w.isfinite().all().int64_value(&[]) == 1, "the NaN never reached the weights");
    Ok(())
}

/// lit's Ctrl-C handler lives as long as `fit`: after it returns, Ctrl-C ends the program as it
/// would have before (here: the default action, death by SIGINT).
#[cfg(unix)]
#[test]
fn ctrl_c_after_fit_acts_as_before_fit() {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp_dir("fault-sigint-after-fit");
    let mut child = trainee(&["fit-then-wait", dir.to_str().unwrap()]).spawn().unwrap();
    wait_for(&dir.join("fit-done"), &mut child);
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "Ctrl-C after fit was ignored");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.signal(), Some(2), "killed by SIGINT; stdout: {}", String::from_utf8_lossy(&out.stdout));
}

/// Runs the trainee to its end; returns its stderr.
fn trainee_stderr(args: &[&str]) -> String {
    let out = trainee(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}{stderr}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// With no `nonfinite_loss` policy and no `tracing` subscriber, a NaN training loss is still
/// reported, once, naming the epoch and the options that handle it.
#[test]
fn a_nan_loss_is_reported_without_a_subscriber() {
    let dir = temp_dir("fault-nan-warning");
    let stderr = trainee_stderr(&["nan-loss", dir.to_str().unwrap()]);
    let warning = "lit warning: the training loss was NaN or infinite in epoch 0";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert!(stderr.contains("nonfinite_loss(NonFinitePolicy::Error)"), "{stderr}");
    assert!(!stderr.contains("in epoch 1"), "reported once per run: {stderr}");
}

/// A fit that trains nothing (an empty training set, `max_epochs(0)`) says so.
#[test]
fn a_fit_that_trains_nothing_warns() {
    let dir = temp_dir("fault-trains-nothing");
    let stderr = trainee_stderr(&["nothing", dir.to_str().unwrap(), "empty"]);
    assert!(stderr.contains("lit warning: the training loader has no batches"), "{stderr}");
    let stderr = trainee_stderr(&["nothing", dir.to_str().unwrap(), "max-epochs-0"]);
    assert!(stderr.contains("lit warning: `max_epochs` or `max_steps` is 0: `fit` trains nothing"), "{stderr}");
}

/// `batch_size(0)` is an error naming the option, not a silent batch size of 1.
#[test]
fn a_batch_size_of_zero_is_an_error() {
    use lit::data::{DataLoader, TensorDataset};
    let x = Tensor::ones([8, 2], (Kind::Float, Device::Cpu));
    let loader = DataLoader::new(TensorDataset::new(x).unwrap()).batch_size(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().ones("w", &[2]);
    let mut model = Exploding { vs, w };
    let mut trainer = crate::common::quiet_trainer(&temp_dir("fault-batch-size-0")).max_epochs(1).build().unwrap();
    let e = trainer.fit(&mut model, loader, ()).unwrap_err().to_string();
    assert!(e.contains("batch_size") && e.contains("at least 1, got 0"), "{e}");
}

#[lightning_module]
struct Accumulating {
    vs: nn::VarStore,
    layer: nn::Linear,
}

#[lightning_module]
impl Accumulating {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 2, 1, Default::default());
        Accumulating { vs, layer }
    }
    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.layer.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean)
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.05).momentum(0.9).into()
    }
}

/// Sends this process SIGINT (a Ctrl-C) after training batch `at` (counted over the run).
struct CtrlCAt {
    at: usize,
    seen: usize,
}

impl Callback for CtrlCAt {
    fn on_train_batch_end(&mut self, _: Option<&lit::StepOutput>, _: usize, _: &mut Ctx) -> lit::Result<()> {
        if self.seen == self.at {
            Command::new("kill").args(["-INT", &std::process::id().to_string()]).status().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.seen += 1;
        Ok(())
    }
}

/// Run in a process of its own by `ctrl_c_inside_an_accumulation_window_resumes_exactly` (it
/// sends SIGINT to its process).
#[test]
#[ignore = "run by ctrl_c_inside_an_accumulation_window_resumes_exactly, in a process of its own"]
fn accumulation_interrupt_child() {
    let data = || Batches::new(crate::common::regression_batches(7));
    let trainer = |root: &Path| crate::common::quiet_trainer(root).accumulate_grad_batches(3).max_epochs(3);
    let root = temp_dir("fault-accumulation-interrupt");
    let mut whole = Accumulating::new();
    let mut interrupted = Accumulating::new();
    interrupted.vs.copy(&whole.vs).unwrap();
    trainer(&root).build().unwrap().fit(&mut whole, data(), ()).unwrap();

    // Batch 11 is the second of epoch 1's second window (batches 10, 11, 12).
    let mut t = trainer(&root).callback(CtrlCAt { at: 11, seen: 0 }).build().unwrap();
    let checkpoint = match t.fit(&mut interrupted, data(), ()) {
        Err(lit::Error::Interrupted { checkpoint: Some(path) }) => path,
        other => panic!("expected an interrupt with a checkpoint, got {other:?}"),
    };
    let loops = Checkpoint::load(&checkpoint).unwrap().meta.loops;
    assert_eq!((loops.epoch, loops.batch_in_epoch), (1, 6), "taken where the window closes, after batch 12");

    let mut resumed = Accumulating::new();
    trainer(&root).build().unwrap().fit_from_checkpoint(&mut resumed, data(), (), &checkpoint).unwrap();
    for (name, w) in whole.vs.variables() {
        assert!(w.equal(&resumed.vs.variables()[&name]), "`{name}` differs from the uninterrupted run's");
    }
}

/// Port of the promise "resuming is bitwise exact" to accumulation: Ctrl-C in the middle of an
/// `accumulate_grad_batches(3)` window is taken when the window closes, and the resumed run
/// ends with the uninterrupted run's weights, bitwise.
#[cfg(unix)]
#[test]
fn ctrl_c_inside_an_accumulation_window_resumes_exactly() {
    crate::common::run_in_own_process("faults::accumulation_interrupt_child");
}

/// A module whose hooks go wrong on purpose: a shape mismatch (a panic inside tch) in
/// `training_step` or `validation_step` at a given epoch and batch, or a detached loss.
#[lightning_module]
struct Faulty {
    vs: nn::VarStore,
    w: Tensor,
    train_panic_at: Option<(usize, usize)>,
    val_panic_at: Option<usize>,
    detach: bool,
}

#[lightning_module]
impl Faulty {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().ones("w", &[2, 1]);
        Faulty { vs, w, train_panic_at: None, val_panic_at: None, detach: false }
    }
    fn training_step(&mut self, (x, y): (Tensor, Tensor), batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let x = if self.train_panic_at == Some((cx.current_epoch(), batch_idx)) { x.repeat([1, 2]) } else { x };
        let loss = x.matmul(&self.w).mse_loss(&y, lit::tch::Reduction::Mean);
        if self.detach { loss.detach() } else { loss }
    }
    fn validation_step(&mut self, (x, _): (Tensor, Tensor), batch_idx: usize, cx: &mut Ctx) {
        let x = if self.val_panic_at == Some(batch_idx) { x.repeat([1, 3]) } else { x };
        cx.log("val", x.matmul(&self.w).mean(Kind::Float));
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

/// Records the errors `on_exception` receives.
struct SeesErrors(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Callback for SeesErrors {
    fn on_exception(&mut self, error: &lit::Error, _: &mut Ctx) {
        self.0.lock().unwrap().push(error.to_string());
    }
}

fn faulty_fit(model: &mut Faulty, name: &str) -> (String, Vec<String>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut trainer = crate::common::quiet_trainer(&temp_dir(name))
        .max_epochs(3)
        .num_sanity_val_steps(0)
        .callback(SeesErrors(seen.clone()))
        .build()
        .unwrap();
    let regression = || Batches::new(crate::common::regression_batches(4));
    let error = trainer.fit(model, regression(), regression()).expect_err("the run fails").to_string();
    let seen = seen.lock().unwrap().clone();
    (error, seen)
}

/// A panic inside a hook (here tch's, on a shape mismatch) is an error naming the hook, the
/// epoch and the batch, with libtorch's message and none of its C++ frames; callbacks see it in
/// `on_exception`, as after any error.
#[test]
fn a_panic_in_a_hook_is_an_error_naming_the_hook_epoch_and_batch() {
    let mut model = Faulty::new();
    model.train_panic_at = Some((1, 2));
    let (error, seen) = faulty_fit(&mut model, "fault-panic-train");
    assert!(error.starts_with("`training_step` failed: panicked in epoch 1, batch 2: "), "{error}");
    assert!(error.contains("shapes cannot be multiplied"), "{error}");
    assert!(!error.contains("Exception raised from") && !error.contains("frame #"), "{error}");
    assert_eq!(seen, std::slice::from_ref(&error));
    // Nothing of batch 2 was applied: the run's state was saved first, and resumes there.
    let saved = crate::common::temp_path("fault-panic-train").join("checkpoints/on_exception.ckpt");
    assert!(error.ends_with(&format!("(a resumable checkpoint was saved first: {})", saved.display())), "{error}");
    let loops = Checkpoint::load(&saved).unwrap().meta.loops;
    assert_eq!((loops.epoch, loops.batch_in_epoch), (1, 2));
    let mut fixed = Faulty::new();
    let mut trainer = crate::common::quiet_trainer(&temp_dir("fault-panic-resume")).max_epochs(3).build().unwrap();
    let regression = || Batches::new(crate::common::regression_batches(4));
    trainer.fit_from_checkpoint(&mut fixed, regression(), regression(), &saved).unwrap();
    assert_eq!(trainer.global_step(), 12, "the resumed run trains the rest: 4 batches x 3 epochs");

    let mut model = Faulty::new();
    model.val_panic_at = Some(1);
    let (error, _) = faulty_fit(&mut model, "fault-panic-val");
    assert!(error.starts_with("`validation_step` failed: panicked in validation (epoch 0), batch 1: "), "{error}");
    assert!(!error.contains("checkpoint"), "no checkpoint is promised outside training_step: {error}");
}

/// A loss without an autograd graph says it is `training_step`'s loss, which batch, and why.
#[test]
fn a_detached_loss_names_the_step_and_the_batch() {
    let mut model = Faulty::new();
    model.detach = true;
    let (error, _) = faulty_fit(&mut model, "fault-detached");
    assert!(
        error.starts_with(
            "`training_step` failed: the loss of epoch 0, batch 0 cannot be back-propagated: it has no autograd graph"
        ),
        "{error}"
    );
    assert!(!error.contains("frame #"), "{error}");
}

/// A checkpoint directory that cannot be made (here: under a file) is an error when `fit`
/// starts, naming the directory, before any training.
#[test]
fn an_unusable_checkpoint_directory_is_an_error_before_training() {
    let root = temp_dir("fault-ckpt-dir");
    std::fs::write(root.join("a-file"), b"").unwrap();
    let dir = root.join("a-file").join("ckpts");
    let mut model = Faulty::new();
    let mut trainer = crate::common::quiet_trainer(&root)
        .enable_checkpointing(true)
        .max_epochs(1)
        .callback(lit::callbacks::ModelCheckpoint::new().dirpath(&dir))
        .build()
        .unwrap();
    let e = trainer.fit(&mut model, Batches::new(crate::common::regression_batches(2)), ()).unwrap_err();
    assert!(matches!(e, lit::Error::Io { .. }) && e.to_string().contains("a-file/ckpts"), "{e}");
    assert_eq!(trainer.global_step(), 0, "nothing was trained");
}

/// Runs `trainee ddp` with a distributed environment; returns (exit code, stderr, seconds).
fn ddp_trainee(env: &[(&str, &str)], join_secs: &str) -> (Option<i32>, String, f64) {
    let dir = temp_dir("fault-ddp-env");
    let mut command = trainee(&["ddp", dir.to_str().unwrap(), join_secs]);
    command.envs(env.iter().copied());
    let start = Instant::now();
    let out = command.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), start.elapsed().as_secs_f64())
}

/// A distributed environment that cannot work fails at once and says why: a rank outside the
/// world, a port outside 1–65535; joining a rendezvous nobody hosts gives up after the join
/// timeout (here 2 s), not the collective timeout (30 minutes by default).
#[test]
fn a_bad_distributed_environment_is_an_immediate_precise_error() {
    let base = [("MASTER_ADDR", "127.0.0.1"), ("LOCAL_RANK", "0")];
    let env = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();

    let (code, stderr, secs) = ddp_trainee(&env(&[("RANK", "3"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "29511")]), "60");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("RANK=3 and WORLD_SIZE=2: RANK must be below WORLD_SIZE"), "{stderr}");
    assert!(secs < 20.0, "immediate: {secs} s");

    let (code, stderr, _) = ddp_trainee(&env(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "70000")]), "60");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("MASTER_PORT=70000 is not a port (1 to 65535)"), "{stderr}");

    // Rank 1 of 2, and no rank 0 hosting the rendezvous on this port.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let free: &'static str = Box::leak(free.into_boxed_str());
    let (code, stderr, secs) = ddp_trainee(&env(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", free)]), "2");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("init_process_group"), "{stderr}");
    assert!(secs < 30.0, "the join timeout bounds the wait: {secs} s");
    assert!(!stderr.contains("frame #"), "the C++ frames are trimmed: {stderr}");
}

/// Ports `callbacks/test_on_exception_checkpoint.py`'s check: with `OnExceptionCheckpoint(dirpath)`
/// a `fit` that fails (here a panic in `validation_step`, where lit saves no checkpoint of its
/// own) writes `dirpath/on_exception.ckpt`, with the weights and step of the moment, and says so.
#[test]
fn on_exception_checkpoint_saves_when_fit_fails() {
    let root = temp_dir("fault-on-exception-callback");
    let mut model = Faulty::new();
    model.val_panic_at = Some(1);
    let mut trainer = crate::common::quiet_trainer(&root)
        .max_epochs(3)
        .num_sanity_val_steps(0)
        .callback(lit::callbacks::OnExceptionCheckpoint::new(root.join("saved")).filename("crash"))
        .build()
        .unwrap();
    let regression = || Batches::new(crate::common::regression_batches(4));
    trainer.fit(&mut model, regression(), regression()).expect_err("validation panics");
    let saved = Checkpoint::load(root.join("saved/crash.ckpt")).expect("the callback's checkpoint");
    assert_eq!(saved.meta.global_step, 4, "the state when validation failed: epoch 0's 4 steps");
    let mut reloaded = Faulty::new();
    saved.load_into(&mut reloaded.vs).unwrap();
    assert!(reloaded.w.equal(&model.w), "the weights of the moment");
}
