// #[hparams] with defaults, the #[hparams] field, an #[init] constructor returning Result, and
// the generated model methods.
use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(default = 8)]
    pub hidden: i64,
    #[hparams(default = 1e-3)]
    pub lr: f64,
}

#[lightning_module]
struct Model {
    #[var_store]
    store: nn::VarStore,
    layer: nn::Linear,
    #[hparams]
    config: Config,
}

#[lightning_module]
impl Model {
    #[init]
    fn build(config: Config) -> lit::Result<Self> {
        let store = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(store.root() / "layer", 2, config.hidden, Default::default());
        Ok(Model { store, layer, config })
    }

    #[example_input]
    fn example(&self) -> Tensor {
        Tensor::zeros([1, 2], (Kind::Float, Device::Cpu))
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.layer.forward(&x).sum(Kind::Float)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(self.config.lr).into()
    }
}

fn main() {
    let config = Config::default();
    assert_eq!((config.hidden, config.lr), (8, 1e-3));
    let mut model = Model::build(config).unwrap();
    assert_eq!(model.hparams().hidden, 8);
    assert_eq!(model.device(), Device::Cpu);
    assert!(model.model_size() > 0.0);
    assert_eq!(model.example_input_array().unwrap().size(), [1, 2]);
    model.freeze();
    model.unfreeze();
    let _: fn(&str) -> lit::Result<Model> = |p| Model::load_from_checkpoint(p);
}
