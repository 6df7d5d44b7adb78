//! Exact resume with dropout: trains 2 epochs straight, then again interrupted after 11 steps,
//! saved and resumed, and prints whether the final weights are bitwise equal. Dropout draws from
//! libtorch's generator, so this holds only if checkpoints restore its state. Runs in its own
//! process because the generator is global. `dropout_resume DIR`.

use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

#[lightning_module]
struct Net {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
}

#[lightning_module]
impl Net {
    fn build() -> Self {
        seed_everything(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 6, 16, Default::default());
        let l2 = nn::linear(vs.root() / "l2", 16, 2, Default::default());
        Net { vs, l1, l2 }
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let hidden = self.l1.forward(&x).relu().dropout(0.3, cx.training());
        self.l2.forward(&hidden).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(1e-2).into()
    }
}

fn data() -> DataLoader<TensorDataset<(Tensor, Tensor)>> {
    let x = Tensor::arange(64 * 6, (Kind::Float, Device::Cpu)).view([64, 6]).sin();
    let y = Tensor::arange(64 * 2, (Kind::Float, Device::Cpu)).view([64, 2]).cos();
    DataLoader::new(TensorDataset::new((x, y)).expect("same rows")).batch_size(8).shuffle(true).seed(9)
}

fn weights(net: &Net) -> Vec<Tensor> {
    let mut vars: Vec<(String, Tensor)> = net.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().map(|(_, t)| t).collect()
}

fn main() -> lit::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let quiet = || {
        Trainer::builder()
            .accelerator("cpu")
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .enable_checkpointing(false)
            .logger(false)
            .default_root_dir(&dir)
    };
    let mut straight = Net::build();
    quiet().max_epochs(2).build()?.fit(&mut straight, data(), ())?;

    let mut first = Net::build();
    let mut trainer = quiet().max_epochs(2).max_steps(11).build()?;
    trainer.fit(&mut first, data(), ())?;
    let path = dir.join("interrupted.ckpt");
    trainer.save_checkpoint(&path, &mut first)?;
    // Drawing random numbers in between moves the generator on; the checkpoint must undo it.
    let _ = Tensor::randn([1000], (Kind::Float, Device::Cpu));
    let mut resumed = Net::build();
    quiet().max_epochs(2).build()?.fit_from_checkpoint(&mut resumed, data(), (), &path)?;

    let equal = weights(&straight).iter().zip(weights(&resumed)).all(|(a, b)| a.equal(&b));
    println!("resumed weights equal the uninterrupted run's: {equal}");
    Ok(())
}
