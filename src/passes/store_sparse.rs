//! `store_sparse`: store pruned Conv weights in sparse form where the file shrinks.
//!
//! Before: a dense FLOAT initializer `W` with many zeros, read by a Conv. After: `W` is gone from
//! `graph.initializer`, and a `Constant` node at the head of the graph produces `W` from its
//! `sparse_value` attribute in COO form: `values` (FLOAT, `[nnz]`), `indices` (INT64, `[nnz]`,
//! ascending positions in the flattened tensor, as onnx's checker requires) and the original
//! `dims`. The output of such a Constant is a dense tensor, so shape inference and onnx's full
//! check accept it as a Conv weight (a `sparse_initializer` would be typed as a sparse tensor,
//! which Conv rejects). Runtimes densify it on load: outputs are unchanged.
//!
//! Each non-zero costs 12 bytes instead of 4, so only weights more than two thirds zero get
//! smaller; the others stay dense.
//!
//! `sparse_value` exists from opset 11: a model importing an older default-domain opset has its
//! import raised to 11 when every node keeps its meaning there ([`opset::raise_default_opset`]),
//! and the pass fails naming the node otherwise.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::selection::{LayerFilter, read_values, selected_weights};
use super::{Pass, PassContext, PassOutput};
use crate::graph::edit;
use crate::onnx::opset;
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, SparseTensorProto};
use crate::onnx::tensor;

/// Options of `store_sparse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSparse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Bytes of one stored non-zero: a FLOAT value and an INT64 index.
const SPARSE_ENTRY_BYTES: usize = 4 + 8;

/// The first default-domain opset whose `Constant` has `sparse_value`.
const SPARSE_CONSTANT_OPSET: i64 = 11;

impl Pass for StoreSparse {
    fn name(&self) -> &'static str {
        "store_sparse"
    }

    fn validate(&self) -> Result<()> {
        LayerFilter::new(&self.include, &self.exclude).map(drop)
    }

    /// [`StoreSparse::store`] on the model's graph, raising its opset import to 11 when it stored
    /// a weight and the model imports an older one.
    fn run(&self, model: &mut ModelProto, _: &mut PassContext) -> Result<PassOutput> {
        let old_opset = opset::default_opset(model).filter(|&v| v < SPARSE_CONSTANT_OPSET);
        if old_opset.is_some() {
            // refuse before any work when the raise would be invalid
            opset::check_raise(model, SPARSE_CONSTANT_OPSET).context(
                "sparse storage needs opset 11 (Constant's sparse_value), and this model cannot \
                 be raised to it",
            )?;
        }
        let graph = model.graph.as_mut().context("the model has no graph")?;
        let nodes = graph.node.len();
        let summary = self.store(graph)?;
        let stored = graph.node.len() > nodes;
        Ok(PassOutput::summary(match old_opset.filter(|_| stored) {
            Some(old) => {
                opset::raise_default_opset(model, SPARSE_CONSTANT_OPSET)?;
                format!("{summary}; opset import raised from {old} to {SPARSE_CONSTANT_OPSET}")
            }
            None => summary,
        }))
    }
}

impl StoreSparse {
    /// Moves every selected weight that is smaller sparse into a `Constant` node.
    pub fn store(&self, graph: &mut GraphProto) -> Result<String> {
        let filter = LayerFilter::new(&self.include, &self.exclude)?;
        let weights = selected_weights(graph, &filter)?;
        let mut moved = Vec::new();
        let (mut dense_bytes, mut sparse_bytes) = (0usize, 0usize);
        for w in &weights {
            let t = &graph.initializer[w.initializer];
            if t.data_type() != DataType::Float as i32 {
                continue;
            }
            let nonzero: Vec<(i64, f32)> = read_values(graph, w)?
                .into_iter()
                .enumerate()
                .filter(|(_, v)| *v != 0.0)
                .map(|(i, v)| (i as i64, v))
                .collect();
            if nonzero.len() * SPARSE_ENTRY_BYTES >= w.numel * 4 {
                continue;
            }
            dense_bytes += w.numel * 4;
            sparse_bytes += nonzero.len() * SPARSE_ENTRY_BYTES;
            let (indices, values): (Vec<i64>, Vec<f32>) = nonzero.into_iter().unzip();
            let nnz = values.len() as i64;
            let name = t.name().to_string();
            let sparse = SparseTensorProto {
                values: Some(tensor::from_f32(&name, &[nnz], &values)),
                indices: Some(tensor::from_i64(
                    &format!("{name}.indices"),
                    &[nnz],
                    &indices,
                )),
                dims: w.dims.clone(),
            };
            let node = NodeProto {
                name: Some(format!("{name}.sparse")),
                op_type: Some("Constant".to_string()),
                output: vec![name],
                attribute: vec![AttributeProto {
                    name: Some("sparse_value".to_string()),
                    r#type: Some(AttributeType::SparseTensor as i32),
                    sparse_tensor: Some(sparse),
                    ..Default::default()
                }],
                ..Default::default()
            };
            moved.push((w.initializer, node));
        }
        let count = moved.len();
        let mut remove: Vec<usize> = moved.iter().map(|(i, _)| *i).collect();
        remove.sort_unstable();
        for index in remove.into_iter().rev() {
            edit::take_initializer(graph, index);
        }
        graph
            .node
            .splice(0..0, moved.into_iter().map(|(_, node)| node));
        Ok(if count == 0 {
            "no weight is sparse enough to be smaller in sparse form (needs more than 2/3 zeros)"
                .to_string()
        } else {
            format!(
                "stored {count} weights in sparse form ({dense_bytes} dense bytes -> {sparse_bytes})"
            )
        })
    }
}
