//! Aggregators: the mean, sum, maximum and minimum of values over batches (torchmetrics'
//! `MeanMetric`, `SumMetric`, `MaxMetric`, `MinMetric`). Values are cast to float32, as
//! torchmetrics keeps them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use super::state::{Kernel, Shared, Spec, States, metric_type};
use super::{Reduction, metric_error};
use crate::error::Result;

/// What an aggregator does with NaN values (torchmetrics' `nan_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum NanStrategy {
    /// Fail the update.
    Error,
    /// Leave them out, and warn once (the default).
    #[default]
    Warn,
    /// Leave them out silently.
    Ignore,
    /// Put this value in their place (with weight 1).
    Replace(f64),
    /// Keep them (the result becomes NaN).
    Disable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Mean,
    Sum,
    Max,
    Min,
}

#[derive(Debug, Clone)]
pub(crate) struct AggKernel {
    aggregate: Aggregate,
    nan: NanStrategy,
    warned: Arc<AtomicBool>,
}

impl AggKernel {
    fn new(aggregate: Aggregate) -> Self {
        AggKernel { aggregate, nan: NanStrategy::Warn, warned: Arc::default() }
    }

    fn state_name(&self) -> &'static str {
        match self.aggregate {
            Aggregate::Mean => "mean_value",
            Aggregate::Sum => "sum_value",
            Aggregate::Max => "max_value",
            Aggregate::Min => "min_value",
        }
    }

    /// Values and weights as float32, after the NaN strategy (torchmetrics'
    /// `_cast_and_nan_check_input`).
    fn clean(&self, value: &Tensor, weight: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.nan == NanStrategy::Disable {
            return Ok((value.to_kind(Kind::Float), weight.ones_like().to_kind(Kind::Float)));
        }
        let nans = value.isnan().logical_or(&weight.isnan());
        if nans.any().int64_value(&[]) == 0 {
            return Ok((value.to_kind(Kind::Float), weight.to_kind(Kind::Float)));
        }
        let keep = nans.logical_not();
        let (value, weight) = match self.nan {
            NanStrategy::Error => {
                return Err(metric_error(&self.name(), "the values hold NaN (nan_strategy Error)"));
            }
            NanStrategy::Replace(x) => (value.masked_fill(&nans, x), weight.masked_fill(&nans, 1.0)),
            NanStrategy::Warn | NanStrategy::Ignore => {
                if self.nan == NanStrategy::Warn && !self.warned.swap(true, Ordering::Relaxed) {
                    crate::warning::warn(&format!("{}: NaN values were left out", self.name()));
                }
                (value.masked_select(&keep), weight.masked_select(&keep))
            }
            NanStrategy::Disable => unreachable!("handled above"),
        };
        Ok((value.to_kind(Kind::Float), weight.to_kind(Kind::Float)))
    }
}

impl Kernel for AggKernel {
    fn name(&self) -> String {
        match self.aggregate {
            Aggregate::Mean => "MeanMetric",
            Aggregate::Sum => "SumMetric",
            Aggregate::Max => "MaxMetric",
            Aggregate::Min => "MinMetric",
        }
        .into()
    }

    fn specs(&self) -> Vec<Spec> {
        let scalar = |x: f64| Tensor::from(x as f32);
        let (reduction, default) = match self.aggregate {
            Aggregate::Mean | Aggregate::Sum => (Reduction::Sum, 0.0),
            Aggregate::Max => (Reduction::Max, f64::NEG_INFINITY),
            Aggregate::Min => (Reduction::Min, f64::INFINITY),
        };
        let mut specs = vec![Spec::new(self.state_name(), reduction, scalar(default))];
        if self.aggregate == Aggregate::Mean {
            specs.push(Spec::new("weight", Reduction::Sum, scalar(0.0)));
        }
        specs
    }

    fn update(&self, s: &mut States, value: &Tensor, weight: &Tensor) -> Result<()> {
        let weight = match weight.f_broadcast_to(value.size()) {
            Ok(w) => w,
            Err(_) => {
                return Err(metric_error(
                    &self.name(),
                    format!(
                        "weights of shape {:?} do not broadcast to values of shape {:?}",
                        weight.size(),
                        value.size()
                    ),
                ));
            }
        };
        let (value, weight) = self.clean(value, &weight)?;
        if value.numel() == 0 {
            return Ok(());
        }
        let name = self.state_name();
        match self.aggregate {
            Aggregate::Mean => {
                s.add_(name, &(&value * &weight).sum(None::<Kind>));
                s.add_("weight", &weight.sum(None::<Kind>));
            }
            Aggregate::Sum => s.add_(name, &value.sum(None::<Kind>)),
            Aggregate::Max => s.set(name, s.get(name).maximum(&value.max())),
            Aggregate::Min => s.set(name, s.get(name).minimum(&value.min())),
        }
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        Ok(match self.aggregate {
            Aggregate::Mean => s.get("mean_value") / s.get("weight"),
            _ => s.get(self.state_name()).shallow_clone(),
        })
    }
}

/// Methods shared by the aggregators.
macro_rules! aggregator {
    ($ty:ident, $aggregate:expr, $what:literal) => {
        impl $ty {
            #[doc = concat!("The ", $what, " of every value given to `update`.")]
            pub fn new() -> Self {
                $ty(Shared::new(AggKernel::new($aggregate)))
            }
            /// What to do with NaN values (default: leave them out and warn).
            pub fn nan_strategy(self, nan: NanStrategy) -> Self {
                $ty(self.0.configure(|k| k.nan = nan))
            }
            /// Adds every element of `value` (a tensor of any shape; `Tensor::from(x)` for a number).
            pub fn update(&self, value: &Tensor) -> Result<()> {
                self.0.update(value, &value.ones_like())
            }
            /// Adds `value`, as [`Self::update`], and returns the aggregate of `value` alone.
            pub fn forward(&self, value: &Tensor) -> Result<Tensor> {
                self.0.forward(value, &value.ones_like())
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

/// The running mean of values, optionally weighted (torchmetrics' `MeanMetric`).
#[derive(Clone, Debug)]
pub struct MeanMetric(Shared<AggKernel>);
aggregator!(MeanMetric, Aggregate::Mean, "mean");
metric_type!(MeanMetric);

impl MeanMetric {
    /// Adds `value` with weights `weight` (broadcast to `value`'s shape): the mean becomes
    /// `Σ value · weight / Σ weight`.
    pub fn update_weighted(&self, value: &Tensor, weight: &Tensor) -> Result<()> {
        self.0.update(value, weight)
    }
}

/// The sum of values (torchmetrics' `SumMetric`).
#[derive(Clone, Debug)]
pub struct SumMetric(Shared<AggKernel>);
aggregator!(SumMetric, Aggregate::Sum, "sum");
metric_type!(SumMetric);

/// The largest value (torchmetrics' `MaxMetric`).
#[derive(Clone, Debug)]
pub struct MaxMetric(Shared<AggKernel>);
aggregator!(MaxMetric, Aggregate::Max, "maximum");
metric_type!(MaxMetric);

/// The smallest value (torchmetrics' `MinMetric`).
#[derive(Clone, Debug)]
pub struct MinMetric(Shared<AggKernel>);
aggregator!(MinMetric, Aggregate::Min, "minimum");
metric_type!(MinMetric);
