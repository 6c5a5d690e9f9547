//! The one registry of the ONNX operators shears understands: for each op type, its shape rule
//! ([`ShapeRule`], implemented by `graph::infer_shapes`), how it treats channels and how it is
//! rewritten when channels go ([`ChannelRule`], followed by `analysis::channel_groups` and
//! `passes::prune_channels`), and what it makes of a removed channel ([`AtZero`]).
//!
//! Adding an op is one entry in [`OPS`]. An op that is not here has no shape rule, and the
//! channel analysis locks the channels it reads ("does not understand"), never guessing.
//!
//! Why zeros matter: channel surgery is exact only if every removed channel is zero (once its
//! producing Conv's weights and bias are masked) wherever a node mixes channels (a Conv) or the
//! graph returns it. An op that maps 0 to something else (`Sigmoid(0) = 0.5`) makes the masked
//! model differ from the pruned one, so the analysis tracks [`AtZero`] along every path.

use crate::onnx::attr::{attr_f32, attr_int, attr_str};
use crate::onnx::proto::NodeProto;
use crate::onnx::proto::tensor_proto::DataType;

/// What shears knows about one operator of the default ONNX domain.
#[derive(Debug)]
pub struct Op {
    pub op_type: &'static str,
    pub shape: ShapeRule,
    pub channels: ChannelRule,
}

/// How an op's output shapes (and small constant values) follow from its inputs.
#[derive(Debug, Clone, Copy)]
pub enum ShapeRule {
    /// Output 0 has the shape of input 0.
    Same,
    /// Output 0 has the shape of input 0; constant values are mapped one by one.
    Map(fn(&NodeProto, f64) -> f64),
    /// Numpy broadcasting of inputs 0 and 1; constant values combined one by one.
    Broadcast(fn(f64, f64) -> f64),
    /// The tensor of attribute `value` (or the dims of `sparse_value`).
    Constant,
    /// The shape of input 0, as a 1-D value.
    ShapeOf,
    /// Input 0 with axes of size 1 inserted (attribute or input 1).
    Unsqueeze,
    /// Inputs joined along `axis`.
    Concat,
    /// Input 0 cut along axes by `starts` / `ends` (attributes or inputs 1-4), step 1.
    Slice,
    /// Input 0 cut along `axis` into the outputs (`split` attribute, input 1, or evenly).
    Split,
    /// Input 0 indexed along `axis` by input 1.
    Gather,
    /// Input 0 with its axes permuted by `perm` (reversed by default).
    Transpose,
    /// Input 0 with the shape of constant input 1 (`0` copies, `-1` infers).
    Reshape,
    /// Input 0 scaled by constant input `scales`, or given constant input `sizes`.
    Resize { scales: usize, sizes: Option<usize> },
    /// A sliding window over the spatial axes (kernel, strides, pads, dilations, auto_pad,
    /// ceil_mode); the output channels are the weight's axis 0 (`weight`) or input 0's.
    Window { weight: bool },
    /// `[N, C, 1, ..., 1]`.
    GlobalPool,
}

/// How an op treats the channels (axis 1) of the tensors it reads, and the rewrite removing a
/// channel needs there.
#[derive(Debug, Clone, Copy)]
pub enum ChannelRule {
    /// A Conv: `group = 1` reads the channels (remove its weight's axis 1 at their positions);
    /// depthwise carries them on (remove weight axis 0, bias and lower `group`; masking its
    /// weight and bias makes a removed channel zero again); other groups lock. Its output
    /// channels are a new source.
    Conv,
    /// Channel `k` of input 0 becomes channel `k` of output 0, as `f(x)`; nothing to rewrite.
    /// A second output in use (MaxPool indices, a Dropout mask) locks.
    PerChannel(AtZero),
    /// Two broadcast operands combined by `apply`: channel operands of equal channel count are
    /// tied 1:1, a size-1 operand passes channels through, a stored per-channel operand is cut
    /// along with the channels. `masked`: the masked model zeros that operand at a removed
    /// channel. `absorbs`: a zero operand gives zero whatever the other (Mul).
    Elementwise {
        apply: fn(f64, f64) -> f64,
        masked: bool,
        absorbs: bool,
    },
    /// Channel `k` of input 0 becomes channel `k` of output 0 through the stored per-channel
    /// vectors at input slots `params` (cut along axis 0); the masked model zeros those at
    /// `masked`, which makes a removed channel zero whatever the input.
    Affine {
        params: &'static [usize],
        masked: &'static [usize],
    },
    /// On axis 1, the output concatenates the inputs' channels; any other axis locks.
    Concat,
    /// On axis 1, each output carries a sub-range: the sizes are recounted. On other axes each
    /// output carries all channels.
    Split,
    /// On axis 1 (step 1), the output carries a sub-range: the bounds are remapped. On other
    /// axes the output carries all channels.
    Slice,
    /// With scale 1 (or the input's size) on N and C, the output carries the channels; stored
    /// sizes are lowered, sizes computed from the resized tensor's own `Shape` follow it.
    Resize(AtZero),
    /// Reads the channel count only: followed where it feeds a computed Resize size of the same
    /// tensor, locks otherwise.
    ShapeOf,
    /// Locks the channels it reads (naming the Detect head layout when it is one).
    Reshape,
    /// Locks the channels it reads, for the reason given ("read by <node>, which <reason>").
    Lock(&'static str),
}

/// What an op makes of a zero channel: `f(0)`.
#[derive(Debug, Clone, Copy)]
pub enum AtZero {
    /// `f(0) = 0`.
    Zero,
    /// `f(0)` is this constant.
    Value(f64),
    /// `f(0)` depends on the node's attributes and constant inputs (given by slot); `None`
    /// when they cannot be read.
    Node(fn(&NodeProto, Constants) -> Option<f64>),
}

/// The values of a node's constant inputs, by slot (`None`: absent or not readable).
pub type Constants<'a> = &'a dyn Fn(usize) -> Option<Vec<f64>>;

impl AtZero {
    /// `f(0)` for `node`, with `constant` giving the values of its constant inputs by slot.
    pub fn eval(&self, node: &NodeProto, constant: Constants) -> Option<f64> {
        match *self {
            AtZero::Zero => Some(0.0),
            AtZero::Value(v) => Some(v),
            AtZero::Node(f) => f(node, constant),
        }
    }
}

impl Op {
    /// Whether masking zeros input `slot` of this op at a removed channel, making that channel
    /// of its output zero.
    pub fn mask_zeroes(&self, slot: usize) -> bool {
        match self.channels {
            ChannelRule::Elementwise { masked, .. } => masked,
            ChannelRule::Affine { masked, .. } => masked.contains(&slot),
            _ => false,
        }
    }
}

/// The registry entry of `node`'s op, when it is in the default domain and listed.
pub fn of(node: &NodeProto) -> Option<&'static Op> {
    matches!(node.domain(), "" | "ai.onnx")
        .then(|| OPS.iter().find(|op| op.op_type == node.op_type()))
        .flatten()
}

/// The range `[begin, end)` of an axis of `extent` that a step-1 Slice from `start` to `end`
/// keeps (negative bounds count from the end, both are clamped to the axis): what channel
/// analysis and channel surgery both read from Slice bounds.
pub fn slice_range(start: i64, end: i64, extent: i64) -> (usize, usize) {
    let clamp = |v: i64| {
        if v < 0 {
            (v + extent).max(0)
        } else {
            v.min(extent)
        }
    };
    (clamp(start) as usize, clamp(end).max(clamp(start)) as usize)
}

const fn per_channel(op_type: &'static str, shape: ShapeRule, at_zero: AtZero) -> Op {
    Op {
        op_type,
        shape,
        channels: ChannelRule::PerChannel(at_zero),
    }
}

const fn unary(op_type: &'static str, at_zero: AtZero) -> Op {
    per_channel(op_type, ShapeRule::Same, at_zero)
}

const fn elementwise(
    op_type: &'static str,
    apply: fn(f64, f64) -> f64,
    masked: bool,
    absorbs: bool,
) -> Op {
    Op {
        op_type,
        shape: ShapeRule::Broadcast(apply),
        channels: ChannelRule::Elementwise {
            apply,
            masked,
            absorbs,
        },
    }
}

const fn locks(op_type: &'static str, shape: ShapeRule, reason: &'static str) -> Op {
    Op {
        op_type,
        shape,
        channels: ChannelRule::Lock(reason),
    }
}

/// Every op shears understands.
pub static OPS: &[Op] = &[
    Op {
        op_type: "Conv",
        shape: ShapeRule::Window { weight: true },
        channels: ChannelRule::Conv,
    },
    unary("Identity", AtZero::Zero),
    unary("Dropout", AtZero::Zero),
    unary("Relu", AtZero::Zero),
    unary("LeakyRelu", AtZero::Zero),
    unary("ThresholdedRelu", AtZero::Zero),
    unary("HardSwish", AtZero::Zero),
    unary("Tanh", AtZero::Zero),
    unary("Softsign", AtZero::Zero),
    unary("Elu", AtZero::Zero),
    unary("Selu", AtZero::Zero),
    unary("Celu", AtZero::Zero),
    unary("Gelu", AtZero::Zero),
    unary("Mish", AtZero::Zero),
    unary("Neg", AtZero::Zero),
    unary("Abs", AtZero::Zero),
    unary("Sqrt", AtZero::Zero),
    unary("Erf", AtZero::Zero),
    unary("Sigmoid", AtZero::Value(0.5)),
    unary("Softplus", AtZero::Value(std::f64::consts::LN_2)),
    unary("Exp", AtZero::Value(1.0)),
    unary("Log", AtZero::Value(f64::NEG_INFINITY)),
    unary("Reciprocal", AtZero::Value(f64::INFINITY)),
    unary("HardSigmoid", AtZero::Node(hard_sigmoid_at_zero)),
    unary("Clip", AtZero::Node(clip_at_zero)),
    per_channel("Floor", ShapeRule::Map(|_, v| v.floor()), AtZero::Zero),
    per_channel("Ceil", ShapeRule::Map(|_, v| v.ceil()), AtZero::Zero),
    per_channel("Cast", ShapeRule::Map(cast), AtZero::Zero),
    per_channel("MaxPool", ShapeRule::Window { weight: false }, AtZero::Zero),
    per_channel(
        "AveragePool",
        ShapeRule::Window { weight: false },
        AtZero::Zero,
    ),
    per_channel("LpPool", ShapeRule::Window { weight: false }, AtZero::Zero),
    per_channel("GlobalAveragePool", ShapeRule::GlobalPool, AtZero::Zero),
    per_channel("GlobalMaxPool", ShapeRule::GlobalPool, AtZero::Zero),
    elementwise("Add", |p, q| p + q, true, false),
    elementwise("Sub", |p, q| p - q, true, false),
    elementwise("Mul", |p, q| p * q, false, true),
    elementwise("Div", |p, q| p / q, false, false),
    elementwise("Pow", f64::powf, false, false),
    elementwise("Max", f64::max, true, false),
    elementwise("Min", f64::min, true, false),
    Op {
        op_type: "BatchNormalization",
        shape: ShapeRule::Same,
        channels: ChannelRule::Affine {
            params: &[1, 2, 3, 4],
            masked: &[1, 2],
        },
    },
    Op {
        op_type: "Concat",
        shape: ShapeRule::Concat,
        channels: ChannelRule::Concat,
    },
    Op {
        op_type: "Split",
        shape: ShapeRule::Split,
        channels: ChannelRule::Split,
    },
    Op {
        op_type: "Slice",
        shape: ShapeRule::Slice,
        channels: ChannelRule::Slice,
    },
    Op {
        op_type: "Resize",
        shape: ShapeRule::Resize {
            scales: 2,
            sizes: Some(3),
        },
        channels: ChannelRule::Resize(AtZero::Node(resize_at_zero)),
    },
    Op {
        op_type: "Upsample",
        shape: ShapeRule::Resize {
            scales: 1,
            sizes: None,
        },
        channels: ChannelRule::Resize(AtZero::Zero),
    },
    Op {
        op_type: "Shape",
        shape: ShapeRule::ShapeOf,
        channels: ChannelRule::ShapeOf,
    },
    Op {
        op_type: "Reshape",
        shape: ShapeRule::Reshape,
        channels: ChannelRule::Reshape,
    },
    locks(
        "Transpose",
        ShapeRule::Transpose,
        "moves the channel axis, which the channel analysis does not follow",
    ),
    locks(
        "Unsqueeze",
        ShapeRule::Unsqueeze,
        "moves the channel axis, which the channel analysis does not follow",
    ),
    locks(
        "Gather",
        ShapeRule::Gather,
        "picks entries along an axis, which the channel analysis does not follow",
    ),
    locks("Constant", ShapeRule::Constant, "reads no inputs"),
];

/// `HardSigmoid(0) = max(0, min(1, beta))`.
fn hard_sigmoid_at_zero(node: &NodeProto, _: Constants) -> Option<f64> {
    let beta = attr_f32(node, "beta").map_or(0.5, f64::from);
    Some(beta.clamp(0.0, 1.0))
}

/// `Clip(0)`: 0 raised to `min` and lowered to `max`, each an attribute (opset < 11) or an
/// optional constant input (slots 1 and 2).
fn clip_at_zero(node: &NodeProto, constant: Constants) -> Option<f64> {
    let bound = |name: &str, slot: usize| -> Option<Option<f64>> {
        if let Some(v) = attr_f32(node, name) {
            return Some(Some(f64::from(v)));
        }
        match node.input.get(slot).filter(|n| !n.is_empty()) {
            None => Some(None),
            Some(_) => constant(slot)?.first().copied().map(Some),
        }
    };
    let (min, max) = (bound("min", 1)?, bound("max", 2)?);
    let raised = min.map_or(0.0, |lo| lo.max(0.0));
    Some(max.map_or(raised, |hi| raised.min(hi)))
}

/// A Resize of zeros is zero, except where `tf_crop_and_resize` fills outside the crop with a
/// non-zero `extrapolation_value`.
fn resize_at_zero(node: &NodeProto, _: Constants) -> Option<f64> {
    let crops = attr_str(node, "coordinate_transformation_mode") == Some("tf_crop_and_resize");
    let fill = attr_f32(node, "extrapolation_value").map_or(0.0, f64::from);
    Some(if crops { fill } else { 0.0 })
}

/// `Cast` of a value: to an integer type it truncates toward zero; to a float type it keeps it.
fn cast(node: &NodeProto, v: f64) -> f64 {
    let to = attr_int(node, "to").and_then(|t| DataType::try_from(t as i32).ok());
    match to {
        Some(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16) => v,
        _ => v.trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{float_attr, node};

    fn no_constants(_: usize) -> Option<Vec<f64>> {
        None
    }

    #[test]
    fn every_op_is_listed_once() {
        for (i, op) in OPS.iter().enumerate() {
            assert!(
                OPS[..i].iter().all(|o| o.op_type != op.op_type),
                "{} is listed twice",
                op.op_type
            );
        }
    }

    #[test]
    fn unknown_ops_and_other_domains_are_not_listed() {
        assert!(of(&node("Relu", "r", &["x"], &["y"])).is_some());
        assert!(of(&node("NonMaxSuppression", "n", &["x"], &["y"])).is_none());
        let mut custom = node("Relu", "r", &["x"], &["y"]);
        custom.domain = Some("com.example".into());
        assert!(of(&custom).is_none());
    }

    #[test]
    fn clip_at_zero_reads_attributes_and_inputs() {
        let mut n = node("Clip", "c", &["x"], &["y"]);
        let at = |n: &NodeProto, c: Constants| clip_at_zero(n, c);
        assert_eq!(at(&n, &no_constants), Some(0.0));
        n.attribute.push(float_attr("min", 0.5));
        assert_eq!(at(&n, &no_constants), Some(0.5));
        let n = node("Clip", "c", &["x", "lo", "hi"], &["y"]);
        assert_eq!(at(&n, &no_constants), None);
        let bounds = |slot: usize| Some(vec![if slot == 1 { 0.0 } else { 6.0 }]);
        assert_eq!(at(&n, &bounds), Some(0.0));
        let above = |slot: usize| Some(vec![if slot == 1 { 2.0 } else { 6.0 }]);
        assert_eq!(at(&n, &above), Some(2.0));
        let below = |slot: usize| Some(vec![if slot == 1 { -6.0 } else { -1.0 }]);
        assert_eq!(at(&n, &below), Some(-1.0));
        let only_max = node("Clip", "c", &["x", "", "hi"], &["y"]);
        let max = |_: usize| Some(vec![-3.0]);
        assert_eq!(at(&only_max, &max), Some(-3.0));
    }

    #[test]
    fn hard_sigmoid_at_zero_is_its_clamped_beta() {
        let mut n = node("HardSigmoid", "h", &["x"], &["y"]);
        assert_eq!(hard_sigmoid_at_zero(&n, &no_constants), Some(0.5));
        n.attribute.push(float_attr("beta", 0.0));
        assert_eq!(hard_sigmoid_at_zero(&n, &no_constants), Some(0.0));
    }
}
