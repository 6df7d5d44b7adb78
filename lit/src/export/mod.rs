//! Inference in production: a trained module's `forward` as TorchScript (loadable by
//! `torch.jit.load` and tch's `CModule`) or as ONNX (for onnxruntime and other runtimes).
//!
//! A `#[lightning_module]` with a `forward(&self, x: &Tensor)` method (optionally with a trailing
//! `train: bool`, passed `false`) and an `#[example_input]` gets `to_torchscript()` and
//! `to_onnx(path)`; the functions here work on any closure.
//!
//! Both trace `forward` once on the example input, in eval mode and without autograd: the
//! exported graph holds the operations that one call ran. The ONNX model's inputs and outputs
//! leave their first (batch) dimension free, as `torch.onnx.export` with
//! `dynamic_axes={…: {0: "batch"}}`; the other dimensions are those of the example input.

mod onnx;
mod proto;

use std::path::Path;

use tch::nn::VarStore;
use tch::{CModule, Tensor};

use crate::error::{Error, Result};

/// Traces `forward` on `inputs` into a TorchScript module whose `forward` method runs the same
/// operations. The variables of `vs` become the module's parameters (`conv1.weight` is
/// `conv1_weight`). Save it with `.save(path)`; PyTorch loads it with `torch.jit.load`.
pub fn to_torchscript(
    vs: &VarStore,
    inputs: &[Tensor],
    mut forward: impl FnMut(&[Tensor]) -> Vec<Tensor>,
) -> Result<CModule> {
    let module = {
        let _detached = DetachedVariables::new(vs);
        tch::no_grad(|| trace_module(vs, inputs, &mut forward))?
    };
    tch::no_grad(|| check_free_batch("TorchScript", &module, inputs, &mut forward))?;
    Ok(module)
}

/// The example inputs with one sample more (the first, repeated): a second batch size.
fn grown(inputs: &[Tensor]) -> Option<Vec<Tensor>> {
    if inputs.is_empty() || inputs.iter().any(|t| t.dim() == 0) {
        return None;
    }
    Some(inputs.iter().map(|t| Tensor::cat(&[t.shallow_clone(), t.narrow(0, 0, 1)], 0)).collect())
}

/// Runs the traced `module` at a second batch size and compares with `forward`: a graph that
/// recorded the batch size as a constant is an error saying so (and how to write `forward`
/// instead), rather than a file that fails or crashes in PyTorch or onnxruntime.
fn check_free_batch(
    format: &'static str,
    module: &CModule,
    inputs: &[Tensor],
    forward: &mut impl FnMut(&[Tensor]) -> Vec<Tensor>,
) -> Result<()> {
    let Some(grown) = grown(inputs) else { return Ok(()) };
    let Ok(expected) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forward(&grown))) else {
        return Ok(()); // `forward` itself does not take this batch size: nothing to compare.
    };
    let (batch, grown_batch) = (inputs[0].size()[0], grown[0].size()[0]);
    let fixed = |what: String| Error::Export {
        format,
        message: format!(
            "the traced graph works only at the example's batch size {batch}: at batch size {grown_batch} it {what}. \
             An operation in `forward` recorded the batch size as a constant, most often \
             `x.view([x.size()[0], -1])` (write `x.flatten(1, -1)`) or a tensor made from `x.size()`"
        ),
    };
    let ivalues: Vec<tch::IValue> = grown.iter().map(|t| tch::IValue::Tensor(t.shallow_clone())).collect();
    let outputs = match module.forward_is(&ivalues) {
        Ok(tch::IValue::Tensor(t)) => vec![t],
        Ok(tch::IValue::TensorList(tensors)) => tensors,
        Ok(tch::IValue::Tuple(values)) => {
            values.into_iter().filter_map(|v| if let tch::IValue::Tensor(t) = v { Some(t) } else { None }).collect()
        }
        Ok(other) => return Err(fixed(format!("returns {other:?}"))),
        Err(e) => return Err(fixed(format!("fails: {}", crate::error::torch_message(&e.to_string())))),
    };
    let same = outputs.len() == expected.len()
        && outputs.iter().zip(&expected).all(|(a, b)| a.size() == b.size() && a.allclose(b, 1e-4, 1e-5, false));
    if !same {
        let shapes = |ts: &[Tensor]| ts.iter().map(Tensor::size).collect::<Vec<_>>();
        return Err(fixed(format!(
            "gives outputs of shapes {:?} where `forward` gives {:?} (or other values)",
            shapes(&outputs),
            shapes(&expected)
        )));
    }
    Ok(())
}

#[cfg(lit_shim)]
fn trace_module(
    vs: &VarStore,
    inputs: &[Tensor],
    mut forward: impl FnMut(&[Tensor]) -> Vec<Tensor>,
) -> Result<CModule> {
    let export = |e: Error| Error::Export { format: "TorchScript", message: e.to_string() };
    // Variables that are not trainable (batch norm's running statistics) are buffers.
    let trainable: std::collections::HashSet<usize> =
        vs.trainable_variables().iter().map(|t| t.data_ptr() as usize).collect();
    let mut params: Vec<(String, Tensor, bool)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| {
            let buffer = !trainable.contains(&(t.data_ptr() as usize));
            (name.replace('.', "_"), t, buffer)
        })
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let trace = crate::shim::ScriptTrace::begin(&params, inputs).map_err(export)?;
    let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forward(inputs))).unwrap_or_default();
    let data = trace.end(&outputs).map_err(export)?;
    if outputs.is_empty() {
        return Err(export(Error::msg("`forward` panicked or returned no tensor while being traced")));
    }
    CModule::load_data(&mut std::io::Cursor::new(data))
        .map_err(|e| export(Error::msg(format!("reloading the traced module: {e}"))))
}

#[cfg(not(lit_shim))]
fn trace_module(
    _vs: &VarStore,
    inputs: &[Tensor],
    mut forward: impl FnMut(&[Tensor]) -> Vec<Tensor>,
) -> Result<CModule> {
    // Without the shim the weights are baked into the graph as constants: tch can run the result,
    // but PyTorch's loader may not accept it.
    CModule::create_by_tracing("lit", "forward", inputs, &mut forward)
        .map_err(|e| Error::Export { format: "TorchScript", message: format!("tracing `forward` failed: {e}") })
}

/// Traces `forward` on `inputs` and writes it to `path` as an ONNX model (opset 17). The graph's
/// inputs are `input_0`, `input_1`, …, its outputs `output_0`, …. An operator without an ONNX
/// counterpart here is an error naming it; nothing is written then.
pub fn to_onnx(
    vs: &VarStore,
    inputs: &[Tensor],
    forward: impl FnMut(&[Tensor]) -> Vec<Tensor>,
    path: &Path,
) -> Result<()> {
    let mut forward = forward;
    let (module, graph) = {
        let _detached = DetachedVariables::new(vs);
        let module = tch::no_grad(|| trace_module(vs, inputs, &mut forward))?;
        (module, tch::no_grad(|| trace(inputs, &mut forward))?)
    };
    tch::no_grad(|| check_free_batch("ONNX", &module, inputs, &mut forward))?;
    let bytes = onnx::convert(&graph).map_err(|message| Error::Export { format: "ONNX", message })?;
    crate::checkpoint::write_atomically(path, &bytes)
}

/// Turns `requires_grad` off on a variable store's variables while it lives (the tracer bakes
/// the weights into the graph as constants, which it refuses for tensors that require grad).
struct DetachedVariables(Vec<Tensor>);

impl DetachedVariables {
    fn new(vs: &VarStore) -> Self {
        let vars: Vec<Tensor> = vs.variables().into_values().filter(Tensor::requires_grad).collect();
        for v in &vars {
            let _ = v.shallow_clone().set_requires_grad(false);
        }
        DetachedVariables(vars)
    }
}

impl Drop for DetachedVariables {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = v.shallow_clone().set_requires_grad(true);
        }
    }
}

/// The graph one call of a function ran, as the tracer recorded it.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub(crate) inputs: Vec<Value>,
    pub(crate) consts: std::collections::HashMap<u64, Const>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) outputs: Vec<Value>,
    pub(crate) tensors: Vec<Tensor>,
}

/// A value of the graph with the dtype (c10 ScalarType) and sizes the tracer saw.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub(crate) id: u64,
    pub(crate) dtype: Option<i32>,
    pub(crate) sizes: Option<Vec<i64>>,
}

/// A constant of the graph. (Every payload is read, if only in error messages through `Debug`.)
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub(crate) enum Const {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    /// An index into `Graph::tensors`.
    Tensor(usize),
    Other(String),
}

/// An operation: `aten::linear`, `prim::ListConstruct`, …
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: String,
    pub(crate) inputs: Vec<u64>,
    pub(crate) outputs: Vec<Value>,
}

/// Runs `forward` under libtorch's tracer and returns the graph it recorded.
#[cfg(lit_shim)]
fn trace(inputs: &[Tensor], mut forward: impl FnMut(&[Tensor]) -> Vec<Tensor>) -> Result<Graph> {
    use crate::shim;
    let export = |message: String| Error::Export { format: "ONNX", message };
    shim::trace_begin(inputs).map_err(|e| export(e.to_string()))?;
    let Ok(outputs) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forward(inputs))) else {
        // End the trace so that the next one can start.
        let _ = shim::trace_end(&[]);
        return Err(export("`forward` panicked while being traced".into()));
    };
    let (text, tensors) = shim::trace_end(&outputs).map_err(|e| export(e.to_string()))?;
    let mut graph = parse(&text).map_err(export)?;
    graph.tensors = tensors;
    Ok(graph)
}

#[cfg(not(lit_shim))]
fn trace(_inputs: &[Tensor], _forward: impl FnMut(&[Tensor]) -> Vec<Tensor>) -> Result<Graph> {
    Err(Error::Export { format: "ONNX", message: "needs lit's libtorch shim, which did not compile".into() })
}

/// Parses the shim's description of a traced graph.
#[cfg_attr(not(lit_shim), allow(dead_code))]
fn parse(text: &str) -> std::result::Result<Graph, String> {
    fn value<'a>(words: &mut impl Iterator<Item = &'a str>) -> Option<Value> {
        let id = words.next()?.parse().ok()?;
        let dtype: i32 = words.next()?.parse().ok()?;
        let rank: i64 = words.next()?.parse().ok()?;
        let sizes = if rank < 0 {
            None
        } else {
            Some((0..rank).map(|_| words.next().and_then(|w| w.parse().ok())).collect::<Option<Vec<i64>>>()?)
        };
        Some(Value { id, dtype: (dtype >= 0).then_some(dtype), sizes })
    }
    fn numbers<'a, T: std::str::FromStr>(words: &mut impl Iterator<Item = &'a str>) -> Option<Vec<T>> {
        let n: usize = words.next()?.parse().ok()?;
        (0..n).map(|_| words.next().and_then(|w| w.parse().ok())).collect()
    }
    let mut graph = Graph::default();
    for line in text.lines() {
        let bad = || format!("unreadable trace line `{line}`");
        let mut words = line.split(' ');
        match words.next() {
            Some("input") => graph.inputs.push(value(&mut words).ok_or_else(bad)?),
            Some("output") => graph.outputs.push(value(&mut words).ok_or_else(bad)?),
            Some("const") => {
                let id: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                let c = match words.next() {
                    Some("none") => Const::None,
                    Some("bool") => Const::Bool(words.next() == Some("1")),
                    Some("int") => Const::Int(words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?),
                    Some("float") => Const::Float(words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?),
                    Some("str") => Const::Str(words.collect::<Vec<_>>().join(" ")),
                    Some("ints") => Const::Ints(numbers(&mut words).ok_or_else(bad)?),
                    Some("floats") => Const::Floats(numbers(&mut words).ok_or_else(bad)?),
                    Some("tensor") => Const::Tensor(words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?),
                    Some("other") => Const::Other(words.collect::<Vec<_>>().join(" ")),
                    _ => return Err(bad()),
                };
                graph.consts.insert(id, c);
            }
            Some("node") => {
                let kind = words.next().ok_or_else(bad)?.to_string();
                let inputs = numbers(&mut words).ok_or_else(bad)?;
                let n: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                let outputs = (0..n).map(|_| value(&mut words)).collect::<Option<Vec<_>>>().ok_or_else(bad)?;
                graph.nodes.push(Node { kind, inputs, outputs });
            }
            _ if line.is_empty() => {}
            _ => return Err(bad()),
        }
    }
    Ok(graph)
}
