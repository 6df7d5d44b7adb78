//! What the loops report, and the one place that turns it into progress-bar updates, logger
//! flushes and tracing. The loops call hooks and [`Run::emit`]; they never touch the progress
//! bar or the loggers themselves.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::Run;
use crate::ctx::{RunningStage, Stage};
use crate::error::Result;
use crate::module::LightningModule;

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
            Event::LoopStart { label, total } => self.cx.progress.start(label, total),
            Event::TrainBatchEnd { stepped } => {
                self.advance_bar();
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
                self.advance_bar();
            }
            Event::PredictBatchEnd => self.cx.progress.advance(BTreeMap::new),
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
            Event::PredictEnd => self.cx.progress.finish(BTreeMap::new(), true),
        }
        Ok(())
    }

    /// Every logger writes what it buffered, so that TensorBoard or a reader of `metrics.csv`
    /// follows the run epoch by epoch.
    fn save_loggers(&mut self) -> Result<()> {
        self.cx.loggers.iter_mut().try_for_each(|l| l.save())
    }

    /// One batch more on the bar, with the module's `get_progress_bar_dict`.
    fn advance_bar(&mut self) {
        let (progress, metrics) = (&mut self.cx.progress, &self.cx.metrics);
        let model = &*self.model;
        progress.advance(|| model.get_progress_bar_dict(metrics.progress_bar_metrics()));
    }

    /// Ends the bar's line with the module's `get_progress_bar_dict`; `keep`: leave it shown.
    fn finish_bar(&mut self, keep: bool) {
        let bar = self.model.get_progress_bar_dict(self.cx.metrics.progress_bar_metrics());
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
