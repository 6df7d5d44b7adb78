//! Logging as Lightning does it: reductions, keys, loggers (CSV, TensorBoard read back by the
//! real TensorBoard), the progress output without a terminal, the model summary.

use std::process::Command;

use lit::data::Batches;
use lit::loggers::{CsvLogger, TensorBoardLogger};
use lit::prelude::*;
use lit::{ModelSummary, NanPolicy};

use crate::common::{quiet, temp_dir};

type B = (Tensor, Tensor);

/// Batches of 4, 4, 4 and 2 samples whose `x` values are the sample's global index.
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
pub struct LogConfig {
    pub mode: String,
    #[hparams(default = 0.1)]
    pub lr: f64,
}

#[lightning_module]
struct Logs {
    vs: nn::VarStore,
    w: Tensor,
    #[hparams]
    cfg: LogConfig,
}

#[lightning_module]
impl Logs {
    fn new(cfg: LogConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[1]);
        Logs { vs, w, cfg }
    }

    fn training_step(&mut self, (x, _): B, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        let mean = x.mean(Kind::Float);
        match self.cfg.mode.as_str() {
            "reduce" => {
                cx.log("mean", &mean).on_epoch(true);
                cx.log("sum", &mean).on_step(false).on_epoch(true).reduce_fx(Reduce::Sum);
                cx.log("max", &mean).on_step(false).on_epoch(true).reduce_fx(Reduce::Max);
                cx.log("min", &mean).on_step(false).on_epoch(true).reduce_fx(Reduce::Min);
                cx.log("step_only", batch_idx as f64);
                cx.log_dict([("a", 1.0), ("b", 2.0)]);
            }
            "conflict" => {
                cx.log("x", &mean).on_epoch(batch_idx == 1);
            }
            "nan" => {
                cx.log("bad", f64::NAN).on_epoch(true);
            }
            _ => {
                cx.log("train_loss", &mean).prog_bar(true);
            }
        }
        (&self.w * mean).sum(Kind::Float)
    }

    fn validation_step(&mut self, (x, _): B, cx: &mut Ctx) {
        cx.log("val_loss", x.mean(Kind::Float));
    }

    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let step = cx.global_step();
        if let Some(tb) = cx.logger_as::<TensorBoardLogger>() {
            let writer = tb.experiment()?;
            writer.add_histogram("weights", &Tensor::arange(100, (Kind::Float, Device::Cpu)), step)?;
            writer.add_image("picture", &Tensor::ones([3, 4, 5], (Kind::Float, Device::Cpu)), step)?;
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(self.cfg.lr).into()
    }
}

fn logs(mode: &str) -> Logs {
    Logs::new(LogConfig { mode: mode.into(), lr: 0.1 })
}

#[test]
fn reductions_match_hand_computed_values_with_an_uneven_last_batch() -> lit::Result<()> {
    let mut model = logs("reduce");
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut model, Batches::new(uneven_batches()), ())?;
    let m = trainer.callback_metrics();
    // Batch means: 1.5, 5.5, 9.5, 12.5 for batches of 4, 4, 4, 2 samples.
    let weighted = (1.5 * 4.0 + 5.5 * 4.0 + 9.5 * 4.0 + 12.5 * 2.0) / 14.0;
    assert!((m["mean_epoch"] - weighted).abs() < 1e-9, "{} vs {weighted}", m["mean_epoch"]);
    assert_eq!(m["mean_step"], 12.5);
    assert_eq!(m["sum"], 1.5 + 5.5 + 9.5 + 12.5);
    assert_eq!(m["max"], 12.5);
    assert_eq!(m["min"], 1.5);
    assert_eq!(m["step_only"], 3.0);
    assert_eq!((m["a"], m["b"]), (1.0, 2.0));
    let logged = trainer.logged_metrics();
    assert!(logged.contains_key("mean_step") && logged.contains_key("mean_epoch") && !logged.contains_key("mean"));
    Ok(())
}

#[test]
fn one_key_with_two_option_sets_is_an_error() -> lit::Result<()> {
    let mut trainer = quiet().max_epochs(1).build()?;
    let e = trainer.fit(&mut logs("conflict"), Batches::new(uneven_batches()), ()).unwrap_err().to_string();
    assert!(e.contains("`x` was logged twice in one epoch with different options"), "{e}");
    Ok(())
}

#[test]
fn a_nan_epoch_metric_warns_or_fails_as_configured() -> lit::Result<()> {
    let mut trainer = quiet().max_epochs(1).build()?;
    trainer.fit(&mut logs("nan"), Batches::new(uneven_batches()), ())?;
    assert!(trainer.callback_metrics()["bad_epoch"].is_nan());
    let mut trainer = quiet().max_epochs(1).nan_metrics(NanPolicy::Error).build()?;
    let e = trainer.fit(&mut logs("nan"), Batches::new(uneven_batches()), ()).unwrap_err().to_string();
    assert!(e.contains("the epoch value of `bad` is NaN"), "{e}");
    Ok(())
}

fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines.map(|l| l.split(',').map(String::from).collect()).collect();
    (header, rows)
}

#[test]
fn the_csv_logger_writes_lightnings_layout() -> lit::Result<()> {
    let root = temp_dir("csv");
    let mut model = logs("plain");
    let mut trainer = quiet().max_epochs(2).log_every_n_steps(2).with_logger(CsvLogger::new(&root)).build()?;
    trainer.fit(&mut model, Batches::new(uneven_batches()), Batches::new(uneven_batches()))?;

    let dir = root.join("lightning_logs/version_0");
    assert_eq!(trainer.log_dir(), Some(dir.as_path()));
    assert_eq!(std::fs::read_to_string(dir.join("hparams.yaml")).unwrap(), "lr: 0.1\nmode: plain\n");
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    assert_eq!(header, ["epoch", "step", "train_loss", "val_loss"], "sorted union of keys");
    let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
    // Four steps an epoch, logged every 2 steps; validation at the end of each epoch.
    assert_eq!(
        cells,
        [
            vec!["0", "1", "5.5", ""],
            vec!["0", "3", "12.5", ""],
            vec!["0", "3", "", "6.5"],
            vec!["1", "5", "5.5", ""],
            vec!["1", "7", "12.5", ""],
            vec!["1", "7", "", "6.5"],
        ]
    );
    let svg = std::fs::read_to_string(dir.join("metrics.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(">train_loss<") && svg.contains(">val_loss<"));

    // A second run counts the version up.
    let mut trainer = quiet().max_epochs(1).with_logger(CsvLogger::new(&root)).build()?;
    trainer.fit(&mut logs("plain"), Batches::new(uneven_batches()), ())?;
    assert_eq!(trainer.log_dir(), Some(root.join("lightning_logs/version_1").as_path()));
    Ok(())
}

/// PyYAML reads `hparams.yaml` back with each value's type: `1e-10` is a float (written
/// `1.0e-10`, as Lightning's `save_hparams_to_yaml` writes it through PyYAML), and a string that
/// looks like a number stays a string.
#[test]
fn pyyaml_reads_hparams_back_with_their_types() -> lit::Result<()> {
    let root = temp_dir("pyyaml");
    let mut model = Logs::new(LogConfig { mode: "1e-10".into(), lr: 1e-10 });
    let mut trainer = quiet().max_epochs(1).with_logger(CsvLogger::new(&root)).build()?;
    trainer.fit(&mut model, Batches::new(uneven_batches()), ())?;
    let path = trainer.log_dir().expect("a run directory").join("hparams.yaml");
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let script = "import sys, yaml\nd = yaml.safe_load(open(sys.argv[1]))\nprint(sorted((k, type(v).__name__, v) for k, v in d.items()))";
    let out = Command::new(python).arg("-c").arg(script).arg(&path).output().expect("run python");
    assert!(out.status.success(), "PyYAML failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[('lr', 'float', 1e-10), ('mode', 'str', '1e-10')]");
    Ok(())
}

#[test]
fn tensorboard_reads_the_event_files() -> lit::Result<()> {
    let root = temp_dir("tensorboard");
    let mut model = logs("plain");
    let mut trainer = quiet().max_epochs(2).log_every_n_steps(1).with_logger(TensorBoardLogger::new(&root)).build()?;
    trainer.fit(&mut model, Batches::new(uneven_batches()), Batches::new(uneven_batches()))?;
    let dir = trainer.log_dir().expect("a run directory").to_path_buf();

    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0, "images": 0})
ea.Reload()
tags = ea.Tags()
print("scalars", sorted(tags["scalars"]))
print("train_loss", [(e.step, round(e.value, 4)) for e in ea.Scalars("train_loss")])
print("val_loss", [(e.step, round(e.value, 4)) for e in ea.Scalars("val_loss")])
print("histograms", tags["histograms"], [h.histogram_value.num for h in ea.Histograms("weights")])
print("images", tags["images"], [(i.width, i.height) for i in ea.Images("picture")])
data = plugin_data_pb2.HParamsPluginData.FromString(ea.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
print("hparams", sorted((k, v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind"))) for k, v in data.session_start_info.hparams.items()))
"#;
    let out = Command::new(python).arg("-c").arg(script).arg(&dir).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tensorboard failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "scalars ['epoch', 'train_loss', 'val_loss']");
    assert_eq!(
        lines[1],
        "train_loss [(0, 1.5), (1, 5.5), (2, 9.5), (3, 12.5), (4, 1.5), (5, 5.5), (6, 9.5), (7, 12.5)]"
    );
    assert_eq!(lines[2], "val_loss [(3, 6.5), (7, 6.5)]");
    assert_eq!(lines[3], "histograms ['weights'] [100.0, 100.0]");
    assert_eq!(lines[4], "images ['picture'] [(5, 4), (5, 4)]");
    assert_eq!(lines[5], "hparams [('lr', 'number_value', 0.1), ('mode', 'string_value', 'plain')]");
    Ok(())
}

/// Reads the run's TensorBoard scalars with TensorBoard's own reader while training goes on:
/// at the first batch of epoch 1.
struct ReadsTensorBoardDuringTheRun(std::sync::Arc<std::sync::Mutex<String>>);

impl Callback for ReadsTensorBoardDuringTheRun {
    fn on_train_batch_start(&mut self, batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        if cx.current_epoch() != 1 || batch_idx != 0 {
            return Ok(());
        }
        let dir = cx.log_dir().expect("a run directory");
        let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
        let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1])
ea.Reload()
print([(e.step, round(e.value, 4)) for e in ea.Scalars("train_loss")])
"#;
        let out = Command::new(python).arg("-c").arg(script).arg(&dir).output().expect("run python");
        assert!(out.status.success(), "tensorboard failed: {}", String::from_utf8_lossy(&out.stderr));
        *self.0.lock().unwrap() = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(())
    }
}

/// A TensorBoard watching the run sees each epoch's points once the epoch ends, not only when
/// the run does (the event file is flushed at every epoch end and every few seconds).
#[test]
fn tensorboard_follows_the_run_while_it_trains() -> lit::Result<()> {
    let root = temp_dir("tensorboard-live");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut trainer = quiet()
        .max_epochs(2)
        .log_every_n_steps(1)
        .with_logger(TensorBoardLogger::new(&root))
        .callback(ReadsTensorBoardDuringTheRun(seen.clone()))
        .build()?;
    trainer.fit(&mut logs("plain"), Batches::new(uneven_batches()), ())?;
    assert_eq!(
        *seen.lock().unwrap(),
        "[(0, 1.5), (1, 5.5), (2, 9.5), (3, 12.5)]",
        "epoch 0's points, read during epoch 1"
    );
    Ok(())
}

/// One run's loggers write into one `version_N` (the first logger's), as in Lightning, also
/// when earlier runs left versions behind.
#[test]
fn a_runs_loggers_share_one_version_directory() -> lit::Result<()> {
    let root = temp_dir("one-version");
    std::fs::create_dir_all(root.join("lightning_logs/version_0")).unwrap();
    let mut trainer =
        quiet().max_epochs(1).with_logger(CsvLogger::new(&root)).with_logger(TensorBoardLogger::new(&root)).build()?;
    trainer.fit(&mut logs("plain"), Batches::new(uneven_batches()), ())?;
    let dirs: Vec<_> = trainer.loggers().iter().map(|l| l.log_dir().map(std::path::Path::to_path_buf)).collect();
    let expected = Some(root.join("lightning_logs/version_1"));
    assert_eq!(dirs, [expected.clone(), expected], "both loggers in version_1");
    let versions = std::fs::read_dir(root.join("lightning_logs")).unwrap().count();
    assert_eq!(versions, 2, "version_0 (earlier) and version_1 (this run), nothing more");
    Ok(())
}

#[test]
fn without_a_terminal_progress_is_plain_lines() {
    let out = Command::new(env!("CARGO_BIN_EXE_progress_demo")).args(["2", "10"]).output().expect("run progress_demo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!stderr.contains('\x1b') && !stdout.contains('\x1b'), "escape codes in non-terminal output: {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    let starts: Vec<&str> = lines.iter().map(|l| l.split(" [").next().unwrap_or("")).collect();
    assert_eq!(
        starts,
        [
            "Sanity Checking: 2/2",
            "Epoch 0: 10/25",
            "Epoch 0: 20/25",
            "Validation: 10/25",
            "Validation: 20/25",
            "Validation: 25/25",
            "Epoch 0: 25/25",
            "Epoch 1: 10/25",
            "Epoch 1: 20/25",
            "Validation: 10/25",
            "Validation: 20/25",
            "Validation: 25/25",
            "Epoch 1: 25/25",
        ],
        "{stderr}"
    );
    assert!(lines[1].contains("it/s]") && lines[1].contains(" loss="), "{}", lines[1]);
    assert!(lines[1].contains("v_num=7.000"), "get_progress_bar_dict adds entries: {}", lines[1]);
    assert!(lines[6].contains("val="), "the epoch line shows the validation metric: {}", lines[6]);
    // The model summary and cx.print go to stdout.
    assert!(stdout.contains("0 | w    | 3") && stdout.contains("Total params"), "{stdout}");
    assert!(stdout.contains("epoch 0 done") && stdout.contains("epoch 1 done"), "{stdout}");
}

/// Lightning's `ModelSummary` counts parameters only (a batch norm's running statistics are
/// buffers), lists modules in definition order, and counts frozen parameters as non-trainable.
#[test]
fn the_model_summary_counts_parameters_per_module() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _l2 = nn::linear(vs.root() / "zeta_encoder", 784, 256, Default::default());
    let _bn = nn::batch_norm1d(vs.root() / "norm", 256, Default::default());
    let _l1 = nn::linear(vs.root() / "head", 256, 10, Default::default());
    let summary = ModelSummary::of(&vs);
    assert_eq!(
        summary.modules,
        [("zeta_encoder".to_string(), 200_960), ("norm".to_string(), 512), ("head".to_string(), 2_570)],
        "definition order, the norm's 512 weights and biases without its 512 running statistics"
    );
    assert_eq!((summary.trainable, summary.non_trainable), (204_042, 0));
    vs.freeze();
    let frozen = ModelSummary::of(&vs);
    assert_eq!((frozen.trainable, frozen.non_trainable), (0, 204_042));
    vs.unfreeze();
    let vs = nn::VarStore::new(Device::Cpu);
    let _l1 = nn::linear(vs.root() / "encoder", 784, 256, Default::default());
    let _l2 = nn::linear(vs.root() / "head", 256, 10, Default::default());
    let summary = ModelSummary::of(&vs);
    assert_eq!((summary.trainable, summary.non_trainable), (203_530, 0));
    let table = summary.table();
    assert!(table.contains("0 | encoder | 201.0 K"), "{table}");
    assert!(
        table.contains("203.5 K   Trainable params") && table.contains("0         Non-trainable params"),
        "{table}"
    );
    assert!(table.contains("0.814     Total estimated model params size (MB)"), "{table}");
}

/// Ports `utilities/test_model_summary.py::test_summary_with_nested_modules`-style depth checks
/// and `callbacks/test_model_summary.py::test_model_summary_callback_with_enable_model_summary_false`:
/// `ModelSummary(max_depth)` lists nested modules depth first down to `max_depth` (`-1`: all),
/// each with the parameters under it; the totals do not depend on the depth; a `ModelSummary`
/// callback with `enable_model_summary=False` is a configuration error.
#[test]
fn the_model_summary_goes_to_max_depth() {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let _a = nn::linear(&p / "encoder" / "0", 4, 3, Default::default()); // 15
    let _b = nn::linear(&p / "encoder" / "1" / "proj", 3, 2, Default::default()); // 8
    let _c = nn::linear(&p / "head", 2, 1, Default::default()); // 3
    let rows = |depth| -> Vec<(String, usize)> { ModelSummary::with_depth(&vs, depth).modules };
    let owned = |v: &[(&str, usize)]| -> Vec<(String, usize)> { v.iter().map(|(n, c)| (n.to_string(), *c)).collect() };
    assert_eq!(rows(Some(1)), owned(&[("encoder", 23), ("head", 3)]));
    assert_eq!(rows(Some(1)), ModelSummary::of(&vs).modules, "depth 1 is the default");
    assert_eq!(rows(Some(2)), owned(&[("encoder", 23), ("encoder.0", 15), ("encoder.1", 8), ("head", 3)]));
    let all = owned(&[("encoder", 23), ("encoder.0", 15), ("encoder.1", 8), ("encoder.1.proj", 8), ("head", 3)]);
    assert_eq!(rows(None), all);
    assert_eq!(rows(Some(9)), all);
    for depth in [Some(1), Some(2), None] {
        let s = ModelSummary::with_depth(&vs, depth);
        assert_eq!((s.trainable, s.non_trainable), (26, 0), "{depth:?}");
    }
    let e = Trainer::builder()
        .enable_model_summary(false)
        .callback(lit::callbacks::ModelSummary::new(2))
        .build()
        .err()
        .expect("a ModelSummary callback with enable_model_summary(false) is refused")
        .to_string();
    assert!(e.contains("enable_model_summary") && e.contains("ModelSummary"), "{e}");
}
