//! Loggers: where logged metrics and hyper-parameters go. Several at once, behind one
//! [`Logger`] trait; the default is a [`CsvLogger`] under the Trainer's `default_root_dir`.

mod csv;
mod plot;
mod tensorboard;
mod yaml;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use csv::CsvLogger;
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
    /// The logger as `Any`, to reach its concrete type (its experiment handle).
    fn as_any_mut(&mut self) -> &mut dyn Any;
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

/// Creates `root/name/version_N`: `version` when given (reusing it if it exists), otherwise the
/// next free N, claimed atomically so that runs started together get different versions.
pub(crate) fn make_version_dir(root: &Path, name: &str, version: Option<usize>) -> Result<(PathBuf, usize)> {
    let base = root.join(name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    if let Some(version) = version {
        let dir = base.join(format!("version_{version}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        return Ok((dir, version));
    }
    let mut version = next_version(&base);
    loop {
        let dir = base.join(format!("version_{version}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, version)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => version += 1,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
}
