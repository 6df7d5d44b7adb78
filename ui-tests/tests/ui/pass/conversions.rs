// What hooks may return and how errors convert: an optimizer without `.into()`, a user's own
// error type through `?` and as a hook's `Result`, a text default for an hparams `String`, and
// `forward` taking its tensor by value.
use lit::prelude::*;

#[derive(Debug)]
struct DataProblem(String);

impl std::fmt::Display for DataProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data problem: {}", self.0)
    }
}

impl std::error::Error for DataProblem {}

fn check(ok: bool) -> Result<(), DataProblem> {
    if ok { Ok(()) } else { Err(DataProblem("empty".into())) }
}

#[hparams]
pub struct Config {
    #[hparams(default = "adam")]
    pub optimizer: String,
    #[hparams(default = 0.1)]
    pub lr: f64,
}

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
    #[hparams]
    config: Config,
    fail_in_setup: bool,
}

#[lightning_module]
impl Model {
    fn forward(&self, x: Tensor) -> Tensor {
        x * &self.w
    }

    fn setup(&mut self) -> lit::Result<()> {
        check(!self.fail_in_setup)?;
        Ok(())
    }

    fn on_train_start(&mut self) -> Result<(), DataProblem> {
        check(true)
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.forward(x).sum(Kind::Float)
    }

    fn configure_optimizers(&self) -> Result<Adam, DataProblem> {
        check(self.config.optimizer == "adam")?;
        Ok(Adam::new(self.config.lr))
    }
}

fn main() {
    let config = Config::default();
    assert_eq!(config.optimizer, "adam");
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().ones("w", &[2]);
    let mut model = Model { vs, w, config, fail_in_setup: false };
    let data = || lit::data::Batches::new(vec![Tensor::ones([2], (Kind::Float, Device::Cpu))]);
    let build = || Trainer::builder().accelerator("cpu").max_epochs(1).enable_progress_bar(false).enable_checkpointing(false).logger(false).build().unwrap();
    build().fit(&mut model, data(), ()).unwrap();

    model.fail_in_setup = true;
    let error = build().fit(&mut model, data(), ()).unwrap_err();
    assert_eq!(error.to_string(), "data problem: empty");
    assert!(error.downcast_ref::<DataProblem>().is_some());
    let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
    assert_eq!(boxed.to_string(), "data problem: empty");

    let _trace: fn(&Model, &Tensor) -> lit::Result<lit::tch::CModule> = Model::to_torchscript_with;
}
