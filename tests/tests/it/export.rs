//! Inference in production: TorchScript that PyTorch loads, ONNX that onnxruntime runs, both
//! computing what `forward` computes.

use std::collections::HashMap;
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
    assert!(e.contains("`aten::view` with sizes [2, -1] recorded it as a constant"), "{e}");
    assert!(!e.contains("frame #"), "{e}");

    let path = temp_dir("export-fixed-batch").join("model.onnx");
    let e = model.to_onnx(&path).expect_err("ONNX export fails").to_string();
    assert!(e.starts_with("ONNX export: the traced graph works only at the example's batch size 2"), "{e}");
    assert!(!path.exists(), "nothing is written");
}

/// A recurrent model as tch builds one: a recurrent layer (`nn::lstm`/`nn::gru`, starting from
/// zeros sized from `x.size()`: `seq` for batch-first input, `seq_init` with `zero_state` for
/// time-major input, where tch's `seq` takes the wrong dimension) and a linear head on every step.
struct Recurrent {
    vs: nn::VarStore,
    layer: Box<dyn Fn(&Tensor) -> Tensor>,
    batch_first: bool,
}

const FEATURES: i64 = 5;

impl Recurrent {
    fn new(kind: &str, layers: i64, bidirectional: bool, batch_first: bool) -> Self {
        seed_everything(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let config = nn::RNNConfig { num_layers: layers, bidirectional, batch_first, ..Default::default() };
        let out = 8 * if bidirectional { 2 } else { 1 };
        let head = nn::linear(&p / "head", out, 3, Default::default());
        let layer: Box<dyn Fn(&Tensor) -> Tensor> = match kind {
            "lstm" => {
                let rnn = nn::lstm(&p / "rnn", FEATURES, 8, config);
                Box::new(move |x| {
                    let out = if batch_first { rnn.seq(x).0 } else { rnn.seq_init(x, &rnn.zero_state(x.size()[1])).0 };
                    out.apply(&head).tanh()
                })
            }
            "gru" => {
                let rnn = nn::gru(&p / "rnn", FEATURES, 8, config);
                Box::new(move |x| {
                    let out = if batch_first { rnn.seq(x).0 } else { rnn.seq_init(x, &rnn.zero_state(x.size()[1])).0 };
                    out.apply(&head).tanh()
                })
            }
            _ => panic!("{kind}"),
        };
        Recurrent { vs, layer, batch_first }
    }

    /// An input of `batch` sequences of `steps` steps, laid out as the layer wants it.
    fn input(&self, batch: i64, steps: i64) -> Tensor {
        let x = Tensor::randn([batch, steps, FEATURES], (Kind::Float, Device::Cpu));
        if self.batch_first { x } else { x.transpose(0, 1).contiguous() }
    }
}

/// Recurrent models export to TorchScript and ONNX that run at any batch size and sequence
/// length, in PyTorch (`torch.jit.load`) and onnxruntime alike, computing what `forward` does.
/// (Before, tch's zero initial state was traced with the example's batch size: PyTorch's LSTM
/// kernel crashed on another one.)
#[test]
fn recurrent_models_export_at_any_batch_size_and_sequence_length() {
    let root = temp_dir("export-recurrent");
    let cases = [("lstm", 1, false, false), ("lstm", 2, true, true), ("gru", 1, false, true), ("gru", 2, true, false)];
    for (kind, layers, bidirectional, batch_first) in cases {
        let model = Recurrent::new(kind, layers, bidirectional, batch_first);
        let name = format!("{kind}-{layers}-{bidirectional}-{batch_first}");
        let example = model.input(4, 6);
        let forward = |xs: &[Tensor]| vec![(model.layer)(&xs[0])];
        let script = root.join(format!("{name}.pt"));
        lit::export::to_torchscript(&model.vs, &[example.shallow_clone()], forward)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .save(&script)
            .unwrap();
        let onnx = root.join(format!("{name}.onnx"));
        lit::export::to_onnx(&model.vs, &[example], forward, &onnx).unwrap_or_else(|e| panic!("{name}: {e}"));

        // Inputs at three batch sizes and two sequence lengths, with lit's outputs for them.
        let cases = [(1, 3), (7, 6), (64, 11)].map(|(batch, steps)| {
            let x = model.input(batch, steps);
            let y = lit::tch::no_grad(|| (model.layer)(&x));
            (x, y)
        });
        let worst = largest_differences(&script, &onnx, &cases);
        assert!(worst["torchscript"] <= 1e-5 && worst["onnx"] <= 1e-5, "{name}: largest differences {worst:?}");
    }
}

/// The largest absolute difference between `y` and what `torch.jit.load(script)` and an
/// onnxruntime session of `onnx` compute from `x`, over `cases`.
fn largest_differences(script: &Path, onnx: &Path, cases: &[(Tensor, Tensor)]) -> HashMap<String, f64> {
    let path = onnx.with_extension("cases.safetensors");
    let tensors: Vec<(String, Tensor)> = cases
        .iter()
        .enumerate()
        .flat_map(|(i, (x, y))| [(format!("x{i}"), x.shallow_clone()), (format!("y{i}"), y.shallow_clone())])
        .collect();
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let out = Command::new(python)
        .arg("-c")
        .arg(
            r#"
import sys, json, torch, onnxruntime
from safetensors.torch import load_file
script, onnx, cases, n = sys.argv[1:5]
m = torch.jit.load(script)
session = onnxruntime.InferenceSession(onnx)
t = load_file(cases)
worst = {"torchscript": 0.0, "onnx": 0.0}
for i in range(int(n)):
    x, y = t[f"x{i}"], t[f"y{i}"]
    with torch.no_grad():
        worst["torchscript"] = max(worst["torchscript"], (m(x) - y).abs().max().item())
    (o,) = session.run(None, {"input_0": x.numpy()})
    assert o.shape == tuple(y.shape), (o.shape, y.shape)
    worst["onnx"] = max(worst["onnx"], (torch.from_numpy(o) - y).abs().max().item())
print(json.dumps(worst))
"#,
        )
        .args([script, onnx, &path])
        .arg(cases.len().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A GAN generator's decoder: a linear layer reshaped into feature maps, transposed convolution,
/// batch norm, nearest and bilinear upsampling, pixel shuffle, instance norm, chunks, narrowing,
/// zeros made like a tensor, and the activations such decoders end with.
fn decoder(vs: &nn::VarStore) -> impl Fn(&Tensor) -> Tensor + use<> {
    let p = vs.root();
    let fc = nn::linear(&p / "fc", 8, 4 * 4 * 4, Default::default());
    let up = nn::conv_transpose2d(
        &p / "up",
        4,
        8,
        4,
        nn::ConvTransposeConfig { stride: 2, padding: 1, ..Default::default() },
    );
    let bn = nn::batch_norm2d(&p / "bn", 8, Default::default());
    let conv = nn::conv2d(&p / "conv", 4, 12, 3, nn::ConvConfig { padding: 1, ..Default::default() });
    let norm_weight = p.ones("norm_weight", &[3]);
    move |z: &Tensor| {
        let x = z.apply(&fc).view([-1, 4, 4, 4]).apply(&up).apply_t(&bn, false).relu();
        let [a, b] = <[Tensor; 2]>::try_from(x.chunk(2, 1)).unwrap();
        let x = a.maximum(&b).upsample_nearest2d([16, 16], None, None).apply(&conv);
        let x = x.pixel_shuffle(2).narrow(2, 1, 30);
        let x = x.instance_norm(Some(&norm_weight), None, None, None, true, 0.1, 1e-5, false);
        let x = x.upsample_bilinear2d([40, 48], false, None, None)
            + x.upsample_bilinear2d([40, 48], true, None, None).zeros_like();
        x.hardsigmoid() * 2.0 - 1.0
    }
}

/// Decoder and GAN operators export and run at any batch size in PyTorch and onnxruntime.
#[test]
fn decoder_operators_export_at_any_batch_size() {
    let root = temp_dir("export-decoder");
    seed_everything(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let decode = decoder(&vs);
    let forward = |xs: &[Tensor]| vec![decode(&xs[0])];
    let z = || Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
    let script = root.join("decoder.pt");
    lit::export::to_torchscript(&vs, &[z()], forward).unwrap().save(&script).unwrap();
    let onnx = root.join("decoder.onnx");
    lit::export::to_onnx(&vs, &[z()], forward, &onnx).unwrap();
    let cases = [1, 5, 9].map(|batch| {
        let x = Tensor::randn([batch, 8], (Kind::Float, Device::Cpu));
        let y = lit::tch::no_grad(|| decode(&x));
        (x, y)
    });
    let worst = largest_differences(&script, &onnx, &cases);
    assert!(worst["torchscript"] <= 1e-5 && worst["onnx"] <= 1e-5, "largest differences {worst:?}");
}

/// An operator export cannot convert is named with the layer that used it (or the last layer
/// before it), so the user knows which part of `forward` to change.
#[test]
fn an_unsupported_operator_names_its_layer() {
    let root = temp_dir("onnx-unsupported-layer");
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = nn::linear(vs.root() / "encoder", 4, 4, Default::default());
    let path = root.join("model.onnx");
    let x = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
    let err = lit::export::to_onnx(&vs, &[x], |xs| vec![xs[0].apply(&encoder).cumsum(1, Kind::Float)], &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`aten::cumsum` is not supported"), "{err}");
    assert!(err.contains("after layer `encoder`"), "{err}");
    assert!(!path.exists());
}
