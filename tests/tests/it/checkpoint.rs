//! Checkpoint files: atomic writes, and clear errors for files that do not fit.

use lit::checkpoint::Checkpoint;
use lit::prelude::*;

use crate::common::temp_dir;

#[hparams]
pub struct SmallConfig {
    pub width: i64,
}

#[lightning_module]
struct Small {
    vs: nn::VarStore,
    layer: nn::Linear,
    #[hparams]
    cfg: SmallConfig,
}

#[lightning_module]
impl Small {
    fn new(cfg: SmallConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 2, cfg.width, Default::default());
        Small { vs, layer, cfg }
    }
    fn training_step(&mut self, (x, _y): (Tensor, Tensor)) -> Tensor {
        self.layer.forward(&x).sum(Kind::Float)
    }
}

#[hparams]
pub struct OtherConfig {
    pub width: i64,
    pub depth: i64,
}

#[lightning_module]
struct Other {
    vs: nn::VarStore,
    #[hparams]
    cfg: OtherConfig,
}

#[lightning_module]
impl Other {
    fn new(cfg: OtherConfig) -> Self {
        Other { vs: nn::VarStore::new(Device::Cpu), cfg }
    }
}

fn saved(name: &str, width: i64) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let path = dir.join("small.ckpt");
    let mut trainer = Trainer::builder().accelerator("cpu").build().unwrap();
    trainer.save_checkpoint(&path, &mut Small::new(SmallConfig { width })).unwrap();
    path
}

fn load_error<T>(result: lit::Result<T>) -> String {
    match result {
        Err(e @ lit::Error::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!("expected a checkpoint error, got {other:?}"),
        Ok(_) => panic!("expected a checkpoint error"),
    }
}

#[test]
fn writes_are_atomic_and_readable() {
    let path = saved("ckpt-atomic", 3);
    // Overwriting leaves one complete file and no temporary files behind.
    let mut trainer = Trainer::builder().accelerator("cpu").build().unwrap();
    trainer.save_checkpoint(&path, &mut Small::new(SmallConfig { width: 3 })).unwrap();
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["small.ckpt"]);
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.meta.format_version, lit::checkpoint::FORMAT_VERSION);
    assert_eq!(ckpt.meta.hparams, Some(serde_json::json!({"width": 3})));
    let names: Vec<&String> = ckpt.tensors().keys().filter(|k| !k.starts_with(lit::checkpoint::STATE_PREFIX)).collect();
    assert_eq!(names, ["layer.bias", "layer.weight"], "tensors are named as in the VarStore");
    assert!(ckpt.tensors().contains_key("__lit__/rng.cpu"), "the random generator's state is stored");
}

#[test]
fn a_checkpoint_of_another_shape_names_the_variables() {
    let path = saved("ckpt-shape", 3);
    // Same hparams type, but the saved weights are forced into a wider module.
    let ckpt = Checkpoint::load(&path).unwrap();
    let mut wide = Small::new(SmallConfig { width: 5 });
    let e = load_error(ckpt.load_into(&mut wide.vs));
    assert!(e.contains("wrong shapes") && e.contains("`layer.weight` (stored [3, 2], expected [5, 2])"), "{e}");
    let mut empty = Other::new(OtherConfig { width: 1, depth: 1 });
    let e = load_error(ckpt.load_into(&mut empty.vs));
    assert!(e.contains("unexpected variables [\"layer.bias\", \"layer.weight\"]"), "{e}");
}

#[test]
fn hparams_that_no_longer_deserialise_are_an_error() {
    let path = saved("ckpt-hparams", 3);
    let e = load_error(Other::load_from_checkpoint(&path));
    assert!(e.contains("hparams no longer deserialise") && e.contains("missing field `depth`"), "{e}");
}

#[test]
fn broken_files_are_errors() {
    let path = saved("ckpt-broken", 3);
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let e = load_error(Small::load_from_checkpoint(&path));
    assert!(e.contains("not a valid safetensors file"), "{e}");

    std::fs::write(&path, b"hello").unwrap();
    let e = load_error(Small::load_from_checkpoint(&path));
    assert!(e.contains("small.ckpt") && e.contains("not a valid safetensors file"), "{e}");

    let key = b"\\\"format_version\\\":2";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("the metadata holds the format version");
    let mut patched = bytes.clone();
    patched[at + key.len() - 1] = b'7';
    std::fs::write(&path, &patched).unwrap();
    let e = load_error(Small::load_from_checkpoint(&path));
    assert!(e.contains("unknown format version Some(7)"), "{e}");

    let e = Small::load_from_checkpoint(path.with_file_name("absent.ckpt")).err().expect("an error");
    assert!(matches!(e, lit::Error::Io { .. }) && e.to_string().contains("absent.ckpt"), "{e}");
}

/// The metadata record (hparams, loop position, optimizer options) is covered by a checksum as
/// the tensors are: one changed digit, or a removed checksum, is an error naming the problem.
#[test]
fn tampered_metadata_is_an_error() {
    let path = saved("ckpt-tampered", 3);
    let bytes = std::fs::read(&path).unwrap();
    let find = |key: &[u8]| bytes.windows(key.len()).position(|w| w == key).expect("the key is in the header");

    let mut edited = bytes.clone();
    let at = find(b"\\\"width\\\":3");
    edited[at + b"\\\"width\\\":3".len() - 1] = b'4';
    std::fs::write(&path, &edited).unwrap();
    let e = load_error(Checkpoint::load(&path));
    assert!(e.contains("small.ckpt") && e.contains("metadata record is corrupt or was edited"), "{e}");

    let mut unchecked = bytes.clone();
    let at = find(b"\"lit.crc32\"");
    unchecked[at + "\"lit.crc3".len()] = b'3';
    std::fs::write(&path, &unchecked).unwrap();
    let e = load_error(Small::load_from_checkpoint(&path));
    assert!(e.contains("the metadata record has no checksum (`lit.crc32`)"), "{e}");

    std::fs::write(&path, &bytes).unwrap();
    assert!(Checkpoint::load(&path).is_ok(), "the untouched file loads");
}

/// A file that is not a checkpoint at all (here a PNG) says so.
#[test]
fn a_file_that_is_not_a_checkpoint_says_so() {
    let path = temp_dir("ckpt-png").join("picture.png");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.resize(200, 7);
    std::fs::write(&path, &png).unwrap();
    let e = load_error(Checkpoint::load(&path));
    assert!(e.contains("picture.png") && e.contains("not a lit checkpoint"), "{e}");
}

/// Temporary files that a killed writer left behind (`.NAME.tmp-PID-N` of a process that no
/// longer runs) are removed by the next write of NAME; nothing else is.
#[cfg(target_os = "linux")]
#[test]
fn stale_temporary_files_of_a_killed_writer_are_removed() {
    let path = saved("ckpt-stale", 3);
    let dir = path.parent().unwrap();
    // Above Linux's largest pid (4194304): no such process runs.
    let stale = ".small.ckpt.tmp-4194999-0";
    let kept = [
        format!(".small.ckpt.tmp-{}-99", std::process::id()),
        ".other.ckpt.tmp-4194999-0".to_string(),
        "small.ckpt.tmp-4194999-0".to_string(),
        ".small.ckpt.tmp-abc-0".to_string(),
        "notes.txt".to_string(),
    ];
    for name in kept.iter().map(String::as_str).chain([stale]) {
        std::fs::write(dir.join(name), b"partial").unwrap();
    }
    let mut trainer = Trainer::builder().accelerator("cpu").build().unwrap();
    trainer.save_checkpoint(&path, &mut Small::new(SmallConfig { width: 3 })).unwrap();
    assert!(!dir.join(stale).exists(), "the dead writer's temporary file is gone");
    for name in &kept {
        assert!(dir.join(name).exists(), "{name} is not a stale temporary of small.ckpt and stays");
    }
}

// ----- the module's own entries -----

/// A module that saves a counter of its own in checkpoints and records what it is handed back.
#[lightning_module]
struct Remembers {
    vs: nn::VarStore,
    layer: nn::Linear,
    #[hparams]
    cfg: SmallConfig,
    /// Training steps taken, saved by `on_save_checkpoint`.
    steps: i64,
    /// The `steps` entry of every checkpoint handed to `on_load_checkpoint`.
    loaded: Vec<i64>,
}

#[lightning_module]
impl Remembers {
    fn new(cfg: SmallConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 2, cfg.width, Default::default());
        Remembers { vs, layer, cfg, steps: 0, loaded: Vec::new() }
    }
    fn training_step(&mut self, (x, _y): (Tensor, Tensor)) -> Tensor {
        self.steps += 1;
        self.layer.forward(&x).sum(Kind::Float)
    }
    fn test_step(&mut self, (x, _y): (Tensor, Tensor), cx: &mut Ctx) {
        cx.log("test_sum", self.layer.forward(&x).sum(Kind::Float));
    }
    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.1).into()
    }
    fn on_save_checkpoint(&mut self, checkpoint: &mut serde_json::Map<String, serde_json::Value>) {
        checkpoint.insert("steps".into(), self.steps.into());
    }
    fn on_load_checkpoint(&mut self, checkpoint: &serde_json::Map<String, serde_json::Value>) {
        self.loaded.push(checkpoint["steps"].as_i64().unwrap());
    }
}

#[test]
fn on_load_checkpoint_gets_what_on_save_checkpoint_saved_wherever_a_checkpoint_is_read() -> lit::Result<()> {
    // Lightning hands the checkpoint to `on_load_checkpoint` when `fit` resumes, when
    // `validate`/`test`/`predict` take a `ckpt_path` (`_checkpoint_connector.restore_model`), and
    // in `load_from_checkpoint` (`_load_state`).
    let dir = temp_dir("ckpt-module-entries");
    let path = dir.join("trained.ckpt");
    let batches = || Batches::new(crate::common::regression_batches(3));
    let mut model = Remembers::new(SmallConfig { width: 1 });
    let mut trainer = crate::common::quiet_trainer(&dir).max_epochs(1).build()?;
    trainer.fit(&mut model, batches(), ())?;
    trainer.save_checkpoint(&path, &mut model)?;
    assert_eq!(model.steps, 3);

    let mut fresh = Remembers::new(SmallConfig { width: 1 });
    let mut trainer = crate::common::quiet_trainer(&dir).max_epochs(2).build()?;
    trainer.fit_from_checkpoint(&mut fresh, batches(), (), &path)?;
    assert_eq!(fresh.loaded, [3], "fit resumed");

    let mut tested = Remembers::new(SmallConfig { width: 1 });
    let metrics = trainer.ckpt_path(path.to_str().unwrap()).test(&mut tested, batches())?;
    assert_eq!(tested.loaded, [3], "test with ckpt_path");
    assert!(tested.layer.ws.equal(&model.layer.ws), "and its weights");
    assert!(metrics[0].contains_key("test_sum"));

    let reloaded = Remembers::load_from_checkpoint(&path)?;
    assert_eq!(reloaded.loaded, [3], "load_from_checkpoint");
    Ok(())
}
