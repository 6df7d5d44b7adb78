//! The progress bar, and the console lines that must not break it (`cx.print`, the model
//! summary). On a terminal: indicatif bars on stderr, one per loop. Elsewhere (CI, a file):
//! plain lines every `every` batches and at the end of each loop, no escape codes.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often prog-bar metrics are read (each read syncs the device once).
const METRICS_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Progress {
    enabled: bool,
    /// Another rank than 0 in distributed training: print nothing at all.
    silent: bool,
    tty: bool,
    every: usize,
    multi: Option<MultiProgress>,
    bars: Vec<Loop>,
}

struct Loop {
    label: String,
    total: Option<usize>,
    done: usize,
    start: Instant,
    metrics_at: Option<Instant>,
    bar: Option<ProgressBar>,
}

fn format_metrics(metrics: &BTreeMap<String, f64>) -> String {
    metrics.iter().map(|(k, v)| format!("{k}={}", format_value(*v))).collect::<Vec<_>>().join(" ")
}

fn format_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) { format!("{v:.3e}") } else { format!("{v:.4}") }
}

impl Progress {
    pub(crate) fn new(enabled: bool, every: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress { enabled, silent: false, tty, every: every.max(1), multi: None, bars: Vec::new() }
    }

    /// A console that prints nothing (ranks other than 0).
    pub(crate) fn silent() -> Self {
        Progress { silent: true, ..Progress::new(false, 1) }
    }

    /// Starts a loop's bar (`Epoch 3`, `Validation`, …) of `total` batches, if known.
    pub(crate) fn start(&mut self, label: impl Into<String>, total: Option<usize>) {
        if !self.enabled {
            return;
        }
        let label = label.into();
        let bar = self.tty.then(|| {
            let multi = self.multi.get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
            let bar = match total {
                Some(n) if n != usize::MAX => ProgressBar::new(n as u64),
                _ => ProgressBar::no_length(),
            };
            let style = ProgressStyle::with_template(
                "{prefix}: {percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = multi.add(bar.with_style(style));
            bar.set_prefix(label.clone());
            bar
        });
        self.bars.push(Loop { label, total, done: 0, start: Instant::now(), metrics_at: None, bar });
    }

    /// One more batch done; `metrics` is asked for the prog-bar metrics at most twice a second.
    pub(crate) fn advance(&mut self, metrics: impl FnOnce() -> BTreeMap<String, f64>) {
        let (tty, every) = (self.tty, self.every);
        let Some(l) = self.bars.last_mut().filter(|_| self.enabled) else { return };
        l.done += 1;
        if let Some(bar) = &l.bar {
            bar.set_position(l.done as u64);
            if l.metrics_at.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
                l.metrics_at = Some(Instant::now());
                bar.set_message(format_metrics(&metrics()));
            }
        } else if !tty && l.done % every == 0 {
            let line = Self::line(l, &metrics());
            Self::write_line(&line);
        }
    }

    fn line(l: &Loop, metrics: &BTreeMap<String, f64>) -> String {
        let secs = l.start.elapsed().as_secs_f64();
        let total = l.total.filter(|&n| n != usize::MAX).map_or_else(|| "?".into(), |n| n.to_string());
        let rate = if secs > 0.0 { l.done as f64 / secs } else { 0.0 };
        format!("{}: {}/{} [{secs:.1}s, {rate:.1} it/s] {}", l.label, l.done, total, format_metrics(metrics))
            .trim_end()
            .to_string()
    }

    fn write_line(line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// Ends the innermost loop's bar: the training bar stays, evaluation bars are cleared.
    pub(crate) fn finish(&mut self, metrics: BTreeMap<String, f64>, keep: bool) {
        let Some(l) = self.bars.pop().filter(|_| self.enabled) else { return };
        match &l.bar {
            Some(bar) => {
                bar.set_message(format_metrics(&metrics));
                if keep { bar.finish() } else { bar.finish_and_clear() }
            }
            None => Self::write_line(&Self::line(&l, &metrics)),
        }
        if self.bars.is_empty() {
            self.multi = None;
        }
    }

    /// A warning line on stderr, above the bars while they are drawn.
    pub(crate) fn warn(&self, message: &str) {
        match &self.multi {
            Some(multi) if self.enabled => {
                let _ = multi.println(message);
            }
            _ => Self::write_line(message),
        }
    }

    /// Prints a line above the bars (or plainly when there are none).
    pub(crate) fn println(&self, message: &str) {
        if self.silent {
            return;
        }
        match &self.multi {
            Some(multi) if self.enabled => {
                let _ = multi.println(message);
            }
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{message}");
            }
        }
    }
}
