//! Inference in production: TorchScript that PyTorch loads, ONNX that onnxruntime runs, both
//! computing what `forward` computes.

use std::path::Path;
use std::process::Command;

use lit::prelude::*;

use crate::common::{quiet_trainer, temp_dir};

#[hparams]
struct NetConfig {
    #[hparams(default = 16)]
    hidden: i64,
}

/// Convolution, batch norm, pooling, dropout, reshaping and a few activations.
#[lightning_module]
struct ConvNet {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    bn: nn::BatchNorm,
    conv2: nn::Conv2D,
    ln: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    #[example_input]
    example: Tensor,
    #[hparams]
    cfg: NetConfig,
}

#[lightning_module]
impl ConvNet {
    fn new(cfg: NetConfig) -> Self {
        seed_everything(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let conv1 = nn::conv2d(&p / "conv1", 1, 4, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let bn = nn::batch_norm2d(&p / "bn", 4, Default::default());
        let conv2 = nn::conv2d(&p / "conv2", 4, 8, 3, Default::default());
        let ln = nn::layer_norm(&p / "ln", vec![32], Default::default());
        let fc1 = nn::linear(&p / "fc1", 32, cfg.hidden, Default::default());
        let fc2 = nn::linear(&p / "fc2", cfg.hidden, 3, Default::default());
        let example = input();
        ConvNet { vs, conv1, bn, conv2, ln, fc1, fc2, example, cfg }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x.apply(&self.conv1).apply_t(&self.bn, train).relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let x = x.apply(&self.conv2).leaky_relu().avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
        let x = x.flatten(1, -1).apply(&self.ln).gelu("none");
        let x = x.apply(&self.fc1).dropout(0.5, train).tanh();
        (x.apply(&self.fc2) * 2.0 + 0.5).log_softmax(-1, Kind::Float)
    }

    fn training_step(&mut self, (x, y): (Tensor, Tensor)) -> Tensor {
        self.forward(&x, true).nll_loss(&y)
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.05).into()
    }
}

fn input() -> Tensor {
    Tensor::arange(2 * 12 * 12, (Kind::Float, Device::Cpu)).view([2, 1, 12, 12]).sin()
}

/// A trained model (batch norm statistics moved away from their initial values).
fn trained(root: &Path) -> ConvNet {
    let mut model = ConvNet::new(NetConfig::default());
    let x = Tensor::randn([8, 1, 12, 12], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    let loader = DataLoader::new(TensorDataset::new((x, y)).unwrap()).batch_size(4);
    quiet_trainer(root).max_epochs(3).enable_model_summary(false).build().unwrap().fit(&mut model, loader, ()).unwrap();
    model
}

/// Runs `script` with the torch environment's Python, passing the input as JSON; returns the
/// outputs it prints (JSON).
fn python(script: &str, model: &Path, input: &Tensor) -> Vec<f64> {
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let x: Vec<f32> = Vec::try_from(input.flatten(0, -1)).unwrap();
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(serde_json::to_string(&x).unwrap())
        .output()
        .expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn relative_difference(ours: &Tensor, theirs: &[f64]) -> f64 {
    let ours: Vec<f32> = Vec::try_from(ours.flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let diff: f64 = ours.iter().zip(theirs).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = theirs.iter().map(|b| b * b).sum::<f64>().sqrt();
    diff / norm
}

#[test]
fn torchscript_loads_in_pytorch_with_the_same_outputs() {
    let root = temp_dir("torchscript");
    let model = trained(&root);
    let ours = lit::tch::no_grad(|| model.forward(&input(), false));
    let path = root.join("model.pt");
    model.to_torchscript().unwrap().save(&path).unwrap();
    // The weights are trainable again after tracing.
    assert!(model.var_store().trainable_variables().iter().all(Tensor::requires_grad));
    let theirs = python(
        r#"
import sys, json, torch
m = torch.jit.load(sys.argv[1])
x = torch.tensor(json.loads(sys.argv[2]), dtype=torch.float32).view(2, 1, 12, 12)
with torch.no_grad():
    print(json.dumps(m(x).flatten().tolist()))
"#,
        &path,
        &input(),
    );
    let d = relative_difference(&ours, &theirs);
    assert!(d <= 1e-6, "relative difference {d} between lit and torch.jit.load");

    // As loaded, the module is in eval mode, freezes and optimises for inference, and keeps batch
    // norm's running statistics as buffers, not parameters.
    let theirs = python(
        r#"
import sys, json, torch
m = torch.jit.load(sys.argv[1])
assert m.training is False, m.training
buffers = sorted(n for n, _ in m.named_buffers())
assert buffers and all("running" in n or "num_batches" in n for n in buffers), buffers
assert not any("running" in n for n, _ in m.named_parameters())
frozen = torch.jit.optimize_for_inference(torch.jit.freeze(m))
x = torch.tensor(json.loads(sys.argv[2]), dtype=torch.float32).view(2, 1, 12, 12)
with torch.no_grad():
    print(json.dumps(frozen(x).flatten().tolist()))
"#,
        &path,
        &input(),
    );
    let d = relative_difference(&ours, &theirs);
    assert!(d <= 1e-5, "relative difference {d} between lit and the frozen, optimised module");
}

#[test]
fn onnx_runs_in_onnxruntime_with_the_same_outputs() {
    let root = temp_dir("onnx");
    let model = trained(&root);
    let ours = lit::tch::no_grad(|| model.forward(&input(), false));
    let path = root.join("model.onnx");
    model.to_onnx(&path).unwrap();
    let theirs = python(
        r#"
import sys, json, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
assert [i.name for i in s.get_inputs()] == ["input_0"], s.get_inputs()
x = np.array(json.loads(sys.argv[2]), dtype=np.float32).reshape(2, 1, 12, 12)
print(json.dumps(s.run(None, {"input_0": x})[0].flatten().tolist()))
"#,
        &path,
        &input(),
    );
    let d = relative_difference(&ours, &theirs);
    assert!(d <= 1e-5, "relative difference {d} between lit and onnxruntime");

    // The batch dimension is free: a batch of 5 runs too.
    let five = Tensor::arange(5 * 12 * 12, (Kind::Float, Device::Cpu)).view([5, 1, 12, 12]).cos();
    let ours = lit::tch::no_grad(|| model.forward(&five, false));
    let theirs = python(
        r#"
import sys, json, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
assert s.get_inputs()[0].shape[0] == "batch", s.get_inputs()[0].shape
x = np.array(json.loads(sys.argv[2]), dtype=np.float32).reshape(5, 1, 12, 12)
print(json.dumps(s.run(None, {"input_0": x})[0].flatten().tolist()))
"#,
        &path,
        &five,
    );
    let d = relative_difference(&ours, &theirs);
    assert!(d <= 1e-5, "relative difference {d} on a batch of 5");
}

#[test]
fn an_unsupported_operator_is_named_and_nothing_is_written() {
    let root = temp_dir("onnx-unsupported");
    let vs = nn::VarStore::new(Device::Cpu);
    let path = root.join("cumsum.onnx");
    let err = lit::export::to_onnx(&vs, &[input()], |xs| vec![xs[0].cumsum(0, Kind::Float)], &path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("ONNX export") && message.contains("`aten::cumsum` is not supported"), "{message}");
    assert!(!path.exists());
}

#[lightning_module]
struct NoExample {
    vs: nn::VarStore,
    fc: nn::Linear,
}

#[lightning_module]
impl NoExample {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root(), 2, 2, Default::default());
        NoExample { vs, fc }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.fc)
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.forward(&x).sum(Kind::Float)
    }
}

#[test]
fn export_without_an_example_input_says_how_to_add_one() {
    let model = NoExample::new();
    let message = model.to_torchscript().unwrap_err().to_string();
    assert!(message.contains("#[example_input]"), "{message}");
    // With an explicit input it traces.
    let traced = model.to_torchscript_with(&Tensor::ones([3, 2], (Kind::Float, Device::Cpu))).unwrap();
    let x = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
    let out = traced.forward_ts(&[x.shallow_clone()]).unwrap();
    assert!(out.allclose(&lit::tch::no_grad(|| model.forward(&x)), 1e-6, 1e-6, false));
}

/// A classifier that flattens with `x.view([x.size()[0], -1])`, a common tch idiom that the
/// tracer records with the example's batch size as a constant.
#[lightning_module]
struct FixedBatch {
    vs: nn::VarStore,
    fc: nn::Linear,
    #[example_input]
    example: Tensor,
}

#[lightning_module]
impl FixedBatch {
    fn new() -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", 144, 3, Default::default());
        FixedBatch { vs, fc, example: input() }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.view([x.size()[0], -1]).apply(&self.fc)
    }
}

/// An export whose graph recorded the batch size is an error that says so and how to write
/// `forward` instead, for TorchScript and ONNX alike; no ONNX file is written. (The ConvNet,
/// which flattens with `flatten(1, -1)`, exports: the tests above.)
#[test]
fn an_export_that_fixed_the_batch_size_is_an_error_naming_the_cause() {
    let model = FixedBatch::new();
    let e = model.to_torchscript().expect_err("TorchScript export fails").to_string();
    assert!(e.starts_with("TorchScript export: the traced graph works only at the example's batch size 2"), "{e}");
    assert!(e.contains("at batch size 3 it fails: mat1 and mat2 shapes cannot be multiplied (2x216 and 144x3)"), "{e}");
    assert!(e.contains("`x.flatten(1, -1)`") && !e.contains("Traceback"), "{e}");
    assert!(!e.contains("frame #"), "{e}");

    let path = temp_dir("export-fixed-batch").join("model.onnx");
    let e = model.to_onnx(&path).expect_err("ONNX export fails").to_string();
    assert!(e.starts_with("ONNX export: the traced graph works only at the example's batch size 2"), "{e}");
    assert!(!path.exists(), "nothing is written");
}
