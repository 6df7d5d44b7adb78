//! Metric objects in distributed validation, for the metrics tests. `metrics_ddp single DIR`
//! validates 36 samples on one process; `metrics_ddp ddp DIR` validates them on two (the
//! Trainer launches the second), each process seeing half. Metrics are logged as objects, so
//! their states are synced before `compute`; one more metric is updated with an uneven split
//! (20 and 13 samples) to sync concatenated states of different lengths. Validation runs twice
//! (the second must not accumulate over the first); each process writes both results to
//! `DIR/metrics-RANK.json`.

use lit::metrics::{Accuracy, Auroc, Average, F1Score, MeanMetric, MetricCollection, Recall, SumMetric};
use lit::prelude::*;

#[lightning_module]
struct Net {
    vs: nn::VarStore,
    layer: nn::Linear,
    acc: Accuracy,
    auroc: Auroc,
    mean: MeanMetric,
    samples: SumMetric,
    scores: MetricCollection,
    uneven: Auroc,
}

/// 33 samples of three classes, the same on every process.
fn uneven_data() -> (Tensor, Tensor) {
    let scores = (Tensor::arange(33 * 3, (Kind::Float, Device::Cpu)).view([33, 3]) * 0.37).sin();
    let target = (Tensor::arange(33, (Kind::Int64, Device::Cpu)) * 5).remainder(3);
    (scores, target)
}

#[lightning_module]
impl Net {
    fn validation_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> lit::Result<()> {
        let logits = self.layer.forward(&x);
        self.acc.update(&logits, &y)?;
        self.auroc.update(&logits, &y)?;
        self.mean.update(&logits.sum_dim_intlist(1, false, Kind::Float))?;
        self.scores.update(&logits, &y)?;
        self.samples.update(&y.ones_like())?;
        cx.log("val_acc", &self.acc);
        cx.log("samples", &self.samples);
        // Not synced: this process's share.
        cx.log("local_samples", y.size()[0] as f64).reduce_fx(Reduce::Sum);
        cx.log("val_auroc", &self.auroc);
        cx.log("val_mean", &self.mean);
        cx.log_dict(&self.scores);
        Ok(())
    }

    fn on_validation_epoch_end(&mut self, cx: &mut Ctx) -> lit::Result<()> {
        let (scores, target) = uneven_data();
        let (start, len) = match (cx.world_size(), cx.global_rank()) {
            (1, _) => (0, 33),
            (_, 0) => (0, 20),
            _ => (20, 13),
        };
        self.uneven.update(&scores.narrow(0, start, len), &target.narrow(0, start, len))?;
        cx.log("uneven_auroc", &self.uneven);
        Ok(())
    }
}

fn main() -> lit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = (args[0].as_str(), std::path::PathBuf::from(&args[1]));
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = nn::linear(vs.root() / "layer", 4, 3, Default::default());
    lit::tch::no_grad(|| {
        let mut ws = layer.ws.shallow_clone();
        ws.copy_(&(Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]) * 0.9).cos());
        if let Some(bs) = &layer.bs {
            let _ = bs.shallow_clone().fill_(0.1);
        }
    });
    let scores = MetricCollection::new()
        .with("f1", F1Score::multiclass(3).average(Average::Macro))
        .with("recall", Recall::multiclass(3).average(Average::Weighted).top_k(2))
        .prefix("val_");
    let mut net = Net {
        vs,
        layer,
        acc: Accuracy::multiclass(3).average(Average::Macro),
        auroc: Auroc::multiclass(3),
        mean: MeanMetric::new(),
        samples: SumMetric::new(),
        scores,
        uneven: Auroc::multiclass(3),
    };

    let x = (Tensor::arange(36 * 4, (Kind::Float, Device::Cpu)).view([36, 4]) * 0.7).sin() * 2.0;
    let y = (Tensor::arange(36, (Kind::Int64, Device::Cpu)) * 7).remainder(3);
    let devices = if mode == "single" { 1 } else { 2 };
    let mut trainer = Trainer::builder()
        .accelerator("cpu")
        .devices(devices)
        .strategy(if mode == "single" { "auto" } else { "ddp" })
        .ddp_timeout_secs(20)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .logger(false)
        .default_root_dir(&dir)
        .build()?;
    let loader = || -> lit::Result<_> {
        Ok(DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(4))
    };
    let first = trainer.validate(&mut net, loader()?)?;
    let second = trainer.validate(&mut net, loader()?)?;
    let rank = std::env::var("RANK").unwrap_or_else(|_| "0".into());
    let report = serde_json::json!({ "first": first[0], "second": second[0] });
    let path = dir.join(format!("metrics-{rank}.json"));
    std::fs::write(&path, report.to_string()).map_err(|e| lit::Error::msg(format!("{}: {e}", path.display())))?;
    Ok(())
}
