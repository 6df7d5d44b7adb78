//! Truncated back-propagation through time: an LSTM learns a running average over long
//! sequences, trained on chunks of 25 steps with the state carried (detached) between chunks.
//!
//! ```text
//! scripts/with-torch cargo run --release -p lit-examples --bin tbptt
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(default = 32)]
    pub hidden: i64,
    #[hparams(default = 0.01)]
    pub lr: f64,
}

#[lightning_module]
pub struct Averager {
    vs: nn::VarStore,
    lstm: nn::LSTM,
    head: nn::Linear,
    #[hparams]
    cfg: Config,
}

type Batch = (Tensor, Tensor);

#[lightning_module(truncated_bptt_steps = 25)]
impl Averager {
    fn new(cfg: Config) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let rnn = nn::RNNConfig { batch_first: true, ..Default::default() };
        let lstm = nn::lstm(vs.root() / "lstm", 2, cfg.hidden, rnn);
        let head = nn::linear(vs.root() / "head", cfg.hidden, 1, Default::default());
        Averager { vs, lstm, head, cfg }
    }

    fn training_step(
        &mut self,
        (x, y): Batch,
        hiddens: Option<(Tensor, Tensor)>,
        cx: &mut Ctx,
    ) -> (Tensor, (Tensor, Tensor)) {
        let state = match hiddens {
            Some(h) => nn::LSTMState(h),
            None => self.lstm.zero_state(x.size()[0]),
        };
        let (out, nn::LSTMState(next)) = self.lstm.seq_init(&x, &state);
        let loss = self.head.forward(&out).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("train_loss", &loss).on_epoch(true);
        (loss, next)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Adam::new(self.cfg.lr).into()
    }
}

/// Sequences of 200 steps of two noisy signals; the target at each step is the running mean of
/// their sum so far, which the LSTM can only learn by carrying state across chunks.
fn data(n: i64) -> lit::Result<TensorDataset<Batch>> {
    let x = Tensor::randn([n, 200, 2], (Kind::Float, Device::Cpu));
    let steps = Tensor::arange_start(1, 201, (Kind::Float, Device::Cpu)).view([1, 200, 1]);
    let y = x.sum_dim_intlist(-1, true, Kind::Float).cumsum(1, Kind::Float) / steps;
    TensorDataset::new((x, y))
}

/// Records the mean training loss of every epoch.
struct LossHistory(Rc<RefCell<Vec<f64>>>);

impl Callback for LossHistory {
    fn on_train_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let loss = cx.callback_metrics()["train_loss_epoch"];
        println!("epoch {}: mean training loss {loss:.4} ({} optimizer steps)", cx.current_epoch(), cx.global_step());
        self.0.borrow_mut().push(loss);
        Ok(())
    }
}

fn main() -> lit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "lit=warn".into()))
        .init();
    seed_everything(7);
    let mut model = Averager::new(Config::default());
    let losses = Rc::new(RefCell::new(Vec::new()));
    let mut trainer =
        Trainer::builder().accelerator("cpu").max_epochs(6).callback(LossHistory(Rc::clone(&losses))).build()?;
    trainer.fit(&mut model, DataLoader::new(data(256)?).batch_size(32).shuffle(true), ())?;

    let losses = losses.borrow();
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    println!("loss fell from {first:.4} to {last:.4}");
    if last >= first * 0.5 {
        return Err(lit::Error::msg(format!("the loss did not fall enough: {first:.4} -> {last:.4}")));
    }
    Ok(())
}
