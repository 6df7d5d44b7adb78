//! A `DataModule` supplies a run's loaders around `prepare_data`, `setup` and `teardown`.

use std::path::PathBuf;

use lit::data::{BoxLoader, DataLoader, DataModule, TensorDataset};
use lit::prelude::*;

use crate::common::temp_dir;

/// Writes its data to a file in `prepare_data`, reads and splits it in `setup`.
struct Numbers {
    dir: PathBuf,
    calls: Vec<String>,
    train: Option<(Tensor, Tensor)>,
    val: Option<(Tensor, Tensor)>,
    give_train: bool,
}

type Pair = (Tensor, Tensor);

impl DataModule for Numbers {
    type TrainBatch = Pair;
    type ValBatch = Pair;
    type TestBatch = Pair;
    type PredictBatch = Pair;

    fn prepare_data(&mut self) -> lit::Result<()> {
        self.calls.push("prepare_data".into());
        let x = Tensor::arange(60, (Kind::Float, Device::Cpu)).view([30, 2]) / 30.0;
        x.save(self.dir.join("x.pt")).map_err(lit::Error::from)
    }
    fn setup(&mut self, stage: Stage) -> lit::Result<()> {
        self.calls.push(format!("setup {}", stage.as_str()));
        let x = Tensor::load(self.dir.join("x.pt"))?;
        let y = x.sum_dim_intlist(-1, true, Kind::Float);
        self.train = Some((x.narrow(0, 0, 24), y.narrow(0, 0, 24)));
        self.val = Some((x.narrow(0, 24, 6), y.narrow(0, 24, 6)));
        Ok(())
    }
    fn train_dataloader(&mut self) -> lit::Result<Option<BoxLoader<Pair>>> {
        self.calls.push("train_dataloader".into());
        if !self.give_train {
            return Ok(None);
        }
        let (x, y) = self.train.as_ref().expect("setup ran first");
        Ok(Some(Box::new(DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(4))))
    }
    fn val_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Pair>>> {
        self.calls.push("val_dataloader".into());
        let (x, y) = self.val.as_ref().expect("setup ran first");
        Ok(vec![Box::new(DataLoader::new(TensorDataset::new((x.shallow_clone(), y.shallow_clone()))?).batch_size(3))])
    }
    fn test_dataloader(&mut self) -> lit::Result<Vec<BoxLoader<Pair>>> {
        self.calls.push("test_dataloader".into());
        self.val_dataloader()
    }
    fn teardown(&mut self, stage: Stage) -> lit::Result<()> {
        self.calls.push(format!("teardown {}", stage.as_str()));
        Ok(())
    }
}

#[lightning_module]
struct Regressor {
    vs: nn::VarStore,
    fc: nn::Linear,
    val_batches: usize,
}

#[lightning_module]
impl Regressor {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root(), 2, 1, Default::default());
        Regressor { vs, fc, val_batches: 0 }
    }
    fn training_step(&mut self, (x, y): Pair) -> Tensor {
        x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean)
    }
    fn validation_step(&mut self, (x, y): Pair, cx: &mut Ctx) {
        self.val_batches += 1;
        cx.log("val_loss", x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean));
    }
    fn test_step(&mut self, (x, y): Pair, cx: &mut Ctx) {
        cx.log("test_loss", x.apply(&self.fc).mse_loss(&y, lit::tch::Reduction::Mean));
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
}

fn trainer(root: &std::path::Path) -> lit::Result<Trainer> {
    Trainer::builder()
        .max_epochs(2)
        .num_sanity_val_steps(0)
        .default_root_dir(root)
        .enable_progress_bar(false)
        .enable_checkpointing(false)
        .logger(false)
        .build()
}

#[test]
fn a_datamodule_feeds_fit_and_test_in_lightnings_order() -> lit::Result<()> {
    let root = temp_dir("datamodule");
    let mut dm = Numbers { dir: root.clone(), calls: Vec::new(), train: None, val: None, give_train: true };
    let mut model = Regressor::new();
    let mut trainer = trainer(&root)?;
    trainer.fit_datamodule(&mut model, &mut dm)?;
    assert_eq!(trainer.global_step(), 2 * 6);
    assert_eq!(model.val_batches, 2 * 2);
    let metrics = trainer.test_datamodule(&mut model, &mut dm)?;
    assert!(metrics[0]["test_loss"].is_finite());
    assert_eq!(
        dm.calls,
        [
            "prepare_data",
            "setup fit",
            "train_dataloader",
            "val_dataloader",
            "teardown fit",
            "prepare_data",
            "setup test",
            "test_dataloader",
            "val_dataloader",
            "teardown test"
        ]
    );
    Ok(())
}

#[test]
fn a_datamodule_without_a_training_loader_is_an_error_and_still_torn_down() -> lit::Result<()> {
    let root = temp_dir("datamodule-missing");
    let mut dm = Numbers { dir: root.clone(), calls: Vec::new(), train: None, val: None, give_train: false };
    let message = trainer(&root)?.fit_datamodule(&mut Regressor::new(), &mut dm).unwrap_err().to_string();
    assert!(message.contains("DataModule::train_dataloader") && message.contains("no loader"), "{message}");
    assert_eq!(dm.calls.last().map(String::as_str), Some("teardown fit"));
    Ok(())
}
