//! A small append-only ONNX graph builder that writes nodes, attributes and tensors exactly as
//! the torch exporter (and onnxsim) encode them, and tracks every tensor's static shape.

use std::collections::HashMap;

use super::Export;
use super::weights;
use crate::onnx::build::tensor_attr;
use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::onnx::tensor::{self, value_info_f32};

/// A parameter tensor to be filled with seeded random values when the graph is finished.
#[derive(Debug, Clone)]
pub(super) struct Param {
    /// Initializer name, e.g. `model.2.m.0.cv1.conv.weight`.
    pub name: String,
    /// Tensor dimensions.
    pub dims: Vec<i64>,
    /// How its values are drawn.
    pub init: Init,
}

/// Distribution of a parameter's values (see [`super::weights`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Init {
    /// A conv weight: variance `gain / fan_in`, where `fan_in` is in channels x kernel area.
    Weight { fan_in: usize, gain: f64 },
    /// A conv bias: small values.
    Bias,
}

impl Param {
    /// Number of values.
    pub fn numel(&self) -> u64 {
        self.dims.iter().map(|&d| d as u64).product()
    }
}

/// The graph being traced. Node outputs are named `<node name>_output_<k>` like the exporter.
pub(super) struct GraphBuilder {
    export: Export,
    /// Constants onnxsim moves to the front of the graph (simplified export only), with the
    /// rank that orders them there.
    hoisted: Vec<(u32, NodeProto)>,
    nodes: Vec<NodeProto>,
    params: Vec<Param>,
    /// Initializers onnxsim creates by constant folding (simplified export only), with the
    /// number in their name `_v_<n>`, which orders them.
    folded: Vec<(usize, TensorProto)>,
    shapes: HashMap<String, Vec<i64>>,
    input: String,
}

impl GraphBuilder {
    /// A graph with one float input `name` of shape `dims`.
    pub fn new(export: Export, name: &str, dims: Vec<i64>) -> Self {
        let mut shapes = HashMap::new();
        shapes.insert(name.to_owned(), dims);
        GraphBuilder {
            export,
            hoisted: Vec::new(),
            nodes: Vec::new(),
            params: Vec::new(),
            folded: Vec::new(),
            shapes,
            input: name.to_owned(),
        }
    }

    /// Shape of a tensor produced so far. Panics on an unknown name: the tracer only asks for
    /// tensors it created, so a miss is a bug in this module, not bad input.
    pub fn shape(&self, tensor: &str) -> &[i64] {
        &self.shapes[tensor]
    }

    /// Declares a parameter (module registration order decides the initializer order).
    pub fn param(&mut self, name: String, dims: Vec<i64>, init: Init) {
        self.params.push(Param { name, dims, init });
    }

    /// Appends a node with outputs of the given shapes; returns the output names.
    pub fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output_shapes: Vec<Vec<i64>>,
    ) -> Vec<String> {
        let node = self.make_node(op_type, name, inputs, attribute, output_shapes);
        let outputs = node.output.clone();
        self.nodes.push(node);
        outputs
    }

    /// [`GraphBuilder::node`] for a single output.
    pub fn node1(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        shape: Vec<i64>,
    ) -> String {
        self.node(op_type, name, inputs, attribute, vec![shape])
            .remove(0)
    }

    /// Appends a `Constant` node holding `value`; returns its output name.
    pub fn constant(&mut self, name: &str, value: TensorProto) -> String {
        let shape = value.dims.clone();
        self.node1(
            "Constant",
            name,
            &[],
            vec![tensor_attr("value", value)],
            shape,
        )
    }

    /// A `Constant` node that onnxsim places before all other nodes, ordered among those by
    /// `rank` (ties keep their creation order).
    pub fn hoisted_constant(&mut self, rank: u32, name: &str, value: TensorProto) -> String {
        let shape = value.dims.clone();
        let node = self.make_node(
            "Constant",
            name,
            &[],
            vec![tensor_attr("value", value)],
            vec![shape],
        );
        let output = node.output[0].clone();
        self.hoisted.push((rank, node));
        output
    }

    /// An initializer `_v_<number>` that onnxsim created by folding a constant subgraph;
    /// folded initializers follow the weights in number order.
    pub fn folded(&mut self, number: usize, mut value: TensorProto) -> String {
        let name = format!("_v_{number}");
        value.name = Some(name.clone());
        self.shapes.insert(name.clone(), value.dims.clone());
        self.folded.push((number, value));
        name
    }

    fn make_node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output_shapes: Vec<Vec<i64>>,
    ) -> NodeProto {
        let output: Vec<String> = (0..output_shapes.len())
            .map(|k| format!("{name}_output_{k}"))
            .collect();
        for (tensor, shape) in output.iter().zip(output_shapes) {
            self.shapes.insert(tensor.clone(), shape);
        }
        NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output,
            name: Some(name.to_owned()),
            op_type: Some(op_type.to_owned()),
            attribute,
            ..Default::default()
        }
    }

    /// Total number of parameter values.
    pub fn parameter_count(&self) -> u64 {
        self.params.iter().map(Param::numel).sum()
    }

    /// Number of named values: the graph input, the initializers and every node output.
    pub fn value_count(&self) -> usize {
        let outputs: usize = self
            .hoisted
            .iter()
            .map(|(_, n)| n)
            .chain(&self.nodes)
            .map(|n| n.output.len())
            .sum();
        1 + self.params.len() + self.folded.len() + outputs
    }

    /// Renames the last node's only output to `name` (the graph output).
    pub fn rename_last_output(&mut self, name: &str) {
        let last = self.nodes.last_mut().expect("graph has nodes");
        let old = std::mem::replace(&mut last.output[0], name.to_owned());
        let shape = self.shapes.remove(&old).expect("output shape known");
        self.shapes.insert(name.to_owned(), shape);
    }

    /// Generates the weights from `seed` and assembles the graph with `output` as its only
    /// output. The simplified export also lists every intermediate tensor in `value_info`.
    pub fn finish(self, seed: u64, output: &str) -> GraphProto {
        let mut initializer = weights::generate(&self.params, seed);
        let mut folded = self.folded;
        folded.sort_by_key(|(number, _)| *number);
        initializer.extend(folded.into_iter().map(|(_, t)| t));
        let mut hoisted = self.hoisted;
        hoisted.sort_by_key(|(rank, _)| *rank);
        let nodes: Vec<NodeProto> = hoisted
            .into_iter()
            .map(|(_, n)| n)
            .chain(self.nodes)
            .collect();
        let intermediate = match self.export {
            Export::Opset12 => Vec::new(),
            Export::Opset17Simplified => nodes
                .iter()
                .flat_map(|n| n.output.iter())
                .filter(|t| t.as_str() != output)
                .map(|t| value_info_f32(t, &self.shapes[t]))
                .collect(),
        };
        GraphProto {
            node: nodes,
            name: Some("main_graph".to_owned()),
            initializer,
            input: vec![value_info_f32(&self.input, &self.shapes[&self.input])],
            output: vec![value_info_f32(output, &self.shapes[output])],
            value_info: intermediate,
            ..Default::default()
        }
    }
}

/// A nameless float32 tensor stored as `raw_data`, as the exporter writes constants.
pub(super) fn tensor_f32(dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: None,
        ..tensor::from_f32("", &dims, values)
    }
}

/// A nameless int64 tensor stored as `raw_data`.
pub(super) fn tensor_i64(dims: Vec<i64>, values: &[i64]) -> TensorProto {
    TensorProto {
        name: None,
        ..tensor::from_i64("", &dims, values)
    }
}
