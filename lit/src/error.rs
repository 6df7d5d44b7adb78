//! Errors: one [`Error`] for the whole crate, with a variant per area.

use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error lit returns. Each message names the thing (file, hook, key) and what is wrong.
///
/// Its `Debug` form is its message too, so that `fn main() -> lit::Result<()>` prints
/// `Error: command line: ...` rather than the variant's fields.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or loading data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The Trainer's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A hook of the module or of a callback failed.
    #[error("`{hook}` failed: {message}")]
    Hook {
        /// The hook that failed, e.g. `training_step`.
        hook: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint cannot be written or read, or does not fit the module.
    #[error("checkpoint {}: {problem}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Training was interrupted (Ctrl-C); the run's state was saved to `checkpoint`.
    #[error("training interrupted; resume from {}", checkpoint.as_ref().map_or_else(|| "nothing (no checkpoint could be written)".to_string(), |p| p.display().to_string()))]
    Interrupted {
        /// The resumable checkpoint written on the way out.
        checkpoint: Option<PathBuf>,
    },
    /// A loss was NaN or infinite (with `nonfinite_loss(NonFinitePolicy::Error)`).
    #[error("the loss of batch {batch_idx} in epoch {epoch} is {value}")]
    NonFiniteLoss {
        /// The epoch.
        epoch: usize,
        /// The batch.
        batch_idx: usize,
        /// The loss value.
        value: f64,
    },
    /// A torch.distributed operation failed (another process died, a timeout, a bad address).
    #[error("distributed `{operation}` failed: {message}")]
    Distributed {
        /// The operation, e.g. `all_reduce`.
        operation: &'static str,
        /// What c10d reported.
        message: String,
    },
    /// Exporting the model (TorchScript, ONNX) failed, e.g. on an operator ONNX export does
    /// not support.
    #[error("{format} export: {message}")]
    Export {
        /// "TorchScript" or "ONNX".
        format: &'static str,
        /// What went wrong, naming the operator or value.
        message: String,
    },
    /// The command line (`lit::cli`) could not be understood: a configuration file, an unknown key,
    /// a value of the wrong type.
    #[error("command line: {message}")]
    Cli {
        /// What is wrong, naming the file or key.
        message: String,
    },
    /// Anything a user's hook reports with `?` on their own error types.
    #[error(transparent)]
    User(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every variant's message already includes what its source says.
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// An error raised by user code, from any message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error::User(message.to_string().into())
    }

    pub(crate) fn hook(hook: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Hook { hook, message: message.to_string() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Errors of the data pipeline: files, datasets and loader workers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An IDX file (the MNIST format) is malformed.
    #[error("IDX file {}: {problem}", path.display())]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A dataset was asked for an index past its end.
    #[error("index {index} is out of range for a dataset of length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// A dataset or collate function panicked while producing a batch.
    #[error("dataset panicked while loading batch {batch}{}: {message}", worker_suffix(*.worker))]
    Panicked {
        /// The batch being loaded (position in the epoch).
        batch: usize,
        /// The worker thread, if loading ran in one.
        worker: Option<usize>,
        /// The panic message.
        message: String,
    },
    /// A loader worker thread ended without delivering its batch.
    #[error("dataloader worker {worker} stopped without delivering batch {batch}")]
    WorkerDied {
        /// The worker.
        worker: usize,
        /// The batch it owed.
        batch: usize,
    },
    /// Tensors of one batch could not be combined.
    #[error("cannot collate a batch: {0}")]
    Collate(String),
    /// Split lengths do not fit the dataset.
    #[error("random_split: {0}")]
    Split(String),
    /// No data was given for a stage that needs it.
    #[error("no {stage} data: pass a loader to `{method}` or implement `{hook}` on the module")]
    Missing {
        /// The stage, e.g. "training".
        stage: &'static str,
        /// The Trainer method, e.g. "fit".
        method: &'static str,
        /// The module hook that could provide it, e.g. "train_dataloader".
        hook: &'static str,
    },
}

fn worker_suffix(worker: Option<usize>) -> String {
    worker.map(|w| format!(" in worker {w}")).unwrap_or_default()
}

/// An invalid Trainer configuration, reported by `TrainerBuilder::build` or at the start of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option has a value it cannot take.
    #[error("trainer option `{option}`: {problem}")]
    Invalid {
        /// The option, e.g. `limit_train_batches`.
        option: &'static str,
        /// Why the value is wrong.
        problem: String,
    },
    /// The requested accelerator is not available on this machine.
    #[error("accelerator `{0}` is not available: {1}")]
    Unavailable(String, String),
}

impl ConfigError {
    pub(crate) fn invalid(option: &'static str, problem: impl std::fmt::Display) -> Self {
        ConfigError::Invalid { option, problem: problem.to_string() }
    }
}
