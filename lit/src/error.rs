//! Errors: one [`Error`] for the whole crate, with a variant per area.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error lit returns. Each message names the thing (file, hook, key) and what is wrong.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it (so `?` works on a user's
/// own errors in hooks that return `lit::Result`), keeping the error and its source chain
/// ([`Error::chain`], [`Error::downcast_ref`]). For that, and like `anyhow::Error`, it does not
/// implement `std::error::Error` itself; it converts into `Box<dyn std::error::Error + Send +
/// Sync>` (so `?` works in a `main` returning that), whose `source()` chain is the same.
///
/// Its `Debug` form is its message too, so that `fn main() -> lit::Result<()>` prints
/// `Error: command line: ...` rather than the variant's fields.
#[non_exhaustive]
pub enum Error {
    /// Reading or loading data failed.
    Data(DataError),
    /// The Trainer's configuration is invalid.
    Config(ConfigError),
    /// A hook of the module or of a callback failed.
    Hook {
        /// The hook that failed, e.g. `training_step`.
        hook: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A libtorch operation failed.
    Torch(tch::TchError),
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint cannot be written or read, or does not fit the module.
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Training was interrupted (Ctrl-C); the run's state was saved to `checkpoint`.
    Interrupted {
        /// The resumable checkpoint written on the way out.
        checkpoint: Option<PathBuf>,
    },
    /// A loss was NaN or infinite (with `nonfinite_loss(NonFinitePolicy::Error)`).
    NonFiniteLoss {
        /// The epoch.
        epoch: usize,
        /// The batch.
        batch_idx: usize,
        /// The loss value.
        value: f64,
    },
    /// A torch.distributed operation failed (another process died, a timeout, a bad address).
    Distributed {
        /// The operation, e.g. `all_reduce`.
        operation: &'static str,
        /// What c10d reported.
        message: String,
    },
    /// Exporting the model (TorchScript, ONNX) failed, e.g. on an operator ONNX export does
    /// not support.
    Export {
        /// "TorchScript" or "ONNX".
        format: &'static str,
        /// What went wrong, naming the operator or value.
        message: String,
    },
    /// The command line (`lit::cli`) could not be understood: a configuration file, an unknown key,
    /// a value of the wrong type.
    Cli {
        /// What is wrong, naming the file or key.
        message: String,
    },
    /// Anything a user's hook reports with `?` on their own error types.
    User(Box<dyn StdError + Send + Sync + 'static>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Data(e) => e.fmt(f),
            Error::Config(e) => e.fmt(f),
            Error::Hook { hook, message } => write!(f, "`{hook}` failed: {message}"),
            Error::Torch(e) => write!(f, "libtorch: {}", torch_message(&e.to_string())),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Checkpoint { path, problem } => write!(f, "checkpoint {}: {problem}", path.display()),
            Error::Interrupted { checkpoint: Some(p) } => {
                write!(f, "training interrupted; resume from {}", p.display())
            }
            Error::Interrupted { checkpoint: None } => {
                f.write_str("training interrupted; resume from nothing (no checkpoint could be written)")
            }
            Error::NonFiniteLoss { epoch, batch_idx, value } => {
                write!(f, "the loss of batch {batch_idx} in epoch {epoch} is {value}")
            }
            Error::Distributed { operation, message } => write!(f, "distributed `{operation}` failed: {message}"),
            Error::Export { format, message } => write!(f, "{format} export: {message}"),
            Error::Cli { message } => write!(f, "command line: {message}"),
            Error::User(e) => e.fmt(f),
        }
    }
}

/// A libtorch message without the C++ frames that follow it ("Exception raised from …",
/// "frame #0: …"), and, for a panic of a tch `unwrap`, without the `Torch("…")` wrapping.
pub(crate) fn torch_message(message: &str) -> String {
    let inner = match message.find("Torch(\"") {
        Some(at) => message[at + "Torch(\"".len()..].replace("\\n", "\n").replace("\\\"", "\""),
        None => message.to_string(),
    };
    let cut = ["Exception raised from", "\nframe #"].iter().filter_map(|m| inner.find(m)).min().unwrap_or(inner.len());
    let message = inner[..cut].trim_end().trim_end_matches("\")").trim_end();
    // The TorchScript interpreter puts its own traceback first and the error last.
    match message.rfind("RuntimeError: ") {
        Some(at) if message.starts_with("Internal torch error") || message.contains("Traceback of TorchScript") => {
            message[at + "RuntimeError: ".len()..].trim().to_string()
        }
        _ => message.to_string(),
    }
}

/// The message of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every variant's message already includes what its source says.
        fmt::Display::fmt(self, f)
    }
}

/// Any error converts: lit's own (`DataError`, `ConfigError`, `tch::TchError`) into their
/// variants, every other into [`Error::User`], kept whole with its source chain.
impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        let boxed: Box<dyn StdError + Send + Sync + 'static> = Box::new(error);
        let boxed = match boxed.downcast::<DataError>() {
            Ok(e) => return Error::Data(*e),
            Err(other) => other,
        };
        let boxed = match boxed.downcast::<ConfigError>() {
            Ok(e) => return Error::Config(*e),
            Err(other) => other,
        };
        match boxed.downcast::<tch::TchError>() {
            Ok(e) => Error::Torch(*e),
            Err(other) => Error::User(other),
        }
    }
}

/// The same error as a `std::error::Error`, for code that boxes errors.
struct StdAdapter(Error);

impl fmt::Debug for StdAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for StdAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for StdAdapter {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        Box::new(StdAdapter(error))
    }
}

impl From<Error> for Box<dyn StdError + 'static> {
    fn from(error: Error) -> Self {
        Box::new(StdAdapter(error))
    }
}

impl Error {
    /// An error raised by user code, from any message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::User(message.to_string().into())
    }

    pub(crate) fn hook(hook: &'static str, message: impl fmt::Display) -> Self {
        Error::Hook { hook, message: message.to_string() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// The lower-level error this one comes from, as `std::error::Error::source` would say it.
    /// A user's error (converted by `?`) and lit's data and configuration errors are shown as
    /// they are, so their source is their own; libtorch's and I/O errors are the source of
    /// lit's message about them.
    pub fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Data(e) => e.source(),
            Error::Config(e) => e.source(),
            Error::User(e) => e.source(),
            Error::Torch(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The sources of this error, from [`Error::source`] down (empty when it has none).
    pub fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        std::iter::successors(self.source(), |&e| e.source())
    }

    /// The user's error of type `E` that `?` converted into this one, if it is one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Error::User(e) => e.downcast_ref::<E>(),
            _ => None,
        }
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
