//! `densify_sparse`: turn sparse-stored tensors back into dense initializers (tract reads only
//! dense ones).
//!
//! Before: `graph.sparse_initializer` entries, or `Constant` nodes with a `sparse_value`.
//! After: each is a dense FLOAT initializer of the same name and values (zeros elsewhere); the
//! sparse entries and those Constant nodes are gone. Outputs are unchanged.

use anyhow::{Context, Result};

use super::store_sparse::dense_values;
use crate::onnx::proto::{ModelProto, SparseTensorProto};
use crate::onnx::tensor;

/// Densifies the sparse tensors of the main graph; returns how many there were.
pub fn densify_sparse(model: &mut ModelProto) -> Result<usize> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(0);
    };
    let mut sparse: Vec<(String, SparseTensorProto)> =
        std::mem::take(&mut graph.sparse_initializer)
            .into_iter()
            .map(|s| {
                (
                    s.values
                        .as_ref()
                        .map(|v| v.name().to_string())
                        .unwrap_or_default(),
                    s,
                )
            })
            .collect();
    graph.node.retain_mut(|node| {
        let constant = node.op_type() == "Constant" && node.output.len() == 1;
        let Some(value) = node
            .attribute
            .iter_mut()
            .find(|a| constant && a.name() == "sparse_value")
        else {
            return true;
        };
        match value.sparse_tensor.take() {
            Some(s) => {
                sparse.push((node.output[0].clone(), s));
                false
            }
            None => true,
        }
    });
    let count = sparse.len();
    for (name, s) in sparse {
        let dense =
            dense_values(&s).with_context(|| format!("cannot densify sparse tensor {name:?}"))?;
        graph
            .initializer
            .push(tensor::from_f32(&name, &s.dims, &dense));
    }
    Ok(count)
}
