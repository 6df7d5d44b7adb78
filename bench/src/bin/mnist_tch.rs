//! The mnist example's job (`examples/src/bin/mnist.rs`, `mnist fit`) written by hand in tch: the
//! limit that `bench/end_to_end.sh` times lit and Lightning against.
//!
//! ```text
//! scripts/with-torch cargo build --release -p lit-bench --bin mnist_tch
//! scripts/with-torch target/release/mnist_tch [--data_dir DIR] [--max_epochs N] [--root DIR]
//! ```
//!
//! The same files (read with `lit::data::Mnist`, as the example reads them), split (55,000/5,000
//! by a seeded permutation), model (Linear(784, 256) → relu → Linear(256, 10)), optimizer (Adam
//! 1e-3 through libtorch's fused kernel, the update lit's Trainer calls), batches (64 shuffled,
//! gathered by `index_select`; 1000 for validation and test), and the same work around the loop:
//! 2 sanity validation batches, validation after every epoch, the training loss written to
//! `ROOT/metrics.csv` every 50 steps and the validation metrics every epoch, one line of progress
//! per epoch, the weights saved to `ROOT/checkpoints/` after every epoch (keeping the last), then
//! the test, a checkpoint saved to `$TMPDIR`, reloaded, and its predictions on 100 test images
//! compared. No worker threads: a batch is one `index_select`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lit::data::Mnist;
use lit::optim::OptimizerConfig;
use lit::prelude::*;
use lit::tch;

struct Args {
    data_dir: PathBuf,
    max_epochs: usize,
    root: PathBuf,
    hidden: i64,
    lr: f64,
    batch_size: i64,
    eval_batch_size: i64,
    val_size: i64,
    seed: i64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            data_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist"),
            max_epochs: 3,
            root: PathBuf::from("mnist_tch_logs"),
            hidden: 256,
            lr: 1e-3,
            batch_size: 64,
            eval_batch_size: 1000,
            val_size: 5000,
            seed: 42,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--data_dir" => args.data_dir = value.into(),
                "--max_epochs" => args.max_epochs = value.parse().map_err(|e| bad(&e))?,
                "--root" => args.root = value.into(),
                "--hidden" => args.hidden = value.parse().map_err(|e| bad(&e))?,
                "--lr" => args.lr = value.parse().map_err(|e| bad(&e))?,
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(args)
    }
}

struct Model {
    vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
}

impl Model {
    fn new(hidden: i64) -> Model {
        let vs = nn::VarStore::new(Device::Cpu);
        let l1 = nn::linear(vs.root() / "l1", 784, hidden, Default::default());
        let l2 = nn::linear(vs.root() / "l2", hidden, 10, Default::default());
        Model { vs, l1, l2 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.l1).relu().apply(&self.l2)
    }

    /// Mean loss and accuracy over `(x, y)` in batches of `bs`, without gradients.
    fn evaluate(&self, x: &Tensor, y: &Tensor, bs: i64, max_batches: Option<usize>) -> (f64, f64) {
        let _guard = tch::no_grad_guard();
        let n = x.size()[0];
        let (mut loss, mut acc, mut count) = (0.0, 0.0, 0.0);
        for (b, i) in (0..n).step_by(bs as usize).enumerate() {
            if max_batches.is_some_and(|m| b >= m) {
                break;
            }
            let len = bs.min(n - i);
            let (xb, yb) = (x.narrow(0, i, len), y.narrow(0, i, len));
            let logits = self.forward(&xb);
            // Per-batch means averaged with batch-size weights, as Lightning's epoch-end reduction.
            loss += logits.cross_entropy_for_logits(&yb).double_value(&[]) * len as f64;
            acc += logits.accuracy_for_logits(&yb).double_value(&[]) * len as f64;
            count += len as f64;
        }
        (loss / count, acc / count)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let args = Args::parse()?;
    tch::manual_seed(args.seed);
    let ckpt_dir = args.root.join("checkpoints");
    fs::create_dir_all(&ckpt_dir)?;
    let csv_path = args.root.join("metrics.csv");
    let mut csv = fs::File::create(&csv_path)?;
    let mut row = |line: String| writeln!(csv, "{line}");
    row("epoch,step,train_loss,val_loss,val_acc".into())?;

    let full = Mnist::train(&args.data_dir)?;
    let n = full.images.size()[0];
    let val = args.val_size.min(n);
    let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
    let (train_idx, val_idx) = (perm.narrow(0, 0, n - val), perm.narrow(0, n - val, val));
    let (train_x, train_y) = (full.images.index_select(0, &train_idx), full.labels.index_select(0, &train_idx));
    let (val_x, val_y) = (full.images.index_select(0, &val_idx), full.labels.index_select(0, &val_idx));

    let model = Model::new(args.hidden);
    let mut opt = Adam::new(args.lr).build(&model.vs)?;
    model.evaluate(&val_x, &val_y, args.eval_batch_size, Some(2));

    let n_train = train_x.size()[0];
    let mut step = 0usize;
    let mut last_ckpt: Option<PathBuf> = None;
    for epoch in 0..args.max_epochs {
        let order = Tensor::randperm(n_train, (Kind::Int64, Device::Cpu));
        let mut loss = None;
        for i in (0..n_train).step_by(args.batch_size as usize) {
            let idx = order.narrow(0, i, args.batch_size.min(n_train - i));
            let (x, y) = (train_x.index_select(0, &idx), train_y.index_select(0, &idx));
            let l = model.forward(&x).cross_entropy_for_logits(&y);
            opt.zero_grad();
            l.backward();
            opt.step();
            step += 1;
            if step.is_multiple_of(50) {
                row(format!("{epoch},{},{},,", step - 1, l.double_value(&[])))?;
            }
            loss = Some(l);
        }
        let (val_loss, val_acc) = model.evaluate(&val_x, &val_y, args.eval_batch_size, None);
        row(format!("{epoch},{},,{val_loss},{val_acc}", step - 1))?;
        let train_loss = loss.map_or(f64::NAN, |l| l.double_value(&[]));
        eprintln!("epoch {epoch}: train_loss {train_loss:.4} val_loss {val_loss:.4} val_acc {val_acc:.4}");
        let path = ckpt_dir.join(format!("epoch={epoch}-step={step}.ot"));
        model.vs.save(&path)?;
        if let Some(old) = last_ckpt.replace(path) {
            fs::remove_file(&old)?;
        }
    }

    let test = Mnist::test(&args.data_dir)?;
    let (test_loss, test_acc) = model.evaluate(&test.images, &test.labels, args.eval_batch_size, None);
    println!("test_loss: {test_loss:.4}");
    println!("test_acc: {test_acc:.4}");
    println!("test accuracy: {:.2}%", test_acc * 100.0);
    println!("wall time: {:.1} s on 1 process(es)", start.elapsed().as_secs_f64());

    let path = std::env::temp_dir().join("mnist-tch.ot");
    model.vs.save(&path)?;
    let mut restored = Model::new(args.hidden);
    restored.vs.load(&path)?;
    let images = test.images.narrow(0, 0, 100);
    let same =
        tch::no_grad(|| model.forward(&images).argmax(-1, false).equal(&restored.forward(&images).argmax(-1, false)));
    println!("checkpoint {}: reloaded predictions identical: {same}", path.display());
    if (args.max_epochs >= 3 && test_acc < 0.97) || !same {
        return Err(format!("test accuracy {test_acc:.4} is below 0.97, or the reload differs").into());
    }
    Ok(())
}
