// Run, epoch, batch, optimizer and data hooks with their parameters left out or kept, `&self`
// or `&mut self`, returning `()` or `lit::Result<()>`.
use lit::data::{Batch, DataLoader, TensorDataset};
use lit::prelude::*;

type B = (Tensor, Tensor);

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    w: Tensor,
    data: Tensor,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, (x, _): B) -> Tensor {
        (x * &self.w).sum(Kind::Float)
    }
    fn validation_step(&mut self, (x, _): B, cx: &mut Ctx) {
        cx.log("val", x.sum(Kind::Float));
    }
    fn setup(&mut self, stage: Stage) {
        let _ = stage;
    }
    fn teardown(&self) -> lit::Result<()> {
        Ok(())
    }
    fn prepare_data(&self) {}
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }
    fn configure_optimizers(&self, _cx: &mut Ctx) -> lit::Result<Optimizers> {
        Ok(Adam::new(1e-3).into())
    }
    fn train_dataloader(&self) -> DataLoader<TensorDataset<B>> {
        let dataset = TensorDataset::new((self.data.shallow_clone(), self.data.shallow_clone())).unwrap();
        DataLoader::new(dataset).batch_size(2)
    }
    fn val_dataloader(&self) -> lit::Result<Vec<DataLoader<TensorDataset<B>>>> {
        Ok(Vec::new())
    }
    fn on_fit_start(&mut self, cx: &mut Ctx) {
        cx.print("starting");
    }
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        cx.log("epoch", cx.current_epoch());
        Ok(())
    }
    fn on_train_batch_start(&mut self, batch: &B, batch_idx: usize) {
        let _ = (batch, batch_idx);
    }
    fn on_train_batch_end(&mut self, outputs: Option<&StepOutput>) {
        let _ = outputs;
    }
    fn on_before_optimizer_step(&mut self, optimizer: &mut dyn Optimizer, optimizer_idx: usize) {
        let _ = (optimizer.lr(), optimizer_idx);
    }
    fn optimizer_step(&mut self, epoch: usize, batch_idx: usize, optimizer: &mut dyn Optimizer) {
        // Learning-rate warm-up over the first steps, as Lightning documents.
        let _ = (epoch, batch_idx);
        optimizer.step();
    }
    fn backward(&mut self, loss: &Tensor) {
        loss.backward();
    }
    fn configure_gradient_clipping(&mut self, optimizer: &mut dyn Optimizer, gradient_clip_val: Option<f64>) {
        if let Some(v) = gradient_clip_val {
            let _ = optimizer.clip_grad_norm(v);
        }
    }
    fn on_after_batch_transfer<T: Batch>(&mut self, batch: T, dataloader_idx: usize) -> T {
        let _ = dataloader_idx;
        batch
    }
    fn on_validation_model_eval(&mut self, cx: &mut Ctx) {
        cx.set_training(false);
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[1]);
    let data = Tensor::ones([4, 1], (Kind::Float, Device::Cpu));
    let mut model = Model { vs, w, data };
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build().unwrap();
    trainer.fit(&mut model, (), ()).unwrap();
    assert_eq!(trainer.global_step(), 2);
}
