//! `MlflowLogger`: metrics, hyper-parameters and checkpoints to an MLflow tracking server, as
//! Lightning's `MLFlowLogger`.

mod client;
mod params;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use client::{MlflowClient, MlflowError, MlflowMetric, MlflowRunInfo};

use super::{Logger, RunStatus, SavedCheckpoint, yaml};
use crate::error::Result;

/// Which checkpoints become artifacts of the run (Lightning's `log_model`); `true` and `false`
/// convert as Lightning reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogModel {
    /// None (Lightning's `False`).
    #[default]
    Never,
    /// The checkpoints a `ModelCheckpoint` kept, when the run ends (Lightning's `True`).
    AtEnd,
    /// Every checkpoint, as it is saved (Lightning's `"all"`).
    All,
}

impl From<bool> for LogModel {
    fn from(on: bool) -> Self {
        if on { LogModel::AtEnd } else { LogModel::Never }
    }
}

/// Logs to an [MLflow](https://mlflow.org) tracking server through its REST API, as Lightning's
/// `MLFlowLogger`: hyper-parameters as the run's parameters, metrics with their steps, the
/// run's end as its status (`FINISHED`, `FAILED`, `KILLED`), and with
/// [`log_model`](Self::log_model) the checkpoints as artifacts.
///
/// `MlflowLogger::new().tracking_uri("http://127.0.0.1:5000").experiment_name("mnist")`, given
/// to the Trainer with `.with_logger(…)` (the README has the recipe). The run starts when training does (or at [`experiment`](Self::experiment)): the experiment
/// is looked up by name and created when missing, then a run is created in it, or the run
/// `run_id` is taken up again.
pub struct MlflowLogger {
    experiment_name: String,
    run_name: Option<String>,
    tracking_uri: Option<String>,
    tags: BTreeMap<String, String>,
    log_model: LogModel,
    checkpoint_path_prefix: String,
    prefix: String,
    artifact_location: Option<String>,
    run_id: Option<String>,
    max_retries: u32,
    started: Option<Started>,
    warned_keys: BTreeSet<String>,
    checkpoints: Checkpoints,
}

/// The run, once it exists on the server.
struct Started {
    client: MlflowClient,
    run: MlflowRunInfo,
}

impl Default for MlflowLogger {
    fn default() -> Self {
        Self::new()
    }
}

impl MlflowLogger {
    /// Lightning's defaults: experiment `lightning_logs`, the server named by the
    /// `MLFLOW_TRACKING_URI` environment variable, no checkpoints logged.
    pub fn new() -> Self {
        MlflowLogger {
            experiment_name: "lightning_logs".into(),
            run_name: None,
            tracking_uri: std::env::var("MLFLOW_TRACKING_URI").ok().filter(|u| !u.is_empty()),
            tags: BTreeMap::new(),
            log_model: LogModel::Never,
            checkpoint_path_prefix: String::new(),
            prefix: String::new(),
            artifact_location: None,
            run_id: None,
            max_retries: 3,
            started: None,
            warned_keys: BTreeSet::new(),
            checkpoints: Checkpoints::default(),
        }
    }

    /// The experiment the run goes into (created when missing).
    pub fn experiment_name(mut self, name: impl Into<String>) -> Self {
        self.experiment_name = name.into();
        self
    }

    /// The run's name (its `mlflow.runName` tag, over one given in [`tags`](Self::tags)); the
    /// server makes one up without it.
    pub fn run_name(mut self, name: impl Into<String>) -> Self {
        self.run_name = Some(name.into());
        self
    }

    /// The tracking server's address, `http://host:port` or `https://…` (default: the
    /// `MLFLOW_TRACKING_URI` environment variable).
    pub fn tracking_uri(mut self, uri: impl Into<String>) -> Self {
        self.tracking_uri = Some(uri.into());
        self
    }

    /// Tags of the new run (over MLflow's own `mlflow.user`, `mlflow.source.name` and
    /// `mlflow.source.type`).
    pub fn tags<K: Into<String>, V: Into<String>>(mut self, tags: impl IntoIterator<Item = (K, V)>) -> Self {
        self.tags.extend(tags.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Which checkpoints of a `ModelCheckpoint` become artifacts: [`LogModel::All`] as they are
    /// saved, `true` ([`LogModel::AtEnd`]) those kept when the run ends, `false` none (the
    /// default). Each goes under `<prefix>/<file stem>/` with `metadata.yaml` (its score and file
    /// name) and `aliases.txt`, as Lightning lays them out.
    pub fn log_model(mut self, log_model: impl Into<LogModel>) -> Self {
        self.log_model = log_model.into();
        self
    }

    /// A directory in the run's artifacts for the checkpoints (default: none).
    pub fn checkpoint_path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.checkpoint_path_prefix = prefix.into();
        self
    }

    /// Put before every metric key, joined with `-`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where a newly created experiment keeps its artifacts (default: the server's choice).
    pub fn artifact_location(mut self, location: impl Into<String>) -> Self {
        self.artifact_location = Some(location.into());
        self
    }

    /// Logs into the existing run `run_id` instead of starting one.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Retries a failed call to the server this many times, 1, 2, 4, … seconds apart (default
    /// 3; 0 fails at once). Only connection errors and HTTP 429 and 5xx are retried.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The client, the run started first when it was not (Lightning's `experiment`), for what
    /// the logger does not do itself: `logger.experiment()?.set_tag(&run_id, "k", "v")`.
    pub fn experiment(&mut self) -> Result<&MlflowClient> {
        Ok(&self.start()?.client)
    }

    /// The experiment's id, once the run has started.
    pub fn experiment_id(&self) -> Option<&str> {
        self.started.as_ref().map(|s| s.run.experiment_id.as_str())
    }

    /// The run as the server described it when it started (its id, artifact location, …).
    pub fn run_info(&self) -> Option<&MlflowRunInfo> {
        self.started.as_ref().map(|s| &s.run)
    }

    /// The run, started now if it was not: the experiment found or created, then a new run
    /// in it, or the run `run_id`.
    fn start(&mut self) -> Result<&Started> {
        if self.started.is_none() {
            let uri = self.tracking_uri.clone().ok_or_else(|| MlflowError::TrackingUri {
                uri: String::new(),
                problem: "none was given: pass `MlflowLogger::tracking_uri(\"http://host:port\")` or set \
                          MLFLOW_TRACKING_URI (lit logs to a tracking server; MLflow's local file store is not \
                          supported)"
                    .into(),
            })?;
            let client = MlflowClient::new(&uri)?.with_max_retries(self.max_retries);
            let run = match &self.run_id {
                Some(run_id) => client.get_run(run_id)?,
                None => {
                    let experiment_id = self.experiment_id_from(&client)?;
                    client.create_run(&experiment_id, &self.run_tags())?
                }
            };
            tracing::info!(
                target: "lit",
                url = %format!("{}/#/experiments/{}/runs/{}", client.tracking_uri(), run.experiment_id, run.run_id),
                "MLflow run started"
            );
            self.started = Some(Started { client, run });
        }
        Ok(self.started.as_ref().expect("started above"))
    }

    /// The id of the experiment named `experiment_name`, created when missing.
    fn experiment_id_from(&self, client: &MlflowClient) -> Result<String> {
        if let Some(id) = client.get_experiment_by_name(&self.experiment_name)? {
            return Ok(id);
        }
        tracing::info!(target: "lit", "Experiment with name {} not found. Creating it.", self.experiment_name);
        match client.create_experiment(&self.experiment_name, self.artifact_location.as_deref()) {
            Ok(id) => Ok(id),
            // Another process created it in the meantime.
            Err(e) => client.get_experiment_by_name(&self.experiment_name)?.ok_or(e),
        }
    }

    /// The new run's tags: MLflow's context tags, the user's over them, the run name last.
    fn run_tags(&self) -> Vec<(String, String)> {
        let mut tags = BTreeMap::new();
        let user = ["LOGNAME", "USER", "LNAME", "USERNAME"].iter().find_map(|v| std::env::var(v).ok());
        if let Some(user) = user {
            tags.insert("mlflow.user".to_string(), user);
        }
        if let Some(program) = std::env::args_os().next() {
            tags.insert("mlflow.source.name".to_string(), program.to_string_lossy().into_owned());
        }
        tags.insert("mlflow.source.type".to_string(), "LOCAL".to_string());
        tags.extend(self.tags.clone());
        if let Some(name) = &self.run_name {
            if self.tags.contains_key(RUN_NAME_TAG) {
                crate::warning::warn(&format!(
                    "The tag {RUN_NAME_TAG} is found in tags. The value will be overridden by {name}."
                ));
            }
            tags.insert(RUN_NAME_TAG.to_string(), name.clone());
        }
        tags.into_iter().collect()
    }

    /// `key` with the prefix, and without the characters Lightning removes (warned once a key).
    fn metric_key(&mut self, key: &str) -> String {
        let key = if self.prefix.is_empty() { key.to_string() } else { format!("{}-{key}", self.prefix) };
        let clean: String = key.chars().filter(|c| c.is_ascii_alphanumeric() || "_/. -".contains(*c)).collect();
        if clean != key && self.warned_keys.insert(key.clone()) {
            crate::warning::warn(&format!(
                "MLFlow only allows '_', '/', '.' and ' ' special characters in metric name. Replacing {key} with \
                 {clean}."
            ));
        }
        clean
    }

    /// Uploads the checkpoint `path` under `<prefix>/<stem>/`, with its `metadata.yaml` and
    /// `aliases.txt`, as Lightning's `_scan_and_log_checkpoints` does for each.
    fn log_checkpoint(&mut self, path: &Path, score: Option<f64>, best: bool) -> Result<()> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| crate::Error::io(path, e))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = self.checkpoint_path_prefix.trim_matches('/');
        let artifact_path = if prefix.is_empty() { stem } else { format!("{prefix}/{stem}") };
        let started = self.start()?;
        started.client.log_artifact_to(&started.run, path, &artifact_path)?;
        let file_name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let metadata = serde_json::json!({ "original_filename": file_name, "score": score });
        started.client.log_text_to(
            &started.run,
            &yaml::to_yaml(&metadata),
            &format!("{artifact_path}/metadata.yaml"),
        )?;
        let aliases = if best { "['latest', 'best']" } else { "['latest']" };
        started.client.log_text_to(&started.run, aliases, &format!("{artifact_path}/aliases.txt"))?;
        tracing::debug!(target: "lit", path = %path.display(), artifact_path, "checkpoint logged to MLflow");
        self.checkpoints.logged.insert(path.to_path_buf(), modified);
        Ok(())
    }

    /// [`LogModel::AtEnd`]: every checkpoint saved in the run that is still there, new or
    /// rewritten since it was logged, oldest first.
    fn log_kept_checkpoints(&mut self) -> Result<()> {
        let mut kept: Vec<(SystemTime, PathBuf, Option<f64>)> = self
            .checkpoints
            .kept
            .iter()
            .filter_map(|(path, &score)| {
                let modified = std::fs::metadata(path).ok().filter(|m| m.is_file())?.modified().ok()?;
                let logged = self.checkpoints.logged.get(path).is_some_and(|&t| t >= modified);
                (!logged).then(|| (modified, path.clone(), score))
            })
            .collect();
        kept.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, path, score) in kept {
            let best = self.checkpoints.best.as_deref() == Some(path.as_path());
            self.log_checkpoint(&path, score, best)?;
        }
        Ok(())
    }
}

/// MLflow's tag for the run's name (`mlflow.utils.mlflow_tags.MLFLOW_RUN_NAME`).
const RUN_NAME_TAG: &str = "mlflow.runName";

/// The checkpoints a run saved and logged.
#[derive(Default)]
struct Checkpoints {
    /// Every checkpoint saved in the run, with its score ([`LogModel::AtEnd`] logs those
    /// still on disk at the end).
    kept: BTreeMap<PathBuf, Option<f64>>,
    /// The `ModelCheckpoint`'s best, as of its last save.
    best: Option<PathBuf>,
    /// The files logged, with their modification time then.
    logged: HashMap<PathBuf, SystemTime>,
}

impl Logger for MlflowLogger {
    /// The experiment's id, as Lightning's `name`, once the run has started (the Trainer
    /// starts it when `fit` begins); the experiment's name before.
    fn name(&self) -> &str {
        self.experiment_id().unwrap_or(&self.experiment_name)
    }

    /// The run's id, as Lightning's `version` (empty before the run starts, unless given).
    fn version(&self) -> String {
        self.started.as_ref().map(|s| s.run.run_id.clone()).or_else(|| self.run_id.clone()).unwrap_or_default()
    }

    /// None: the run lives on the server (Lightning's `save_dir` is `None` for a server).
    fn log_dir(&self) -> Option<&Path> {
        None
    }

    /// The flattened hyper-parameters as the run's parameters (keys joined with `/`, values
    /// cut to MLflow's 6000 characters), 100 a request.
    fn log_hyperparams(&mut self, hparams: &serde_json::Value) -> Result<()> {
        let params = params::flatten(hparams);
        let started = self.start()?;
        started.client.log_batch(&started.run.run_id, &[], &params, &[])
    }

    /// One `log-batch` request (a request per 1000 metrics), every value with this call's time.
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        let timestamp = client::now_ms();
        let metrics: Vec<MlflowMetric> = metrics
            .iter()
            .map(|(key, &value)| MlflowMetric { key: self.metric_key(key), value, timestamp, step: step as i64 })
            .collect();
        let started = self.start()?;
        started.client.log_batch(&started.run.run_id, &metrics, &[], &[])
    }

    fn after_save_checkpoint(&mut self, checkpoint: &SavedCheckpoint<'_>) -> Result<()> {
        self.checkpoints.best = checkpoint.best_model_path.map(Path::to_path_buf);
        match self.log_model {
            LogModel::Never => Ok(()),
            LogModel::AtEnd => {
                self.checkpoints.kept.insert(checkpoint.path.to_path_buf(), checkpoint.score);
                Ok(())
            }
            LogModel::All => {
                let best = checkpoint.best_model_path == Some(checkpoint.path);
                self.log_checkpoint(checkpoint.path, checkpoint.score, best)
            }
        }
    }

    /// Logs the kept checkpoints ([`LogModel::AtEnd`]), then ends the run as `FINISHED`
    /// (success), `FAILED` or `KILLED` (interrupted), even when the upload failed. Nothing for a
    /// run that never started.
    fn finalize(&mut self, status: RunStatus) -> Result<()> {
        if self.started.is_none() {
            return Ok(());
        }
        let logged = if self.log_model == LogModel::AtEnd { self.log_kept_checkpoints() } else { Ok(()) };
        let status = match status {
            RunStatus::Success => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Interrupted => "KILLED",
        };
        let started = self.start()?;
        let terminated = started.client.set_terminated(&started.run.run_id, status);
        logged.and(terminated)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
