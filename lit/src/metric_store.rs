//! The metric store behind `cx.log`: step values and epoch reductions, kept as tensors and read
//! only when someone asks (a logger flush, the progress bar, a callback): no device sync per step.
//! A logged metric object ([`crate::metrics`]) is held until the epoch's end, then computed
//! (synced across processes), published and reset, as Lightning does with a torchmetrics object.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::metrics::{Metric, Reduction, sync_tensor};

/// How values logged over an epoch are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduce {
    /// Mean weighted by batch size (Lightning's default).
    #[default]
    Mean,
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// What to do when an epoch's reduced metric is NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// Log a warning and go on.
    #[default]
    Warn,
    /// End the run with an error naming the metric.
    Error,
}

/// The options of one `log` call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogOptions {
    /// Record the value of each step (key gets `_step` when `on_epoch` is also set).
    pub on_step: bool,
    /// Reduce over the epoch (key gets `_epoch` when `on_step` is also set).
    pub on_epoch: bool,
    /// Show on the progress bar.
    pub prog_bar: bool,
    /// Send to the loggers.
    pub logger: bool,
    /// The epoch reduction.
    pub reduce_fx: Reduce,
    /// Samples behind the value (weights the epoch mean); read off the batch when unset.
    pub batch_size: Option<usize>,
    /// Reduce the epoch value across processes.
    pub sync_dist: bool,
}

impl LogOptions {
    /// Whether two calls for one key agree (the batch size may differ from call to call).
    fn same_as(&self, other: &LogOptions) -> bool {
        LogOptions { batch_size: None, ..*self } == LogOptions { batch_size: None, ..*other }
    }
}

struct Accumulator {
    value: Tensor,
    weight: f64,
}

/// What `cx.log` was given: a value, or a metric object that computes its own.
pub(crate) enum LogValue {
    /// A detached tensor (one element).
    Tensor(Tensor),
    /// A handle on a metric object, computed at the epoch's end.
    Object(Box<dyn Metric>),
}

/// A key logged in the current epoch: its options and, when reduced, its running value (or the
/// metric object that holds it).
struct Entry {
    training: bool,
    options: LogOptions,
    acc: Option<Accumulator>,
    object: Option<Box<dyn Metric>>,
}

/// Values logged during the current run, by key.
#[derive(Default)]
pub(crate) struct MetricStore {
    /// The current epochs' keys, training and evaluation apart (Lightning lets one name be
    /// logged in both; the evaluation value, published last, is the one callbacks then see).
    epoch: BTreeMap<(bool, String), Entry>,
    callback: BTreeMap<String, Tensor>,
    logged: BTreeMap<String, Tensor>,
    progress: BTreeMap<String, Tensor>,
    /// Logger values not yet handed to the loggers.
    pending: BTreeMap<String, Tensor>,
    /// Evaluation step values not yet handed to the loggers (they go at the evaluation's own
    /// step, and neither to callbacks nor into `validate`/`test` results, as in Lightning).
    eval_steps: BTreeMap<String, Tensor>,
    pub(crate) nan: NanPolicy,
}

/// The name of a value logged both per step and per epoch: `_step`/`_epoch` after the name and
/// before a loader suffix, as Lightning writes it (`loss_epoch/dataloader_idx_0`).
fn forked(key: &str, which: &str) -> String {
    match key.find("/dataloader_idx_") {
        Some(at) => format!("{}{which}{}", &key[..at], &key[at..]),
        None => format!("{key}{which}"),
    }
}

/// A metric object's value as a scalar to log, or an error naming the key and the shape.
fn scalar(key: &str, metric: &str, value: Tensor) -> Result<Tensor> {
    if value.numel() != 1 {
        return Err(Error::hook(
            "log",
            format!(
                "`{key}` logs a `{metric}`, whose value has shape {:?}; only one-element values can be logged \
                 (average it, or log its elements one by one)",
                value.size()
            ),
        ));
    }
    Ok(value.detach().reshape([]).to_kind(Kind::Double))
}

fn to_f64(metrics: &BTreeMap<String, Tensor>) -> BTreeMap<String, f64> {
    metrics.iter().map(|(k, v)| (k.clone(), v.double_value(&[]))).collect()
}

impl MetricStore {
    fn publish(&mut self, key: &str, name: String, value: &Tensor, options: &LogOptions) {
        if name != key {
            self.callback.insert(key.to_string(), value.shallow_clone());
        }
        if options.logger {
            self.logged.insert(name.clone(), value.shallow_clone());
            self.pending.insert(name.clone(), value.shallow_clone());
        }
        if options.prog_bar {
            self.progress.insert(name.clone(), value.shallow_clone());
        }
        self.callback.insert(name, value.shallow_clone());
    }

    /// Records one value; `value` is a detached one-element tensor or a metric object.
    /// `training` tells training values from evaluation ones, whose epochs end separately.
    pub(crate) fn log(
        &mut self,
        key: String,
        value: LogValue,
        options: LogOptions,
        batch_size: usize,
        training: bool,
    ) -> Result<()> {
        if !options.on_step && !options.on_epoch {
            return Err(Error::hook(
                "log",
                format!("`{key}` logged with on_step(false) and on_epoch(false) is not useful: it records nothing"),
            ));
        }
        let value = match value {
            LogValue::Tensor(value) => value.reshape([]),
            LogValue::Object(metric) => return self.log_object(key, metric, options, training),
        };
        let slot = (training, key.clone());
        match self.epoch.get(&slot) {
            Some(entry) if entry.object.is_some() => {
                return Err(Error::hook(
                    "log",
                    format!("`{key}` was logged as a metric object and as a value in one epoch; log one of them"),
                ));
            }
            Some(entry) if !entry.options.same_as(&options) => {
                return Err(options_changed(&key, &entry.options, &options));
            }
            Some(_) => {}
            None => {
                self.epoch.insert(slot.clone(), Entry { training, options, acc: None, object: None });
            }
        }
        if options.on_step {
            self.log_step(&key, &value, &options, training);
        }
        if options.on_epoch {
            let value = value.to_kind(Kind::Double);
            let entry = self.epoch.get_mut(&slot).expect("inserted above");
            entry.acc = Some(match entry.acc.take() {
                None => match options.reduce_fx {
                    Reduce::Mean => Accumulator { value: value * batch_size as f64, weight: batch_size as f64 },
                    _ => Accumulator { value, weight: 1.0 },
                },
                Some(acc) => match options.reduce_fx {
                    Reduce::Mean => Accumulator {
                        value: acc.value + value * batch_size as f64,
                        weight: acc.weight + batch_size as f64,
                    },
                    Reduce::Sum => Accumulator { value: acc.value + value, weight: 1.0 },
                    Reduce::Max => Accumulator { value: acc.value.maximum(&value), weight: 1.0 },
                    Reduce::Min => Accumulator { value: acc.value.minimum(&value), weight: 1.0 },
                },
            });
        }
        Ok(())
    }

    /// A step value: published now in training, kept for the loggers' evaluation step otherwise.
    fn log_step(&mut self, key: &str, value: &Tensor, options: &LogOptions, training: bool) {
        let name = if options.on_epoch { forked(key, "_step") } else { key.to_string() };
        if training {
            self.publish(key, name, value, options);
        } else {
            if options.logger {
                self.eval_steps.insert(name.clone(), value.shallow_clone());
            }
            if options.prog_bar {
                self.progress.insert(name, value.shallow_clone());
            }
        }
    }

    /// Registers a metric object under `key` (the latest handle logged under a key is the one
    /// computed). With `on_step`, the value of its last `forward` is the step value, as
    /// Lightning logs a torchmetrics object's `_forward_cache` (nothing when there is none).
    fn log_object(&mut self, key: String, metric: Box<dyn Metric>, options: LogOptions, training: bool) -> Result<()> {
        let slot = (training, key.clone());
        match self.epoch.get(&slot) {
            Some(entry) if entry.acc.is_some() => {
                return Err(Error::hook(
                    "log",
                    format!("`{key}` was logged as a value and as a metric object in one epoch; log one of them"),
                ));
            }
            Some(entry) if !entry.options.same_as(&options) => {
                return Err(options_changed(&key, &entry.options, &options));
            }
            _ => {}
        }
        if options.on_step
            && let Some(value) = metric.forward_value()
        {
            let value = scalar(&key, &metric.name(), value)?;
            self.log_step(&key, &value, &options, training);
        }
        self.epoch.insert(slot, Entry { training, options, acc: None, object: Some(metric) });
        Ok(())
    }

    /// Reduces the epoch's training (or evaluation) values and publishes them (`key` or
    /// `key_epoch`). A NaN result is a warning or an error, as the policy says. Metric objects
    /// are computed (their state synced across processes), then all reset.
    pub(crate) fn end_epoch(&mut self, training: bool, pg: Option<&crate::dist::ProcessGroup>) -> Result<()> {
        let (ending, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.epoch).into_iter().partition(|(_, e)| e.training == training);
        self.epoch = rest;
        // Every object is computed before any is reset: one metric may be logged under two keys.
        let mut computed = Vec::new();
        for ((_, key), entry) in &ending {
            if let (Some(metric), true) = (&entry.object, entry.options.on_epoch) {
                let value = metric.compute_synced(pg)?;
                computed.push((key.clone(), scalar(key, &metric.name(), value)?));
            }
        }
        ending.values().filter_map(|e| e.object.as_ref()).for_each(|m| m.reset());
        let mut computed = computed.into_iter().collect::<BTreeMap<_, _>>();
        for ((_, key), entry) in ending {
            let value = match (entry.acc, computed.remove(&key)) {
                (_, Some(value)) => value,
                (Some(acc), None) => self.reduce(acc, &entry.options, pg)?,
                (None, None) => continue,
            };
            if value.double_value(&[]).is_nan() {
                match self.nan {
                    NanPolicy::Error => {
                        return Err(Error::hook("log", format!("the epoch value of `{key}` is NaN")));
                    }
                    NanPolicy::Warn => crate::warning::warn(&format!("the epoch value of `{key}` is NaN")),
                }
            }
            let name = if entry.options.on_step { forked(&key, "_epoch") } else { key.clone() };
            self.publish(&key, name, &value, &entry.options);
        }
        Ok(())
    }

    /// An epoch's accumulated value, reduced across processes with `sync_dist`.
    fn reduce(
        &self,
        mut acc: Accumulator,
        options: &LogOptions,
        pg: Option<&crate::dist::ProcessGroup>,
    ) -> Result<Tensor> {
        if let (Some(pg), true) = (pg, options.sync_dist) {
            let reduction = match options.reduce_fx {
                Reduce::Mean | Reduce::Sum => Reduction::Sum,
                Reduce::Max => Reduction::Max,
                Reduce::Min => Reduction::Min,
            };
            acc.value = sync_tensor(pg, &acc.value, reduction)?;
            if options.reduce_fx == Reduce::Mean {
                acc.weight = sync_tensor(pg, &Tensor::from(acc.weight), Reduction::Sum)?.double_value(&[]);
            }
        }
        Ok(match options.reduce_fx {
            Reduce::Mean => acc.value / acc.weight.max(1.0),
            _ => acc.value,
        })
    }

    /// Forgets everything (after the sanity check, or at the start of a run); metric objects
    /// still held are reset, as Lightning resets its results.
    pub(crate) fn reset(&mut self) {
        self.epoch.values().filter_map(|e| e.object.as_ref()).for_each(|m| m.reset());
        *self = MetricStore { nan: self.nan, ..MetricStore::default() };
    }

    /// Drops the logger values recorded since the last call without reading them.
    pub(crate) fn take_pending_unread(&mut self) -> usize {
        std::mem::take(&mut self.pending).len()
    }

    /// Takes the evaluation step values recorded since the last call.
    pub(crate) fn take_eval_steps(&mut self) -> BTreeMap<String, f64> {
        to_f64(&std::mem::take(&mut self.eval_steps))
    }

    /// Takes the logger values recorded since the last call.
    pub(crate) fn take_pending(&mut self) -> BTreeMap<String, f64> {
        to_f64(&std::mem::take(&mut self.pending))
    }

    pub(crate) fn callback_metrics(&self) -> BTreeMap<String, f64> {
        to_f64(&self.callback)
    }

    pub(crate) fn logged_metrics(&self) -> BTreeMap<String, f64> {
        to_f64(&self.logged)
    }

    pub(crate) fn progress_bar_metrics(&self) -> BTreeMap<String, f64> {
        to_f64(&self.progress)
    }

    /// The logged metrics of each of `n` evaluation loaders: keys of that loader (suffix
    /// `/dataloader_idx_i`) plus keys logged without a loader suffix.
    pub(crate) fn per_dataloader(&self, n: usize) -> Vec<BTreeMap<String, f64>> {
        let all = self.logged_metrics();
        (0..n.max(1))
            .map(|i| {
                let suffix = format!("/dataloader_idx_{i}");
                all.iter()
                    .filter(|(k, _)| !k.contains("/dataloader_idx_") || k.ends_with(&suffix))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .collect()
    }
}

/// The error for a key logged twice in one epoch with different options.
fn options_changed(key: &str, first: &LogOptions, now: &LogOptions) -> Error {
    Error::hook(
        "log",
        format!("`{key}` was logged twice in one epoch with different options: first {first:?}, now {now:?}"),
    )
}
