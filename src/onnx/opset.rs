//! Raising a model's default-domain (`ai.onnx`) opset import, when that keeps the meaning of
//! every node.
//!
//! Raising the import from `v` to `t` re-reads each node under the newest version of its op
//! that is at most `t`. That is only sound when every version of the op introduced in `(v, t]`
//! accepts the old node unchanged and computes the same: versions that only add types, allow
//! negative axes, or add attributes whose defaults are the old behaviour. [`COMPATIBLE`] lists
//! those (from the ONNX operator changelog); any other version in between (an attribute turned
//! into an input such as `Clip`-11, `Pad`-11, `Slice`-10, `TopK`-10, `Resize`-11; a deprecation
//! such as `Upsample`-10) makes the raise invalid. Ops not in [`VERSIONS`] did not change up to
//! opset 11.

use anyhow::{Result, bail};

use super::proto::{GraphProto, ModelProto, NodeProto};

/// The highest target this table covers.
pub const MAX_TARGET: i64 = 11;

/// Every default-domain op with a version in 2..=11, and those versions (from onnx 1.23's
/// schema history).
const VERSIONS: &[(&str, &[i64])] = &[
    ("Abs", &[6]),
    ("Acos", &[7]),
    ("Acosh", &[9]),
    ("Add", &[6, 7]),
    ("And", &[7]),
    ("ArgMax", &[11]),
    ("ArgMin", &[11]),
    ("Asin", &[7]),
    ("Asinh", &[9]),
    ("Atan", &[7]),
    ("Atanh", &[9]),
    ("AveragePool", &[7, 10, 11]),
    ("BatchNormalization", &[6, 7, 9]),
    ("BitShift", &[11]),
    ("Cast", &[6, 9]),
    ("Ceil", &[6]),
    ("Clip", &[6, 11]),
    ("Compress", &[9, 11]),
    ("Concat", &[4, 11]),
    ("ConcatFromSequence", &[11]),
    ("Constant", &[9, 11]),
    ("ConstantOfShape", &[9]),
    ("Conv", &[11]),
    ("ConvInteger", &[10]),
    ("ConvTranspose", &[11]),
    ("Cos", &[7]),
    ("Cosh", &[9]),
    ("CumSum", &[11]),
    ("DepthToSpace", &[11]),
    ("DequantizeLinear", &[10]),
    ("Det", &[11]),
    ("Div", &[6, 7]),
    ("Dropout", &[6, 7, 10]),
    ("DynamicQuantizeLinear", &[11]),
    ("Elu", &[6]),
    ("Equal", &[7, 11]),
    ("Erf", &[9]),
    ("Exp", &[6]),
    ("Expand", &[8]),
    ("EyeLike", &[9]),
    ("Flatten", &[9, 11]),
    ("Floor", &[6]),
    ("GRU", &[3, 7]),
    ("Gather", &[11]),
    ("GatherElements", &[11]),
    ("GatherND", &[11]),
    ("Gemm", &[6, 7, 9, 11]),
    ("GlobalLpPool", &[2]),
    ("Greater", &[7, 9]),
    ("HardSigmoid", &[6]),
    ("Hardmax", &[11]),
    ("If", &[11]),
    ("InstanceNormalization", &[6]),
    ("IsInf", &[10]),
    ("IsNaN", &[9]),
    ("LSTM", &[7]),
    ("LeakyRelu", &[6]),
    ("Less", &[7, 9]),
    ("Log", &[6]),
    ("LogSoftmax", &[11]),
    ("Loop", &[11]),
    ("LpPool", &[2, 11]),
    ("MatMul", &[9]),
    ("MatMulInteger", &[10]),
    ("Max", &[6, 8]),
    ("MaxPool", &[8, 10, 11]),
    ("MaxUnpool", &[9, 11]),
    ("Mean", &[6, 8]),
    ("MeanVarianceNormalization", &[9]),
    ("Min", &[6, 8]),
    ("Mod", &[10]),
    ("Mul", &[6, 7]),
    ("Multinomial", &[7]),
    ("Neg", &[6]),
    ("NonMaxSuppression", &[10, 11]),
    ("NonZero", &[9]),
    ("OneHot", &[9, 11]),
    ("Or", &[7]),
    ("PRelu", &[6, 7, 9]),
    ("Pad", &[2, 11]),
    ("Pow", &[7]),
    ("QLinearConv", &[10]),
    ("QLinearMatMul", &[10]),
    ("QuantizeLinear", &[10]),
    ("RNN", &[7]),
    ("Range", &[11]),
    ("Reciprocal", &[6]),
    ("ReduceL1", &[11]),
    ("ReduceL2", &[11]),
    ("ReduceLogSum", &[11]),
    ("ReduceLogSumExp", &[11]),
    ("ReduceMax", &[11]),
    ("ReduceMean", &[11]),
    ("ReduceMin", &[11]),
    ("ReduceProd", &[11]),
    ("ReduceSum", &[11]),
    ("ReduceSumSquare", &[11]),
    ("Relu", &[6]),
    ("Reshape", &[5]),
    ("Resize", &[10, 11]),
    ("ReverseSequence", &[10]),
    ("RoiAlign", &[10]),
    ("Round", &[11]),
    ("Scan", &[8, 9, 11]),
    ("Scatter", &[9, 11]),
    ("ScatterElements", &[11]),
    ("ScatterND", &[11]),
    ("Selu", &[6]),
    ("SequenceAt", &[11]),
    ("SequenceConstruct", &[11]),
    ("SequenceEmpty", &[11]),
    ("SequenceErase", &[11]),
    ("SequenceInsert", &[11]),
    ("SequenceLength", &[11]),
    ("Shrink", &[9]),
    ("Sigmoid", &[6]),
    ("Sign", &[9]),
    ("Sin", &[7]),
    ("Sinh", &[9]),
    ("Slice", &[10, 11]),
    ("Softmax", &[11]),
    ("Split", &[2, 11]),
    ("SplitToSequence", &[11]),
    ("Sqrt", &[6]),
    ("Squeeze", &[11]),
    ("StringNormalizer", &[10]),
    ("Sub", &[6, 7]),
    ("Sum", &[6, 8]),
    ("Tan", &[7]),
    ("Tanh", &[6]),
    ("TfIdfVectorizer", &[9]),
    ("ThresholdedRelu", &[10]),
    ("Tile", &[6]),
    ("TopK", &[10, 11]),
    ("Unique", &[11]),
    ("Unsqueeze", &[11]),
    ("Upsample", &[7, 9, 10]),
    ("Where", &[9]),
    ("Xor", &[7]),
];

/// Versions (op, version) that read every node of the previous version unchanged and compute
/// the same, provided the node has none of [`REMOVED_ATTRIBUTES`]: type additions (Cast-9,
/// Constant-9, Gemm-9, MatMul-9, ...), negative axes (Concat-11, Flatten-11, Gather-11, the
/// reductions, Softmax-11, Split-11, Squeeze-11, ...), numpy broadcasting where the old version
/// required equal shapes or an explicit `broadcast` (Add-7, Max-8, ...), new attributes with the
/// old behaviour as default (AveragePool-10 `ceil_mode`, MaxPool-8 `storage_order`,
/// DepthToSpace-11 `mode`, ArgMax-11 `select_last_index`, TopK-11 `largest`), and the
/// removal of legacy attributes (`consumed_inputs` in version 6, `is_test` in 7).
const COMPATIBLE: &[(&str, i64)] = &[
    ("Abs", 6),
    ("Add", 6),
    ("Add", 7),
    ("And", 7),
    ("ArgMax", 11),
    ("ArgMin", 11),
    ("AveragePool", 7),
    ("AveragePool", 10),
    ("AveragePool", 11),
    ("BatchNormalization", 6),
    ("BatchNormalization", 7),
    ("BatchNormalization", 9),
    ("Cast", 9),
    ("Ceil", 6),
    ("Compress", 11),
    ("Concat", 11),
    ("Constant", 9),
    ("Constant", 11),
    ("Conv", 11),
    ("ConvTranspose", 11),
    ("DepthToSpace", 11),
    ("Div", 6),
    ("Div", 7),
    ("Dropout", 6),
    ("Dropout", 7),
    ("Dropout", 10),
    ("Elu", 6),
    ("Equal", 7),
    ("Equal", 11),
    ("Exp", 6),
    ("Flatten", 9),
    ("Flatten", 11),
    ("Floor", 6),
    ("Gather", 11),
    ("Gemm", 6),
    ("Gemm", 7),
    ("Gemm", 9),
    ("Gemm", 11),
    ("Greater", 7),
    ("Greater", 9),
    ("HardSigmoid", 6),
    ("Hardmax", 11),
    ("InstanceNormalization", 6),
    ("LeakyRelu", 6),
    ("Less", 7),
    ("Less", 9),
    ("Log", 6),
    ("LogSoftmax", 11),
    ("LpPool", 11),
    ("MatMul", 9),
    ("Max", 6),
    ("Max", 8),
    ("MaxPool", 8),
    ("MaxPool", 10),
    ("MaxPool", 11),
    ("MaxUnpool", 11),
    ("Mean", 6),
    ("Mean", 8),
    ("Min", 6),
    ("Min", 8),
    ("Mul", 6),
    ("Mul", 7),
    ("Neg", 6),
    ("NonMaxSuppression", 11),
    ("OneHot", 11),
    ("Or", 7),
    ("PRelu", 6),
    ("PRelu", 7),
    ("PRelu", 9),
    ("Pow", 7),
    ("Reciprocal", 6),
    ("ReduceL1", 11),
    ("ReduceL2", 11),
    ("ReduceLogSum", 11),
    ("ReduceLogSumExp", 11),
    ("ReduceMax", 11),
    ("ReduceMean", 11),
    ("ReduceMin", 11),
    ("ReduceProd", 11),
    ("ReduceSum", 11),
    ("ReduceSumSquare", 11),
    ("Relu", 6),
    ("Scan", 11),
    ("Selu", 6),
    ("Sigmoid", 6),
    ("Slice", 11),
    ("Softmax", 11),
    ("Split", 11),
    ("Sqrt", 6),
    ("Squeeze", 11),
    ("Sub", 6),
    ("Sub", 7),
    ("Sum", 6),
    ("Sum", 8),
    ("Tanh", 6),
    ("TopK", 11),
    ("Unsqueeze", 11),
    ("Xor", 7),
];

/// Legacy attributes whose meaning later versions dropped: a node carrying one is never raised.
const REMOVED_ATTRIBUTES: &[&str] = &["consumed_inputs", "broadcast", "spatial", "is_test"];

/// The default-domain opset the model imports, if any.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
}

/// Raises the default-domain opset import to `target` (at most [`MAX_TARGET`]) when it is
/// lower and every default-domain node, in subgraphs too, keeps its meaning; returns the old
/// version when it raised. Errors name the first node that would change meaning.
pub fn raise_default_opset(model: &mut ModelProto, target: i64) -> Result<Option<i64>> {
    let Some(from) = default_opset(model).filter(|&v| v < target) else {
        return Ok(None);
    };
    check_raise(model, target)?;
    for import in &mut model.opset_import {
        if matches!(import.domain(), "" | "ai.onnx") {
            import.version = Some(target);
        }
    }
    Ok(Some(from))
}

/// Whether [`raise_default_opset`] to `target` would succeed; the error names the node.
pub fn check_raise(model: &ModelProto, target: i64) -> Result<()> {
    assert!(
        target <= MAX_TARGET,
        "the version table stops at opset {MAX_TARGET}"
    );
    match (default_opset(model), &model.graph) {
        (Some(from), Some(graph)) if from < target => check_graph(graph, from, target),
        _ => Ok(()),
    }
}

fn check_graph(graph: &GraphProto, from: i64, target: i64) -> Result<()> {
    for node in &graph.node {
        if matches!(node.domain(), "" | "ai.onnx") {
            check_node(node, from, target)?;
        }
        for attribute in &node.attribute {
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                check_graph(sub, from, target)?;
            }
        }
    }
    Ok(())
}

fn check_node(node: &NodeProto, from: i64, target: i64) -> Result<()> {
    let op = node.op_type();
    let versions = VERSIONS
        .iter()
        .find(|(name, _)| *name == op)
        .map_or(&[][..], |(_, versions)| *versions);
    let changed = versions
        .iter()
        .copied()
        .filter(|&v| v > from && v <= target)
        .find(|&v| !COMPATIBLE.contains(&(op, v)));
    let legacy = node
        .attribute
        .iter()
        .find(|a| REMOVED_ATTRIBUTES.contains(&a.name()));
    if let Some(version) = changed {
        bail!(
            "node {:?} ({op}) changes meaning between opset {from} and {target} ({op}-{version}), \
             so its opset import cannot be raised",
            node.name()
        );
    }
    if let (Some(attribute), true) = (legacy, versions.iter().any(|&v| v > from && v <= target)) {
        bail!(
            "node {:?} ({op}) has the legacy attribute {:?}, which later versions of {op} dropped, \
             so its opset import cannot be raised from {from} to {target}",
            node.name(),
            attribute.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{int_attr, node};
    use crate::onnx::proto::OperatorSetIdProto;

    fn model(opset: i64, nodes: Vec<NodeProto>) -> ModelProto {
        ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(GraphProto {
                node: nodes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn raises_when_every_node_keeps_its_meaning() {
        let mut m = model(
            9,
            vec![
                node("Conv", "c", &["x", "w"], &["y"]),
                node("Relu", "r", &["y"], &["z"]),
                node("Concat", "cat", &["z", "z"], &["o"]),
            ],
        );
        assert_eq!(raise_default_opset(&mut m, 11).unwrap(), Some(9));
        assert_eq!(default_opset(&m), Some(11));
        // already there: nothing to do
        assert_eq!(raise_default_opset(&mut m, 11).unwrap(), None);
    }

    #[test]
    fn refuses_an_op_whose_meaning_changed_and_names_it() {
        for (opset, op) in [(9, "Upsample"), (10, "Clip"), (9, "Slice"), (10, "Pad")] {
            let mut m = model(opset, vec![node(op, "the_node", &["x"], &["y"])]);
            let err = raise_default_opset(&mut m, 11).unwrap_err().to_string();
            assert!(err.contains("\"the_node\"") && err.contains(op), "{err}");
            assert_eq!(default_opset(&m), Some(opset), "unchanged on refusal");
        }
        let mut legacy = node("Add", "a", &["x", "y"], &["z"]);
        legacy.attribute.push(int_attr("broadcast", 1));
        let err = raise_default_opset(&mut model(6, vec![legacy]), 11).unwrap_err();
        assert!(err.to_string().contains("legacy attribute"), "{err}");
    }

    #[test]
    fn every_compatible_version_is_a_real_version() {
        for (op, v) in COMPATIBLE {
            let versions = VERSIONS.iter().find(|(name, _)| name == op).unwrap().1;
            assert!(versions.contains(v), "{op}-{v}");
        }
    }
}
