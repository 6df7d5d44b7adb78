//! The metric store behind `cx.log`: step values and epoch reductions, kept as tensors and read
//! only when someone asks (no device sync per step).

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

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
}

struct Accumulator {
    training: bool,
    options: LogOptions,
    value: Tensor,
    weight: f64,
}

/// Values logged during the current run, by key.
#[derive(Default)]
pub(crate) struct MetricStore {
    epoch: BTreeMap<String, Accumulator>,
    callback: BTreeMap<String, Tensor>,
    logged: BTreeMap<String, Tensor>,
    progress: BTreeMap<String, Tensor>,
}

fn to_f64(metrics: &BTreeMap<String, Tensor>) -> BTreeMap<String, f64> {
    metrics.iter().map(|(k, v)| (k.clone(), v.double_value(&[]))).collect()
}

impl MetricStore {
    fn publish(&mut self, key: &str, name: String, value: &Tensor, options: &LogOptions) {
        if name != key {
            self.callback.insert(key.to_string(), value.shallow_clone());
        }
        self.callback.insert(name.clone(), value.shallow_clone());
        if options.logger {
            self.logged.insert(name.clone(), value.shallow_clone());
        }
        if options.prog_bar {
            self.progress.insert(name, value.shallow_clone());
        }
    }

    /// Records one value; `value` is a detached scalar tensor.
    /// `training` tells training values from evaluation ones, whose epochs end separately.
    pub(crate) fn log(&mut self, key: String, value: Tensor, options: LogOptions, batch_size: usize, training: bool) {
        if options.on_step {
            let name = if options.on_epoch { format!("{key}_step") } else { key.clone() };
            self.publish(&key, name, &value, &options);
        }
        if options.on_epoch {
            let value = value.to_kind(Kind::Double);
            match self.epoch.get_mut(&key) {
                None => {
                    let (value, weight) = match options.reduce_fx {
                        Reduce::Mean => (value * batch_size as f64, batch_size as f64),
                        _ => (value, 1.0),
                    };
                    self.epoch.insert(key, Accumulator { training, options, value, weight });
                }
                Some(acc) => {
                    acc.value = match options.reduce_fx {
                        Reduce::Mean => &acc.value + value * batch_size as f64,
                        Reduce::Sum => &acc.value + value,
                        Reduce::Max => acc.value.maximum(&value),
                        Reduce::Min => acc.value.minimum(&value),
                    };
                    if options.reduce_fx == Reduce::Mean {
                        acc.weight += batch_size as f64;
                    }
                }
            }
        }
    }

    /// Reduces the epoch's training (or evaluation) values and publishes them (`key` or
    /// `key_epoch`).
    pub(crate) fn end_epoch(&mut self, training: bool) {
        let (ending, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.epoch).into_iter().partition(|(_, a)| a.training == training);
        self.epoch = rest;
        for (key, acc) in ending {
            let value = match acc.options.reduce_fx {
                Reduce::Mean => acc.value / acc.weight.max(1.0),
                _ => acc.value,
            };
            let name = if acc.options.on_step { format!("{key}_epoch") } else { key.clone() };
            self.publish(&key, name, &value, &acc.options);
        }
    }

    /// Forgets everything (after the sanity check, or at the start of a run).
    pub(crate) fn reset(&mut self) {
        *self = MetricStore::default();
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
}

impl MetricStore {
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
