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

/// The tables `validate` and `test` print at their end, in the layout of Lightning's
/// `_EvaluationLoop._print_results` without `rich`: one row per metric (sorted, without the
/// `/dataloader_idx_N` suffix), one column per loader, centred in columns of at least 25
/// characters, as many loaders per table as `width` (the terminal's) holds. Values show the
/// precision they were computed in (an `f32` metric as `0.631`, not `0.630999997138977`).
pub(crate) fn results_table(stage: &str, per_loader: &[BTreeMap<String, f64>], width: usize) -> Option<String> {
    let per_loader: Vec<BTreeMap<String, f64>> = per_loader
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let suffix = format!("/dataloader_idx_{i}");
            m.iter().map(|(k, v)| (k.strip_suffix(&suffix).unwrap_or(k).to_string(), *v)).collect()
        })
        .collect();
    let names: std::collections::BTreeSet<&String> = per_loader.iter().flat_map(|m| m.keys()).collect();
    if names.is_empty() {
        return None;
    }
    let show = |v: f64| if v == f64::from(v as f32) { (v as f32).to_string() } else { v.to_string() };
    let title = format!("{stage} metric");
    let longest = names.iter().map(|n| n.chars().count()).chain([title.chars().count(), 12]).max().unwrap_or(0);
    let column = longest.max(25).min(width / 2).max(1);
    let loaders_per_table = (width / column).max(2) - 1;
    let bar = "─".repeat(width);
    let row =
        |cells: Vec<String>| cells.iter().map(|c| format!("{c:^column$}")).collect::<String>().trim_end().to_string();
    let mut lines = Vec::new();
    let indices: Vec<usize> = (0..per_loader.len()).collect();
    for chunk in indices.chunks(loaders_per_table) {
        lines.push(bar.clone());
        lines
            .push(row(std::iter::once(title.clone()).chain(chunk.iter().map(|i| format!("DataLoader {i}"))).collect()));
        lines.push(bar.clone());
        for name in &names {
            let values = chunk.iter().map(|&i| per_loader[i].get(*name).map_or_else(String::new, |v| show(*v)));
            lines.push(row(std::iter::once((*name).clone()).chain(values).collect()));
        }
        lines.push(bar.clone());
    }
    Some(lines.join("\n"))
}

/// The terminal's width for [`results_table`]: `COLUMNS`, else 120 (Python's fallback).
pub(crate) fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&w| w > 0).unwrap_or(120)
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
                "{prefix}: {percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {rate}] {msg}",
            )
            .map(|style| {
                // tqdm's rate: two decimals, `it/s`.
                style.with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2}it/s", state.per_sec());
                })
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(values: &[(&str, f64)]) -> BTreeMap<String, f64> {
        values.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Ports `loops/test_evaluation_loop.py::test_native_print_results` (its `case1` and `case3`,
    /// at Python's fallback width of 120).
    #[test]
    fn results_tables_are_lightnings() {
        let bar = "─".repeat(120);
        let case1 = [
            metrics(&[
                ("value", 2.0),
                ("performance:log:1", 0.0),
                ("performance:log2", 3.0),
                ("performance:log3", 7.0),
                ("extra:log3", 7.0),
            ]),
            metrics(&[("different value", 1.5), ("tes:t:no_log1", 6.0), ("tes:t:no_log2", 1.0)]),
        ];
        let expected1 = [
            bar.as_str(),
            "       Test metric             DataLoader 0             DataLoader 1",
            &bar,
            "     different value                                         1.5",
            "       extra:log3                    7",
            "    performance:log2                 3",
            "    performance:log3                 7",
            "    performance:log:1                0",
            "      tes:t:no_log1                                           6",
            "      tes:t:no_log2                                           1",
            "          value                      2",
            &bar,
        ]
        .join("\n");
        assert_eq!(results_table("Test", &case1, 120).unwrap(), expected1);

        let case3: Vec<_> = (0..5).map(|i| metrics(&[(&format!("log/dataloader_idx_{i}"), 5.0)])).collect();
        let expected3 = [
            bar.as_str(),
            "      Foobar metric            DataLoader 0             DataLoader 1             DataLoader 2",
            &bar,
            "           log                       5                        5                        5",
            &bar,
            &bar,
            "      Foobar metric            DataLoader 3             DataLoader 4",
            &bar,
            "           log                       5                        5",
            &bar,
        ]
        .join("\n");
        assert_eq!(results_table("Foobar", &case3, 120).unwrap(), expected3);
        assert_eq!(results_table("Foo", &[BTreeMap::new()], 120), None, "the empty case prints nothing");
        // No float noise: an f32 value shows as such.
        let noisy = results_table("Test", &[metrics(&[("acc", f64::from(0.631f32))])], 120).unwrap();
        assert!(noisy.contains(" 0.631") && !noisy.contains("0.6309999"), "{noisy}");
    }
}
