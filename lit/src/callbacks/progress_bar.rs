//! The progress bar's settings as a callback, as Lightning's `TQDMProgressBar`.

use std::sync::Arc;

use crate::callback::Callback;
use crate::progress::{BarConfig, BarMetrics};

/// The progress bar, as Lightning's `TQDMProgressBar(refresh_rate=1, process_position=0,
/// leave=False)`: given to the Trainer (`.callback(TqdmProgressBar::new().refresh_rate(10))`)
/// it replaces the default bar; `enable_progress_bar(false)` with one is an error, as are two.
///
/// On a terminal the bar moves every `refresh_rate` batches and at the last (0 turns it off);
/// off a terminal lit prints a line every `refresh_rate` batches (the default bar: every
/// `log_every_n_steps`). Without `leave` one training bar is reused from epoch to epoch; with it
/// each epoch's bar stays. After the counts the bar shows [`BarMetrics`]: the logger's `v_num`
/// and the `prog_bar` metrics (through the module's `get_progress_bar_dict`), which
/// [`TqdmProgressBar::get_metrics`] can change, as an override of Lightning's `get_metrics`.
#[derive(Clone)]
pub struct TqdmProgressBar {
    refresh_rate: usize,
    process_position: usize,
    leave: bool,
    enabled: bool,
    get_metrics: Option<crate::progress::MetricsFn>,
    /// Inserted by the Trainer when none was given: lines off a terminal every
    /// `log_every_n_steps`.
    pub(crate) default_lines: Option<usize>,
}

impl std::fmt::Debug for TqdmProgressBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TqdmProgressBar")
            .field("refresh_rate", &self.refresh_rate)
            .field("process_position", &self.process_position)
            .field("leave", &self.leave)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Default for TqdmProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

/// Lightning's `_resolve_refresh_rate`: on Colab (`COLAB_GPU`) a rate of 1 becomes 20, and
/// `TQDM_MINITERS` is a lower bound.
fn resolve_refresh_rate(refresh_rate: usize) -> usize {
    if std::env::var_os("COLAB_GPU").is_some_and(|v| !v.is_empty()) && refresh_rate == 1 {
        tracing::debug!(target: "lit", "Using a higher refresh rate on Colab. Setting it to `20`");
        return 20;
    }
    match std::env::var("TQDM_MINITERS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(min) => min.max(refresh_rate),
        None => refresh_rate,
    }
}

impl TqdmProgressBar {
    /// Lightning's defaults: refresh every batch, one training bar reused across epochs.
    pub fn new() -> Self {
        TqdmProgressBar {
            refresh_rate: resolve_refresh_rate(1),
            process_position: 0,
            leave: false,
            enabled: true,
            get_metrics: None,
            default_lines: None,
        }
    }

    /// Update the bar every this many batches (0: no bar). On Colab a rate of 1 is 20, and
    /// `TQDM_MINITERS` raises it, as in Lightning.
    pub fn refresh_rate(mut self, refresh_rate: usize) -> Self {
        self.refresh_rate = resolve_refresh_rate(refresh_rate);
        self
    }

    /// Keep this many lines free above the bars (for bars of other programs).
    pub fn process_position(mut self, position: usize) -> Self {
        self.process_position = position;
        self
    }

    /// Keep each training epoch's bar on the screen (default: one bar, reused).
    pub fn leave(mut self, leave: bool) -> Self {
        self.leave = leave;
        self
    }

    /// What the bar shows after its counts, from what it would show (Lightning's
    /// `get_metrics` override), e.g. without the version:
    /// `.get_metrics(|mut m| { m.remove("v_num"); m })`.
    pub fn get_metrics(mut self, f: impl Fn(BarMetrics) -> BarMetrics + Send + Sync + 'static) -> Self {
        self.get_metrics = Some(Arc::new(f));
        self
    }

    /// Turns the bar off (Lightning's `disable()`): `cx.print` then prints plainly.
    pub fn disable(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The refresh rate in use.
    pub fn get_refresh_rate(&self) -> usize {
        self.refresh_rate
    }

    /// The lines kept free above the bars.
    pub fn get_process_position(&self) -> usize {
        self.process_position
    }

    /// Whether each epoch's bar stays.
    pub fn get_leave(&self) -> bool {
        self.leave
    }

    /// Whether the bar is drawn: enabled and a refresh rate above 0.
    pub fn is_enabled(&self) -> bool {
        self.enabled && self.refresh_rate > 0
    }

    /// How the Trainer draws it.
    pub(crate) fn config(&self) -> BarConfig {
        BarConfig {
            refresh_rate: self.refresh_rate,
            lines_every: self.default_lines.unwrap_or(self.refresh_rate).max(1),
            leave: self.leave,
            process_position: self.process_position,
            get_metrics: self.get_metrics.clone(),
        }
    }
}

impl Callback for TqdmProgressBar {}
