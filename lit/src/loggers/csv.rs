//! `CsvLogger`: Lightning's layout, `<root>/lightning_logs/version_N/metrics.csv` and
//! `hparams.yaml`, plus `metrics.svg`, a plot of every metric against step.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Logger, RunDir, plot};
use crate::error::{Error, Result};

/// Writes metrics to a CSV file as Lightning's `CSVLogger` does: one row per logging call with
/// `epoch`, `step` and the metrics, the header the sorted union of all keys.
pub struct CsvLogger {
    run: RunDir,
    keys: BTreeSet<String>,
    rows: Vec<BTreeMap<String, f64>>,
    written: usize,
    header_written: Vec<String>,
}

impl CsvLogger {
    /// A logger under `root/lightning_logs/version_N`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CsvLogger {
            run: RunDir::new(root.into()),
            keys: BTreeSet::new(),
            rows: Vec::new(),
            written: 0,
            header_written: Vec::new(),
        }
    }

    /// Uses `name` instead of `lightning_logs`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.run.set_name(name.into());
        self
    }

    /// Uses `version_{version}` instead of the next free number.
    pub fn version(mut self, version: usize) -> Self {
        self.run.set_version(version);
        self
    }

    /// Every row logged so far.
    pub fn rows(&self) -> &[BTreeMap<String, f64>] {
        &self.rows
    }

    fn format(value: f64) -> String {
        if value.fract() == 0.0 && value.abs() < 1e15 { format!("{}", value as i64) } else { format!("{value}") }
    }

    fn write_rows(
        &self,
        file: &mut impl Write,
        rows: &[BTreeMap<String, f64>],
        keys: &[String],
    ) -> std::io::Result<()> {
        for row in rows {
            let cells: Vec<String> =
                keys.iter().map(|k| row.get(k).map(|&v| Self::format(v)).unwrap_or_default()).collect();
            writeln!(file, "{}", cells.join(","))?;
        }
        Ok(())
    }
}

impl Logger for CsvLogger {
    fn name(&self) -> &str {
        self.run.name()
    }

    fn version(&self) -> String {
        self.run.version()
    }

    fn log_dir(&self) -> Option<&Path> {
        self.run.path()
    }

    fn log_hyperparams(&mut self, params: &serde_json::Value) -> Result<()> {
        self.run.write_hparams(params)
    }

    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        let mut row = metrics.clone();
        row.insert("step".into(), step as f64);
        self.keys.extend(row.keys().cloned());
        self.rows.push(row);
        if self.rows.len() - self.written >= 100 {
            self.save()?;
        }
        Ok(())
    }

    /// Appends new rows; rewrites the file when new keys changed the header.
    fn save(&mut self) -> Result<()> {
        if self.rows.len() == self.written {
            return Ok(());
        }
        let path = self.run.create()?.join("metrics.csv");
        let keys: Vec<String> = self.keys.iter().cloned().collect();
        let result = (|| -> std::io::Result<()> {
            if keys != self.header_written {
                let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                writeln!(file, "{}", keys.join(","))?;
                self.write_rows(&mut file, &self.rows, &keys)?;
                file.flush()
            } else {
                let mut file = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&path)?);
                self.write_rows(&mut file, &self.rows[self.written..], &keys)?;
                file.flush()
            }
        })();
        result.map_err(|e| Error::io(&path, e))?;
        self.header_written = keys;
        self.written = self.rows.len();
        Ok(())
    }

    fn finalize(&mut self, _status: super::RunStatus) -> Result<()> {
        self.save()?;
        if self.rows.is_empty() {
            return Ok(());
        }
        let path = self.run.create()?.join("metrics.svg");
        std::fs::write(&path, plot::svg(&self.rows)).map_err(|e| Error::io(&path, e))
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
