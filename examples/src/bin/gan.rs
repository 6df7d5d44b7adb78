//! A GAN on MNIST with manual optimization, as Lightning's GAN example: a generator and a
//! discriminator, each with its own optimizer, stepped by hand in `training_step`. Both losses
//! are logged; after training, 64 generated digits are saved to `gan.png`.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin gan [-- DATA_DIR]
//! ```

use lit::data::{DataLoader, Mnist, TensorDataset};
use lit::image::{make_grid, save_png};
use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(default = 64)]
    pub latent: i64,
    #[hparams(default = 2e-4)]
    pub lr: f64,
}

#[lightning_module]
pub struct Gan {
    vs: nn::VarStore,
    generator: nn::Sequential,
    discriminator: nn::Sequential,
    #[hparams]
    cfg: Config,
}

#[lightning_module(automatic_optimization = false)]
impl Gan {
    fn new(cfg: Config) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let (g, d) = (vs.root() / "generator", vs.root() / "discriminator");
        let generator = nn::seq()
            .add(nn::linear(&g / "0", cfg.latent, 256, Default::default()))
            .add_fn(|x| x.leaky_relu())
            .add(nn::linear(&g / "2", 256, 512, Default::default()))
            .add_fn(|x| x.leaky_relu())
            .add(nn::linear(&g / "4", 512, 784, Default::default()))
            .add_fn(|x| x.tanh());
        let discriminator = nn::seq()
            .add(nn::linear(&d / "0", 784, 512, Default::default()))
            .add_fn(|x| x.leaky_relu())
            .add(nn::linear(&d / "2", 512, 256, Default::default()))
            .add_fn(|x| x.leaky_relu())
            .add(nn::linear(&d / "4", 256, 1, Default::default()));
        Gan { vs, generator, discriminator, cfg }
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        self.generator.forward(z)
    }

    fn bce(logits: &Tensor, real: bool) -> Tensor {
        let target = if real { logits.ones_like() } else { logits.zeros_like() };
        logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, lit::tch::Reduction::Mean)
    }

    fn training_step(&mut self, (real, _): (Tensor, Tensor), cx: &mut Ctx) -> lit::Result<()> {
        // The spec's `opt_a, opt_b = self.optimizers()`.
        let [opt_g, opt_d] = cx.optimizers()?;
        let z = Tensor::randn([real.size()[0], self.cfg.latent], (Kind::Float, cx.device()));

        // Generator: make the discriminator call generated digits real. Only the generator's
        // parameters need gradients meanwhile (Lightning's `toggle_optimizer`).
        cx.toggle_optimizer(opt_g);
        let fake = self.forward(&z);
        let g_loss = Self::bce(&self.discriminator.forward(&fake), true);
        opt_g.zero_grad(cx);
        cx.manual_backward(&g_loss)?;
        opt_g.step(cx)?;
        cx.untoggle_optimizer(opt_g);

        // Discriminator: tell real digits from (detached) generated ones.
        cx.toggle_optimizer(opt_d);
        let real_loss = Self::bce(&self.discriminator.forward(&real), true);
        let fake_loss = Self::bce(&self.discriminator.forward(&fake.detach()), false);
        let d_loss = (real_loss + fake_loss) / 2.0;
        opt_d.zero_grad(cx);
        cx.manual_backward(&d_loss)?;
        opt_d.step(cx)?;
        cx.untoggle_optimizer(opt_d);

        cx.log("g_loss", &g_loss).prog_bar(true);
        cx.log("d_loss", &d_loss).prog_bar(true);
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        let adam = Adam::new(self.cfg.lr).betas(0.5, 0.999);
        Optimizers::none()
            .with(adam.clone().params(|n| n.starts_with("generator.")))
            .with(adam.params(|n| n.starts_with("discriminator.")))
    }
}

fn main() -> lit::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist").into());
    seed_everything(3);
    // Pixels in [-1, 1], the generator's tanh range.
    let (mean, std) = lit::data::MNIST_MEAN_STD;
    let train = Mnist::train(&dir)?;
    let images = ((train.images * std + mean) * 2.0 - 1.0).narrow(0, 0, 30_000);
    let data = TensorDataset::new((images, train.labels.narrow(0, 0, 30_000)))?;

    let mut model = Gan::new(Config::default());
    let mut trainer = Trainer::builder().max_epochs(4).accelerator("cpu").build()?;
    trainer.fit(&mut model, DataLoader::new(data).batch_size(128).shuffle(true).drop_last(true), ())?;
    let m = trainer.callback_metrics();
    println!("after {} steps: g_loss {:.3}, d_loss {:.3}", trainer.global_step(), m["g_loss"], m["d_loss"]);

    let z = Tensor::randn([64, model.cfg.latent], (Kind::Float, Device::Cpu));
    let digits = lit::tch::no_grad(|| model.forward(&z));
    let digits = ((digits + 1.0) / 2.0).view([64, 1, 28, 28]);
    save_png(&make_grid(&digits, 8, 2)?, "gan.png")?;
    println!("saved gan.png: 64 generated digits");
    Ok(())
}
