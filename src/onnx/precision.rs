//! FLOAT16 models (`export.py --half`, fp16 conversion tools) computed in FLOAT instead: proofs
//! that compare two models run them in float32, where the rounding of fp16 arithmetic, which
//! differs between a graph and its surgically pruned copy, cannot hide or fake a difference.

use anyhow::{Context, Result};

use super::proto::tensor_proto::DataType;
use super::proto::{ModelProto, TensorProto, ValueInfoProto, type_proto};
use super::tensor::{from_f32, to_f32};

const FLOAT16: i32 = DataType::Float16 as i32;
const FLOAT: i32 = DataType::Float as i32;

/// Rewrites the main graph of `model` from FLOAT16 to FLOAT: each FLOAT16 initializer and
/// tensor attribute (`Constant`, `ConstantOfShape`) holds the same values as FLOAT, each
/// `Cast(to=FLOAT16)` casts to FLOAT, and each FLOAT16 graph input, output and value info is
/// declared FLOAT. Every fp16 value is exact in f32, so the model computes what it computed, in
/// float32 arithmetic. Returns whether anything changed.
pub fn widen_fp16(model: &mut ModelProto) -> Result<bool> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let mut changed = false;
    for t in &mut graph.initializer {
        changed |= widen_tensor(t)?;
    }
    for node in &mut graph.node {
        let is_cast = node.op_type() == "Cast";
        for a in &mut node.attribute {
            if let Some(t) = a.t.as_mut() {
                changed |= widen_tensor(t).with_context(|| {
                    format!("attribute {} of node {:?}", a.name(), node.name.as_deref())
                })?;
            }
            if is_cast && a.name() == "to" && a.i == Some(i64::from(FLOAT16)) {
                a.i = Some(i64::from(FLOAT));
                changed = true;
            }
        }
    }
    for v in graph
        .input
        .iter_mut()
        .chain(&mut graph.output)
        .chain(&mut graph.value_info)
    {
        changed |= widen_declared(v);
    }
    Ok(changed)
}

/// Stores a FLOAT16 tensor's values as FLOAT; whether it was FLOAT16.
fn widen_tensor(t: &mut TensorProto) -> Result<bool> {
    if t.data_type != Some(FLOAT16) {
        return Ok(false);
    }
    let values = to_f32(t)?;
    let mut wide = from_f32(t.name(), &t.dims, &values);
    wide.doc_string = t.doc_string.take();
    *t = wide;
    Ok(true)
}

/// Declares a FLOAT16 tensor value FLOAT; whether it was FLOAT16.
fn widen_declared(v: &mut ValueInfoProto) -> bool {
    match v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(type_proto::Value::TensorType(t)) if t.elem_type == Some(FLOAT16) => {
            t.elem_type = Some(FLOAT);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto};

    #[test]
    fn widens_initializers_constants_casts_and_declarations() {
        let half = TensorProto {
            name: Some("w".into()),
            dims: vec![2],
            data_type: Some(FLOAT16),
            int32_data: [0.5f32, -3.0]
                .iter()
                .map(|&v| i32::from(half::f16::from_f32(v).to_bits()))
                .collect(),
            ..Default::default()
        };
        let cast = NodeProto {
            op_type: Some("Cast".into()),
            attribute: vec![AttributeProto {
                name: Some("to".into()),
                i: Some(i64::from(FLOAT16)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut input = crate::onnx::tensor::value_info_f32("x", &[1]);
        assert!(!widen_declared(&mut input), "a FLOAT input stays");
        let mut model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![half],
                node: vec![cast],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(widen_fp16(&mut model).unwrap());
        let graph = model.graph.as_ref().unwrap();
        assert_eq!(graph.initializer[0].data_type, Some(FLOAT));
        assert_eq!(to_f32(&graph.initializer[0]).unwrap(), [0.5, -3.0]);
        assert_eq!(graph.node[0].attribute[0].i, Some(i64::from(FLOAT)));
        assert!(!widen_fp16(&mut model).unwrap(), "nothing left to widen");
    }
}
