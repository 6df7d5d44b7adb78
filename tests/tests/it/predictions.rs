//! Writing predictions to disk as they are produced: the files read back equal what `predict`
//! returns.

use lit::callbacks::{PredictionFormat, PredictionWriter, WriteInterval, read_predictions};
use lit::data::{DataLoader, TensorDataset};
use lit::prelude::*;

use crate::common::temp_dir;

#[lightning_module]
struct Doubler {
    vs: nn::VarStore,
}

#[lightning_module]
impl Doubler {
    fn new() -> Self {
        Doubler { vs: nn::VarStore::new(Device::Cpu) }
    }
    fn training_step(&mut self, x: Tensor) -> Tensor {
        x.sum(Kind::Float)
    }
    fn predict_step(&mut self, x: Tensor) -> Tensor {
        x * 2
    }
}

/// 10 samples of 3 features in batches of 4: batches of 4, 4 and 2.
fn loader() -> DataLoader<TensorDataset<Tensor>> {
    DataLoader::new(TensorDataset::new(Tensor::arange(30, (Kind::Float, Device::Cpu)).view([10, 3])).unwrap())
        .batch_size(4)
}

fn predict_with(writer: PredictionWriter) -> lit::Result<Vec<Tensor>> {
    let mut trainer = Trainer::builder()
        .callback(writer)
        .enable_progress_bar(false)
        .enable_checkpointing(false)
        .logger(false)
        .build()?;
    trainer.predict(&mut Doubler::new(), loader())
}

#[test]
fn per_epoch_safetensors_hold_every_prediction_with_its_index() -> lit::Result<()> {
    let dir = temp_dir("predictions-epoch");
    let predicted = predict_with(PredictionWriter::new(&dir, WriteInterval::Epoch))?;
    let file = read_predictions(dir.join("predictions_dl0.safetensors"))?;
    assert!(file["predictions"].equal(&Tensor::cat(&predicted, 0)));
    assert_eq!(Vec::<i64>::try_from(&file["batch_indices"])?, (0..10).collect::<Vec<i64>>());
    Ok(())
}

#[test]
fn per_batch_safetensors_are_one_file_per_batch() -> lit::Result<()> {
    let dir = temp_dir("predictions-batch");
    let predicted = predict_with(PredictionWriter::new(&dir, WriteInterval::Batch))?;
    assert_eq!(predicted.len(), 3);
    for (i, p) in predicted.iter().enumerate() {
        let file = read_predictions(dir.join(format!("predictions_dl0_batch{i:05}.safetensors")))?;
        assert!(file["predictions"].equal(p));
        let start = 4 * i as i64;
        assert_eq!(Vec::<i64>::try_from(&file["batch_indices"])?, (start..start + p.size()[0]).collect::<Vec<_>>());
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "no temporary files are left");
    Ok(())
}

#[test]
fn json_lines_hold_one_batch_per_line() -> lit::Result<()> {
    let dir = temp_dir("predictions-jsonl");
    let predicted =
        predict_with(PredictionWriter::new(&dir, WriteInterval::Batch).format(PredictionFormat::JsonLines))?;
    let text = std::fs::read_to_string(dir.join("predictions_dl0_batch00002.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["batch_idx"], 2);
    assert_eq!(line["batch_indices"], serde_json::json!([8, 9]));
    let values: Vec<Vec<f64>> = serde_json::from_value(line["predictions"].clone()).unwrap();
    let expected: Vec<Vec<f32>> = Vec::try_from(&predicted[2])?;
    assert_eq!(values, expected.iter().map(|r| r.iter().map(|&v| v as f64).collect::<Vec<_>>()).collect::<Vec<_>>());
    Ok(())
}
