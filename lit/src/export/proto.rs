//! The part of ONNX's protobuf schema (`onnx.proto`) that export writes, through lit's
//! protobuf encoder.

use tch::{Kind, Tensor};

pub(super) use crate::protobuf::Message;

/// ONNX's `TensorProto.DataType` of a libtorch dtype.
pub(super) fn elem_type(kind: Kind) -> Option<i64> {
    Some(match kind {
        Kind::Float => 1,
        Kind::Uint8 => 2,
        Kind::Int8 => 3,
        Kind::Int16 => 5,
        Kind::Int => 6,
        Kind::Int64 => 7,
        Kind::Bool => 9,
        Kind::Half => 10,
        Kind::Double => 11,
        Kind::BFloat16 => 16,
        _ => return None,
    })
}

/// libtorch's dtype from c10's `ScalarType` number, as the trace reports it.
pub(super) fn kind_of_scalar_type(t: i32) -> Option<Kind> {
    Some(match t {
        0 => Kind::Uint8,
        1 => Kind::Int8,
        2 => Kind::Int16,
        3 => Kind::Int,
        4 => Kind::Int64,
        5 => Kind::Half,
        6 => Kind::Float,
        7 => Kind::Double,
        11 => Kind::Bool,
        15 => Kind::BFloat16,
        _ => return None,
    })
}

/// A `TensorProto` named `name` holding `t`'s values (little-endian raw data).
pub(super) fn tensor(name: &str, t: &Tensor) -> Result<Message, String> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let kind = t.kind();
    let data_type = elem_type(kind).ok_or_else(|| format!("tensor `{name}` has dtype {kind:?}, which ONNX lacks"))?;
    let numel = t.numel();
    let mut raw = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut raw, numel).map_err(|e| format!("reading tensor `{name}`: {e}"))?;
    let mut m = Message::default();
    for &d in &t.size() {
        m.int(1, d);
    }
    m.int(2, data_type).string(8, name).bytes(9, &raw);
    Ok(m)
}

/// A `ValueInfoProto`: a graph input or output with its dtype and shape.
/// Dimension `i` is symbolic (any size), named `free[i]`, where that is given.
pub(super) fn value_info(name: &str, elem: i64, dims: &[i64], free: &[Option<String>]) -> Message {
    let mut shape = Message::default();
    for (i, &d) in dims.iter().enumerate() {
        let mut dim = Message::default();
        match free.get(i) {
            Some(Some(param)) => dim.string(2, param),
            _ => dim.int(1, d),
        };
        shape.message(1, &dim);
    }
    let mut tensor_type = Message::default();
    tensor_type.int(1, elem).message(2, &shape);
    let mut ty = Message::default();
    ty.message(1, &tensor_type);
    let mut info = Message::default();
    info.string(1, name).message(2, &ty);
    info
}

/// An attribute of a node.
#[derive(Debug, Clone)]
pub(super) enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
    Strs(Vec<String>),
}

/// An `AttributeProto`.
pub(super) fn attribute(name: &str, attr: &Attr) -> Message {
    let mut m = Message::default();
    m.string(1, name);
    match attr {
        Attr::Float(f) => m.float(2, *f).int(20, 1),
        Attr::Int(i) => m.int(3, *i).int(20, 2),
        Attr::Str(s) => m.string(4, s).int(20, 3),
        Attr::Strs(v) => {
            for s in v {
                m.string(9, s);
            }
            m.int(20, 8)
        }
        Attr::Ints(v) => {
            for &i in v {
                m.int(8, i);
            }
            m.int(20, 7)
        }
    };
    m
}
