//! The Autoencoder of Lightning's introduction: an encoder and a decoder trained with one
//! `shared_step` for training and validation. Prints the reconstruction loss before and after
//! training and saves `autoencoder.png`: inputs (top rows) over their reconstructions.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin autoencoder [-- DATA_DIR]
//! ```

use lit::data::{DataLoader, Mnist, TensorDataset};
use lit::image::{make_grid, save_png};
use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(default = 3)]
    pub latent: i64,
    #[hparams(default = 1e-3)]
    pub lr: f64,
}

#[lightning_module]
pub struct Autoencoder {
    vs: nn::VarStore,
    encoder: nn::Sequential,
    decoder: nn::Sequential,
    #[hparams]
    cfg: Config,
}

type Batch = (Tensor, Tensor);

#[lightning_module]
impl Autoencoder {
    fn new(cfg: Config) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let (e, d) = (vs.root() / "encoder", vs.root() / "decoder");
        let encoder = nn::seq()
            .add(nn::linear(&e / "0", 784, 128, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&e / "2", 128, cfg.latent, Default::default()));
        let decoder = nn::seq()
            .add(nn::linear(&d / "0", cfg.latent, 128, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&d / "2", 128, 784, Default::default()));
        Autoencoder { vs, encoder, decoder, cfg }
    }

    /// The embedding, as Lightning's example uses `forward` for inference.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.encoder.forward(x)
    }

    fn reconstruct(&self, x: &Tensor) -> Tensor {
        self.decoder.forward(&self.forward(x))
    }

    /// The step training and validation share: reconstruction loss of one batch.
    fn shared_step(&self, (x, _): Batch) -> Tensor {
        self.reconstruct(&x).mse_loss(&x, lit::tch::Reduction::Mean)
    }

    fn training_step(&mut self, batch: Batch, cx: &mut Ctx) -> Tensor {
        let loss = self.shared_step(batch);
        cx.log("train_loss", &loss).prog_bar(true);
        loss
    }

    fn validation_step(&mut self, batch: Batch, cx: &mut Ctx) {
        cx.log("val_loss", self.shared_step(batch)).prog_bar(true);
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(self.cfg.lr).into()
    }
}

fn main() -> lit::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into());
    seed_everything(1);
    // Pixels in [0, 1] so that reconstructions are images.
    let (mean, std) = lit::data::MNIST_MEAN_STD;
    let unnormalise = |m: Mnist| (m.images * std + mean, m.labels);
    let (train_x, train_y) = unnormalise(Mnist::train(&dir)?);
    let (test_x, test_y) = unnormalise(Mnist::test(&dir)?);
    let train = TensorDataset::new((train_x.narrow(0, 0, 20_000), train_y.narrow(0, 0, 20_000)))?;
    let val = TensorDataset::new((test_x.narrow(0, 0, 2_000), test_y.narrow(0, 0, 2_000)))?;

    let mut model = Autoencoder::new(Config::default());
    let probe = test_x.narrow(0, 0, 8);
    let before =
        lit::tch::no_grad(|| model.reconstruct(&probe).mse_loss(&probe, lit::tch::Reduction::Mean).double_value(&[]));
    let mut trainer = Trainer::builder().max_epochs(3).accelerator("cpu").build()?;
    trainer.fit(
        &mut model,
        DataLoader::new(train).batch_size(64).shuffle(true),
        DataLoader::new(val).batch_size(500),
    )?;
    let val_loss = trainer.callback_metrics()["val_loss"];
    let after =
        lit::tch::no_grad(|| model.reconstruct(&probe).mse_loss(&probe, lit::tch::Reduction::Mean).double_value(&[]));
    println!(
        "reconstruction loss of 8 test digits: {before:.4} before training, {after:.4} after; val_loss {val_loss:.4}"
    );

    let recon = lit::tch::no_grad(|| model.reconstruct(&probe)).clamp(0.0, 1.0);
    let images = Tensor::cat(&[probe.view([8, 1, 28, 28]), recon.view([8, 1, 28, 28])], 0);
    save_png(&make_grid(&images, 8, 2)?, "autoencoder.png")?;
    println!("saved autoencoder.png: inputs (top) and reconstructions (bottom)");
    if after >= before * 0.8 {
        return Err(lit::Error::msg(format!("the reconstruction loss did not fall enough: {before:.4} -> {after:.4}")));
    }
    Ok(())
}
