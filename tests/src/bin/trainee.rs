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
        _ => Err(lit::Error::msg("usage: trainee train DIR | trainee resume CKPT DIR STEPS")),
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
