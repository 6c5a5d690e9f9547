//! The trainable network of a YOLOv5 ONNX graph, built at run time: the nodes that lie between
//! the image input and the Detect head's output convolutions ([`head_convs`]), whose raw outputs
//! (box, objectness and class logits) the distillation loss compares. What comes after them
//! (the head's Reshape, Transpose, Sigmoid, Pow and grid arithmetic) carries no trainable weight
//! and is left out.
//!
//! Supported in that part, which is all YOLOv5 exports put there: `Conv` (one group, no
//! dilation, stored weights), `Sigmoid`, `Mul` and `Add` of two tensors of one shape, `Concat`
//! along channels, `MaxPool`, and `Resize` in nearest mode by an integer factor (read from the
//! graph's shapes at its own input size). Any other node there is an error naming it.
//!
//! [`Network::forward`] keeps what [`Network::backward`] needs; the backward pass visits the
//! nodes in reverse and frees each value once its producer is done.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::kernels::{
    ConvShape, PoolShape, Real, Tensor, add_assign, concat_channels, conv_backward, conv_forward,
    map, maxpool_backward, maxpool_forward, sigmoid, slice_channels, upsample_backward,
    upsample_forward, zip_map,
};
use crate::analysis::head_convs;
use crate::graph::{GraphView, infer_shapes};
use crate::onnx::attr::{attr_int, attr_ints, attr_str};
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto};
use crate::onnx::tensor;

/// One Conv of the network: where its parameters live in the model and its geometry.
#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub node: String,
    pub weight: String,
    pub bias: Option<String>,
    pub shape: ConvShape,
}

/// The trainable values of one Conv: its weight (`[cout, cin, kh, kw]`) and bias (empty when
/// the Conv has none).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvParams<T> {
    pub weight: Vec<T>,
    pub bias: Vec<T>,
}

impl<T: Real> ConvParams<T> {
    pub fn zeros_like(&self) -> Self {
        ConvParams {
            weight: vec![T::zero(); self.weight.len()],
            bias: vec![T::zero(); self.bias.len()],
        }
    }

    pub fn cast<U: Real>(&self) -> ConvParams<U> {
        ConvParams {
            weight: self.weight.iter().map(|&v| U::of(v.to_f32())).collect(),
            bias: self.bias.iter().map(|&v| U::of(v.to_f32())).collect(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// The Conv of index `conv` in [`Network::convs`].
    Conv {
        conv: usize,
    },
    Sigmoid,
    /// `x * sigmoid(x)`, from a Sigmoid whose only reader is a Mul by its input.
    Silu,
    Mul,
    Add,
    Concat,
    MaxPool(PoolShape),
    Upsample([usize; 2]),
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    op: Op,
    inputs: Vec<usize>,
    output: usize,
}

/// Value 0 is the image; every node writes one value.
#[derive(Debug, Clone)]
pub struct Network {
    nodes: Vec<Node>,
    values: usize,
    /// The values of the head convolutions' outputs, in graph order.
    heads: Vec<usize>,
    /// For each value, how many node inputs read it (heads count once more).
    readers: Vec<usize>,
    pub convs: Vec<ConvSpec>,
    /// The channels of the image input.
    pub channels: usize,
}

/// What [`Network::forward_with`] returns: the head outputs, the extra values asked for, and
/// what the backward pass needs when asked to keep it.
pub struct Outputs<T> {
    pub heads: Vec<Tensor<T>>,
    pub extra: Vec<Tensor<T>>,
    pub kept: Option<Activations<T>>,
}

/// What a forward pass kept for the backward pass.
pub struct Activations<T> {
    values: Vec<Option<Tensor<T>>>,
}

impl Network {
    /// Builds the network of `model` and reads its Conv parameters.
    pub fn from_model(model: &ModelProto) -> Result<(Network, Vec<ConvParams<f32>>)> {
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let view = GraphView::new(graph);
        let input = image_input(graph)?;
        let heads = head_convs(&view);
        if heads.is_empty() {
            bail!("no Conv reaches a graph output: the model has no detection head to train");
        }
        let needed = needed_nodes(&view, &heads, &input)?;
        let shapes = infer_shapes(&view);
        let mut value_of: HashMap<&str, usize> = HashMap::from([(input.as_str(), 0)]);
        let mut network = Network {
            nodes: Vec::new(),
            values: 1,
            heads: Vec::new(),
            readers: Vec::new(),
            convs: Vec::new(),
            channels: 0,
        };
        let mut params = Vec::new();
        // x * Sigmoid(x), YOLOv5's SiLU: one op, the Sigmoid's output never materialised
        let silu_of: HashMap<&str, &str> = needed
            .iter()
            .map(|&i| view.node(i))
            .filter(|n| n.op_type() == "Sigmoid" && n.input.len() == 1 && n.output.len() == 1)
            .filter(|n| match view.consumers(&n.output[0]) {
                [m] => {
                    let mul = view.node(*m);
                    let mut operands: Vec<&str> = mul.input.iter().map(String::as_str).collect();
                    operands.sort();
                    let mut silu = [n.input[0].as_str(), n.output[0].as_str()];
                    silu.sort();
                    mul.op_type() == "Mul" && operands == silu
                }
                _ => false,
            })
            .map(|n| (n.output[0].as_str(), n.input[0].as_str()))
            .collect();
        for index in needed {
            let node = view.node(index);
            let name = view.describe(index);
            if node.op_type() == "Sigmoid" && silu_of.contains_key(node.output[0].as_str()) {
                continue;
            }
            let silu = (node.op_type() == "Mul")
                .then(|| node.input.iter().find_map(|t| silu_of.get(t.as_str())))
                .flatten();
            let silu_input = silu.map(|x| [x.to_string()]);
            let data_inputs: &[String] = match (node.op_type(), &silu_input) {
                (_, Some(x)) => x,
                ("Conv" | "Resize" | "MaxPool", _) => &node.input[..1],
                _ => &node.input,
            };
            let inputs = data_inputs
                .iter()
                .map(|t| {
                    value_of.get(t.as_str()).copied().with_context(|| {
                        format!("{name}: input {t:?} is not computed from the image input")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let op = match node.op_type() {
                "Conv" => {
                    let (spec, values) = conv_spec(&view, node, &name)?;
                    network.convs.push(spec);
                    params.push(values);
                    Op::Conv {
                        conv: network.convs.len() - 1,
                    }
                }
                _ if silu.is_some() => Op::Silu,
                "Sigmoid" => Op::Sigmoid,
                "Mul" | "Add" if inputs.len() == 2 => {
                    if node.op_type() == "Mul" {
                        Op::Mul
                    } else {
                        Op::Add
                    }
                }
                "Concat" if channel_axis(attr_int(node, "axis").unwrap_or(0)) => Op::Concat,
                "MaxPool" => Op::MaxPool(pool_shape(node, &name)?),
                "Resize" => Op::Upsample(upsample_scale(node, &shapes, &name)?),
                op => bail!(
                    "{name}: {op} cannot be trained by shears (supported between the image and \
                     the head convolutions: Conv, Sigmoid, Mul, Add, Concat along channels, \
                     MaxPool, Resize nearest by an integer factor)"
                ),
            };
            let output = network.values;
            network.values += 1;
            let produced = node.output.first().context("a node without output")?;
            value_of.insert(produced.as_str(), output);
            network.nodes.push(Node {
                name,
                op,
                inputs,
                output,
            });
        }
        for &h in &heads {
            let out = view.node(h).output[0].as_str();
            network.heads.push(value_of[out]);
        }
        network.readers = vec![0; network.values];
        for node in &network.nodes {
            for &i in &node.inputs {
                network.readers[i] += 1;
            }
        }
        for &h in &network.heads {
            network.readers[h] += 1;
        }
        network.channels = network
            .nodes
            .iter()
            .find_map(|n| match n.op {
                Op::Conv { conv } if n.inputs[0] == 0 => Some(network.convs[conv].shape.cin),
                _ => None,
            })
            .context("no Conv reads the image input")?;
        Ok((network, params))
    }

    /// The head outputs' shapes for a batch of `n` images of `hw`, after checking that every
    /// node fits that size (errors name the node).
    pub fn head_shapes(&self, n: usize, hw: [usize; 2]) -> Result<Vec<[usize; 4]>> {
        let shapes = self.value_shapes(n, hw)?;
        Ok(self.heads.iter().map(|&h| shapes[h]).collect())
    }

    /// The network's features: the output of every convolution block's activation (SiLU),
    /// by node name and value index, in graph order.
    pub fn features(&self) -> Vec<(&str, usize)> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Silu))
            .map(|n| (n.name.as_str(), n.output))
            .collect()
    }

    /// Every value's shape for a batch of `n` images of `hw` (errors name the node that does
    /// not fit that size).
    pub fn value_shapes(&self, n: usize, hw: [usize; 2]) -> Result<Vec<[usize; 4]>> {
        let mut shape: Vec<Option<[usize; 4]>> = vec![None; self.values];
        shape[0] = Some([n, self.channels, hw[0], hw[1]]);
        for node in &self.nodes {
            let ins: Vec<[usize; 4]> = node
                .inputs
                .iter()
                .map(|&i| shape[i].expect("inputs come first"))
                .collect();
            let [n, c, h, w] = ins[0];
            let out = match &node.op {
                Op::Conv { conv } => {
                    let s = &self.convs[*conv].shape;
                    if c != s.cin {
                        bail!(
                            "{}: {c} input channels, the weight has {}",
                            node.name,
                            s.cin
                        );
                    }
                    let [oh, ow] = s.out_hw([h, w]).with_context(|| {
                        format!("{}: the kernel does not fit an input of {h}x{w}", node.name)
                    })?;
                    [n, s.cout, oh, ow]
                }
                Op::Sigmoid | Op::Silu => ins[0],
                Op::Mul | Op::Add => {
                    if ins[0] != ins[1] {
                        bail!(
                            "{}: operands of shapes {:?} and {:?} at this image size (only equal \
                             shapes are supported)",
                            node.name,
                            ins[0],
                            ins[1]
                        );
                    }
                    ins[0]
                }
                Op::Concat => {
                    if ins.iter().any(|s| s[0] != n || s[2] != h || s[3] != w) {
                        bail!("{}: inputs of different sizes {ins:?}", node.name);
                    }
                    [n, ins.iter().map(|s| s[1]).sum(), h, w]
                }
                Op::MaxPool(p) => {
                    let [oh, ow] = p.out_hw([h, w]).with_context(|| {
                        format!("{}: the window does not fit an input of {h}x{w}", node.name)
                    })?;
                    [n, c, oh, ow]
                }
                Op::Upsample([sh, sw]) => [n, c, h * sh, w * sw],
            };
            shape[node.output] = Some(out);
        }
        Ok(shape
            .into_iter()
            .map(|s| s.expect("every value computed"))
            .collect())
    }

    /// Runs the network on `image` (`[n, channels, h, w]`; [`Network::head_shapes`] must have
    /// accepted its size). Returns the head outputs and, when `keep`, what
    /// [`Network::backward`] needs; otherwise values are freed as soon as they are read.
    pub fn forward<T: Real>(
        &self,
        params: &[ConvParams<T>],
        image: Tensor<T>,
        keep: bool,
    ) -> (Vec<Tensor<T>>, Option<Activations<T>>) {
        let out = self.forward_with(params, image, &[], keep);
        (out.heads, out.kept)
    }

    /// [`Network::forward`] that also returns the values `extra` (indices as in
    /// [`Network::features`]).
    pub fn forward_with<T: Real>(
        &self,
        params: &[ConvParams<T>],
        image: Tensor<T>,
        extra: &[usize],
        keep: bool,
    ) -> Outputs<T> {
        let mut values: Vec<Option<Tensor<T>>> = vec![None; self.values];
        let mut unread = self.readers.clone();
        for &v in extra {
            unread[v] += 1;
        }
        values[0] = Some(image);
        for node in &self.nodes {
            let out = {
                let x = |k: usize| values[node.inputs[k]].as_ref().expect("computed before");
                match &node.op {
                    Op::Conv { conv } => {
                        let p = &params[*conv];
                        conv_forward(x(0), &self.convs[*conv].shape, &p.weight, &p.bias)
                    }
                    Op::Sigmoid => map(x(0), sigmoid),
                    Op::Silu => map(x(0), |v| v * sigmoid(v)),
                    Op::Mul => zip_map(x(0), x(1), |a, b| a * b),
                    Op::Add => zip_map(x(0), x(1), |a, b| a + b),
                    Op::Concat => {
                        let parts: Vec<&Tensor<T>> = (0..node.inputs.len()).map(x).collect();
                        concat_channels(&parts)
                    }
                    Op::MaxPool(p) => maxpool_forward(x(0), p),
                    Op::Upsample(scale) => upsample_forward(x(0), *scale),
                }
            };
            values[node.output] = Some(out);
            if !keep {
                for &i in &node.inputs {
                    unread[i] -= 1;
                    if unread[i] == 0 {
                        values[i] = None;
                    }
                }
            }
        }
        let take = |wanted: &[usize]| -> Vec<Tensor<T>> {
            wanted
                .iter()
                .map(|&v| values[v].clone().expect("computed"))
                .collect()
        };
        Outputs {
            heads: take(&self.heads),
            extra: take(extra),
            kept: keep.then_some(Activations { values }),
        }
    }

    /// The gradients of every Conv's parameters given the gradients of the head outputs
    /// (`dheads`, in the order [`Network::forward`] returned them).
    pub fn backward<T: Real>(
        &self,
        params: &[ConvParams<T>],
        activations: Activations<T>,
        dheads: Vec<Tensor<T>>,
    ) -> Vec<ConvParams<T>> {
        self.backward_with(params, activations, dheads, Vec::new())
    }

    /// [`Network::backward`] with the gradients of other values too: `dextra` pairs a value
    /// (as in [`Network::features`]) with the gradient of the loss with respect to it.
    pub fn backward_with<T: Real>(
        &self,
        params: &[ConvParams<T>],
        activations: Activations<T>,
        dheads: Vec<Tensor<T>>,
        dextra: Vec<(usize, Tensor<T>)>,
    ) -> Vec<ConvParams<T>> {
        let mut values = activations.values;
        let mut grads: Vec<ConvParams<T>> = params.iter().map(ConvParams::zeros_like).collect();
        let mut dvalues: Vec<Option<Tensor<T>>> = vec![None; self.values];
        let dheads = self.heads.iter().copied().zip(dheads);
        for (v, d) in dheads.chain(dextra) {
            accumulate(&mut dvalues[v], d);
        }
        for node in self.nodes.iter().rev() {
            let Some(dy) = dvalues[node.output].take() else {
                values[node.output] = None;
                continue;
            };
            let x = |k: usize| values[node.inputs[k]].as_ref().expect("kept");
            let dins: Vec<Option<Tensor<T>>> = match &node.op {
                Op::Conv { conv } => {
                    let g = &mut grads[*conv];
                    let dx = conv_backward(
                        x(0),
                        &self.convs[*conv].shape,
                        &params[*conv].weight,
                        &dy,
                        &mut g.weight,
                        &mut g.bias,
                        node.inputs[0] != 0,
                    );
                    vec![dx]
                }
                Op::Sigmoid => {
                    let s = values[node.output].as_ref().expect("kept");
                    vec![Some(zip_map(&dy, s, |g, s| g * s * (T::one() - s)))]
                }
                Op::Silu => vec![Some(zip_map(&dy, x(0), |g, v| {
                    let s = sigmoid(v);
                    g * (s + v * s * (T::one() - s))
                }))],
                Op::Mul => vec![
                    Some(zip_map(&dy, x(1), |g, b| g * b)),
                    Some(zip_map(&dy, x(0), |g, a| g * a)),
                ],
                Op::Add => vec![Some(dy.clone()), Some(dy)],
                Op::Concat => {
                    let mut start = 0;
                    (0..node.inputs.len())
                        .map(|k| {
                            let len = x(k).shape[1];
                            start += len;
                            Some(slice_channels(&dy, start - len, len))
                        })
                        .collect()
                }
                Op::MaxPool(p) => vec![Some(maxpool_backward(x(0), p, &dy))],
                Op::Upsample(scale) => vec![Some(upsample_backward(&dy, *scale))],
            };
            values[node.output] = None;
            for (&i, d) in node.inputs.iter().zip(dins) {
                if let Some(d) = d.filter(|_| i != 0) {
                    accumulate(&mut dvalues[i], d);
                }
            }
        }
        grads
    }

    /// Writes `params` into the Conv initializers of `model` (the model this network was built
    /// from), each in its own element type and storage; initializers whose values are unchanged
    /// are not rewritten.
    pub fn write_params(&self, model: &mut ModelProto, params: &[ConvParams<f32>]) -> Result<()> {
        let graph = model.graph.as_mut().context("the model has no graph")?;
        let index: HashMap<String, usize> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        for (spec, p) in self.convs.iter().zip(params) {
            let tensors = std::iter::once((&spec.weight, &p.weight))
                .chain(spec.bias.as_ref().map(|b| (b, &p.bias)));
            for (name, values) in tensors {
                let t = &mut graph.initializer[index[name]];
                if tensor::to_f32(t)? != *values {
                    tensor::set_f32(t, values.clone())
                        .with_context(|| format!("{}: writing {name:?}", spec.node))?;
                }
            }
        }
        Ok(())
    }
}

fn accumulate<T: Real>(slot: &mut Option<Tensor<T>>, d: Tensor<T>) {
    match slot {
        Some(acc) => add_assign(acc, &d),
        None => *slot = Some(d),
    }
}

/// The graph's one input that is not an initializer.
fn image_input(graph: &GraphProto) -> Result<String> {
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|v| v.name())
        .filter(|n| !initializers.contains(n))
        .collect();
    match inputs.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!(
            "the model has {} inputs; fine-tuning needs one image input",
            inputs.len()
        ),
    }
}

/// The nodes the heads are computed from, in graph order, following data inputs only (a
/// Resize's scales are read from the shapes instead).
fn needed_nodes(view: &GraphView, heads: &[usize], input: &str) -> Result<Vec<usize>> {
    let mut needed = std::collections::BTreeSet::new();
    let mut stack = heads.to_vec();
    while let Some(index) = stack.pop() {
        if !needed.insert(index) {
            continue;
        }
        let node = view.node(index);
        let data = match node.op_type() {
            "Conv" | "Resize" | "MaxPool" => &node.input[..1],
            _ => &node.input,
        };
        for t in data.iter().filter(|t| t.as_str() != input) {
            match view.producer(t) {
                Some(p) => stack.push(p),
                None if view.initializer(t).is_some() => bail!(
                    "{}: input {t:?} is a stored tensor; shears trains Conv weights only and \
                     supports no constant operand here",
                    view.describe(index)
                ),
                None => bail!("{}: input {t:?} is not computed", view.describe(index)),
            }
        }
    }
    Ok(needed.into_iter().collect())
}

fn channel_axis(axis: i64) -> bool {
    axis == 1 || axis == -3
}

fn conv_spec(
    view: &GraphView,
    node: &NodeProto,
    name: &str,
) -> Result<(ConvSpec, ConvParams<f32>)> {
    if attr_int(node, "group").unwrap_or(1) != 1 {
        bail!("{name}: grouped convolutions are not supported by fine-tuning");
    }
    if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        bail!("{name}: dilated convolutions are not supported by fine-tuning");
    }
    if attr_str(node, "auto_pad").is_some_and(|p| p != "NOTSET") {
        bail!("{name}: auto_pad is not supported by fine-tuning (give explicit pads)");
    }
    /// An input's initializer: its name, values and dims.
    type Stored = (String, Vec<f32>, Vec<i64>);
    let stored = |i: usize| -> Result<Option<Stored>> {
        let Some(t) = node.input.get(i).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if view.sparse_tensor(t).is_some() {
            bail!("{name}: {t:?} is stored sparse; fine-tune before store_sparse");
        }
        let init = view
            .initializer(t)
            .with_context(|| format!("{name}: {t:?} is not a stored tensor"))?;
        Ok(Some((t.clone(), tensor::to_f32(init)?, init.dims.clone())))
    };
    let (weight, w, dims) = stored(1)?.with_context(|| format!("{name}: no weight"))?;
    let [cout, cin, kh, kw] = <[i64; 4]>::try_from(dims.as_slice())
        .map_err(|_| anyhow::anyhow!("{name}: the weight is not 4-D ({dims:?})"))?
        .map(|d| d as usize);
    let bias = stored(2)?;
    if let Some((b, values, _)) = &bias
        && values.len() != cout
    {
        bail!(
            "{name}: bias {b:?} has {} values for {cout} outputs",
            values.len()
        );
    }
    let strides = attr_ints(node, "strides").unwrap_or(&[1, 1]);
    let pads = attr_ints(node, "pads").unwrap_or(&[0, 0, 0, 0]);
    let shape = ConvShape {
        cin,
        cout,
        kernel: [kh, kw],
        stride: pair(strides, name, "strides")?,
        pads: quad(pads, name)?,
    };
    let (bias_name, b) = match bias {
        Some((n, v, _)) => (Some(n), v),
        None => (None, Vec::new()),
    };
    Ok((
        ConvSpec {
            node: name.to_string(),
            weight,
            bias: bias_name,
            shape,
        },
        ConvParams { weight: w, bias: b },
    ))
}

fn pair(v: &[i64], name: &str, attr: &str) -> Result<[usize; 2]> {
    match v {
        [a, b] if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        _ => bail!("{name}: {attr} {v:?} (expected two positive values)"),
    }
}

fn quad(v: &[i64], name: &str) -> Result<[usize; 4]> {
    match v {
        [a, b, c, d] if v.iter().all(|&p| p >= 0) => {
            Ok([*a as usize, *b as usize, *c as usize, *d as usize])
        }
        _ => bail!("{name}: pads {v:?} (expected four values of 0 or more)"),
    }
}

fn pool_shape(node: &NodeProto, name: &str) -> Result<PoolShape> {
    if attr_int(node, "ceil_mode").unwrap_or(0) != 0 {
        bail!("{name}: ceil_mode is not supported by fine-tuning");
    }
    if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        bail!("{name}: dilated pooling is not supported by fine-tuning");
    }
    if attr_str(node, "auto_pad").is_some_and(|p| p != "NOTSET") {
        bail!("{name}: auto_pad is not supported by fine-tuning");
    }
    let kernel =
        attr_ints(node, "kernel_shape").with_context(|| format!("{name}: no kernel_shape"))?;
    Ok(PoolShape {
        kernel: pair(kernel, name, "kernel_shape")?,
        stride: pair(
            attr_ints(node, "strides").unwrap_or(&[1, 1]),
            name,
            "strides",
        )?,
        pads: quad(attr_ints(node, "pads").unwrap_or(&[0, 0, 0, 0]), name)?,
    })
}

/// The integer factors of a nearest Resize whose output index `o` reads input `o / factor`
/// (asymmetric coordinates rounded down, YOLOv5's export; or half-pixel coordinates rounded to
/// the nearest, which reads the same inputs for integer factors).
fn upsample_scale(
    node: &NodeProto,
    shapes: &crate::graph::Shapes,
    name: &str,
) -> Result<[usize; 2]> {
    if attr_str(node, "mode").unwrap_or("nearest") != "nearest" {
        bail!("{name}: only nearest Resize can be fine-tuned");
    }
    let coordinates = attr_str(node, "coordinate_transformation_mode").unwrap_or("half_pixel");
    let rounding = attr_str(node, "nearest_mode").unwrap_or("round_prefer_floor");
    let repeats = matches!(
        (coordinates, rounding),
        ("asymmetric", "floor") | ("half_pixel", "round_prefer_floor" | "round_prefer_ceil")
    );
    if !repeats {
        bail!(
            "{name}: nearest Resize with {coordinates} coordinates and {rounding} rounding is not \
             supported by fine-tuning"
        );
    }
    let (Some(i), Some(o)) = (shapes.get(&node.input[0]), shapes.get(&node.output[0])) else {
        bail!("{name}: the Resize's input and output shapes are unknown");
    };
    let factor = |axis: usize| -> Result<usize> {
        let (a, b) = (
            i.get(axis).copied().unwrap_or(0),
            o.get(axis).copied().unwrap_or(0),
        );
        if a <= 0 || b % a != 0 {
            bail!("{name}: Resize from {i:?} to {o:?} is not by an integer factor");
        }
        Ok((b / a) as usize)
    };
    if i.len() != 4 || factor(0)? != 1 || factor(1)? != 1 {
        bail!("{name}: only spatial Resize of 4-D tensors is supported ({i:?} to {o:?})");
    }
    Ok([factor(2)?, factor(3)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthSpec, Variant, build};
    use crate::train::loss::{LossWeights, distill, feature_distill};
    use rand::{Rng, SeedableRng};

    /// A generated yolov5n with 2 classes at 64x64, its network and parameters in f64.
    fn small() -> (ModelProto, Network, Vec<ConvParams<f64>>) {
        let mut spec = SynthSpec::new(Variant::N);
        spec.imgsz = 64;
        spec.nc = 2;
        let model = build(&spec).unwrap();
        let (net, params) = Network::from_model(&model).unwrap();
        let params = params.iter().map(ConvParams::cast).collect();
        (model, net, params)
    }

    #[test]
    fn gradients_with_the_feature_term_equal_central_differences_in_f64() {
        let (_, net, params) = small();
        assert_eq!(net.head_shapes(2, [64, 64]).unwrap().len(), 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let image = Tensor {
            shape: [2, 3, 64, 64],
            data: (0..2 * 3 * 64 * 64)
                .map(|_| rng.random_range(0.0..1.0))
                .collect(),
        };
        // the teacher: the same network with every weight perturbed
        let teacher: Vec<ConvParams<f64>> = params
            .iter()
            .map(|p| ConvParams {
                weight: p.weight.iter().map(|w| w * 1.1 + 0.01).collect(),
                bias: p.bias.iter().map(|b| b - 0.05).collect(),
            })
            .collect();
        // the loss with its feature term, on every block's activation
        let features: Vec<usize> = net.features().iter().map(|f| f.1).collect();
        assert!(features.len() > 20, "{} features", features.len());
        let target = net.forward_with(&teacher, image.clone(), &features, false);
        let (targets, target_features) = (target.heads, target.extra);
        let weights = LossWeights {
            feat: 0.5,
            ..LossWeights::default()
        };
        let loss = |p: &[ConvParams<f64>]| {
            let out = net.forward_with(p, image.clone(), &features, false);
            distill(&out.heads, &targets, &weights, false).0.total
                + weights.feat
                    * feature_distill(&out.extra, &target_features, weights.feat, false).0
        };
        let out = net.forward_with(&params, image.clone(), &features, true);
        let (_, dheads) = distill(&out.heads, &targets, &weights, true);
        let (_, dfeatures) = feature_distill(&out.extra, &target_features, weights.feat, true);
        let dfeatures = features.iter().copied().zip(dfeatures).collect();
        let grads = net.backward_with(&params, out.kept.unwrap(), dheads, dfeatures);
        // the stem, a C3 bottleneck, the SPPF's output conv, a neck conv after an upsample and
        // concat, and a head conv; for each its largest-gradient weight, one other, and a bias
        let picked = [0, 5, 23, 30, net.convs.len() - 1];
        for &c in &picked {
            let g = &grads[c];
            let largest = (0..g.weight.len())
                .max_by(|&a, &b| g.weight[a].abs().total_cmp(&g.weight[b].abs()))
                .unwrap();
            for (is_bias, i) in [(false, largest), (false, g.weight.len() / 3), (true, 0)] {
                let h = 1e-5;
                let at = |d: f64| {
                    let mut p = params.clone();
                    let v = if is_bias {
                        &mut p[c].bias
                    } else {
                        &mut p[c].weight
                    };
                    v[i] += d;
                    loss(&p)
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                let analytic = if is_bias { g.bias[i] } else { g.weight[i] };
                assert!(
                    (numeric - analytic).abs() <= 1e-6 + 1e-4 * numeric.abs(),
                    "{} {} {i}: finite differences {numeric}, backward {analytic}",
                    net.convs[c].node,
                    if is_bias { "bias" } else { "weight" }
                );
            }
        }
    }

    #[test]
    fn unsupported_nodes_are_named() {
        let (mut model, _, _) = small();
        let graph = model.graph.as_mut().unwrap();
        let node = graph
            .node
            .iter_mut()
            .find(|n| n.op_type() == "Sigmoid")
            .unwrap();
        node.op_type = Some("Tanh".into());
        let name = node.name().to_string();
        let err = Network::from_model(&model).unwrap_err().to_string();
        assert!(
            err.contains(&name) && err.contains("Tanh cannot be trained"),
            "{err}"
        );
    }
}
