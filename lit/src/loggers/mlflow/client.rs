//! [`MlflowClient`]: the calls of MLflow's REST API that the logger makes, over blocking HTTP.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// MLflow's limits on one `runs/log-batch` request (`mlflow.utils.validation`).
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;

/// What goes wrong talking to an MLflow tracking server. It reaches the user inside
/// [`lit::Error`](crate::Error) (`error.downcast_ref::<MlflowError>()`); each message names the
/// server, the endpoint and what the server said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlflowError {
    /// The tracking URI cannot be used.
    #[error("MLflow tracking URI `{uri}`: {problem}")]
    TrackingUri {
        /// The URI.
        uri: String,
        /// Why not.
        problem: String,
    },
    /// The server did not answer (refused, unknown host, timed out), after the retries.
    #[error("MLflow tracking server {url} could not be reached for `{endpoint}`: {message}")]
    Unreachable {
        /// The server (the tracking URI, or an artifact store's address).
        url: String,
        /// The call, e.g. `POST /api/2.0/mlflow/runs/log-batch`.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error.
    #[error("MLflow tracking server {url} refused `{endpoint}` (HTTP {status}{}): {message}", code_suffix(error_code))]
    Server {
        /// The server.
        url: String,
        /// The call.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`, …).
        error_code: Option<String>,
        /// MLflow's `message`, or the start of the body when it sent no JSON.
        message: String,
    },
    /// A run's artifact location is one lit cannot write to.
    #[error(
        "MLflow run {run_id}: cannot write artifacts to `{artifact_uri}`: lit writes them through the tracking \
         server's artifact proxy (`mlflow-artifacts:` locations, `mlflow server` with its default \
         --serve-artifacts), to an http(s) artifact address or to a local directory"
    )]
    ArtifactLocation {
        /// The run.
        run_id: String,
        /// Its artifact URI.
        artifact_uri: String,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(", {c}")).unwrap_or_default()
}

/// A metric value for [`MlflowClient::log_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowMetric {
    /// The key.
    pub key: String,
    /// The value (NaN and infinities are sent as MLflow reads them).
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The step.
    pub step: i64,
}

/// What the server says about a run (MLflow's `RunInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MlflowRunInfo {
    /// The run's id.
    pub run_id: String,
    /// Its experiment's id.
    pub experiment_id: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, `KILLED` or `SCHEDULED`.
    pub status: String,
    /// Where its artifacts go (`mlflow-artifacts:/1/<run id>/artifacts` with the server's proxy).
    pub artifact_uri: String,
    /// Its name.
    pub run_name: String,
}

impl MlflowRunInfo {
    fn from_json(run: &Value) -> Self {
        let info = &run["info"];
        let text = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        MlflowRunInfo {
            run_id: text("run_id"),
            experiment_id: text("experiment_id"),
            status: text("status"),
            artifact_uri: text("artifact_uri"),
            run_name: text("run_name"),
        }
    }
}

/// A client of an MLflow tracking server's REST API (`/api/2.0/mlflow/...`), the part of
/// Python's `mlflow.tracking.MlflowClient` that a training run uses. Transient failures
/// (connection errors, HTTP 429 and 5xx) are retried, waiting 1, 2, 4, … seconds.
///
/// `MLFLOW_TRACKING_TOKEN` (a bearer token) or `MLFLOW_TRACKING_USERNAME` and
/// `MLFLOW_TRACKING_PASSWORD` (basic authentication) are sent when set, as by MLflow's client.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    max_retries: u32,
}

impl MlflowClient {
    /// A client of the server at `tracking_uri` (`http://host:port` or `https://…`, optionally
    /// with a path prefix). Nothing is sent yet.
    pub fn new(tracking_uri: &str) -> Result<Self> {
        let uri = tracking_uri.trim();
        let problem = if uri.starts_with("file:") || uri.starts_with('/') || uri.starts_with('.') {
            Some(
                "MLflow's local file store is not supported: start a tracking server (`mlflow server`) and give its http:// address",
            )
        } else if uri.starts_with("databricks") {
            Some(
                "Databricks URIs are not supported: give the workspace's https:// address and set MLFLOW_TRACKING_TOKEN",
            )
        } else if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            Some("expected an http:// or https:// address of an MLflow tracking server")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(MlflowError::TrackingUri { uri: tracking_uri.into(), problem: problem.into() }.into());
        }
        // No limit on a whole call (a large checkpoint takes its time), but on a server that
        // stops answering: 120 s without a byte, as MLflow's client's default timeout.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        Ok(MlflowClient {
            base: uri.trim_end_matches('/').to_string(),
            agent,
            authorization: authorization_from_env(),
            max_retries: 3,
        })
    }

    /// Retries a failed call this many times (3 by default; 0: fail at once).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The tracking server's address.
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    /// The id of the experiment named `name`, if there is one.
    pub fn get_experiment_by_name(&self, name: &str) -> Result<Option<String>> {
        let path = format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={}", encode(name, false));
        match self.call("GET", &path, None) {
            Ok(answer) => Ok(answer["experiment"]["experiment_id"].as_str().map(str::to_string)),
            Err(e) if e.downcast_ref::<MlflowError>().is_some_and(is_not_found) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the experiment `name`, its artifacts under `artifact_location` (the server's
    /// default when `None`); returns its id.
    pub fn create_experiment(&self, name: &str, artifact_location: Option<&str>) -> Result<String> {
        let mut body = json!({ "name": name });
        if let Some(location) = artifact_location {
            body["artifact_location"] = location.into();
        }
        let answer = self.call("POST", "/api/2.0/mlflow/experiments/create", Some(&body))?;
        Ok(answer["experiment_id"].as_str().unwrap_or_default().to_string())
    }

    /// Starts a run in `experiment_id` with `tags` (`mlflow.runName` names it).
    pub fn create_run(&self, experiment_id: &str, tags: &[(String, String)]) -> Result<MlflowRunInfo> {
        let user = tags.iter().find(|(k, _)| k == "mlflow.user").map_or("", |(_, v)| v.as_str());
        let body = json!({
            "experiment_id": experiment_id,
            "start_time": now_ms(),
            "user_id": user,
            "tags": key_values(tags),
        });
        let answer = self.call("POST", "/api/2.0/mlflow/runs/create", Some(&body))?;
        Ok(MlflowRunInfo::from_json(&answer["run"]))
    }

    /// The run `run_id`.
    pub fn get_run(&self, run_id: &str) -> Result<MlflowRunInfo> {
        let answer = self.call("GET", &format!("/api/2.0/mlflow/runs/get?run_id={}", encode(run_id, false)), None)?;
        Ok(MlflowRunInfo::from_json(&answer["run"]))
    }

    /// Records metrics, parameters and tags on `run_id`, in as many `runs/log-batch` requests as
    /// MLflow's limits need (1000 metrics, 100 parameters or tags a request).
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MlflowMetric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let metrics = metrics
            .iter()
            .map(|m| json!({ "key": m.key, "value": metric_value(m.value), "timestamp": m.timestamp, "step": m.step }));
        let metrics: Vec<Value> = metrics.collect();
        for chunk in metrics.chunks(MAX_METRICS_PER_BATCH) {
            self.call("POST", "/api/2.0/mlflow/runs/log-batch", Some(&json!({ "run_id": run_id, "metrics": chunk })))?;
        }
        for chunk in params.chunks(MAX_PARAMS_TAGS_PER_BATCH) {
            let body = json!({ "run_id": run_id, "params": key_values(chunk) });
            self.call("POST", "/api/2.0/mlflow/runs/log-batch", Some(&body))?;
        }
        for chunk in tags.chunks(MAX_PARAMS_TAGS_PER_BATCH) {
            let body = json!({ "run_id": run_id, "tags": key_values(chunk) });
            self.call("POST", "/api/2.0/mlflow/runs/log-batch", Some(&body))?;
        }
        Ok(())
    }

    /// Sets the tag `key` of `run_id`.
    pub fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        self.call("POST", "/api/2.0/mlflow/runs/set-tag", Some(&body)).map(drop)
    }

    /// Ends `run_id` with `status` (`FINISHED`, `FAILED` or `KILLED`), now.
    pub fn set_terminated(&self, run_id: &str, status: &str) -> Result<()> {
        let body = json!({ "run_id": run_id, "status": status, "end_time": now_ms() });
        self.call("POST", "/api/2.0/mlflow/runs/update", Some(&body)).map(drop)
    }

    /// Uploads the file `local` as an artifact of `run_id` under `artifact_path` (the run's
    /// artifact root when empty), keeping its file name, as Python's `MlflowClient.log_artifact`.
    pub fn log_artifact(&self, run_id: &str, local: impl AsRef<Path>, artifact_path: &str) -> Result<()> {
        self.log_artifact_to(&self.get_run(run_id)?, local.as_ref(), artifact_path)
    }

    /// Writes `text` as the artifact `artifact_file` (a path under the run's artifact root) of
    /// `run_id`, as Python's `MlflowClient.log_text`.
    pub fn log_text(&self, run_id: &str, text: &str, artifact_file: &str) -> Result<()> {
        self.log_text_to(&self.get_run(run_id)?, text, artifact_file)
    }

    /// [`log_artifact`](Self::log_artifact) to a run already described.
    pub(super) fn log_artifact_to(&self, run: &MlflowRunInfo, local: &Path, artifact_path: &str) -> Result<()> {
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match ArtifactStore::of(run, &self.base)? {
            ArtifactStore::Local(dir) => {
                let dir = dir.join(artifact_path);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                std::fs::copy(local, dir.join(&name)).map_err(|e| Error::io(local, e)).map(drop)
            }
            ArtifactStore::Http(base) => {
                let url = format!("{base}/{}", encode(&join_artifact_path(artifact_path, &name), true));
                self.upload(&url, || Ok(std::fs::File::open(local).map_err(|e| Error::io(local, e))?.into()))
            }
        }
    }

    /// [`log_text`](Self::log_text) to a run already described.
    pub(super) fn log_text_to(&self, run: &MlflowRunInfo, text: &str, artifact_file: &str) -> Result<()> {
        match ArtifactStore::of(run, &self.base)? {
            ArtifactStore::Local(dir) => {
                let path = dir.join(artifact_file);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
            }
            ArtifactStore::Http(base) => {
                let url = format!("{base}/{}", encode(artifact_file.trim_start_matches('/'), true));
                self.upload(&url, || Ok(Upload::Bytes(text.as_bytes().to_vec())))
            }
        }
    }

    /// `PUT`s a body (made anew for each try) to `url`.
    fn upload(&self, url: &str, body: impl Fn() -> Result<Upload>) -> Result<()> {
        let endpoint = format!("PUT {}", url.strip_prefix(&self.base).unwrap_or(url));
        self.with_retries(&endpoint, || {
            let request = self.agent.put(url).header("Content-Type", "application/octet-stream");
            let request = match &self.authorization {
                Some(auth) => request.header("Authorization", auth),
                None => request,
            };
            Ok(match body()? {
                Upload::File(file) => request.send(file),
                Upload::Bytes(bytes) => request.send(bytes),
            })
        })
        .map(drop)
    }

    /// Calls `method path` with the JSON `body`; the answer's JSON.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let endpoint = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let text = self.with_retries(&endpoint, || {
            let auth = self.authorization.as_deref();
            Ok(match body {
                Some(body) => {
                    let request = self.agent.post(&url).header("Content-Type", "application/json");
                    let request = match auth {
                        Some(auth) => request.header("Authorization", auth),
                        None => request,
                    };
                    request.send(body.to_string())
                }
                None => {
                    let request = self.agent.get(&url);
                    match auth {
                        Some(auth) => request.header("Authorization", auth).call(),
                        None => request.call(),
                    }
                }
            })
        })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            MlflowError::Server {
                url: self.base.clone(),
                endpoint: endpoint.clone(),
                status: 200,
                error_code: None,
                message: format!("the answer is not JSON ({e}): {}", head(&text)),
            }
            .into()
        })
    }

    /// Sends (by `send`) until an answer that is not a transient failure; the body of a success.
    fn with_retries(
        &self,
        endpoint: &str,
        send: impl Fn() -> Result<std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>>,
    ) -> Result<String> {
        let mut attempt = 0;
        loop {
            let failure = match send()? {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let mut text = String::new();
                    let read = response.body_mut().as_reader().read_to_string(&mut text);
                    if (200..300).contains(&status) {
                        match read {
                            Ok(_) => return Ok(text),
                            Err(e) => self.unreachable(endpoint, format!("reading the answer: {e}")),
                        }
                    } else {
                        let (error_code, message) = server_message(&text);
                        let error = MlflowError::Server {
                            url: self.base.clone(),
                            endpoint: endpoint.to_string(),
                            status,
                            error_code,
                            message,
                        };
                        if !matches!(status, 429 | 500 | 502 | 503 | 504) {
                            return Err(error.into());
                        }
                        error
                    }
                }
                Err(e) => self.unreachable(endpoint, e.to_string()),
            };
            if attempt >= self.max_retries {
                return Err(failure.into());
            }
            let wait = Duration::from_secs(1 << attempt.min(6));
            crate::warning::warn(&format!("{failure}; retrying in {} s", wait.as_secs()));
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn unreachable(&self, endpoint: &str, message: String) -> MlflowError {
        MlflowError::Unreachable { url: self.base.clone(), endpoint: endpoint.to_string(), message }
    }
}

/// A body to upload.
enum Upload {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

impl From<std::fs::File> for Upload {
    fn from(file: std::fs::File) -> Self {
        Upload::File(file)
    }
}

/// Where a run's artifacts are written.
enum ArtifactStore {
    /// A directory on this machine (a `file:` or plain path artifact location).
    Local(PathBuf),
    /// The base URL files are `PUT` under (the server's artifact proxy).
    Http(String),
}

impl ArtifactStore {
    fn of(run: &MlflowRunInfo, tracking: &str) -> Result<Self> {
        let uri = run.artifact_uri.as_str();
        let unsupported =
            || MlflowError::ArtifactLocation { run_id: run.run_id.clone(), artifact_uri: uri.to_string() }.into();
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` on the tracking server itself, or `mlflow-artifacts://host:port/path`.
            let (server, path) = match rest.strip_prefix("//") {
                Some(authority_path) => {
                    let (authority, path) =
                        authority_path.split_at(authority_path.find('/').unwrap_or(authority_path.len()));
                    let scheme = if tracking.starts_with("https://") { "https" } else { "http" };
                    (format!("{scheme}://{authority}"), path)
                }
                None => (tracking.to_string(), rest),
            };
            let path = encode(path.trim_matches('/'), true);
            return Ok(ArtifactStore::Http(format!("{server}/api/2.0/mlflow-artifacts/artifacts/{path}")));
        }
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return Ok(ArtifactStore::Http(uri.trim_end_matches('/').to_string()));
        }
        let local = match uri.strip_prefix("file://") {
            Some(rest) => Some(rest),
            None => uri.strip_prefix("file:").or(uri.starts_with('/').then_some(uri)),
        };
        match local {
            Some(path) if path.starts_with('/') => Ok(ArtifactStore::Local(PathBuf::from(decode(path)))),
            _ => Err(unsupported()),
        }
    }
}

fn join_artifact_path(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn is_not_found(e: &MlflowError) -> bool {
    matches!(e, MlflowError::Server { status: 404, .. })
        || matches!(e, MlflowError::Server { error_code: Some(code), .. } if code == "RESOURCE_DOES_NOT_EXIST")
}

/// MLflow's `{"error_code": …, "message": …}`, or the start of a body that is not that.
fn server_message(text: &str) -> (Option<String>, String) {
    match serde_json::from_str::<Value>(text) {
        Ok(answer) if answer.get("message").is_some() || answer.get("error_code").is_some() => (
            answer["error_code"].as_str().map(str::to_string),
            answer["message"].as_str().unwrap_or_default().to_string(),
        ),
        _ if text.trim().is_empty() => (None, "(no message)".into()),
        _ => (None, head(text)),
    }
}

/// The first 500 characters of `text`, on one line.
fn head(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(500) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// A metric value in the JSON MLflow's protobuf parser reads: NaN and infinities as strings.
fn metric_value(value: f64) -> Value {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        value.into()
    }
}

fn key_values(pairs: &[(String, String)]) -> Vec<Value> {
    pairs.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect()
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Percent-encodes `text` for a URL: every byte but unreserved characters (and `/` when
/// `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes percent-encoding (for `file:` URIs).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Authorization` header MLflow's client sends from its environment variables.
fn authorization_from_env() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
        return Some(format!("Bearer {token}"));
    }
    let user = var("MLFLOW_TRACKING_USERNAME")?;
    let password = var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
    Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
    }

    #[test]
    fn artifact_paths_are_percent_encoded_and_decoded() {
        assert_eq!(encode("ckpt/epoch=0-step=5.ckpt", true), "ckpt/epoch%3D0-step%3D5.ckpt");
        assert_eq!(encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(decode("/tmp/a%20b/c%3D1"), "/tmp/a b/c=1");
    }

    fn run(uri: &str) -> MlflowRunInfo {
        MlflowRunInfo {
            run_id: "r".into(),
            experiment_id: "1".into(),
            status: "RUNNING".into(),
            artifact_uri: uri.into(),
            run_name: String::new(),
        }
    }

    #[test]
    fn artifact_locations_map_to_the_proxy_a_url_or_a_directory() {
        let base = |uri: &str| match ArtifactStore::of(&run(uri), "https://mlflow.example:8443/prefix") {
            Ok(ArtifactStore::Http(url)) => url,
            Ok(ArtifactStore::Local(dir)) => format!("local {}", dir.display()),
            Err(e) => format!("error {e}"),
        };
        assert_eq!(
            base("mlflow-artifacts:/1/r/artifacts"),
            "https://mlflow.example:8443/prefix/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts"
        );
        assert_eq!(
            base("mlflow-artifacts://other:5000/1/r/artifacts"),
            "https://other:5000/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts"
        );
        assert_eq!(base("http://store/x/"), "http://store/x");
        assert_eq!(base("file:///tmp/a%20b/r/artifacts"), "local /tmp/a b/r/artifacts");
        assert_eq!(base("/tmp/art/r/artifacts"), "local /tmp/art/r/artifacts");
        assert!(base("s3://bucket/1/r/artifacts").starts_with("error MLflow run r: cannot write artifacts to `s3://"));
    }

    #[test]
    fn tracking_uris_other_than_http_are_refused_with_the_reason() {
        let e = MlflowClient::new("file:./mlruns").unwrap_err().to_string();
        assert!(e.contains("`file:./mlruns`") && e.contains("local file store is not supported"), "{e}");
        let e = MlflowClient::new("localhost:5000").unwrap_err().to_string();
        assert!(e.contains("expected an http:// or https:// address"), "{e}");
        assert_eq!(MlflowClient::new("http://127.0.0.1:5000/").unwrap().tracking_uri(), "http://127.0.0.1:5000");
    }

    /// A server on 127.0.0.1 that answers the n-th connection with `answers[n]` (status, body);
    /// the number of requests it read.
    fn fake_server(answers: Vec<(u16, &'static str)>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for (stream, (status, body)) in listener.incoming().zip(answers) {
                let mut reader = std::io::BufReader::new(stream.unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                reader.read_exact(&mut vec![0; length]).unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                reader.get_mut().write_all(format!("{head}{body}").as_bytes()).unwrap();
            }
        });
        (url, count)
    }

    #[test]
    fn transient_failures_are_retried_and_refusals_are_not() {
        let (url, requests) = fake_server(vec![(503, "busy"), (200, r#"{"experiment_id": "7"}"#)]);
        let client = MlflowClient::new(&url).unwrap().with_max_retries(1);
        assert_eq!(client.create_experiment("x", None).unwrap(), "7");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);

        let refusal = r#"{"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Experiment 'x' already exists."}"#;
        let (url, requests) = fake_server(vec![(400, refusal), (200, "{}")]);
        let e = MlflowClient::new(&url).unwrap().with_max_retries(3).create_experiment("x", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "MLflow tracking server {url} refused `POST /api/2.0/mlflow/experiments/create` (HTTP 400, \
                 RESOURCE_ALREADY_EXISTS): Experiment 'x' already exists."
            )
        );
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn server_messages_are_read_from_mlflow_json_or_the_body() {
        let (code, message) = server_message(r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"}"#);
        assert_eq!((code.as_deref(), message.as_str()), (Some("INVALID_PARAMETER_VALUE"), "bad key"));
        assert_eq!(server_message("<html>\n Bad   Gateway</html>"), (None, "<html> Bad Gateway</html>".into()));
        assert_eq!(metric_value(f64::NEG_INFINITY), Value::from("-Infinity"));
    }
}
