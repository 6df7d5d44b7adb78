//! `EarlyStopping`: stops training when a monitored metric stops improving.

use super::Mode;
use crate::callback::Callback;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

/// Stops training when `monitor` has not improved by more than `min_delta` for `patience`
/// checks, as Lightning's `EarlyStopping`; also when it reaches `stopping_threshold`, passes
/// `divergence_threshold` or is not finite (`check_finite`). Checked after each validation (or
/// at each training epoch end without validation). Its state survives resume.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: String,
    mode: Mode,
    patience: usize,
    min_delta: f64,
    stopping_threshold: Option<f64>,
    divergence_threshold: Option<f64>,
    check_finite: bool,
    best: Option<f64>,
    wait: usize,
    stopped_epoch: Option<usize>,
    reason: Option<String>,
}

impl EarlyStopping {
    /// Watches `monitor` with Lightning's defaults (min, patience 3, min_delta 0, check_finite).
    pub fn new(monitor: impl Into<String>) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            mode: Mode::Min,
            patience: 3,
            min_delta: 0.0,
            stopping_threshold: None,
            divergence_threshold: None,
            check_finite: true,
            best: None,
            wait: 0,
            stopped_epoch: None,
            reason: None,
        }
    }
    /// Lower (`Mode::Min`) or higher is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Checks without improvement before stopping.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }
    /// The least change that counts as an improvement.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta.abs();
        self
    }
    /// Stop as soon as the metric is this good.
    pub fn stopping_threshold(mut self, threshold: f64) -> Self {
        self.stopping_threshold = Some(threshold);
        self
    }
    /// Stop as soon as the metric is this bad.
    pub fn divergence_threshold(mut self, threshold: f64) -> Self {
        self.divergence_threshold = Some(threshold);
        self
    }
    /// Stop when the metric is NaN or infinite (default true).
    pub fn check_finite(mut self, check: bool) -> Self {
        self.check_finite = check;
        self
    }
    /// The epoch training stopped in, if it did.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }
    /// Why training stopped, if it did.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// The best value seen.
    pub fn best_score(&self) -> Option<f64> {
        self.best
    }

    fn check(&mut self, cx: &mut Ctx) -> Result<()> {
        let metrics = cx.callback_metrics();
        let current = *metrics.get(&self.monitor).ok_or_else(|| {
            Error::msg(format!(
                "EarlyStopping monitors `{}`, which was not logged; logged: {:?}",
                self.monitor,
                metrics.keys().collect::<Vec<_>>()
            ))
        })?;
        let reason = if self.check_finite && !current.is_finite() {
            Some(format!("`{}` = {current} is not finite", self.monitor))
        } else if self.stopping_threshold.is_some_and(|t| self.mode.better(current, t, 0.0)) {
            Some(format!("`{}` = {current} reached the stopping threshold", self.monitor))
        } else if self.divergence_threshold.is_some_and(|t| self.mode.better(t, current, 0.0)) {
            Some(format!("`{}` = {current} passed the divergence threshold", self.monitor))
        } else if self.best.is_none_or(|b| self.mode.better(current, b, self.min_delta)) {
            self.best = Some(current);
            self.wait = 0;
            None
        } else {
            self.wait += 1;
            (self.wait >= self.patience).then(|| {
                let best = self.best.map_or_else(|| "none".to_string(), |b| format!("{b:.3}"));
                format!(
                    "monitored metric `{}` did not improve in the last {} records; best score: {best}",
                    self.monitor, self.wait
                )
            })
        };
        if let Some(reason) = reason {
            tracing::info!(target: "lit", %reason, "early stopping");
            self.stopped_epoch = Some(cx.current_epoch());
            self.reason = Some(reason);
            cx.request_stop();
        }
        Ok(())
    }
}

impl Callback for EarlyStopping {
    fn on_validation_end(&mut self, cx: &mut Ctx) -> Result<()> {
        if cx.sanity_checking() || cx.stage() != crate::Stage::Fit {
            return Ok(());
        }
        self.check(cx)
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        if cx.has_validation() {
            return Ok(());
        }
        self.check(cx)
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.best = state.get("best").and_then(|v| v.as_f64());
        self.wait = state.get("wait").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        self.stopped_epoch = state.get("stopped_epoch").and_then(|v| v.as_u64()).map(|v| v as usize);
        Ok(())
    }
}
