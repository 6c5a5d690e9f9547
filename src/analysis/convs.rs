//! The convolution layers of a graph and where their weights live.

use anyhow::{Result, bail};

use crate::graph::{GraphView, attr_int};
use crate::onnx::proto::tensor_proto::DataType;

/// A `Conv` node whose weight (and bias, when present) are initializers.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    /// Index of the node in `graph.node`.
    pub node: usize,
    /// The node's name (its op type and index when it has none).
    pub name: String,
    /// The weight initializer, `[out, in / group, k...]`.
    pub weight: String,
    /// Whether the weight is stored sparse (see [`GraphView::sparse_tensor`]).
    pub sparse: bool,
    /// The bias initializer, `[out]`.
    pub bias: Option<String>,
    /// The `group` attribute (1 for a dense convolution).
    pub group: i64,
}

/// Every `Conv` of the graph, in node order. A Conv whose weight or bias is computed by other
/// nodes instead of stored is an error naming the node: shears prunes stored weights only.
pub fn conv_layers(view: &GraphView) -> Result<Vec<ConvLayer>> {
    let mut layers = Vec::new();
    for (index, node) in view.graph.node.iter().enumerate() {
        if node.op_type() != "Conv" {
            continue;
        }
        let stored = |i: usize| -> Result<Option<(String, bool)>> {
            let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            if view.initializer(name).is_some() {
                Ok(Some((name.clone(), false)))
            } else if view.sparse_tensor(name).is_some() {
                Ok(Some((name.clone(), true)))
            } else if view.producer(name).is_none()
                && !view.graph.input.iter().any(|v| v.name() == name)
            {
                bail!(
                    "{}: input {i} {name:?} is missing (no initializer, node or graph input has that name)",
                    view.describe(index)
                )
            } else if let Some((cast, stored)) = cast_fp16_initializer(view, name) {
                bail!(
                    "{}: input {i} ({name:?}) is the FLOAT16 initializer {stored:?} read through \
                     {} (fp16 weights behind a Cast, as fp16 conversion tools write them); \
                     shears prunes stored weights only: prune the float32 model and convert the \
                     result to fp16, or prune a `export.py --half` export, whose weights are \
                     stored fp16",
                    view.describe(index),
                    view.describe(cast),
                )
            } else {
                bail!(
                    "{}: input {i} ({name:?}) is not an initializer; shears prunes stored weights only",
                    view.describe(index)
                )
            }
        };
        let Some((weight, sparse)) = stored(1)? else {
            bail!("{}: has no weight input", view.describe(index));
        };
        let bias = stored(2)?.map(|(name, _)| name);
        let name = if node.name().is_empty() {
            format!("Conv#{index}")
        } else {
            node.name().to_string()
        };
        layers.push(ConvLayer {
            node: index,
            name,
            weight,
            sparse,
            bias,
            group: attr_int(node, "group").unwrap_or(1),
        });
    }
    Ok(layers)
}

/// The `Cast` node (index) computing `tensor` from a FLOAT16 initializer, and that initializer.
fn cast_fp16_initializer<'g>(view: &GraphView<'g>, tensor: &str) -> Option<(usize, &'g str)> {
    let cast = view.producer(tensor)?;
    let node = view.node(cast);
    let source = view.initializer(node.input.first()?)?;
    (node.op_type() == "Cast" && source.data_type == Some(DataType::Float16 as i32))
        .then(|| (cast, source.name()))
}

/// The `Conv` nodes (indices) from whose outputs a graph output is reached without passing
/// another Conv: in YOLOv5, the Detect head's output convolutions, whose raw outputs are the
/// boxes, objectness and class logits.
pub fn head_convs(view: &GraphView) -> Vec<usize> {
    let mut heads = Vec::new();
    for (index, node) in view.graph.node.iter().enumerate() {
        if node.op_type() != "Conv" {
            continue;
        }
        let mut stack: Vec<&str> = node.output.iter().map(String::as_str).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            if view.is_graph_output(t) {
                heads.push(index);
                break;
            }
            for &c in view.consumers(t) {
                let next = view.node(c);
                if next.op_type() != "Conv" {
                    stack.extend(next.output.iter().map(String::as_str));
                }
            }
        }
    }
    heads
}
