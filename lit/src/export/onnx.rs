//! A traced graph of aten operations, rewritten as an ONNX model (opset 17).

use std::collections::{HashMap, HashSet};

use tch::{Kind, Tensor};

use super::proto::{self, Attr, Message};
use super::{Const, Graph, Node, Value};

const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// aten operators that are one ONNX operator on the same tensor inputs.
const SIMPLE: &[(&str, &str)] = &[
    ("matmul", "MatMul"),
    ("mm", "MatMul"),
    ("bmm", "MatMul"),
    ("relu", "Relu"),
    ("sigmoid", "Sigmoid"),
    ("tanh", "Tanh"),
    ("exp", "Exp"),
    ("log", "Log"),
    ("sqrt", "Sqrt"),
    ("neg", "Neg"),
    ("abs", "Abs"),
    ("erf", "Erf"),
    ("sin", "Sin"),
    ("cos", "Cos"),
    ("contiguous", "Identity"),
    ("detach", "Identity"),
    ("clone", "Identity"),
    ("reciprocal", "Reciprocal"),
    ("floor", "Floor"),
    ("ceil", "Ceil"),
    ("sign", "Sign"),
    ("hardswish", "HardSwish"),
    ("softsign", "Softsign"),
    ("maximum", "Max"),
    ("minimum", "Min"),
];

/// The number of tensor inputs of a [`SIMPLE`] ONNX operator.
fn arity(onnx: &str) -> usize {
    if matches!(onnx, "MatMul" | "Max" | "Min") { 2 } else { 1 }
}

/// How one aten operator (or a family of them) becomes ONNX operators.
type Convert = fn(&mut Builder<'_>, Op<'_>) -> Res<()>;

/// The aten operators that need more than a [`SIMPLE`] mapping.
const BESPOKE: &[(&[&str], Convert)] = &[
    (&["linear"], |b, op| b.linear(op)),
    (&["addmm"], |b, op| b.addmm(op)),
    (&["t", "transpose", "permute"], |b, op| b.transpose(op)),
    (&["add", "sub", "rsub", "mul", "div", "pow"], |b, op| b.arithmetic(op)),
    (&["dropout", "feature_dropout", "alpha_dropout"], |b, op| b.dropout(op)),
    (&["leaky_relu"], |b, op| b.leaky_relu(op)),
    (&["elu"], |b, op| b.elu(op)),
    (&["softplus"], |b, op| b.softplus(op)),
    (&["silu"], |b, op| b.silu(op)),
    (&["gelu"], |b, op| b.gelu(op)),
    (&["hardtanh", "clamp"], |b, op| b.clip(op)),
    (&["softmax", "log_softmax"], |b, op| b.softmax(op)),
    (&["conv1d", "conv2d", "conv3d", "_convolution"], |b, op| b.convolution(op)),
    (&["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"], |b, op| b.pool(op)),
    (&["adaptive_avg_pool1d", "adaptive_avg_pool2d"], |b, op| b.adaptive_avg_pool(op)),
    (&["batch_norm"], |b, op| b.batch_norm(op)),
    (&["layer_norm"], |b, op| b.layer_norm(op)),
    (&["view", "reshape", "flatten"], |b, op| b.reshape(op)),
    (&["squeeze", "unsqueeze"], |b, op| b.squeeze(op)),
    (&["cat", "stack"], |b, op| b.concat(op)),
    (&["mean", "sum"], |b, op| b.reduce(op)),
    (&["argmax"], |b, op| b.argmax(op)),
    (&["select"], |b, op| b.select(op)),
    (&["slice"], |b, op| b.slice(op)),
    (&["embedding"], |b, op| b.embedding(op)),
    (&["to", "type_as", "_to_copy"], |b, op| b.cast(op)),
    (&["lstm", "gru", "rnn_tanh", "rnn_relu"], |b, op| b.recurrent(op)),
    (&["size"], |b, op| b.size(op)),
    (&["zeros", "ones", "full", "new_zeros", "new_ones", "new_full"], |b, op| b.fill(op)),
    (&["zeros_like", "ones_like", "full_like"], |b, op| b.fill_like(op)),
    (&["upsample_nearest1d", "upsample_nearest2d", "upsample_bilinear2d"], |b, op| b.upsample(op)),
    (&["pixel_shuffle"], |b, op| b.pixel_shuffle(op)),
    (&["instance_norm"], |b, op| b.instance_norm(op)),
    (&["narrow"], |b, op| b.narrow(op)),
    (&["chunk", "unsafe_chunk", "split", "split_with_sizes"], |b, op| b.chunk(op)),
    (&["expand", "repeat"], |b, op| b.expand(op)),
    (&["hardsigmoid"], |b, op| b.hardsigmoid(op)),
];

/// Every aten operator export converts.
fn supported() -> impl Iterator<Item = &'static str> {
    SIMPLE.iter().map(|(aten, _)| *aten).chain(BESPOKE.iter().flat_map(|(names, _)| names.iter().copied()))
}

/// A dimension index `d` of a rank-`rank` value, made non-negative as ONNX attributes want it.
fn axis(d: i64, rank: usize) -> i64 {
    if d < 0 { d + rank as i64 } else { d }
}

/// One aten operation to convert: its name (without `aten::` and a trailing `_`), its inputs,
/// the name of its output and the output's dtype.
struct Op<'n> {
    name: &'n str,
    ins: &'n [u64],
    y: String,
    kind: Kind,
    /// All of the operation's outputs (`y` is the first's name).
    outs: &'n [Value],
}

struct OnnxNode {
    op: &'static str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: Vec<(&'static str, Attr)>,
}

/// The model being built: nodes, initializers (weights and constant operands), what is known
/// about each traced value.
struct Builder<'g> {
    graph: &'g Graph,
    nodes: Vec<OnnxNode>,
    initializers: Vec<(String, Tensor)>,
    emitted: HashSet<String>,
    /// Values known at export time: the graph's constants and constant lists.
    consts: HashMap<u64, Const>,
    /// Lists of values (`prim::ListConstruct` of tensors, for `cat`/`stack`).
    lists: HashMap<u64, Vec<u64>>,
    /// Integers known only when the model runs (`aten::size`), as 1-element int64 tensors.
    dynamic_ints: HashSet<u64>,
    /// Lists of integers with some of them dynamic (a shape built from `aten::size`).
    int_lists: HashMap<u64, Vec<u64>>,
    /// Tensor lists made by `aten::chunk`/`split`: the tensor split and the axis.
    splits: HashMap<u64, (String, i64)>,
    /// The node that made each value.
    producers: HashMap<u64, &'g Node>,
    values: HashMap<u64, Value>,
    fresh: usize,
}

type Res<T> = std::result::Result<T, String>;

/// Which dimensions of the model's inputs and outputs are free, and their names.
#[derive(Debug, Default)]
pub(super) struct FreeDims {
    pub(super) inputs: Vec<Vec<Option<String>>>,
    pub(super) outputs: Vec<Vec<Option<String>>>,
}

/// The ONNX model's bytes.
pub(super) fn convert(graph: &Graph, free: &FreeDims) -> Res<Vec<u8>> {
    let mut b = Builder {
        graph,
        nodes: Vec::new(),
        initializers: Vec::new(),
        emitted: HashSet::new(),
        consts: graph.consts.clone(),
        lists: HashMap::new(),
        dynamic_ints: HashSet::new(),
        int_lists: HashMap::new(),
        splits: HashMap::new(),
        producers: HashMap::new(),
        values: HashMap::new(),
        fresh: 0,
    };
    for v in graph.inputs.iter().chain(&graph.outputs) {
        b.values.insert(v.id, v.clone());
    }
    for node in &graph.nodes {
        for v in &node.outputs {
            b.values.insert(v.id, v.clone());
            b.producers.insert(v.id, node);
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        b.node(node).map_err(|e| match graph.layer(i) {
            Some(layer) => format!("{e} (`{}`, {layer})", node.kind),
            None => format!("{e} (`{}`)", node.kind),
        })?;
    }
    let mut g = Message::default();
    for (i, v) in graph.inputs.iter().enumerate() {
        let name = format!("input_{i}");
        b.nodes.insert(0, OnnxNode { op: "Identity", inputs: vec![name], outputs: vec![name_of(v.id)], attrs: vec![] });
    }
    for (i, v) in graph.outputs.iter().enumerate() {
        let src = b.tensor(v.id)?;
        b.nodes.push(OnnxNode {
            op: "Identity",
            inputs: vec![src],
            outputs: vec![format!("output_{i}")],
            attrs: vec![],
        });
    }
    for n in &b.nodes {
        let mut m = Message::default();
        for i in &n.inputs {
            m.string(1, i);
        }
        for o in &n.outputs {
            m.string(2, o);
        }
        m.string(4, n.op);
        for (name, attr) in &n.attrs {
            m.message(5, &proto::attribute(name, attr));
        }
        g.message(1, &m);
    }
    g.string(2, "lit");
    for (name, t) in &b.initializers {
        g.message(5, &proto::tensor(name, t)?);
    }
    for (i, v) in graph.inputs.iter().enumerate() {
        g.message(11, &info(&format!("input_{i}"), v, free.inputs.get(i))?);
    }
    for (i, v) in graph.outputs.iter().enumerate() {
        g.message(12, &info(&format!("output_{i}"), v, free.outputs.get(i))?);
    }
    let mut opset = Message::default();
    opset.string(1, "").int(2, OPSET);
    let mut model = Message::default();
    model.int(1, IR_VERSION).string(2, "lit").string(3, env!("CARGO_PKG_VERSION")).message(7, &g).message(8, &opset);
    Ok(model.into_bytes())
}

fn name_of(id: u64) -> String {
    format!("v{id}")
}

fn info(name: &str, v: &Value, free: Option<&Vec<Option<String>>>) -> Res<Message> {
    let kind = v.dtype.and_then(proto::kind_of_scalar_type).ok_or_else(|| format!("`{name}` has an unknown dtype"))?;
    let elem = proto::elem_type(kind).ok_or_else(|| format!("`{name}` has dtype {kind:?}, which ONNX lacks"))?;
    let dims = v.sizes.clone().ok_or_else(|| format!("`{name}` has unknown sizes"))?;
    // The free dimensions (checked by running the graph at other sizes) are symbolic, as
    // torch.onnx.export's `dynamic_axes={name: {0: "batch"}}`.
    Ok(proto::value_info(name, elem, &dims, free.map_or(&[][..], Vec::as_slice)))
}

impl Builder<'_> {
    fn push(&mut self, op: &'static str, inputs: Vec<String>, outputs: Vec<String>, attrs: Vec<(&'static str, Attr)>) {
        self.nodes.push(OnnxNode { op, inputs, outputs, attrs });
    }

    fn temp(&mut self) -> String {
        self.fresh += 1;
        format!("t{}", self.fresh)
    }

    fn initializer(&mut self, name: String, t: Tensor) -> String {
        if self.emitted.insert(name.clone()) {
            self.initializers.push((name.clone(), t));
        }
        name
    }

    fn ints_init(&mut self, values: &[i64]) -> String {
        let name = self.temp();
        self.initializer(name, Tensor::from_slice(values))
    }

    /// The name of tensor value `id` (a constant tensor becomes an initializer).
    fn tensor(&mut self, id: u64) -> Res<String> {
        match self.consts.get(&id) {
            Some(Const::Tensor(i)) => {
                let t = self.graph.tensors[*i].shallow_clone();
                Ok(self.initializer(name_of(id), t))
            }
            Some(c) => Err(format!("value {id} is a constant {c:?} where a tensor was expected")),
            None => Ok(name_of(id)),
        }
    }

    /// A tensor operand: a tensor value, or a scalar constant turned into a 0-d tensor of `kind`.
    fn operand(&mut self, id: u64, kind: Kind) -> Res<String> {
        let scalar = match self.consts.get(&id) {
            Some(Const::Int(i)) => Some(*i as f64),
            Some(Const::Float(f)) => Some(*f),
            Some(Const::Bool(b)) => Some(f64::from(u8::from(*b))),
            _ => None,
        };
        match scalar {
            Some(s) => {
                let name = self.temp();
                Ok(self.initializer(name, Tensor::from(s).to_kind(kind)))
            }
            None => self.tensor(id),
        }
    }

    fn constant(&self, id: u64) -> Option<&Const> {
        self.consts.get(&id)
    }

    fn is_none(&self, id: u64) -> bool {
        matches!(self.constant(id), Some(Const::None))
    }

    fn int(&self, id: u64) -> Res<i64> {
        match self.constant(id) {
            Some(Const::Int(i)) => Ok(*i),
            Some(Const::Bool(b)) => Ok(i64::from(*b)),
            other => Err(format!("expected a constant integer, found {other:?}")),
        }
    }

    fn float(&self, id: u64) -> Res<f64> {
        match self.constant(id) {
            Some(Const::Float(f)) => Ok(*f),
            Some(Const::Int(i)) => Ok(*i as f64),
            other => Err(format!("expected a constant number, found {other:?}")),
        }
    }

    fn bool(&self, id: u64) -> Res<bool> {
        match self.constant(id) {
            Some(Const::Bool(b)) => Ok(*b),
            Some(Const::Int(i)) => Ok(*i != 0),
            other => Err(format!("expected a constant bool, found {other:?}")),
        }
    }

    fn ints(&self, id: u64) -> Res<Vec<i64>> {
        match self.constant(id) {
            Some(Const::Ints(v)) => Ok(v.clone()),
            Some(Const::Int(i)) => Ok(vec![*i]),
            other => Err(format!("expected constant integers, found {other:?}")),
        }
    }

    fn rank(&self, id: u64) -> Res<usize> {
        if let Some(Const::Tensor(i)) = self.constant(id) {
            return Ok(self.graph.tensors[*i].dim());
        }
        self.sizes(id).map(|s| s.len())
    }

    fn sizes(&self, id: u64) -> Res<Vec<i64>> {
        if let Some(Const::Tensor(i)) = self.constant(id) {
            return Ok(self.graph.tensors[*i].size());
        }
        self.values.get(&id).and_then(|v| v.sizes.clone()).ok_or_else(|| format!("the sizes of value {id} are unknown"))
    }

    fn kind(v: &Value) -> Kind {
        v.dtype.and_then(proto::kind_of_scalar_type).unwrap_or(Kind::Float)
    }

    fn node(&mut self, node: &Node) -> Res<()> {
        let Some(name) = node.kind.strip_prefix("aten::") else {
            return self.prim(node);
        };
        let name = name.trim_end_matches('_');
        let out = node.outputs.first().ok_or("the operation has no output")?;
        let op = Op { name, ins: &node.inputs, y: name_of(out.id), kind: Self::kind(out), outs: &node.outputs };
        if let Some((_, onnx)) = SIMPLE.iter().find(|(aten, _)| *aten == name) {
            let inputs = op.ins.iter().take(arity(onnx)).map(|&id| self.tensor(id)).collect::<Res<Vec<_>>>()?;
            self.push(onnx, inputs, vec![op.y], vec![]);
            return Ok(());
        }
        match BESPOKE.iter().find(|(names, _)| names.contains(&name)) {
            Some((_, convert)) => convert(self, op),
            None => Err(format!(
                "operator `{}` is not supported; export converts {}",
                node.kind,
                supported().map(|s| format!("aten::{s}")).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// `aten::linear`.
    fn linear(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let w = ins[1];
        let wt = match self.constant(w) {
            Some(Const::Tensor(i)) => {
                let t = self.graph.tensors[*i].tr().contiguous();
                self.initializer(format!("{}_t", name_of(w)), t)
            }
            _ => {
                let (w, t) = (self.tensor(w)?, self.temp());
                self.push("Transpose", vec![w], vec![t.clone()], vec![("perm", Attr::Ints(vec![1, 0]))]);
                t
            }
        };
        let x = self.tensor(ins[0])?;
        if ins.len() > 2 && !self.is_none(ins[2]) {
            let (b, t) = (self.tensor(ins[2])?, self.temp());
            self.push("MatMul", vec![x, wt], vec![t.clone()], vec![]);
            self.push("Add", vec![t, b], vec![y], vec![]);
        } else {
            self.push("MatMul", vec![x, wt], vec![y], vec![]);
        }
        Ok(())
    }

    /// `aten::addmm`.
    fn addmm(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        if self.float(ins[3])? != 1.0 || self.float(ins[4])? != 1.0 {
            return Err("`addmm` with beta or alpha other than 1".into());
        }
        let (c, a, b, t) = (self.tensor(ins[0])?, self.tensor(ins[1])?, self.tensor(ins[2])?, self.temp());
        self.push("MatMul", vec![a, b], vec![t.clone()], vec![]);
        self.push("Add", vec![t, c], vec![y], vec![]);
        Ok(())
    }

    /// `aten::t`, `aten::transpose`, `aten::permute`.
    fn transpose(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let rank = self.rank(ins[0])?;
        let perm: Vec<i64> = match op {
            "t" if rank < 2 => (0..rank as i64).collect(),
            "t" => vec![1, 0],
            "transpose" => {
                let (a, b) = (axis(self.int(ins[1])?, rank), axis(self.int(ins[2])?, rank));
                let mut p: Vec<i64> = (0..rank as i64).collect();
                p.swap(a as usize, b as usize);
                p
            }
            _ => self.ints(ins[1])?.into_iter().map(|d| axis(d, rank)).collect(),
        };
        let x = self.tensor(ins[0])?;
        self.push("Transpose", vec![x], vec![y], vec![("perm", Attr::Ints(perm))]);
        Ok(())
    }

    /// `aten::add`, `aten::sub`, `aten::rsub`, `aten::mul`, `aten::div`, `aten::pow`.
    fn arithmetic(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, kind, .. } = op;
        if op == "div" && ins.len() > 2 && !self.is_none(ins[2]) {
            return Err("`div` with a rounding mode".into());
        }
        let (mut a, mut b) = (self.operand(ins[0], kind)?, self.operand(ins[1], kind)?);
        if matches!(op, "add" | "sub" | "rsub") && ins.len() > 2 && self.float(ins[2])? != 1.0 {
            let alpha = self.operand(ins[2], kind)?;
            let t = self.temp();
            self.push("Mul", vec![b, alpha], vec![t.clone()], vec![]);
            b = t;
        }
        let onnx = match op {
            "add" => "Add",
            "sub" => "Sub",
            "rsub" => {
                std::mem::swap(&mut a, &mut b);
                "Sub"
            }
            "mul" => "Mul",
            "div" => "Div",
            _ => "Pow",
        };
        self.push(onnx, vec![a, b], vec![y], vec![]);
        Ok(())
    }

    /// `aten::dropout`, `aten::feature_dropout`, `aten::alpha_dropout`.
    fn dropout(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        if self.bool(ins[2])? {
            return Err(format!(
                "`{op}` in training mode; trace `forward` in eval mode (pass `train = false` to `forward_t`)"
            ));
        }
        let x = self.tensor(ins[0])?;
        self.push("Identity", vec![x], vec![y], vec![]);
        Ok(())
    }

    /// `aten::leaky_relu`.
    fn leaky_relu(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let alpha = if ins.len() > 1 { self.float(ins[1])? } else { 0.01 };
        let x = self.tensor(ins[0])?;
        self.push("LeakyRelu", vec![x], vec![y], vec![("alpha", Attr::Float(alpha as f32))]);
        Ok(())
    }

    /// `aten::elu`.
    fn elu(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let alpha = self.float(ins[1])?;
        if self.float(ins[2])? != 1.0 || self.float(ins[3])? != 1.0 {
            return Err("`elu` with a scale other than 1".into());
        }
        let x = self.tensor(ins[0])?;
        self.push("Elu", vec![x], vec![y], vec![("alpha", Attr::Float(alpha as f32))]);
        Ok(())
    }

    /// `aten::softplus`.
    fn softplus(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        if self.float(ins[1])? != 1.0 {
            return Err("`softplus` with beta other than 1".into());
        }
        let x = self.tensor(ins[0])?;
        self.push("Softplus", vec![x], vec![y], vec![]);
        Ok(())
    }

    /// `aten::silu`.
    fn silu(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let (x, s) = (self.tensor(ins[0])?, self.temp());
        self.push("Sigmoid", vec![x.clone()], vec![s.clone()], vec![]);
        self.push("Mul", vec![x, s], vec![y], vec![]);
        Ok(())
    }

    /// `aten::gelu`.
    fn gelu(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        let tanh = matches!(self.constant(ins[1]), Some(Const::Str(s)) if s == "tanh");
        let x = self.tensor(ins[0])?;
        let c = |b: &mut Self, v: f64| {
            let name = b.temp();
            b.initializer(name, Tensor::from(v).to_kind(kind))
        };
        let (half, one) = (c(self, 0.5), c(self, 1.0));
        let inner = self.temp();
        if tanh {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let (k, a, three) = (c(self, (2.0 / std::f64::consts::PI).sqrt()), c(self, 0.044715), c(self, 3.0));
            let (cube, scaled, sum, arg) = (self.temp(), self.temp(), self.temp(), self.temp());
            self.push("Pow", vec![x.clone(), three], vec![cube.clone()], vec![]);
            self.push("Mul", vec![cube, a], vec![scaled.clone()], vec![]);
            self.push("Add", vec![x.clone(), scaled], vec![sum.clone()], vec![]);
            self.push("Mul", vec![sum, k], vec![arg.clone()], vec![]);
            self.push("Tanh", vec![arg], vec![inner.clone()], vec![]);
        } else {
            // 0.5 x (1 + erf(x / sqrt 2))
            let root2 = c(self, std::f64::consts::SQRT_2);
            let div = self.temp();
            self.push("Div", vec![x.clone(), root2], vec![div.clone()], vec![]);
            self.push("Erf", vec![div], vec![inner.clone()], vec![]);
        }
        let (plus, halfx) = (self.temp(), self.temp());
        self.push("Add", vec![inner, one], vec![plus.clone()], vec![]);
        self.push("Mul", vec![x, half], vec![halfx.clone()], vec![]);
        self.push("Mul", vec![halfx, plus], vec![y], vec![]);
        Ok(())
    }

    /// `aten::hardtanh`, `aten::clamp`.
    fn clip(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        let x = self.tensor(ins[0])?;
        let mut inputs = vec![x];
        for &id in &ins[1..3] {
            inputs.push(if self.is_none(id) { String::new() } else { self.operand(id, kind)? });
        }
        self.push("Clip", inputs, vec![y], vec![]);
        Ok(())
    }

    /// `aten::softmax`, `aten::log_softmax`.
    fn softmax(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let rank = self.rank(ins[0])?;
        let dim = axis(self.int(ins[1])?, rank);
        let x = self.tensor(ins[0])?;
        let onnx = if op == "softmax" { "Softmax" } else { "LogSoftmax" };
        self.push(onnx, vec![x], vec![y], vec![("axis", Attr::Int(dim))]);
        Ok(())
    }

    /// `aten::conv1d`, `aten::conv2d`, `aten::conv3d`, `aten::_convolution`.
    fn convolution(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let spatial = self.rank(ins[1])? - 2;
        let expand = |v: Vec<i64>| if v.len() == 1 { vec![v[0]; spatial] } else { v };
        let stride = expand(self.ints(ins[3])?);
        let dilation = expand(self.ints(ins[5])?);
        let (transposed, output_padding, groups) = if op == "_convolution" {
            (self.bool(ins[6])?, expand(self.ints(ins[7])?), self.int(ins[8])?)
        } else {
            (false, vec![], self.int(ins[6])?)
        };
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(self.sizes(ins[1])?[2..].to_vec())),
            ("strides", Attr::Ints(stride)),
            ("dilations", Attr::Ints(dilation)),
            ("group", Attr::Int(groups)),
        ];
        match self.constant(ins[4]) {
            Some(Const::Str(s)) if s == "same" => attrs.push(("auto_pad", Attr::Str("SAME_UPPER".into()))),
            Some(Const::Str(_)) => attrs.push(("pads", Attr::Ints(vec![0; 2 * spatial]))),
            _ => {
                let pad = expand(self.ints(ins[4])?);
                attrs.push(("pads", Attr::Ints([pad.clone(), pad].concat())));
            }
        }
        if transposed {
            attrs.push(("output_padding", Attr::Ints(output_padding)));
        }
        let mut inputs = vec![self.tensor(ins[0])?, self.tensor(ins[1])?];
        if !self.is_none(ins[2]) {
            inputs.push(self.tensor(ins[2])?);
        }
        self.push(if transposed { "ConvTranspose" } else { "Conv" }, inputs, vec![y], attrs);
        Ok(())
    }

    /// `aten::max_pool1d`, `aten::max_pool2d`, `aten::avg_pool1d`, `aten::avg_pool2d`.
    fn pool(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let kernel = self.ints(ins[1])?;
        let spatial = kernel.len();
        let expand = |v: Vec<i64>| if v.len() == 1 { vec![v[0]; spatial] } else { v };
        let stride = self.ints(ins[2])?;
        let stride = if stride.is_empty() { kernel.clone() } else { expand(stride) };
        let pad = expand(self.ints(ins[3])?);
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(kernel)),
            ("strides", Attr::Ints(stride)),
            ("pads", Attr::Ints([pad.clone(), pad].concat())),
        ];
        let x = self.tensor(ins[0])?;
        if op.starts_with("max") {
            attrs.push(("dilations", Attr::Ints(expand(self.ints(ins[4])?))));
            attrs.push(("ceil_mode", Attr::Int(self.int(ins[5])?)));
            self.push("MaxPool", vec![x], vec![y], attrs);
        } else {
            if ins.len() > 6 && !self.is_none(ins[6]) {
                return Err("`avg_pool` with `divisor_override`".into());
            }
            attrs.push(("ceil_mode", Attr::Int(self.int(ins[4])?)));
            attrs.push(("count_include_pad", Attr::Int(self.int(ins[5])?)));
            self.push("AveragePool", vec![x], vec![y], attrs);
        }
        Ok(())
    }

    /// `aten::adaptive_avg_pool1d`, `aten::adaptive_avg_pool2d`.
    fn adaptive_avg_pool(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let target = self.ints(ins[1])?;
        let sizes = self.sizes(ins[0])?;
        let spatial = &sizes[sizes.len() - target.len()..];
        let x = self.tensor(ins[0])?;
        if target.iter().all(|&t| t == 1) {
            self.push("GlobalAveragePool", vec![x], vec![y], vec![]);
        } else if spatial.iter().zip(&target).all(|(s, t)| *t > 0 && s % t == 0) {
            let kernel: Vec<i64> = spatial.iter().zip(&target).map(|(s, t)| s / t).collect();
            let attrs = vec![
                ("kernel_shape", Attr::Ints(kernel.clone())),
                ("strides", Attr::Ints(kernel)),
                ("pads", Attr::Ints(vec![0; 2 * target.len()])),
            ];
            self.push("AveragePool", vec![x], vec![y], attrs);
        } else {
            return Err(format!("`{op}` from {spatial:?} to {target:?}, which is not a whole-number ratio"));
        }
        Ok(())
    }

    /// A normalisation's scale and bias operands: the given tensors, or ones and zeros of
    /// `shape` where `None` was passed.
    fn scale_and_bias(&mut self, scale: u64, bias: u64, shape: &[i64], kind: Kind) -> Res<[String; 2]> {
        let mut operand = |id: u64, fill: f64| -> Res<String> {
            if self.is_none(id) {
                let name = self.temp();
                Ok(self.initializer(name, Tensor::full(shape, fill, (kind, tch::Device::Cpu))))
            } else {
                self.tensor(id)
            }
        };
        Ok([operand(scale, 1.0)?, operand(bias, 0.0)?])
    }

    /// `aten::batch_norm`.
    fn batch_norm(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        if self.bool(ins[5])? {
            return Err("`batch_norm` in training mode; trace `forward` in eval mode (pass `train = false`)".into());
        }
        let channels = self.sizes(ins[3])?[0];
        let mut inputs = vec![self.tensor(ins[0])?];
        inputs.extend(self.scale_and_bias(ins[1], ins[2], &[channels], kind)?);
        inputs.push(self.tensor(ins[3])?);
        inputs.push(self.tensor(ins[4])?);
        let attrs = vec![("epsilon", Attr::Float(self.float(ins[7])? as f32)), ("momentum", Attr::Float(0.9))];
        self.push("BatchNormalization", inputs, vec![y], attrs);
        Ok(())
    }

    /// `aten::layer_norm`.
    fn layer_norm(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        let shape = self.ints(ins[1])?;
        let mut inputs = vec![self.tensor(ins[0])?];
        inputs.extend(self.scale_and_bias(ins[2], ins[3], &shape, kind)?);
        let attrs =
            vec![("axis", Attr::Int(-(shape.len() as i64))), ("epsilon", Attr::Float(self.float(ins[4])? as f32))];
        self.push("LayerNormalization", inputs, vec![y], attrs);
        Ok(())
    }

    /// `aten::view`, `aten::reshape`, `aten::flatten`.
    fn reshape(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let shape = if op == "flatten" {
            let sizes = self.sizes(ins[0])?;
            let rank = sizes.len().max(1);
            let (s, e) = (axis(self.int(ins[1])?, rank) as usize, axis(self.int(ins[2])?, rank) as usize);
            let mut shape = vec![0; s];
            shape.push(-1);
            shape.extend_from_slice(sizes.get(e + 1..).unwrap_or(&[]));
            shape
        } else {
            self.ints(ins[1])?
        };
        let (x, s) = (self.tensor(ins[0])?, self.ints_init(&shape));
        self.push("Reshape", vec![x, s], vec![y], vec![]);
        Ok(())
    }

    /// `aten::squeeze`, `aten::unsqueeze`.
    fn squeeze(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let x = self.tensor(ins[0])?;
        let mut inputs = vec![x];
        if ins.len() > 1 {
            let axes = self.ints(ins[1])?;
            inputs.push(self.ints_init(&axes));
        }
        self.push(if op == "squeeze" { "Squeeze" } else { "Unsqueeze" }, inputs, vec![y], vec![]);
        Ok(())
    }

    /// `aten::cat`, `aten::stack`.
    fn concat(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let items = self.lists.get(&ins[0]).cloned().ok_or("the tensors to join are not a list")?;
        let rank = self.rank(items[0])? + usize::from(op == "stack");
        let dim = axis(self.int(ins[1])?, rank);
        let mut inputs = Vec::new();
        for id in items {
            let t = self.tensor(id)?;
            inputs.push(if op == "stack" {
                let (u, axes) = (self.temp(), self.ints_init(&[dim]));
                self.push("Unsqueeze", vec![t, axes], vec![u.clone()], vec![]);
                u
            } else {
                t
            });
        }
        self.push("Concat", inputs, vec![y], vec![("axis", Attr::Int(dim))]);
        Ok(())
    }

    /// `aten::mean`, `aten::sum`.
    fn reduce(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name: op, ins, y, .. } = op;
        let x = self.tensor(ins[0])?;
        let all = ins.len() <= 2;
        let keep = if all { 0 } else { self.int(ins[2])? };
        let axes = if all { None } else { Some(self.ints(ins[1])?) };
        if op == "mean" {
            let mut attrs = vec![("keepdims", Attr::Int(keep))];
            if let Some(axes) = axes {
                attrs.push(("axes", Attr::Ints(axes)));
            }
            self.push("ReduceMean", vec![x], vec![y], attrs);
        } else {
            let mut inputs = vec![x];
            if let Some(axes) = axes {
                inputs.push(self.ints_init(&axes));
            }
            self.push("ReduceSum", inputs, vec![y], vec![("keepdims", Attr::Int(keep))]);
        }
        Ok(())
    }

    /// `aten::argmax`.
    fn argmax(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        if self.is_none(ins[1]) {
            return Err("`argmax` over all dimensions".into());
        }
        let attrs = vec![("axis", Attr::Int(self.int(ins[1])?)), ("keepdims", Attr::Int(self.int(ins[2])?))];
        let x = self.tensor(ins[0])?;
        self.push("ArgMax", vec![x], vec![y], attrs);
        Ok(())
    }

    /// `aten::select`.
    fn select(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let index = self.int(ins[2])?;
        let (x, i) = (self.tensor(ins[0])?, self.temp());
        let i = self.initializer(i, Tensor::from(index));
        self.push("Gather", vec![x, i], vec![y], vec![("axis", Attr::Int(self.int(ins[1])?))]);
        Ok(())
    }

    /// `aten::slice`.
    fn slice(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let start = if self.is_none(ins[2]) { 0 } else { self.int(ins[2])? };
        let end = if self.is_none(ins[3]) { i64::MAX } else { self.int(ins[3])? };
        let x = self.tensor(ins[0])?;
        let inputs = vec![
            x,
            self.ints_init(&[start]),
            self.ints_init(&[end]),
            self.ints_init(&[self.int(ins[1])?]),
            self.ints_init(&[self.int(ins[4])?]),
        ];
        self.push("Slice", inputs, vec![y], vec![]);
        Ok(())
    }

    /// `aten::embedding`.
    fn embedding(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let (w, i) = (self.tensor(ins[0])?, self.tensor(ins[1])?);
        self.push("Gather", vec![w, i], vec![y], vec![("axis", Attr::Int(0))]);
        Ok(())
    }

    /// `aten::to`, `aten::type_as`, `aten::_to_copy`.
    fn cast(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        let elem = proto::elem_type(kind).ok_or_else(|| format!("a cast to {kind:?}, which ONNX lacks"))?;
        let x = self.tensor(ins[0])?;
        self.push("Cast", vec![x], vec![y], vec![("to", Attr::Int(elem))]);
        Ok(())
    }

    fn prim(&mut self, node: &Node) -> Res<()> {
        let out = node.outputs.first().ok_or("the operation has no output")?;
        match node.kind.as_str() {
            "prim::ListConstruct" => {
                let ints: Option<Vec<i64>> = node.inputs.iter().map(|&i| self.int(i).ok()).collect();
                let int_like = |b: &Self, i: u64| b.int(i).is_ok() || b.dynamic_ints.contains(&i);
                match ints {
                    Some(v) => {
                        self.consts.insert(out.id, Const::Ints(v));
                    }
                    None if node.inputs.iter().all(|&i| int_like(self, i)) => {
                        self.int_lists.insert(out.id, node.inputs.clone());
                    }
                    None => {
                        self.lists.insert(out.id, node.inputs.clone());
                    }
                }
                Ok(())
            }
            "prim::ListUnpack" => {
                let (x, axis) = self.splits.get(&node.inputs[0]).cloned().ok_or("a list that is not a split tensor")?;
                let mut parts = Vec::new();
                for v in &node.outputs {
                    let sizes = v.sizes.as_ref().ok_or("a split part of unknown size")?;
                    parts.push(sizes[axis as usize]);
                }
                let split = self.ints_init(&parts);
                let outputs = node.outputs.iter().map(|v| name_of(v.id)).collect();
                self.push("Split", vec![x, split], outputs, vec![("axis", Attr::Int(axis))]);
                Ok(())
            }
            other => Err(format!("operator `{other}` is not supported")),
        }
    }

    /// A shape operand (1-d int64): constant sizes, or a list with `aten::size` values in it.
    fn shape(&mut self, id: u64) -> Res<String> {
        let Some(items) = self.int_lists.get(&id).cloned() else {
            let sizes = self.ints(id)?;
            return Ok(self.ints_init(&sizes));
        };
        let mut parts = Vec::new();
        for item in items {
            parts.push(match self.int(item) {
                Ok(i) => self.ints_init(&[i]),
                Err(_) => name_of(item),
            });
        }
        let y = self.temp();
        self.push("Concat", parts, vec![y.clone()], vec![("axis", Attr::Int(0))]);
        Ok(y)
    }

    /// `aten::size(x, dim)`: a 1-element int64 tensor, known when the model runs.
    fn size(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let dim = axis(self.int(ins[1])?, self.rank(ins[0])?);
        let (x, shape) = (self.tensor(ins[0])?, self.temp());
        self.push("Shape", vec![x], vec![shape.clone()], vec![]);
        let index = self.ints_init(&[dim]);
        self.push("Gather", vec![shape, index], vec![y], vec![("axis", Attr::Int(0))]);
        self.dynamic_ints.insert(op.outs[0].id);
        Ok(())
    }

    /// A 0-d tensor of the output's dtype holding `value`.
    fn scalar(&mut self, value: f64, kind: Kind) -> String {
        let name = self.temp();
        self.initializer(name, Tensor::from(value).to_kind(kind))
    }

    /// `aten::zeros`, `ones`, `full` and their `new_*` forms: the value expanded to the shape.
    fn fill(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name, ins, y, kind, .. } = op;
        let (sizes, rest) = if name.starts_with("new_") { (ins[1], &ins[2..]) } else { (ins[0], &ins[1..]) };
        let value = match name.trim_start_matches("new_") {
            "zeros" => 0.0,
            "ones" => 1.0,
            _ => self.float(rest[0])?,
        };
        let (v, shape) = (self.scalar(value, kind), self.shape(sizes)?);
        self.push("Expand", vec![v, shape], vec![y], vec![]);
        Ok(())
    }

    /// `aten::zeros_like`, `ones_like`, `full_like`.
    fn fill_like(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name, ins, y, kind, .. } = op;
        let value = match name {
            "zeros_like" => 0.0,
            "ones_like" => 1.0,
            _ => self.float(ins[1])?,
        };
        let (x, shape) = (self.tensor(ins[0])?, self.temp());
        self.push("Shape", vec![x], vec![shape.clone()], vec![]);
        let v = self.scalar(value, kind);
        self.push("Expand", vec![v, shape], vec![y], vec![]);
        Ok(())
    }

    /// `aten::upsample_nearest1d`/`2d`, `aten::upsample_bilinear2d`: `Resize` by the scale from
    /// the input's to the output's spatial sizes (so the batch and channels stay free).
    fn upsample(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name, ins, y, outs, .. } = op;
        let (input, output) = (self.sizes(ins[0])?, outs[0].sizes.clone().ok_or("an output of unknown size")?);
        let mut scales = vec![1.0f32, 1.0];
        for (i, o) in input[2..].iter().zip(&output[2..]) {
            scales.push(*o as f32 / *i as f32);
        }
        let x = self.tensor(ins[0])?;
        let scales_name = self.temp();
        let scales_name = self.initializer(scales_name, Tensor::from_slice(&scales));
        let mut attrs = Vec::new();
        if name.contains("nearest") {
            attrs.push(("mode", Attr::Str("nearest".into())));
            attrs.push(("coordinate_transformation_mode", Attr::Str("asymmetric".into())));
            attrs.push(("nearest_mode", Attr::Str("floor".into())));
        } else {
            let align = self.bool(ins[2])?;
            attrs.push(("mode", Attr::Str("linear".into())));
            let transform = if align { "align_corners" } else { "pytorch_half_pixel" };
            attrs.push(("coordinate_transformation_mode", Attr::Str(transform.into())));
        }
        self.push("Resize", vec![x, String::new(), scales_name], vec![y], attrs);
        Ok(())
    }

    /// `aten::pixel_shuffle`.
    fn pixel_shuffle(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let attrs = vec![("blocksize", Attr::Int(self.int(ins[1])?)), ("mode", Attr::Str("CRD".into()))];
        let x = self.tensor(ins[0])?;
        self.push("DepthToSpace", vec![x], vec![y], attrs);
        Ok(())
    }

    /// `aten::instance_norm` (with the input's own statistics, as `nn.InstanceNorm`).
    fn instance_norm(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, kind, .. } = op;
        if !self.bool(ins[5])? {
            return Err("`instance_norm` with running statistics".into());
        }
        let channels = self.sizes(ins[0])?[1];
        let mut inputs = vec![self.tensor(ins[0])?];
        inputs.extend(self.scale_and_bias(ins[1], ins[2], &[channels], kind)?);
        let attrs = vec![("epsilon", Attr::Float(self.float(ins[7])? as f32))];
        self.push("InstanceNormalization", inputs, vec![y], attrs);
        Ok(())
    }

    /// `aten::narrow`.
    fn narrow(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let (dim, start, length) = (self.int(ins[1])?, self.int(ins[2])?, self.int(ins[3])?);
        let x = self.tensor(ins[0])?;
        let inputs = vec![x, self.ints_init(&[start]), self.ints_init(&[start + length]), self.ints_init(&[dim])];
        self.push("Slice", inputs, vec![y], vec![]);
        Ok(())
    }

    /// `aten::chunk`, `aten::split`: remembered for the `prim::ListUnpack` that takes the parts.
    fn chunk(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, outs, .. } = op;
        let dim = axis(self.int(ins[2])?, self.rank(ins[0])?);
        let x = self.tensor(ins[0])?;
        self.splits.insert(outs[0].id, (x, dim));
        Ok(())
    }

    /// `aten::expand`, `aten::repeat`.
    fn expand(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name, ins, y, .. } = op;
        let sizes = self.ints(ins[1])?;
        let x = self.tensor(ins[0])?;
        if name == "repeat" {
            if sizes.len() != self.rank(ins[0])? {
                return Err("`repeat` with more repeats than dimensions".into());
            }
            let repeats = self.ints_init(&sizes);
            self.push("Tile", vec![x, repeats], vec![y], vec![]);
        } else {
            // `-1` keeps a dimension; broadcasting against 1 does the same.
            let shape: Vec<i64> = sizes.iter().map(|&d| if d == -1 { 1 } else { d }).collect();
            let shape = self.ints_init(&shape);
            self.push("Expand", vec![x, shape], vec![y], vec![]);
        }
        Ok(())
    }

    /// `aten::hardsigmoid`.
    fn hardsigmoid(&mut self, op: Op<'_>) -> Res<()> {
        let Op { ins, y, .. } = op;
        let x = self.tensor(ins[0])?;
        let attrs = vec![("alpha", Attr::Float(1.0 / 6.0)), ("beta", Attr::Float(0.5))];
        self.push("HardSigmoid", vec![x], vec![y], attrs);
        Ok(())
    }

    /// `aten::lstm`, `aten::gru`, `aten::rnn_tanh`, `aten::rnn_relu` (tch's `nn::lstm`, `nn::gru`,
    /// `nn::rnn`): one ONNX `LSTM`/`GRU`/`RNN` per layer, with PyTorch's gates reordered to
    /// ONNX's and the layers' outputs chained as PyTorch chains them.
    fn recurrent(&mut self, op: Op<'_>) -> Res<()> {
        let Op { name, ins, outs, .. } = op;
        if ins.len() != 9 {
            return Err(format!("`{name}` on packed sequences"));
        }
        let params = self.lists.get(&ins[2]).cloned().ok_or("the weights are not a list")?;
        let (has_biases, layers) = (self.bool(ins[3])?, self.int(ins[4])? as usize);
        let (train, bidirectional, batch_first) = (self.bool(ins[6])?, self.bool(ins[7])?, self.bool(ins[8])?);
        if train && self.float(ins[5])? > 0.0 {
            return Err(format!("`{name}` with dropout in training mode; trace `forward` in eval mode"));
        }
        let (onnx, gates, order): (&'static str, i64, &[i64]) = match name {
            // PyTorch's gates are i, f, g, o (LSTM) and r, z, n (GRU); ONNX's i, o, f, c and z, r, h.
            "lstm" => ("LSTM", 4, &[0, 3, 1, 2]),
            "gru" => ("GRU", 3, &[1, 0, 2]),
            _ => ("RNN", 1, &[0]),
        };
        let dirs = if bidirectional { 2 } else { 1 };
        let per_direction = if has_biases { 4 } else { 2 };
        if params.len() != layers * dirs * per_direction {
            return Err(format!("`{name}` with {} weights for {layers} layers", params.len()));
        }
        // The initial states: `[h, c]` for an LSTM, `h` otherwise; zeros are ONNX's default.
        let states: Vec<u64> = match name {
            "lstm" => self.lists.get(&ins[1]).cloned().ok_or("the LSTM's state is not a list")?,
            _ => vec![ins[1]],
        };
        let zero_state = |b: &Self, id: u64| {
            b.producers.get(&id).is_some_and(|n| n.kind == "aten::zeros" || n.kind == "aten::zeros_like")
        };
        let weight = |b: &Self, id: u64| match b.constant(id) {
            Some(Const::Tensor(i)) => Ok(b.graph.tensors[*i].shallow_clone()),
            _ => Err(format!("`{name}`'s weights are not constants of the trace")),
        };
        let reorder = |t: &Tensor| {
            let chunks = t.chunk(gates, 0);
            Tensor::cat(&order.iter().map(|&i| chunks[i as usize].shallow_clone()).collect::<Vec<_>>(), 0)
        };
        let mut x = self.tensor(ins[0])?;
        if batch_first {
            let t = self.temp();
            self.push("Transpose", vec![x], vec![t.clone()], vec![("perm", Attr::Ints(vec![1, 0, 2]))]);
            x = t;
        }
        let hidden = self.sizes(params[1])?[1];
        let (mut last_h, mut last_c) = (Vec::new(), Vec::new());
        for layer in 0..layers {
            let (mut w, mut r, mut bias) = (Vec::new(), Vec::new(), Vec::new());
            for d in 0..dirs {
                let at = (layer * dirs + d) * per_direction;
                w.push(reorder(&weight(self, params[at])?));
                r.push(reorder(&weight(self, params[at + 1])?));
                bias.push(if has_biases {
                    Tensor::cat(&[reorder(&weight(self, params[at + 2])?), reorder(&weight(self, params[at + 3])?)], 0)
                } else {
                    Tensor::zeros([2 * gates * hidden], (w[0].kind(), tch::Device::Cpu))
                });
            }
            let mut inputs = vec![x.clone()];
            for parts in [w, r, bias] {
                let name = self.temp();
                inputs.push(self.initializer(name, Tensor::stack(&parts, 0)));
            }
            inputs.push(String::new()); // sequence_lens
            for &state in &states {
                inputs.push(if zero_state(self, state) {
                    String::new()
                } else {
                    let (s, t) = (self.tensor(state)?, self.temp());
                    let (start, end) = ((layer * dirs) as i64, ((layer + 1) * dirs) as i64);
                    let slice = vec![s, self.ints_init(&[start]), self.ints_init(&[end]), self.ints_init(&[0])];
                    self.push("Slice", slice, vec![t.clone()], vec![]);
                    t
                });
            }
            let (seq, h, c) = (self.temp(), self.temp(), self.temp());
            let mut outputs = vec![seq.clone(), h.clone()];
            if onnx == "LSTM" {
                outputs.push(c.clone());
            }
            let mut attrs = vec![
                ("hidden_size", Attr::Int(hidden)),
                ("direction", Attr::Str(if bidirectional { "bidirectional" } else { "forward" }.into())),
            ];
            match name {
                "gru" => attrs.push(("linear_before_reset", Attr::Int(1))),
                "rnn_relu" => attrs.push(("activations", Attr::Strs(vec!["Relu".into(); dirs]))),
                _ => {}
            }
            while inputs.last().is_some_and(String::is_empty) {
                inputs.pop();
            }
            self.push(onnx, inputs, outputs, attrs);
            // [seq, dirs, batch, hidden] -> [seq, batch, dirs * hidden], the next layer's input.
            let (t, merged, shape) = (self.temp(), self.temp(), self.ints_init(&[0, 0, -1]));
            self.push("Transpose", vec![seq], vec![t.clone()], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
            self.push("Reshape", vec![t, shape], vec![merged.clone()], vec![]);
            x = merged;
            last_h.push(h);
            last_c.push(c);
        }
        let output = name_of(outs[0].id);
        if batch_first {
            self.push("Transpose", vec![x], vec![output], vec![("perm", Attr::Ints(vec![1, 0, 2]))]);
        } else {
            self.push("Identity", vec![x], vec![output], vec![]);
        }
        for (out, parts) in outs[1..].iter().zip([last_h, last_c]) {
            self.push("Concat", parts, vec![name_of(out.id)], vec![("axis", Attr::Int(0))]);
        }
        Ok(())
    }
}
