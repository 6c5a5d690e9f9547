//! Shape facts for every tensor of a graph, inferred in node order by the shape rules of the
//! [`crate::ops`] registry, with small constant tensors folded (the opset-12 export computes `Resize` sizes
//! through `Shape`, `Slice`, `Floor`, `Cast`, `Unsqueeze` and `Concat`).
//!
//! `value_info` entries take precedence; a tensor whose shape cannot be derived stays unknown.

use std::collections::HashMap;

use super::view::GraphView;
use crate::onnx::attr::{attr_int, attr_ints, attr_str};
use crate::onnx::proto::{NodeProto, TensorProto, ValueInfoProto};
use crate::onnx::tensor;
use crate::ops::{self, ShapeRule};

/// Constant tensors up to this many elements are folded.
const MAX_FOLDED: usize = 64;

/// Known shapes and folded constant values, by tensor name.
#[derive(Debug, Default)]
pub struct Shapes {
    shape: HashMap<String, Vec<i64>>,
    value: HashMap<String, Vec<f64>>,
}

impl Shapes {
    /// The shape of `tensor`, when known.
    pub fn get(&self, tensor: &str) -> Option<&[i64]> {
        self.shape.get(tensor).map(Vec::as_slice)
    }

    /// The values of a small constant tensor.
    pub fn value(&self, tensor: &str) -> Option<&[f64]> {
        self.value.get(tensor).map(Vec::as_slice)
    }

    fn set(&mut self, name: &str, shape: Vec<i64>) {
        self.shape.entry(name.to_string()).or_insert(shape);
    }

    fn set_value(&mut self, name: &str, shape: Vec<i64>, value: Vec<f64>) {
        self.set(name, shape);
        self.value.insert(name.to_string(), value);
    }

    fn add_tensor(&mut self, name: &str, t: &TensorProto) {
        let values = (tensor::numel(&t.dims).is_ok_and(|n| n <= MAX_FOLDED))
            .then(|| {
                tensor::to_i64(t)
                    .map(|v| v.into_iter().map(|x| x as f64).collect())
                    .or_else(|_| tensor::to_f32(t).map(|v| v.into_iter().map(f64::from).collect()))
                    .ok()
            })
            .flatten();
        match values {
            Some(v) => self.set_value(name, t.dims.clone(), v),
            None => self.set(name, t.dims.clone()),
        }
    }
}

/// The declared dimensions of a tensor value (`None` where symbolic or absent).
fn declared_dims(info: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use crate::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::onnx::proto::type_proto::Value;
    let Some(Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v >= 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

pub(super) fn declared_shape(info: &ValueInfoProto) -> Option<Vec<i64>> {
    declared_dims(info)?.into_iter().collect()
}

/// The height and width an image input that does not fix them (`export.py --dynamic`) is
/// analysed and run at: val.py's default `--imgsz`.
pub const DEFAULT_IMGSZ: usize = 640;

/// The shape of a graph input: as declared, except that a rank-4 image input with a fixed channel
/// count takes batch 1 and [`DEFAULT_IMGSZ`] for the dimensions it leaves symbolic, as a dynamic
/// export is validated.
fn input_shape(info: &ValueInfoProto) -> Option<Vec<i64>> {
    let dims = declared_dims(info)?;
    let imgsz = DEFAULT_IMGSZ as i64;
    match dims[..] {
        [batch, Some(channels), height, width] => Some(vec![
            batch.unwrap_or(1),
            channels,
            height.unwrap_or(imgsz),
            width.unwrap_or(imgsz),
        ]),
        _ => dims.into_iter().collect(),
    }
}

/// Infers what can be inferred about the tensors of `view`'s graph.
pub fn infer_shapes(view: &GraphView) -> Shapes {
    infer(view, true)
}

/// Infers shapes from the graph inputs and initializers alone, without taking `value_info` or
/// the graph outputs' declared shapes as given: what those declarations are checked against.
pub fn infer_undeclared_shapes(view: &GraphView) -> Shapes {
    infer(view, false)
}

fn infer(view: &GraphView, declared: bool) -> Shapes {
    let graph = view.graph;
    let mut shapes = Shapes::default();
    let declarations: &[ValueInfoProto] = if declared { &graph.value_info } else { &[] };
    let outputs: &[ValueInfoProto] = if declared { &graph.output } else { &[] };
    for info in &graph.input {
        if let Some(shape) = input_shape(info) {
            shapes.set(info.name(), shape);
        }
    }
    for info in declarations.iter().chain(outputs) {
        if let Some(shape) = declared_shape(info) {
            shapes.set(info.name(), shape);
        }
    }
    for t in &graph.initializer {
        shapes.add_tensor(t.name(), t);
    }
    for s in &graph.sparse_initializer {
        if let Some(values) = &s.values {
            shapes.set(values.name(), s.dims.clone());
        }
    }
    for node in &graph.node {
        infer_node(node, &mut shapes);
    }
    shapes
}

fn infer_node(node: &NodeProto, s: &mut Shapes) {
    let input = |i: usize| {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .map(String::as_str)
    };
    let shape_of = |s: &Shapes, i: usize| input(i).and_then(|n| s.get(n)).map(<[i64]>::to_vec);
    let value_of = |s: &Shapes, i: usize| input(i).and_then(|n| s.value(n)).map(<[f64]>::to_vec);
    let Some(out) = node.output.first().map(String::as_str) else {
        return;
    };
    let Some(op) = ops::of(node) else { return };
    match op.shape {
        ShapeRule::Constant => {
            if let Some(t) = node
                .attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a| a.t.as_ref())
            {
                s.add_tensor(out, t);
            } else if let Some(sparse) = node
                .attribute
                .iter()
                .find(|a| a.name() == "sparse_value")
                .and_then(|a| a.sparse_tensor.as_ref())
            {
                s.set(out, sparse.dims.clone());
            }
        }
        ShapeRule::Same => {
            if let Some(shape) = shape_of(s, 0) {
                s.set(out, shape);
            }
        }
        ShapeRule::Map(f) => {
            if let Some(shape) = shape_of(s, 0) {
                match value_of(s, 0) {
                    Some(v) => s.set_value(out, shape, v.into_iter().map(|x| f(node, x)).collect()),
                    None => s.set(out, shape),
                }
            }
        }
        ShapeRule::Broadcast(apply) => {
            let (Some(a), Some(b)) = (shape_of(s, 0), shape_of(s, 1)) else {
                return;
            };
            let Some(shape) = broadcast(&a, &b) else {
                return;
            };
            match (value_of(s, 0), value_of(s, 1)) {
                (Some(x), Some(y)) if x.len() == y.len() || x.len() == 1 || y.len() == 1 => {
                    let n = x.len().max(y.len());
                    let at = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                    let v = (0..n).map(|i| apply(at(&x, i), at(&y, i))).collect();
                    s.set_value(out, shape, v)
                }
                _ => s.set(out, shape),
            }
        }
        ShapeRule::ShapeOf => {
            if let Some(shape) = shape_of(s, 0) {
                let v = shape.iter().map(|&d| d as f64).collect();
                s.set_value(out, vec![shape.len() as i64], v);
            }
        }
        ShapeRule::Unsqueeze => {
            let Some(mut shape) = shape_of(s, 0) else {
                return;
            };
            let Some(axes) = attr_ints(node, "axes")
                .map(<[i64]>::to_vec)
                .or_else(|| value_of(s, 1).map(|v| v.into_iter().map(|x| x as i64).collect()))
            else {
                return;
            };
            let rank = (shape.len() + axes.len()) as i64;
            let mut axes: Vec<usize> = axes.iter().map(|&a| a.rem_euclid(rank) as usize).collect();
            axes.sort_unstable();
            for a in axes {
                shape.insert(a.min(shape.len()), 1);
            }
            match value_of(s, 0) {
                Some(v) => s.set_value(out, shape, v),
                None => s.set(out, shape),
            }
        }
        ShapeRule::Concat => {
            let shapes: Option<Vec<Vec<i64>>> =
                (0..node.input.len()).map(|i| shape_of(s, i)).collect();
            let Some(shapes) = shapes.filter(|v| !v.is_empty()) else {
                return;
            };
            let rank = shapes[0].len() as i64;
            let axis = attr_int(node, "axis").unwrap_or(0).rem_euclid(rank.max(1)) as usize;
            let mut shape = shapes[0].clone();
            shape[axis] = shapes
                .iter()
                .map(|d| d.get(axis).copied().unwrap_or(0))
                .sum();
            let values: Option<Vec<Vec<f64>>> =
                (0..node.input.len()).map(|i| value_of(s, i)).collect();
            match values.filter(|_| rank == 1) {
                Some(v) => s.set_value(out, shape, v.concat()),
                None => s.set(out, shape),
            }
        }
        ShapeRule::Slice => {
            let Some(shape) = shape_of(s, 0) else { return };
            let ints = |i: usize| {
                value_of(s, i).map(|v| v.into_iter().map(|x| x as i64).collect::<Vec<_>>())
            };
            let (starts, ends) = match (attr_ints(node, "starts"), attr_ints(node, "ends")) {
                (Some(a), Some(b)) => (a.to_vec(), b.to_vec()),
                _ => match (ints(1), ints(2)) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return,
                },
            };
            let axes = attr_ints(node, "axes")
                .map(<[i64]>::to_vec)
                .or_else(|| ints(3))
                .unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints(4).unwrap_or_else(|| vec![1; starts.len()]);
            let mut new_shape = shape.clone();
            let mut ranges = vec![];
            for (k, &axis) in axes.iter().enumerate() {
                let axis = axis.rem_euclid(shape.len() as i64) as usize;
                let (Some(&start), Some(&end), Some(&step)) =
                    (starts.get(k), ends.get(k), steps.get(k))
                else {
                    return;
                };
                if step != 1 {
                    return;
                }
                let dim = shape[axis];
                let clamp = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
                let (b, e) = (clamp(start), clamp(end));
                new_shape[axis] = (e - b).max(0);
                ranges.push((axis, b, e));
            }
            match value_of(s, 0).filter(|_| shape.len() == 1) {
                Some(v) => {
                    let (b, e) = ranges.first().map_or((0, v.len() as i64), |r| (r.1, r.2));
                    let slice = v
                        .get(b as usize..e.max(b) as usize)
                        .unwrap_or_default()
                        .to_vec();
                    s.set_value(out, new_shape, slice)
                }
                None => s.set(out, new_shape),
            }
        }
        ShapeRule::Window { weight } => {
            let Some(x) = shape_of(s, 0).filter(|x| x.len() >= 2) else {
                return;
            };
            let spatial = x.len() - 2;
            let (channels, kernel) = if weight {
                let Some(w) = shape_of(s, 1).filter(|w| w.len() >= 2) else {
                    return;
                };
                (w[0], w[2..].to_vec())
            } else {
                (
                    x[1],
                    attr_ints(node, "kernel_shape").unwrap_or_default().to_vec(),
                )
            };
            if kernel.len() != spatial {
                return;
            }
            let strides = attr_ints(node, "strides").map_or(vec![1; spatial], <[i64]>::to_vec);
            let dilations = attr_ints(node, "dilations").map_or(vec![1; spatial], <[i64]>::to_vec);
            let pads = attr_ints(node, "pads").map_or(vec![0; 2 * spatial], <[i64]>::to_vec);
            let ceil = attr_int(node, "ceil_mode") == Some(1);
            let auto_pad = attr_str(node, "auto_pad").unwrap_or("NOTSET");
            let mut shape = vec![x[0], channels];
            for i in 0..spatial {
                let pad = match auto_pad {
                    "VALID" => Some(0),
                    _ => pads
                        .get(i)
                        .zip(pads.get(i + spatial))
                        .and_then(|(a, b)| a.checked_add(*b)),
                };
                let window = Window {
                    kernel: kernel[i],
                    stride: strides.get(i).copied().unwrap_or(0),
                    dilation: dilations.get(i).copied().unwrap_or(0),
                };
                let dim = if auto_pad.starts_with("SAME") {
                    window.same_output(x[2 + i])
                } else {
                    pad.and_then(|pad| window.output(x[2 + i], pad, ceil))
                };
                let Some(dim) = dim else { return };
                shape.push(dim);
            }
            s.set(out, shape);
        }
        ShapeRule::Resize { scales, sizes } => {
            let Some(x) = shape_of(s, 0) else { return };
            let scales = value_of(s, scales).filter(|v| !v.is_empty());
            let sizes = sizes.and_then(|i| value_of(s, i).filter(|v| !v.is_empty()));
            let shape: Vec<i64> = match (sizes, scales) {
                (Some(sizes), _) if sizes.len() == x.len() => {
                    sizes.iter().map(|&v| v as i64).collect()
                }
                (_, Some(scales)) if scales.len() == x.len() => x
                    .iter()
                    .zip(&scales)
                    .map(|(&d, &f)| (d as f64 * f).floor() as i64)
                    .collect(),
                _ => return,
            };
            s.set(out, shape);
        }
        ShapeRule::Reshape => {
            let (Some(x), Some(target)) = (shape_of(s, 0), value_of(s, 1)) else {
                return;
            };
            let total: i64 = x.iter().product();
            let mut shape: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v == 0.0 {
                        x.get(i).copied().unwrap_or(0)
                    } else {
                        v as i64
                    }
                })
                .collect();
            if let Some(pos) = shape.iter().position(|&d| d == -1) {
                let known: i64 = shape.iter().filter(|&&d| d != -1).product();
                if known == 0 {
                    return;
                }
                shape[pos] = total / known;
            }
            s.set(out, shape);
        }
        ShapeRule::Transpose => {
            let Some(x) = shape_of(s, 0) else { return };
            let perm = attr_ints(node, "perm")
                .map_or_else(|| (0..x.len() as i64).rev().collect(), <[i64]>::to_vec);
            let permuted: Option<Vec<i64>> = perm
                .iter()
                .map(|&p| usize::try_from(p).ok().and_then(|p| x.get(p).copied()))
                .collect();
            if let Some(shape) = permuted.filter(|_| perm.len() == x.len()) {
                s.set(out, shape);
            }
        }
        ShapeRule::Split => {
            let Some(x) = shape_of(s, 0).filter(|x| !x.is_empty()) else {
                return;
            };
            let axis = attr_int(node, "axis")
                .unwrap_or(0)
                .rem_euclid(x.len() as i64) as usize;
            let sizes: Vec<i64> = match attr_ints(node, "split")
                .map(<[i64]>::to_vec)
                .or_else(|| value_of(s, 1).map(|v| v.into_iter().map(|x| x as i64).collect()))
            {
                Some(v) => v,
                None => {
                    let n = node.output.len() as i64;
                    if n == 0 || x[axis] % n != 0 {
                        return;
                    }
                    vec![x[axis] / n; n as usize]
                }
            };
            for (name, size) in node.output.iter().zip(sizes) {
                let mut shape = x.clone();
                shape[axis] = size;
                s.set(name, shape);
            }
        }
        ShapeRule::Gather => {
            let (Some(x), Some(idx)) = (shape_of(s, 0), shape_of(s, 1)) else {
                return;
            };
            let axis = attr_int(node, "axis")
                .unwrap_or(0)
                .rem_euclid(x.len() as i64) as usize;
            let mut shape = x[..axis].to_vec();
            shape.extend(&idx);
            shape.extend(&x[axis + 1..]);
            match (value_of(s, 0), value_of(s, 1)) {
                (Some(v), Some(i)) if x.len() == 1 => {
                    let n = v.len() as i64;
                    let picked: Option<Vec<f64>> = i
                        .iter()
                        .map(|&k| v.get((k as i64).rem_euclid(n) as usize).copied())
                        .collect();
                    match picked {
                        Some(p) => s.set_value(out, shape, p),
                        None => s.set(out, shape),
                    }
                }
                _ => s.set(out, shape),
            }
        }
        ShapeRule::GlobalPool => {
            if let Some(x) = shape_of(s, 0).filter(|x| x.len() >= 2) {
                let mut shape = x[..2].to_vec();
                shape.resize(x.len(), 1);
                s.set(out, shape);
            }
        }
    }
}

/// Numpy-style broadcasting of two shapes.
fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// One spatial axis of a Conv or pooling window.
struct Window {
    kernel: i64,
    stride: i64,
    dilation: i64,
}

impl Window {
    /// Output length for an input of `len` with `pad` in total, as ONNX defines it; `None` when
    /// the attributes describe no valid window (non-positive stride, dilation or kernel, an
    /// overflow, an empty output).
    fn output(&self, len: i64, pad: i64, ceil: bool) -> Option<i64> {
        if self.stride <= 0 || self.dilation <= 0 || self.kernel <= 0 {
            return None;
        }
        let extent = self.dilation.checked_mul(self.kernel - 1)?.checked_add(1)?;
        let span = len.checked_add(pad)?.checked_sub(extent)?;
        let steps = if ceil {
            span.checked_add(self.stride - 1)?.div_euclid(self.stride)
        } else {
            span.div_euclid(self.stride)
        };
        Some(steps + 1).filter(|&d| d > 0)
    }

    /// Output length under `auto_pad = SAME_*`: `ceil(len / stride)`.
    fn same_output(&self, len: i64) -> Option<i64> {
        if self.stride <= 0 {
            return None;
        }
        Some(len.checked_add(self.stride - 1)? / self.stride)
    }
}
