//! Checkpoints: one safetensors file holding the module's variables (named as in the
//! `VarStore`, so PyTorch's `safetensors` package reads them) and, in its metadata, lit's JSON
//! record of the run (format version, versions, hparams, epoch, global step).
//!
//! Writes are atomic: a temporary file in the same directory, synced, then renamed. Reads check
//! everything and name what is wrong.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::error::{Error, Result};

/// The version of the checkpoint layout this lit writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// The metadata key under which lit's record is stored.
const META_KEY: &str = "lit";
/// The metadata key of the CRC-32 of the `lit` record (as decimal text).
const META_CRC_KEY: &str = "lit.crc32";

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Where training stood when a checkpoint was written: enough to continue with the next batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The epoch to continue in.
    pub epoch: usize,
    /// Batches of that epoch already trained (0: start the epoch).
    pub batch_in_epoch: usize,
    /// Training batches seen in the whole run (drives optimizer turns).
    pub total_batch_idx: usize,
}

/// lit's record of a run, stored in the checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The lit version that wrote it.
    pub lit_version: String,
    /// The libtorch version it was written with.
    #[serde(default)]
    pub libtorch_version: String,
    /// The module's hyper-parameters, as JSON.
    pub hparams: Option<serde_json::Value>,
    /// The epoch the checkpoint was written in or, at an epoch's end, the next one (Lightning's
    /// `epoch`: the current epoch index).
    pub epoch: usize,
    /// Optimizer steps taken.
    pub global_step: usize,
    /// Where to continue training.
    #[serde(default)]
    pub loops: LoopState,
    /// Each optimizer's scalar state (its tensors are stored as `__lit__/optimizer.N/…`).
    #[serde(default)]
    pub optimizers: Vec<serde_json::Value>,
    /// Each learning-rate scheduler's state.
    #[serde(default)]
    pub schedulers: Vec<serde_json::Value>,
    /// Callback states by callback name.
    #[serde(default)]
    pub callbacks: BTreeMap<String, serde_json::Value>,
    /// What the module's `on_save_checkpoint` added.
    #[serde(default)]
    pub module: serde_json::Map<String, serde_json::Value>,
    /// The data module's `state_dict`, when fitting with one.
    #[serde(default)]
    pub datamodule: Option<serde_json::Value>,
    /// CRC-32 of every stored tensor's bytes, checked on load.
    #[serde(default)]
    pub crc32: BTreeMap<String, u32>,
}

/// Prefix of the stored tensors that are lit's own state rather than the module's variables.
pub const STATE_PREFIX: &str = "__lit__/";

impl CheckpointMeta {
    /// A record for the current run.
    pub fn new(hparams: Option<serde_json::Value>, epoch: usize, global_step: usize) -> Self {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            lit_version: env!("CARGO_PKG_VERSION").into(),
            libtorch_version: "2.13.0".into(),
            hparams,
            epoch,
            global_step,
            loops: LoopState { epoch, ..LoopState::default() },
            optimizers: Vec::new(),
            schedulers: Vec::new(),
            callbacks: BTreeMap::new(),
            module: serde_json::Map::new(),
            datamodule: None,
            crc32: BTreeMap::new(),
        }
    }
}

/// A checkpoint read from disk.
pub struct Checkpoint {
    path: PathBuf,
    /// lit's record.
    pub meta: CheckpointMeta,
    tensors: BTreeMap<String, Tensor>,
}

fn error(path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), problem: problem.to_string() }
}

fn dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// A tensor's bytes, ready for safetensors.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn raw(name: &str, t: &Tensor, path: &Path) -> Result<Raw> {
    let dtype =
        dtype(t.kind()).ok_or_else(|| error(path, format!("variable `{name}` has unsupported kind {:?}", t.kind())))?;
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    Ok(Raw { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
}

/// Writes `vs`'s variables and `meta` to `path` atomically.
pub fn save(path: impl AsRef<Path>, vs: &nn::VarStore, meta: &CheckpointMeta) -> Result<()> {
    save_with(path.as_ref(), vs, &BTreeMap::new(), meta.clone())
}

/// Writes the variables, lit's state tensors (names under [`STATE_PREFIX`]) and `meta`, with a
/// CRC-32 of every tensor, atomically.
pub(crate) fn save_with(
    path: &Path,
    vs: &nn::VarStore,
    state: &BTreeMap<String, Tensor>,
    mut meta: CheckpointMeta,
) -> Result<()> {
    let mut raws = BTreeMap::new();
    for (name, t) in vs.variables().iter().chain(state.iter()) {
        let r = raw(name, t, path)?;
        meta.crc32.insert(name.clone(), crc32(&r.bytes));
        raws.insert(name.clone(), r);
    }
    let meta_json = serde_json::to_string(&meta).map_err(|e| error(path, format!("cannot encode metadata: {e}")))?;
    let bytes = safetensors::serialize(
        raws.iter().map(|(k, v)| (k.as_str(), v)),
        Some(HashMap::from([
            (META_CRC_KEY.to_string(), crc32(meta_json.as_bytes()).to_string()),
            (META_KEY.to_string(), meta_json),
        ])),
    )
    .map_err(|e| error(path, e))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`, so a
/// reader sees the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    // Unique per write, so that two writers of one path (threads, processes) never share a
    // temporary file; the last rename wins and each reader sees one complete file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    remove_stale_temporaries(dir, &name);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes the temporary files `write_atomically` left for `name` in `dir` when its writer was
/// killed: `.{name}.tmp-{pid}-{n}` of a process that no longer runs. Nothing else is touched; where
/// `/proc` cannot tell whether a process runs, nothing is removed.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let Some((pid, n)) = rest.split_once('-') else { continue };
        let ours = pid.parse::<u32>().is_ok() && n.parse::<u64>().is_ok();
        if ours && pid != std::process::id().to_string() && !proc.join(pid).exists() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(target: "lit", file = %entry.path().display(), "removed a stale temporary checkpoint")
                }
                Err(e) => {
                    tracing::debug!(target: "lit", file = %entry.path().display(), error = %e, "could not remove a stale temporary checkpoint")
                }
            }
        }
    }
}

impl Checkpoint {
    /// Reads and checks a checkpoint.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| error(path, format!("not a lit checkpoint: not a valid safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| error(path, e))?;
        let metadata = header.metadata().as_ref();
        let meta_json = metadata
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| error(path, "no lit metadata: this safetensors file was not written by lit"))?;
        let value: serde_json::Value =
            serde_json::from_str(meta_json).map_err(|e| error(path, format!("metadata is not valid JSON ({e})")))?;
        let version = value.get("format_version").and_then(serde_json::Value::as_u64);
        if version != Some(FORMAT_VERSION as u64) {
            return Err(error(
                path,
                format!("unknown format version {version:?}; this lit reads version {FORMAT_VERSION}"),
            ));
        }
        match metadata.and_then(|m| m.get(META_CRC_KEY)).map(|c| c.parse::<u32>()) {
            None => return Err(error(path, format!("the metadata record has no checksum (`{META_CRC_KEY}`)"))),
            Some(Ok(expected)) if expected == crc32(meta_json.as_bytes()) => {}
            Some(_) => return Err(error(path, "the metadata record is corrupt or was edited (checksum mismatch)")),
        }
        let meta: CheckpointMeta =
            serde_json::from_value(value).map_err(|e| error(path, format!("metadata is incomplete ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let expected = meta
                .crc32
                .get(&name)
                .ok_or_else(|| error(path, format!("tensor `{name}` has no checksum in the metadata record")))?;
            if crc32(view.data()) != *expected {
                return Err(error(path, format!("tensor `{name}` is corrupt (checksum mismatch)")));
            }
            let kind = kind(view.dtype())
                .ok_or_else(|| error(path, format!("tensor `{name}` has unsupported dtype {:?}", view.dtype())))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            tensors.insert(name, Tensor::f_from_data_size(view.data(), &shape, kind)?);
        }
        if let Some(name) = meta.crc32.keys().find(|name| !tensors.contains_key(*name)) {
            return Err(error(path, format!("tensor `{name}` is missing (the metadata record lists it)")));
        }
        Ok(Checkpoint { path: path.to_path_buf(), meta, tensors })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored tensors by name (the module's variables and lit's state).
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// The tensors stored under `prefix` (within lit's state), with the prefix removed.
    pub(crate) fn state_tensors(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let full = format!("{STATE_PREFIX}{prefix}");
        self.tensors.iter().filter_map(|(k, v)| Some((k.strip_prefix(&full)?.to_string(), v.shallow_clone()))).collect()
    }

    /// The stored hyper-parameters, deserialised.
    pub fn hparams<H: serde::de::DeserializeOwned>(&self) -> Result<H> {
        let value = self.meta.hparams.clone().unwrap_or(serde_json::Value::Null);
        serde_json::from_value(value).map_err(|e| error(&self.path, format!("hparams no longer deserialise ({e})")))
    }

    /// Copies the stored variables into `vs`. Every variable of `vs` must be stored with the same
    /// shape, and nothing else may be stored; otherwise nothing is copied and the error names the
    /// variables.
    pub fn load_into(&self, vs: &mut nn::VarStore) -> Result<()> {
        let variables = vs.variables();
        let missing: Vec<&String> = variables.keys().filter(|k| !self.tensors.contains_key(*k)).collect();
        let unexpected: Vec<&String> =
            self.tensors.keys().filter(|k| !k.starts_with(STATE_PREFIX) && !variables.contains_key(*k)).collect();
        let mismatched: Vec<String> = variables
            .iter()
            .filter_map(|(k, v)| {
                let stored = self.tensors.get(k)?;
                (stored.size() != v.size())
                    .then(|| format!("`{k}` (stored {:?}, expected {:?})", stored.size(), v.size()))
            })
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing variables {missing:?}"));
        }
        if !unexpected.is_empty() {
            problems.push(format!("unexpected variables {unexpected:?}"));
        }
        if !mismatched.is_empty() {
            problems.push(format!("wrong shapes: {}", mismatched.join(", ")));
        }
        if !problems.is_empty() {
            return Err(error(&self.path, format!("does not fit the module: {}", problems.join("; "))));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &variables {
                let mut var = var.shallow_clone();
                var.f_copy_(&self.tensors[name].to_kind(var.kind()))?;
            }
            Ok(())
        })
    }
}
