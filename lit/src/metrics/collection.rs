//! Several metrics updated and computed together (torchmetrics' `MetricCollection`).

use std::collections::BTreeMap;

use tch::Tensor;

use super::{Metric, Update, metric_error};
use crate::error::Result;

/// Metrics that take the same predictions and targets, updated, computed and reset together
/// (torchmetrics' `MetricCollection`). Each result is keyed by the metric's name between the
/// collection's prefix and postfix; `cx.log_dict(&collection)` logs every member, each as a
/// metric object (computed and reset at the epoch's end).
///
/// ```no_run
/// use lit::metrics::{Accuracy, Average, F1Score, MetricCollection};
///
/// let train = MetricCollection::new()
///     .with("acc", Accuracy::multiclass(10))
///     .with("f1", F1Score::multiclass(10).average(Average::Macro))
///     .prefix("train_");
/// let val = train.fresh().prefix("val_"); // the same metrics, their own state
/// ```
#[derive(Default)]
pub struct MetricCollection {
    metrics: Vec<(String, Box<dyn Update>)>,
    prefix: String,
    postfix: String,
}

impl Clone for MetricCollection {
    /// Another handle on the same metrics (the state is shared).
    fn clone(&self) -> Self {
        MetricCollection {
            metrics: self.metrics.iter().map(|(n, m)| (n.clone(), m.boxed())).collect(),
            prefix: self.prefix.clone(),
            postfix: self.postfix.clone(),
        }
    }
}

impl std::fmt::Debug for MetricCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricCollection")
            .field("metrics", &self.metrics.iter().map(|(n, m)| (n.as_str(), m.name())).collect::<Vec<_>>())
            .field("prefix", &self.prefix)
            .field("postfix", &self.postfix)
            .finish()
    }
}

impl MetricCollection {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `metric` under `name` (replacing a metric of that name).
    pub fn with(mut self, name: impl Into<String>, metric: impl Update + 'static) -> Self {
        self.insert(name, Box::new(metric));
        self
    }

    /// Adds `metric` under `name` (replacing a metric of that name).
    pub fn insert(&mut self, name: impl Into<String>, metric: Box<dyn Update>) {
        let name = name.into();
        match self.metrics.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = metric,
            None => self.metrics.push((name, metric)),
        }
    }

    /// Puts `prefix` before every key of the results (`"val_"`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Puts `postfix` after every key of the results.
    pub fn postfix(mut self, postfix: impl Into<String>) -> Self {
        self.postfix = postfix.into();
        self
    }

    /// The same metrics and keys, each with a state of its own at its defaults (torchmetrics'
    /// `clone`, for a second stage: `train.fresh().prefix("val_")`).
    pub fn fresh(&self) -> Self {
        let metrics = self.metrics.iter().map(|(n, m)| (n.clone(), m.boxed_fresh())).collect();
        MetricCollection { metrics, prefix: self.prefix.clone(), postfix: self.postfix.clone() }
    }

    /// The key of member `name` in the results.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}{}", self.prefix, self.postfix)
    }

    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Update> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, m)| m.as_ref())
    }

    /// The members, by name, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &dyn Update)> {
        self.metrics.iter().map(|(n, m)| (n.as_str(), m.as_ref()))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Updates every member with the batch.
    pub fn update(&self, preds: &Tensor, target: &Tensor) -> Result<()> {
        self.metrics.iter().try_for_each(|(_, m)| m.update(preds, target))
    }

    /// Updates every member and returns each one's value on this batch alone, by key.
    pub fn forward(&self, preds: &Tensor, target: &Tensor) -> Result<BTreeMap<String, Tensor>> {
        self.metrics.iter().map(|(n, m)| Ok((self.key(n), m.forward(preds, target)?))).collect()
    }

    /// Every member's value, by key.
    pub fn compute(&self) -> Result<BTreeMap<String, Tensor>> {
        self.metrics.iter().map(|(n, m)| Ok((self.key(n), m.compute()?))).collect()
    }

    /// Resets every member.
    pub fn reset(&self) {
        self.metrics.iter().for_each(|(_, m)| m.reset());
    }

    /// Every member's state, named `member.state`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.metrics
            .iter()
            .flat_map(|(n, m)| m.state().into_iter().map(move |(s, t)| (format!("{n}.{s}"), t)))
            .collect()
    }

    /// Loads the states [`MetricCollection::state`] returned.
    pub fn load_state(&self, state: &[(String, Tensor)]) -> Result<()> {
        for (name, metric) in &self.metrics {
            let prefix = format!("{name}.");
            let own: Vec<(String, Tensor)> = state
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|s| (s.to_string(), t.shallow_clone())))
                .collect();
            if own.is_empty() {
                return Err(metric_error("MetricCollection", format!("the state to load has nothing for `{name}`")));
            }
            metric.load_state(&own)?;
        }
        Ok(())
    }
}

/// Logs every member as a metric object under its key: `cx.log_dict(&collection)`.
impl IntoIterator for &MetricCollection {
    type Item = (String, Box<dyn Metric>);
    type IntoIter = std::vec::IntoIter<(String, Box<dyn Metric>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.metrics.iter().map(|(n, m)| (self.key(n), m.handle())).collect::<Vec<_>>().into_iter()
    }
}
