//! The command line: flags and config files merge over the defaults, mistakes name the key, and
//! `--print_config` gives a file that reproduces the run.

use lit::cli::{FromConfig, LitCli, Outcome, Parsed, Subcommand};
use lit::data::{BoxLoader, DataLoader, DataModule, TensorDataset};
use lit::prelude::*;

use crate::common::temp_dir;

type Pair = (Tensor, Tensor);

#[hparams]
struct ModelConfig {
    #[hparams(default = 0.05)]
    lr: f64,
    #[hparams(default = 0.1)]
    init: f64,
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
    #[hparams(default = 4)]
    batch_size: usize,
    #[hparams(default = 32)]
    samples: i64,
}

struct Points {
    cfg: DataConfig,
}

impl FromConfig for Points {
    type Config = DataConfig;
    fn from_config(cfg: DataConfig) -> lit::Result<Self> {
        Ok(Points { cfg })
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

fn parse(args: &[&str]) -> lit::Result<lit::cli::CliConfig> {
    let cli = LitCli::new();
    match cli.parse::<Line, Points>(std::iter::once("line").chain(args.iter().copied()))? {
        Parsed::Config(c) => Ok(c),
        Parsed::Exit(e) => panic!("unexpected exit: {e}"),
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
    let mut cli = config.instantiate::<Line, Points>()?;
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
    let message = c.instantiate::<Line, Points>().err().unwrap().to_string();
    assert!(message.contains("`trainer.max_epochs`: invalid type: string \"three\""), "{message}");

    let missing = dir.join("missing.yaml");
    let message = parse(&["fit", "--config", missing.to_str().unwrap()]).unwrap_err().to_string();
    assert!(message.contains("missing.yaml"), "{message}");

    // An unknown flag is clap's usage error, with a suggestion.
    let parsed = LitCli::new().parse::<Line, Points>(["line", "fit", "--model.learning_rate", "1"])?;
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
    let mut cli = parse(&args)?.instantiate::<Line, Points>()?;
    let Outcome::Metrics(metrics) = cli.run()? else { panic!("test returns metrics") };
    assert!(metrics[0]["test_loss"] > 0.0);
    let mut args = vec!["predict", "--data.batch_size", "16"];
    args.extend_from_slice(QUIET);
    let mut cli = parse(&args)?.instantiate::<Line, Points>()?;
    let Outcome::Predictions(p) = cli.run()? else { panic!("predict returns predictions") };
    assert_eq!(p.len(), 2);
    Ok(())
}
