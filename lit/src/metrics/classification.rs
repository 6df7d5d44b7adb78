//! Classification metrics: accuracy, precision, recall, F-scores and the counts behind them
//! ([`StatScores`]), the confusion matrix and the area under the ROC curve, for binary,
//! multiclass and multilabel tasks, as torchmetrics computes them.
//!
//! Inputs, as torchmetrics takes them:
//! - binary: `preds` and `target` of one shape; `preds` probabilities or logits (a floating
//!   tensor: a sigmoid is applied when a value lies outside [0, 1], then `> threshold`) or 0/1
//!   labels; `target` 0/1.
//! - multiclass: `preds` scores of shape (N, C, …) (probabilities or logits) or class indices
//!   of `target`'s shape; `target` class indices of shape (N, …).
//! - multilabel: `preds` and `target` of shape (N, L, …), as in the binary case per label.

use tch::{Kind, Tensor};

use super::state::{Kernel, Shared, Spec, States, metric_type};
use super::{Reduction, metric_error, same_shape};
use crate::error::Result;

/// What is being classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One yes/no decision per element.
    Binary,
    /// One class out of `num_classes` per sample.
    Multiclass {
        /// The number of classes (at least 2).
        num_classes: i64,
    },
    /// `num_labels` independent yes/no decisions per sample.
    Multilabel {
        /// The number of labels (at least 2).
        num_labels: i64,
    },
}

impl Task {
    fn prefix(self) -> &'static str {
        match self {
            Task::Binary => "Binary",
            Task::Multiclass { .. } => "Multiclass",
            Task::Multilabel { .. } => "Multilabel",
        }
    }

    /// Classes or labels (1 for a binary task).
    fn size(self) -> i64 {
        match self {
            Task::Binary => 1,
            Task::Multiclass { num_classes } => num_classes,
            Task::Multilabel { num_labels } => num_labels,
        }
    }

    fn check(self, name: &str) -> Result<()> {
        match self {
            Task::Multiclass { num_classes: n } if n < 2 => {
                Err(metric_error(name, format!("`num_classes` must be at least 2, got {n}")))
            }
            Task::Multilabel { num_labels: n } if n < 2 => {
                Err(metric_error(name, format!("`num_labels` must be at least 2, got {n}")))
            }
            _ => Ok(()),
        }
    }
}

/// How per-class (or per-label) scores become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Average {
    /// Counts summed over classes first, then one score (the default, as torchmetrics'
    /// `Accuracy(task=…)`, `Precision(task=…)`, … wrappers).
    #[default]
    Micro,
    /// The mean of the per-class scores (multiclass: over classes present in the target or
    /// the predictions).
    Macro,
    /// The mean of the per-class scores weighted by each class's support (`tp + fn`).
    Weighted,
    /// No averaging: one score per class.
    None,
}

/// How a confusion matrix is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Over the targets (each row sums to 1).
    True,
    /// Over the predictions (each column sums to 1).
    Pred,
    /// Over everything (the matrix sums to 1).
    All,
}

// ---------------------------------------------------------------------------------------------
// Input checks and formatting shared by the classification metrics.

/// Up to five of `t`'s values where `bad` holds, for an error message.
fn some_values(t: &Tensor, bad: &Tensor) -> Vec<f64> {
    let values = t.masked_select(bad).to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let n = values.size()[0].min(5);
    Vec::<f64>::try_from(values.narrow(0, 0, n)).unwrap_or_default()
}

/// Applies a sigmoid (or a softmax over dimension 1) when a value of `p` lies outside [0, 1]
/// (torchmetrics' `normalize_logits_if_needed`).
fn normalize(p: &Tensor, softmax: bool) -> Tensor {
    let inside = p.ge(0.0).logical_and(&p.le(1.0)).all().int64_value(&[]) != 0;
    match (inside, softmax) {
        (true, _) => p.shallow_clone(),
        (false, false) => p.sigmoid(),
        (false, true) => p.softmax(1, None),
    }
}

/// A binary target as 0/1 of type int64, with `ignore_index` entries set to -1.
fn binary_target(name: &str, target: &Tensor, ignore: Option<i64>) -> Result<Tensor> {
    let mut bad = target.ne(0).logical_and(&target.ne(1));
    if let Some(i) = ignore {
        bad = bad.logical_and(&target.ne(i));
    }
    if bad.any().int64_value(&[]) != 0 {
        let allowed = match ignore {
            Some(i) => format!("0, 1 or the ignore_index {i}"),
            None => "0 or 1".into(),
        };
        return Err(metric_error(
            name,
            format!("`target` must hold only {allowed}, found {:?}", some_values(target, &bad)),
        ));
    }
    let t = target.to_kind(Kind::Int64);
    Ok(match ignore {
        Some(i) => t.masked_fill(&target.eq(i), -1),
        None => t,
    })
}

/// Binary predictions as 0/1 of type int64: scores normalised and thresholded, or labels checked.
fn binary_preds(name: &str, preds: &Tensor, threshold: f64) -> Result<Tensor> {
    if preds.is_floating_point() {
        return Ok(normalize(preds, false).gt(threshold).to_kind(Kind::Int64));
    }
    let p = preds.to_kind(Kind::Int64);
    let bad = p.ne(0).logical_and(&p.ne(1));
    if bad.any().int64_value(&[]) != 0 {
        return Err(metric_error(
            name,
            format!(
                "integer `preds` are labels and must be 0 or 1, found {:?} (give probabilities or logits as a floating tensor)",
                some_values(&p, &bad)
            ),
        ));
    }
    Ok(p)
}

/// Checks `target` holds class indices below `n` (or `ignore`); returns it flattened as int64.
fn class_target(name: &str, target: &Tensor, n: i64, ignore: Option<i64>) -> Result<Tensor> {
    if target.is_floating_point() {
        return Err(metric_error(
            name,
            format!("`target` must hold class indices (an integer tensor), got {:?}", target.kind()),
        ));
    }
    let t = target.reshape([-1]).to_kind(Kind::Int64);
    let mut bad = t.lt(0).logical_or(&t.ge(n));
    if let Some(i) = ignore {
        bad = bad.logical_and(&t.ne(i));
    }
    if bad.any().int64_value(&[]) != 0 {
        return Err(metric_error(
            name,
            format!("`target` must hold class indices in 0..{n}, found {:?}", some_values(&t, &bad)),
        ));
    }
    Ok(t)
}

/// Multiclass scores (N, C, …) as rows of C, checked against `target` (N, …).
fn class_scores(name: &str, preds: &Tensor, target: &Tensor, n: i64) -> Result<Tensor> {
    let (p, t) = (preds.size(), target.size());
    if p.len() != t.len() + 1 || p[1] != n || p[0] != t[0] || p[2..] != t[1..] {
        return Err(metric_error(
            name,
            format!(
                "`preds` of shape {p:?} and `target` of shape {t:?} do not fit: expected scores of shape \
                 (N, {n}, …) and a target of shape (N, …)"
            ),
        ));
    }
    if !preds.is_floating_point() {
        return Err(metric_error(name, format!("scores `preds` of shape {p:?} must be a floating tensor")));
    }
    Ok(preds.movedim([1], [-1]).reshape([-1, n]))
}

/// Multiclass predicted labels and targets, flattened, without the ignored samples. With
/// `top_k > 1` a sample counts as predicted right when its target is among its `top_k` scores
/// (and as its best score's class otherwise), as torchmetrics counts it.
fn class_labels(
    name: &str,
    preds: &Tensor,
    target: &Tensor,
    n: i64,
    top_k: i64,
    ignore: Option<i64>,
) -> Result<(Tensor, Tensor)> {
    let label = if preds.dim() == target.dim() + 1 {
        let scores = class_scores(name, preds, target, n)?;
        let t = target.reshape([-1]).to_kind(Kind::Int64);
        if top_k == 1 {
            scores.argmax(1, false)
        } else {
            let (_, best) = scores.topk(top_k, 1, true, true);
            let hit = best.eq_tensor(&t.unsqueeze(1)).any_dim(1, false);
            t.where_self(&hit, &best.select(1, 0))
        }
    } else if preds.dim() == target.dim() {
        same_shape(name, preds, target)?;
        if preds.is_floating_point() {
            return Err(metric_error(
                name,
                format!(
                    "`preds` of `target`'s shape {:?} must be class indices (an integer tensor); give scores \
                     of shape (N, {n}, …) instead",
                    target.size()
                ),
            ));
        }
        if top_k > 1 {
            return Err(metric_error(name, format!("`top_k` {top_k} needs scores of shape (N, {n}, …), not labels")));
        }
        let p = preds.reshape([-1]).to_kind(Kind::Int64);
        let bad = p.lt(0).logical_or(&p.ge(n));
        if bad.any().int64_value(&[]) != 0 {
            return Err(metric_error(
                name,
                format!("`preds` must hold class indices in 0..{n}, found {:?}", some_values(&p, &bad)),
            ));
        }
        p
    } else {
        return Err(metric_error(
            name,
            format!(
                "`preds` of shape {:?} and `target` of shape {:?} do not fit: expected scores (N, {n}, …) or labels \
                 of `target`'s shape",
                preds.size(),
                target.size()
            ),
        ));
    };
    let t = class_target(name, target, n, ignore)?;
    Ok(match ignore {
        Some(i) => {
            let keep = t.ne(i);
            (label.masked_select(&keep), t.masked_select(&keep))
        }
        None => (label, t),
    })
}

/// `num / denom`, and `zero_division` where `denom` is 0 (torchmetrics' `_safe_divide`).
fn safe_divide(num: &Tensor, denom: &Tensor, zero_division: f64) -> Tensor {
    let float = |t: &Tensor| if t.is_floating_point() { t.shallow_clone() } else { t.to_kind(Kind::Float) };
    let (num, denom) = (float(num), float(denom));
    let zero = Tensor::full([], zero_division, (num.kind(), num.device()));
    (&num / &denom).where_self(&denom.ne(0.0), &zero)
}

// ---------------------------------------------------------------------------------------------
// Stat scores: accuracy, precision, recall, F-beta.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Stats,
    Accuracy,
    Precision,
    Recall,
    F1,
    FBeta(f64),
}

/// Counts true and false positives and negatives per class; the scores are computed from them.
#[derive(Debug, Clone)]
pub(crate) struct StatKernel {
    task: Task,
    score: Score,
    average: Average,
    top_k: i64,
    threshold: f64,
    ignore_index: Option<i64>,
    zero_division: f64,
}

impl StatKernel {
    fn new(task: Task, score: Score) -> Self {
        StatKernel {
            task,
            score,
            average: Average::Micro,
            top_k: 1,
            threshold: 0.5,
            ignore_index: None,
            zero_division: 0.0,
        }
    }

    fn beta(&self) -> f64 {
        match self.score {
            Score::FBeta(beta) => beta,
            _ => 1.0,
        }
    }

    /// The score from counts (scalars, or per class), with `tp`, … as int64.
    fn score(&self, tp: &Tensor, fp: &Tensor, tn: &Tensor, fn_: &Tensor, multiclass: bool) -> Tensor {
        let zd = self.zero_division;
        match self.score {
            Score::Accuracy if multiclass => safe_divide(tp, &(tp + fn_), 0.0),
            Score::Accuracy => safe_divide(&(tp + tn), &(tp + tn + fp + fn_), 0.0),
            Score::Precision => safe_divide(tp, &(tp + fp), zd),
            Score::Recall => safe_divide(tp, &(tp + fn_), zd),
            Score::F1 | Score::FBeta(_) => {
                let b2 = self.beta() * self.beta();
                safe_divide(&(tp * (1.0 + b2)), &(tp * (1.0 + b2) + fn_ * b2 + fp), zd)
            }
            Score::Stats => unreachable!("stat scores are not one score"),
        }
    }
}

impl Kernel for StatKernel {
    fn name(&self) -> String {
        let base = match self.score {
            Score::Stats => "StatScores",
            Score::Accuracy => "Accuracy",
            Score::Precision => "Precision",
            Score::Recall => "Recall",
            Score::F1 => "F1Score",
            Score::FBeta(_) => "FBetaScore",
        };
        format!("{}{base}", self.task.prefix())
    }

    fn specs(&self) -> Vec<Spec> {
        let zeros = || Tensor::zeros([self.task.size()], (Kind::Int64, tch::Device::Cpu));
        ["tp", "fp", "tn", "fn"].into_iter().map(|n| Spec::new(n, Reduction::Sum, zeros())).collect()
    }

    fn check(&self) -> Result<()> {
        let name = self.name();
        self.task.check(&name)?;
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(metric_error(&name, format!("`threshold` must lie in [0, 1], got {}", self.threshold)));
        }
        if self.zero_division != 0.0 && self.zero_division != 1.0 {
            return Err(metric_error(&name, format!("`zero_division` must be 0 or 1, got {}", self.zero_division)));
        }
        if self.beta().is_nan() || self.beta() <= 0.0 {
            return Err(metric_error(&name, format!("`beta` must be positive, got {}", self.beta())));
        }
        match self.task {
            Task::Multiclass { num_classes } if self.top_k < 1 || self.top_k > num_classes => Err(metric_error(
                &name,
                format!("`top_k` must lie in 1..={num_classes} (the number of classes), got {}", self.top_k),
            )),
            Task::Binary | Task::Multilabel { .. } if self.top_k != 1 => {
                Err(metric_error(&name, "`top_k` applies to multiclass tasks only"))
            }
            _ => Ok(()),
        }
    }

    fn update(&self, s: &mut States, preds: &Tensor, target: &Tensor) -> Result<()> {
        let name = self.name();
        let (tp, fp, tn, fn_) = match self.task {
            Task::Binary | Task::Multilabel { .. } => {
                same_shape(&name, preds, target)?;
                let size = self.task.size();
                if let Task::Multilabel { num_labels } = self.task
                    && (preds.dim() < 2 || preds.size()[1] != num_labels)
                {
                    return Err(metric_error(
                        &name,
                        format!("`preds` and `target` must have shape (N, {num_labels}, …), got {:?}", preds.size()),
                    ));
                }
                let t = binary_target(&name, target, self.ignore_index)?;
                let p = binary_preds(&name, preds, self.threshold)?;
                let rows =
                    |x: Tensor| if size == 1 { x.reshape([-1, 1]) } else { x.movedim([1], [-1]).reshape([-1, size]) };
                let (p, t) = (rows(p), rows(t));
                let count = |a: Tensor, b: Tensor| a.logical_and(&b).sum_dim_intlist(0, false, Kind::Int64);
                (count(t.eq(1), p.eq(1)), count(t.eq(0), p.eq(1)), count(t.eq(0), p.eq(0)), count(t.eq(1), p.eq(0)))
            }
            Task::Multiclass { num_classes: n } => {
                let (label, t) = class_labels(&name, preds, target, n, self.top_k, self.ignore_index)?;
                let confmat = (t * n + label).bincount::<Tensor>(None, n * n).reshape([n, n]);
                let tp = confmat.diag(0);
                let fp = confmat.sum_dim_intlist(0, false, Kind::Int64) - &tp;
                let fn_ = confmat.sum_dim_intlist(1, false, Kind::Int64) - &tp;
                let tn = confmat.sum(Kind::Int64) - (&tp + &fp + &fn_);
                (tp, fp, tn, fn_)
            }
        };
        s.add("tp", &tp);
        s.add("fp", &fp);
        s.add("tn", &tn);
        s.add("fn", &fn_);
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        let (tp, fp, tn, fn_) = (s.get("tp"), s.get("fp"), s.get("tn"), s.get("fn"));
        let multiclass = matches!(self.task, Task::Multiclass { .. });
        if self.score == Score::Stats {
            let res = Tensor::stack(&[&tp, &fp, &tn, &fn_, &(&tp + &fn_)], -1);
            return Ok(match (self.task, self.average) {
                (Task::Binary, _) => res.reshape([-1]),
                (_, Average::Micro) => res.sum_dim_intlist(0, false, Kind::Int64),
                (_, Average::Macro) => res.to_kind(Kind::Float).mean_dim(0, false, Kind::Float),
                (_, Average::Weighted) => {
                    let w = &tp + &fn_;
                    (res * (&w / w.sum(Kind::Int64)).reshape([-1, 1])).sum_dim_intlist(0, false, Kind::Float)
                }
                (_, Average::None) => res,
            });
        }
        if self.task == Task::Binary {
            return Ok(self.score(&tp, &fp, &tn, &fn_, false).reshape([]));
        }
        if self.average == Average::Micro {
            let total = |x: &Tensor| x.sum_dim_intlist(0, false, Kind::Int64);
            let (tp, fp, tn, fn_) = (total(&tp), total(&fp), total(&tn), total(&fn_));
            return Ok(self.score(&tp, &fp, &tn, &fn_, multiclass));
        }
        let score = self.score(&tp, &fp, &tn, &fn_, multiclass);
        let weights = match self.average {
            Average::None => return Ok(score),
            Average::Weighted => &tp + &fn_,
            _ if !multiclass => score.ones_like(),
            _ => {
                // torchmetrics' F-beta leaves `top_k` out of this rule.
                let top_k = if matches!(self.score, Score::F1 | Score::FBeta(_)) { 1 } else { self.top_k };
                let absent = if top_k == 1 { (&tp + &fp + &fn_).eq(0) } else { (&tp + &fn_).eq(0) };
                score.ones_like().masked_fill(&absent, 0.0)
            }
        };
        let total = weights.sum_dim_intlist(-1, true, weights.kind());
        Ok(safe_divide(&(&weights * &score), &total, 0.0).sum_dim_intlist(-1, false, Kind::Float))
    }
}

/// Builder methods shared by the stat-score metrics.
macro_rules! stat_builders {
    ($ty:ident) => {
        impl $ty {
            /// How per-class scores are averaged (multiclass and multilabel; default micro).
            pub fn average(self, average: Average) -> Self {
                $ty(self.0.configure(|k| k.average = average))
            }
            /// Multiclass: a sample counts as right when its target is among its `k` best scores.
            pub fn top_k(self, k: i64) -> Self {
                $ty(self.0.configure(|k2| k2.top_k = k))
            }
            /// Binary and multilabel: the probability above which a prediction is positive
            /// (default 0.5).
            pub fn threshold(self, threshold: f64) -> Self {
                $ty(self.0.configure(|k| k.threshold = threshold))
            }
            /// Targets equal to `index` are left out.
            pub fn ignore_index(self, index: i64) -> Self {
                $ty(self.0.configure(|k| k.ignore_index = Some(index)))
            }
            /// The task this metric was built for.
            pub fn task(&self) -> Task {
                self.0.kernel.task
            }
        }
    };
}

/// Builder method for the scores that divide by a count that may be zero.
macro_rules! zero_division_builder {
    ($ty:ident) => {
        impl $ty {
            /// The value of a score whose denominator is 0: 0 (default) or 1.
            pub fn zero_division(self, value: f64) -> Self {
                $ty(self.0.configure(|k| k.zero_division = value))
            }
        }
    };
}

/// Constructors of a stat-score metric.
macro_rules! stat_constructors {
    ($ty:ident, $score:expr, $what:literal) => {
        impl $ty {
            #[doc = concat!("The ", $what, " of a task, averaged micro (as torchmetrics' `task=` wrapper).")]
            pub fn new(task: Task) -> Self {
                $ty(Shared::new(StatKernel::new(task, $score)))
            }
            #[doc = concat!("Binary ", $what, ".")]
            pub fn binary() -> Self {
                Self::new(Task::Binary)
            }
            #[doc = concat!("Multiclass ", $what, " over `num_classes` classes.")]
            pub fn multiclass(num_classes: i64) -> Self {
                Self::new(Task::Multiclass { num_classes })
            }
            #[doc = concat!("Multilabel ", $what, " over `num_labels` labels.")]
            pub fn multilabel(num_labels: i64) -> Self {
                Self::new(Task::Multilabel { num_labels })
            }
        }
    };
}

/// Accuracy: the share of right predictions (torchmetrics' `Accuracy`). Multiclass micro:
/// right samples over all; macro: the mean of per-class recalls; multilabel: per label, right
/// decisions over all.
#[derive(Clone, Debug)]
pub struct Accuracy(Shared<StatKernel>);
stat_constructors!(Accuracy, Score::Accuracy, "accuracy");
stat_builders!(Accuracy);
metric_type!(Accuracy, update);

/// Precision: `tp / (tp + fp)` (torchmetrics' `Precision`).
#[derive(Clone, Debug)]
pub struct Precision(Shared<StatKernel>);
stat_constructors!(Precision, Score::Precision, "precision");
stat_builders!(Precision);
zero_division_builder!(Precision);
metric_type!(Precision, update);

/// Recall: `tp / (tp + fn)` (torchmetrics' `Recall`).
#[derive(Clone, Debug)]
pub struct Recall(Shared<StatKernel>);
stat_constructors!(Recall, Score::Recall, "recall");
stat_builders!(Recall);
zero_division_builder!(Recall);
metric_type!(Recall, update);

/// F1 score: the harmonic mean of precision and recall (torchmetrics' `F1Score`).
#[derive(Clone, Debug)]
pub struct F1Score(Shared<StatKernel>);
stat_constructors!(F1Score, Score::F1, "F1 score");
stat_builders!(F1Score);
zero_division_builder!(F1Score);
metric_type!(F1Score, update);

/// F-beta score: recall weighted `beta` times as much as precision (torchmetrics' `FBetaScore`).
#[derive(Clone, Debug)]
pub struct FBetaScore(Shared<StatKernel>);
stat_builders!(FBetaScore);
zero_division_builder!(FBetaScore);
metric_type!(FBetaScore, update);

impl FBetaScore {
    /// The F-beta score of a task, averaged micro.
    pub fn new(task: Task, beta: f64) -> Self {
        FBetaScore(Shared::new(StatKernel::new(task, Score::FBeta(beta))))
    }
    /// Binary F-beta score.
    pub fn binary(beta: f64) -> Self {
        Self::new(Task::Binary, beta)
    }
    /// Multiclass F-beta score over `num_classes` classes.
    pub fn multiclass(num_classes: i64, beta: f64) -> Self {
        Self::new(Task::Multiclass { num_classes }, beta)
    }
    /// Multilabel F-beta score over `num_labels` labels.
    pub fn multilabel(num_labels: i64, beta: f64) -> Self {
        Self::new(Task::Multilabel { num_labels }, beta)
    }
}

/// The counts `[tp, fp, tn, fn, support]` (torchmetrics' `StatScores`): 5 values (micro, macro,
/// weighted, binary) or 5 per class (`Average::None`, shape (C, 5)).
#[derive(Clone, Debug)]
pub struct StatScores(Shared<StatKernel>);
stat_constructors!(StatScores, Score::Stats, "true and false positives and negatives");
stat_builders!(StatScores);
metric_type!(StatScores, update);

// ---------------------------------------------------------------------------------------------
// Confusion matrix.

#[derive(Debug, Clone)]
pub(crate) struct ConfusionKernel {
    task: Task,
    threshold: f64,
    ignore_index: Option<i64>,
    normalize: Option<Normalize>,
}

impl Kernel for ConfusionKernel {
    fn name(&self) -> String {
        format!("{}ConfusionMatrix", self.task.prefix())
    }

    fn specs(&self) -> Vec<Spec> {
        let shape = match self.task {
            Task::Binary => vec![2, 2],
            Task::Multiclass { num_classes: n } => vec![n, n],
            Task::Multilabel { num_labels: n } => vec![n, 2, 2],
        };
        vec![Spec::new("confmat", Reduction::Sum, Tensor::zeros(shape, (Kind::Int64, tch::Device::Cpu)))]
    }

    fn check(&self) -> Result<()> {
        let name = self.name();
        self.task.check(&name)?;
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(metric_error(&name, format!("`threshold` must lie in [0, 1], got {}", self.threshold)));
        }
        Ok(())
    }

    fn update(&self, s: &mut States, preds: &Tensor, target: &Tensor) -> Result<()> {
        let name = self.name();
        let confmat = match self.task {
            Task::Binary => {
                same_shape(&name, preds, target)?;
                let (mut p, mut t) = (preds.reshape([-1]), target.reshape([-1]));
                if let Some(i) = self.ignore_index {
                    let keep = t.ne(i);
                    (p, t) = (p.masked_select(&keep), t.masked_select(&keep));
                }
                let t = binary_target(&name, &t, None)?;
                let p = binary_preds(&name, &p, self.threshold)?;
                (t * 2 + p).bincount::<Tensor>(None, 4).reshape([2, 2])
            }
            Task::Multiclass { num_classes: n } => {
                let (label, t) = class_labels(&name, preds, target, n, 1, self.ignore_index)?;
                (t * n + label).bincount::<Tensor>(None, n * n).reshape([n, n])
            }
            Task::Multilabel { num_labels: n } => {
                same_shape(&name, preds, target)?;
                if preds.dim() < 2 || preds.size()[1] != n {
                    return Err(metric_error(
                        &name,
                        format!("`preds` and `target` must have shape (N, {n}, …), got {:?}", preds.size()),
                    ));
                }
                let t = binary_target(&name, target, self.ignore_index)?;
                let p = binary_preds(&name, preds, self.threshold)?;
                let rows = |x: Tensor| x.movedim([1], [-1]).reshape([-1, n]);
                let (p, t) = (rows(p), rows(t));
                let code = &t * 2 + &p + Tensor::arange(n, (Kind::Int64, p.device())) * 4;
                let code = code.masked_select(&t.ge(0));
                code.bincount::<Tensor>(None, 4 * n).reshape([n, 2, 2])
            }
        };
        s.add("confmat", &confmat);
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        let confmat = s.get("confmat");
        let Some(normalize) = self.normalize else { return Ok(confmat) };
        let c = confmat.to_kind(Kind::Float);
        let c = match normalize {
            Normalize::True => &c / c.sum_dim_intlist(-1, true, Kind::Float),
            Normalize::Pred => &c / c.sum_dim_intlist(-2, true, Kind::Float),
            Normalize::All => &c / c.sum_dim_intlist([-2, -1].as_slice(), true, Kind::Float),
        };
        Ok(c.masked_fill(&c.isnan(), 0.0))
    }
}

/// The confusion matrix (torchmetrics' `ConfusionMatrix`): rows are targets, columns
/// predictions; (2, 2) binary, (C, C) multiclass, (L, 2, 2) multilabel.
#[derive(Clone, Debug)]
pub struct ConfusionMatrix(Shared<ConfusionKernel>);
metric_type!(ConfusionMatrix, update);

impl ConfusionMatrix {
    /// The confusion matrix of a task, counts (no normalisation).
    pub fn new(task: Task) -> Self {
        ConfusionMatrix(Shared::new(ConfusionKernel { task, threshold: 0.5, ignore_index: None, normalize: None }))
    }
    /// The 2 × 2 matrix of a binary task.
    pub fn binary() -> Self {
        Self::new(Task::Binary)
    }
    /// The C × C matrix of `num_classes` classes.
    pub fn multiclass(num_classes: i64) -> Self {
        Self::new(Task::Multiclass { num_classes })
    }
    /// One 2 × 2 matrix per label.
    pub fn multilabel(num_labels: i64) -> Self {
        Self::new(Task::Multilabel { num_labels })
    }
    /// Normalises the computed matrix (0 where a row, column or matrix has no samples).
    pub fn normalize(self, normalize: Normalize) -> Self {
        ConfusionMatrix(self.0.configure(|k| k.normalize = Some(normalize)))
    }
    /// Binary and multilabel: the probability above which a prediction is positive (default 0.5).
    pub fn threshold(self, threshold: f64) -> Self {
        ConfusionMatrix(self.0.configure(|k| k.threshold = threshold))
    }
    /// Targets equal to `index` are left out.
    pub fn ignore_index(self, index: i64) -> Self {
        ConfusionMatrix(self.0.configure(|k| k.ignore_index = Some(index)))
    }
}

// ---------------------------------------------------------------------------------------------
// AUROC.

#[derive(Debug, Clone)]
pub(crate) struct AurocKernel {
    task: Task,
    average: Average,
    max_fpr: Option<f64>,
    ignore_index: Option<i64>,
}

/// The ROC curve's false and true positive rates of scores `p` for targets `t == pos_label`
/// (torchmetrics' `_binary_clf_curve` and `_binary_roc_compute` with `thresholds=None`).
fn roc(p: &Tensor, t: &Tensor, pos_label: i64) -> (Tensor, Tensor) {
    let n = p.size()[0];
    if n == 0 {
        let zero = Tensor::zeros([1], (Kind::Float, p.device()));
        return (zero.copy(), zero);
    }
    let order = p.argsort(0, true);
    let (p, t) = (p.index_select(0, &order), t.index_select(0, &order));
    let distinct = (p.narrow(0, 1, n - 1) - p.narrow(0, 0, n - 1)).nonzero().reshape([-1]);
    let last = Tensor::from_slice(&[n - 1]).to_device(p.device());
    let ends = Tensor::cat(&[distinct, last], 0);
    let t = t.eq(pos_label).to_kind(Kind::Int64);
    let tps = t.cumsum(0, None).index_select(0, &ends);
    let fps = &ends + 1 - &tps;
    let zero = Tensor::zeros([1], (Kind::Int64, p.device()));
    let (tps, fps) = (Tensor::cat(&[&zero, &tps], 0), Tensor::cat(&[&zero, &fps], 0));
    let rate = |x: &Tensor| {
        if x.get(-1).int64_value(&[]) <= 0 {
            Tensor::zeros([x.size()[0]], (p.kind(), p.device()))
        } else {
            x / x.get(-1)
        }
    };
    (rate(&fps), rate(&tps))
}

/// The area under the ROC curve of scores `p` for targets `t == pos_label`, partial up to
/// `max_fpr` with McClish's correction when given.
fn auroc(p: &Tensor, t: &Tensor, pos_label: i64, max_fpr: Option<f64>) -> Tensor {
    let (fpr, tpr) = roc(p, t, pos_label);
    let whole = |fpr: &Tensor, tpr: &Tensor| Tensor::trapz(tpr, fpr, -1);
    let Some(max_fpr) = max_fpr.filter(|&m| m != 1.0) else { return whole(&fpr, &tpr) };
    if fpr.sum(Kind::Double).double_value(&[]) == 0.0 || tpr.sum(Kind::Double).double_value(&[]) == 0.0 {
        return whole(&fpr, &tpr);
    }
    let max_area = Tensor::from(max_fpr as f32).to_device(fpr.device());
    let stop = max_area.bucketize(&fpr, true, true).int64_value(&[]);
    let weight = (&max_area - fpr.get(stop - 1)) / (fpr.get(stop) - fpr.get(stop - 1));
    let interp = tpr.get(stop - 1).lerp_tensor(&tpr.get(stop), &weight);
    let tpr = Tensor::cat(&[tpr.narrow(0, 0, stop), interp.view([1])], 0);
    let fpr = Tensor::cat(&[fpr.narrow(0, 0, stop), max_area.view([1])], 0);
    let partial = whole(&fpr, &tpr);
    let min_area = max_area.pow_tensor_scalar(2) * 0.5;
    ((partial - &min_area) / (&max_area - &min_area) + 1.0) * 0.5
}

impl AurocKernel {
    /// One AUROC per class or label, averaged (NaN scores left out).
    fn reduce(&self, scores: Tensor, weights: Tensor) -> Tensor {
        let keep = scores.isnan().logical_not();
        match self.average {
            Average::None => scores,
            Average::Weighted => {
                let w = weights.masked_select(&keep);
                let w = safe_divide(&w, &w.sum(w.kind()), 0.0);
                (scores.masked_select(&keep) * w).sum(Kind::Float)
            }
            _ => scores.masked_select(&keep).mean(Kind::Float),
        }
    }
}

impl Kernel for AurocKernel {
    fn name(&self) -> String {
        format!("{}AUROC", self.task.prefix())
    }

    fn specs(&self) -> Vec<Spec> {
        let cpu = tch::Device::Cpu;
        let (preds, target) = match self.task {
            Task::Binary => (Tensor::zeros([0], (Kind::Float, cpu)), Tensor::zeros([0], (Kind::Int64, cpu))),
            Task::Multiclass { num_classes: n } => {
                (Tensor::zeros([0, n], (Kind::Float, cpu)), Tensor::zeros([0], (Kind::Int64, cpu)))
            }
            Task::Multilabel { num_labels: n } => {
                (Tensor::zeros([0, n], (Kind::Float, cpu)), Tensor::zeros([0, n], (Kind::Int64, cpu)))
            }
        };
        vec![Spec::new("preds", Reduction::Cat, preds), Spec::new("target", Reduction::Cat, target)]
    }

    fn check(&self) -> Result<()> {
        let name = self.name();
        self.task.check(&name)?;
        if let Some(m) = self.max_fpr
            && (self.task != Task::Binary || m.is_nan() || m <= 0.0 || m > 1.0)
        {
            return Err(metric_error(
                &name,
                format!("`max_fpr` applies to binary tasks and must lie in (0, 1], got {m}"),
            ));
        }
        match (self.task, self.average) {
            (Task::Multiclass { .. }, Average::Micro) => {
                Err(metric_error(&name, "multiclass AUROC averages macro, weighted or none, not micro"))
            }
            _ => Ok(()),
        }
    }

    fn update(&self, s: &mut States, preds: &Tensor, target: &Tensor) -> Result<()> {
        let name = self.name();
        if !preds.is_floating_point() {
            return Err(metric_error(
                &name,
                format!("`preds` must be probabilities or logits (a floating tensor), got {:?}", preds.kind()),
            ));
        }
        if target.is_floating_point() {
            return Err(metric_error(&name, format!("`target` must be an integer tensor, got {:?}", target.kind())));
        }
        match self.task {
            Task::Binary => {
                same_shape(&name, preds, target)?;
                let _valid = binary_target(&name, target, self.ignore_index)?;
                let (mut p, mut t) = (preds.reshape([-1]), target.reshape([-1]).to_kind(Kind::Int64));
                if let Some(i) = self.ignore_index {
                    let keep = t.ne(i);
                    (p, t) = (p.masked_select(&keep), t.masked_select(&keep));
                }
                s.push("preds", normalize(&p, false));
                s.push("target", t);
            }
            Task::Multiclass { num_classes: n } => {
                let scores = class_scores(&name, preds, target, n)?;
                let mut t = class_target(&name, target, n, self.ignore_index)?;
                let mut p = scores;
                if let Some(i) = self.ignore_index {
                    let keep = t.ne(i);
                    p = p.index_select(0, &keep.nonzero().reshape([-1]));
                    t = t.masked_select(&keep);
                }
                s.push("preds", normalize(&p, true));
                s.push("target", t);
            }
            Task::Multilabel { num_labels: n } => {
                same_shape(&name, preds, target)?;
                if preds.dim() < 2 || preds.size()[1] != n {
                    return Err(metric_error(
                        &name,
                        format!("`preds` and `target` must have shape (N, {n}, …), got {:?}", preds.size()),
                    ));
                }
                let _valid = binary_target(&name, target, self.ignore_index)?;
                let rows = |x: &Tensor| x.transpose(0, 1).reshape([n, -1]).transpose(0, 1);
                s.push("preds", normalize(&rows(preds), false));
                s.push("target", rows(&target.to_kind(Kind::Int64)));
            }
        }
        Ok(())
    }

    fn compute(&self, s: &States) -> Result<Tensor> {
        let (p, t) = (s.get("preds"), s.get("target"));
        if p.size()[0] == 0 {
            return Err(metric_error(&self.name(), "no samples to compute the AUROC of: update it first"));
        }
        Ok(match self.task {
            Task::Binary => auroc(&p, &t, 1, self.max_fpr),
            Task::Multiclass { num_classes: n } => {
                let scores: Vec<Tensor> = (0..n).map(|i| auroc(&p.select(1, i), &t, i, None)).collect();
                let weights = t.bincount::<Tensor>(None, n).to_kind(Kind::Float);
                self.reduce(Tensor::stack(&scores, 0), weights)
            }
            Task::Multilabel { num_labels: n } => {
                let kept = |p: Tensor, t: Tensor| match self.ignore_index {
                    Some(i) => {
                        let keep = t.ne(i);
                        (p.masked_select(&keep), t.masked_select(&keep))
                    }
                    None => (p, t),
                };
                if self.average == Average::Micro {
                    let (p, t) = kept(p.reshape([-1]), t.reshape([-1]));
                    return Ok(auroc(&p, &t, 1, None));
                }
                let scores: Vec<Tensor> = (0..n)
                    .map(|i| {
                        let (p, t) = kept(p.select(1, i), t.select(1, i));
                        auroc(&p, &t, 1, None)
                    })
                    .collect();
                let weights = t.eq(1).sum_dim_intlist(0, false, Kind::Int64).to_kind(Kind::Float);
                self.reduce(Tensor::stack(&scores, 0), weights)
            }
        })
    }
}

/// The area under the ROC curve (torchmetrics' `AUROC`), exact: every distinct score is a
/// threshold, ties counted together (torchmetrics' `thresholds=None`). Multiclass: one class
/// against the rest, averaged macro by default; multilabel: per label, macro by default.
#[derive(Clone, Debug)]
pub struct Auroc(Shared<AurocKernel>);
metric_type!(Auroc, update);

impl Auroc {
    /// The AUROC of a task, averaged macro (multiclass, multilabel).
    pub fn new(task: Task) -> Self {
        Auroc(Shared::new(AurocKernel { task, average: Average::Macro, max_fpr: None, ignore_index: None }))
    }
    /// Binary AUROC.
    pub fn binary() -> Self {
        Self::new(Task::Binary)
    }
    /// One-vs-rest AUROC of `num_classes` classes.
    pub fn multiclass(num_classes: i64) -> Self {
        Self::new(Task::Multiclass { num_classes })
    }
    /// Per-label AUROC of `num_labels` labels.
    pub fn multilabel(num_labels: i64) -> Self {
        Self::new(Task::Multilabel { num_labels })
    }
    /// How per-class scores are averaged: macro (default), weighted (by support), none;
    /// multilabel also micro (all labels' decisions as one binary problem).
    pub fn average(self, average: Average) -> Self {
        Auroc(self.0.configure(|k| k.average = average))
    }
    /// Binary: the standardised partial AUC up to this false positive rate (McClish).
    pub fn max_fpr(self, max_fpr: f64) -> Self {
        Auroc(self.0.configure(|k| k.max_fpr = Some(max_fpr)))
    }
    /// Targets equal to `index` are left out.
    pub fn ignore_index(self, index: i64) -> Self {
        Auroc(self.0.configure(|k| k.ignore_index = Some(index)))
    }
}
