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
//! `dynamic_axes={…: {0: "batch"}}`, and with a recurrent layer the sequence dimension too; the
//! other dimensions are those of the example input. Both exports run the traced graph at those
//! other sizes and compare it with `forward` before anything is returned or written.

mod onnx;
mod proto;

use std::path::Path;

use tch::nn::VarStore;
use tch::{CModule, Tensor};

use crate::error::{Error, Result};

/// Traces `forward` on `inputs` into a TorchScript module whose `forward` method runs the same
/// operations. The variables of `vs` become the module's parameters (`conv1.weight` is
/// `conv1_weight`). Save it with `.save(path)`; PyTorch loads it with `torch.jit.load`.
///
/// The traced module is run at a second batch size (and, for recurrent models, a second
/// sequence length) and compared with `forward`: a graph that recorded the example's size as a
/// constant is an error naming the operation, not a file that fails later.
pub fn to_torchscript(
    vs: &VarStore,
    inputs: &[Tensor],
    mut forward: impl FnMut(&[Tensor]) -> Vec<Tensor>,
) -> Result<CModule> {
    let (module, graph) = {
        let _detached = DetachedVariables::new(vs);
        let module = tch::no_grad(|| trace_module(vs, inputs, &mut forward))?;
        // The plain trace only explains a failed check; without it the check still runs.
        (module, tch::no_grad(|| trace(inputs, &mut forward)).ok())
    };
    let graph = graph.map(|g| g.with_names(vs));
    tch::no_grad(|| free_dims("TorchScript", &module, inputs, &mut forward, graph.as_ref()))?;
    Ok(module)
}

/// The example inputs with one more entry (the first, repeated) along dimension `dim`, for those
/// inputs that have it; `None` when none has.
fn grown(inputs: &[Tensor], dim: usize) -> Option<Vec<Tensor>> {
    if !inputs.iter().any(|t| t.dim() > dim) {
        return None;
    }
    let d = dim as i64;
    Some(
        inputs
            .iter()
            .map(|t| {
                if t.dim() > dim { Tensor::cat(&[t.shallow_clone(), t.narrow(d, 0, 1)], d) } else { t.shallow_clone() }
            })
            .collect(),
    )
}

fn outputs_of(value: tch::IValue) -> Option<Vec<Tensor>> {
    match value {
        tch::IValue::Tensor(t) => Some(vec![t]),
        tch::IValue::TensorList(tensors) => Some(tensors),
        tch::IValue::Tuple(values) => {
            values.into_iter().map(|v| if let tch::IValue::Tensor(t) = v { Some(t) } else { None }).collect()
        }
        _ => None,
    }
}

/// Runs the traced `module` at a second size of each dimension that should be free (the batch;
/// for recurrent models also the sequence) and compares with `forward`: a graph that recorded
/// the example's size as a constant is an error saying which operation did and how to write
/// `forward` instead, rather than a file that fails or crashes in PyTorch or onnxruntime.
/// Returns the dimensions found free, with their names, for the ONNX model's inputs and outputs.
fn free_dims(
    format: &'static str,
    module: &CModule,
    inputs: &[Tensor],
    forward: &mut impl FnMut(&[Tensor]) -> Vec<Tensor>,
    graph: Option<&Graph>,
) -> Result<onnx::FreeDims> {
    let names: &[&str] = match graph.and_then(Graph::recurrent_batch_first) {
        None => &["batch"],
        Some(true) => &["batch", "sequence"],
        Some(false) => &["sequence", "batch"],
    };
    let run = |f: &mut dyn FnMut() -> Vec<Tensor>| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    let base: Vec<Vec<i64>> = match run(&mut || forward(inputs)) {
        Some(outputs) => outputs.iter().map(Tensor::size).collect(),
        None => return Ok(onnx::FreeDims::default()),
    };
    let mut free = onnx::FreeDims {
        inputs: inputs.iter().map(|t| vec![None; t.dim()]).collect(),
        outputs: base.iter().map(|s| vec![None; s.len()]).collect(),
    };
    for (dim, &name) in names.iter().enumerate() {
        let Some(grown) = grown(inputs, dim) else { continue };
        let what = if name == "batch" { "batch size" } else { "sequence length" };
        let size = inputs.iter().find(|t| t.dim() > dim).map_or(0, |t| t.size()[dim]);
        let Some(expected) = run(&mut || forward(&grown)) else {
            continue; // `forward` itself does not take this size: nothing to compare.
        };
        let fixed = |what_it_does: String| {
            let culprit = graph.and_then(|g| g.baked_in(size)).map_or_else(
                || "An operation in `forward` recorded it as a constant, most often".to_string(),
                |op| format!("{op} recorded it as a constant; the usual causes are"),
            );
            Error::Export {
                format,
                message: format!(
                    "the traced graph works only at the example's {what} {size}: at {what} {} it {what_it_does}. \
                     {culprit} `x.view([x.size()[0], -1])` (write `x.flatten(1, -1)`) or a tensor made from \
                     `x.size()` (use `zeros_like`/`ones_like` or shape it from another tensor)",
                    size + 1
                ),
            }
        };
        let ivalues: Vec<tch::IValue> = grown.iter().map(|t| tch::IValue::Tensor(t.shallow_clone())).collect();
        let outputs = match module.forward_is(&ivalues) {
            Ok(value) => outputs_of(value).ok_or_else(|| fixed("returns something other than tensors".into()))?,
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
        for (dims, t) in free.inputs.iter_mut().zip(inputs) {
            if t.dim() > dim {
                dims[dim] = Some(name.to_string());
            }
        }
        for ((dims, before), after) in free.outputs.iter_mut().zip(&base).zip(&expected) {
            for (j, (b, a)) in before.iter().zip(after.size()).enumerate() {
                if *b != a {
                    dims[j] = Some(name.to_string());
                }
            }
        }
    }
    Ok(free)
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
/// inputs are `input_0`, `input_1`, …, its outputs `output_0`, …; their batch dimension (and,
/// for recurrent models, the sequence dimension) is free, as checked by running the graph at
/// another size. An operator without an ONNX counterpart here is an error naming it and the
/// layer that used it; nothing is written then.
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
    let graph = graph.with_names(vs);
    let free = tch::no_grad(|| free_dims("ONNX", &module, inputs, &mut forward, Some(&graph)))?;
    let bytes = onnx::convert(&graph, &free).map_err(|message| Error::Export { format: "ONNX", message })?;
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
    /// The variable each of `tensors` is, where it is one (`enc.lstm.weight_ih_l0`).
    pub(crate) tensor_names: Vec<Option<String>>,
}

/// The recurrent aten operators, whose batch (or sequence) dimension export keeps free.
const RECURRENT: &[&str] = &["aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu"];

impl Graph {
    /// Names the graph's tensor constants after the variables of `vs` they are.
    fn with_names(mut self, vs: &VarStore) -> Self {
        let names: std::collections::HashMap<usize, String> =
            vs.variables().into_iter().map(|(name, t)| (t.data_ptr() as usize, name)).collect();
        self.tensor_names = self.tensors.iter().map(|t| names.get(&(t.data_ptr() as usize)).cloned()).collect();
        self
    }

    /// The layer whose variable `id` is, if it is one.
    fn layer_of(&self, id: u64) -> Option<&str> {
        let Some(Const::Tensor(i)) = self.consts.get(&id) else { return None };
        let name = self.tensor_names.get(*i)?.as_deref()?;
        Some(name.rsplit_once('.').map_or(name, |(layer, _)| layer))
    }

    /// Where node `i` is, for a message: `in layer `fc1`` (a node using a layer's variables) or
    /// `after layer `fc1`` (the last layer used before it).
    fn layer(&self, i: usize) -> Option<String> {
        let used = |n: &Node| n.inputs.iter().find_map(|&id| self.layer_of(id));
        if let Some(layer) = used(&self.nodes[i]) {
            return Some(format!("in layer `{layer}`"));
        }
        self.nodes[..i].iter().rev().find_map(used).map(|layer| format!("after layer `{layer}`"))
    }

    /// Whether the graph runs a recurrent layer, and if so whether its batch is its input's
    /// first dimension (`batch_first`).
    fn recurrent_batch_first(&self) -> Option<bool> {
        let node = self.nodes.iter().find(|n| RECURRENT.contains(&n.kind.as_str()) && n.inputs.len() == 9)?;
        Some(matches!(self.consts.get(&node.inputs[8]), Some(Const::Bool(true))))
    }

    /// The constant integers `id` holds (a constant list or a list of constants).
    fn const_ints(&self, id: u64) -> Option<Vec<i64>> {
        if let Some(Const::Ints(v)) = self.consts.get(&id) {
            return Some(v.clone());
        }
        let node = self
            .nodes
            .iter()
            .find(|n| n.kind == "prim::ListConstruct" && n.outputs.first().is_some_and(|v| v.id == id))?;
        node.inputs.iter().map(|i| if let Some(Const::Int(v)) = self.consts.get(i) { Some(*v) } else { None }).collect()
    }

    /// The first operation that shapes a tensor with `size` as a constant, described with its
    /// sizes and layer: the likely reason a graph runs only at the example's size.
    fn baked_in(&self, size: i64) -> Option<String> {
        self.nodes.iter().enumerate().find_map(|(i, node)| {
            let op = node.kind.strip_prefix("aten::")?;
            let sizes_at = match op {
                "view" | "reshape" | "expand" | "broadcast_to" | "new_zeros" | "new_ones" | "new_full"
                | "new_empty" => 1,
                "zeros" | "ones" | "full" | "empty" | "rand" | "randn" => 0,
                _ => return None,
            };
            let sizes = self.const_ints(*node.inputs.get(sizes_at)?)?;
            sizes.contains(&size).then(|| match self.layer(i) {
                Some(layer) => format!("`{}` with sizes {sizes:?} ({layer})", node.kind),
                None => format!("`{}` with sizes {sizes:?}", node.kind),
            })
        })
    }
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
