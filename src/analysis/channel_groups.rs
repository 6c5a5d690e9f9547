//! Channel dependency groups: which Conv output channels must be removed together, and every
//! place that reads them. The analysis changes nothing.
//!
//! Every Conv output is a *channel source*. Channels flow forward through the ops that the
//! [`crate::ops`] registry says carry them ([`ChannelRule`]); a binary element-wise op whose
//! operands both carry channels ties them 1:1 (channel `k` of one is channel `k` of the other),
//! so their sources join one [`ChannelGroup`]: removing channel `k` of a group removes it from
//! every producer and from every place that reads it.
//!
//! How each op treats channels, and what it makes of a zero channel ([`crate::ops::AtZero`]), is
//! the registry's; this module follows it:
//! - `Conv`, `group` 1: a consumer ([`UseKind::Input`], weight axis 1). Depthwise (`group` = input
//!   channels = output channels): [`UseKind::Depthwise`], its output carries the same channels.
//!   Any other `group` locks.
//! - Per-channel ops (activations, `Identity`, `Dropout`, pooling): pass-through.
//! - Element-wise ops of two operands: two channel operands of equal channel count are tied
//!   (SiLU is `Mul(x, Sigmoid(x))`, a tie of a group with itself; the C3 residual `Add` joins two
//!   groups). A non-channel operand of size 1 on the channel axis passes through; a stored
//!   per-channel operand is recorded as an [`Edit::Param`] to slice; anything else locks.
//! - `BatchNormalization`: pass-through, its four parameters recorded as [`Edit::Param`].
//! - `Concat` on axis 1: the output is the concatenation; each input keeps its group at an offset.
//! - `Split` / `Slice` on axis 1: the outputs carry sub-ranges; [`Edit::SplitSizes`] /
//!   [`Edit::SliceBounds`] record that sizes and bounds must be remapped. On other axes:
//!   pass-through.
//! - `Resize` / `Upsample` with scale 1 (or the input's size) on N and C: pass-through. Sizes
//!   stored as a constant are recorded as [`Edit::ResizeSizes`]; sizes computed from `Shape` of
//!   the resized tensor itself (the opset-12 export) follow it at run time and need nothing.
//! - `Shape` only where it feeds such a computed `Resize` size.
//!
//! Everything else locks the groups it reads: graph outputs, `Reshape` (the Detect head output
//! convs), ops the registry locks or does not list, and any case above whose constants cannot be
//! read. A lock is never a guess: it names the reason and the node.
//!
//! Zeros: surgery is exact only if a removed channel, once its producers' weights and biases are
//! masked, is zero wherever a Conv mixes channels or the graph returns it. Along every path the
//! analysis records where a node maps a zero channel to a non-zero value (`Sigmoid(0) = 0.5`,
//! `Add` of a non-zero constant); a Mul by a zero operand, a depthwise Conv and a
//! BatchNormalization (whose masked weights or scale and bias are zero) make it zero again. A
//! channel reaching a `group = 1` Conv non-zero locks its group, naming the node that made it so;
//! a value that is not finite (`Log(0)`) or cannot be read locks at once. Values reaching those
//! zeroing nodes are taken to be finite.
//!
//! Contract for passes using the result: every [`Edit`] and [`ConsumerUse`] concerns one node;
//! an initializer that other nodes also read must be copied for that node, not edited in place.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::convs::conv_layers;
use crate::graph::{GraphView, Shapes, attr_int, attr_ints, infer_shapes};
use crate::onnx::proto::GraphProto;
use crate::onnx::tensor;
use crate::ops::{self, AtZero, ChannelRule};

/// The channel groups of a graph, ordered by their first producer in node order.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelAnalysis {
    pub groups: Vec<ChannelGroup>,
}

impl ChannelAnalysis {
    /// The group whose producers include Conv node `node`.
    pub fn group_of(&self, node: usize) -> Option<&ChannelGroup> {
        self.groups.iter().find(|g| g.producers.contains(&node))
    }
}

/// Conv output channels tied 1:1 (channel `k` of each producer is the same logical channel),
/// with every place that carries or reads them.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelGroup {
    /// Position in [`ChannelAnalysis::groups`].
    pub id: usize,
    /// Channels of every producer.
    pub channels: usize,
    /// Conv nodes producing the channels (weight axis 0 and bias), in node order.
    pub producers: Vec<usize>,
    /// The producers' node names, same order.
    pub producer_names: Vec<String>,
    /// Conv nodes reading the channels, in node order.
    pub consumers: Vec<ConsumerUse>,
    /// Tensors carrying the channels (on axis 1), in node order.
    pub tensors: Vec<TensorSpan>,
    /// Other rewrites removing a channel needs, in node order.
    pub edits: Vec<Edit>,
    /// In JSON: `"status": "prunable"`, or `"status": "locked"` with `"reasons"`.
    #[serde(flatten)]
    pub status: GroupStatus,
}

impl ChannelGroup {
    pub fn is_prunable(&self) -> bool {
        matches!(self.status, GroupStatus::Prunable)
    }
}

/// Where group channels sit along some channel axis: group channel `k`, for
/// `start <= k < start + len`, is position `offset + k - start` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub offset: usize,
    pub start: usize,
    pub len: usize,
}

impl Span {
    /// The position of group channel `k`, when this span holds it.
    pub fn position(&self, k: usize) -> Option<usize> {
        (self.start..self.start + self.len)
            .contains(&k)
            .then(|| self.offset + k - self.start)
    }
}

/// A Conv reading group channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerUse {
    pub node: usize,
    pub name: String,
    pub kind: UseKind,
    /// Positions on the node's input channel axis.
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    /// A `group = 1` Conv: remove weight axis 1 at the span's positions.
    Input,
    /// A depthwise Conv: remove weight axis 0 and bias at the span's positions; its output
    /// carries the same channels on.
    Depthwise,
}

/// A tensor carrying group channels on axis 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpan {
    pub name: String,
    pub span: Span,
}

/// A rewrite besides Conv weights that removing group channels requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum Edit {
    /// Remove the span's positions along `axis` of initializer `tensor`, read by `node`
    /// (BatchNormalization parameters, per-channel operands of element-wise ops).
    Param {
        node: usize,
        tensor: String,
        axis: usize,
        span: Span,
    },
    /// A Split on the channel axis: its sizes must be recounted (span: in its input).
    SplitSizes { node: usize, span: Span },
    /// A Slice on the channel axis: its bounds must be remapped (span: in its input).
    SliceBounds { node: usize, span: Span },
    /// A Resize whose stored `sizes` tensor holds the channel count at entry 1.
    ResizeSizes { node: usize, tensor: String },
}

/// Whether a group may be pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GroupStatus {
    Prunable,
    /// Why not, in node order.
    Locked {
        reasons: Vec<Lock>,
    },
}

/// One reason a group is locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// The node responsible, when one is.
    pub node: Option<usize>,
    pub reason: String,
}

/// The channel groups of `graph`. Errors only where the graph itself is broken (a Conv weight
/// that is not stored, a node reading a tensor produced later); whatever the analysis does not
/// understand locks the groups involved instead.
pub fn channel_groups(graph: &GraphProto) -> Result<ChannelAnalysis> {
    let view = GraphView::new(graph);
    let shapes = infer_shapes(&view);
    let mut b = Builder {
        view: &view,
        shapes: &shapes,
        sources: Vec::new(),
        parent: Vec::new(),
        layouts: HashMap::new(),
        facts: Vec::new(),
        nonzero: Vec::new(),
    };
    let convs: HashMap<usize, (String, i64)> = conv_layers(&view)?
        .into_iter()
        .map(|c| (c.node, (c.weight, c.group)))
        .collect();
    for (index, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|n| !n.is_empty()) {
            if view.producer(input).is_some_and(|p| p >= index) {
                bail!(
                    "{}: reads {input:?} before it is produced (nodes are not in topological order)",
                    view.describe(index)
                );
            }
        }
        if matches!(ops::of(node).map(|op| op.channels), Some(ChannelRule::Conv)) {
            let (weight, group) = convs
                .get(&index)
                .with_context(|| format!("{}: not a listed Conv", view.describe(index)))?;
            b.conv(index, weight, *group)?;
        } else if node
            .input
            .iter()
            .any(|n| b.layouts.contains_key(n.as_str()))
        {
            b.node(index);
        }
    }
    Ok(b.finish())
}

/// A run of channels along axis 1 of a tensor.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// Channels `start..start + len` of source `src`; `nonzero`: why a removed channel is not
    /// zero here (an index into `Builder::nonzero`), `None` while it is.
    Src {
        src: usize,
        start: usize,
        len: usize,
        nonzero: Option<usize>,
    },
    /// Channels no Conv produces (a graph input or a constant concatenated in).
    Opaque(usize),
}

impl Seg {
    fn len(&self) -> usize {
        match *self {
            Seg::Src { len, .. } | Seg::Opaque(len) => len,
        }
    }
}

/// The channels of a tensor, in axis-1 order.
type Layout = Vec<Seg>;

fn total(layout: &Layout) -> usize {
    layout.iter().map(Seg::len).sum()
}

/// Channels `from..to` of `layout`.
fn cut(layout: &Layout, from: usize, to: usize) -> Layout {
    let mut out = Vec::new();
    let mut pos = 0;
    for seg in layout {
        let (b, e) = (from.max(pos), to.min(pos + seg.len()));
        if b < e {
            out.push(match *seg {
                Seg::Src {
                    src,
                    start,
                    nonzero,
                    ..
                } => Seg::Src {
                    src,
                    start: start + b - pos,
                    len: e - b,
                    nonzero,
                },
                Seg::Opaque(_) => Seg::Opaque(e - b),
            });
        }
        pos += seg.len();
    }
    out
}

/// `layout` with every removed channel zero again (the masked model zeros what makes it).
fn zeroed(layout: Layout) -> Layout {
    layout
        .into_iter()
        .map(|seg| match seg {
            Seg::Src {
                src, start, len, ..
            } => Seg::Src {
                src,
                start,
                len,
                nonzero: None,
            },
            opaque => opaque,
        })
        .collect()
}

/// An element-wise op's arithmetic, as [`ChannelRule::Elementwise`] states it.
#[derive(Clone, Copy)]
struct Arith {
    apply: fn(f64, f64) -> f64,
    masked: bool,
    absorbs: bool,
}

/// The source segments of `layout` with the span each occupies.
fn spans(layout: &Layout) -> Vec<(usize, Span)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for seg in layout {
        if let Seg::Src {
            src, start, len, ..
        } = *seg
        {
            out.push((src, Span { offset, start, len }));
        }
        offset += seg.len();
    }
    out
}

/// A Conv output channel space.
struct Source {
    node: usize,
    channels: usize,
}

/// What the walk learns about a source, gathered into its group at the end.
enum Fact {
    Consumer(ConsumerUse),
    Tensor(TensorSpan),
    Edit(Edit),
    Lock(Lock),
}

struct Builder<'a, 'g> {
    view: &'a GraphView<'g>,
    shapes: &'a Shapes,
    sources: Vec<Source>,
    /// Union-find over sources; a root is the earliest source of its group.
    parent: Vec<usize>,
    layouts: HashMap<String, Layout>,
    facts: Vec<(usize, Fact)>,
    /// Why removed channels are not zero, where a segment says so.
    nonzero: Vec<String>,
}

impl Builder<'_, '_> {
    fn find(&mut self, mut s: usize) -> usize {
        while self.parent[s] != s {
            self.parent[s] = self.parent[self.parent[s]];
            s = self.parent[s];
        }
        s
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        let (lo, hi) = (a.min(b), a.max(b));
        self.parent[hi] = lo;
    }

    fn layout(&self, tensor: &str) -> Option<&Layout> {
        self.layouts.get(tensor)
    }

    fn rank(&self, tensor: &str) -> Option<usize> {
        self.shapes.get(tensor).map(<[i64]>::len)
    }

    fn lock_layout(&mut self, layout: &Layout, node: Option<usize>, reason: &str) {
        for (src, _) in spans(layout) {
            self.facts.push((
                src,
                Fact::Lock(Lock {
                    node,
                    reason: reason.to_string(),
                }),
            ));
        }
    }

    /// Locks every channel tensor `index` reads.
    fn lock_inputs(&mut self, index: usize, reason: &str) {
        for input in &self.view.node(index).input {
            if let Some(layout) = self.layout(input).cloned() {
                self.lock_layout(&layout, Some(index), reason);
            }
        }
    }

    /// Records that `tensor` carries `layout`.
    fn set(&mut self, tensor: &str, layout: Layout) {
        if tensor.is_empty() {
            return;
        }
        for (src, span) in spans(&layout) {
            self.facts.push((
                src,
                Fact::Tensor(TensorSpan {
                    name: tensor.to_string(),
                    span,
                }),
            ));
        }
        if self.view.is_graph_output(tensor) {
            let producer = self.view.producer(tensor);
            self.lock_layout(
                &layout,
                producer,
                &format!("reaches graph output {tensor:?}"),
            );
        }
        self.layouts.insert(tensor.to_string(), layout);
    }

    fn name(&self, index: usize) -> String {
        let node = self.view.node(index);
        if node.name().is_empty() {
            format!("{}#{index}", node.op_type())
        } else {
            node.name().to_string()
        }
    }

    fn conv(&mut self, index: usize, weight: &str, group: i64) -> Result<()> {
        let view = self.view;
        let node = view.node(index);
        let dims = view
            .initializer(weight)
            .map(|t| &t.dims)
            .or_else(|| view.sparse_tensor(weight).map(|s| &s.dims))
            .with_context(|| format!("{}: weight {weight:?} not found", view.describe(index)))?;
        let (Some(&out), Some(&per_group)) = (dims.first(), dims.get(1)) else {
            bail!(
                "{}: weight {weight:?} has shape {dims:?}, not [out, in / group, ...]",
                view.describe(index)
            );
        };
        let out = usize::try_from(out)?;
        let per_group = usize::try_from(per_group)?;
        let output = node.output.first().cloned().unwrap_or_default();
        for input in node.input.iter().skip(1) {
            if let Some(layout) = self.layout(input).cloned() {
                self.lock_layout(
                    &layout,
                    Some(index),
                    &format!("read as a weight or bias by {}", view.describe(index)),
                );
            }
        }
        let input = node.input.first().and_then(|x| self.layout(x)).cloned();
        let mut locked = None;
        if let Some(layout) = input {
            let channels = total(&layout);
            let g = usize::try_from(group).unwrap_or(0);
            if g == 1 && channels == per_group {
                for (src, span) in spans(&layout) {
                    self.consumer(src, index, UseKind::Input, span);
                }
                self.require_zero(&layout, index);
            } else if g == channels && per_group == 1 && out == channels {
                for (src, span) in spans(&layout) {
                    self.consumer(src, index, UseKind::Depthwise, span);
                }
                // The masked model zeros a removed channel's depthwise weights and bias.
                self.set(&output, zeroed(layout));
                return Ok(());
            } else {
                let expected = per_group.saturating_mul(g);
                let reason = if channels != expected {
                    format!(
                        "read by {}, whose weight expects {expected} input channels, not {channels}",
                        view.describe(index),
                    )
                } else {
                    format!(
                        "read by {}, a grouped Conv (group {group})",
                        view.describe(index)
                    )
                };
                self.lock_layout(&layout, Some(index), &reason);
                locked = Some(reason);
            }
        } else if group != 1 {
            locked = Some(format!(
                "produced by {}, a grouped Conv (group {group})",
                view.describe(index)
            ));
        }
        let src = self.sources.len();
        self.sources.push(Source {
            node: index,
            channels: out,
        });
        self.parent.push(src);
        if let Some(reason) = locked {
            self.facts.push((
                src,
                Fact::Lock(Lock {
                    node: Some(index),
                    reason,
                }),
            ));
        }
        self.set(
            &output,
            vec![Seg::Src {
                src,
                start: 0,
                len: out,
                nonzero: None,
            }],
        );
        Ok(())
    }

    fn consumer(&mut self, src: usize, node: usize, kind: UseKind, span: Span) {
        let name = self.name(node);
        self.facts.push((
            src,
            Fact::Consumer(ConsumerUse {
                node,
                name,
                kind,
                span,
            }),
        ));
    }

    /// A non-Conv node reading at least one channel tensor, as the [`ops`] registry says.
    fn node(&mut self, index: usize) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        if node.output.first().is_none_or(|o| o.is_empty()) {
            return self.lock_inputs(index, &format!("read by {describe}, which has no output"));
        }
        let rule = ops::of(node).map(|op| op.channels);
        match rule {
            Some(ChannelRule::PerChannel(at_zero)) => self.per_channel(index, at_zero),
            Some(ChannelRule::Elementwise {
                apply,
                masked,
                absorbs,
            }) => self.binary(
                index,
                Arith {
                    apply,
                    masked,
                    absorbs,
                },
            ),
            Some(ChannelRule::Affine { params, .. }) => self.affine(index, params),
            Some(ChannelRule::Concat) => self.concat(index),
            Some(ChannelRule::Split) => self.split(index),
            Some(ChannelRule::Slice) => self.slice(index),
            Some(ChannelRule::Resize(at_zero)) => self.resize(index, at_zero),
            Some(ChannelRule::ShapeOf) => {
                if let Err(user) = self.shape_feeds_own_resize(index) {
                    let user = self.view.describe(user);
                    self.lock_inputs(
                        index,
                        &format!(
                            "channel count read by {describe} and used by {user}, which the \
                             channel analysis does not follow"
                        ),
                    );
                }
            }
            Some(ChannelRule::Reshape) => {
                let out = node.output.first().and_then(|o| self.shapes.get(o));
                let input = self.layout(&node.input[0]).map(total);
                let detect = match (out, input) {
                    (Some(&[_, anchors, outputs, _, _]), Some(c))
                        if anchors > 0
                            && outputs >= 5
                            && anchors.checked_mul(outputs) == i64::try_from(c).ok() =>
                    {
                        format!(
                            " into {anchors} x {outputs} (Detect head: anchors x (5 + classes))"
                        )
                    }
                    _ => String::new(),
                };
                self.lock_inputs(index, &format!("channels reshaped by {describe}{detect}"));
            }
            Some(ChannelRule::Lock(reason)) => {
                self.lock_inputs(index, &format!("read by {describe}, which {reason}"))
            }
            // A Conv outside the default domain is not listed; one inside never comes here.
            Some(ChannelRule::Conv) | None => self.lock_inputs(
                index,
                &format!("read by {describe}, which the channel analysis does not understand"),
            ),
        }
    }

    /// A [`ChannelRule::PerChannel`] op: channel `k` of input 0 becomes channel `k` of output 0.
    fn per_channel(&mut self, index: usize, at_zero: AtZero) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        if node
            .input
            .iter()
            .skip(1)
            .any(|n| self.layouts.contains_key(n))
        {
            return self.lock_inputs(index, &format!("read as a parameter by {describe}"));
        }
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return self.lock_inputs(
                index,
                &format!(
                    "read by {describe}, whose extra output (indices, mask) the channel analysis \
                     does not follow"
                ),
            );
        }
        let layout = self.layout(&node.input[0]).cloned().unwrap_or_default();
        let value = at_zero.eval(node, &|slot| {
            node.input
                .get(slot)
                .filter(|n| !n.is_empty())
                .and_then(|n| self.values(n))
        });
        let layout = self.after(index, layout, value);
        self.set(&node.output[0].clone(), layout);
    }

    /// The values of constant `tensor`: folded by shape inference, or a stored initializer.
    fn values(&self, tensor: &str) -> Option<Vec<f64>> {
        if let Some(v) = self.shapes.value(tensor) {
            return Some(v.to_vec());
        }
        let t = self.view.initializer(tensor)?;
        let v = tensor::to_f32(t).ok()?;
        Some(v.into_iter().map(f64::from).collect())
    }

    /// `layout` past node `index`, which maps a zero channel to `value` (`None`: unknown). A
    /// removed channel that was zero stays zero, becomes non-zero with the reason recorded (a
    /// finite value), or locks its source at once (a value that is not finite or not known: no
    /// later mask could make it zero again). One that was not zero stays so.
    fn after(&mut self, index: usize, layout: Layout, value: Option<f64>) -> Layout {
        let describe = self.view.describe(index);
        let reason = match value {
            Some(0.0) => return layout,
            Some(v) if v.is_finite() => {
                self.nonzero
                    .push(format!("{describe} maps a removed channel to {v}, not 0"));
                let r = self.nonzero.len() - 1;
                return layout
                    .into_iter()
                    .map(|seg| match seg {
                        Seg::Src {
                            src,
                            start,
                            len,
                            nonzero: None,
                        } => Seg::Src {
                            src,
                            start,
                            len,
                            nonzero: Some(r),
                        },
                        other => other,
                    })
                    .collect();
            }
            Some(v) => format!("{describe} maps a removed channel to {v}, not 0"),
            None => format!("{describe} maps a removed channel to a value it cannot read"),
        };
        for seg in &layout {
            if let Seg::Src {
                src, nonzero: None, ..
            } = *seg
            {
                self.facts.push((
                    src,
                    Fact::Lock(Lock {
                        node: Some(index),
                        reason: reason.clone(),
                    }),
                ));
            }
        }
        layout
    }

    /// Locks the sources of `layout` whose removed channels are not zero where node `index`
    /// mixes channels.
    fn require_zero(&mut self, layout: &Layout, index: usize) {
        let describe = self.view.describe(index);
        for seg in layout {
            if let Seg::Src {
                src,
                nonzero: Some(r),
                ..
            } = *seg
            {
                let reason = format!("{}, and {describe} reads it", self.nonzero[r]);
                self.facts.push((
                    src,
                    Fact::Lock(Lock {
                        node: Some(index),
                        reason,
                    }),
                ));
            }
        }
    }

    fn binary(&mut self, index: usize, arith: Arith) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let out = node.output[0].clone();
        let [a, b] = node.input.as_slice() else {
            return self.lock_inputs(
                index,
                &format!("read by {describe} with {} inputs", node.input.len()),
            );
        };
        match (self.layout(a).cloned(), self.layout(b).cloned()) {
            (Some(la), Some(lb)) => {
                if total(&la) != total(&lb)
                    || self.rank(a) != self.rank(b)
                    || self.rank(a).is_none()
                {
                    return self.lock_inputs(
                        index,
                        &format!("combined by {describe} with channels of another shape"),
                    );
                }
                let layout = self.tie(index, &la, &lb, arith);
                self.set(&out, layout);
            }
            (Some(layout), None) => self.with_operand(index, a, &layout, b, arith),
            (None, Some(layout)) => self.with_operand(index, b, &layout, a, arith),
            (None, None) => {}
        }
    }

    /// Ties channel `k` of `a` to channel `k` of `b` (equal totals), piece by piece between the
    /// segment boundaries of both; returns the output's layout (`a`'s channels, non-zero where
    /// `arith` makes them so).
    fn tie(&mut self, index: usize, a: &Layout, b: &Layout, arith: Arith) -> Layout {
        let describe = self.view.describe(index);
        let mut bounds: Vec<usize> = [a, b]
            .iter()
            .flat_map(|l| {
                l.iter().scan(0, |at, seg| {
                    *at += seg.len();
                    Some(*at)
                })
            })
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut out = Layout::new();
        let mut from = 0;
        for to in bounds {
            let (pa, pb) = (cut(a, from, to), cut(b, from, to));
            from = to;
            match (pa.first().copied(), pb.first().copied()) {
                (
                    Some(Seg::Src {
                        src: x,
                        start: sx,
                        len,
                        nonzero: zx,
                    }),
                    Some(Seg::Src {
                        src: y,
                        start: sy,
                        nonzero: zy,
                        ..
                    }),
                ) if sx == sy && self.sources[x].channels == self.sources[y].channels => {
                    self.union(x, y);
                    let piece = vec![Seg::Src {
                        src: x,
                        start: sx,
                        len,
                        nonzero: None,
                    }];
                    out.extend(match (zx, zy) {
                        (None, None) => self.after(index, piece, Some((arith.apply)(0.0, 0.0))),
                        (Some(_), None) | (None, Some(_)) if arith.absorbs => piece,
                        (Some(r), _) | (None, Some(r)) => self.after_reason(piece, r),
                    });
                    continue;
                }
                (Some(Seg::Opaque(_)), Some(Seg::Opaque(_))) | (None, None) => {}
                (Some(Seg::Src { .. }), Some(Seg::Src { .. })) => {
                    let reason = format!(
                        "{describe} combines channels of two Convs that do not line up 1:1"
                    );
                    self.lock_layout(&pa, Some(index), &reason);
                    self.lock_layout(&pb, Some(index), &reason);
                }
                _ => {
                    let reason = format!("{describe} combines them with channels no Conv produces");
                    self.lock_layout(&pa, Some(index), &reason);
                    self.lock_layout(&pb, Some(index), &reason);
                }
            }
            out.extend(pa);
        }
        out
    }

    /// `layout` with every source segment non-zero for reason `r`.
    fn after_reason(&self, layout: Layout, r: usize) -> Layout {
        layout
            .into_iter()
            .map(|seg| match seg {
                Seg::Src {
                    src, start, len, ..
                } => Seg::Src {
                    src,
                    start,
                    len,
                    nonzero: Some(r),
                },
                other => other,
            })
            .collect()
    }

    /// A binary op of channel tensor `x` (with `layout`) and a non-channel operand `other`.
    fn with_operand(&mut self, index: usize, x: &str, layout: &Layout, other: &str, arith: Arith) {
        let describe = self.view.describe(index);
        let node = self.view.node(index);
        let out = node.output[0].clone();
        let x_first = node.input[0] == x;
        let (Some(rank), Some(shape)) = (self.rank(x), self.shapes.get(other)) else {
            return self.lock_inputs(
                index,
                &format!("read by {describe} with an operand of unknown shape"),
            );
        };
        if shape.len() > rank || rank < 2 {
            return self.lock_inputs(
                index,
                &format!("read by {describe} with an operand whose axes it cannot align"),
            );
        }
        // What a zero channel becomes with the operand's values, when they can be read.
        let at_zero = |values: Option<Vec<f64>>| -> Option<f64> {
            let results = values?.into_iter().map(|c| match x_first {
                true => (arith.apply)(0.0, c),
                false => (arith.apply)(c, 0.0),
            });
            let mut worst = 0.0;
            for v in results {
                if !v.is_finite() {
                    return Some(v);
                }
                if worst == 0.0 {
                    worst = v;
                }
            }
            Some(worst)
        };
        let axis = (1 + shape.len()).checked_sub(rank);
        match axis.map(|a| (a, shape[a])) {
            None | Some((_, 1)) => {
                let layout = match arith.absorbs {
                    true => layout.clone(),
                    false => {
                        let value = at_zero(self.values(other));
                        self.after(index, layout.clone(), value)
                    }
                };
                self.set(&out, layout)
            }
            Some((axis, n)) if n as usize == total(layout) => {
                if self.view.initializer(other).is_none() {
                    return self.lock_inputs(
                        index,
                        &format!(
                            "read by {describe} with per-channel operand {other:?}, which is \
                             computed, not stored"
                        ),
                    );
                }
                for (src, span) in spans(layout) {
                    self.facts.push((
                        src,
                        Fact::Edit(Edit::Param {
                            node: index,
                            tensor: other.to_string(),
                            axis,
                            span,
                        }),
                    ));
                }
                // A masked operand is zero at a removed channel; another keeps its values.
                let layout = match (arith.absorbs, arith.masked) {
                    (true, _) => layout.clone(),
                    (false, true) => self.after(index, layout.clone(), at_zero(Some(vec![0.0]))),
                    (false, false) => {
                        let value = at_zero(self.values(other));
                        self.after(index, layout.clone(), value)
                    }
                };
                self.set(&out, layout);
            }
            Some(_) => self.lock_inputs(
                index,
                &format!("read by {describe} with an operand that does not broadcast"),
            ),
        }
    }

    /// A [`ChannelRule::Affine`] op (BatchNormalization): stored per-channel vectors at input
    /// slots `params`. The masked model zeros a removed channel's scale and bias, which makes it
    /// zero whatever reached the node.
    fn affine(&mut self, index: usize, params: &[usize]) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let layout = self.layout(&node.input[0]).cloned();
        let channels = layout.as_ref().map(total);
        let params: Option<Vec<&String>> = params.iter().map(|&i| node.input.get(i)).collect();
        let stored = params.as_ref().is_some_and(|params| {
            params.iter().all(|p| {
                self.view
                    .initializer(p)
                    .is_some_and(|t| t.dims.len() == 1 && Some(t.dims[0] as usize) == channels)
            })
        });
        let extra_outputs = node.output.iter().skip(1).any(|o| !o.is_empty());
        let (Some(layout), Some(params)) = (layout.filter(|_| stored && !extra_outputs), params)
        else {
            return self.lock_inputs(
                index,
                &format!("read by {describe}, whose parameters are not stored vectors"),
            );
        };
        for (src, span) in spans(&layout) {
            for p in &params {
                self.facts.push((
                    src,
                    Fact::Edit(Edit::Param {
                        node: index,
                        tensor: p.to_string(),
                        axis: 0,
                        span,
                    }),
                ));
            }
        }
        self.set(&node.output[0].clone(), zeroed(layout));
    }

    /// The node's `axis` attribute, made non-negative with the rank of `tensor`.
    fn axis(&self, index: usize, tensor: &str, default: i64) -> Option<usize> {
        let axis = attr_int(self.view.node(index), "axis").unwrap_or(default);
        if axis >= 0 {
            return Some(axis as usize);
        }
        let rank = self.rank(tensor)? as i64;
        usize::try_from(axis + rank).ok()
    }

    fn concat(&mut self, index: usize) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let axis = self.axis(index, &node.input[0], 0);
        if axis != Some(1) {
            return self.lock_inputs(
                index,
                &format!("concatenated by {describe} on an axis other than the channels"),
            );
        }
        let mut layout = Vec::new();
        for input in &node.input {
            if let Some(l) = self.layout(input) {
                layout.extend(l.iter().copied());
            } else if let Some(c) = self
                .shapes
                .get(input)
                .and_then(|s| usize::try_from(*s.get(1)?).ok())
            {
                layout.push(Seg::Opaque(c));
            } else {
                return self.lock_inputs(
                    index,
                    &format!("concatenated by {describe} with {input:?}, of unknown shape"),
                );
            }
        }
        self.set(&node.output[0].clone(), layout);
    }

    /// Integer values of input `i` of `index` or of INTS attribute `attr`.
    fn ints(&self, index: usize, attr: &str, i: usize) -> Option<Vec<i64>> {
        let node = self.view.node(index);
        if let Some(v) = attr_ints(node, attr) {
            return Some(v.to_vec());
        }
        let name = node.input.get(i).filter(|n| !n.is_empty())?;
        let v = self.shapes.value(name)?;
        Some(v.iter().map(|&x| x as i64).collect())
    }

    fn split(&mut self, index: usize) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let input = &node.input[0];
        let Some(layout) = self.layout(input).cloned() else {
            return self.lock_inputs(index, &format!("used as split sizes by {describe}"));
        };
        let Some(axis) = self.axis(index, input, 0) else {
            return self.lock_inputs(index, &format!("split by {describe} on an unknown axis"));
        };
        if axis != 1 {
            for out in node.output.clone() {
                self.set(&out, layout.clone());
            }
            return;
        }
        let channels = total(&layout);
        let n = node.output.len();
        let sizes = match self.ints(index, "split", 1) {
            Some(v) => v.into_iter().map(|x| usize::try_from(x).ok()).collect(),
            None if node.input.get(1).is_none_or(|s| s.is_empty()) && n > 0 => {
                let chunk = channels.div_ceil(n);
                Some(
                    (0..n)
                        .map(|i| chunk.min(channels.saturating_sub(i * chunk)))
                        .collect(),
                )
            }
            None => None,
        };
        let Some(sizes) = sizes.filter(|s: &Vec<usize>| {
            s.len() == n && s.iter().try_fold(0usize, |a, &b| a.checked_add(b)) == Some(channels)
        }) else {
            return self.lock_inputs(
                index,
                &format!("split by {describe} on the channel axis with sizes it cannot read"),
            );
        };
        for (src, span) in spans(&layout) {
            self.facts
                .push((src, Fact::Edit(Edit::SplitSizes { node: index, span })));
        }
        let mut at = 0;
        for (out, size) in node.output.clone().iter().zip(sizes) {
            self.set(out, cut(&layout, at, at + size));
            at += size;
        }
    }

    fn slice(&mut self, index: usize) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let input = &node.input[0];
        let Some(layout) = self.layout(input).cloned() else {
            return self.lock_inputs(index, &format!("used as slice bounds by {describe}"));
        };
        if node
            .input
            .iter()
            .skip(1)
            .any(|n| self.layouts.contains_key(n))
        {
            return self.lock_inputs(index, &format!("used as slice bounds by {describe}"));
        }
        let (starts, ends) = (self.ints(index, "starts", 1), self.ints(index, "ends", 2));
        let rank = self.rank(input);
        let (Some(starts), Some(ends), Some(rank)) = (starts, ends, rank) else {
            return self.lock_inputs(
                index,
                &format!("sliced by {describe} with bounds it cannot read"),
            );
        };
        let axes = self
            .ints(index, "axes", 3)
            .unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = self
            .ints(index, "steps", 4)
            .unwrap_or_else(|| vec![1; starts.len()]);
        let on_channels = axes
            .iter()
            .position(|&a| a.rem_euclid(rank.max(1) as i64) == 1);
        let out = node.output[0].clone();
        let Some(k) = on_channels else {
            return self.set(&out, layout);
        };
        let channels = total(&layout) as i64;
        let (Some(&start), Some(&end), Some(1)) =
            (starts.get(k), ends.get(k), steps.get(k).copied())
        else {
            return self.lock_inputs(
                index,
                &format!("sliced by {describe} on the channel axis with a step other than 1"),
            );
        };
        let (b, e) = ops::slice_range(start, end, channels);
        for (src, span) in spans(&layout) {
            self.facts
                .push((src, Fact::Edit(Edit::SliceBounds { node: index, span })));
        }
        self.set(&out, cut(&layout, b, e));
    }

    fn resize(&mut self, index: usize, at_zero: AtZero) {
        let node = self.view.node(index);
        let describe = self.view.describe(index);
        let data = &node.input[0];
        let Some(layout) = self.layout(data).cloned() else {
            return self.lock_inputs(index, &format!("used as resize parameters by {describe}"));
        };
        if node
            .input
            .iter()
            .skip(1)
            .any(|n| self.layouts.contains_key(n))
        {
            return self.lock_inputs(index, &format!("used as resize parameters by {describe}"));
        }
        let layout = self.after(index, layout, at_zero.eval(node, &|_| None));
        let out = node.output[0].clone();
        if let Some(axes) = attr_ints(node, "axes") {
            let rank = self.rank(data).unwrap_or(0).max(1) as i64;
            if axes.iter().all(|&a| a.rem_euclid(rank) >= 2) {
                return self.set(&out, layout);
            }
            return self.lock_inputs(
                index,
                &format!("resized by {describe}, whose axes include N or C"),
            );
        }
        let given = |i: usize| {
            node.input
                .get(i)
                .filter(|n| !n.is_empty())
                .filter(|n| self.shapes.get(n).is_none_or(|s| s != [0]))
                .map(String::as_str)
        };
        let (scales, sizes) = if node.input.len() == 2 {
            (given(1), None)
        } else {
            (given(2), given(3))
        };
        let shape = self.shapes.get(data);
        let leading = |v: &[f64]| v.get(..2).map(<[f64]>::to_vec);
        match (scales, sizes) {
            (Some(scales), None) => match self.shapes.value(scales).and_then(leading) {
                Some(v) if v == [1.0, 1.0] => self.set(&out, layout),
                _ => self.lock_inputs(
                    index,
                    &format!("resized by {describe} with scales that are not 1 on N and C"),
                ),
            },
            (None, Some(sizes)) => {
                let nc = shape
                    .and_then(|s| s.get(..2))
                    .map(|s| [s[0] as f64, s[1] as f64]);
                let value = self.shapes.value(sizes).and_then(leading);
                let keeps_nc = nc.is_some() && value.as_deref() == nc.as_ref().map(|v| &v[..]);
                if self.runtime_nc_of(sizes) == Some(data.as_str()) {
                    self.set(&out, layout);
                } else if keeps_nc && self.is_stored(sizes) {
                    for (src, _) in spans(&layout) {
                        self.facts.push((
                            src,
                            Fact::Edit(Edit::ResizeSizes {
                                node: index,
                                tensor: sizes.to_string(),
                            }),
                        ));
                    }
                    self.set(&out, layout);
                } else {
                    self.lock_inputs(
                        index,
                        &format!(
                            "resized by {describe} with sizes that are not its input's N and C"
                        ),
                    );
                }
            }
            _ => self.lock_inputs(
                index,
                &format!("resized by {describe} with scales or sizes it cannot read"),
            ),
        }
    }

    /// Whether `tensor` is an initializer or the output of a `Constant` node.
    fn is_stored(&self, tensor: &str) -> bool {
        self.view.initializer(tensor).is_some()
            || self
                .view
                .producer(tensor)
                .is_some_and(|p| self.view.node(p).op_type() == "Constant")
    }

    /// If `sizes` is `Concat(Slice(Shape(x), 0, 2), ...)` on axis 0 - the run-time N and C of
    /// `x` followed by other sizes - returns `x`.
    fn runtime_nc_of(&self, sizes: &str) -> Option<&str> {
        let view = self.view;
        let concat = self.view.producer(sizes)?;
        let node = view.node(concat);
        if node.op_type() != "Concat" || attr_int(node, "axis") != Some(0) {
            return None;
        }
        let slice = view.producer(node.input.first()?)?;
        let s = view.node(slice);
        let bounds = (
            self.ints(slice, "starts", 1),
            self.ints(slice, "ends", 2),
            self.ints(slice, "axes", 3).unwrap_or_else(|| vec![0]),
            self.ints(slice, "steps", 4).unwrap_or_else(|| vec![1]),
        );
        if s.op_type() != "Slice" || bounds != (Some(vec![0]), Some(vec![2]), vec![0], vec![1]) {
            return None;
        }
        let shape = view.node(view.producer(s.input.first()?)?);
        let whole = attr_int(shape, "start").is_none() && attr_int(shape, "end").is_none();
        (shape.op_type() == "Shape" && whole)
            .then(|| shape.input.first().map(String::as_str))
            .flatten()
    }

    /// `Ok` when every use of Shape node `index`'s output is a [`Self::runtime_nc_of`] pattern
    /// feeding the `sizes` of a Resize of the measured tensor; else the first node that is not.
    fn shape_feeds_own_resize(&self, index: usize) -> Result<(), usize> {
        let view = self.view;
        let x = &view.node(index).input[0];
        let Some(out) = view.node(index).output.first() else {
            return Ok(());
        };
        for &slice in view.consumers(out) {
            let s = view.node(slice);
            let Some(sliced) = s.output.first().filter(|_| s.op_type() == "Slice") else {
                return Err(slice);
            };
            for &concat in view.consumers(sliced) {
                let node = view.node(concat);
                let only_first = node.input.iter().position(|n| n == sliced) == Some(0)
                    && node.input.iter().filter(|n| *n == sliced).count() == 1;
                let Some(sizes) = node.output.first().filter(|_| only_first) else {
                    return Err(concat);
                };
                if self.runtime_nc_of(sizes) != Some(x.as_str()) {
                    return Err(concat);
                }
                for &resize in view.consumers(sizes) {
                    let r = view.node(resize);
                    let ok = r.op_type() == "Resize"
                        && r.input.first() == Some(x)
                        && r.input.iter().position(|n| n == sizes) == Some(3);
                    if !ok {
                        return Err(resize);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> ChannelAnalysis {
        let roots: Vec<usize> = (0..self.sources.len()).map(|s| self.find(s)).collect();
        let mut group_of = HashMap::new();
        let mut groups: Vec<ChannelGroup> = Vec::new();
        for (src, &root) in roots.iter().enumerate() {
            let id = *group_of.entry(root).or_insert_with(|| {
                groups.push(ChannelGroup {
                    id: groups.len(),
                    channels: self.sources[root].channels,
                    producers: Vec::new(),
                    producer_names: Vec::new(),
                    consumers: Vec::new(),
                    tensors: Vec::new(),
                    edits: Vec::new(),
                    status: GroupStatus::Prunable,
                });
                groups.len() - 1
            });
            let node = self.sources[src].node;
            groups[id].producers.push(node);
            groups[id].producer_names.push(self.name(node));
        }
        for (src, fact) in std::mem::take(&mut self.facts) {
            let group = &mut groups[group_of[&roots[src]]];
            match fact {
                Fact::Consumer(c) => push_new(&mut group.consumers, c),
                Fact::Tensor(t) => push_new(&mut group.tensors, t),
                Fact::Edit(e) => push_new(&mut group.edits, e),
                Fact::Lock(lock) => match &mut group.status {
                    GroupStatus::Locked { reasons } => push_new(reasons, lock),
                    status => {
                        *status = GroupStatus::Locked {
                            reasons: vec![lock],
                        }
                    }
                },
            }
        }
        for group in &mut groups {
            group.consumers.sort_by_key(|c| (c.node, c.span.offset));
        }
        ChannelAnalysis { groups }
    }
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    //! Ops the YOLOv5 exports do not use, on small hand-built graphs.

    use super::*;
    use crate::onnx::build::{int_attr, node};
    use crate::onnx::proto::{NodeProto, TensorProto, ValueInfoProto};
    use crate::onnx::tensor::{from_f32, from_i64, value_info_f32};

    fn info(name: &str, shape: &[i64]) -> ValueInfoProto {
        value_info_f32(name, shape)
    }

    fn with_int(mut n: NodeProto, name: &str, v: i64) -> NodeProto {
        n.attribute.push(int_attr(name, v));
        n
    }

    /// Small graphs: input `x` [1, 4, 8, 8], Convs with stored weights and biases.
    struct Graph {
        g: GraphProto,
    }

    impl Graph {
        fn new() -> Self {
            Graph {
                g: GraphProto {
                    input: vec![info("x", &[1, 4, 8, 8])],
                    ..Default::default()
                },
            }
        }

        fn conv(&mut self, name: &str, input: &str, out: i64, per_group: i64, group: i64) {
            let (w, b) = (format!("{name}.w"), format!("{name}.b"));
            let n = (out * per_group) as usize;
            self.g
                .initializer
                .push(from_f32(&w, &[out, per_group, 1, 1], &vec![1.0; n]));
            self.g
                .initializer
                .push(from_f32(&b, &[out], &vec![0.0; out as usize]));
            let conv = node("Conv", name, &[input, &w, &b], &[name]);
            self.g.node.push(with_int(conv, "group", group));
        }

        fn op(&mut self, n: NodeProto) {
            self.g.node.push(n);
        }

        fn init(&mut self, t: TensorProto) {
            self.g.initializer.push(t);
        }

        fn run(&self) -> ChannelAnalysis {
            channel_groups(&self.g).unwrap()
        }
    }

    fn group<'a>(a: &'a ChannelAnalysis, producer: &str) -> &'a ChannelGroup {
        a.groups
            .iter()
            .find(|g| g.producer_names.iter().any(|p| p == producer))
            .unwrap()
    }

    fn span(offset: usize, start: usize, len: usize) -> Span {
        Span { offset, start, len }
    }

    fn uses(g: &ChannelGroup) -> Vec<(&str, UseKind, Span)> {
        g.consumers
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.span))
            .collect()
    }

    fn reasons(g: &ChannelGroup) -> String {
        match &g.status {
            GroupStatus::Prunable => String::new(),
            GroupStatus::Locked { reasons } => {
                let r: Vec<&str> = reasons.iter().map(|r| r.reason.as_str()).collect();
                r.join("; ")
            }
        }
    }

    #[test]
    fn split_on_channels_gives_sub_ranges_and_an_edit() {
        let mut g = Graph::new();
        g.conv("a", "x", 8, 4, 1);
        g.init(from_i64("sizes", &[2], &[3, 5]));
        g.op(with_int(
            node("Split", "split", &["a", "sizes"], &["s0", "s1"]),
            "axis",
            1,
        ));
        g.conv("c0", "s0", 2, 3, 1);
        g.conv("c1", "s1", 2, 5, 1);
        let a = g.run();
        let ga = group(&a, "a");
        assert!(ga.is_prunable(), "{}", reasons(ga));
        assert_eq!(
            uses(ga),
            [
                ("c0", UseKind::Input, span(0, 0, 3)),
                ("c1", UseKind::Input, span(0, 3, 5)),
            ]
        );
        assert_eq!(
            ga.edits,
            [Edit::SplitSizes {
                node: 1,
                span: span(0, 0, 8)
            }]
        );
    }

    #[test]
    fn slice_on_channels_keeps_its_range() {
        let mut g = Graph::new();
        g.conv("a", "x", 8, 4, 1);
        for (name, v) in [("starts", 2), ("ends", 6), ("axes", 1)] {
            g.init(from_i64(name, &[1], &[v]));
        }
        g.op(node(
            "Slice",
            "slice",
            &["a", "starts", "ends", "axes"],
            &["s"],
        ));
        g.conv("c", "s", 2, 4, 1);
        let a = g.run();
        let ga = group(&a, "a");
        assert_eq!(uses(ga), [("c", UseKind::Input, span(0, 2, 4))]);
        assert!(matches!(ga.edits[..], [Edit::SliceBounds { node: 1, .. }]));
        assert_eq!(span(0, 2, 4).position(3), Some(1));
        assert_eq!(span(0, 2, 4).position(6), None);
    }

    #[test]
    fn batch_norm_and_per_channel_operands_are_recorded_scalars_pass() {
        let mut g = Graph::new();
        g.conv("a", "x", 8, 4, 1);
        let params = ["scale", "bias", "mean", "var"];
        for p in params {
            g.init(from_f32(p, &[8], &[1.0; 8]));
        }
        g.op(node(
            "BatchNormalization",
            "bn",
            &["a", "scale", "bias", "mean", "var"],
            &["n"],
        ));
        g.init(from_f32("gain", &[1, 8, 1, 1], &[2.0; 8]));
        g.op(node("Mul", "mul", &["n", "gain"], &["m"]));
        g.init(from_f32("two", &[], &[2.0]));
        g.op(node("Mul", "scale", &["m", "two"], &["p"]));
        g.conv("c", "p", 2, 8, 1);
        let a = g.run();
        let ga = group(&a, "a");
        assert!(ga.is_prunable(), "{}", reasons(ga));
        let sliced: Vec<(&str, usize)> = ga
            .edits
            .iter()
            .map(|e| match e {
                Edit::Param { tensor, axis, .. } => (tensor.as_str(), *axis),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sliced,
            [
                ("scale", 0),
                ("bias", 0),
                ("mean", 0),
                ("var", 0),
                ("gain", 1)
            ]
        );
        assert_eq!(uses(ga), [("c", UseKind::Input, span(0, 0, 8))]);
    }

    #[test]
    fn depthwise_conv_passes_channels_through() {
        let mut g = Graph::new();
        g.conv("a", "x", 8, 4, 1);
        g.conv("dw", "a", 8, 1, 8);
        g.conv("c", "dw", 2, 8, 1);
        let a = g.run();
        assert_eq!(a.groups.len(), 2, "dw is no producer of its own");
        let ga = group(&a, "a");
        assert_eq!(
            uses(ga),
            [
                ("dw", UseKind::Depthwise, span(0, 0, 8)),
                ("c", UseKind::Input, span(0, 0, 8)),
            ]
        );
        assert!(ga.tensors.iter().any(|t| t.name == "dw"));
    }

    #[test]
    fn concat_offsets_and_misaligned_add_locks() {
        let mut g = Graph::new();
        g.conv("a", "x", 4, 4, 1);
        g.conv("b", "x", 4, 4, 1);
        g.conv("c", "x", 8, 4, 1);
        g.op(with_int(
            node("Concat", "cat", &["a", "b"], &["ab"]),
            "axis",
            1,
        ));
        g.op(node("Add", "add", &["ab", "c"], &["sum"]));
        g.conv("d", "sum", 2, 8, 1);
        let a = g.run();
        for p in ["a", "b", "c"] {
            let gr = group(&a, p);
            assert!(
                reasons(gr).contains("do not line up 1:1"),
                "{p}: {}",
                reasons(gr)
            );
        }
        assert_eq!(
            group(&a, "b")
                .tensors
                .iter()
                .find(|t| t.name == "ab")
                .unwrap()
                .span,
            span(4, 0, 4)
        );
    }

    #[test]
    fn outputs_unknown_ops_and_grouped_convs_lock() {
        let mut g = Graph::new();
        g.conv("a", "x", 8, 4, 1);
        g.op(node("LRN", "lrn", &["a"], &["la"]));
        g.conv("e", "x", 8, 4, 1);
        g.op(node("Transpose", "t", &["e"], &["te"]));
        g.conv("b", "x", 8, 4, 1);
        g.g.output.push(info("b", &[1, 8, 8, 8]));
        g.conv("c", "x", 8, 4, 1);
        g.conv("gc", "c", 4, 4, 2);
        g.conv("d", "x", 4, 4, 1);
        let a = g.run();
        assert!(reasons(group(&a, "a")).contains("does not understand"));
        assert!(reasons(group(&a, "e")).contains("moves the channel axis"));
        assert!(reasons(group(&a, "b")).contains("graph output \"b\""));
        assert!(reasons(group(&a, "c")).contains("grouped Conv (group 2)"));
        assert!(reasons(group(&a, "gc")).contains("grouped Conv (group 2)"));
        assert!(group(&a, "d").is_prunable());
    }

    #[test]
    fn a_removed_channel_must_reach_a_conv_as_zero() {
        let mut g = Graph::new();
        // Add 1 makes a removed channel 1: locked at the Conv reading it.
        g.conv("a", "x", 8, 4, 1);
        g.init(from_f32("one", &[], &[1.0]));
        g.op(node("Add", "add", &["a", "one"], &["pa"]));
        g.conv("ca", "pa", 2, 8, 1);
        // Sigmoid then a depthwise Conv: the masked depthwise weights make it zero again.
        g.conv("b", "x", 8, 4, 1);
        g.op(node("Sigmoid", "sig", &["b"], &["sb"]));
        g.conv("dw", "sb", 8, 1, 8);
        g.conv("cb", "dw", 2, 8, 1);
        // Sigmoid then BatchNormalization: its masked scale and bias make it zero again.
        g.conv("d", "x", 8, 4, 1);
        g.op(node("Sigmoid", "sig_d", &["d"], &["sd"]));
        for p in ["s", "b", "m", "v"] {
            g.init(from_f32(&format!("bn.{p}"), &[8], &[1.0; 8]));
        }
        g.op(node(
            "BatchNormalization",
            "bn",
            &["sd", "bn.s", "bn.b", "bn.m", "bn.v"],
            &["nd"],
        ));
        g.conv("cd", "nd", 2, 8, 1);
        // Log(0) = -inf: locked where it happens, whatever follows.
        g.conv("e", "x", 8, 4, 1);
        g.op(node("Log", "log", &["e"], &["le"]));
        g.op(node("Mul", "mul", &["le", "e"], &["me"]));
        g.conv("ce", "me", 2, 8, 1);
        let a = g.run();
        assert_eq!(
            reasons(group(&a, "a")),
            "#1 \"add\" Add maps a removed channel to 1, not 0, and #2 \"ca\" Conv reads it"
        );
        assert!(group(&a, "b").is_prunable(), "{}", reasons(group(&a, "b")));
        assert!(group(&a, "d").is_prunable(), "{}", reasons(group(&a, "d")));
        assert_eq!(
            reasons(group(&a, "e")),
            "#12 \"log\" Log maps a removed channel to -inf, not 0"
        );
    }

    #[test]
    fn nodes_out_of_order_are_an_error() {
        let mut g = Graph::new();
        g.op(node("Relu", "r", &["a"], &["ra"]));
        g.conv("a", "x", 8, 4, 1);
        let err = channel_groups(&g.g).unwrap_err().to_string();
        assert!(err.contains("topological"), "{err}");
    }
}
