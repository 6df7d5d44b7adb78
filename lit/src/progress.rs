//! The progress bar, and the console lines that must not break it (`cx.print`, the model
//! summary). On a terminal: indicatif bars on stderr, one per loop, updated every
//! `refresh_rate` batches. Elsewhere (CI, a file): plain lines every `every` batches and at the
//! end of each loop, no escape codes. The entries after the bar ([`BarMetrics`]) are formatted
//! as Lightning's tqdm bar formats them ([`BarValue::format`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often prog-bar metrics are read (each read syncs the device once).
const METRICS_EVERY: Duration = Duration::from_millis(500);

/// A value shown after the progress bar: tqdm formats integers, floats and text differently.
#[derive(Debug, Clone, PartialEq)]
pub enum BarValue {
    /// An integer (shown as is, e.g. `v_num=3`).
    Int(i64),
    /// A float (`{:.3g}` or its shortest form, padded to five characters: `0.100`, `1e-5`).
    Float(f64),
    /// Text (shown as is).
    Text(String),
}

macro_rules! bar_value_from {
    ($($t:ty => $variant:ident as $as:ty),*) => {$(
        impl From<$t> for BarValue {
            fn from(v: $t) -> Self {
                BarValue::$variant(v as $as)
            }
        }
    )*};
}
bar_value_from!(f64 => Float as f64, f32 => Float as f64, i64 => Int as i64, i32 => Int as i64, u32 => Int as i64, usize => Int as i64);

impl From<&str> for BarValue {
    fn from(v: &str) -> Self {
        BarValue::Text(v.to_string())
    }
}
impl From<String> for BarValue {
    fn from(v: String) -> Self {
        BarValue::Text(v)
    }
}

/// Python's `repr` of a float: the shortest digits that read back the same, positional for
/// exponents from -4 to 15, else `1e-05` / `1.5e+16`.
fn python_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            let int = format!("{digits:0<point$}");
            let (int, frac) = int.split_at(point);
            format!("{int}.{}", if frac.is_empty() { "0" } else { frac })
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() { first.to_string() } else { format!("{first}.{rest}") };
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

/// Python's `'{:.3g}'.format(v)`.
fn format_g3(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let strip = |s: String| -> String {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    };
    let sci = format!("{v:.2e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..3).contains(&exp) {
        strip(format!("{v:.*}", (2 - exp) as usize))
    } else {
        format!("{}e{}{:02}", strip(mantissa.to_string()), if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

impl BarValue {
    /// The value as Lightning's `Tqdm.format_num` writes it: numbers as tqdm's `format_num`
    /// (`{:.3g}` without the exponent's leading zero, or the plain form when that is not longer),
    /// then floats and text padded with zeros to five characters (`1.000`, `0.100`) unless in
    /// scientific notation, so that the bar does not flicker.
    pub fn format(&self) -> String {
        let (mut n, padded) = match self {
            BarValue::Int(i) => {
                let g = format_g3(*i as f64).replace("e+0", "e+").replace("e-0", "e-");
                let plain = i.to_string();
                (if g.len() < plain.len() { g } else { plain }, false)
            }
            BarValue::Float(f) => {
                let g = format_g3(*f).replace("e+0", "e+").replace("e-0", "e-");
                let plain = python_repr(*f);
                (if g.len() < plain.len() { g } else { plain }, true)
            }
            BarValue::Text(t) => (t.clone(), true),
        };
        const PAD: usize = 5;
        if padded && !n.contains('e') {
            if !n.contains('.') && n.len() < PAD {
                if n.trim().parse::<f64>().is_err() {
                    return n;
                }
                n.push('.');
            }
            while n.len() < PAD {
                n.push('0');
            }
        }
        n
    }

    /// As tqdm's `set_postfix` shows it: numbers formatted, text as it is.
    fn postfix(&self) -> String {
        match self {
            BarValue::Text(t) => t.trim().to_string(),
            number => number.format(),
        }
    }
}

impl std::fmt::Display for BarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.format())
    }
}

/// What the progress bar shows after its counts, in order (Lightning's `get_metrics` dict): the
/// logger's `v_num`, then the module's `prog_bar` metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarMetrics(Vec<(String, BarValue)>);

impl BarMetrics {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `key` (in its place when present, else last).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<BarValue>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }
    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<BarValue> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&BarValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Whether `key` is shown.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BarValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The entries as tqdm's postfix shows them: `a=0.123, b=1.000`.
    pub fn postfix(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={}", v.postfix())).collect::<Vec<_>>().join(", ")
    }
}

impl<K: Into<String>, V: Into<BarValue>> FromIterator<(K, V)> for BarMetrics {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = BarMetrics::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// A `get_metrics` override: what the bar shows, from what it would show.
pub(crate) type MetricsFn = Arc<dyn Fn(BarMetrics) -> BarMetrics + Send + Sync>;

/// How the bar is drawn: a `TqdmProgressBar` callback's settings, or the defaults.
#[derive(Clone)]
pub(crate) struct BarConfig {
    /// Update a terminal's bar every this many batches (and at the last).
    pub(crate) refresh_rate: usize,
    /// Off a terminal, a line every this many batches.
    pub(crate) lines_every: usize,
    /// Keep each training epoch's bar (else one bar is reused from epoch to epoch).
    pub(crate) leave: bool,
    /// Lines left free above the bars.
    pub(crate) process_position: usize,
    pub(crate) get_metrics: Option<MetricsFn>,
}

pub(crate) struct Progress {
    enabled: bool,
    /// Another rank than 0 in distributed training: print nothing at all.
    silent: bool,
    tty: bool,
    config: BarConfig,
    multi: Option<MultiProgress>,
    bars: Vec<Loop>,
    /// With `leave` off, the training bar between epochs, reused by the next.
    parked: Option<ProgressBar>,
}

struct Loop {
    label: String,
    total: Option<usize>,
    done: usize,
    start: Instant,
    metrics_at: Option<Instant>,
    bar: Option<ProgressBar>,
    training: bool,
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

impl Progress {
    pub(crate) fn new(enabled: bool, every: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let config = BarConfig {
            refresh_rate: 1,
            lines_every: every.max(1),
            leave: false,
            process_position: 0,
            get_metrics: None,
        };
        Progress { enabled, silent: false, tty, config, multi: None, bars: Vec::new(), parked: None }
    }

    /// A console that prints nothing (ranks other than 0).
    pub(crate) fn silent() -> Self {
        Progress { silent: true, ..Progress::new(false, 1) }
    }

    /// Draws the bar as `config` says; a refresh rate of 0 turns it off.
    pub(crate) fn configure(&mut self, config: BarConfig, enabled: bool) {
        self.enabled = enabled && config.refresh_rate > 0;
        self.config = config;
    }

    /// Starts a loop's bar (`Epoch 3`, `Validation`, …) of `total` batches, if known;
    /// `training`: the training epoch's bar, which is kept (or reused, without `leave`).
    pub(crate) fn start(&mut self, label: impl Into<String>, total: Option<usize>, training: bool) {
        if !self.enabled {
            return;
        }
        let label = label.into();
        let length = total.filter(|&n| n != usize::MAX);
        let parked = if training { self.parked.take() } else { None };
        let bar = match parked {
            Some(bar) => {
                // tqdm's `reset`: the same bar from 0, for the next epoch.
                bar.reset();
                match length {
                    Some(n) => bar.set_length(n as u64),
                    None => bar.unset_length(),
                }
                bar.set_message("");
                bar.set_prefix(label.clone());
                Some(bar)
            }
            None => self.tty.then(|| self.new_bar(&label, length)),
        };
        self.bars.push(Loop { label, total, done: 0, start: Instant::now(), metrics_at: None, bar, training });
    }

    fn new_bar(&mut self, label: &str, length: Option<usize>) -> ProgressBar {
        let position = self.config.process_position;
        let multi = self.multi.get_or_insert_with(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            // `process_position`: lines kept free above this process's bars.
            for _ in 0..position {
                let spacer = ProgressBar::new(0)
                    .with_style(ProgressStyle::with_template(" ").unwrap_or_else(|_| ProgressStyle::default_bar()));
                multi.add(spacer).tick();
            }
            multi
        });
        let bar = match length {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::no_length(),
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
        bar.set_prefix(label.to_string());
        bar
    }

    /// The entries after the bar: `metrics`, through a `get_metrics` override.
    fn shown(&self, metrics: BarMetrics) -> String {
        match &self.config.get_metrics {
            Some(f) => f(metrics).postfix(),
            None => metrics.postfix(),
        }
    }

    /// A batch done: the `n`-th of the loop (`None`: the next one). A terminal's bar moves every
    /// `refresh_rate` batches and at the last; `metrics` is asked for the entries after it at
    /// most twice a second there, and for each line off a terminal.
    pub(crate) fn advance(&mut self, n: Option<usize>, metrics: impl FnOnce() -> BarMetrics) {
        if !self.enabled {
            return;
        }
        let (tty, every, rate) = (self.tty, self.config.lines_every, self.config.refresh_rate.max(1));
        let Some(l) = self.bars.last_mut() else { return };
        l.done = n.unwrap_or(l.done + 1);
        let (done, total) = (l.done, l.total);
        if let Some(bar) = l.bar.clone() {
            if done.is_multiple_of(rate) || Some(done) == total {
                bar.set_position(done as u64);
                if l.metrics_at.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
                    l.metrics_at = Some(Instant::now());
                    bar.set_message(self.shown(metrics()));
                }
            }
        } else if !tty && done.is_multiple_of(every) {
            let postfix = self.shown(metrics());
            let line = Self::line(self.bars.last().expect("a loop"), &postfix);
            Self::write_line(&line);
        }
    }

    fn line(l: &Loop, postfix: &str) -> String {
        let secs = l.start.elapsed().as_secs_f64();
        let total = l.total.filter(|&n| n != usize::MAX).map_or_else(|| "?".into(), |n| n.to_string());
        let rate = if secs > 0.0 { l.done as f64 / secs } else { 0.0 };
        format!("{}: {}/{} [{secs:.1}s, {rate:.1} it/s] {postfix}", l.label, l.done, total).trim_end().to_string()
    }

    fn write_line(line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// Ends the innermost loop's bar: the training bar stays (without `leave`, to be reused by
    /// the next epoch), evaluation bars are cleared.
    pub(crate) fn finish(&mut self, metrics: BarMetrics, keep: bool) {
        if !self.enabled {
            return;
        }
        let postfix = self.shown(metrics);
        let Some(l) = self.bars.pop() else { return };
        match l.bar {
            Some(bar) => {
                bar.set_position(l.done as u64);
                bar.set_message(postfix);
                if keep {
                    // Drawn as it ends; without `leave`, kept to be reset by the next epoch.
                    bar.finish();
                    if l.training && !self.config.leave {
                        self.parked = Some(bar);
                    }
                } else {
                    bar.finish_and_clear()
                }
            }
            None => Self::write_line(&Self::line(&l, &postfix)),
        }
        if self.bars.is_empty() && self.parked.is_none() {
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
