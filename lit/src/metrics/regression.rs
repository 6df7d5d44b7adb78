//! Regression metrics: mean squared and absolute error and R², as torchmetrics computes them.
//! `preds` and `target` have one shape: (N) or, with several outputs, (N, outputs).

use tch::{Kind, Tensor};

use super::state::{Kernel, Shared, Spec, States, metric_type};
use super::{Reduction, metric_error, same_shape};
use crate::error::Result;

/// Mean squared or absolute error.
#[derive(Debug, Clone)]
pub(crate) struct ErrorKernel {
    absolute: bool,
    squared: bool,
    num_outputs: i64,
}

impl ErrorKernel {
    fn sum_name(&self) -> &'static str {
        if self.absolute { "sum_abs_error" } else { "sum_squared_error" }
    }
}

impl Kernel for ErrorKernel {
    fn name(&self) -> String {
        if self.absolute { "MeanAbsoluteError".into() } else { "MeanSquaredError".into() }
    }

    fn specs(&self) -> Vec<Spec> {
        let cpu = tch::Device::Cpu;
        vec![
            Spec::new(self.sum_name(), Reduction::Sum, Tensor::zeros([self.num_outputs], (Kind::Float, cpu))),
            Spec::new("total", Reduction::Sum, Tensor::zeros([], (Kind::Int64, cpu))),
        ]
    }

    fn check(&self) -> Result<()> {
        if self.num_outputs < 1 {
            return Err(metric_error(
                &self.name(),
                format!("`num_outputs` must be at least 1, got {}", self.num_outputs),
            ));
        }
        Ok(())
    }

    fn update(&self, s: &mut States, preds: &Tensor, target: &Tensor) -> Result<()> {
        let name = self.name();
        same_shape(&name, preds, target)?;
        let (p, t) = if self.num_outputs == 1 {
            (preds.reshape([-1]), target.reshape([-1]))
        } else {
            if preds.dim() != 2 || preds.size()[1] != self.num_outputs {
                return Err(metric_error(
                    &name,
                    format!("`preds` and `target` must have shape (N, {}), got {:?}", self.num_outputs, preds.size()),
                ));
            }
            (preds.shallow_clone(), target.shallow_clone())
        };
        let float = |x: Tensor| if x.is_floating_point() { x } else { x.to_kind(Kind::Float) };
        let diff = float(p) - float(t.shallow_clone());
        let sum = if self.absolute { diff.abs() } else { &diff * &diff }.sum_dim_intlist(0, false, None::<Kind>);
        s.add_(self.sum_name(), &sum);
        s.add_("total", &Tensor::from(t.size().first().copied().unwrap_or(1)).to_device(t.device()));
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        let mean = s.get(self.sum_name()) / s.get("total");
        let value = if self.squared { mean } else { mean.sqrt() };
        Ok(if self.num_outputs == 1 { value.reshape([]) } else { value })
    }
}

/// Mean squared error (torchmetrics' `MeanSquaredError`); its root with `squared(false)`.
#[derive(Clone, Debug)]
pub struct MeanSquaredError(Shared<ErrorKernel>);
metric_type!(MeanSquaredError, update);

impl MeanSquaredError {
    /// The mean squared error over every element of `preds` and `target`.
    pub fn new() -> Self {
        MeanSquaredError(Shared::new(ErrorKernel { absolute: false, squared: true, num_outputs: 1 }))
    }
    /// `false`: the root mean squared error.
    pub fn squared(self, squared: bool) -> Self {
        MeanSquaredError(self.0.configure(|k| k.squared = squared))
    }
    /// One error per output column of inputs of shape (N, `num_outputs`).
    pub fn num_outputs(self, num_outputs: i64) -> Self {
        MeanSquaredError(self.0.configure(|k| k.num_outputs = num_outputs))
    }
}

impl Default for MeanSquaredError {
    fn default() -> Self {
        Self::new()
    }
}

/// Mean absolute error (torchmetrics' `MeanAbsoluteError`).
#[derive(Clone, Debug)]
pub struct MeanAbsoluteError(Shared<ErrorKernel>);
metric_type!(MeanAbsoluteError, update);

impl MeanAbsoluteError {
    /// The mean absolute error over every element of `preds` and `target`.
    pub fn new() -> Self {
        MeanAbsoluteError(Shared::new(ErrorKernel { absolute: true, squared: true, num_outputs: 1 }))
    }
    /// One error per output column of inputs of shape (N, `num_outputs`).
    pub fn num_outputs(self, num_outputs: i64) -> Self {
        MeanAbsoluteError(self.0.configure(|k| k.num_outputs = num_outputs))
    }
}

impl Default for MeanAbsoluteError {
    fn default() -> Self {
        Self::new()
    }
}

/// How R² of several outputs becomes one value (torchmetrics' `multioutput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiOutput {
    /// The mean of the outputs' scores.
    #[default]
    UniformAverage,
    /// One score per output.
    RawValues,
    /// The outputs' scores weighted by their targets' variances.
    VarianceWeighted,
}

#[derive(Debug, Clone)]
pub(crate) struct R2Kernel {
    adjusted: i64,
    multioutput: MultiOutput,
}

impl Kernel for R2Kernel {
    fn name(&self) -> String {
        "R2Score".into()
    }

    fn specs(&self) -> Vec<Spec> {
        let cpu = tch::Device::Cpu;
        let zero = || Tensor::zeros([], (Kind::Float, cpu));
        vec![
            Spec::new("sum_squared_error", Reduction::Sum, zero()),
            Spec::new("sum_error", Reduction::Sum, zero()),
            Spec::new("residual", Reduction::Sum, zero()),
            Spec::new("total", Reduction::Sum, Tensor::zeros([], (Kind::Int64, cpu))),
        ]
    }

    fn check(&self) -> Result<()> {
        if self.adjusted < 0 {
            return Err(metric_error(&self.name(), format!("`adjusted` must be 0 or more, got {}", self.adjusted)));
        }
        Ok(())
    }

    fn update(&self, s: &mut States, preds: &Tensor, target: &Tensor) -> Result<()> {
        let name = self.name();
        same_shape(&name, preds, target)?;
        if preds.dim() == 0 || preds.dim() > 2 {
            return Err(metric_error(
                &name,
                format!("`preds` and `target` must be 1-D or 2-D (N or N × outputs), got shape {:?}", preds.size()),
            ));
        }
        let sum = |x: &Tensor| x.sum_dim_intlist(0, false, None::<Kind>);
        let residual = target - preds;
        s.add("sum_squared_error", &sum(&(target * target)));
        s.add("sum_error", &sum(target));
        s.add("residual", &sum(&(&residual * &residual)));
        s.add("total", &Tensor::from(target.size()[0]).to_device(target.device()));
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        let (sum_sq, sum, rss, n) = (s.get("sum_squared_error"), s.get("sum_error"), s.get("residual"), s.get("total"));
        let count = n.int64_value(&[]);
        if count < 2 {
            return Err(metric_error(&self.name(), format!("needs at least two samples, got {count}")));
        }
        let mean = &sum / &n;
        let tss = &sum_sq - &sum * &mean;
        let nonzero = |x: &Tensor| x.isclose(&x.zeros_like(), 1e-5, 1e-4, false).logical_not();
        let (cond_rss, cond_tss) = (nonzero(&rss), nonzero(&tss));
        let cond = cond_rss.logical_and(&cond_tss);
        let ratio: Tensor = &rss / &tss;
        let raw = (1.0f64 - ratio).where_self(&cond, &rss.ones_like());
        let raw = raw.masked_fill(&cond_rss.logical_and(&cond_tss.logical_not()), 0.0);
        let r2 = match self.multioutput {
            MultiOutput::RawValues => raw,
            MultiOutput::UniformAverage => raw.mean(None::<Kind>),
            MultiOutput::VarianceWeighted => (&tss / tss.sum(None::<Kind>) * &raw).sum(None::<Kind>),
        };
        let adjusted = self.adjusted;
        if adjusted != 0 {
            if adjusted > count - 1 {
                crate::warning::warn("R2Score: more independent regressors than samples; the standard R² is used");
            } else if adjusted == count - 1 {
                crate::warning::warn("R2Score: adjusted R² divides by zero; the standard R² is used");
            } else {
                let kept: Tensor = (1.0f64 - &r2) * (&n - 1) / (&n - adjusted - 1);
                return Ok(1.0f64 - kept);
            }
        }
        Ok(r2)
    }
}

/// The coefficient of determination R² (torchmetrics' `R2Score`).
#[derive(Clone, Debug)]
pub struct R2Score(Shared<R2Kernel>);
metric_type!(R2Score, update);

impl R2Score {
    /// R², averaged uniformly over outputs.
    pub fn new() -> Self {
        R2Score(Shared::new(R2Kernel { adjusted: 0, multioutput: MultiOutput::UniformAverage }))
    }
    /// The adjusted R² for this many independent regressors.
    pub fn adjusted(self, regressors: i64) -> Self {
        R2Score(self.0.configure(|k| k.adjusted = regressors))
    }
    /// How the scores of several outputs combine.
    pub fn multioutput(self, multioutput: MultiOutput) -> Self {
        R2Score(self.0.configure(|k| k.multioutput = multioutput))
    }
}

impl Default for R2Score {
    fn default() -> Self {
        Self::new()
    }
}
