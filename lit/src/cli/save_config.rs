//! `SaveConfigCallback`: the command line's resolved configuration, written into the run's log
//! directory when it starts, as LightningCLI's.

use std::path::{Path, PathBuf};

use crate::callback::Callback;
use crate::ctx::{Ctx, Stage};
use crate::error::{Error, Result};

/// Writes the command line's complete configuration (what `--print_config` prints) to
/// `config.yaml` in the run's log directory (the first logger's `log_dir`, or `default_root_dir`
/// without a logger) at `setup`, once, on global rank 0, as Lightning's `SaveConfigCallback`.
/// An existing file is an error unless `overwrite` is set, so that a second run cannot replace a
/// first run's record. The command line adds it to every subcommand but `fast_dev_run` runs.
#[derive(Debug, Clone)]
pub struct SaveConfigCallback {
    config: String,
    config_filename: String,
    overwrite: bool,
    already_saved: bool,
}

/// What rank 0 found when it looked at the log directory (broadcast so that every rank acts alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Written (rank 0) or to be taken as written.
    Saved = 0,
    /// The file exists and `overwrite` is off.
    Exists = 1,
    /// The logger has not made its directory yet: try again at `teardown`.
    NoDirectory = 2,
}

impl SaveConfigCallback {
    /// Saves `config` (YAML) as `config.yaml`, refusing to overwrite.
    pub fn new(config: impl Into<String>) -> Self {
        SaveConfigCallback {
            config: config.into(),
            config_filename: "config.yaml".into(),
            overwrite: false,
            already_saved: false,
        }
    }

    /// Another file name (Lightning's `config_filename`).
    pub fn config_filename(mut self, name: impl Into<String>) -> Self {
        self.config_filename = name.into();
        self
    }

    /// Replaces an existing file (Lightning's `overwrite`).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Whether existing files are replaced.
    pub fn overwrites(&self) -> bool {
        self.overwrite
    }

    /// Whether the configuration has been written (later runs of the same Trainer write nothing).
    pub fn already_saved(&self) -> bool {
        self.already_saved
    }

    /// The configuration it writes.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Rank 0 looks, writes if it may, and tells the others what it found.
    fn save(&mut self, cx: &mut Ctx, last_chance: bool) -> Result<()> {
        if self.already_saved {
            return Ok(());
        }
        let mut found = Found::Saved;
        if cx.global_rank() == 0 {
            found = match self.directory(cx) {
                None => Found::NoDirectory,
                Some(dir) => self.write(&dir)?,
            };
        }
        if let Some(pg) = cx.process_group().filter(|pg| pg.world_size() > 1) {
            let mut code = tch::Tensor::from_slice(&[found as i64]);
            pg.broadcast(&mut code, 0)?;
            found = match code.int64_value(&[0]) {
                1 => Found::Exists,
                2 => Found::NoDirectory,
                _ => Found::Saved,
            };
        }
        match found {
            Found::Saved => self.already_saved = true,
            Found::Exists => {
                let path = self.directory(cx).map_or_else(|| PathBuf::from(&self.config_filename), |d| self.path(&d));
                return Err(Error::Cli {
                    message: format!(
                        "SaveConfigCallback expected {} to NOT exist. Aborting to avoid overwriting results of a \
                         previous run. You can delete the previous config file, set `LitCli::save_config(false)` to \
                         disable config saving, or set `LitCli::save_config_overwrite(true)` to overwrite the config file.",
                        path.display()
                    ),
                });
            }
            Found::NoDirectory if last_chance => {
                tracing::warn!(target: "lit", "SaveConfigCallback: the logger made no log directory; the configuration was not saved");
            }
            Found::NoDirectory => {}
        }
        Ok(())
    }

    /// The run's log directory, where its checkpoints go too: the logger's, or for a first
    /// logger that keeps no files (MLflow's) `default_root_dir/<name>/<version>`, or
    /// `default_root_dir` without loggers; `None` while a logger has not made its directory (or
    /// started its run) yet, as before a `validate` or `test` run has logged anything.
    fn directory(&self, cx: &mut Ctx) -> Option<PathBuf> {
        let root = cx.default_root_dir().to_path_buf();
        let log_dir = cx.log_dir();
        let first = cx.loggers().first().map(|l| (l.log_dir().is_none(), l.name().to_string(), l.version()));
        match first {
            None => Some(root),
            Some((true, name, version)) if !name.is_empty() && !version.is_empty() => {
                Some(root.join(name).join(version))
            }
            Some(_) => log_dir,
        }
    }

    fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.config_filename)
    }

    /// Writes the file unless it exists and may not be replaced.
    fn write(&self, dir: &Path) -> Result<Found> {
        let path = self.path(dir);
        if !self.overwrite && path.is_file() {
            return Ok(Found::Exists);
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        std::fs::write(&path, &self.config).map_err(|e| Error::io(&path, e))?;
        tracing::info!(target: "lit", path = %path.display(), "configuration saved");
        Ok(Found::Saved)
    }
}

impl Callback for SaveConfigCallback {
    fn setup(&mut self, _stage: Stage, cx: &mut Ctx) -> Result<()> {
        self.save(cx, false)
    }

    fn teardown(&mut self, _stage: Stage, cx: &mut Ctx) -> Result<()> {
        self.save(cx, true)
    }
}
