//! `TensorBoardLogger`: event files (`events.out.tfevents.*`) that TensorBoard reads — scalars,
//! histograms, images and hyper-parameters — written without TensorFlow: TFRecord framing with
//! masked CRC-32C, and the few protobuf messages TensorBoard needs, encoded by hand.

use std::any::Any;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tch::{Kind, Tensor};

use super::{Logger, RunDir};
use crate::error::{Error, Result};
use crate::protobuf::Message;

// ----- the event messages -----

/// `Event { wall_time = 1, step = 2, file_version = 3 | summary = 5 }`.
fn event(step: i64, body: impl FnOnce(&mut Message)) -> Message {
    let mut e = Message::default();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    e.double(1, wall).int(2, step);
    body(&mut e);
    e
}

/// An event at `step` holding `Summary { value = 1: Value { tag = 1, ...value } }`.
fn summary_event(step: i64, tag: &str, value: impl FnOnce(&mut Message)) -> Message {
    let mut v = Message::default();
    v.string(1, tag);
    value(&mut v);
    let mut s = Message::default();
    s.message(1, &v);
    event(step, |e| {
        e.message(5, &s);
    })
}

// ----- TFRecord framing -----

fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Writes TensorBoard events to one file, as TensorFlow's `SummaryWriter` does; what
/// `TensorBoardLogger::experiment` returns, for images, histograms and anything else.
pub struct SummaryWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    /// When the buffer last went to the file: a TensorBoard watching the run sees its events
    /// at most [`FLUSH_EVERY`] late (and at every epoch end, when the Trainer saves its loggers).
    flushed: std::time::Instant,
}

/// How long events may wait in the writer's buffer.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl SummaryWriter {
    /// A writer of a new event file in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!("events.out.tfevents.{secs}.{host}.{}", std::process::id()));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer =
            SummaryWriter { path, file: std::io::BufWriter::new(file), flushed: std::time::Instant::now() };
        writer.write(&event(0, |e| {
            e.string(3, "brain.Event:2");
        }))?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Message) -> Result<()> {
        let event = event.as_bytes();
        let len = (event.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(event.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(event);
        record.extend_from_slice(&masked_crc(event).to_le_bytes());
        self.file.write_all(&record).map_err(|e| Error::io(&self.path, e))?;
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// A scalar at `step`.
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: usize) -> Result<()> {
        self.write(&summary_event(step as i64, tag, |v| {
            v.float(2, value as f32);
        }))
    }

    /// A histogram of `values` (any shape) at `step`, in 30 equal buckets.
    pub fn add_histogram(&mut self, tag: &str, values: &Tensor, step: usize) -> Result<()> {
        let data: Vec<f64> =
            Vec::<f64>::try_from(values.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1))?;
        let finite: Vec<f64> = data.into_iter().filter(|v| v.is_finite()).collect();
        let (min, max) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let (min, max) = if finite.is_empty() { (0.0, 0.0) } else { (min, max) };
        let buckets = 30;
        let width = ((max - min) / buckets as f64).max(1e-12);
        let mut counts = vec![0.0; buckets];
        for v in &finite {
            counts[(((v - min) / width) as usize).min(buckets - 1)] += 1.0;
        }
        let limits: Vec<f64> = (1..=buckets).map(|i| min + width * i as f64).collect();
        let mut h = Message::default();
        h.double(1, min)
            .double(2, max)
            .double(3, finite.len() as f64)
            .double(4, finite.iter().sum())
            .double(5, finite.iter().map(|v| v * v).sum())
            .packed_doubles(6, &limits)
            .packed_doubles(7, &counts);
        self.write(&summary_event(step as i64, tag, |v| {
            v.message(5, &h);
        }))
    }

    /// An image at `step`: a `[C, H, W]` tensor (C = 1, 3 or 4), floats in [0, 1] or bytes.
    pub fn add_image(&mut self, tag: &str, image: &Tensor, step: usize) -> Result<()> {
        let size = image.size();
        let [c, h, w] = size[..] else {
            return Err(Error::msg(format!("add_image `{tag}`: expected a [C, H, W] tensor, got shape {size:?}")));
        };
        if ![1, 3, 4].contains(&c) {
            return Err(Error::msg(format!("add_image `{tag}`: expected 1, 3 or 4 channels, got {c}")));
        }
        let bytes = if image.kind() == Kind::Uint8 {
            image.shallow_clone()
        } else {
            (image.clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Uint8)
        };
        let hwc: Vec<u8> = Vec::<u8>::try_from(
            bytes.detach().to_device(tch::Device::Cpu).permute([1, 2, 0]).contiguous().flatten(0, -1),
        )?;
        let png = crate::image::png(&hwc, w as u32, h as u32, c as u8);
        let mut img = Message::default();
        img.int(1, h).int(2, w).int(3, c).bytes(4, &png);
        self.write(&summary_event(step as i64, tag, |v| {
            v.message(4, &img);
        }))
    }

    /// Hyper-parameters for TensorBoard's HParams dashboard (numbers, strings and booleans; nested
    /// keys are joined with `.`).
    pub fn add_hparams(&mut self, params: &serde_json::Value) -> Result<()> {
        let mut flat = BTreeMap::new();
        flatten("", params, &mut flat);
        // HParamsPluginData { version = 1, session_start_info = 3: SessionStartInfo { hparams = 1 } }
        let mut start = Message::default();
        for (k, v) in &flat {
            let mut value = Message::default();
            match v {
                serde_json::Value::Number(n) => value.double(2, n.as_f64().unwrap_or(f64::NAN)),
                serde_json::Value::Bool(b) => value.int(4, i64::from(*b)),
                serde_json::Value::String(s) => value.string(3, s),
                other => value.string(3, &other.to_string()),
            };
            let mut entry = Message::default();
            entry.string(1, k).message(2, &value);
            start.message(1, &entry);
        }
        let mut content = Message::default();
        content.int(1, 0).message(3, &start);
        let mut plugin = Message::default();
        plugin.string(1, "hparams").bytes(2, content.as_bytes());
        let mut metadata = Message::default();
        metadata.message(1, &plugin);
        self.write(&summary_event(0, "_hparams_/session_start_info", |v| {
            v.message(9, &metadata);
        }))
    }

    /// Writes buffered events to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.flushed = std::time::Instant::now();
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
}

/// Writes metrics and hyper-parameters as TensorBoard event files under
/// `<root>/lightning_logs/version_N`, as Lightning's `TensorBoardLogger`.
/// `experiment()` is the [`SummaryWriter`] for images, histograms and the like.
pub struct TensorBoardLogger {
    run: RunDir,
    writer: Option<SummaryWriter>,
}

impl TensorBoardLogger {
    /// A logger under `root/lightning_logs/version_N`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TensorBoardLogger { run: RunDir::new(root.into()), writer: None }
    }

    /// Uses `name` instead of `lightning_logs`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.run.set_name(name.into());
        self
    }

    /// Uses `version_{version}` instead of the next free number.
    pub fn version(mut self, version: usize) -> Self {
        self.run.set_version(version);
        self
    }

    /// The event writer, created with the run's directory on first use.
    pub fn experiment(&mut self) -> Result<&mut SummaryWriter> {
        if self.writer.is_none() {
            self.writer = Some(SummaryWriter::new(self.run.create()?)?);
        }
        Ok(self.writer.as_mut().expect("just created"))
    }
}

impl Logger for TensorBoardLogger {
    fn name(&self) -> &str {
        self.run.name()
    }

    fn version(&self) -> String {
        self.run.version()
    }

    fn log_dir(&self) -> Option<&Path> {
        self.run.path()
    }

    fn log_hyperparams(&mut self, params: &serde_json::Value) -> Result<()> {
        self.experiment()?.add_hparams(params)?;
        self.run.write_hparams(params)
    }

    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        let writer = self.experiment()?;
        for (k, &v) in metrics {
            writer.add_scalar(k, v, step)?;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<()> {
        self.writer.as_mut().map_or(Ok(()), SummaryWriter::flush)
    }

    fn share_version(&mut self, version: &str) {
        self.run.share_version(version);
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
