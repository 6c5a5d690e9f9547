//! The shape constants channel surgery rewrites, one function per op rule: Split sizes
//! ([`split_sizes`]), Slice bounds on the channel axis ([`slice_bounds`]) and stored Resize sizes
//! ([`resize_sizes`]). Each new value goes where the node keeps it: its attribute, or a new
//! initializer read by that node alone.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result, bail, ensure};

use crate::graph::{GraphView, Shapes, attr_ints, edit, infer_shapes};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::tensor;
use crate::ops::{self, ChannelRule, ShapeRule};

/// Recounts Split sizes, remaps Slice bounds and lowers stored Resize sizes of `nodes`, whose
/// data input loses the channel positions `in_tensor` lists for it. The names of initializers
/// that lost a reader are added to `replaced`.
pub(super) fn rewrite_shape_constants(
    graph: &mut GraphProto,
    nodes: &BTreeSet<usize>,
    in_tensor: &HashMap<String, BTreeSet<usize>>,
    replaced: &mut Vec<String>,
) -> Result<()> {
    // Constants are read on the graph as it stands: the rewrites below touch only these nodes'
    // own integer inputs, which no channel edit changed.
    let updates: Vec<(usize, Update)> = {
        let view = GraphView::new(graph);
        let shapes = infer_shapes(&view);
        let mut out = Vec::new();
        for &index in nodes {
            let site = Site::new(&view, &shapes, index, in_tensor)?;
            let updates = match ops::of(site.node).map(|op| (op.channels, op.shape)) {
                Some((ChannelRule::Split, _)) => split_sizes(&site)?,
                Some((ChannelRule::Slice, _)) => slice_bounds(&site)?,
                Some((
                    ChannelRule::Resize(_),
                    ShapeRule::Resize {
                        sizes: Some(slot), ..
                    },
                )) => resize_sizes(&site, slot)?,
                _ => bail!("{}: unexpected shape rewrite", site.describe()),
            };
            out.extend(updates.into_iter().map(|u| (index, u)));
        }
        out
    };
    for (index, update) in updates {
        match update {
            Update::Attr(name, values) => edit::set_attr_ints(graph, index, name, values)?,
            Update::Input(slot, values) => {
                let old = &graph.node[index].input[slot];
                let t = int_tensor(&values, int_type_of(graph, old));
                replaced.push(edit::put_fresh_for_node(graph, index, slot, t));
            }
        }
    }
    Ok(())
}

/// A new value of a node's integer constant.
enum Update {
    /// The node's attribute of this name.
    Attr(&'static str, Vec<i64>),
    /// The node's input at this slot.
    Input(usize, Vec<i64>),
}

/// A node whose constants are rewritten, read on the graph before the rewrite.
struct Site<'a> {
    view: &'a GraphView<'a>,
    shapes: &'a Shapes,
    index: usize,
    node: &'a NodeProto,
    /// The channel positions its data input loses.
    gone: BTreeSet<usize>,
    /// The channel count of its data input before surgery.
    channels: usize,
}

impl<'a> Site<'a> {
    fn new(
        view: &'a GraphView<'a>,
        shapes: &'a Shapes,
        index: usize,
        in_tensor: &HashMap<String, BTreeSet<usize>>,
    ) -> Result<Self> {
        let node = view.node(index);
        let data = &node.input[0];
        let channels = shapes
            .get(data)
            .and_then(|s| s.get(1).copied())
            .with_context(|| format!("{}: unknown channel count", view.describe(index)))?
            as usize;
        Ok(Site {
            view,
            shapes,
            index,
            node,
            gone: in_tensor.get(data).cloned().unwrap_or_default(),
            channels,
        })
    }

    fn describe(&self) -> String {
        self.view.describe(self.index)
    }

    /// The integers the node keeps in attribute `attr`, else in its input `slot`.
    fn ints(&self, attr: &str, slot: usize) -> Option<Vec<i64>> {
        if let Some(v) = attr_ints(self.node, attr) {
            return Some(v.to_vec());
        }
        let name = self.node.input.get(slot).filter(|n| !n.is_empty())?;
        Some(self.shapes.value(name)?.iter().map(|&x| x as i64).collect())
    }

    /// How many removed channels lie below position `p`.
    fn below(&self, p: usize) -> usize {
        self.gone.iter().filter(|&&g| g < p).count()
    }
}

/// Split: each output's size loses the removed channels it held (sizes absent: the even parts
/// must stay even).
fn split_sizes(site: &Site) -> Result<Vec<Update>> {
    let n = site.node.output.len();
    let sizes = match site.ints("split", 1) {
        Some(v) => v,
        None => {
            let chunk = site.channels.div_ceil(n.max(1));
            (0..n)
                .map(|i| chunk.min(site.channels.saturating_sub(i * chunk)) as i64)
                .collect()
        }
    };
    let mut at = 0usize;
    let new: Vec<i64> = sizes
        .iter()
        .map(|&s| {
            let end = at + s as usize;
            let lost = site.gone.iter().filter(|&&g| g >= at && g < end).count();
            at = end;
            s - lost as i64
        })
        .collect();
    if attr_ints(site.node, "split").is_some() {
        Ok(vec![Update::Attr("split", new)])
    } else if site.node.input.get(1).is_some_and(|s| !s.is_empty()) {
        Ok(vec![Update::Input(1, new)])
    } else if new.windows(2).any(|w| w[0] != w[1]) {
        bail!(
            "{}: splits evenly without sizes, and the removed channels make the parts uneven; \
             exclude the groups it splits",
            site.describe()
        );
    } else {
        Ok(Vec::new())
    }
}

/// Slice: the channel-axis bounds move down by the removed channels below them.
fn slice_bounds(site: &Site) -> Result<Vec<Update>> {
    let data = &site.node.input[0];
    let rank = site.shapes.get(data).map_or(4, <[i64]>::len).max(1) as i64;
    let (Some(mut starts), Some(mut ends)) = (site.ints("starts", 1), site.ints("ends", 2)) else {
        bail!("{}: slice bounds not readable", site.describe());
    };
    let axes = site
        .ints("axes", 3)
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let k = axes
        .iter()
        .position(|&a| a.rem_euclid(rank) == 1)
        .context("no channel axis")?;
    let (b, e) = ops::slice_range(starts[k], ends[k], site.channels as i64);
    starts[k] = (b - site.below(b)) as i64;
    ends[k] = (e - site.below(e)) as i64;
    Ok(if attr_ints(site.node, "starts").is_some() {
        vec![Update::Attr("starts", starts), Update::Attr("ends", ends)]
    } else {
        vec![Update::Input(1, starts), Update::Input(2, ends)]
    })
}

/// Resize with stored sizes: the channel size loses the removed channels.
fn resize_sizes(site: &Site, slot: usize) -> Result<Vec<Update>> {
    let mut sizes: Vec<i64> = site
        .node
        .input
        .get(slot)
        .and_then(|n| site.shapes.value(n))
        .map(|v| v.iter().map(|&x| x as i64).collect())
        .with_context(|| format!("{}: stored sizes not readable", site.describe()))?;
    ensure!(sizes.len() > 1, "{}: sizes too short", site.describe());
    sizes[1] -= site.gone.len() as i64;
    Ok(vec![Update::Input(slot, sizes)])
}

/// A 1-D integer tensor of `values` in element type `dtype` (INT32 or INT64).
fn int_tensor(values: &[i64], dtype: i32) -> TensorProto {
    let mut t = tensor::from_i64("", &[values.len() as i64], values);
    if dtype == DataType::Int32 as i32 {
        let raw: Vec<u8> = values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect();
        t.data_type = Some(dtype);
        t.raw_data = Some(raw.into());
    }
    t
}

/// The element type of integer constant `name` (an initializer or a `Constant` output); INT64
/// when unknown.
fn int_type_of(graph: &GraphProto, name: &str) -> i32 {
    if let Some(t) = graph.initializer.iter().find(|t| t.name() == name) {
        return t.data_type();
    }
    graph
        .node
        .iter()
        .find(|n| n.op_type() == "Constant" && n.output.first().is_some_and(|o| o == name))
        .and_then(|n| n.attribute.iter().find_map(|a| a.t.as_ref()))
        .map_or(DataType::Int64 as i32, TensorProto::data_type)
}
