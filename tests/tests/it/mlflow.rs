//! `MlflowLogger` against a real MLflow tracking server (started once for all these tests from
//! the project's Python environment, on 127.0.0.1), read back with MLflow's own Python client.
//! The assertions port Lightning's `tests/tests_pytorch/loggers/test_mlflow.py`, each named.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lit::data::Batches;
use lit::loggers::{CsvLogger, LogModel, Logger, MlflowError, MlflowLogger, RunStatus};
use lit::prelude::*;
use serde_json::Value;

use crate::common::{quiet, temp_dir};

type B = (Tensor, Tensor);

fn python() -> String {
    std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch")
}

/// The tracking server: a sqlite store and an artifact root in a temporary directory. The
/// shell that starts it watches this test process and ends the server's whole process group
/// when the process is gone, however it ended (a `static` is never dropped, and a panic or a
/// kill would skip a guard's `Drop`).
struct Server {
    url: String,
}

fn server() -> &'static str {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start_server) {
        Ok(server) => &server.url,
        Err(e) => panic!("{e}"),
    }
}

fn start_server() -> Result<Server, String> {
    let dir = temp_dir("mlflow-server");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let script = r#"
"$PY" -m mlflow server --host 127.0.0.1 --port "$PORT" --workers 1 \
  --backend-store-uri "sqlite:///$DIR/mlflow.db" --artifacts-destination "$DIR/artifacts" >"$DIR/server.log" 2>&1 &
server=$!
while kill -0 "$OWNER" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
kill -TERM -$$
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PY", python())
        .env("PORT", port.to_string())
        .env("DIR", &dir)
        .env("OWNER", std::process::id().to_string())
        // The server's background job runner is not needed, and costs eight processes.
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start `mlflow server`: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        if health(port) {
            return Ok(Server { url: format!("http://127.0.0.1:{port}") });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    Err(format!("the MLflow server did not answer on port {port} within 180 s; its log:\n{log}"))
}

/// Whether the server answers `GET /health` with 200.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// Runs `body` (Python, with `c` an `MlflowClient` of the server, `args` the JSON argument and
/// `out` a dict) and returns `out`.
fn mlflow_python(body: &str, args: Value) -> Value {
    let script = format!(
        "import json, sys\nfrom mlflow.tracking import MlflowClient\nc = MlflowClient(sys.argv[1])\n\
         args = json.loads(sys.argv[2])\nout = {{}}\n{body}\nprint(json.dumps(out))\n"
    );
    let output = Command::new(python()).arg("-c").arg(script).arg(server()).arg(args.to_string()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "MLflow's client failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON from the script")
}

/// Everything about the run `run_id`, as MLflow's client reads it: its experiment, status,
/// params, tags, each metric's history as `[step, value]` (for runs with at most 50 metrics),
/// the latest metric values (NaN and infinities as `"nan"`, `"inf"`), and every artifact file
/// with its size and, for text files, its contents.
fn read_run(run_id: &str) -> Value {
    read_runs(&[run_id]).remove(0)
}

/// [`read_run`] of several runs, in one Python process.
fn read_runs(run_ids: &[&str]) -> Vec<Value> {
    let body = r#"
import math, tempfile
num = lambda v: v if math.isfinite(v) else repr(v)
def read(run_id):
    out = {}
    run = c.get_run(run_id)
    exp = c.get_experiment(run.info.experiment_id)
    out["experiment_id"], out["experiment"], out["artifact_location"] = exp.experiment_id, exp.name, exp.artifact_location
    out["status"], out["run_name"] = run.info.status, run.info.run_name
    out["params"], out["tags"] = run.data.params, run.data.tags
    out["metrics"] = {k: num(v) for k, v in run.data.metrics.items()}
    if len(run.data.metrics) <= 50:
        out["history"] = {k: [[m.step, num(m.value)] for m in c.get_metric_history(run_id, k)] for k in run.data.metrics}
    files = {}
    def walk(path):
        for f in c.list_artifacts(run_id, path):
            if f.is_dir:
                walk(f.path)
            elif f.path.endswith((".yaml", ".txt")):
                with tempfile.TemporaryDirectory() as d:
                    files[f.path] = open(c.download_artifacts(run_id, f.path, d)).read()
            else:
                files[f.path] = f.file_size
    walk(None)
    out["artifacts"] = files
    return out
out["runs"] = [read(r) for r in args["runs"]]
"#;
    let out = mlflow_python(body, serde_json::json!({ "runs": run_ids }));
    out["runs"].as_array().expect("the runs").clone()
}

/// Batches of 4, 4, 4 and 2 samples whose `x` values are the sample's global index: batch
/// means 1.5, 5.5, 9.5 and 12.5, a weighted epoch mean of 6.5.
fn uneven_batches() -> Vec<B> {
    [(0, 4), (4, 4), (8, 4), (12, 2)]
        .into_iter()
        .map(|(start, n)| {
            let x = Tensor::arange_start(start, start + n, (Kind::Float, Device::Cpu)).view([n, 1]);
            (x.shallow_clone(), x)
        })
        .collect()
}

#[hparams]
pub struct Optim {
    #[hparams(default = 0.1)]
    pub lr: f64,
    #[hparams(default = true)]
    pub nesterov: bool,
}

#[hparams]
pub struct MlfConfig {
    pub mode: String,
    pub sizes: Vec<i64>,
    pub optim: Optim,
}

#[lightning_module]
struct Tracked {
    vs: nn::VarStore,
    w: Tensor,
    #[hparams]
    cfg: MlfConfig,
}

#[lightning_module]
impl Tracked {
    fn new(cfg: MlfConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[1]);
        Tracked { vs, w, cfg }
    }

    fn training_step(&mut self, (x, _): B, batch_idx: usize, cx: &mut Ctx) -> lit::Result<Tensor> {
        if self.cfg.mode == "fail" && cx.current_epoch() == 1 && batch_idx == 1 {
            return Err(lit::Error::msg("the data ran out"));
        }
        let mean = x.mean(Kind::Float);
        cx.log("train_loss", &mean);
        Ok((&self.w * mean).sum(Kind::Float))
    }

    fn validation_step(&mut self, (x, _): B, cx: &mut Ctx) {
        cx.log("val_loss", x.mean(Kind::Float));
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(self.cfg.optim.lr).into()
    }
}

fn tracked(mode: &str) -> Tracked {
    Tracked::new(MlfConfig { mode: mode.into(), sizes: vec![3, 4], optim: Optim { lr: 0.1, nesterov: true } })
}

fn logger(experiment: &str) -> MlflowLogger {
    MlflowLogger::new().tracking_uri(server()).experiment_name(experiment)
}

/// `[[step, value], …]` of `key` in a run read by [`read_run`].
fn history(run: &Value, key: &str) -> Vec<(i64, f64)> {
    run["history"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no history of `{key}` in {run}"))
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

fn strings(value: &Value) -> BTreeMap<String, String> {
    value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
}

#[test]
fn fit_logs_params_metrics_tags_status_and_keeps_checkpoints_under_the_run() -> lit::Result<()> {
    let root = temp_dir("mlflow-fit");
    let logger = logger("lit-fit").run_name("first").tags([("team", "lit")]);
    let mut trainer = quiet()
        .default_root_dir(&root)
        .max_epochs(2)
        .log_every_n_steps(1)
        .with_logger(logger)
        .with_logger(CsvLogger::new(&root))
        .build()?;
    trainer.fit(&mut tracked("plain"), Batches::new(uneven_batches()), Batches::new(uneven_batches()))?;
    let (experiment_id, run_id) = {
        let mlflow = trainer.loggers()[0].as_any_mut().downcast_mut::<MlflowLogger>().unwrap();
        (mlflow.experiment_id().unwrap().to_string(), Logger::version(mlflow))
    };
    let run = read_run(&run_id);

    // test_mlflow_logger_exists: the experiment is created under its name; `name` is its id,
    // `version` the run's id.
    assert_eq!(run["experiment"], "lit-fit");
    assert_eq!(run["experiment_id"], experiment_id.as_str());
    assert_eq!(Logger::name(&*trainer.loggers()[0]), experiment_id);
    // test_mlflow_logger_finalize: "success" ends the run as FINISHED.
    assert_eq!(run["status"], "FINISHED");
    // test_mlflow_run_name_setting: `run_name` becomes the `mlflow.runName` tag.
    let tags = strings(&run["tags"]);
    assert_eq!(run["run_name"], "first");
    assert_eq!(tags["mlflow.runName"], "first");
    assert_eq!(tags["team"], "lit");
    assert_eq!(tags["mlflow.source.type"], "LOCAL");
    let exe = std::env::current_exe().unwrap();
    assert_eq!(tags.get("mlflow.source.name").map(PathBuf::from), Some(exe));
    // `mlflow.user` as Python's `getpass.getuser()` reads the environment (without its last
    // resort, the password database).
    let user = ["LOGNAME", "USER", "LNAME", "USERNAME"].iter().find_map(|v| std::env::var(v).ok());
    assert_eq!(tags.get("mlflow.user"), user.as_ref());
    // test_mlflow_logger_dirs_creation: the params are the hyper-parameters (flattened with `/`,
    // values as Python's `str`, as `_flatten_dict` and `Param(value=str(v))`).
    let params = strings(&run["params"]);
    let expected: BTreeMap<String, String> =
        [("mode", "plain"), ("optim/lr", "0.1"), ("optim/nesterov", "True"), ("sizes", "[3, 4]")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(params, expected);
    // test_mlflow_logger_dirs_creation: "epoch" is among the metrics; each metric's history has
    // the steps and values lit logged (the same as the CSV logger got from the same run).
    assert_eq!(
        history(&run, "train_loss"),
        [(0, 1.5), (1, 5.5), (2, 9.5), (3, 12.5), (4, 1.5), (5, 5.5), (6, 9.5), (7, 12.5)]
    );
    assert_eq!(history(&run, "val_loss"), [(3, 6.5), (7, 6.5)]);
    let csv = std::fs::read_to_string(trainer.loggers()[1].log_dir().unwrap().join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (epoch_col, step_col) = (header.iter().position(|h| *h == "epoch"), header.iter().position(|h| *h == "step"));
    let csv_epochs: Vec<(i64, f64)> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .map(|cells| (cells[step_col.unwrap()].parse().unwrap(), cells[epoch_col.unwrap()].parse().unwrap()))
        .collect();
    assert_eq!(history(&run, "epoch"), csv_epochs);
    assert_eq!(run["metrics"].as_object().unwrap().keys().collect::<Vec<_>>(), ["epoch", "train_loss", "val_loss"]);
    // test_mlflow_log_dir: the checkpoints go to default_root_dir/<experiment id>/<run id>/checkpoints
    // (the CSV logger, not first, does not decide), and no checkpoint is logged by default.
    let dir = root.join(&experiment_id).join(&run_id).join("checkpoints");
    let best = trainer.checkpoint_callback().unwrap().best_model_path().unwrap();
    assert_eq!(best.parent(), Some(dir.as_path()));
    let files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["epoch=1-step=8.ckpt"]);
    assert_eq!(run["artifacts"], serde_json::json!({}));
    Ok(())
}

#[test]
fn loggers_share_an_experiment_by_name_and_a_run_id_takes_a_run_up_again() -> lit::Result<()> {
    // test_mlflow_logger_exists: the same name finds the same experiment, each logger its own
    // run; a new name makes a new experiment.
    let mut first = logger("lit-shared");
    let mut second = logger("lit-shared");
    let mut other = logger("lit-shared-new");
    for l in [&mut first, &mut second, &mut other] {
        assert!(l.experiment_id().is_none() && Logger::version(l).is_empty());
        l.experiment()?;
    }
    assert_eq!(first.experiment_id(), second.experiment_id());
    assert_ne!(Logger::version(&first), Logger::version(&second));
    assert_ne!(other.experiment_id(), first.experiment_id());
    // test_mlflow_experiment_id_retrieved_once: the run is started once.
    let run_id = Logger::version(&first);
    first.experiment()?;
    assert_eq!(Logger::version(&first), run_id);

    // test_mlflow_run_id_setting: `run_id` uses that run, in its experiment (whatever the name).
    let mut resumed = logger("some-other-name").run_id(&run_id);
    assert_eq!(Logger::version(&resumed), run_id);
    resumed.experiment()?;
    assert_eq!(resumed.experiment_id(), first.experiment_id());
    assert_eq!(Logger::version(&resumed), run_id);
    first.log_metrics(&BTreeMap::from([("loss".to_string(), 2.0)]), 1)?;
    resumed.log_metrics(&BTreeMap::from([("loss".to_string(), 1.0)]), 2)?;
    // The experiment's `set_tag`, as through Lightning's `logger.experiment`.
    resumed.experiment()?.set_tag(&run_id, "stage", "resumed")?;
    resumed.finalize(RunStatus::Success)?;
    let run = read_run(&run_id);
    assert_eq!(history(&run, "loss"), [(1, 2.0), (2, 1.0)]);
    assert_eq!(run["tags"]["stage"], "resumed");
    assert_eq!(run["status"], "FINISHED");
    Ok(())
}

#[test]
fn logger_calls_follow_mlflow_s_limits_and_key_rules() -> lit::Result<()> {
    let mut mlflow = logger("lit-limits");
    // test_mlflow_logger_with_many_params: 150 parameters (MLflow takes 100 a request);
    // test_mlflow_logger_with_long_param_value: a long value is cut to MLflow's limit (6000).
    let mut hparams: serde_json::Map<String, Value> =
        (0..150).map(|i| (format!("test_{i}"), Value::from(format!("test_param_{i}")))).collect();
    hparams.insert("long".into(), "test_param".repeat(1000).into());
    mlflow.log_hyperparams(&Value::Object(hparams))?;
    // 1500 metrics in one call (MLflow takes 1000 a request), NaN and infinity among them.
    let mut metrics: BTreeMap<String, f64> = (0..1500).map(|i| (format!("m{i:04}"), i as f64)).collect();
    metrics.insert("nan".into(), f64::NAN);
    metrics.insert("inf".into(), f64::INFINITY);
    mlflow.log_metrics(&metrics, 7)?;
    let run = read_run(&Logger::version(&mlflow));
    let params = strings(&run["params"]);
    assert_eq!(params.len(), 151);
    assert_eq!(params["test_149"], "test_param_149");
    assert_eq!(params["long"], "test_param".repeat(600));
    let logged = run["metrics"].as_object().unwrap();
    assert_eq!(logged.len(), 1502);
    assert_eq!(logged["m1499"], 1499.0);
    // MLflow's store keeps infinity as the largest float, as it does for its Python client.
    assert_eq!((&logged["inf"], &logged["nan"]), (&Value::from(f64::MAX), &Value::from("nan")));

    // test_mlflow_logger_with_unexpected_characters: characters MLflow refuses are removed,
    // with a warning; test_mlflow_logger_experiment_calls: `prefix` goes first, joined with `-`.
    let mut prefixed = logger("lit-limits").prefix("pre");
    prefixed.log_metrics(&BTreeMap::from([("[some_metric]".to_string(), 10.0), ("a/b.c d".to_string(), 1.0)]), 0)?;
    let run = read_run(&Logger::version(&prefixed));
    assert_eq!(run["metrics"], serde_json::json!({ "pre-some_metric": 10.0, "pre-a/b.c d": 1.0 }));
    assert_eq!(history(&run, "pre-some_metric"), [(0, 10.0)]);
    Ok(())
}

#[test]
fn finalize_ends_the_run_with_lightning_s_status_and_leaves_an_unstarted_run_alone() -> lit::Result<()> {
    // test_mlflow_logger_finalize: success -> FINISHED, failed -> FAILED; an interrupted run
    // (Ctrl-C) is KILLED.
    let mut ids = Vec::new();
    for status in [RunStatus::Success, RunStatus::Failed, RunStatus::Interrupted] {
        let mut mlflow = logger("lit-finalize");
        mlflow.experiment()?;
        mlflow.finalize(status)?;
        ids.push(Logger::version(&mlflow));
    }
    // test_mlflow_logger_finalize_when_exception: a logger whose run never started does not
    // start one to end it.
    let mut unstarted = logger("lit-finalize-never-started");
    unstarted.finalize(RunStatus::Failed)?;
    assert!(Logger::version(&unstarted).is_empty());
    let body = r#"
out["status"] = [c.get_run(r).info.status for r in args["runs"]]
out["unstarted"] = c.get_experiment_by_name("lit-finalize-never-started") is None
"#;
    let out = mlflow_python(body, serde_json::json!({ "runs": ids }));
    assert_eq!(out["status"], serde_json::json!(["FINISHED", "FAILED", "KILLED"]));
    assert_eq!(out["unstarted"], true);
    Ok(())
}

#[test]
fn a_failed_fit_ends_the_run_as_failed_with_what_was_logged() -> lit::Result<()> {
    let root = temp_dir("mlflow-failed");
    let mut trainer =
        quiet().default_root_dir(&root).max_epochs(2).log_every_n_steps(1).with_logger(logger("lit-failed")).build()?;
    let e = trainer.fit(&mut tracked("fail"), Batches::new(uneven_batches()), ()).unwrap_err().to_string();
    assert!(e.contains("the data ran out"), "{e}");
    let run_id = Logger::version(&*trainer.loggers()[0]);
    let run = read_run(&run_id);
    // test_mlflow_logger_finalize ("failed" -> FAILED), with the metrics before the failure.
    assert_eq!(run["status"], "FAILED");
    assert_eq!(history(&run, "train_loss"), [(0, 1.5), (1, 5.5), (2, 9.5), (3, 12.5), (4, 1.5)]);
    Ok(())
}

/// Deletes the MLflow run at the start of the second epoch, through the REST API, so that the
/// server refuses what comes next.
struct DeletesTheRun;

impl Callback for DeletesTheRun {
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        if cx.current_epoch() != 1 {
            return Ok(());
        }
        let run_id = Logger::version(cx.logger_as::<MlflowLogger>().unwrap());
        let script = "import json, sys, urllib.request\nurllib.request.urlopen(urllib.request.Request(sys.argv[1] + \
                      '/api/2.0/mlflow/runs/delete', data=json.dumps({'run_id': sys.argv[2]}).encode(), \
                      headers={'Content-Type': 'application/json'}))";
        let status = Command::new(python()).arg("-c").arg(script).arg(server()).arg(run_id).status().unwrap();
        assert!(status.success());
        Ok(())
    }
}

#[test]
fn a_server_error_names_the_endpoint_and_the_other_loggers_keep_their_files() -> lit::Result<()> {
    let root = temp_dir("mlflow-server-error");
    let mut trainer = quiet()
        .default_root_dir(&root)
        .max_epochs(2)
        .log_every_n_steps(1)
        .with_logger(logger("lit-server-error").max_retries(0))
        .with_logger(CsvLogger::new(&root))
        .callback(DeletesTheRun)
        .build()?;
    let error = trainer.fit(&mut tracked("plain"), Batches::new(uneven_batches()), ()).unwrap_err();
    let message = error.to_string();
    let expected =
        format!("MLflow tracking server {} refused `POST /api/2.0/mlflow/runs/log-batch` (HTTP 400", server());
    assert!(message.starts_with(&expected) && message.contains("must be in the 'active' state"), "{message}");
    assert!(matches!(error.downcast_ref::<MlflowError>(), Some(MlflowError::Server { status: 400, .. })));
    // The CSV logger was finalized after the MLflow logger failed to end its deleted run: its
    // rows of the first epoch and its plot are there.
    let dir = trainer.loggers()[1].log_dir().unwrap().to_path_buf();
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(dir.join("metrics.svg").is_file());
    Ok(())
}

#[test]
fn an_unreachable_server_or_a_file_store_is_an_error_naming_it() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut trainer =
        quiet().max_epochs(1).with_logger(MlflowLogger::new().tracking_uri(&url).max_retries(0)).build().unwrap();
    let error = trainer.fit(&mut tracked("plain"), Batches::new(uneven_batches()), ()).unwrap_err();
    let message = error.to_string();
    let expected = format!(
        "MLflow tracking server {url} could not be reached for `GET /api/2.0/mlflow/experiments/get-by-name`: "
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(matches!(error.downcast_ref::<MlflowError>(), Some(MlflowError::Unreachable { .. })));

    let mut file_store = MlflowLogger::new().tracking_uri("file:./mlruns");
    let message = file_store.experiment().unwrap_err().to_string();
    assert!(message.contains("`file:./mlruns`: MLflow's local file store is not supported"), "{message}");
}

#[test]
fn an_http_error_carries_the_server_s_message() -> lit::Result<()> {
    let mut missing = logger("lit-missing-run").run_id("0123456789abcdef").max_retries(0);
    let message = missing.experiment().unwrap_err().to_string();
    let expected = format!("MLflow tracking server {} refused `GET /api/2.0/mlflow/runs/get` (HTTP 404", server());
    assert!(message.starts_with(&expected) && message.contains("RESOURCE_DOES_NOT_EXIST"), "{message}");
    assert!(message.contains("0123456789abcdef"), "{message}");
    Ok(())
}

/// Fits 2 epochs of 3 batches with `logger` under `root`; the run's id and the checkpoint kept.
fn fit_with_checkpoints(logger: MlflowLogger, root: &Path) -> lit::Result<(String, PathBuf)> {
    let mut trainer = quiet()
        .default_root_dir(root)
        .max_epochs(2)
        .limit_train_batches(3)
        .limit_val_batches(3)
        .with_logger(logger)
        .build()?;
    trainer.fit(&mut tracked("plain"), Batches::new(uneven_batches()), Batches::new(uneven_batches()))?;
    let kept = trainer.checkpoint_callback().unwrap().best_model_path().unwrap().to_path_buf();
    Ok((Logger::version(&*trainer.loggers()[0]), kept))
}

#[test]
fn log_model_makes_checkpoints_artifacts_as_lightning_lays_them_out() -> lit::Result<()> {
    // test_mlflow_log_model: "all" logs both epochs' checkpoints as they are saved, `True` the
    // one kept at the end, `False` none; each with its metadata and aliases.
    let (all, kept_all) = fit_with_checkpoints(logger("lit-log-model").log_model(LogModel::All), &temp_dir("all"))?;
    let at_end = logger("lit-log-model").log_model(true).checkpoint_path_prefix("models");
    let (at_end, kept_at_end) = fit_with_checkpoints(at_end, &temp_dir("at-end"))?;
    let (never, _) = fit_with_checkpoints(logger("lit-log-model").log_model(false), &temp_dir("never"))?;
    let runs = read_runs(&[&all, &at_end, &never]);
    let metadata = |name: &str| format!("original_filename: {name}.ckpt\nscore: null\n");
    let best = "['latest', 'best']";

    let artifacts = &runs[0]["artifacts"];
    let files: Vec<&String> = artifacts.as_object().unwrap().keys().collect();
    assert_eq!(
        files,
        [
            "epoch=0-step=3/aliases.txt",
            "epoch=0-step=3/epoch=0-step=3.ckpt",
            "epoch=0-step=3/metadata.yaml",
            "epoch=1-step=6/aliases.txt",
            "epoch=1-step=6/epoch=1-step=6.ckpt",
            "epoch=1-step=6/metadata.yaml",
        ]
    );
    assert_eq!(artifacts["epoch=1-step=6/epoch=1-step=6.ckpt"], std::fs::metadata(&kept_all).unwrap().len());
    assert_eq!(artifacts["epoch=0-step=3/metadata.yaml"], metadata("epoch=0-step=3").as_str());
    assert_eq!(artifacts["epoch=1-step=6/aliases.txt"], best);

    assert_eq!(
        runs[1]["artifacts"],
        serde_json::json!({
            "models/epoch=1-step=6/aliases.txt": best,
            "models/epoch=1-step=6/epoch=1-step=6.ckpt": std::fs::metadata(&kept_at_end).unwrap().len(),
            "models/epoch=1-step=6/metadata.yaml": metadata("epoch=1-step=6"),
        })
    );

    assert_eq!(runs[2]["artifacts"], serde_json::json!({}));
    Ok(())
}

#[test]
fn artifact_location_puts_the_experiment_s_artifacts_in_a_directory() -> lit::Result<()> {
    // test_mlflow_logger_experiment_calls: a new experiment is created with `artifact_location`.
    let location = temp_dir("mlflow-artifact-location");
    let mlflow = logger("lit-artifact-location").artifact_location(location.to_string_lossy()).log_model(true);
    let (run_id, kept) = fit_with_checkpoints(mlflow, &temp_dir("artifact-location-root"))?;
    let run = read_run(&run_id);
    assert_eq!(run["artifact_location"], location.to_string_lossy().as_ref());
    // The checkpoint is copied there, under the run, where MLflow's client finds it too.
    let copied = location.join(&run_id).join("artifacts/epoch=1-step=6/epoch=1-step=6.ckpt");
    assert_eq!(std::fs::read(&copied).unwrap(), std::fs::read(&kept).unwrap());
    assert_eq!(run["artifacts"]["epoch=1-step=6/epoch=1-step=6.ckpt"], std::fs::metadata(&kept).unwrap().len());
    assert_eq!(run["artifacts"]["epoch=1-step=6/aliases.txt"], "['latest', 'best']");
    Ok(())
}

/// The README's recipe ("MLflow") with the README's Trainer, which writes its checkpoints under
/// the current directory: in a process and directory of its own.
#[test]
#[ignore = "run in its own process by readme_mlflow_recipe"]
fn readme_mlflow_recipe_child() -> lit::Result<()> {
    let tracking_uri = server();
    std::env::set_current_dir(temp_dir("mlflow-readme")).unwrap();
    let mut model = tracked("plain");
    let (train_loader, val_loader) = (Batches::new(uneven_batches()), Batches::new(uneven_batches()));
    // --- from the README ---
    use lit::loggers::{LogModel, MlflowLogger};

    let logger = MlflowLogger::new() // the server: $MLFLOW_TRACKING_URI unless given
        .tracking_uri(tracking_uri) // e.g. "http://127.0.0.1:5000"
        .experiment_name("mnist") // found by name, created when missing ("lightning_logs")
        .run_name("baseline") // the `mlflow.runName` tag
        .tags([("team", "vision")])
        .log_model(LogModel::AtEnd); // the kept checkpoints as artifacts when the run ends (or `true`)
    let mut trainer = Trainer::builder().max_epochs(3).with_logger(logger).build()?;
    trainer.fit(&mut model, train_loader, val_loader)?;
    // --- end ---
    let run = read_run(&Logger::version(&*trainer.loggers()[0]));
    assert_eq!(run["experiment"], "mnist");
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["run_name"], "baseline");
    assert_eq!(strings(&run["tags"])["team"], "vision");
    assert_eq!(strings(&run["params"])["mode"], "plain");
    assert_eq!(history(&run, "val_loss"), [(3, 6.5), (7, 6.5), (11, 6.5)]);
    let kept = trainer.checkpoint_callback().unwrap().best_model_path().unwrap();
    assert!(kept.exists(), "{}", kept.display());
    assert_eq!(run["artifacts"]["epoch=2-step=12/epoch=2-step=12.ckpt"], std::fs::metadata(kept).unwrap().len());
    Ok(())
}

#[test]
fn readme_mlflow_recipe() {
    crate::common::run_in_own_process("mlflow::readme_mlflow_recipe_child");
}
