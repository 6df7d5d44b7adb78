//! A `DataModule` supplies a run's loaders around `prepare_data`, `setup` and `teardown`.

use std::path::PathBuf;

use lit::data::{BoxLoader, DataLoader, DataModule, TensorDataset};
use lit::prelude::*;

use crate::common::{quiet_trainer, temp_dir};

/// Writes its data to a file in `prepare_data`, reads and splits it in `setup`.
struct Numbers {
    dir: PathBuf,
    calls: Vec<String>,
    train: Option<(Tensor, Tensor)>,
    val: Option<(Tensor, Tensor)>,
    give_train: bool,
    /// Saved in checkpoints through `state_dict`.
    draws: u64,
    restored: Option<serde_json::Value>,
    /// Batches seen by the transfer hooks: (before, after).
    transfers: (usize, usize),
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
    fn on_before_batch_transfer<B: lit::data::Batch>(&mut self, batch: B, _dataloader_idx: usize) -> lit::Result<B> {
        self.transfers.0 += 1;
        Ok(batch)
    }
    fn on_after_batch_transfer<B: lit::data::Batch>(&mut self, batch: B, _dataloader_idx: usize) -> lit::Result<B> {
        self.transfers.1 += 1;
        Ok(batch)
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "draws": self.draws }))
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> lit::Result<()> {
        self.restored = Some(state.clone());
        Ok(())
    }
}

fn numbers(dir: &std::path::Path, give_train: bool) -> Numbers {
    Numbers {
        dir: dir.to_path_buf(),
        calls: Vec::new(),
        train: None,
        val: None,
        give_train,
        draws: 0,
        restored: None,
        transfers: (0, 0),
    }
}

#[lightning_module]
struct Regressor {
    vs: nn::VarStore,
    fc: nn::Linear,
    val_batches: usize,
    /// The validation size the data module reported, read in `on_fit_start`.
    seen_val_size: Option<i64>,
}

#[lightning_module]
impl Regressor {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root(), 2, 1, Default::default());
        Regressor { vs, fc, val_batches: 0, seen_val_size: None }
    }
    fn on_fit_start(&mut self, cx: &mut Ctx) {
        self.seen_val_size = cx.datamodule::<Numbers>().and_then(|dm| dm.val.as_ref()).map(|(x, _)| x.size()[0]);
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
    quiet_trainer(root).max_epochs(2).num_sanity_val_steps(0).build()
}

#[test]
fn a_datamodule_feeds_fit_and_test_in_lightnings_order() -> lit::Result<()> {
    let root = temp_dir("datamodule");
    let mut dm = numbers(&root, true);
    let mut model = Regressor::new();
    let mut trainer = trainer(&root)?;
    trainer.fit_datamodule(&mut model, &mut dm)?;
    assert_eq!(trainer.global_step(), 2 * 6);
    assert_eq!(model.val_batches, 2 * 2);
    assert_eq!(model.seen_val_size, Some(6), "cx.datamodule() reaches the data module");
    // Every training and validation batch went through the data module's transfer hooks.
    assert_eq!(dm.transfers, (2 * (6 + 2), 2 * (6 + 2)));
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
    let mut dm = numbers(&root, false);
    let message = trainer(&root)?.fit_datamodule(&mut Regressor::new(), &mut dm).unwrap_err().to_string();
    assert!(message.contains("DataModule::train_dataloader") && message.contains("no loader"), "{message}");
    assert_eq!(dm.calls.last().map(String::as_str), Some("teardown fit"));
    Ok(())
}

#[test]
fn checkpoints_hold_the_datamodule_state_and_resume_restores_it() -> lit::Result<()> {
    let root = temp_dir("datamodule-state");
    let mut dm = numbers(&root, true);
    dm.draws = 17;
    let mut model = Regressor::new();
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .num_sanity_val_steps(0)
        .default_root_dir(&root)
        .enable_progress_bar(false)
        .logger(false)
        .callback(ModelCheckpoint::default().dirpath(root.join("ckpt")).save_last(true))
        .build()?;
    trainer.fit_datamodule(&mut model, &mut dm)?;
    let last = root.join("ckpt").join("last.ckpt");
    let ckpt = lit::checkpoint::Checkpoint::load(&last)?;
    assert_eq!(ckpt.meta.datamodule, Some(serde_json::json!({ "draws": 17 })));

    let mut fresh = numbers(&root, true);
    let mut trainer = quiet_trainer(&root).max_epochs(2).num_sanity_val_steps(0).build()?;
    trainer.fit_datamodule_from_checkpoint(&mut Regressor::new(), &mut fresh, &last)?;
    assert_eq!(fresh.restored, Some(serde_json::json!({ "draws": 17 })));
    assert_eq!(trainer.global_step(), 2 * 6);
    Ok(())
}

#[test]
fn reload_dataloaders_every_n_epochs_asks_the_datamodule_again() -> lit::Result<()> {
    let root = temp_dir("datamodule-reload");
    let mut dm = numbers(&root, true);
    let mut trainer =
        quiet_trainer(&root).max_epochs(5).reload_dataloaders_every_n_epochs(2).num_sanity_val_steps(0).build()?;
    let mut model = Regressor::new();
    trainer.fit_datamodule(&mut model, &mut dm)?;
    let count = |name: &str| dm.calls.iter().filter(|c| *c == name).count();
    // Once at the start, then before epochs 2 and 4.
    assert_eq!(count("train_dataloader"), 3);
    assert_eq!(count("val_dataloader"), 3);
    assert_eq!(trainer.global_step(), 5 * 6);
    assert_eq!(model.val_batches, 5 * 2);
    Ok(())
}
