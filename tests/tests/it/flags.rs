//! The debugging flags: `fast_dev_run`, `overfit_batches`, `barebones`, `deterministic`, and the
//! order of merged callbacks.

use std::path::Path;

use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

use crate::common::{quiet_trainer, run_in_own_process, temp_dir};

#[lightning_module]
struct Counter {
    vs: nn::VarStore,
    fc: nn::Linear,
    /// The first feature of every training batch, epoch by epoch.
    seen: Vec<Vec<f64>>,
    val_batches: usize,
    test_batches: usize,
}

#[lightning_module]
impl Counter {
    fn new() -> Self {
        seed_everything(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", 2, 1, Default::default());
        Counter { vs, fc, seen: Vec::new(), val_batches: 0, test_batches: 0 }
    }

    fn on_train_epoch_start(&mut self) {
        self.seen.push(Vec::new());
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        self.seen.last_mut().unwrap().push(x.double_value(&[0, 0]));
        let loss = x.apply(&self.fc).dropout(0.3, cx.training()).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("loss", &loss);
        loss
    }

    fn validation_step(&mut self, _batch: (Tensor, Tensor)) {
        self.val_batches += 1;
    }

    fn test_step(&mut self, _batch: (Tensor, Tensor)) {
        self.test_batches += 1;
    }

    fn predict_step(&mut self, (x, _y): (Tensor, Tensor)) -> Tensor {
        x.apply(&self.fc)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

/// 40 samples, first feature 0..40, in batches of 4: 10 batches.
fn loader(shuffle: bool) -> DataLoader<TensorDataset<(Tensor, Tensor)>> {
    let x = Tensor::arange(80, (Kind::Float, Device::Cpu)).view([40, 2]) / 2.0;
    let y = x.sum_dim_intlist(-1, true, Kind::Float);
    DataLoader::new(TensorDataset::new((x, y)).unwrap()).batch_size(4).shuffle(shuffle).seed(1)
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn fast_dev_run_runs_n_batches_of_each_loop_and_writes_nothing() -> lit::Result<()> {
    let root = temp_dir("fast-dev-run");
    let mut model = Counter::new();
    let mut trainer = Trainer::builder()
        .fast_dev_run(2)
        .max_epochs(5)
        .default_root_dir(&root)
        .callback(ModelCheckpoint::default())
        .enable_progress_bar(false)
        .build()?;
    trainer.fit(&mut model, loader(true), loader(false))?;
    assert_eq!(model.seen.iter().map(Vec::len).collect::<Vec<_>>(), [2], "one epoch of 2 batches");
    assert_eq!(trainer.global_step(), 2);
    assert_eq!(model.val_batches, 2, "no sanity check, then 2 validation batches");
    trainer.test(&mut model, loader(false))?;
    assert_eq!(model.test_batches, 2);
    assert_eq!(trainer.predict(&mut model, loader(false))?.len(), 2);
    assert_eq!(files_under(&root), Vec::<std::path::PathBuf>::new(), "fast_dev_run wrote files");
    Ok(())
}

#[test]
fn overfit_batches_repeats_the_same_batches_without_shuffling() -> lit::Result<()> {
    let root = temp_dir("overfit");
    let mut model = Counter::new();
    let mut trainer = quiet_trainer(&root).overfit_batches(3).max_epochs(3).build()?;
    trainer.fit(&mut model, loader(true), loader(false))?;
    // The first three batches of the unshuffled data, every epoch.
    let first = vec![0.0, 4.0, 8.0];
    assert_eq!(model.seen, [first.clone(), first.clone(), first]);
    // Validation is limited the same way: sanity check (2) + 3 per epoch.
    assert_eq!(model.val_batches, 2 + 3 * 3);
    Ok(())
}

#[test]
fn barebones_writes_no_logs_and_no_checkpoints() -> lit::Result<()> {
    let root = temp_dir("barebones");
    let mut model = Counter::new();
    let mut trainer = Trainer::builder().barebones(true).max_epochs(2).default_root_dir(&root).build()?;
    trainer.fit(&mut model, loader(false), ())?;
    assert_eq!(trainer.global_step(), 20);
    assert!(trainer.log_dir().is_none());
    assert_eq!(files_under(&root), Vec::<std::path::PathBuf>::new());
    Ok(())
}

fn weights_after_deterministic_run(root: &Path) -> lit::Result<Vec<f32>> {
    let mut model = Counter::new();
    let mut trainer = quiet_trainer(root).deterministic(true).seed(42).max_epochs(2).build()?;
    trainer.fit(&mut model, loader(true).num_workers(2), ())?;
    Ok(Vec::try_from(model.fc.ws.flatten(0, -1))?)
}

/// Runs in its own process (see `deterministic_runs_are_bitwise_equal`): the tests of one binary
/// share libtorch's global generator, which dropout draws from.
#[test]
#[ignore = "run by deterministic_runs_are_bitwise_equal in a process of its own"]
fn deterministic_child() -> lit::Result<()> {
    let root = temp_dir("deterministic");
    let a = weights_after_deterministic_run(&root)?;
    let b = weights_after_deterministic_run(&root)?;
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn deterministic_runs_are_bitwise_equal() {
    run_in_own_process("flags::deterministic_child");
}

/// A callback that records the order callbacks run `on_train_start` in.
struct Named(&'static str, std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Callback for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn on_train_start(&mut self, _cx: &mut Ctx) -> lit::Result<()> {
        self.1.lock().unwrap().push(self.0);
        Ok(())
    }
}

#[lightning_module]
struct WithCallbacks {
    vs: nn::VarStore,
    fc: nn::Linear,
    order: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
}

#[lightning_module]
impl WithCallbacks {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root(), 2, 1, Default::default());
        WithCallbacks { vs, fc, order: Default::default() }
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }

    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        vec![Box::new(Named("module", self.order.clone()))]
    }
}

#[test]
fn module_callbacks_replace_trainer_ones_of_their_type_and_checkpointing_runs_last() -> lit::Result<()> {
    let root = temp_dir("callback-order");
    let mut model = WithCallbacks::new();
    let order = model.order.clone();
    // A trainer callback of the module callback's type is replaced; ModelCheckpoint (given
    // first) moves to the end.
    let mut trainer = Trainer::builder()
        .callback(ModelCheckpoint::default())
        .callback(Named("trainer", order.clone()))
        .max_epochs(1)
        .default_root_dir(&root)
        .enable_progress_bar(false)
        .logger(false)
        .build()?;
    trainer.fit(&mut model, loader(false), ())?;
    assert_eq!(*order.lock().unwrap(), ["module"]);
    let names: Vec<String> = trainer.callbacks().iter().map(|c| c.name().to_string()).collect();
    assert!(names.last().is_some_and(|n| n.ends_with("ModelCheckpoint")), "{names:?}");
    assert!(names.contains(&"module".to_string()) && !names.contains(&"trainer".to_string()), "{names:?}");
    Ok(())
}

/// The profiler report's row for `action`: (calls, total seconds).
fn profiled(report: &str, action: &str) -> Option<(u64, f64)> {
    report.lines().find(|l| l.split('|').next().is_some_and(|a| a.trim() == action)).map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        (cells[2].parse().unwrap(), cells[3].parse().unwrap())
    })
}

#[test]
fn the_simple_profiler_reports_hooks_and_actions_in_the_log_dir() -> lit::Result<()> {
    let root = temp_dir("profiler-simple");
    let mut model = Counter::new();
    let mut trainer = Trainer::builder()
        .profiler("simple")
        .max_epochs(2)
        .default_root_dir(&root)
        .enable_progress_bar(false)
        .enable_checkpointing(false)
        .build()?;
    trainer.fit(&mut model, loader(false), loader(false))?;
    let path = trainer.log_dir().expect("a log dir").join("fit-profile.txt");
    let report = std::fs::read_to_string(&path).unwrap();
    for (action, calls) in [
        ("training_step", 20),
        ("backward", 20),
        ("optimizer_step", 20),
        ("optimizer_zero_grad", 20),
        ("get_train_batch", 20),
        ("transfer_batch_to_device", 20 + 2 + 2 * 10),
        ("validation_step", 2 + 2 * 10),
        ("on_train_epoch_end", 2),
        ("on_validation_epoch_end", 1 + 2),
        ("on_validation_batch_end", 2 + 2 * 10),
        ("on_fit_start", 1),
    ] {
        let (n, total) = profiled(&report, action).unwrap_or_else(|| panic!("no `{action}` in\n{report}"));
        assert_eq!(n, calls, "{action} in\n{report}");
        assert!(total >= 0.0);
    }
    let message = Trainer::builder().profiler("advanced").build().err().unwrap().to_string();
    assert!(message.contains("unknown profiler \"advanced\""), "{message}");
    Ok(())
}

#[test]
fn the_pytorch_profiler_writes_a_chrome_trace() -> lit::Result<()> {
    let root = temp_dir("profiler-pytorch");
    let mut model = Counter::new();
    let mut trainer = Trainer::builder()
        .profiler("pytorch")
        .max_epochs(1)
        .default_root_dir(&root)
        .enable_progress_bar(false)
        .enable_checkpointing(false)
        .build()?;
    trainer.fit(&mut model, loader(false), ())?;
    let path = trainer.log_dir().expect("a log dir").join("fit-pytorch-trace.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> =
        trace.as_array().expect("a list of events").iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("addmm") || n.contains("linear")), "{:?}", &names[..names.len().min(20)]);
    Ok(())
}

#[lightning_module]
struct OwnLoaders {
    vs: nn::VarStore,
    fc: nn::Linear,
    made: usize,
}

#[lightning_module]
impl OwnLoaders {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root(), 2, 1, Default::default());
        OwnLoaders { vs, fc, made: 0 }
    }
    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean)
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
    fn train_dataloader(&mut self) -> Option<Box<dyn Loader<Batch = (Tensor, Tensor)>>> {
        self.made += 1;
        Some(Box::new(loader(false)))
    }
}

#[test]
fn reload_dataloaders_every_n_epochs_calls_the_modules_hook_again() -> lit::Result<()> {
    let root = temp_dir("reload-module");
    let mut model = OwnLoaders::new();
    let mut trainer = quiet_trainer(&root).max_epochs(4).reload_dataloaders_every_n_epochs(1).build()?;
    trainer.fit(&mut model, (), ())?;
    assert_eq!(model.made, 4);
    assert_eq!(trainer.global_step(), 4 * 10);
    Ok(())
}

#[test]
fn max_time_takes_dd_hh_mm_ss_or_a_duration() {
    use lit::callbacks::Timer;
    use std::time::Duration;
    assert_eq!(Timer::parse("00:01:30:05").unwrap(), Duration::from_secs(3600 + 30 * 60 + 5));
    assert_eq!(Timer::parse("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(Timer::parse("2d 12h").unwrap(), Duration::from_secs(2 * 86_400 + 12 * 3600));
    assert_eq!(Timer::parse("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(Timer::parse("1.5 minutes").unwrap(), Duration::from_secs(90));
    for bad in ["", "90", "1:2:3", "5 fortnights", "h"] {
        let message = Timer::parse(bad).unwrap_err().to_string();
        assert!(message.contains("`max_time`") && message.contains("1h30m"), "{bad:?}: {message}");
    }
}

#[lightning_module]
struct NanGrad {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl NanGrad {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(-1.0));
        NanGrad { vs, w }
    }
    /// sqrt of a negative number: NaN forward, NaN gradient.
    fn training_step(&mut self, (x, _y): (Tensor, Tensor)) -> Tensor {
        (x.narrow(0, 0, 1) * &self.w).sqrt().sum(Kind::Float)
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

/// Anomaly mode is process-wide: this runs in its own process.
#[test]
fn detect_anomaly_names_the_operation_that_made_nan() {
    run_in_own_process("flags::detect_anomaly_child");
}

#[test]
#[ignore = "run by detect_anomaly_names_the_operation_that_made_nan in a process of its own"]
fn detect_anomaly_child() -> lit::Result<()> {
    let root = temp_dir("detect-anomaly");
    let build = |anomaly: bool| quiet_trainer(&root).detect_anomaly(anomaly).max_epochs(1).build();
    // Without it the NaN goes unnoticed; with it backward fails naming the function.
    build(false)?.fit(&mut NanGrad::new(), loader(false), ())?;
    let message = build(true)?.fit(&mut NanGrad::new(), loader(false), ()).unwrap_err().to_string();
    assert!(message.contains("SqrtBackward0") && message.contains("nan"), "{message}");
    Ok(())
}
