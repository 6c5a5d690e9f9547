//! Sparse-stored tensors turned back into dense initializers (tract reads only dense ones): what
//! backends run, and the inverse of the `store_sparse` pass.
//!
//! Before: `graph.sparse_initializer` entries, or `Constant` nodes with a `sparse_value`.
//! After: each is a dense FLOAT initializer of the same name and values (zeros elsewhere); the
//! sparse entries and those Constant nodes are gone. Outputs are unchanged.

use anyhow::{Context, Result, bail};

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

/// The dense values of a sparse tensor, whose indices are either `[nnz]` (flattened positions)
/// or `[nnz, rank]` (coordinates).
fn dense_values(s: &SparseTensorProto) -> Result<Vec<f32>> {
    let (Some(values), Some(indices)) = (&s.values, &s.indices) else {
        bail!("sparse tensor lacks values or indices");
    };
    let name = values.name();
    let numel = tensor::numel(&s.dims)?;
    let values = tensor::to_f32(values)?;
    let indices = tensor::to_i64(indices)?;
    let flat: Vec<i64> = if indices.len() == values.len() {
        indices
    } else if indices.len() == values.len() * s.dims.len() {
        indices
            .chunks_exact(s.dims.len())
            .map(|coords| {
                coords
                    .iter()
                    .zip(&s.dims)
                    .fold(0, |acc, (c, d)| acc * d + c)
            })
            .collect()
    } else {
        bail!(
            "sparse tensor {name:?}: {} indices for {} values",
            indices.len(),
            values.len()
        );
    };
    let mut dense = vec![0.0; numel];
    for (&i, v) in flat.iter().zip(values) {
        match usize::try_from(i).ok().and_then(|i| dense.get_mut(i)) {
            Some(slot) => *slot = v,
            None => bail!(
                "sparse tensor {name:?}: index {i} is outside dims {:?}",
                s.dims
            ),
        }
    }
    Ok(dense)
}
