//! Metric objects, as torchmetrics has them: state accumulated over batches (`update`), one value
//! at the end (`compute`), and a fresh start (`reset`).
//!
//! ```no_run
//! use lit::metrics::{Accuracy, Average};
//! use lit::tch::{Kind, Tensor};
//!
//! let acc = Accuracy::multiclass(10).average(Average::Macro).top_k(2);
//! for _ in 0..3 {
//!     let logits = Tensor::randn([32, 10], (Kind::Float, lit::tch::Device::Cpu));
//!     let labels = Tensor::randint(10, [32], (Kind::Int64, lit::tch::Device::Cpu));
//!     acc.update(&logits, &labels)?;
//! }
//! let value = acc.compute()?; // over the 96 samples
//! acc.reset();
//! # Ok::<(), lit::Error>(())
//! ```
//!
//! A metric is a cheap handle: clones share one state (tensors behind a mutex), so a module can
//! keep one in a field, update it in a step hook and log it with `cx.log("val_acc", &self.acc)`.
//! Logged that way, the Trainer does what Lightning does with a torchmetrics object: at the end
//! of the epoch it computes the value (its state summed across processes first under DDP), logs
//! it, and resets the metric; with `on_step(true)` the value of the batch of the last
//! [`Update::forward`] is logged at each step.
//!
//! Values equal torchmetrics' (its `task=` classes, `multidim_average="global"`, exact AUROC
//! with `thresholds=None`); the names of states are torchmetrics' too.

mod aggregation;
mod classification;
mod collection;
mod regression;
mod state;

pub use aggregation::{MaxMetric, MeanMetric, MinMetric, NanStrategy, SumMetric};
pub use classification::{
    Accuracy, Auroc, Average, ConfusionMatrix, F1Score, FBetaScore, Normalize, Precision, Recall, StatScores, Task,
};
pub use collection::MetricCollection;
pub use regression::{MeanAbsoluteError, MeanSquaredError, MultiOutput, R2Score};

use tch::{Kind, Tensor};

use crate::dist::{ProcessGroup, ReduceOp};
use crate::error::{Error, Result};

/// How one state tensor of a metric combines with another: across processes, and when a batch's
/// state joins the accumulated one (torchmetrics' `dist_reduce_fx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Element-wise sum (counts, sums of errors).
    Sum,
    /// Element-wise maximum.
    Max,
    /// Element-wise minimum.
    Min,
    /// Concatenation along the first dimension (AUROC's predictions and targets).
    Cat,
}

/// A metric: state accumulated over batches, computed into a value, reset between epochs.
///
/// Every metric of this module implements it; classification and regression metrics also
/// implement [`Update`] (predictions and targets), the aggregators have their own `update`
/// (values). Methods take `&self`: a metric is a handle, and clones share its state.
pub trait Metric: Send + Sync {
    /// torchmetrics' class name for it, e.g. `MulticlassAccuracy`; errors start with it.
    fn name(&self) -> String;
    /// The value over everything seen since the last reset (this process's data only; see
    /// [`Metric::compute_synced`]).
    fn compute(&self) -> Result<Tensor>;
    /// Forgets every batch: the state returns to its defaults.
    fn reset(&self);
    /// The value of the batch given to the last `forward`, until the next reset.
    fn forward_value(&self) -> Option<Tensor>;
    /// The number of updates since the last reset.
    fn update_count(&self) -> usize;
    /// The state, by name (torchmetrics' `state_dict()` of the metric): save it in a
    /// checkpoint and give it back to [`Metric::load_state`].
    fn state(&self) -> Vec<(String, Tensor)>;
    /// How each state tensor combines, by name, in the order of [`Metric::state`].
    fn reductions(&self) -> Vec<(String, Reduction)>;
    /// Replaces the state with one [`Metric::state`] returned (names and shapes must fit).
    fn load_state(&self, state: &[(String, Tensor)]) -> Result<()>;
    /// A new metric with the same configuration and a state of its own, at its defaults.
    fn fresh(&self) -> Box<dyn Metric>;
    /// Another handle to this metric (sharing its state), boxed.
    fn handle(&self) -> Box<dyn Metric>;

    /// Adds `other`'s state to this one's (torchmetrics' `merge_state`), as if this metric had
    /// seen `other`'s batches too.
    fn merge(&self, other: &dyn Metric) -> Result<()> {
        let (mine, theirs) = (self.state(), other.state());
        let names = |s: &[(String, Tensor)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if self.name() != other.name() || names(&mine) != names(&theirs) {
            return Err(metric_error(
                &self.name(),
                format!("cannot merge the state of a `{}` with states {:?}", other.name(), names(&theirs)),
            ));
        }
        let merged = self
            .reductions()
            .into_iter()
            .zip(mine.iter().zip(&theirs))
            .map(|((name, reduction), ((_, a), (_, b)))| Ok((name, combine(reduction, a, b)?)))
            .collect::<Result<Vec<_>>>()?;
        self.load_state(&merged)
    }

    /// [`Metric::compute`] over every process's data: with a process group of several processes
    /// the state is first combined across them (each tensor by its [`Reduction`]), as
    /// torchmetrics syncs before `compute`; this process's own state is left as it was.
    fn compute_synced(&self, pg: Option<&ProcessGroup>) -> Result<Tensor> {
        match pg {
            Some(pg) if pg.world_size() > 1 => {
                let reductions = self.reductions();
                let synced = self
                    .state()
                    .into_iter()
                    .zip(reductions)
                    .map(|((name, tensor), (_, reduction))| Ok((name, sync_tensor(pg, &tensor, reduction)?)))
                    .collect::<Result<Vec<_>>>()?;
                let global = self.fresh();
                global.load_state(&synced)?;
                global.compute()
            }
            _ => self.compute(),
        }
    }
}

/// A metric updated from predictions and targets (classification and regression), as a
/// [`MetricCollection`] updates its members.
pub trait Update: Metric {
    /// Adds a batch to the state. Wrong shapes or values are an error naming the metric and
    /// the shapes; the state is then unchanged.
    fn update(&self, preds: &Tensor, target: &Tensor) -> Result<()>;
    /// Adds a batch, as [`Update::update`], and returns the metric's value on that batch alone
    /// (torchmetrics' `forward`, `metric(preds, target)`).
    fn forward(&self, preds: &Tensor, target: &Tensor) -> Result<Tensor>;
    /// Another handle to this metric (sharing its state), boxed.
    fn boxed(&self) -> Box<dyn Update>;
    /// A new metric with the same configuration and a state of its own, boxed.
    fn boxed_fresh(&self) -> Box<dyn Update>;
}

/// Combines `tensor` across the processes of `pg` as `reduction` says. Every value lit reduces
/// across processes goes through here: metric states, and the `sync_dist` epoch values of
/// `cx.log`.
pub(crate) fn sync_tensor(pg: &ProcessGroup, tensor: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let op = match reduction {
        Reduction::Sum => ReduceOp::Sum,
        Reduction::Max => ReduceOp::Max,
        Reduction::Min => ReduceOp::Min,
        Reduction::Cat => return gather_cat(pg, tensor),
    };
    let mut out = tensor.contiguous().copy();
    pg.all_reduce(&mut out, op)?;
    Ok(out)
}

/// Every process's `tensor` concatenated along the first dimension in rank order; the processes
/// may hold different numbers of rows (each is padded to the longest for the gather).
fn gather_cat(pg: &ProcessGroup, tensor: &Tensor) -> Result<Tensor> {
    let kind = tensor.kind();
    // One wire type for every rank, whatever each one's dtype (an empty state has the default).
    let wire = tensor.contiguous().to_kind(if tensor.is_floating_point() { Kind::Double } else { Kind::Int64 });
    let mut shape = wire.size();
    if shape.is_empty() {
        return Err(metric_error("sync", "a concatenated state must have a first dimension"));
    }
    let rows = Tensor::from_slice(&[shape[0]]).to_device(wire.device());
    let lens = Vec::<i64>::try_from(pg.all_gather(&rows)?.flatten(0, -1).to_device(tch::Device::Cpu))?;
    let longest = lens.iter().copied().max().unwrap_or(0);
    if longest == 0 {
        return Ok(tensor.shallow_clone());
    }
    let padded = if shape[0] < longest {
        shape[0] = longest - shape[0];
        let pad = Tensor::zeros(&shape, (wire.kind(), wire.device()));
        Tensor::cat(&[wire, pad], 0)
    } else {
        wire
    };
    let all = pg.all_gather(&padded)?;
    let parts: Vec<Tensor> = lens.iter().enumerate().map(|(rank, &n)| all.get(rank as i64).narrow(0, 0, n)).collect();
    Ok(Tensor::cat(&parts, 0).to_kind(kind))
}

/// `a` and `b` combined as `reduction` says.
pub(crate) fn combine(reduction: Reduction, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::Sum => a.f_add(b)?,
        Reduction::Max => a.f_maximum(b)?,
        Reduction::Min => a.f_minimum(b)?,
        Reduction::Cat => Tensor::f_cat(&[a, b], 0)?,
    })
}

/// What a metric reports about bad input or configuration: the metric's name and what is wrong
/// (shapes, values, options). It reaches users as a [`lit::Error`](crate::Error), from which
/// `downcast_ref::<MetricError>()` recovers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{metric}`: {message}")]
pub struct MetricError {
    /// The metric, e.g. `MulticlassAccuracy`.
    pub metric: String,
    /// What is wrong.
    pub message: String,
}

/// An error unless `preds` and `target` have the same shape (named in it with the metric).
pub(crate) fn same_shape(name: &str, preds: &Tensor, target: &Tensor) -> Result<()> {
    if preds.size() != target.size() {
        return Err(metric_error(
            name,
            format!(
                "`preds` of shape {:?} and `target` of shape {:?} must have the same shape",
                preds.size(),
                target.size()
            ),
        ));
    }
    Ok(())
}

/// An error of metric `name`: "`MulticlassAccuracy`: …".
pub(crate) fn metric_error(name: &str, message: impl std::fmt::Display) -> Error {
    Error::from(MetricError { metric: name.to_string(), message: message.to_string() })
}
