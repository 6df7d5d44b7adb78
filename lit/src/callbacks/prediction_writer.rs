//! [`PredictionWriter`]: writes what `predict_step` returns to files as it is produced
//! (Lightning's `BasePredictionWriter`), so predictions over large data need not stay in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::callback::{Callback, Predicted};
use crate::ctx::Ctx;
use crate::error::{Error, Result};

/// A `predict_step` return value whose tensors a [`PredictionWriter`] can write.
pub trait PredictionTensors {
    /// The tensors, by name.
    fn prediction_tensors(&self) -> Vec<(String, Tensor)>;
}

impl PredictionTensors for Tensor {
    fn prediction_tensors(&self) -> Vec<(String, Tensor)> {
        vec![("predictions".into(), self.shallow_clone())]
    }
}

impl PredictionTensors for Vec<Tensor> {
    fn prediction_tensors(&self) -> Vec<(String, Tensor)> {
        self.iter().enumerate().map(|(i, t)| (format!("predictions_{i}"), t.shallow_clone())).collect()
    }
}

impl PredictionTensors for (Tensor, Tensor) {
    fn prediction_tensors(&self) -> Vec<(String, Tensor)> {
        vec![("predictions_0".into(), self.0.shallow_clone()), ("predictions_1".into(), self.1.shallow_clone())]
    }
}

impl PredictionTensors for BTreeMap<String, Tensor> {
    fn prediction_tensors(&self) -> Vec<(String, Tensor)> {
        self.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect()
    }
}

/// When a [`PredictionWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteInterval {
    /// One file per batch, as it is predicted: `predictions_dl{D}_batch{B}.{ext}`.
    Batch,
    /// One file per loader at the end: `predictions_dl{D}.{ext}`, the batches concatenated.
    Epoch,
}

/// The files' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionFormat {
    /// safetensors: the prediction's tensors and `batch_indices` (int64); PyTorch's
    /// `safetensors.torch.load_file` and [`read_predictions`] read it.
    Safetensors,
    /// JSON lines, one per batch: `{"dataloader_idx", "batch_idx", "batch_indices", name: values}`
    /// with each tensor as nested lists of numbers.
    JsonLines,
}

/// Writes predictions to `dir` per batch or per loader, as safetensors or JSON lines.
///
/// ```no_run
/// # use lit::prelude::*;
/// use lit::callbacks::{PredictionWriter, WriteInterval};
/// let trainer = Trainer::builder().callback(PredictionWriter::new("predictions", WriteInterval::Epoch)).build();
/// ```
pub struct PredictionWriter {
    dir: PathBuf,
    interval: WriteInterval,
    format: PredictionFormat,
    /// Per loader, what `Epoch` gathers until the end.
    gathered: BTreeMap<usize, Gathered>,
    written: Vec<PathBuf>,
}

/// A loader's predictions so far: each tensor's batches by name, and the batch indices.
type Gathered = (BTreeMap<String, Vec<Tensor>>, Vec<i64>);

impl PredictionWriter {
    /// Writes to `dir` at `interval`, as safetensors.
    pub fn new(dir: impl Into<PathBuf>, interval: WriteInterval) -> Self {
        PredictionWriter {
            dir: dir.into(),
            interval,
            format: PredictionFormat::Safetensors,
            gathered: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    /// The files' format.
    pub fn format(mut self, format: PredictionFormat) -> Self {
        self.format = format;
        self
    }

    /// The files written so far, in order.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    fn write(&mut self, stem: &str, tensors: Vec<(String, Tensor)>, p: Option<(&[i64], usize, usize)>) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io { path: self.dir.clone(), source })?;
        let path = match self.format {
            PredictionFormat::Safetensors => {
                let path = self.dir.join(format!("{stem}.safetensors"));
                write_safetensors(&path, tensors)?;
                path
            }
            PredictionFormat::JsonLines => {
                let path = self.dir.join(format!("{stem}.jsonl"));
                let mut line = serde_json::Map::new();
                if let Some((indices, batch_idx, dl)) = p {
                    line.insert("dataloader_idx".into(), dl.into());
                    line.insert("batch_idx".into(), batch_idx.into());
                    line.insert("batch_indices".into(), indices.into());
                }
                for (k, t) in &tensors {
                    line.insert(k.clone(), tensor_json(t)?);
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| Error::Io { path: path.clone(), source })?;
                writeln!(file, "{}", serde_json::Value::Object(line))
                    .map_err(|source| Error::Io { path: path.clone(), source })?;
                path
            }
        };
        if !self.written.contains(&path) {
            self.written.push(path);
        }
        Ok(())
    }
}

/// A tensor as nested JSON lists.
fn tensor_json(t: &Tensor) -> Result<serde_json::Value> {
    let t = t.to_device(tch::Device::Cpu);
    let values: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1))?;
    fn nest(values: &[f64], dims: &[i64]) -> serde_json::Value {
        match dims.split_first() {
            None => values.first().copied().unwrap_or(f64::NAN).into(),
            Some((&n, rest)) => {
                let step = rest.iter().product::<i64>() as usize;
                (0..n as usize).map(|i| nest(&values[i * step..(i + 1) * step], rest)).collect()
            }
        }
    }
    let integral = !t.is_floating_point();
    let value = nest(&values, &t.size());
    Ok(if integral { integers(value) } else { value })
}

fn integers(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(a) => a.into_iter().map(integers).collect(),
        serde_json::Value::Number(n) => n.as_f64().map_or(serde_json::Value::Null, |f| (f as i64).into()),
        other => other,
    }
}

impl Callback for PredictionWriter {
    fn name(&self) -> &str {
        "PredictionWriter"
    }

    fn on_predict_start(&mut self, _cx: &mut Ctx) -> Result<()> {
        self.gathered.clear();
        if self.format == PredictionFormat::JsonLines {
            // Each run writes its files afresh.
            for path in std::mem::take(&mut self.written) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    fn on_prediction(&mut self, p: &Predicted<'_>, _cx: &mut Ctx) -> Result<()> {
        match self.interval {
            WriteInterval::Batch => {
                let mut tensors: Vec<(String, Tensor)> =
                    p.tensors.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
                let stem = format!("predictions_dl{}_batch{:05}", p.dataloader_idx, p.batch_idx);
                if self.format == PredictionFormat::Safetensors {
                    tensors.push(("batch_indices".into(), Tensor::from_slice(p.batch_indices)));
                }
                self.write(&stem, tensors, Some((p.batch_indices, p.batch_idx, p.dataloader_idx)))
            }
            WriteInterval::Epoch => {
                let (tensors, indices) = self.gathered.entry(p.dataloader_idx).or_default();
                for (k, t) in p.tensors {
                    tensors.entry(k.clone()).or_default().push(t.to_device(tch::Device::Cpu));
                }
                indices.extend_from_slice(p.batch_indices);
                Ok(())
            }
        }
    }

    fn on_predict_epoch_end(&mut self, _cx: &mut Ctx) -> Result<()> {
        for (dl, (tensors, indices)) in std::mem::take(&mut self.gathered) {
            let mut out: Vec<(String, Tensor)> =
                tensors.into_iter().map(|(k, parts)| (k, Tensor::cat(&parts, 0))).collect();
            if self.format == PredictionFormat::Safetensors {
                out.push(("batch_indices".into(), Tensor::from_slice(&indices)));
            }
            self.write(&format!("predictions_dl{dl}"), out, None)?;
        }
        Ok(())
    }
}

/// Writes `tensors` (moved to the CPU) to `path` as safetensors: beside it, then renamed, so
/// that a reader never sees a partial file.
pub(crate) fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let tensors: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(k, t)| (k, t.to_device(tch::Device::Cpu).contiguous())).collect();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let name = path.file_name().map_or_else(|| "predictions".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    Tensor::write_safetensors(&refs, &tmp)
        .map_err(|e| Error::Io { path: tmp.clone(), source: std::io::Error::other(e.to_string()) })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// Reads a safetensors file a [`PredictionWriter`] wrote: the prediction's tensors and
/// `batch_indices`, by name.
pub fn read_predictions(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    Ok(tensors.into_iter().collect())
}
