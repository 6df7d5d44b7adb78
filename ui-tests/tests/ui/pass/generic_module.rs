// A generic module: the spec's `ClassificationTask` that wraps any backbone, trained with two.
use lit::prelude::*;

#[hparams]
pub struct TaskConfig {
    #[hparams(default = 0.1)]
    pub lr: f64,
}

#[lightning_module]
struct ClassificationTask<B: nn::ModuleT> {
    vs: nn::VarStore,
    model: B,
    #[hparams]
    config: TaskConfig,
}

#[lightning_module]
impl<B: nn::ModuleT> ClassificationTask<B> {
    fn new(vs: nn::VarStore, model: B) -> Self {
        ClassificationTask { vs, model, config: TaskConfig::default() }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.model.forward_t(x, false)
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let loss = self.model.forward_t(&x, cx.training()).cross_entropy_for_logits(&y);
        cx.log("train_loss", &loss);
        loss
    }

    fn validation_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) {
        let logits = self.model.forward_t(&x, false);
        cx.log("val_acc", &logits.accuracy_for_logits(&y));
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(self.config.lr)
    }
}

fn data() -> lit::data::Batches<(Tensor, Tensor)> {
    let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    lit::data::Batches::new(vec![(x, y)])
}

fn fit<B: nn::ModuleT>(task: &mut ClassificationTask<B>) {
    let mut trainer =
        Trainer::builder().accelerator("cpu").max_epochs(2).enable_progress_bar(false).enable_checkpointing(false).logger(false).build().unwrap();
    trainer.fit(task, data(), data()).unwrap();
    assert_eq!(trainer.global_step(), 2);
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "fc", 4, 3, Default::default());
    let mut task = ClassificationTask::new(vs, linear);
    fit(&mut task);

    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let mlp = nn::seq_t()
        .add(nn::linear(&root / "l1", 4, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l2", 16, 3, Default::default()));
    let mut task = ClassificationTask::new(vs, mlp);
    fit(&mut task);
    assert_eq!(task.forward(&Tensor::zeros([2, 4], (Kind::Float, Device::Cpu))).size(), [2, 3]);
}
