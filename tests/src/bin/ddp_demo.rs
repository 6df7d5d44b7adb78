//! Distributed training for the ddp tests. `ddp_demo single DIR` trains on one process with
//! batches of 8; `ddp_demo ddp DIR` trains the same on two processes with batches of 4 each
//! (the Trainer launches the second); `ddp_demo crash DIR` has rank 1 die during training.
//! Each process writes its final weights, and what it tested and predicted, to
//! `DIR/weights-RANK.json`. Further arguments change the run: `acc` accumulates gradients over 2
//! batches, `view` makes gradients bucket views in tiny buckets (many all-reduces per step),
//! `unused` leaves layer `l3` out of every other step, `find` sets `find_unused_parameters`,
//! `manual` trains with manual optimization, `bn` adds a batch norm whose running statistics each
//! rank reports from validation, `cuda` trains on CUDA (NCCL). Mode `ddp1` is DDP in a world of
//! one process with batches of 8. `prepare_data` appends the rank to `DIR/prepared` (slowly),
//! and `setup` records whether the file was complete by then.

use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

#[lightning_module]
struct Net {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    l3: Option<nn::Linear>,
    bn: Option<nn::BatchNorm>,
    crash: bool,
    test_samples: i64,
    /// The batch norm's running mean as the first validation batch of each epoch saw it.
    val_running_means: Vec<Vec<f64>>,
    /// Where `prepare_data` writes.
    dir: std::path::PathBuf,
    /// What `DIR/prepared` held at each `setup`.
    prepared_at_setup: Vec<String>,
    /// `cx.all_gather` of 10 × the rank, in the first training step.
    gathered: Vec<f64>,
}

impl Net {
    fn new(vs: nn::VarStore, args: &[String], mode: &str, dir: std::path::PathBuf) -> Self {
        let l1 = nn::linear(vs.root() / "l1", 4, 8, Default::default());
        let l2 = nn::linear(vs.root() / "l2", 8, 1, Default::default());
        let unused = args.iter().any(|a| a == "unused");
        let l3 = unused.then(|| nn::linear(vs.root() / "l3", 8, 8, Default::default()));
        let bn = args.iter().any(|a| a == "bn").then(|| nn::batch_norm1d(vs.root() / "bn", 8, Default::default()));
        let crash = mode == "crash";
        Net {
            vs,
            l1,
            l2,
            l3,
            bn,
            crash,
            test_samples: 0,
            val_running_means: Vec::new(),
            dir,
            prepared_at_setup: Vec::new(),
            gathered: Vec::new(),
        }
    }

    /// `l3` (made with `unused` only) takes part in even steps.
    fn forward(&self, x: &Tensor, batch_idx: usize, train: bool) -> Tensor {
        let mut h = self.l1.forward(x);
        if let Some(bn) = &self.bn {
            h = bn.forward_t(&h, train);
        }
        let mut h = h.tanh();
        if let Some(l3) = self.l3.as_ref().filter(|_| batch_idx.is_multiple_of(2)) {
            h = l3.forward(&h).tanh();
        }
        self.l2.forward(&h)
    }
}

#[lightning_module]
impl Net {
    fn prepare_data(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        // Slow on purpose: the other process must wait for it before its `setup`.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let path = self.dir.join("prepared");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("{}\n", cx.global_rank()));
        std::fs::write(&path, text).map_err(|e| lit::Error::msg(e.to_string()))
    }

    fn setup(&mut self) {
        self.prepared_at_setup.push(std::fs::read_to_string(self.dir.join("prepared")).unwrap_or_default());
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), batch_idx: usize, cx: &mut Ctx) -> Tensor {
        if self.crash && cx.global_rank() == 1 && batch_idx == 2 {
            std::process::exit(3);
        }
        let loss = self.forward(&x, batch_idx, true).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("train_loss", &loss);
        // Reduced across processes at the end of the epoch: the global mean.
        cx.log("epoch_loss", &loss).on_step(false).on_epoch(true).sync_dist(true);
        cx.log("rank_mean", cx.global_rank() as f64).on_step(false).on_epoch(true).sync_dist(true);
        if cx.global_step() == 0 && self.gathered.is_empty() {
            let mine = Tensor::from(cx.global_rank() as f64 * 10.0);
            let all = cx.all_gather(&mine).expect("all_gather");
            self.gathered = Vec::<f64>::try_from(all.flatten(0, -1)).unwrap();
        }
        loss
    }

    fn validation_step(&mut self, (x, _y): (Tensor, Tensor), batch_idx: usize) {
        if let (Some(bn), 0) = (&self.bn, batch_idx) {
            self.val_running_means.push(Vec::<f64>::try_from(bn.running_mean.to_kind(Kind::Double)).unwrap());
        }
        let _ = x;
    }

    fn test_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) {
        let loss = self.forward(&x, 1, false).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("test_loss", &loss).sync_dist(true);
        self.test_samples += x.size()[0];
    }

    /// The sample numbers this process predicts.
    fn predict_step(&mut self, index: Tensor) -> Tensor {
        index
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).momentum(0.9).into()
    }
}

/// The same network trained with manual optimization.
#[lightning_module]
struct ManualNet {
    vs: nn::VarStore,
    net: Net,
}

#[lightning_module(automatic_optimization = false)]
impl ManualNet {
    fn training_step(&mut self, (x, y): (Tensor, Tensor), batch_idx: usize, cx: &mut Ctx) -> lit::Result<()> {
        let [opt] = cx.optimizers()?;
        let loss = self.net.forward(&x, batch_idx, true).mse_loss(&y, lit::tch::Reduction::Mean);
        opt.zero_grad(cx);
        cx.manual_backward(&loss)?;
        opt.step(cx)?;
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).momentum(0.9).into()
    }
}

fn main() -> lit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = (args[0].as_str(), std::path::PathBuf::from(&args[1]));
    // Rank 1 gets another seed on purpose: the Trainer must broadcast rank 0's weights.
    seed_everything(7 + std::env::var("RANK").ok().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0));
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = Net::new(vs, &args[2..], mode, dir.clone());
    let has = |flag: &str| args[2..].iter().any(|a| a == flag);

    let x = Tensor::arange(32 * 4, (Kind::Float, Device::Cpu)).view([32, 4]).sin();
    let y = x.sum_dim_intlist(-1, true, Kind::Float).cos();
    let (devices, batch) = match mode {
        "single" | "ddp1" => (1, 8),
        _ => (2, 4),
    };
    // `interrupt`: train until Ctrl-C (the test signals both processes).
    let max_epochs = if mode == "interrupt" { 100_000 } else { 2 };
    let loader = DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(batch);
    let val_loader = DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(batch);
    let mut trainer = Trainer::builder()
        .accelerator(if has("cuda") { "cuda" } else { "cpu" })
        .devices(devices)
        .strategy(if mode == "single" { "auto" } else { "ddp" })
        .ddp_timeout_secs(20)
        .max_epochs(max_epochs)
        .enable_progress_bar(false)
        .default_root_dir(&dir)
        .accumulate_grad_batches(if has("acc") { 2 } else { 1 })
        .ddp_gradient_as_bucket_view(has("view"))
        .ddp_bucket_cap_mb(if has("view") { 1e-4 } else { 25.0 })
        .ddp_find_unused_parameters(has("find"))
        .num_sanity_val_steps(0)
        .build()?;
    if has("manual") {
        // The manual module's store is the network's.
        let vs = std::mem::replace(&mut net.vs, nn::VarStore::new(Device::Cpu));
        let mut manual = ManualNet { vs, net };
        trainer.fit(&mut manual, loader, ())?;
        net = manual.net;
        net.vs = manual.vs;
    } else if net.bn.is_some() {
        trainer.fit(&mut net, loader, val_loader)?;
    } else {
        trainer.fit(&mut net, loader, ())?;
    }

    let rank = std::env::var("RANK").unwrap_or_else(|_| "0".into());
    let mut weights: Vec<f64> = Vec::new();
    let variables = net.vs.variables();
    for name in ["l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias"] {
        let Some(v) = variables.get(name) else { continue };
        weights.extend(Vec::<f64>::try_from(v.to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1))?);
    }
    let (epoch_loss, rank_mean) =
        (trainer.callback_metrics().get("epoch_loss").copied(), trainer.callback_metrics().get("rank_mean").copied());
    // Every rank reads the same best checkpoint (rank 0's directory) and tests from it.
    let best = trainer.checkpoint_callback().and_then(|c| c.best_model_path()).map(|p| p.display().to_string());
    let loader = DataLoader::new(TensorDataset::new((x, y))?).batch_size(batch);
    let tested = trainer.test_from_checkpoint(&mut net, loader, "best")?;
    // Test and prediction data are sharded too: each process sees its share.
    let numbers =
        DataLoader::new(TensorDataset::new(Tensor::arange(32, (Kind::Int64, Device::Cpu)))?).batch_size(batch);
    let predicted: Vec<i64> =
        trainer.predict(&mut net, numbers)?.iter().flat_map(|t| Vec::<i64>::try_from(t).unwrap()).collect();
    let text = serde_json::to_string(&serde_json::json!({
        "weights": weights,
        "global_step": trainer.global_step(),
        "epoch_loss": epoch_loss,
        "rank_mean": rank_mean,
        "best_model_path": best,
        "test_loss": tested[0]["test_loss"],
        "test_samples": net.test_samples,
        "predicted": predicted,
        "val_running_means": net.val_running_means,
        "prepared_at_setup": net.prepared_at_setup,
        "gathered": net.gathered,
    }))
    .unwrap();
    std::fs::write(dir.join(format!("weights-{rank}.json")), text).map_err(|e| lit::Error::msg(e.to_string()))?;
    Ok(())
}
