//! What the loops report, and the one place that turns it into progress-bar updates, logger
//! flushes and tracing. The loops call hooks and [`Run::emit`]; they never touch the progress
//! bar or the loggers themselves.

use std::borrow::Cow;

use super::Run;
use crate::ctx::{RunningStage, Stage};
use crate::error::Result;
use crate::module::LightningModule;
use crate::progress::{BarMetrics, BarValue};

/// A point in a loop that the outside world (progress bar, loggers, tracing) follows.
pub(super) enum Event {
    /// A loop over `total` batches (`None`: unknown) starts, shown as `label`.
    LoopStart { label: Cow<'static, str>, total: Option<usize> },
    /// A training batch ended; `stepped`: it took an optimizer step.
    TrainBatchEnd { stepped: bool },
    /// An evaluation batch ended: the `step`-th of the run's evaluation batches.
    EvalBatchEnd { step: usize },
    /// A prediction batch ended.
    PredictBatchEnd,
    /// A training epoch ended (after its end hooks).
    TrainEpochEnd { epoch: usize },
    /// An evaluation epoch ended (after its end hooks, before `on_*_end`).
    EvalEpochEnd,
    /// The prediction loop ended.
    PredictEnd,
}

impl<M: LightningModule> Run<'_, M> {
    /// Follows `event`: the progress bar, the loggers, tracing.
    pub(super) fn emit(&mut self, event: Event) -> Result<()> {
        match event {
            Event::LoopStart { label, total } => {
                let training = self.cx.running == RunningStage::Training;
                self.cx.progress.start(label, total, training)
            }
            Event::TrainBatchEnd { stepped } => {
                // The bar counts to the batch's index (Lightning's `n = batch_idx + 1`), so that
                // a resumed epoch continues where it was.
                self.advance_bar(self.cx.batch_idx.map(|b| b + 1));
                if stepped {
                    // As Lightning: step values reach the loggers every `log_every_n_steps`
                    // steps; those of the steps between are not sent (the epoch end neither).
                    if self.cx.global_step.is_multiple_of(self.config.log_every_n_steps) {
                        self.flush_logs(self.cx.global_step - 1)?;
                    } else {
                        self.cx.metrics.take_pending_unread();
                    }
                }
            }
            Event::EvalBatchEnd { step } => {
                self.flush_eval_step(step)?;
                self.advance_bar(None);
            }
            Event::PredictBatchEnd => self.cx.progress.advance(None, BarMetrics::new),
            Event::TrainEpochEnd { epoch } => {
                self.flush_logs(self.cx.global_step.saturating_sub(1))?;
                self.save_loggers()?;
                self.finish_bar(true);
                if tracing::enabled!(target: "lit", tracing::Level::INFO) {
                    let metrics = self.cx.progress_bar_metrics();
                    let metrics = if metrics.is_empty() { self.cx.callback_metrics() } else { metrics };
                    tracing::info!(target: "lit", epoch, global_step = self.cx.global_step, ?metrics, "training epoch done");
                }
            }
            Event::EvalEpochEnd => {
                let sanity = self.cx.running == RunningStage::SanityChecking;
                if !sanity {
                    // In `fit` the values belong to the last step taken; alone, to the next.
                    let step = match self.cx.stage {
                        Stage::Fit => self.cx.global_step.saturating_sub(1),
                        _ => self.cx.global_step,
                    };
                    self.flush_logs(step)?;
                    self.save_loggers()?;
                }
                self.finish_bar(self.cx.stage != Stage::Fit);
                if !sanity && tracing::enabled!(target: "lit", tracing::Level::INFO) {
                    tracing::info!(target: "lit", stage = ?self.cx.running, metrics = ?self.cx.metrics.logged_metrics(), "evaluation done");
                }
            }
            Event::PredictEnd => self.cx.progress.finish(BarMetrics::new(), true),
        }
        Ok(())
    }

    /// Every logger writes what it buffered, so that TensorBoard or a reader of `metrics.csv`
    /// follows the run epoch by epoch.
    fn save_loggers(&mut self) -> Result<()> {
        self.cx.loggers.iter_mut().try_for_each(|l| l.save())
    }

    /// One batch more on the bar (the `n`-th, when known), with [`bar_metrics`].
    fn advance_bar(&mut self, n: Option<usize>) {
        let (progress, metrics, loggers) = (&mut self.cx.progress, &self.cx.metrics, &self.cx.loggers);
        let model = &*self.model;
        progress.advance(n, || bar_metrics(model, metrics, loggers));
    }

    /// Ends the bar's line with [`bar_metrics`]; `keep`: leave it shown.
    fn finish_bar(&mut self, keep: bool) {
        let bar = bar_metrics(&*self.model, &self.cx.metrics, &self.cx.loggers);
        self.cx.progress.finish(bar, keep);
    }

    /// Hands the logger values recorded since the last flush to the loggers, at `step`.
    fn flush_logs(&mut self, step: usize) -> Result<()> {
        if self.cx.loggers.is_empty() {
            let _ = self.cx.metrics.take_pending_unread();
            return Ok(());
        }
        let mut metrics = self.cx.metrics.take_pending();
        if metrics.is_empty() {
            return Ok(());
        }
        metrics.insert("epoch".into(), self.cx.current_epoch as f64);
        for logger in &mut self.cx.loggers {
            logger.log_metrics(&metrics, step)?;
        }
        Ok(())
    }

    /// Hands the step values of an evaluation batch to the loggers at `step`, the evaluation's
    /// own counter (Lightning logs them without an `epoch` key).
    fn flush_eval_step(&mut self, step: usize) -> Result<()> {
        let metrics = self.cx.metrics.take_eval_steps();
        if metrics.is_empty() || self.cx.running == RunningStage::SanityChecking {
            return Ok(());
        }
        for logger in &mut self.cx.loggers {
            logger.log_metrics(&metrics, step)?;
        }
        Ok(())
    }
}

/// What the bar shows, as Lightning's `get_metrics`: the logger's version as `v_num` (the
/// number of `version_N`, or the last 4 characters of another version), then the module's
/// `get_progress_bar_dict` of the `prog_bar` metrics, which replaces a `v_num` of its own.
fn bar_metrics<M: LightningModule>(
    model: &M,
    metrics: &crate::metric_store::MetricStore,
    loggers: &[Box<dyn crate::loggers::Logger>],
) -> BarMetrics {
    let mut bar = BarMetrics::new();
    if let Some(version) = loggers.first().map(|l| l.version()).filter(|v| !v.is_empty()) {
        let value = match version.strip_prefix("version_").and_then(|n| n.parse::<i64>().ok()) {
            Some(n) => BarValue::Int(n),
            None => BarValue::Text(version.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect()),
        };
        bar.insert("v_num", value);
    }
    for (key, value) in model.get_progress_bar_dict(metrics.progress_bar_metrics()) {
        bar.insert(key, value);
    }
    bar
}
