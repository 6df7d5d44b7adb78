//! `#[lightning_module]` and `#[hparams]`: the generated table behaves as a hand-written one,
//! hooks may leave out parameters, freeze/unfreeze, truncated BPTT.

use lit::data::Batches;
use lit::prelude::*;

use crate::hooks::{B, Journal, fit_scenario, hand_written_fit_journal, record};

/// The hook recorder of `hooks.rs`, written with the macro and with parameters left out wherever
/// the journal does not need them.
#[lightning_module]
struct MacroRecorder {
    vs: nn::VarStore,
    layer: nn::Linear,
    calls: Journal,
}

#[lightning_module]
impl MacroRecorder {
    fn with_journal(calls: Journal) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 2, 1, Default::default());
        MacroRecorder { vs, layer, calls }
    }

    fn rec(&self, hook: impl Into<String>, cx: &Ctx) {
        record(&self.calls, hook, cx);
    }

    fn loss(&self, (x, y): B) -> Tensor {
        self.layer.forward(&x).mse_loss(&y, lit::tch::Reduction::Mean)
    }

    fn prepare_data(&self, cx: &mut Ctx) {
        self.rec("prepare_data", cx);
    }
    fn setup(&mut self, stage: Stage, cx: &mut Ctx) {
        self.rec(format!("setup:{}", stage.as_str()), cx);
    }
    fn teardown(&mut self, stage: Stage, cx: &mut Ctx) -> lit::Result<()> {
        self.rec(format!("teardown:{}", stage.as_str()), cx);
        Ok(())
    }
    fn configure_optimizers(&self, cx: &mut Ctx) -> Optimizers {
        self.rec("configure_optimizers", cx);
        Sgd::new(0.01).into()
    }
    fn on_post_move_to_device(&mut self, cx: &mut Ctx) {
        self.rec("on_post_move_to_device", cx);
    }
    fn on_before_batch_transfer<T: lit::data::Batch>(&mut self, batch: T, cx: &mut Ctx) -> T {
        self.rec("on_before_batch_transfer", cx);
        batch
    }
    fn transfer_batch_to_device<T: lit::data::Batch>(&mut self, batch: T, device: Device, cx: &mut Ctx) -> T {
        self.rec("transfer_batch_to_device", cx);
        batch.to_device(device)
    }
    fn on_after_batch_transfer<T: lit::data::Batch>(&mut self, batch: T, cx: &mut Ctx) -> lit::Result<T> {
        self.rec("on_after_batch_transfer", cx);
        Ok(batch)
    }
    fn training_step(&mut self, batch: B, batch_idx: usize, cx: &mut Ctx) -> Tensor {
        self.rec(format!("training_step:{batch_idx}"), cx);
        let loss = self.loss(batch);
        cx.log("train_loss", &loss);
        loss
    }
    fn training_step_end(&mut self, out: StepOutput, cx: &mut Ctx) -> StepOutput {
        self.rec("training_step_end", cx);
        out
    }
    fn training_epoch_end(&mut self, outputs: Vec<StepOutput>, cx: &mut Ctx) {
        self.rec(format!("training_epoch_end:{}", outputs.len()), cx);
    }
    fn validation_step(&mut self, batch: B, i: usize, dl: usize, cx: &mut Ctx) -> Tensor {
        self.rec(format!("validation_step:{i}/{dl}"), cx);
        let loss = self.loss(batch);
        cx.log("val_loss", &loss);
        loss
    }
    fn validation_step_end(&mut self, out: StepOutput, cx: &mut Ctx) -> StepOutput {
        self.rec("validation_step_end", cx);
        out
    }
    fn validation_epoch_end(&mut self, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) {
        let counts: Vec<usize> = outputs.iter().map(Vec::len).collect();
        self.rec(format!("validation_epoch_end:{counts:?}"), cx);
    }
    fn on_before_zero_grad(&mut self, cx: &mut Ctx) {
        self.rec("on_before_zero_grad", cx);
    }
    fn optimizer_zero_grad(&mut self, optimizer: &mut dyn Optimizer, cx: &mut Ctx) {
        self.rec("optimizer_zero_grad", cx);
        optimizer.zero_grad();
    }
    fn on_before_backward(&mut self, cx: &mut Ctx) {
        self.rec("on_before_backward", cx);
    }
    fn backward(&mut self, loss: &Tensor, cx: &mut Ctx) {
        self.rec("backward", cx);
        loss.backward();
    }
    fn on_after_backward(&mut self, cx: &mut Ctx) {
        self.rec("on_after_backward", cx);
    }
    fn on_before_optimizer_step(&mut self, cx: &mut Ctx) {
        self.rec("on_before_optimizer_step", cx);
    }
    fn configure_gradient_clipping(&mut self, cx: &mut Ctx) {
        self.rec("configure_gradient_clipping", cx);
    }
    fn optimizer_step(&mut self, optimizer: &mut dyn Optimizer, cx: &mut Ctx) {
        self.rec("optimizer_step", cx);
        optimizer.step();
    }
    fn on_fit_start(&mut self, cx: &mut Ctx) {
        self.rec("on_fit_start", cx);
    }
    fn on_fit_end(&mut self, cx: &mut Ctx) {
        self.rec("on_fit_end", cx);
    }
    fn on_pretrain_routine_start(&mut self, cx: &mut Ctx) {
        self.rec("on_pretrain_routine_start", cx);
    }
    fn on_pretrain_routine_end(&mut self, cx: &mut Ctx) {
        self.rec("on_pretrain_routine_end", cx);
    }
    fn on_epoch_start(&mut self, cx: &mut Ctx) {
        self.rec("on_epoch_start", cx);
    }
    fn on_epoch_end(&mut self, cx: &mut Ctx) {
        self.rec("on_epoch_end", cx);
    }
    fn on_train_start(&mut self, cx: &mut Ctx) {
        self.rec("on_train_start", cx);
    }
    fn on_train_end(&mut self, cx: &mut Ctx) {
        self.rec("on_train_end", cx);
    }
    fn on_validation_start(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_start", cx);
    }
    fn on_validation_end(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_end", cx);
    }
    fn on_train_epoch_start(&mut self, cx: &mut Ctx) {
        self.rec("on_train_epoch_start", cx);
    }
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) {
        self.rec("on_train_epoch_end", cx);
    }
    fn on_validation_epoch_start(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_epoch_start", cx);
    }
    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_epoch_end", cx);
    }
    fn on_train_batch_start(&mut self, batch_idx: usize, cx: &mut Ctx) {
        self.rec(format!("on_train_batch_start:{batch_idx}"), cx);
    }
    fn on_train_batch_end(&mut self, outputs: Option<&StepOutput>, batch_idx: usize, cx: &mut Ctx) {
        assert!(outputs.is_some());
        self.rec(format!("on_train_batch_end:{batch_idx}"), cx);
    }
    fn on_validation_batch_start(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) {
        self.rec(format!("on_validation_batch_start:{batch_idx}/{dataloader_idx}"), cx);
    }
    fn on_validation_batch_end(&mut self, batch_idx: usize, dataloader_idx: usize, cx: &mut Ctx) {
        self.rec(format!("on_validation_batch_end:{batch_idx}/{dataloader_idx}"), cx);
    }
    fn on_validation_model_eval(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_model_eval", cx);
        cx.set_training(false);
    }
    fn on_validation_model_train(&mut self, cx: &mut Ctx) {
        self.rec("on_validation_model_train", cx);
        cx.set_training(true);
    }
}

#[test]
fn the_macro_table_runs_like_the_hand_written_one() -> lit::Result<()> {
    let expected = hand_written_fit_journal()?;
    let calls = Journal::default();
    let mut model = MacroRecorder::with_journal(calls.clone());
    let trainer = fit_scenario(&mut model)?;
    let got = calls.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len(), "{:#?}", got.iter().map(|c| &c.hook).collect::<Vec<_>>());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "call {i}");
    }
    assert_eq!(trainer.global_step(), 9);
    Ok(())
}

#[hparams]
pub struct NetConfig {
    pub hidden: i64,
    #[hparams(default = 0.5)]
    pub dropout: f64,
}

#[lightning_module]
struct Net {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    #[hparams]
    cfg: NetConfig,
    #[example_input]
    example: Tensor,
}

#[lightning_module]
impl Net {
    fn new(cfg: NetConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 3, cfg.hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 1, Default::default());
        Net { vs, l1, l2, cfg, example: Tensor::ones([1, 3], (Kind::Float, Device::Cpu)) }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.l2.forward(&self.l1.forward(x).relu().dropout(self.cfg.dropout, train))
    }

    fn training_step(&mut self, (x, y): B, cx: &mut Ctx) -> lit::Result<Tensor> {
        Ok(self.forward(&x, cx.training()).f_mse_loss(&y, lit::tch::Reduction::Mean)?)
    }

    fn predict_step(&mut self, x: Tensor, cx: &mut Ctx) -> Tensor {
        assert!(!cx.training());
        self.forward(&x, cx.training())
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(1e-2).into()
    }
}

#[test]
fn generated_model_methods_work() {
    let mut net = Net::new(NetConfig { hidden: 4, dropout: 0.0 });
    assert_eq!(net.hparams().hidden, 4);
    assert_eq!(net.device(), Device::Cpu);
    // (3*4 + 4) + (4*1 + 1) float parameters.
    assert!((net.model_size() - 21.0 * 4.0 / 1e6).abs() < 1e-12, "{}", net.model_size());
    assert_eq!(net.example_input_array().map(|t| t.size()), Some(vec![1, 3]));

    // Ports test_lightning_module.py::test_freeze_unfreeze: `freeze` leaves no parameter
    // requiring grad, `unfreeze` makes every parameter require grad, also one frozen by hand.
    let bias = net.vs.variables()["l2.bias"].shallow_clone();
    let _ = bias.set_requires_grad(false);
    let trainable = |net: &Net| {
        let mut names: Vec<String> =
            net.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
        names.sort();
        names
    };
    assert_eq!(trainable(&net), ["l1.bias", "l1.weight", "l2.weight"]);
    net.freeze();
    assert!(trainable(&net).is_empty(), "freeze leaves no parameter requiring grad");
    net.unfreeze();
    assert_eq!(trainable(&net), ["l1.bias", "l1.weight", "l2.bias", "l2.weight"], "unfreeze: every parameter");
}

#[test]
fn hparams_defaults_fill_missing_keys() {
    let cfg: NetConfig = serde_json::from_str(r#"{"hidden": 8}"#).unwrap();
    assert_eq!((cfg.hidden, cfg.dropout), (8, 0.5));
    let e = serde_json::from_str::<NetConfig>(r#"{"dropout": 0.1}"#).unwrap_err().to_string();
    assert!(e.contains("missing field `hidden`"), "{e}");
}

#[test]
fn a_trained_model_reloads_from_its_checkpoint() -> lit::Result<()> {
    seed_everything(3);
    let mut net = Net::new(NetConfig { hidden: 16, dropout: 0.1 });
    let x = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
    let y = x.sum_dim_intlist(-1, true, Kind::Float);
    let batches: Vec<B> = (0..8).map(|i| (x.narrow(0, i * 8, 8), y.narrow(0, i * 8, 8))).collect();
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(3).build()?;
    trainer.fit(&mut net, Batches::new(batches), ())?;

    let dir = crate::common::temp_dir("reload");
    let path = dir.join("net.ckpt");
    trainer.save_checkpoint(&path, &mut net)?;
    let mut restored = Net::load_from_checkpoint(&path)?;
    assert_eq!(restored.hparams().hidden, 16);
    assert_eq!(restored.hparams().dropout, 0.1);
    let probe = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
    let a = trainer.predict(&mut net, Batches::new(vec![probe.shallow_clone()]))?;
    let b = trainer.predict(&mut restored, Batches::new(vec![probe]))?;
    assert!(a[0].equal(&b[0]), "same outputs on the same input after reloading");
    Ok(())
}

/// What one TBPTT chunk saw: its shape, the hiddens it received and the ones it returned.
type Chunk = (Vec<i64>, Option<(Tensor, Tensor)>, (Tensor, Tensor));

/// A toy recurrent task for truncated BPTT: predict the running mean of the input.
#[lightning_module]
struct Seq {
    vs: nn::VarStore,
    lstm: nn::LSTM,
    head: nn::Linear,
    seen: Vec<Chunk>,
}

#[lightning_module(truncated_bptt_steps = 4)]
impl Seq {
    fn build() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = nn::RNNConfig { batch_first: true, ..Default::default() };
        let lstm = nn::lstm(vs.root() / "lstm", 3, 5, config);
        let head = nn::linear(vs.root() / "head", 5, 1, Default::default());
        Seq { vs, lstm, head, seen: Vec::new() }
    }

    fn training_step(&mut self, (x, y): B, hiddens: Option<(Tensor, Tensor)>) -> (Tensor, (Tensor, Tensor)) {
        let state = match &hiddens {
            Some((h, c)) => nn::LSTMState((h.shallow_clone(), c.shallow_clone())),
            None => self.lstm.zero_state(x.size()[0]),
        };
        let (out, nn::LSTMState((h, c))) = self.lstm.seq_init(&x, &state);
        let loss = self.head.forward(&out).mse_loss(&y, lit::tch::Reduction::Mean);
        self.seen.push((x.size(), hiddens, (h.shallow_clone(), c.shallow_clone())));
        (loss, (h, c))
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.05).into()
    }
}

#[test]
fn truncated_bptt_splits_batches_and_carries_detached_hiddens() -> lit::Result<()> {
    let mut model = Seq::build();
    let x = Tensor::randn([2, 10, 3], (Kind::Float, Device::Cpu));
    let y = x.cumsum(1, Kind::Float).mean_dim(-1, true, Kind::Float);
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build()?;
    trainer.fit(&mut model, Batches::new(vec![(x.shallow_clone(), y.shallow_clone()), (x, y)]), ())?;

    assert_eq!(trainer.global_step(), 6, "one optimizer step per chunk: 3 chunks x 2 batches");
    let shapes: Vec<Vec<i64>> = model.seen.iter().map(|(s, _, _)| s.clone()).collect();
    assert_eq!(shapes, [[2, 4, 3], [2, 4, 3], [2, 2, 3], [2, 4, 3], [2, 4, 3], [2, 2, 3]]);
    for (k, (_, received, _)) in model.seen.iter().enumerate() {
        if k % 3 == 0 {
            assert!(received.is_none(), "chunk {k} starts a batch: no hiddens");
            continue;
        }
        let (h, c) = received.as_ref().expect("hiddens from the previous chunk");
        let (ph, pc) = &model.seen[k - 1].2;
        assert!(h.equal(ph) && c.equal(pc), "chunk {k} gets the previous chunk's hiddens");
        assert!(ph.requires_grad(), "the previous chunk's output was part of its graph");
        assert!(!h.requires_grad() && !c.requires_grad(), "chunk {k} gets them detached");
    }
    Ok(())
}

/// The spec's TBPTT program with its own `tbptt_split_batch` ("to modify how the batch is
/// split"): time-major sequences `(time, batch, features)`, split along dim 0, with a last
/// partial chunk dropped.
#[lightning_module]
struct TimeMajor {
    vs: nn::VarStore,
    w: Tensor,
    seen: Vec<(Vec<i64>, bool)>,
}

#[lightning_module(truncated_bptt_steps = 3)]
impl TimeMajor {
    fn build() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        TimeMajor { vs, w, seen: Vec::new() }
    }

    fn tbptt_split_batch(&mut self, (x, y): B, split_size: usize) -> Vec<B> {
        let steps = x.size()[0];
        let s = split_size as i64;
        (0..steps / s).map(|k| (x.narrow(0, k * s, s), y.narrow(0, k * s, s))).collect()
    }

    fn training_step(&mut self, (x, y): B, hiddens: Option<Tensor>) -> (Tensor, Tensor) {
        self.seen.push((x.size(), hiddens.is_some()));
        let state = hiddens.unwrap_or_else(|| Tensor::zeros([x.size()[1], 1], (Kind::Float, Device::Cpu)));
        let pred = x.matmul(&self.w.unsqueeze(-1)) + state.unsqueeze(0);
        let loss = pred.mse_loss(&y, lit::tch::Reduction::Mean);
        (loss, pred.select(0, -1))
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

#[test]
fn a_custom_tbptt_split_batch_decides_the_chunks() -> lit::Result<()> {
    let mut model = TimeMajor::build();
    // 8 time steps of a batch of 2: chunks of 3 along time, the last 2 steps dropped.
    let x = Tensor::randn([8, 2, 2], (Kind::Float, Device::Cpu));
    let y = x.sum_dim_intlist(-1, true, Kind::Float);
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).enable_progress_bar(false).build()?;
    trainer.fit(&mut model, Batches::new(vec![(x, y)]), ())?;
    assert_eq!(model.seen, [(vec![3, 2, 2], false), (vec![3, 2, 2], true)]);
    assert_eq!(trainer.global_step(), 2, "one optimizer step per chunk the split returned");
    Ok(())
}

#[test]
fn the_default_split_needs_a_time_dimension() -> lit::Result<()> {
    let mut model = Seq::build();
    let flat = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    let mut trainer = Trainer::builder().accelerator("cpu").max_epochs(1).build()?;
    let e = trainer.fit(&mut model, Batches::new(vec![(flat.shallow_clone(), flat)]), ()).unwrap_err();
    assert!(e.to_string().contains("no time dimension (dim 1)"), "{e}");
    Ok(())
}

/// A backbone a generic task can build from its hyper-parameters.
trait Backbone: nn::ModuleT + Sized {
    fn build(root: nn::Path<'_>, config: &TaskConfig) -> Self;
}

#[hparams]
pub struct TaskConfig {
    #[hparams(default = 4)]
    pub inputs: i64,
    #[hparams(default = 3)]
    pub classes: i64,
    #[hparams(default = "sgd")]
    pub optimizer: String,
}

struct Linear(nn::Linear);

impl std::fmt::Debug for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Linear")
    }
}

impl nn::ModuleT for Linear {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        self.0.forward(x)
    }
}

impl Backbone for Linear {
    fn build(root: nn::Path<'_>, config: &TaskConfig) -> Self {
        Linear(nn::linear(root / "fc", config.inputs, config.classes, Default::default()))
    }
}

#[derive(Debug)]
struct Mlp(nn::SequentialT);

impl nn::ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.0.forward_t(x, train)
    }
}

impl Backbone for Mlp {
    fn build(root: nn::Path<'_>, config: &TaskConfig) -> Self {
        Mlp(nn::seq_t()
            .add(nn::linear(&root / "l1", config.inputs, 16, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "l2", 16, config.classes, Default::default())))
    }
}

/// The spec's `ClassificationTask`: one task over any backbone.
#[lightning_module]
struct ClassificationTask<B: Backbone> {
    vs: nn::VarStore,
    model: B,
    #[hparams]
    config: TaskConfig,
}

#[lightning_module]
impl<B: Backbone> ClassificationTask<B> {
    #[init]
    fn from_config(config: TaskConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = B::build(vs.root(), &config);
        ClassificationTask { vs, model, config }
    }

    fn training_step(&mut self, (x, y): B2, cx: &mut Ctx) -> Tensor {
        let loss = self.model.forward_t(&x, cx.training()).cross_entropy_for_logits(&y);
        cx.log("train_loss", &loss);
        loss
    }

    fn validation_step(&mut self, (x, y): B2, cx: &mut Ctx) {
        let logits = self.model.forward_t(&x, false);
        cx.log("val_loss", logits.cross_entropy_for_logits(&y));
        cx.log("val_acc", logits.accuracy_for_logits(&y));
    }

    fn test_step(&mut self, batch: B2, cx: &mut Ctx) {
        self.validation_step(batch, cx);
    }

    fn predict_step(&mut self, (x, _): B2) -> Tensor {
        self.model.forward_t(&x, false)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.5)
    }
}

/// A classification batch: inputs and class indices.
type B2 = (Tensor, Tensor);

fn classes() -> Vec<B2> {
    let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
    let y = x.argmax(-1, false).clamp(0, 2);
    (0..4).map(|i| (x.narrow(0, i * 8, 8), y.narrow(0, i * 8, 8))).collect()
}

fn train_and_reload<B: Backbone>(name: &str) -> lit::Result<()> {
    let mut task = ClassificationTask::<B>::from_config(TaskConfig::default());
    let mut trainer = crate::common::quiet_trainer(&crate::common::temp_dir(name)).max_epochs(3).build()?;
    trainer.fit(&mut task, Batches::new(classes()), Batches::new(classes()))?;
    assert_eq!(trainer.global_step(), 12);
    let metrics = trainer.test(&mut task, Batches::new(classes()))?;
    assert!(metrics[0].contains_key("val_acc"), "{metrics:?}");

    let path = crate::common::temp_dir(name).join("task.ckpt");
    trainer.save_checkpoint(&path, &mut task)?;
    let mut restored = ClassificationTask::<B>::load_from_checkpoint(&path)?;
    assert_eq!(restored.hparams().optimizer, "sgd");
    let probe = classes();
    let a = trainer.predict(
        &mut task,
        Batches::new(probe.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect()),
    )?;
    // The spec's "use model after training … and drop into the production system": the
    // backbone alone, without the task or the Trainer, gives the task's predictions.
    let alone = lit::tch::no_grad(|| task.model.forward_t(&probe[0].0, false));
    assert!(alone.equal(&a[0]), "the trained {name} backbone predicts alone as in the task");
    let b = trainer.predict(&mut restored, Batches::new(probe))?;
    assert!(a.iter().zip(&b).all(|(a, b)| a.equal(b)), "the reloaded {name} task predicts the same");
    Ok(())
}

/// The spec's `ClassificationTask` ("pass in any arbitrary model to be fit with this task"):
/// one generic task trains, tests and reloads over two backbones.
#[test]
fn a_generic_task_trains_and_reloads_over_two_backbones() -> lit::Result<()> {
    seed_everything(7);
    train_and_reload::<Linear>("task-linear")?;
    train_and_reload::<Mlp>("task-mlp")
}

#[derive(Debug)]
struct UserError(&'static str);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user error: {}", self.0)
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

#[derive(Debug)]
struct Wrapped(UserError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading the vocabulary failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `?` on a user's error in a hook keeps the error and its source chain.
#[test]
fn user_errors_convert_with_their_source_chain() {
    fn hook() -> lit::Result<()> {
        Err(Wrapped(UserError("no such file")))?;
        Ok(())
    }
    let error = hook().unwrap_err();
    assert_eq!(error.to_string(), "loading the vocabulary failed");
    assert!(error.downcast_ref::<Wrapped>().is_some());
    let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    assert_eq!(chain, ["user error: no such file"]);
    let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
    assert_eq!(boxed.source().map(|e| e.to_string()).as_deref(), Some("user error: no such file"));
    // lit's own error types keep their variants.
    let io: lit::Error = lit::DataError::Collate("ragged".into()).into();
    assert!(matches!(io, lit::Error::Data(_)));
}

#[lightning_module]
struct ManualNoStep {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module(automatic_optimization = false)]
impl ManualNoStep {
    fn training_step(&mut self, x: Tensor, cx: &mut Ctx) -> lit::Result<()> {
        let loss = (&x * &self.w).sum(Kind::Float);
        cx.manual_backward(&loss)
    }

    fn configure_optimizers(&self) -> Sgd {
        Sgd::new(0.1)
    }
}

#[test]
#[ignore = "run by manual_optimization_without_a_step_warns, in a process of its own"]
fn manual_no_step_child() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[2]);
    let mut model = ManualNoStep { vs, w };
    let mut trainer =
        crate::common::quiet_trainer(&crate::common::temp_dir("manual-no-step")).max_epochs(1).build().unwrap();
    let data = Batches::new((0..3).map(|_| Tensor::ones([2], (Kind::Float, Device::Cpu))).collect());
    trainer.fit(&mut model, data, ()).unwrap();
    assert_eq!(trainer.global_step(), 0);
}

/// Manual optimization with no optimizer step anywhere trains nothing; lit says so on the
/// console, with no `tracing` subscriber installed.
#[test]
fn manual_optimization_without_a_step_warns() {
    let stdout = crate::common::run_in_own_process("macros::manual_no_step_child");
    assert!(
        stdout.contains("warning: manual optimization: epoch 0 ran 3 batches and no optimizer stepped"),
        "{stdout}"
    );
}
