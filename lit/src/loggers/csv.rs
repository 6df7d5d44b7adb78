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

    /// A cell as Lightning's `CSVLogger` writes it: `epoch` and `step` as integers, metrics as
    /// the float32 value they are logged as, in Python's `repr` (`1.0`, `0.10000000149011612`,
    /// `1e-05`).
    fn format(key: &str, value: f64) -> String {
        if (key == "epoch" || key == "step") && value.fract() == 0.0 {
            return format!("{}", value as i64);
        }
        python_repr(f64::from(value as f32))
    }

    fn write_rows(
        &self,
        file: &mut impl Write,
        rows: &[BTreeMap<String, f64>],
        keys: &[String],
    ) -> std::io::Result<()> {
        for row in rows {
            let cells: Vec<String> =
                keys.iter().map(|k| row.get(k).map(|&v| Self::format(k, v)).unwrap_or_default()).collect();
            writeln!(file, "{}", cells.join(","))?;
        }
        Ok(())
    }
}

/// `repr(value)` as Python writes a float: the shortest text that reads back the same, with
/// `.0` on whole numbers and an exponent of at least two digits outside [1e-4, 1e16).
pub(super) fn python_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `Debug` is the shortest round-trip text too, and switches to an exponent at the
    // same bounds; only the exponent's form differs (`1e-5` for Python's `1e-05`).
    let text = format!("{value:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
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

    fn share_version(&mut self, version: &str) {
        self.run.share_version(version);
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::python_repr;

    #[test]
    fn floats_read_as_python_writes_them() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (f64::from(0.1f32), "0.10000000149011612"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (123456.0, "123456.0"),
            (-2.5, "-2.5"),
            (f64::NAN, "nan"),
        ];
        for (value, python) in cases {
            assert_eq!(python_repr(value), python, "{value}");
        }
    }
}
