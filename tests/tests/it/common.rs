//! Helpers shared by the tests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lit::tch::{Device, Kind, Tensor};

/// The path of the temporary directory `temp_dir(name)` makes.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lit-tests-{}-{name}", std::process::id()))
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// A CPU Trainer that prints nothing and logs nowhere (checkpointing stays on, under the
/// current directory's `checkpoints/` unless a test sets a root).
pub fn quiet() -> lit::TrainerBuilder {
    lit::Trainer::builder().accelerator("cpu").enable_progress_bar(false).enable_model_summary(false).logger(false)
}

/// A Trainer writing under `root` with no progress bar, checkpoints or loggers: what most
/// tests start from.
pub fn quiet_trainer(root: &std::path::Path) -> lit::TrainerBuilder {
    lit::Trainer::builder().default_root_dir(root).enable_progress_bar(false).enable_checkpointing(false).logger(false)
}

/// `n` batches of a linear regression problem: x `[4, 2]`, y `[4, 1]`.
pub fn regression_batches(n: usize) -> Vec<(Tensor, Tensor)> {
    (0..n)
        .map(|i| {
            let x = Tensor::from_slice(&[i as f32, 1.0, 2.0, -1.0, 0.5, 0.25, -2.0, 3.0]).view([4, 2]);
            let y = x.sum_dim_intlist(-1, true, Kind::Float) * 0.5;
            (x, y)
        })
        .collect()
}

/// Whether autograd is recording right now, observed (not reported): an operation on a tensor
/// that requires grad yields one that requires grad only when autograd is on.
pub fn grad_mode() -> bool {
    let leaf = Tensor::ones([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    (&leaf * 2.0).requires_grad()
}

/// The root of the repository (for the bundled data).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `#[ignore]`d test `name` of this binary in a process of its own (for tests that
/// change libtorch's process-wide state: its generator, anomaly mode, or that read what the
/// process prints), checks it passed, and returns its standard output and error.
pub fn run_in_own_process(name: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}{stderr}");
    stdout + &stderr
}

/// What a run writes to `tracing` (warnings, infos) while `f` runs on this thread.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    use tracing_subscriber::util::SubscriberInitExt;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .finish();
    let out = {
        let _guard = subscriber.set_default();
        f()
    };
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}
