//! The command line: flags and config files merge over the defaults, mistakes name the key, and
//! `--print_config` gives a file that reproduces the run.

use lit::cli::{FromConfig, LitCli, Outcome, Parsed, SaveConfigCallback, Subcommand};
use lit::data::{BoxLoader, DataLoader, DataModule, TensorDataset};
use lit::prelude::*;

use crate::common::{repo_root, temp_dir};

type Pair = (Tensor, Tensor);

#[hparams]
struct ModelConfig {
    /// The learning rate of SGD.
    #[hparams(default = 0.05)]
    lr: f64,
    /// Every initial weight and bias.
    #[hparams(default = 0.1)]
    init: f64,
    /// A model key for argument links.
    #[hparams(default = 1)]
    batch_size: usize,
    /// A model key for argument links from the data module.
    #[hparams(default = 0)]
    num_classes: i64,
}

/// A linear regression whose initial weights are a constant: its runs depend on the
/// configuration only (not on the random generator the tests share).
#[lightning_module]
struct Line {
    vs: nn::VarStore,
    fc: nn::Linear,
    #[hparams]
    cfg: ModelConfig,
}

#[lightning_module]
impl Line {
    fn new(cfg: ModelConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let init = nn::Init::Const(cfg.init);
        let fc = nn::linear(vs.root(), 2, 1, nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true });
        Line { vs, fc, cfg }
    }
    fn training_step(&mut self, (x, y): Pair) -> Tensor {
        x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean)
    }
    fn validation_step(&mut self, (x, y): Pair, cx: &mut Ctx) {
        cx.log("val_loss", x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean));
    }
    fn test_step(&mut self, (x, y): Pair, cx: &mut Ctx) {
        cx.log("test_loss", x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean));
    }
    fn predict_step(&mut self, (x, _y): Pair) -> Tensor {
        x.apply(&self.fc)
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(self.cfg.lr).into()
    }
}

#[hparams]
struct DataConfig {
    /// Samples per batch.
    #[hparams(default = 4)]
    batch_size: usize,
    /// Points in the data set.
    #[hparams(default = 32)]
    samples: i64,
}

struct Points {
    cfg: DataConfig,
    /// Known once the data module is built, as Lightning's `BoringDataModuleBatchSizeAndClasses`.
    num_classes: i64,
}

impl FromConfig for Points {
    type Config = DataConfig;
    fn from_config(cfg: DataConfig) -> lit::Result<Self> {
        Ok(Points { cfg, num_classes: 5 })
    }
}

impl Points {
    fn loader(&self) -> lit::Result<BoxLoader<Pair>> {
        let x = Tensor::arange(2 * self.cfg.samples, (Kind::Float, Device::Cpu)).view([self.cfg.samples, 2]).cos();
        let y = x.sum_dim_intlist(-1, true, Kind::Float) * 0.5;
        Ok(Box::new(DataLoader::new(TensorDataset::new((x, y))?).batch_size(self.cfg.batch_size)))
    }
}

impl DataModule for Points {
    type TrainBatch = Pair;
    type ValBatch = Pair;
    type TestBatch = Pair;
    type PredictBatch = Pair;
    fn train_dataloader(&mut self) -> lit::Result<Option<BoxLoader<Pair>>> {
        self.loader().map(Some)
    }
    fn val_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Pair>>> {
        self.loader().map(|l| vec![l])
    }
    fn test_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Pair>>> {
        self.loader().map(|l| vec![l])
    }
    fn predict_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Pair>>> {
        self.loader().map(|l| vec![l])
    }
}

/// The command line of these tests; runs that only check the training leave the configuration
/// unsaved.
fn cli() -> LitCli<Line, Points> {
    LitCli::new().save_config(false)
}

fn parse_with(cli: &LitCli<Line, Points>, args: &[&str]) -> lit::Result<lit::cli::CliConfig> {
    match cli.parse(std::iter::once("line").chain(args.iter().copied()))? {
        Parsed::Config(c) => Ok(c),
        Parsed::Exit(e) => panic!("unexpected exit: {e}"),
    }
}

fn parse(args: &[&str]) -> lit::Result<lit::cli::CliConfig> {
    parse_with(&cli(), args)
}

/// `--help` (or another exit) for `args`: the text clap prints.
fn exit_text(cli: &LitCli<Line, Points>, args: &[&str]) -> lit::Result<String> {
    match cli.parse(std::iter::once("line").chain(args.iter().copied()))? {
        Parsed::Exit(e) => Ok(e.render().to_string()),
        Parsed::Config(_) => panic!("{args:?} parsed as a configuration"),
    }
}

/// Quiet, file-free trainer settings for the runs below.
const QUIET: &[&str] = &[
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger",
    "false",
    "--trainer.enable_checkpointing",
    "false",
];

fn fit_weights(config: lit::cli::CliConfig) -> lit::Result<Vec<f32>> {
    let mut cli = cli().instantiate(config)?;
    assert!(matches!(cli.run()?, Outcome::Fitted));
    Ok(Vec::try_from(cli.model.fc.ws.flatten(0, -1))?)
}

#[test]
fn flags_override_config_files_which_override_defaults() -> lit::Result<()> {
    let dir = temp_dir("cli-merge");
    let yaml = dir.join("a.yaml");
    std::fs::write(&yaml, "trainer:\n  max_epochs: 7\n  precision: bf16-mixed\nmodel:\n  lr: 0.5\n").unwrap();
    let toml = dir.join("b.toml");
    std::fs::write(&toml, "[model]\nlr = 0.25\n[data]\nbatch_size = 8\n").unwrap();
    let c = parse(&[
        "fit",
        "--config",
        yaml.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
        "--model.lr",
        "0.125",
        "--trainer.precision",
        "64",
    ])?;
    assert_eq!(c.subcommand, Subcommand::Fit);
    let v = &c.value;
    assert_eq!(v["trainer"]["max_epochs"], 7);
    assert_eq!(v["model"]["lr"], 0.125, "the flag wins over both files");
    assert_eq!(v["data"]["batch_size"], 8, "the later file wins over the defaults");
    assert_eq!(v["model"]["init"], 0.1, "untouched keys keep their defaults");
    assert_eq!(v["trainer"]["precision"], "64", "a text option stays text");
    assert_eq!(c.trainer()?.max_epochs, Some(7));
    // Lightning's `fast_dev_run: true` is one batch.
    let c = parse(&["fit", "--trainer.fast_dev_run", "true"])?;
    assert_eq!(c.trainer()?.fast_dev_run, 1);
    Ok(())
}

#[test]
fn an_unknown_key_or_a_wrong_type_names_the_key() -> lit::Result<()> {
    let dir = temp_dir("cli-errors");
    let yaml = dir.join("typo.yaml");
    std::fs::write(&yaml, "trainer:\n  max_epoch: 3\n").unwrap();
    let message = parse(&["fit", "--config", yaml.to_str().unwrap()]).unwrap_err().to_string();
    assert!(message.contains("unknown key `trainer.max_epoch`; did you mean `max_epochs`?"), "{message}");
    assert!(message.contains("typo.yaml"), "{message}");

    let c = parse(&["fit", "--trainer.max_epochs", "three"])?;
    let message = cli().instantiate(c).err().unwrap().to_string();
    assert!(message.contains("`trainer.max_epochs`: invalid type: string \"three\""), "{message}");

    // A section replaced by a value.
    std::fs::write(&yaml, "model: 0.5\n").unwrap();
    let message = parse(&["fit", "--config", yaml.to_str().unwrap()]).unwrap_err().to_string();
    assert!(message.contains("`model` must be a mapping of keys to values, got 0.5"), "{message}");

    let missing = dir.join("missing.yaml");
    let message = parse(&["fit", "--config", missing.to_str().unwrap()]).unwrap_err().to_string();
    assert!(message.contains("missing.yaml"), "{message}");

    // An unknown flag is clap's usage error, with a suggestion.
    let parsed = cli().parse(["line", "fit", "--model.learning_rate", "1"])?;
    let Parsed::Exit(e) = parsed else { panic!("an unknown flag parsed") };
    assert!(e.to_string().contains("--model.learning_rate"), "{e}");
    Ok(())
}

#[test]
fn print_config_fed_back_gives_the_same_run() -> lit::Result<()> {
    let dir = temp_dir("cli-print");
    let mut args = vec!["fit", "--model.lr", "0.02", "--trainer.max_epochs", "3", "--data.batch_size", "8"];
    args.extend_from_slice(QUIET);
    args.extend_from_slice(&["--trainer.default_root_dir", dir.to_str().unwrap(), "--print_config"]);
    let printed = parse(&args)?;
    assert!(printed.print_config);
    let path = dir.join("config.yaml");
    std::fs::write(&path, printed.to_yaml()?).unwrap();

    let reread = parse(&["fit", "--config", path.to_str().unwrap()])?;
    assert_eq!(reread.value, printed.value);
    let a = fit_weights(printed)?;
    let b = fit_weights(reread)?;
    assert_eq!(a.iter().map(|w| w.to_bits()).collect::<Vec<_>>(), b.iter().map(|w| w.to_bits()).collect::<Vec<_>>());
    // The configuration mattered: the default learning rate trains to other weights.
    let mut defaults = vec!["fit", "--trainer.max_epochs", "3", "--data.batch_size", "8"];
    defaults.extend_from_slice(QUIET);
    assert_ne!(fit_weights(parse(&defaults)?)?, a);
    Ok(())
}

#[test]
fn test_and_predict_subcommands_run_on_the_data_module() -> lit::Result<()> {
    let mut args = vec!["test"];
    args.extend_from_slice(QUIET);
    let mut built = cli().instantiate(parse(&args)?)?;
    let Outcome::Metrics(metrics) = built.run()? else { panic!("test returns metrics") };
    assert!(metrics[0]["test_loss"] > 0.0);
    let mut args = vec!["predict", "--data.batch_size", "16"];
    args.extend_from_slice(QUIET);
    let mut built = cli().instantiate(parse(&args)?)?;
    let Outcome::Predictions(p) = built.run()? else { panic!("predict returns predictions") };
    assert_eq!(p.len(), 2);
    Ok(())
}

// ----- callbacks and loggers as classes -----

/// The callbacks of type `T` the Trainer holds.
fn callbacks_of<T: lit::Callback>(trainer: &Trainer) -> Vec<&T> {
    trainer.callbacks().iter().filter_map(|c| (&**c as &dyn std::any::Any).downcast_ref::<T>()).collect()
}

/// The rows the run's `CsvLogger` recorded that have `key`.
fn csv_rows_with(trainer: &mut Trainer, key: &str) -> usize {
    let csv = trainer.loggers()[0].as_any_mut().downcast_mut::<CsvLogger>().expect("a CsvLogger");
    csv.rows().iter().filter(|row| row.contains_key(key)).count()
}

#[test]
fn callbacks_given_as_json_are_built_with_their_init_args() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_args_callbacks: a JSON list of
    // {class_path, init_args} with Lightning's class paths builds one LearningRateMonitor that
    // logs per epoch and one ModelCheckpoint that monitors the given metric.
    let dir = temp_dir("cli-callbacks-json");
    let ckpts = dir.join("ckpts");
    let callbacks = serde_json::json!([
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"monitor": "val_loss", "dirpath": ckpts, "filename": "{epoch}-{val_loss:.3f}"}},
    ]);
    let flag = format!("--trainer.callbacks={callbacks}");
    let root = dir.to_str().unwrap();
    let args =
        ["fit", &flag, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1", "--trainer.default_root_dir", root];
    let mut args = args.to_vec();
    args.extend_from_slice(&QUIET[..4]); // progress bar and summary off; the default CSV logger on
    let mut built = cli().instantiate(parse(&args)?)?;
    assert_eq!(callbacks_of::<LearningRateMonitor>(&built.trainer).len(), 1);
    assert_eq!(callbacks_of::<ModelCheckpoint>(&built.trainer).len(), 1, "the given one replaces the default");
    built.run()?;
    // `logging_interval: epoch`: one learning-rate row per epoch (8 steps each).
    assert_eq!(csv_rows_with(&mut built.trainer, "lr-SGD"), 2);
    let best = built.trainer.checkpoint_callback().unwrap().best_model_path().unwrap().to_path_buf();
    assert_eq!(best.parent().unwrap(), ckpts);
    assert!(best.file_name().unwrap().to_str().unwrap().contains("val_loss="), "{best:?}");
    Ok(())
}

#[test]
fn one_callback_by_name_stays_a_mapping_with_lightnings_class_path() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_single_arg_callback: `--trainer.callbacks=NAME` gives
    // one class (not a list), written with Lightning's full class path and every init arg.
    let c = parse(&["fit", "--trainer.callbacks=ModelSummary"])?;
    let callbacks = &c.value["trainer"]["callbacks"];
    assert!(callbacks.is_object(), "{callbacks}");
    assert_eq!(callbacks["class_path"], "lightning.pytorch.callbacks.ModelSummary");
    assert_eq!(callbacks["init_args"], serde_json::json!({"max_depth": 1}));
    // The full path, and Lightning 1.x's namespace, name the same class.
    for name in ["lightning.pytorch.callbacks.ModelSummary", "pytorch_lightning.callbacks.ModelSummary"] {
        let c = parse(&["fit", &format!("--trainer.callbacks={name}"), "--trainer.callbacks.max_depth=2"])?;
        assert_eq!(c.value["trainer"]["callbacks"]["init_args"]["max_depth"], 2);
    }
    Ok(())
}

#[test]
fn appended_callbacks_take_the_init_args_that_follow_them() -> lit::Result<()> {
    // Ports test_cli.py::test_callbacks_append: `+=NAME` (and `+ NAME`) appends, `.ARG=VALUE`
    // sets an init arg of the last appended, `+=[...]` appends a list, and the
    // SaveConfigCallback comes with them.
    let more = r#"[{"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val_loss"}},
                   {"class_path": "Timer", "init_args": {}}]"#;
    let args = [
        "fit",
        "--trainer.callbacks+=LearningRateMonitor",
        "--trainer.callbacks.logging_interval=epoch",
        "--trainer.callbacks+",
        "ModelCheckpoint",
        "--trainer.callbacks.monitor=val_loss",
        "--trainer.callbacks.init_args.save_top_k",
        "2",
        &format!("--trainer.callbacks+={more}"),
    ];
    let c = parse_with(&LitCli::new(), &args)?;
    let list = c.value["trainer"]["callbacks"].as_array().unwrap().clone();
    let paths: Vec<&str> = list.iter().map(|c| c["class_path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "lightning.pytorch.callbacks.LearningRateMonitor",
            "lightning.pytorch.callbacks.ModelCheckpoint",
            "lightning.pytorch.callbacks.EarlyStopping",
            "lightning.pytorch.callbacks.Timer"
        ]
    );
    assert_eq!(list[0]["init_args"]["logging_interval"], "epoch");
    assert_eq!(list[1]["init_args"]["monitor"], "val_loss");
    assert_eq!(list[1]["init_args"]["save_top_k"], 2);
    assert_eq!(list[2]["init_args"]["patience"], 3, "Lightning's default");
    let built = LitCli::<Line, Points>::new().instantiate(c)?;
    assert_eq!(callbacks_of::<LearningRateMonitor>(&built.trainer).len(), 1);
    assert_eq!(callbacks_of::<ModelCheckpoint>(&built.trainer).len(), 1);
    assert_eq!(callbacks_of::<EarlyStopping>(&built.trainer).len(), 1);
    assert_eq!(callbacks_of::<lit::callbacks::Timer>(&built.trainer).len(), 1);
    assert_eq!(callbacks_of::<SaveConfigCallback>(&built.trainer).len(), 1);
    Ok(())
}

#[test]
fn config_files_name_callbacks_and_merge_their_init_args() -> lit::Result<()> {
    // jsonargparse's merge of a class over files: a later file naming the same class (or no
    // class) adds init args to it; a file naming another class replaces it.
    let dir = temp_dir("cli-callbacks-files");
    let a = dir.join("a.yaml");
    std::fs::write(
        &a,
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n    init_args:\n      save_dir: tb\n  callbacks:\n    - class_path: EarlyStopping\n      init_args:\n        monitor: val_loss\n    - GradientAccumulationScheduler\n",
    )
    .unwrap();
    let b = dir.join("b.yaml");
    std::fs::write(&b, "trainer:\n  logger:\n    init_args:\n      name: runs\n").unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let args = ["fit", "--config", a, "--config", b, "--trainer.callbacks.scheduling={0: 2, 3: 4}"];
    let c = parse(&args)?;
    let logger = &c.value["trainer"]["logger"];
    assert_eq!(logger["class_path"], "lightning.pytorch.loggers.TensorBoardLogger");
    assert_eq!(logger["init_args"], serde_json::json!({"save_dir": "tb", "name": "runs", "version": null}));
    let callbacks = &c.value["trainer"]["callbacks"];
    assert_eq!(callbacks[0]["init_args"]["monitor"], "val_loss");
    assert_eq!(callbacks[1]["init_args"]["scheduling"], serde_json::json!({"0": 2, "3": 4}));
    let built = cli().instantiate(c)?;
    let scheduler = callbacks_of::<lit::callbacks::GradientAccumulationScheduler>(&built.trainer)[0];
    assert_eq!((scheduler.factor(0), scheduler.factor(2), scheduler.factor(5)), (2, 2, 4));
    Ok(())
}

#[test]
fn an_unknown_class_or_init_arg_is_named_with_a_suggestion() -> lit::Result<()> {
    let message = parse(&["fit", "--trainer.callbacks=EarlyStoping"]).unwrap_err().to_string();
    assert!(
        message.contains("`trainer.callbacks`: unknown callback class `EarlyStoping`; did you mean `EarlyStopping`?"),
        "{message}"
    );
    assert!(message.contains("ModelCheckpoint"), "lists the known classes: {message}");
    let message = parse(&["fit", "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitr=val_loss"])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`trainer.callbacks[0]`: EarlyStopping has no init arg `monitr`; did you mean `monitor`?"),
        "{message}"
    );
    let message = parse(&["fit", "--trainer.logger=TensorBoardLoger"]).unwrap_err().to_string();
    assert!(
        message.contains("unknown logger class `TensorBoardLoger`; did you mean `TensorBoardLogger`?"),
        "{message}"
    );
    // A wrong type names the init arg; a missing required one says so when it is built.
    let message = parse(&["fit", "--trainer.callbacks=EarlyStopping", "--trainer.callbacks.patience=soon"])
        .unwrap_err()
        .to_string();
    assert!(message.contains("`trainer.callbacks` (EarlyStopping): `patience`: invalid type"), "{message}");
    let c = parse(&["fit", "--trainer.callbacks=EarlyStopping"])?;
    let message = cli().instantiate(c).err().unwrap().to_string();
    assert!(message.contains("EarlyStopping: the init arg `monitor` is required"), "{message}");
    // An init arg with no class before it.
    let message = parse(&["fit", "--trainer.callbacks.monitor=val_loss"]).unwrap_err().to_string();
    assert!(message.contains("write `--trainer.callbacks=CLASS`"), "{message}");
    Ok(())
}

#[test]
fn the_logger_is_a_boolean_a_class_or_a_list() -> lit::Result<()> {
    // Ports test_cli.py::test_cli_logger_shorthand and test_tensorboard_logger_init_args.
    let dir = temp_dir("cli-logger");
    let root = dir.to_str().unwrap();
    let built = cli().instantiate(parse(&["fit", "--trainer.logger=False", "--trainer.default_root_dir", root])?)?;
    let mut trainer = built.trainer;
    assert!(trainer.loggers().is_empty());
    let tb = dir.join("foo");
    let tb = tb.to_str().unwrap();
    let c = parse(&["fit", "--trainer.logger=TensorBoardLogger", &format!("--trainer.logger.save_dir={tb}")])?;
    let printed: serde_json::Value = serde_norway::from_str(&c.to_yaml()?).unwrap();
    assert_eq!(printed["trainer"]["logger"]["init_args"]["save_dir"], tb);
    assert_eq!(printed["trainer"]["logger"]["init_args"]["name"], "lightning_logs");
    let mut trainer = cli().instantiate(c)?.trainer;
    assert_eq!(trainer.loggers().len(), 1);
    assert!(trainer.loggers()[0].as_any_mut().is::<TensorBoardLogger>());
    // Lightning's CSVLogger, and lit's name for it, in a list with a TensorBoardLogger.
    let list = format!(
        "[{{class_path: CSVLogger, init_args: {{save_dir: {tb}}}}}, {{class_path: CsvLogger, init_args: {{save_dir: {tb}, name: other}}}}]"
    );
    let c = parse(&["fit", "--trainer.logger", &list])?;
    assert_eq!(c.value["trainer"]["logger"][1]["class_path"], "lightning.pytorch.loggers.CSVLogger");
    let mut trainer = cli().instantiate(c)?.trainer;
    assert_eq!(trainer.loggers().len(), 2);
    assert_eq!(trainer.loggers()[1].name(), "other");
    // Lightning's MLFlowLogger (lit's MlflowLogger), built without contacting its server (its run
    // starts with training).
    let c = parse(&[
        "fit",
        "--trainer.logger=MLFlowLogger",
        "--trainer.logger.tracking_uri=http://127.0.0.1:5000",
        "--trainer.logger.experiment_name=cnn",
        "--trainer.logger.log_model=all",
        "--trainer.logger.tags={team: vision}",
    ])?;
    let init = &c.value["trainer"]["logger"]["init_args"];
    assert_eq!(c.value["trainer"]["logger"]["class_path"], "lightning.pytorch.loggers.MLFlowLogger");
    assert_eq!((init["log_model"].as_str(), init["tags"]["team"].as_str()), (Some("all"), Some("vision")));
    assert_eq!(init["prefix"], "", "Lightning's default");
    let mut trainer = cli().instantiate(c)?.trainer;
    assert!(trainer.loggers()[0].as_any_mut().is::<lit::loggers::MlflowLogger>());
    assert_eq!(trainer.loggers()[0].name(), "cnn", "the experiment's name until its run starts");
    // `--trainer.logger` alone is `true`: the default CSV logger.
    let c = parse(&["fit", "--trainer.logger", "--trainer.max_epochs", "1"])?;
    assert_eq!(c.value["trainer"]["logger"], true);
    assert_eq!(c.trainer()?.max_epochs, Some(1));
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
struct CountBatches {
    /// Where to write the count when fit ends.
    path: String,
    #[serde(skip)]
    batches: usize,
}

impl lit::Callback for CountBatches {
    fn on_train_batch_end(&mut self, _: Option<&lit::StepOutput>, _: usize, _: &mut Ctx) -> lit::Result<()> {
        self.batches += 1;
        Ok(())
    }
    fn on_fit_end(&mut self, _: &mut Ctx) -> lit::Result<()> {
        std::fs::write(&self.path, self.batches.to_string()).map_err(lit::Error::msg)
    }
}

#[test]
fn a_program_registers_its_own_callbacks_and_loggers() -> lit::Result<()> {
    let dir = temp_dir("cli-register");
    let out = dir.join("count.txt");
    let logs = dir.clone();
    let cli = cli().register_callback::<CountBatches>("my_project.callbacks.CountBatches").register_logger_with(
        "Quiet",
        move |args: serde_json::Map<String, serde_json::Value>| {
            assert!(args.is_empty(), "no init args given");
            Ok(CsvLogger::new(logs.clone()).name("quiet"))
        },
    );
    let mut args = vec![
        "fit",
        "--trainer.callbacks+=CountBatches",
        "--trainer.max_epochs=2",
        "--trainer.logger=Quiet",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
    ];
    let path = format!("--trainer.callbacks.path={}", out.display());
    args.push(&path);
    let c = parse_with(&cli, &args)?;
    assert_eq!(c.value["trainer"]["callbacks"][0]["class_path"], "my_project.callbacks.CountBatches");
    assert_eq!(c.value["trainer"]["callbacks"][0]["init_args"], serde_json::json!({"path": out}));
    let mut built = cli.instantiate(c)?;
    assert_eq!(built.trainer.loggers()[0].name(), "quiet");
    built.run()?;
    assert!(dir.join("quiet/version_0/metrics.csv").is_file());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "16", "2 epochs of 8 batches");
    // A misspelt init arg of a registered type is caught as for the built-ins.
    let message = parse_with(&cli, &["fit", "--trainer.callbacks=CountBatches", "--trainer.callbacks.pth=x"])
        .unwrap_err()
        .to_string();
    assert!(message.contains("CountBatches has no init arg `pth`; did you mean `path`?"), "{message}");
    Ok(())
}

// ----- the saved configuration -----

/// Flags for a short quiet fit under `root` (no loggers: the configuration goes to `root`).
fn short_fit(root: &str) -> Vec<String> {
    ["fit", "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--trainer.default_root_dir".to_string(), root.to_string()])
        .collect()
}

fn run_cli(cli: &LitCli<Line, Points>, args: &[String]) -> lit::Result<lit::cli::Cli<Line, Points>> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut built = cli.instantiate(parse_with(cli, &args)?)?;
    built.run()?;
    Ok(built)
}

fn read_yaml(path: &std::path::Path) -> serde_json::Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fit_saves_the_resolved_configuration_in_the_log_directory() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_args: without a logger the configuration goes to
    // `default_root_dir/config.yaml`, equal to the command line's (seed, data, trainer).
    let dir = temp_dir("cli-save");
    let mut args = short_fit(dir.to_str().unwrap());
    args.extend(["--data.batch_size=8".into(), "--seed_everything=1234".into()]);
    let built = run_cli(&LitCli::new(), &args)?;
    let saved = read_yaml(&dir.join("config.yaml"));
    assert_eq!(saved["seed_everything"], 1234);
    assert_eq!(saved["data"], built.config.value["data"]);
    assert_eq!(saved["trainer"], built.config.value["trainer"]);
    assert_eq!(saved["data"]["batch_size"], 8);
    // With the default logger it is the logger's run directory (Lightning's trainer.log_dir),
    // as test_cli_distributed_save_config_callback checks with a TensorBoardLogger.
    let dir = temp_dir("cli-save-logger");
    let root = dir.to_str().unwrap();
    let args: Vec<String> =
        ["fit", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", root]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let built = run_cli(&LitCli::new(), &args)?;
    assert_eq!(built.trainer.log_dir(), Some(dir.join("lightning_logs/version_0").as_path()));
    assert!(dir.join("lightning_logs/version_0/config.yaml").is_file());
    assert_eq!(std::fs::read_dir(dir.join("lightning_logs")).unwrap().count(), 1, "no other version directory");
    Ok(())
}

/// A logger that keeps no files (as MLflow's, whose run lives on a server): a name and a version
/// once its run has started, no directory.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Remote {
    #[serde(skip)]
    started: bool,
}

impl lit::loggers::Logger for Remote {
    fn name(&self) -> &str {
        if self.started { "experiment-7" } else { "" }
    }
    fn version(&self) -> String {
        if self.started { "run-42".into() } else { String::new() }
    }
    fn log_dir(&self) -> Option<&std::path::Path> {
        None
    }
    fn log_hyperparams(&mut self, _: &serde_json::Value) -> lit::Result<()> {
        self.started = true;
        Ok(())
    }
    fn log_metrics(&mut self, _: &std::collections::BTreeMap<String, f64>, _: usize) -> lit::Result<()> {
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_logger_without_a_directory_gets_the_configuration_next_to_its_checkpoints() -> lit::Result<()> {
    // Lightning's trainer.log_dir is None for such a logger (its SaveConfigCallback asserts);
    // lit saves where the checkpoints go: default_root_dir/<name>/<version>.
    let dir = temp_dir("cli-save-remote");
    let args = ["fit", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.logger=Remote"];
    let args = [&args[..], &["--trainer.default_root_dir", dir.to_str().unwrap()]].concat();
    let cli = LitCli::<Line, Points>::new().register_logger::<Remote>("Remote");
    let mut built = cli.instantiate(parse_with(&cli, &args)?)?;
    built.run()?;
    let run = dir.join("experiment-7/run-42");
    assert!(run.join("config.yaml").is_file());
    assert!(run.join("checkpoints").is_dir(), "the checkpoints' directory");
    Ok(())
}

#[test]
fn save_config_cases() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_save_config_cases and test_cli_config_overwrite.
    let dir = temp_dir("cli-save-cases");
    let root = dir.to_str().unwrap();
    let config = dir.join("config.yaml");
    // With fast_dev_run the configuration is not saved.
    let mut args = short_fit(root);
    args.push("--trainer.fast_dev_run=1".into());
    let built = run_cli(&LitCli::new(), &args)?;
    assert!(callbacks_of::<SaveConfigCallback>(&built.trainer).is_empty());
    assert!(!config.exists());
    // Without it, it is.
    run_cli(&LitCli::new(), &short_fit(root))?;
    assert!(config.is_file());
    // Run again in the same directory: refused, the earlier file kept.
    std::fs::write(&config, "# the first run's\n").unwrap();
    let message = run_cli(&LitCli::new(), &short_fit(root)).err().unwrap().to_string();
    assert!(message.contains(&format!("SaveConfigCallback expected {} to NOT exist", config.display())), "{message}");
    assert!(message.contains("Aborting to avoid overwriting results of a previous run"), "{message}");
    assert!(message.contains("LitCli::save_config_overwrite(true)"), "{message}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# the first run's\n");
    // Unless overwriting is asked for.
    run_cli(&LitCli::new().save_config_overwrite(true), &short_fit(root))?;
    assert_ne!(std::fs::read_to_string(&config).unwrap(), "# the first run's\n");
    // Or saving is off.
    run_cli(&LitCli::new().save_config(false), &short_fit(root))?;
    Ok(())
}

#[test]
fn save_config_only_once_and_under_its_filename() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_save_config_only_once and test_cli_config_filename.
    let dir = temp_dir("cli-save-once");
    let owned = short_fit(dir.to_str().unwrap());
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let cli = LitCli::new().save_config_filename("name.yaml");
    let mut built = cli.instantiate(parse_with(&cli, &args)?)?;
    let saver = callbacks_of::<SaveConfigCallback>(&built.trainer)[0];
    assert!(!saver.overwrites());
    assert!(!saver.already_saved());
    built.run()?;
    assert!(dir.join("name.yaml").is_file());
    assert!(!dir.join("config.yaml").exists());
    assert!(callbacks_of::<SaveConfigCallback>(&built.trainer)[0].already_saved());
    // A test with the same Trainer writes nothing again (and does not fail on the file).
    built.trainer.test_datamodule(&mut built.model, &mut built.datamodule)?;
    Ok(())
}

#[test]
fn seed_everything_true_saves_the_seed_it_picked() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_save_config_seed_everything.
    let dir = temp_dir("cli-save-seed");
    let mut args = short_fit(dir.to_str().unwrap());
    args.push("--seed_everything=true".into());
    let built = run_cli(&LitCli::new(), &args)?;
    let saved = read_yaml(&dir.join("config.yaml"));
    assert!(saved["seed_everything"].is_u64(), "{}", saved["seed_everything"]);
    assert_eq!(saved["seed_everything"], built.config.value["seed_everything"]);
    // `false`, and no seed at all, seed nothing.
    let c = parse(&["fit", "--seed_everything=false"])?;
    assert_eq!(cli().instantiate(c)?.config.value["seed_everything"], false);
    Ok(())
}

// ----- help, flags without values, links -----

#[test]
fn help_shows_every_option_with_its_doc_and_default() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_help: every Trainer option is a flag, next to
    // --print_config, --config and --seed_everything; lit's help also shows each field's doc
    // comment and default, for the Trainer, the model's hparams and the data configuration.
    let out = exit_text(&cli(), &["fit", "--help"])?;
    for flag in
        ["--print_config", "--config", "--seed_everything", "--ckpt_path", "--trainer.callbacks", "--trainer.logger"]
    {
        assert!(out.contains(flag), "{flag} missing from\n{out}");
    }
    let trainer = serde_json::to_value(lit::TrainerConfig::default()).unwrap();
    for key in trainer.as_object().unwrap().keys() {
        assert!(out.contains(&format!("--trainer.{key}")), "--trainer.{key} missing");
    }
    let squashed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "Stop after this many epochs (unset with `max_steps` unset: 1000). (default: null)",
        "(default: 50)",
        "(default: 32-true)",
        "The learning rate of SGD. (default: 0.05)",
        "Samples per batch. (default: 4)",
        "Known: ModelCheckpoint, EarlyStopping",
    ] {
        assert!(squashed.contains(line), "{line:?} missing from\n{out}");
    }
    // A class's init args.
    let out = exit_text(&cli(), &["fit", "--trainer.callbacks.help", "EarlyStopping"])?;
    assert!(out.contains("EarlyStopping (lightning.pytorch.callbacks.EarlyStopping)"), "{out}");
    assert!(out.contains("--trainer.callbacks.patience"), "{out}");
    assert!(out.contains("Checks without improvement before stopping. (default: 3)"), "{out}");
    assert!(out.contains("The logged metric to watch (required). (default: null)"), "{out}");
    assert!(!out.contains("error"), "{out}");
    // A link's target is not an option of its own (jsonargparse takes it out of the parser).
    let linked = cli().link("data.batch_size", "model.batch_size");
    let out = exit_text(&linked, &["fit", "--help"])?;
    assert!(out.contains("--model.lr") && !out.contains("--model.batch_size"), "{out}");
    Ok(())
}

#[test]
fn boolean_flags_may_be_given_without_a_value() -> lit::Result<()> {
    // `--trainer.fast_dev_run` alone is `true` (1 batch); jsonargparse asks for the value
    // (`--trainer.fast_dev_run=true`), which lit takes too.
    let c = parse(&["fit", "--trainer.fast_dev_run", "--trainer.enable_progress_bar", "false", "--trainer.benchmark"])?;
    let trainer = c.trainer()?;
    assert_eq!(trainer.fast_dev_run, 1);
    assert!(!trainer.enable_progress_bar);
    assert_eq!(trainer.benchmark, Some(true));
    let c = parse(&["fit", "--trainer.detect_anomaly", "--model.lr", "0.5"])?;
    assert!(c.trainer()?.detect_anomaly);
    assert_eq!(c.value["model"]["lr"], 0.5);
    // A flag that is not a boolean still needs its value.
    let Parsed::Exit(e) = cli().parse(["line", "fit", "--trainer.max_epochs"])? else { panic!("parsed") };
    assert!(e.to_string().contains("--trainer.max_epochs"), "{e}");
    Ok(())
}

#[test]
fn linked_arguments_on_parse_and_on_instantiate() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_link_arguments: data.batch_size → model.batch_size
    // when parsing, and the data module's num_classes (known once it is built) →
    // model.num_classes.
    let linked = || {
        cli().link("data.batch_size", "model.batch_size").link_on_instantiate(
            "data.num_classes",
            "model.num_classes",
            |dm: &Points| dm.num_classes,
        )
    };
    let c = parse_with(&linked(), &["fit", "--data.batch_size=12"])?;
    assert_eq!(c.value["model"]["batch_size"], 12);
    // Printed (and saved) configurations leave the targets out, so that they read back.
    let printed: serde_json::Value = serde_norway::from_str(&c.to_yaml()?).unwrap();
    assert!(printed["model"].get("batch_size").is_none(), "{printed}");
    assert!(printed["model"].get("num_classes").is_none(), "{printed}");
    let built = linked().instantiate(c)?;
    assert_eq!(built.model.cfg.batch_size, 12);
    assert_eq!(built.model.cfg.num_classes, 5);
    assert_eq!(built.model.hparams().num_classes, 5);
    // A target given by the user is an error, from a flag or a file.
    for args in [vec!["fit", "--model.batch_size=3"], vec!["fit", "--model.num_classes", "3"]] {
        let message = parse_with(&linked(), &args).unwrap_err().to_string();
        assert!(message.contains("Linked \"model.") && message.contains("must be given via \"data."), "{message}");
    }
    let dir = temp_dir("cli-links");
    let file = dir.join("c.yaml");
    std::fs::write(&file, "model:\n  batch_size: 3\n").unwrap();
    let message = parse_with(&linked(), &["fit", "--config", file.to_str().unwrap()]).unwrap_err().to_string();
    assert!(message.contains("Linked \"model.batch_size\" must be given via \"data.batch_size\"."), "{message}");
    // jsonargparse's checks of the links themselves.
    let message = parse_with(&linked().link("data.samples", "model.batch_size"), &["fit"]).unwrap_err().to_string();
    assert!(message.contains("Target \"model.batch_size\" is already a target of another link."), "{message}");
    let message = parse_with(&cli().link("data.batch_sz", "model.batch_size"), &["fit"]).unwrap_err().to_string();
    assert!(message.contains("`data.batch_sz` is not a key"), "{message}");
    Ok(())
}

#[test]
fn a_flag_given_twice_takes_its_last_value() -> lit::Result<()> {
    // argparse's `store` action, which jsonargparse's flags use: the last occurrence wins.
    let c = parse_with(&cli(), &["fit", "--trainer.max_epochs=1", "--model.lr", "0.2", "--trainer.max_epochs", "3"])?;
    assert_eq!(c.value["trainer"]["max_epochs"], 3);
    assert_eq!(c.value["model"]["lr"], 0.2);
    Ok(())
}

#[test]
fn files_and_flags_apply_in_the_order_given() -> lit::Result<()> {
    // jsonargparse's `--config` (ActionConfigFile) is parsed where it stands: a flag before it
    // is overridden by the file's value, a flag after it overrides the file.
    let dir = temp_dir("cli-order");
    let file = dir.join("c.yaml");
    std::fs::write(&file, "trainer:\n  max_epochs: 3\nmodel:\n  lr: 0.3\n").unwrap();
    let file = file.to_str().unwrap();
    let c = parse_with(&cli(), &["fit", "--trainer.max_epochs=5", "--config", file, "--model.lr=0.4"])?;
    assert_eq!((c.value["trainer"]["max_epochs"].clone(), c.value["model"]["lr"].clone()), (3.into(), 0.4.into()));
    let c = parse_with(&cli(), &["fit", "--config", file, "--trainer.max_epochs", "5"])?;
    assert_eq!(c.value["trainer"]["max_epochs"], 5);
    // Two files: the later one wins, and a flag between them yields to the second.
    let second = dir.join("d.yaml");
    std::fs::write(&second, "trainer:\n  max_epochs: 7\n").unwrap();
    let second = second.to_str().unwrap();
    let c = parse_with(&cli(), &["fit", "-c", file, "--trainer.max_epochs=5", "--config", second])?;
    assert_eq!(c.value["trainer"]["max_epochs"], 7);
    Ok(())
}

// ----- optimizer and lr_scheduler -----

/// `fit` of the test command line with `extra` flags (one epoch, no logger, no bar) in `dir`.
fn fit_with(dir: &std::path::Path, extra: &[&str]) -> lit::Result<lit::cli::Cli<Line, Points>> {
    let mut args = short_fit(dir.to_str().unwrap());
    args.push("--trainer.enable_checkpointing=false".into());
    args.extend(extra.iter().map(|a| a.to_string()));
    run_cli(&cli(), &args)
}

/// The Line module trained one epoch over Points by a Trainer given `optimizers` directly.
fn reference_fit(optimizers: impl Fn() -> Optimizers + 'static, epochs: usize) -> lit::Result<(Line, Trainer)> {
    let mut model = Line::new(ModelConfig::default());
    let mut trainer = crate::common::quiet_trainer(&temp_dir("cli-optimizer-reference"))
        .max_epochs(epochs)
        .configure_optimizers(move |_cx| Ok(optimizers()))
        .build()?;
    trainer.fit_datamodule(&mut model, &mut Points::from_config(DataConfig::default())?)?;
    Ok((model, trainer))
}

#[test]
fn the_optimizer_key_replaces_the_module_s_configure_optimizers() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_optimizer (run=True) and
    // test_cli_no_need_configure_optimizers: `--optimizer=Adam` trains with Adam (torch's
    // defaults) in place of the module's SGD, says that the module's `configure_optimizers` is
    // overridden, and adds no scheduler.
    let dir = temp_dir("cli-optimizer");
    let (built, logs) = crate::common::capture_logs(|| fit_with(&dir, &["--optimizer=Adam"]));
    let built = built?;
    assert!(logs.contains("`Line.configure_optimizers` will be overridden by `LitCli.configure_optimizers`"), "{logs}");
    let optimizers = built.trainer.optimizers();
    assert_eq!(optimizers.len(), 1);
    assert_eq!(optimizers[0].name(), "Adam");
    assert_eq!(optimizers[0].lr(), 1e-3, "torch's default learning rate");
    let (reference, _) = reference_fit(|| Adam::new(1e-3).into(), 1)?;
    assert!(
        built.model.fc.ws.equal(&reference.fc.ws)
            && built.model.fc.bs.as_ref().unwrap().equal(reference.fc.bs.as_ref().unwrap())
    );
    // The printed configuration spells the class out with torch's path and every init arg.
    assert_eq!(built.config.value["optimizer"]["class_path"], "torch.optim.Adam");
    assert_eq!(built.config.value["optimizer"]["init_args"]["betas"], serde_json::json!([0.9, 0.999]));
    assert_eq!(built.config.value["lr_scheduler"], serde_json::Value::Null);

    // SGD at the module's own rate is the module's own optimizer: the same weights as without
    // the key.
    let sgd = fit_with(&temp_dir("cli-optimizer-sgd"), &["--optimizer", "SGD", "--optimizer.lr", "0.05"])?;
    let own = fit_with(&temp_dir("cli-optimizer-own"), &[])?;
    assert_eq!(sgd.trainer.optimizers()[0].name(), "SGD");
    assert!(sgd.model.fc.ws.equal(&own.model.fc.ws));
    assert!(!sgd.model.fc.ws.equal(&built.model.fc.ws));
    Ok(())
}

#[test]
fn the_lr_scheduler_key_steps_the_configured_optimizer_every_epoch() -> lit::Result<()> {
    // Ports test_cli.py::test_lightning_cli_optimizer_and_lr_scheduler and
    // test_lightning_cli_optimizer_and_lr_scheduler_subclasses: an optimizer and a scheduler
    // from flags (`--lr_scheduler.gamma=0.8`) or JSON `class_path`/`init_args` values; LightningCLI
    // returns `[optimizer], [lr_scheduler]`, a scheduler stepped every epoch.
    let dir = temp_dir("cli-scheduler");
    let built = fit_with(
        &dir,
        &["--trainer.max_epochs=3", "--optimizer=Adam", "--lr_scheduler=ExponentialLR", "--lr_scheduler.gamma=0.8"],
    )?;
    assert_eq!(built.trainer.optimizers()[0].name(), "Adam");
    let lr = built.trainer.optimizers()[0].lr();
    assert!((lr - 1e-3 * 0.8f64.powi(3)).abs() < 1e-15, "{lr}");
    let (reference, _) =
        reference_fit(|| Optimizers::from(Adam::new(1e-3)).scheduler(lit::optim::ExponentialLr::new(0.8)), 3)?;
    assert!(built.model.fc.ws.equal(&reference.fc.ws));

    let optimizer = r#"--optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}"#;
    let scheduler =
        r#"--lr_scheduler={"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2}}"#;
    let built = fit_with(&temp_dir("cli-scheduler-json"), &["--trainer.max_epochs=3", optimizer, scheduler])?;
    assert_eq!(built.config.value["lr_scheduler"]["init_args"], serde_json::json!({"step_size": 2, "gamma": 0.1}));
    assert!((built.trainer.optimizers()[0].lr() - 0.001).abs() < 1e-15, "stepped down once, after epoch 2");

    // Lightning's ReduceLROnPlateau, which watches `monitor`.
    let built = fit_with(
        &temp_dir("cli-plateau"),
        &[
            "--trainer.max_epochs=4",
            "--optimizer=SGD",
            "--optimizer.lr=0.05",
            "--lr_scheduler=ReduceLROnPlateau",
            "--lr_scheduler.monitor=val_loss",
            "--lr_scheduler.patience=0",
            "--lr_scheduler.threshold=10",
        ],
    )?;
    // No loss is 10 times better than the best (a relative threshold of 10): the rate drops
    // tenfold after each epoch but the first.
    let lr = built.trainer.optimizers()[0].lr();
    assert!((lr - 0.05 * 1e-3).abs() < 1e-12, "{lr}");
    Ok(())
}

#[test]
fn optimizer_and_lr_scheduler_mistakes_are_errors_naming_them() -> lit::Result<()> {
    let message = |args: &[&str]| {
        let mut all = vec!["fit"];
        all.extend(args);
        match parse_with(&cli(), &all).and_then(|c| cli().instantiate(c)) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    let m = message(&["--optimizer=Adamm"]);
    assert!(m.contains("unknown optimizer class `Adamm`; did you mean `Adam`?"), "{m}");
    let m = message(&["--optimizer=Adam", "--optimizer.momentum=0.9"]);
    assert!(m.contains("Adam has no init arg `momentum`"), "{m}");
    let m = message(&["--optimizer=SGD", "--optimizer.nesterov=true"]);
    assert!(m.contains("Nesterov momentum requires a momentum and zero dampening"), "{m}");
    let m = message(&["--optimizer=Adam", "--lr_scheduler=StepLR"]);
    assert!(m.contains("StepLR: the init arg `step_size` is required"), "{m}");
    let m = message(&["--optimizer=Adam", "--lr_scheduler=ReduceLROnPlateau"]);
    assert!(m.contains("ReduceLROnPlateau: the init arg `monitor` is required"), "{m}");
    let m = message(&["--optimizer.lr=0.1"]);
    assert!(m.contains("write `--optimizer=CLASS`"), "{m}");
    let m = message(&["--optimizer+=Adam", "--optimizer+=SGD"]);
    assert!(m.contains("name one class each"), "{m}");
    // A scheduler without an optimizer is not used (as in LightningCLI), with a warning.
    let (built, logs) = crate::common::capture_logs(|| {
        fit_with(&temp_dir("cli-scheduler-alone"), &["--lr_scheduler=ExponentialLR", "--lr_scheduler.gamma=0.5"])
    });
    assert!(logs.contains("`lr_scheduler` is configured but `optimizer` is not"), "{logs}");
    assert_eq!(built?.trainer.optimizers()[0].lr(), 0.05, "the module's SGD, unscheduled");
    // `--optimizer.help` lists torch's init args and defaults.
    let help = exit_text(&cli(), &["fit", "--optimizer.help", "SGD"])?;
    assert!(help.contains("--optimizer.nesterov") && help.contains("(default: 0.001)"), "{help}");
    Ok(())
}

/// The README's recipe for argument links (its `Cnn` and `MnistData` are `Line` and `Points`).
#[test]
fn readme_argument_links() -> lit::Result<()> {
    type Cnn = Line;
    type MnistData = Points;
    // --- from the README ---
    let cli = lit::cli::LitCli::<Cnn, MnistData>::new()
        .link("data.batch_size", "model.batch_size") // when parsing
        .link_on_instantiate("data.num_classes", "model.num_classes", |dm: &MnistData| dm.num_classes);
    // --- end ---
    let Some(built) = cli.save_config(false).build(["line", "fit", "--data.batch_size=12"])? else {
        panic!("no --print_config was given")
    };
    assert_eq!(built.model.cfg.batch_size, 12);
    assert_eq!(built.model.cfg.num_classes, 5);
    Ok(())
}

// ----- the CNN example -----

/// Runs `cnn fit --config examples/cnn.yaml ARGS` in `dir`, as a user would.
fn cnn_example(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let yaml = repo_root().join("examples/cnn.yaml");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cnn_example"));
    c.args(["fit", "--config", yaml.to_str().unwrap(), "--trainer.enable_progress_bar=false"]).args(args);
    for var in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
        c.env_remove(var);
    }
    c.current_dir(dir).output().expect("run the cnn example")
}

#[test]
fn the_cnn_example_trains_from_its_yaml() {
    // examples/cnn.yaml's callbacks and logger, flags over it, the saved configuration, the
    // link from the data module, metric objects and the best checkpoint's test.
    let dir = temp_dir("cli-cnn-example");
    let out = cnn_example(&dir, &["--trainer.logger.save_dir", dir.to_str().unwrap(), "--trainer.log_every_n_steps=5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let value = |key: &str| -> f64 {
        let line =
            stdout.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap_or_else(|| panic!("{stdout}"));
        line.parse().unwrap()
    };
    // 80 steps of 64 images: a CNN is well past chance (0.1) on MNIST.
    assert!(value("test_acc") > 0.8, "{stdout}");
    assert!(value("test_f1") > 0.8, "{stdout}");
    let run = dir.join("cnn/version_0");
    let saved = read_yaml(&run.join("config.yaml"));
    assert_eq!(saved["trainer"]["log_every_n_steps"], 5, "flags over the file");
    assert_eq!(saved["trainer"]["limit_train_batches"], 40, "the file over the defaults");
    assert_eq!(saved["trainer"]["callbacks"][1]["class_path"], "lightning.pytorch.callbacks.EarlyStopping");
    assert!(saved["model"].get("num_classes").is_none(), "a link's target is left out");
    let best = stdout.lines().find_map(|l| l.strip_prefix("best checkpoint: ")).expect("the best checkpoint");
    assert!(best.starts_with(run.join("checkpoints/epoch=").to_str().unwrap()), "{best}");
    assert!(run.join("checkpoints/last.ckpt").is_file());
    let events = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents"));
    assert!(events, "the TensorBoardLogger of the yaml wrote");
}

#[test]
fn swa_finetuning_and_the_progress_bar_take_lightnings_init_args() -> lit::Result<()> {
    use lit::callbacks::{StochasticWeightAveraging, SwaEpochStart};
    let args = [
        "fit",
        "--trainer.callbacks+=StochasticWeightAveraging",
        "--trainer.callbacks.swa_lrs=[0.05, 0.01]",
        "--trainer.callbacks.swa_epoch_start=2",
        "--trainer.callbacks.annealing_strategy=linear",
    ];
    let c = parse(&args)?;
    let init = &c.value["trainer"]["callbacks"][0]["init_args"];
    assert_eq!(init["annealing_epochs"], 10, "Lightning's default");
    assert_eq!(init["device"], "cpu");
    let built = cli().instantiate(c)?;
    let swa = callbacks_of::<StochasticWeightAveraging>(&built.trainer)[0];
    assert_eq!(swa.swa_lrs(), [0.05, 0.01]);
    assert_eq!(swa.start(), SwaEpochStart::Epoch(2));
    assert_eq!(swa.strategy(), lit::optim::AnnealStrategy::Linear);
    // BackboneFinetuning's init args (lit's also names the backbone's VarStore path).
    let c =
        parse(&["fit", "--trainer.callbacks=BackboneFinetuning", "--trainer.callbacks.unfreeze_backbone_at_epoch=2"])?;
    let init = &c.value["trainer"]["callbacks"]["init_args"];
    assert_eq!(
        (init["unfreeze_backbone_at_epoch"].as_u64(), init["backbone_initial_ratio_lr"].as_f64()),
        (Some(2), Some(0.1))
    );
    assert_eq!(init["backbone"], "backbone");
    let built = cli().instantiate(c)?;
    assert_eq!(callbacks_of::<lit::callbacks::BackboneFinetuning>(&built.trainer).len(), 1);
    // The progress bar, by Lightning's name or lit's.
    for name in ["TQDMProgressBar", "TqdmProgressBar"] {
        let c = parse(&["fit", &format!("--trainer.callbacks={name}"), "--trainer.callbacks.refresh_rate=10"])?;
        assert_eq!(c.value["trainer"]["callbacks"]["class_path"], "lightning.pytorch.callbacks.TQDMProgressBar");
        assert_eq!(
            c.value["trainer"]["callbacks"]["init_args"],
            serde_json::json!({"refresh_rate": 10, "process_position": 0, "leave": false})
        );
        let built = cli().instantiate(c)?;
        assert_eq!(callbacks_of::<lit::callbacks::TqdmProgressBar>(&built.trainer).len(), 1);
    }
    // Lightning's checks, at build: a start of 0 is neither an epoch nor a fraction.
    let c = parse(&[
        "fit",
        "--trainer.callbacks=StochasticWeightAveraging",
        "--trainer.callbacks.swa_lrs=0.1",
        "--trainer.callbacks.swa_epoch_start=0",
    ])?;
    let message = cli().instantiate(c).err().unwrap().to_string();
    assert!(message.contains("swa_epoch_start should be a >0 integer or a float between 0 and 1"), "{message}");
    Ok(())
}

#[test]
fn the_configuration_is_saved_once_by_rank_zero_under_ddp() {
    // Ports test_cli.py::test_cli_distributed_save_config_callback: two processes, one
    // config.yaml and one version directory; and a second run in the same place stops on every
    // process (rank 0 tells the others what it found), instead of leaving one waiting.
    if !lit::dist::ProcessGroup::available() {
        eprintln!("skipped: lit was built without torch.distributed");
        return;
    }
    let dir = temp_dir("cli-cnn-ddp");
    let root = dir.to_str().unwrap();
    let ddp = [
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.max_epochs=1",
    ];
    let with_logger = [&ddp[..], &["--trainer.logger.save_dir", root]].concat();
    let out = cnn_example(&dir, &with_logger);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let versions: Vec<_> = std::fs::read_dir(dir.join("cnn")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(versions, ["version_0"]);
    assert!(dir.join("cnn/version_0/config.yaml").is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("test_acc: ").count(), 1, "rank 0 reports: {stdout}");

    let no_logger = [&ddp[..], &["--trainer.logger=false", "--trainer.default_root_dir", root]].concat();
    assert!(cnn_example(&dir, &no_logger).status.success());
    assert!(dir.join("config.yaml").is_file());
    let again = cnn_example(&dir, &no_logger);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("Aborting to avoid overwriting results of a previous run"), "{stderr}");
    assert!(stderr.contains("rank 1 exited with exit status: 1"), "rank 1 stopped too: {stderr}");
}

#[test]
fn a_learning_rate_finder_among_the_callbacks_tunes_lr_before_fit() -> lit::Result<()> {
    // Lightning 2.6 configures a range test as the `LearningRateFinder` callback in
    // trainer.callbacks (init args min_lr, max_lr, num_training_steps, mode,
    // early_stop_threshold, update_attr, attr_name); lit's command line runs Tuner::lr_find with
    // them before `fit`, which then trains at the suggestion.
    let dir = temp_dir("cli-lr-find");
    let mut args = vec![
        "fit",
        "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateFinder",
        "--trainer.callbacks.num_training_steps=20",
        "--trainer.callbacks.max_lr=0.1",
        "--trainer.callbacks.early_stop_threshold=null",
        "--trainer.max_epochs=3",
        "--trainer.default_root_dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(QUIET);
    let c = parse(&args)?;
    assert_eq!(c.value["trainer"]["callbacks"][0]["init_args"]["mode"], "exponential", "Lightning's default");
    let mut built = cli().instantiate(c)?;
    assert_eq!(built.model.cfg.lr, 0.05);
    built.run()?;
    let finder = built.lr_finder.as_ref().expect("the range test ran");
    assert_eq!(finder.results.lr.len(), 20);
    assert_eq!((finder.results.lr[0], finder.max_lr), (1e-8, 0.1));
    let suggestion = finder.suggestion().expect("a suggestion");
    assert_eq!(built.model.cfg.lr, suggestion, "update_attr set the module's `lr`");
    assert_eq!(built.trainer.global_step(), 24, "then fit trained its 3 epochs of 8 batches");
    Ok(())
}
