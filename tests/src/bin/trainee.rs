//! A training process for the fault tests: `trainee train DIR` trains until stopped, writing a
//! checkpoint every step; `trainee resume CKPT DIR STEPS` continues from a checkpoint for STEPS
//! more steps. Ctrl-C makes `train` save `interrupted.ckpt` and exit with code 130.

use lit::callbacks::ModelCheckpoint;
use lit::checkpoint::Checkpoint;
use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

#[hparams]
pub struct Config {
    pub hidden: i64,
}

#[lightning_module]
struct Trainee {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    #[hparams]
    cfg: Config,
}

#[lightning_module]
impl Trainee {
    fn new(cfg: Config) -> Self {
        seed_everything(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 8, cfg.hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 1, Default::default());
        Trainee { vs, l1, l2, cfg }
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.l2.forward(&self.l1.forward(&x).relu()).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(1e-3).into()
    }
}

fn data() -> DataLoader<TensorDataset<(Tensor, Tensor)>> {
    let x = Tensor::arange(256 * 8, (Kind::Float, Device::Cpu)).view([256, 8]).sin();
    let y = x.sum_dim_intlist(-1, true, Kind::Float).cos();
    DataLoader::new(TensorDataset::new((x, y)).expect("same rows")).batch_size(16).shuffle(true).seed(2)
}

fn run() -> lit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quiet =
        || Trainer::builder().accelerator("cpu").enable_progress_bar(false).enable_model_summary(false).logger(false);
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["train", dir] => {
            let checkpoints = ModelCheckpoint::new()
                .dirpath(format!("{dir}/ckpts"))
                .every_n_train_steps(1)
                .monitor("step")
                .mode(lit::callbacks::Mode::Max)
                .save_top_k(2)
                .save_last(true);
            let mut trainer = quiet().default_root_dir(dir).max_epochs(100_000).callback(checkpoints).build()?;
            trainer.fit(&mut Trainee::new(Config { hidden: 32 }), data(), ())
        }
        ["resume", ckpt, dir, steps] => {
            let start = Checkpoint::load(ckpt)?.meta.global_step;
            let steps: usize = steps.parse().map_err(|_| lit::Error::msg("STEPS is a number"))?;
            let mut trainer =
                quiet().default_root_dir(dir).enable_checkpointing(false).max_steps(start + steps).build()?;
            let mut model = Trainee::load_from_checkpoint(ckpt)?;
            trainer.fit_from_checkpoint(&mut model, data(), (), ckpt)?;
            println!("resumed at step {start}, now at step {}", trainer.global_step());
            Ok(())
        }
        ["fit-then-wait", dir] => {
            // A short fit, then work after it: Ctrl-C must act as it did before `fit`.
            let mut trainer = quiet().default_root_dir(dir).enable_checkpointing(false).max_steps(3).build()?;
            trainer.fit(&mut Trainee::new(Config { hidden: 4 }), data(), ())?;
            std::fs::write(format!("{dir}/fit-done"), b"").map_err(lit::Error::msg)?;
            std::thread::sleep(std::time::Duration::from_secs(20));
            println!("still running after Ctrl-C");
            Ok(())
        }
        ["nan-loss", dir] => {
            // Inputs with NaN from the third batch on: no policy set, no subscriber installed.
            let x = Tensor::ones([64, 8], (Kind::Float, Device::Cpu));
            let _ = x.narrow(0, 32, 32).fill_(f64::NAN);
            let y = Tensor::zeros([64, 1], (Kind::Float, Device::Cpu));
            let loader = DataLoader::new(TensorDataset::new((x, y))?).batch_size(16);
            let mut trainer = quiet().default_root_dir(dir).enable_checkpointing(false).max_epochs(2).build()?;
            trainer.fit(&mut Trainee::new(Config { hidden: 4 }), loader, ())
        }
        ["nothing", dir, what] => {
            let mut trainer = quiet().default_root_dir(dir).enable_checkpointing(false);
            let loader = match what {
                "max-epochs-0" => {
                    trainer = trainer.max_epochs(0);
                    data()
                }
                _ => {
                    let empty = Tensor::zeros([0, 8], (Kind::Float, Device::Cpu));
                    DataLoader::new(TensorDataset::new((empty.shallow_clone(), empty.narrow(1, 0, 1)))?)
                }
            };
            trainer.build()?.fit(&mut Trainee::new(Config { hidden: 4 }), loader, ())
        }
        ["ddp", dir, join_secs] => {
            // Two processes from the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
            let join: u64 = join_secs.parse().map_err(|_| lit::Error::msg("JOIN_SECS is a number"))?;
            let mut trainer = quiet()
                .default_root_dir(dir)
                .enable_checkpointing(false)
                .strategy("ddp")
                .devices(2)
                .ddp_join_timeout_secs(join)
                .max_steps(2)
                .build()?;
            trainer.fit(&mut Trainee::new(Config { hidden: 4 }), data(), ())
        }
        _ => Err(lit::Error::msg(
            "usage: trainee train DIR | resume CKPT DIR STEPS | fit-then-wait DIR | nan-loss DIR | nothing DIR WHAT",
        )),
    }
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(lit::Error::Interrupted { checkpoint }) => {
            println!("interrupted: {}", checkpoint.map(|p| p.display().to_string()).unwrap_or_default());
            std::process::exit(130);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
