//! Parameter, MAC and sparsity counts over the convolution layers, like YOLOv5's model summary.
//!
//! Parameters are Conv weights plus biases (an exported YOLOv5 has BN folded into its convs, so
//! these are all its parameters). MACs are multiply-accumulates of one inference at the model's
//! input size: `weight elements x output height x output width` per conv.

use anyhow::{Context, Result};
use serde::Serialize;

use super::convs::conv_layers;
use crate::graph::{GraphView, infer_shapes};
use crate::onnx::proto::GraphProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor;

/// Fractions of zeros.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sparsity {
    /// Zeros over all parameters (Conv weights and biases), as the pruning guide reports it.
    pub global: f64,
    /// Zeros over Conv weights only.
    pub conv_weights: f64,
}

/// One convolution layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerStats {
    pub name: String,
    pub weight_shape: Vec<i64>,
    pub params: u64,
    /// `None` when the output shape could not be inferred.
    pub macs: Option<u64>,
    pub weight_zeros: u64,
    pub weight_numel: u64,
    pub bias_zeros: u64,
}

impl LayerStats {
    /// Zeros over this layer's weight.
    pub fn weight_sparsity(&self) -> f64 {
        ratio(self.weight_zeros, self.weight_numel)
    }
}

/// The whole model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    pub conv_layers: usize,
    /// Conv weights and biases (what YOLOv5's model summary counts).
    pub params: u64,
    /// Elements of every floating-point tensor the graph stores: initializers, sparse
    /// initializers (dense size) and `Constant` values, whatever reads them.
    pub float_tensor_params: u64,
    /// Sum over layers; layers with unknown output shape count 0 (see `macs_complete`).
    pub macs: u64,
    pub macs_complete: bool,
    pub sparsity: Sparsity,
    pub layers: Vec<LayerStats>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn is_float(data_type: i32) -> bool {
    matches!(
        DataType::try_from(data_type),
        Ok(DataType::Float | DataType::Float16 | DataType::Double | DataType::Bfloat16)
    )
}

/// Elements of the floating-point tensors stored in `graph` (see [`ModelStats`]).
fn float_tensor_params(graph: &GraphProto) -> Result<u64> {
    let dense = graph
        .initializer
        .iter()
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| {
                    n.attribute
                        .iter()
                        .filter(|a| a.name() == "value")
                        .filter_map(|a| a.t.as_ref())
                }),
        )
        .filter(|t| is_float(t.data_type()))
        .map(|t| tensor::numel(&t.dims));
    let sparse = graph
        .sparse_initializer
        .iter()
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| {
                    n.attribute
                        .iter()
                        .filter(|a| a.name() == "sparse_value")
                        .filter_map(|a| a.sparse_tensor.as_ref())
                }),
        )
        .filter(|s| s.values.as_ref().is_some_and(|v| is_float(v.data_type())))
        .map(|s| tensor::numel(&s.dims));
    let mut total = 0u64;
    for n in dense.chain(sparse) {
        total += n? as u64;
    }
    Ok(total)
}

/// Counts over every Conv of `graph`.
pub fn model_stats(graph: &GraphProto) -> Result<ModelStats> {
    let view = GraphView::new(graph);
    let shapes = infer_shapes(&view);
    let mut layers = Vec::new();
    for conv in conv_layers(&view)? {
        let (weight_shape, weight_numel, weight_zeros) = if conv.sparse {
            let s = view
                .sparse_tensor(&conv.weight)
                .expect("conv_layers found it");
            let numel = tensor::numel(&s.dims)? as u64;
            let stored = match &s.values {
                Some(values) => {
                    tensor::numel(&values.dims)? as u64
                        - tensor::count_zeros(values)
                            .with_context(|| format!("weight of {}", conv.name))?
                }
                None => 0,
            };
            (s.dims.clone(), numel, numel - stored.min(numel))
        } else {
            let w = view
                .initializer(&conv.weight)
                .expect("conv_layers found it");
            let zeros =
                tensor::count_zeros(w).with_context(|| format!("weight of {}", conv.name))?;
            (w.dims.clone(), tensor::numel(&w.dims)? as u64, zeros)
        };
        let (bias_numel, bias_zeros) = match conv.bias.as_deref().and_then(|b| view.initializer(b))
        {
            Some(b) => (
                tensor::numel(&b.dims)? as u64,
                tensor::count_zeros(b).with_context(|| format!("bias of {}", conv.name))?,
            ),
            None => (0, 0),
        };
        let macs = (view.node(conv.node).output.first())
            .and_then(|output| shapes.get(output))
            .filter(|s| s.len() >= 2)
            .map(|s| {
                let positions = s[2..]
                    .iter()
                    .try_fold(1i64, |p, &d| p.checked_mul(d.max(0)))
                    .unwrap_or(i64::MAX) as u64;
                weight_numel
                    .saturating_mul(positions)
                    .saturating_mul(s[0].max(1) as u64)
            });
        layers.push(LayerStats {
            name: conv.name,
            weight_shape,
            params: weight_numel + bias_numel,
            macs,
            weight_zeros,
            weight_numel,
            bias_zeros,
        });
    }
    let params = layers.iter().map(|l| l.params).sum();
    let zeros: u64 = layers.iter().map(|l| l.weight_zeros + l.bias_zeros).sum();
    let weight_zeros = layers.iter().map(|l| l.weight_zeros).sum();
    let weight_numel = layers.iter().map(|l| l.weight_numel).sum();
    Ok(ModelStats {
        conv_layers: layers.len(),
        params,
        float_tensor_params: float_tensor_params(graph)?,
        macs: layers.iter().filter_map(|l| l.macs).sum(),
        macs_complete: layers.iter().all(|l| l.macs.is_some()),
        sparsity: Sparsity {
            global: ratio(zeros, params),
            conv_weights: ratio(weight_zeros, weight_numel),
        },
        layers,
    })
}

/// Thousands separators for counts in tables: 1867405 -> "1,867,405".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
