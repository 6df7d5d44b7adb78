//! The README's recipes, as the README writes them, run with assertions; and a check that every
//! line of code in the README's Rust blocks is in a test or an example, so that a recipe that
//! stops compiling or working fails here.

use std::path::Path;

use lit::prelude::*;
use lit::tch;

use crate::common::{repo_root, run_in_own_process, temp_dir};

/// The Rust blocks of `README.md`: `(first line number, text)`.
fn readme_rust_blocks() -> Vec<(usize, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == "```rust" => current = Some((i + 2, String::new())),
            Some(_) if trimmed == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Every `.rs` file under `dir`, concatenated.
fn sources_under(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// `s` without whitespace and without the commas rustfmt puts before a closing bracket (so that
/// `struct S { a: usize }` on one line in the README matches it spread over three).
fn without_whitespace(s: &str) -> String {
    let squeezed: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed.replace(",}", "}").replace(",)", ")").replace(",]", "]")
}

/// Each code line (its comment and indentation left out) of each Rust block in the README is
/// somewhere in the tests, the examples (which a test runs) or the UI programs (whose compiler
/// output a test compares): a recipe edited in one place and not the other fails here.
#[test]
fn every_line_of_the_readme_s_rust_blocks_is_tested() {
    let root = repo_root();
    let mut code = String::new();
    for dir in ["tests/tests", "examples/src", "ui-tests/tests"] {
        sources_under(&root.join(dir), &mut code);
    }
    let code = without_whitespace(&code);
    let blocks = readme_rust_blocks();
    assert!(blocks.len() >= 10, "the README's Rust blocks were not found: {}", blocks.len());
    let mut missing = Vec::new();
    for (start, block) in &blocks {
        for (i, line) in block.lines().enumerate() {
            let line = line.split(" //").next().unwrap().trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            if !code.contains(&without_whitespace(line)) {
                missing.push(format!("README.md:{}: {line}", start + i));
            }
        }
    }
    assert!(missing.is_empty(), "README lines found in no test or example:\n{}", missing.join("\n"));
}

// ----- "A module" -----

mod a_module {
    use std::path::Path;

    use lit::prelude::*;
    use lit::tch;

    use crate::common::temp_dir;

    #[hparams] // Clone, Debug, Serialize, Deserialize, lit::Hparams
    pub struct Config {
        #[hparams(default = 256)]
        pub hidden: i64,
        #[hparams(default = 1e-3)]
        pub lr: f64,
    }

    #[lightning_module]
    pub struct LitMnist {
        vs: nn::VarStore, // found by type: device moves, freeze, checkpoints
        l1: nn::Linear,
        l2: nn::Linear,
        #[hparams]
        cfg: Config, // saved in every checkpoint
    }

    #[lightning_module]
    impl LitMnist {
        fn new(cfg: Config) -> Self {
            // what load_from_checkpoint calls
            let vs = nn::VarStore::new(Device::Cpu);
            let l1 = nn::linear(vs.root() / "l1", 784, cfg.hidden, Default::default());
            let l2 = nn::linear(vs.root() / "l2", cfg.hidden, 10, Default::default());
            LitMnist { vs, l1, l2, cfg }
        }

        fn forward(&self, x: &Tensor) -> Tensor {
            // a plain method
            self.l2.forward(&self.l1.forward(x).relu())
        }

        fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
            let loss = self.forward(&x).cross_entropy_for_logits(&y);
            cx.log("train_loss", &loss).prog_bar(true);
            loss
        }

        fn validation_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) {
            cx.log("val_acc", self.forward(&x).accuracy_for_logits(&y));
        }

        fn test_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) {
            cx.log("test_acc", self.forward(&x).accuracy_for_logits(&y));
        }

        fn configure_optimizers(&self) -> Optimizers {
            Adam::new(self.cfg.lr).into()
        }
    }

    /// Separable digits: 10 classes, each a bump in a different eighth of the 784 inputs.
    pub fn digits(n: i64, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
        let x = Tensor::randn([n, 784], (Kind::Float, Device::Cpu)) * 0.1
            + y.one_hot(10).to_kind(Kind::Float).repeat([1, 79]).narrow(1, 0, 784);
        (x, y)
    }

    pub fn loader(n: i64, seed: i64) -> DataLoader<lit::data::TensorDataset<(Tensor, Tensor)>> {
        DataLoader::new(lit::data::TensorDataset::new(digits(n, seed)).unwrap()).batch_size(32)
    }

    /// The README's first program, in a directory of its own (it writes `mnist.ckpt` and the
    /// default logs into the current directory).
    #[test]
    #[ignore = "run in its own process by readme_a_module"]
    fn readme_a_module_child() -> lit::Result<()> {
        std::env::set_current_dir(temp_dir("readme-a-module")).unwrap();
        let (train_loader, val_loader, test_loader) = (loader(256, 1), loader(64, 2), loader(64, 3));
        // --- from the README ---
        let mut model = LitMnist::new(Config::default());
        let mut trainer = Trainer::builder().max_epochs(3).build()?;
        trainer.fit(&mut model, train_loader, val_loader)?;
        let metrics = trainer.test(&mut model, test_loader)?; // one map of metrics per test loader
        trainer.save_checkpoint("mnist.ckpt", &mut model)?;
        let model = LitMnist::load_from_checkpoint("mnist.ckpt")?;
        // --- end ---
        assert_eq!(metrics.len(), 1);
        assert!(metrics[0]["test_acc"] > 0.9, "{metrics:?}");
        assert_eq!(trainer.current_epoch(), 3);
        // As in Lightning, the test's metrics replace fit's in `callback_metrics`.
        assert_eq!(trainer.callback_metrics().get("test_acc"), Some(&metrics[0]["test_acc"]));
        assert_eq!(model.hparams().hidden, 256);
        assert!(Path::new("lightning_logs/version_0/metrics.csv").exists());
        // The reloaded model is the trained one.
        let mut reloaded = model;
        let again = trainer.test(&mut reloaded, loader(64, 3))?;
        assert_eq!(again[0]["test_acc"], metrics[0]["test_acc"]);
        Ok(())
    }
}

#[test]
fn readme_a_module() {
    run_in_own_process("readme::a_module::readme_a_module_child");
}

// ----- "Optimizers and schedulers": a schedule sized by the run's length -----

#[lightning_module]
struct OneCycle {
    vs: nn::VarStore,
    l: nn::Linear,
    /// The learning rates of optimizer 0's groups at the start of each training batch.
    lrs: Vec<Vec<f64>>,
}

#[lightning_module]
impl OneCycle {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = nn::linear(vs.root() / "l", 2, 1, Default::default());
        OneCycle { vs, l, lrs: Vec::new() }
    }

    fn on_train_batch_start(&mut self, cx: &mut Ctx) {
        self.lrs.push(cx.learning_rates()[0].clone());
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.l.forward(&x).mse_loss(&y, tch::Reduction::Mean)
    }

    // --- from the README ---
    fn configure_optimizers(&mut self, cx: &mut Ctx) -> Optimizers {
        let total = cx.trainer().estimated_stepping_batches().unwrap_or(1);
        Optimizers::from(Sgd::new(0.1))
            .scheduler(SchedulerConfig::new(OneCycleLr::new(0.1, total)).interval(Interval::Step))
    }
    // --- end ---
}

#[test]
fn readme_one_cycle_sized_by_estimated_stepping_batches() -> lit::Result<()> {
    // 5 batches, accumulated 2 by 2 (3 steps an epoch), 3 epochs: 9 steps. The first batch
    // trains at OneCycleLR's initial rate (max_lr / 25), the last (the 9th step) at its final
    // one (max_lr / 25 / 1e4); a schedule sized too short would fail the run.
    let mut model = OneCycle::new();
    let mut trainer =
        crate::common::quiet_trainer(&temp_dir("readme-one-cycle")).max_epochs(3).accumulate_grad_batches(2).build()?;
    trainer.fit(&mut model, Batches::new(crate::common::regression_batches(5)), ())?;
    let lrs: Vec<f64> = model.lrs.iter().map(|groups| groups[0]).collect();
    assert_eq!(lrs.len(), 15, "{lrs:?}");
    assert!((lrs[0] - 0.1 / 25.0).abs() < 1e-12, "{lrs:?}");
    assert!((lrs[14] - 0.1 / 25.0 / 1e4).abs() < 1e-12, "{lrs:?}");
    assert!(lrs.iter().all(|&lr| lr <= 0.1 + 1e-12));
    Ok(())
}

// ----- "Checkpoints and callbacks" -----

/// A module with a `feature_extractor` (the finetuning recipe's backbone) and a head.
#[lightning_module]
struct Finetuned {
    vs: nn::VarStore,
    features: nn::Linear,
    head: nn::Linear,
    /// The learning rates of optimizer 0's groups at the start of each training batch.
    lrs: Vec<Vec<f64>>,
}

#[lightning_module]
impl Finetuned {
    fn new() -> Self {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let features = nn::linear(vs.root() / "feature_extractor", 2, 3, Default::default());
        let head = nn::linear(vs.root() / "head", 3, 1, Default::default());
        Finetuned { vs, features, head, lrs: Vec::new() }
    }

    fn on_train_batch_start(&mut self, cx: &mut Ctx) {
        self.lrs.push(cx.learning_rates()[0].clone());
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> Tensor {
        let loss = self.head.forward(&self.features.forward(&x).relu()).mse_loss(&y, tch::Reduction::Mean);
        cx.log("train_loss", &loss);
        loss
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.01).into()
    }
}

// --- from the README ---
struct FeatureExtractorFreezeUnfreeze {
    unfreeze_at_epoch: usize,
}

impl BaseFinetuning for FeatureExtractorFreezeUnfreeze {
    fn freeze_before_training(&mut self, module: &ModuleParams) -> lit::Result<()> {
        module.freeze(&["feature_extractor"], true)
    }
    fn finetune_function(&mut self, module: &ModuleParams, epoch: usize, opt: &mut dyn Optimizer) -> lit::Result<()> {
        if epoch == self.unfreeze_at_epoch {
            module.unfreeze_and_add_param_group(&["feature_extractor"], opt, None, 10.0, true)?;
        }
        Ok(())
    }
}
// --- end ---

/// The callback recipes with the README's default Trainers (which write their checkpoints and
/// logs into the current directory), in a directory of their own.
#[test]
#[ignore = "run in its own process by readme_callbacks"]
fn readme_callbacks_child() -> lit::Result<()> {
    std::env::set_current_dir(temp_dir("readme-callbacks")).unwrap();
    let batches = || Batches::new(crate::common::regression_batches(3));

    // --- from the README ---
    let swa = StochasticWeightAveraging::new(0.1)?.swa_epoch_start(2)?;
    let mut trainer = Trainer::builder().max_epochs(5).callback(swa).build()?;
    // --- end ---
    let mut model = Finetuned::new();
    trainer.fit(&mut model, batches(), ())?;
    assert_eq!(trainer.current_epoch(), 5);
    // Epoch 1 at the module's 0.01; from epoch 2 (counted from 1) SWALR's, annealing to 0.1.
    let lrs: Vec<f64> = model.lrs.iter().map(|groups| groups[0]).collect();
    assert_eq!(lrs.len(), 15, "{lrs:?}");
    assert!(lrs[..3].iter().all(|&lr| lr == 0.01), "{lrs:?}");
    assert!(lrs[3..].windows(2).all(|w| w[1] >= w[0]) && lrs[14] > 0.01, "{lrs:?}");

    // --- from the README ---
    let schedule = Finetuning::new(FeatureExtractorFreezeUnfreeze { unfreeze_at_epoch: 10 });
    let mut trainer = Trainer::builder().max_epochs(12).callback(schedule).build()?;
    // --- end ---
    let mut model = Finetuned::new();
    let before = model.features.ws.copy();
    trainer.fit(&mut model, batches(), ())?;
    // Frozen for epochs 0–9, then trained in a second parameter group at a tenth of the rate.
    assert_eq!(model.lrs.len(), 36);
    assert!(model.lrs[..30].iter().all(|groups| groups == &[0.01]), "{:?}", model.lrs);
    assert!(model.lrs[30..].iter().all(|g| g.len() == 2 && (g[1] - 0.001).abs() < 1e-12), "{:?}", model.lrs);
    assert!(!model.features.ws.equal(&before));

    // --- from the README ---
    let bar = TqdmProgressBar::new().refresh_rate(10).get_metrics(|mut items| {
        items.remove("v_num");
        items
    });
    #[allow(unused_mut)]
    let mut trainer = Trainer::builder().callback(bar).build()?;
    // --- end ---
    assert!(trainer.progress_bar_callback().is_some());
    Ok(())
}

#[test]
fn readme_callbacks() {
    run_in_own_process("readme::readme_callbacks_child");
}

// ----- "Inference in production" and "Finding the learning rate" -----

#[lightning_module]
struct Exported {
    vs: nn::VarStore,
    l: nn::Linear,
    #[example_input]
    example: Tensor,
    #[hparams]
    cfg: LrConfig,
}

#[hparams]
pub struct LrConfig {
    #[hparams(default = 0.1)]
    pub lr: f64,
}

#[lightning_module]
impl Exported {
    fn new(cfg: LrConfig) -> Self {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = nn::linear(vs.root() / "l", 2, 1, Default::default());
        Exported { vs, l, example: Tensor::ones([4, 2], (Kind::Float, Device::Cpu)), cfg }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.l.forward(x)
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.forward(&x).mse_loss(&y, tch::Reduction::Mean)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(self.cfg.lr).into()
    }
}

/// The recipes that write into the current directory, in a directory of their own.
#[test]
#[ignore = "run in its own process by readme_export_and_lr_find"]
fn readme_export_and_lr_find_child() -> lit::Result<()> {
    std::env::set_current_dir(temp_dir("readme-export")).unwrap();
    let mut model = Exported::new(LrConfig::default());
    // --- from the README ---
    model.to_torchscript()?.save("model.pt")?;
    model.to_onnx("model.onnx")?;
    // --- end ---
    let loaded = tch::CModule::load("model.pt").map_err(lit::Error::msg)?;
    let x = Tensor::randn([7, 2], (Kind::Float, Device::Cpu));
    let traced = loaded.forward_ts(&[x.shallow_clone()]).map_err(lit::Error::msg)?;
    assert!(traced.allclose(&tch::no_grad(|| model.forward(&x)), 1e-6, 1e-6, false));
    assert!(std::fs::metadata("model.onnx").unwrap().len() > 0);

    let mut train = Batches::new(crate::common::regression_batches(8));
    // --- from the README ---
    let mut trainer = Trainer::builder().max_epochs(3).build()?;
    let finder = Tuner::new(&mut trainer).lr_find(&mut model, &mut train, (), LrFindOptions::default())?;
    finder.plot("lr_find.svg", true)?; // loss against learning rate, the suggestion in red
    let suggested = finder.suggestion(); // also written to the module's `lr` hyper-parameter
    trainer.fit(&mut model, &mut train, ())?; // so `configure_optimizers` trains with it
    // --- end ---
    assert!(Path::new("lr_find.svg").exists());
    assert_eq!(Some(model.hparams().lr), suggested);
    Ok(())
}

#[test]
fn readme_export_and_lr_find() {
    run_in_own_process("readme::readme_export_and_lr_find_child");
}

// ----- "Metrics" -----

mod metrics_recipe {
    use lit::metrics::{Accuracy, Auroc, Average, MetricCollection};
    use lit::prelude::*;
    use lit::tch;

    #[lightning_module]
    pub struct Net {
        vs: nn::VarStore,
        l1: nn::Linear,
        acc: Accuracy,
        scores: MetricCollection,
    }

    #[lightning_module]
    impl Net {
        pub fn new() -> Self {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let l1 = nn::linear(vs.root() / "l1", 4, 10, Default::default());
            let acc = Accuracy::multiclass(10).average(Average::Macro).top_k(2);
            let scores = MetricCollection::new().with("auroc", Auroc::multiclass(10)).prefix("val_");
            Net { vs, l1, acc, scores }
        }

        fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
            self.l1.forward(&x).cross_entropy_for_logits(&y)
        }

        // --- from the README ---
        fn validation_step(&mut self, (x, y): (Tensor, Tensor), cx: &mut Ctx) -> lit::Result<()> {
            let logits = self.l1.forward(&x);
            self.acc.update(&logits, &y)?; // or `forward`: also returns the batch's value
            cx.log("val_acc", &self.acc); // computed at the epoch's end, then reset
            self.scores.update(&logits, &y)?;
            cx.log_dict(&self.scores); // "val_auroc"
            Ok(())
        }
        // --- end ---

        fn configure_optimizers(&self) -> Optimizers {
            Sgd::new(0.0).into()
        }
    }

    pub fn batches() -> Vec<(Tensor, Tensor)> {
        tch::manual_seed(4);
        (0..3)
            .map(|i| {
                let n = 5 + i;
                (
                    Tensor::randn([n, 4], (Kind::Float, Device::Cpu)),
                    Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
                )
            })
            .collect()
    }

    /// The metrics of the whole validation set, computed directly.
    pub fn expected(net: &Net) -> (f64, f64) {
        let (acc, auroc) = (Accuracy::multiclass(10).average(Average::Macro).top_k(2), Auroc::multiclass(10));
        for (x, y) in batches() {
            let logits = tch::no_grad(|| net.l1.forward(&x));
            acc.update(&logits, &y).unwrap();
            auroc.update(&logits, &y).unwrap();
        }
        (acc.compute().unwrap().double_value(&[]), auroc.compute().unwrap().double_value(&[]))
    }
}

#[test]
fn readme_metrics_logged_as_objects() -> lit::Result<()> {
    let mut net = metrics_recipe::Net::new();
    let mut trainer = crate::common::quiet_trainer(&temp_dir("readme-metrics")).build()?;
    let results = trainer.validate(&mut net, Batches::new(metrics_recipe::batches()))?;
    let (acc, auroc) = metrics_recipe::expected(&net);
    assert!((results[0]["val_acc"] - acc).abs() < 1e-6, "{results:?} {acc}");
    assert!((results[0]["val_auroc"] - auroc).abs() < 1e-6, "{results:?} {auroc}");
    // Reset after the epoch: a second validation gives the same values, not a running total.
    let again = trainer.validate(&mut net, Batches::new(metrics_recipe::batches()))?;
    assert_eq!(again[0]["val_acc"], results[0]["val_acc"]);
    Ok(())
}
