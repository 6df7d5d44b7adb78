//! Profilers (the Trainer's `profiler` option): `"simple"` times each hook and each action of the
//! loops (fetching a batch, moving it, the steps, backward, the optimizer step) and reports a
//! table at the end of the run, as Lightning's `SimpleProfiler`; `"pytorch"` records libtorch's
//! own operator-level profile (its autograd profiler) into a Chrome trace file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ConfigError, Error, Result};

/// Which profiler a run uses (`profiler`): `"simple"` or `"pytorch"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum ProfilerKind {
    /// Wall time per hook and per loop action.
    Simple,
    /// libtorch's operator profiler, written as a Chrome trace (`chrome://tracing`, Perfetto).
    Pytorch,
}

impl std::fmt::Display for ProfilerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProfilerKind::Simple => "simple",
            ProfilerKind::Pytorch => "pytorch",
        })
    }
}

impl std::str::FromStr for ProfilerKind {
    type Err = ConfigError;

    fn from_str(name: &str) -> std::result::Result<Self, ConfigError> {
        match name {
            "simple" => Ok(ProfilerKind::Simple),
            "pytorch" if cfg!(lit_shim) => Ok(ProfilerKind::Pytorch),
            "pytorch" => Err(ConfigError::invalid(
                "profiler",
                "\"pytorch\" needs lit's libtorch shim, which did not compile (see the build warnings)",
            )),
            other => Err(ConfigError::invalid(
                "profiler",
                format!("unknown profiler \"{other}\"; expected \"simple\" or \"pytorch\""),
            )),
        }
    }
}

/// Durations per action of one run.
#[derive(Debug)]
pub struct SimpleProfiler {
    actions: BTreeMap<&'static str, (Duration, u64)>,
    started: Instant,
}

impl Default for SimpleProfiler {
    fn default() -> Self {
        SimpleProfiler { actions: BTreeMap::new(), started: Instant::now() }
    }
}

impl SimpleProfiler {
    /// Adds one call of `action` that took `took`.
    pub(crate) fn record(&mut self, action: &'static str, took: Duration) {
        let entry = self.actions.entry(action).or_default();
        entry.0 += took;
        entry.1 += 1;
    }

    /// The calls and total time of `action`.
    pub fn get(&self, action: &str) -> Option<(u64, Duration)> {
        self.actions.get(action).map(|&(total, calls)| (calls, total))
    }

    /// Lightning's report: each action's mean duration, calls, total and share of the run, the
    /// longest first.
    pub fn table(&self, stage: &str) -> String {
        let run = self.started.elapsed().as_secs_f64();
        let mut rows: Vec<_> = self.actions.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
        let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        let _ = writeln!(out, "Profiler report ({stage})");
        let header = format!(
            "{:<width$} | {:>16} | {:>9} | {:>14} | {:>10}",
            "Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"
        );
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        let _ = writeln!(out, "{:<width$} | {:>16} | {:>9} | {:>14.5} | {:>10.1}", "Total", "-", "-", run, 100.0);
        for (action, &(total, calls)) in rows {
            let total = total.as_secs_f64();
            let _ = writeln!(
                out,
                "{action:<width$} | {:>16.6} | {calls:>9} | {total:>14.5} | {:>10.1}",
                total / calls.max(1) as f64,
                if run > 0.0 { 100.0 * total / run } else { 0.0 }
            );
        }
        out
    }
}

/// A run's profiler.
pub(crate) enum Profiler {
    Simple(SimpleProfiler),
    #[cfg(lit_shim)]
    Pytorch {
        recorder: crate::shim::ProfileRecorder,
        path: PathBuf,
    },
}

impl Profiler {
    /// Starts a profiler of `kind`; the PyTorch profiler writes to `dir/{stage}-pytorch-trace.json`.
    pub(crate) fn start(kind: ProfilerKind, dir: &Path, stage: &str) -> Result<Profiler> {
        match kind {
            ProfilerKind::Simple => Ok(Profiler::Simple(SimpleProfiler::default())),
            #[cfg(lit_shim)]
            ProfilerKind::Pytorch => {
                let path = dir.join(format!("{stage}-pytorch-trace.json"));
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
                crate::shim::ProfileRecorder::begin(&path).map(|recorder| Profiler::Pytorch { recorder, path })
            }
            #[cfg(not(lit_shim))]
            ProfilerKind::Pytorch => Err(Error::msg("the PyTorch profiler needs lit's libtorch shim")),
        }
    }

    /// Ends the run's profile: writes the report (or the trace) into `dir` and returns the text
    /// to show.
    pub(crate) fn finish(self, dir: &Path, stage: &str) -> Result<(String, PathBuf)> {
        match self {
            Profiler::Simple(p) => {
                let table = p.table(stage);
                let path = dir.join(format!("{stage}-profile.txt"));
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
                std::fs::write(&path, &table).map_err(|source| Error::Io { path: path.clone(), source })?;
                Ok((table, path))
            }
            #[cfg(lit_shim)]
            Profiler::Pytorch { recorder, path } => {
                recorder.end()?;
                Ok((format!("PyTorch profiler trace ({stage}): {}", path.display()), path))
            }
        }
    }
}
