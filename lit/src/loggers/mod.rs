//! Loggers: where logged metrics and hyper-parameters go. Several at once, behind one
//! [`Logger`] trait; the default is a [`CsvLogger`] under the Trainer's `default_root_dir`.

mod csv;
mod mlflow;
pub(crate) mod plot;
mod tensorboard;
mod yaml;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use csv::CsvLogger;
pub use mlflow::{LogModel, MlflowClient, MlflowError, MlflowLogger, MlflowMetric, MlflowRunInfo};
pub use tensorboard::{SummaryWriter, TensorBoardLogger};

use crate::error::{Error, Result};

/// A destination for metrics and hyper-parameters, as Lightning's `Logger`. The Trainer calls it
/// on global rank 0 only.
pub trait Logger: Any {
    /// The logger's name (the directory under the root, e.g. `lightning_logs`).
    fn name(&self) -> &str;
    /// The run's version (`version_N`).
    fn version(&self) -> String;
    /// The run's directory, once created.
    fn log_dir(&self) -> Option<&Path>;
    /// Records the module's hyper-parameters (once, when training starts).
    fn log_hyperparams(&mut self, params: &serde_json::Value) -> Result<()>;
    /// Records metrics at `step`.
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()>;
    /// Writes buffered records out.
    fn save(&mut self) -> Result<()> {
        Ok(())
    }
    /// The run ended with `status`.
    fn finalize(&mut self, status: RunStatus) -> Result<()> {
        let _ = status;
        self.save()
    }
    /// A `ModelCheckpoint` had the Trainer write a checkpoint (Lightning's
    /// `after_save_checkpoint`): loggers that keep checkpoints as artifacts take them from here.
    fn after_save_checkpoint(&mut self, checkpoint: &SavedCheckpoint<'_>) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }
    /// Takes `version` (`version_N`, the Trainer's first logger's) when this logger was given
    /// none and has not made its directory yet, so that one run's loggers share one `version_N`
    /// as in Lightning. Loggers without versions ignore it.
    fn share_version(&mut self, version: &str) {
        let _ = version;
    }
    /// The logger as `Any`, to reach its concrete type (its experiment handle).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A checkpoint file the Trainer has just written for a `ModelCheckpoint`, as
/// [`Logger::after_save_checkpoint`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SavedCheckpoint<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its value of the `ModelCheckpoint`'s monitored metric (`None` without a monitor, and
    /// for `last.ckpt`).
    pub score: Option<f64>,
    /// The `ModelCheckpoint`'s best checkpoint so far (its `best_model_path`).
    pub best_model_path: Option<&'a Path>,
}

/// How a run ended, for [`Logger::finalize`] (Lightning's `"success"`, `"failed"`,
/// `"interrupted"`; `Display` writes those words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunStatus {
    /// The run finished.
    Success,
    /// A hook, the data or the Trainer failed.
    Failed,
    /// Ctrl-C.
    Interrupted,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        })
    }
}

/// The next `version_N` directory under `dir`: one more than the largest existing N.
pub(crate) fn next_version(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("version_")?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n + 1)
}

/// A run's directory, `root/name/version_N` as Lightning lays it out, created on first use;
/// what every file-writing logger keeps.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    root: PathBuf,
    name: String,
    version: Option<usize>,
    dir: Option<PathBuf>,
}

impl RunDir {
    /// `root/lightning_logs/version_N`, N the next free number.
    pub(crate) fn new(root: PathBuf) -> Self {
        RunDir { root, name: "lightning_logs".into(), version: None, dir: None }
    }

    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    pub(crate) fn set_version(&mut self, version: usize) {
        self.version = Some(version);
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// [`Logger::share_version`] for a logger that keeps this directory.
    pub(crate) fn share_version(&mut self, version: &str) {
        let n = version.strip_prefix("version_").and_then(|n| n.parse().ok());
        if let (None, None, Some(n)) = (self.version, &self.dir, n) {
            self.version = Some(n);
        }
    }

    /// `version_N`: the given or claimed version, or (before the directory is made) the next
    /// free one, as Lightning's `logger.version` reads it.
    pub(crate) fn version(&self) -> String {
        let n = self.version.unwrap_or_else(|| next_version(&self.root.join(&self.name)));
        format!("version_{n}")
    }

    /// The directory, once made.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The directory, made now if it was not: the given version (reused if it exists), or the
    /// next free one, claimed atomically so that runs started together get different versions.
    pub(crate) fn create(&mut self) -> Result<&Path> {
        if self.dir.is_none() {
            let base = self.root.join(&self.name);
            std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
            let (dir, version) = match self.version {
                Some(version) => {
                    let dir = base.join(format!("version_{version}"));
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                    (dir, version)
                }
                None => claim_next_version(&base)?,
            };
            self.version = Some(version);
            self.dir = Some(dir);
        }
        Ok(self.dir.as_deref().expect("made above"))
    }

    /// Writes `hparams.yaml` into the directory.
    pub(crate) fn write_hparams(&mut self, params: &serde_json::Value) -> Result<()> {
        let path = self.create()?.join("hparams.yaml");
        std::fs::write(&path, yaml::to_yaml(params)).map_err(|e| Error::io(&path, e))
    }
}

fn claim_next_version(base: &Path) -> Result<(PathBuf, usize)> {
    let mut version = next_version(base);
    loop {
        let dir = base.join(format!("version_{version}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, version)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => version += 1,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
}
