//! `ModelCheckpoint`: saves checkpoints during training, keeps the best k by a monitored metric.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Mode;
use crate::callback::Callback;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

/// Saves checkpoints as training goes, as Lightning's `ModelCheckpoint`: every `every_n_epochs`
/// epochs (after validation when there is one), every `every_n_train_steps` steps or every
/// `train_time_interval`; with a `monitor`, keeps the `save_top_k` best by it; `save_last`
/// keeps `last.ckpt` too. The Trainer adds one by default (`enable_checkpointing`).
///
/// The filename template takes `{epoch}`, `{step}` and any logged metric, with a format
/// (`{val_loss:.3f}`), written as `name=value` as Lightning does: `"{epoch}-{val_loss:.2f}"` gives
/// `epoch=3-val_loss=0.12.ckpt`.
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    dirpath: Option<PathBuf>,
    filename: String,
    monitor: Option<String>,
    mode: Mode,
    save_top_k: i64,
    save_last: bool,
    every_n_epochs: Option<usize>,
    every_n_train_steps: Option<usize>,
    train_time_interval: Option<Duration>,
    best_k: BTreeMap<PathBuf, f64>,
    best_model_path: Option<PathBuf>,
    best_model_score: Option<f64>,
    last_model_path: Option<PathBuf>,
    last_saved_step: Option<usize>,
    last_time: Option<Instant>,
    /// The directory of this callback's last save (kept in its state).
    saved_dir: Option<PathBuf>,
    /// The directory a restored state was written for, until the run's own is known.
    restored_dir: Option<PathBuf>,
    /// In distributed training: rank 0's directory, which every rank uses.
    shared_dir: Option<PathBuf>,
}

impl Default for ModelCheckpoint {
    fn default() -> Self {
        ModelCheckpoint {
            dirpath: None,
            filename: "{epoch}-{step}".into(),
            monitor: None,
            mode: Mode::Min,
            save_top_k: 1,
            save_last: false,
            every_n_epochs: None,
            every_n_train_steps: None,
            train_time_interval: None,
            best_k: BTreeMap::new(),
            best_model_path: None,
            best_model_score: None,
            last_model_path: None,
            last_saved_step: None,
            last_time: None,
            saved_dir: None,
            restored_dir: None,
            shared_dir: None,
        }
    }
}

macro_rules! setter {
    ($($(#[$doc:meta])* $name:ident: $t:ty => $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $t) -> Self {
            self.$name = $conv(value);
            self
        }
    )*};
}

impl ModelCheckpoint {
    /// Lightning's defaults: the last epoch's checkpoint under `<log dir>/checkpoints`.
    pub fn new() -> Self {
        Self::default()
    }

    setter! {
        /// The directory (default: `checkpoints/` in the logger's run directory, or in
        /// `default_root_dir` without a logger).
        dirpath: impl Into<PathBuf> => |p: _| Some(Into::into(p));
        /// The file name template, without `.ckpt`.
        filename: impl Into<String> => Into::into;
        /// The logged metric that ranks checkpoints.
        monitor: impl Into<String> => |m: _| Some(Into::into(m));
        /// Lower (`Mode::Min`) or higher is better.
        mode: Mode => std::convert::identity;
        /// How many checkpoints to keep (-1: all, 0: none but `last`); more than 1 needs a
        /// `monitor` (`"step"` keeps the newest k), as in Lightning.
        save_top_k: i64 => std::convert::identity;
        /// Also keep `last.ckpt`, overwritten at every save.
        save_last: bool => std::convert::identity;
        /// Save every this many epochs (0: never at the end of an epoch).
        every_n_epochs: usize => Some;
        /// Save every this many training steps.
        every_n_train_steps: usize => Some;
        /// Save at most once per this interval of training time.
        train_time_interval: Duration => Some;
    }

    /// The best checkpoint so far.
    pub fn best_model_path(&self) -> Option<&Path> {
        self.best_model_path.as_deref()
    }

    /// The monitored value of the best checkpoint.
    pub fn best_model_score(&self) -> Option<f64> {
        self.best_model_score
    }

    /// The newest checkpoint.
    pub fn last_model_path(&self) -> Option<&Path> {
        self.last_model_path.as_deref()
    }

    /// The kept checkpoints and their scores.
    pub fn best_k_models(&self) -> &BTreeMap<PathBuf, f64> {
        &self.best_k
    }

    /// Where this callback writes: `dirpath`, or `checkpoints/` in the log directory (or in
    /// `default_root_dir` without a logger).
    pub(crate) fn dir(&self, cx: &Ctx) -> PathBuf {
        if let Some(dir) = &self.shared_dir {
            return dir.clone();
        }
        self.dirpath.clone().unwrap_or_else(|| cx.state.checkpoints_dir())
    }

    /// The file name for the current state, from the template.
    fn format_name(&self, metrics: &BTreeMap<String, f64>, cx: &Ctx) -> Result<String> {
        let mut out = String::new();
        let mut rest = self.filename.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').ok_or_else(|| {
                Error::msg(format!("ModelCheckpoint filename `{}` has an unclosed `{{`", self.filename))
            })? + open;
            let field = &rest[open + 1..close];
            let (name, spec) = field.split_once(':').unwrap_or((field, ""));
            let value = match name {
                "epoch" => Some(cx.current_epoch() as f64),
                "step" => Some(cx.global_step() as f64),
                other => metrics.get(other).copied(),
            };
            let text = match (value, spec) {
                (None, _) => {
                    return Err(Error::msg(format!(
                        "ModelCheckpoint filename `{}` uses `{name}`, which was not logged; logged: {:?}",
                        self.filename,
                        metrics.keys().collect::<Vec<_>>()
                    )));
                }
                (Some(v), "") if name == "epoch" || name == "step" => format!("{}", v as i64),
                (Some(v), "") => format!("{v}"),
                (Some(v), spec) => {
                    let digits = spec.trim_start_matches('.').trim_end_matches('f').parse::<usize>().map_err(|_| {
                        Error::msg(format!("ModelCheckpoint filename `{}`: unsupported format `{spec}`", self.filename))
                    })?;
                    format!("{v:.digits$}")
                }
            };
            out.push_str(&format!("{name}={text}"));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Saves (or not) now, as the options say.
    fn save(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.last_saved_step == Some(cx.global_step()) {
            return Ok(());
        }
        let mut metrics = cx.callback_metrics();
        // `epoch` and `step` can be monitored and used in file names, as in Lightning.
        metrics.entry("epoch".into()).or_insert(cx.current_epoch() as f64);
        metrics.entry("step".into()).or_insert(cx.global_step() as f64);
        let dir = self.dir(cx);
        self.saved_dir = Some(dir.clone());
        let name = self.format_name(&metrics, cx)?;
        let path = dir.join(format!("{name}.ckpt"));
        self.last_saved_step = Some(cx.global_step());

        match (&self.monitor, self.save_top_k) {
            (_, 0) => {}
            (None, k) => {
                // Without a monitor, keep the newest k (all with -1).
                cx.save_checkpoint(&path);
                self.best_k.insert(path.clone(), cx.global_step() as f64);
                if k > 0 && self.best_k.len() > k as usize {
                    let oldest = self.best_k.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(p, _)| p.clone());
                    if let Some(oldest) = oldest.filter(|o| *o != path) {
                        self.best_k.remove(&oldest);
                        remove_if_in(&dir, oldest, cx);
                    }
                }
                self.best_model_path = Some(path.clone());
            }
            (Some(monitor), k) => {
                let current = *metrics.get(monitor).ok_or_else(|| {
                    Error::msg(format!(
                        "ModelCheckpoint monitors `{monitor}`, which was not logged; logged: {:?}",
                        metrics.keys().collect::<Vec<_>>()
                    ))
                })?;
                let worst = self
                    .best_k
                    .iter()
                    .max_by(|a, b| {
                        if self.mode.better(*a.1, *b.1, 0.0) {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    })
                    .map(|(p, v)| (p.clone(), *v));
                let full = k >= 0 && self.best_k.len() >= k as usize;
                let keep = !full || worst.as_ref().is_some_and(|(_, w)| self.mode.better(current, *w, 0.0));
                if keep && current.is_finite() {
                    cx.save_checkpoint(&path);
                    self.best_k.insert(path.clone(), current);
                    if full && let Some((worst_path, _)) = worst.filter(|(p, _)| *p != path) {
                        self.best_k.remove(&worst_path);
                        remove_if_in(&dir, worst_path, cx);
                    }
                    let best = self.best_k.iter().fold(None::<(&PathBuf, f64)>, |acc, (p, &v)| match acc {
                        Some((_, b)) if !self.mode.better(v, b, 0.0) => acc,
                        _ => Some((p, v)),
                    });
                    if let Some((p, v)) = best {
                        self.best_model_path = Some(p.clone());
                        self.best_model_score = Some(v);
                    }
                }
            }
        }
        if self.save_last {
            let last = dir.join("last.ckpt");
            cx.save_checkpoint(&last);
            self.last_model_path = Some(last);
        } else {
            self.last_model_path = Some(path);
        }
        Ok(())
    }

    fn epoch_due(&self, cx: &Ctx) -> bool {
        let step_or_time = self.every_n_train_steps.is_some() || self.train_time_interval.is_some();
        match self.every_n_epochs {
            Some(0) => false,
            Some(n) => (cx.current_epoch() + 1).is_multiple_of(n),
            None => !step_or_time,
        }
    }
}

impl ModelCheckpoint {
    /// Lightning's checks of the options (`__validate_init_configuration`).
    fn validate(&self) -> Result<()> {
        if self.save_top_k < -1 {
            return Err(Error::hook(
                "ModelCheckpoint",
                format!("Invalid value for save_top_k={}. Must be >= -1", self.save_top_k),
            ));
        }
        let triggers = usize::from(self.every_n_train_steps.is_some_and(|n| n >= 1))
            + usize::from(self.every_n_epochs.is_some_and(|n| n >= 1))
            + usize::from(self.train_time_interval.is_some());
        if triggers > 1 {
            return Err(Error::hook(
                "ModelCheckpoint",
                format!(
                    "Combination of parameters every_n_train_steps={:?}, every_n_epochs={:?} and \
                     train_time_interval={:?} should be mutually exclusive.",
                    self.every_n_train_steps, self.every_n_epochs, self.train_time_interval
                ),
            ));
        }
        if self.monitor.is_none() && !matches!(self.save_top_k, -1..=1) {
            return Err(Error::hook(
                "ModelCheckpoint",
                format!(
                    "ModelCheckpoint(save_top_k={}, monitor=None) is not a valid configuration. No quantity for \
                     top_k to track (`monitor(\"step\")` keeps the newest {0})",
                    self.save_top_k
                ),
            ));
        }
        Ok(())
    }
}

impl Callback for ModelCheckpoint {
    fn order(&self) -> crate::callback::CallbackOrder {
        crate::callback::CallbackOrder::Checkpoint
    }

    fn setup(&mut self, stage: crate::Stage, cx: &mut Ctx) -> Result<()> {
        self.validate()?;
        // Every rank uses rank 0's directory (only rank 0 has loggers to derive it from), so
        // that `best_model_path()` names the same file on every rank.
        self.shared_dir = None;
        if stage == crate::Stage::Fit
            && let Some(pg) = cx.process_group().filter(|pg| pg.world_size() > 1)
        {
            let mine = self.dir(cx).to_string_lossy().into_owned();
            let shared = pg.broadcast_bytes(mine.as_bytes(), 0)?;
            self.shared_dir = Some(PathBuf::from(String::from_utf8_lossy(&shared).into_owned()));
        }
        // A directory that cannot be made is said when `fit` starts, not at the first save.
        if stage == crate::Stage::Fit && cx.global_rank() == 0 {
            let dir = self.dir(cx);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    fn on_train_start(&mut self, cx: &mut Ctx) -> Result<()> {
        self.last_time = Some(Instant::now());
        // As Lightning: a state written for another directory keeps only `best_model_path`; the
        // old directory's files are never rotated out by this run.
        if let Some(from) = self.restored_dir.take() {
            let now = self.dir(cx);
            if !same_dir(&from, &now) {
                crate::warning::warn(&format!(
                    "ModelCheckpoint: the checkpoint directory changed from {} to {}, so best_k_models, \
                     best_model_score and last_model_path are not restored (only best_model_path); \
                     the files in {} are left as they are",
                    from.display(),
                    now.display(),
                    from.display()
                ));
                self.best_k.clear();
                self.best_model_score = None;
                self.last_model_path = None;
            }
        }
        Ok(())
    }

    fn on_train_batch_end(&mut self, _: Option<&crate::StepOutput>, _: usize, cx: &mut Ctx) -> Result<()> {
        let by_steps =
            self.every_n_train_steps.is_some_and(|n| cx.global_step() > 0 && cx.global_step().is_multiple_of(n));
        let by_time = match (self.train_time_interval, self.last_time) {
            (Some(interval), Some(t)) => t.elapsed() >= interval,
            _ => false,
        };
        if by_steps || by_time {
            self.last_time = Some(Instant::now());
            self.save(cx)?;
        }
        Ok(())
    }

    fn on_validation_end(&mut self, cx: &mut Ctx) -> Result<()> {
        if !cx.sanity_checking() && cx.stage() == crate::Stage::Fit && self.epoch_due(cx) {
            self.save(cx)?;
        }
        Ok(())
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> Result<()> {
        if !cx.has_validation() && self.epoch_due(cx) {
            self.save(cx)?;
        }
        Ok(())
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
            "best_k_models": self.best_k.iter().map(|(p, v)| (p.display().to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "dirpath": self.saved_dir,
        }))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        let path = |k: &str| state.get(k).and_then(|v| v.as_str()).map(PathBuf::from);
        self.best_model_path = path("best_model_path");
        self.last_model_path = path("last_model_path");
        self.best_model_score = state.get("best_model_score").and_then(|v| v.as_f64());
        if let Some(map) = state.get("best_k_models").and_then(|v| v.as_object()) {
            self.best_k = map.iter().filter_map(|(k, v)| Some((PathBuf::from(k), v.as_f64()?))).collect();
        }
        self.restored_dir = path("dirpath");
        Ok(())
    }
}

/// Asks for `path` to be deleted if it lies in `dir`: a checkpoint of another directory (a
/// restored state's) is forgotten, never deleted.
fn remove_if_in(dir: &Path, path: PathBuf, cx: &mut Ctx) {
    if path.parent().is_some_and(|parent| same_dir(parent, dir)) {
        cx.remove_checkpoint(path);
    }
}

/// Whether two paths name one directory (compared as written, or as resolved when both exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// The `ModelCheckpoint`s among `callbacks`, in order.
pub(crate) fn model_checkpoints(callbacks: &[Box<dyn Callback>]) -> impl Iterator<Item = &ModelCheckpoint> {
    super::of_type(callbacks)
}
