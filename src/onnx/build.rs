//! Constructors of graph messages for code that builds graphs (the model generator, tests):
//! attributes of each type, and nodes.

use bytes::Bytes;

use super::proto::attribute_proto::AttributeType;
use super::proto::{AttributeProto, NodeProto, TensorProto};

fn attr(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// An `INT` attribute.
pub fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        i: Some(value),
        ..attr(name, AttributeType::Int)
    }
}

/// An `INTS` attribute.
pub fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: values.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

/// A `FLOAT` attribute.
pub fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        f: Some(value),
        ..attr(name, AttributeType::Float)
    }
}

/// A `STRING` attribute.
pub fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..attr(name, AttributeType::String)
    }
}

/// A `TENSOR` attribute.
pub fn tensor_attr(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(value),
        ..attr(name, AttributeType::Tensor)
    }
}

/// A node of operator `op` (default domain) named `name`, without attributes.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.to_owned()),
        op_type: Some(op.to_owned()),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}
