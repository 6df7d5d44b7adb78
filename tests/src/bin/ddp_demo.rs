//! Distributed training for the ddp tests. `ddp_demo single DIR` trains on one process with
//! batches of 8; `ddp_demo ddp DIR` trains the same on two processes with batches of 4 each
//! (the Trainer launches the second); `ddp_demo crash DIR` has rank 1 die during training.
//! Each process writes its final weights, and what it tested and predicted, to
//! `DIR/weights-RANK.json`.

use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

#[lightning_module]
struct Net {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    crash: bool,
    test_samples: i64,
}

#[lightning_module]
impl Net {
    fn training_step(&mut self, (x, y): (Tensor, Tensor), batch_idx: usize, cx: &mut Ctx) -> Tensor {
        if self.crash && cx.global_rank() == 1 && batch_idx == 2 {
            std::process::exit(3);
        }
        let loss = self.l2.forward(&self.l1.forward(&x).tanh()).mse_loss(&y, lit::tch::Reduction::Mean);
        cx.log("train_loss", &loss);
        // Reduced across processes at the end of the epoch: the global mean.
        cx.log("epoch_loss", &loss).on_step(false).on_epoch(true).sync_dist(true);
        cx.log("rank_mean", cx.global_rank() as f64).on_step(false).on_epoch(true).sync_dist(true);
        loss
    }

    fn test_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) {
        let loss = self.l2.forward(&self.l1.forward(&x).tanh()).mse_loss(&y, lit::tch::Reduction::Mean);
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

fn main() -> lit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = (args[0].as_str(), std::path::PathBuf::from(&args[1]));
    // Rank 1 gets another seed on purpose: the Trainer must broadcast rank 0's weights.
    seed_everything(7 + std::env::var("RANK").ok().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0));
    let vs = nn::VarStore::new(Device::Cpu);
    let l1 = nn::linear(vs.root() / "l1", 4, 8, Default::default());
    let l2 = nn::linear(vs.root() / "l2", 8, 1, Default::default());
    let mut net = Net { vs, l1, l2, crash: mode == "crash", test_samples: 0 };

    let x = Tensor::arange(32 * 4, (Kind::Float, Device::Cpu)).view([32, 4]).sin();
    let y = x.sum_dim_intlist(-1, true, Kind::Float).cos();
    let (devices, batch) = if mode == "single" { (1, 8) } else { (2, 4) };
    // `interrupt`: train until Ctrl-C (the test signals both processes).
    let max_epochs = if mode == "interrupt" { 100_000 } else { 2 };
    let loader = DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(batch);
    let mut trainer = Trainer::builder()
        .accelerator("cpu")
        .devices(devices)
        .strategy(if mode == "single" { "auto" } else { "ddp" })
        .ddp_timeout_secs(20)
        .max_epochs(max_epochs)
        .enable_progress_bar(false)
        .default_root_dir(&dir)
        .build()?;
    trainer.fit(&mut net, loader, ())?;

    let rank = std::env::var("RANK").unwrap_or_else(|_| "0".into());
    let mut weights: Vec<f64> = Vec::new();
    for name in ["l1.weight", "l1.bias", "l2.weight", "l2.bias"] {
        weights.extend(Vec::<f64>::try_from(net.vs.variables()[name].to_kind(Kind::Double).flatten(0, -1))?);
    }
    let (epoch_loss, rank_mean) = (trainer.callback_metrics()["epoch_loss"], trainer.callback_metrics()["rank_mean"]);
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
    }))
    .unwrap();
    std::fs::write(dir.join(format!("weights-{rank}.json")), text).map_err(|e| lit::Error::msg(e.to_string()))?;
    Ok(())
}
