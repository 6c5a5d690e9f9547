//! [`GraphView`]: who produces and who consumes each tensor, and which names are initializers.

use std::collections::HashMap;

use crate::onnx::proto::{GraphProto, NodeProto, SparseTensorProto, TensorProto};

/// Indexes over a graph, built once and borrowed from it. Node indices are positions in
/// `graph.node`.
pub struct GraphView<'g> {
    pub graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    initializer: HashMap<&'g str, &'g TensorProto>,
    sparse_initializer: HashMap<&'g str, usize>,
}

impl<'g> GraphView<'g> {
    pub fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(out.as_str(), i);
            }
            for input in node.input.iter().filter(|o| !o.is_empty()) {
                let list = consumers.entry(input.as_str()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let initializer = graph.initializer.iter().map(|t| (t.name(), t)).collect();
        let sparse_initializer = graph
            .sparse_initializer
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.values.as_ref()?.name(), i)))
            .collect();
        GraphView {
            graph,
            producer,
            consumers,
            initializer,
            sparse_initializer,
        }
    }

    pub fn node(&self, index: usize) -> &'g NodeProto {
        &self.graph.node[index]
    }

    /// The index of the node that produces `tensor`, if a node does.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// Indices of the nodes that read `tensor`, each once, in graph order.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    /// The dense initializer named `name`.
    pub fn initializer(&self, name: &str) -> Option<&'g TensorProto> {
        self.initializer.get(name).copied()
    }

    /// The sparse tensor `name` is stored as: a sparse initializer, or the `sparse_value` of the
    /// `Constant` node producing it.
    pub fn sparse_tensor(&self, name: &str) -> Option<&'g SparseTensorProto> {
        if let Some(&i) = self.sparse_initializer.get(name) {
            return Some(&self.graph.sparse_initializer[i]);
        }
        let node = self.node(self.producer(name)?);
        if node.op_type() != "Constant" {
            return None;
        }
        node.attribute
            .iter()
            .find(|a| a.name() == "sparse_value")?
            .sparse_tensor
            .as_ref()
    }

    /// Whether `name` is a graph output.
    pub fn is_graph_output(&self, name: &str) -> bool {
        self.graph.output.iter().any(|o| o.name() == name)
    }

    /// How messages name a node: `#12 "/model.2/cv1/conv/Conv" Conv`.
    pub fn describe(&self, index: usize) -> String {
        let node = self.node(index);
        format!("#{index} {:?} {}", node.name(), node.op_type())
    }
}
