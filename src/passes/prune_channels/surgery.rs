//! Channel surgery: removes (or, for the mask, zeros) a plan's channels in every tensor that
//! carries them, then has the shape constants rewritten ([`super::rewrite`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};

use super::plan::{positions, removed_by_tensor};
use super::rewrite::rewrite_shape_constants;
use crate::analysis::{ChannelGroup, Edit, UseKind};
use crate::graph::edit;
use crate::onnx::proto::GraphProto;
use crate::onnx::tensor::{remove_along, zero_along};
use crate::ops;

/// Whether surgery removes channels or the mask zeros them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Remove,
    Zero,
}

/// Per (node, input slot): positions to remove or zero, by axis.
type TensorEdits = BTreeMap<(usize, usize), BTreeMap<usize, BTreeSet<usize>>>;

/// Removes (or zeros) the channels `removed` of the groups they belong to.
pub(super) fn surgery(
    graph: &mut GraphProto,
    groups: &[ChannelGroup],
    removed: &[(usize, Vec<usize>)],
    mode: Mode,
) -> Result<()> {
    let mut edits = TensorEdits::new();
    let mut depthwise = BTreeSet::new();
    let mut rewired = BTreeSet::new();
    let add = |edits: &mut TensorEdits, node: usize, slot: usize, axis: usize, pos: &[usize]| {
        edits
            .entry((node, slot))
            .or_default()
            .entry(axis)
            .or_default()
            .extend(pos.iter().copied());
    };
    for (g, r) in removed {
        let group = &groups[*g];
        for &p in &group.producers {
            add(&mut edits, p, 1, 0, r);
            if graph.node[p].input.get(2).is_some_and(|b| !b.is_empty()) {
                add(&mut edits, p, 2, 0, r);
            }
        }
        for c in &group.consumers {
            let pos: Vec<usize> = positions(&c.span, r).collect();
            match c.kind {
                UseKind::Input if mode == Mode::Remove => add(&mut edits, c.node, 1, 1, &pos),
                UseKind::Input => {}
                UseKind::Depthwise => {
                    add(&mut edits, c.node, 1, 0, &pos);
                    if graph.node[c.node]
                        .input
                        .get(2)
                        .is_some_and(|b| !b.is_empty())
                    {
                        add(&mut edits, c.node, 2, 0, &pos);
                    }
                    depthwise.insert(c.node);
                }
            }
        }
        for edit in &group.edits {
            match edit {
                Edit::Param {
                    node,
                    tensor,
                    axis,
                    span,
                } => {
                    let n = &graph.node[*node];
                    let pos: Vec<usize> = positions(span, r).collect();
                    let masks = |slot| ops::of(n).is_some_and(|op| op.mask_zeroes(slot));
                    for (slot, input) in n.input.iter().enumerate() {
                        if input == tensor && (mode == Mode::Remove || masks(slot)) {
                            add(&mut edits, *node, slot, *axis, &pos);
                        }
                    }
                }
                Edit::SplitSizes { node, .. }
                | Edit::SliceBounds { node, .. }
                | Edit::ResizeSizes { node, .. } => {
                    rewired.insert(*node);
                }
            }
        }
    }
    let mut replaced = Vec::new();
    for ((node, slot), axes) in &edits {
        let name = graph.node[*node].input[*slot].clone();
        let index = graph
            .initializer
            .iter()
            .position(|t| t.name() == name)
            .with_context(|| {
                format!(
                    "node {:?}: input {name:?} is not a dense initializer (densify sparse \
                     weights before pruning channels)",
                    graph.node[*node].name()
                )
            })?;
        let mut t = graph.initializer[index].clone();
        for (&axis, pos) in axes {
            t = match mode {
                Mode::Remove => remove_along(&t, axis, pos),
                Mode::Zero => zero_along(&t, axis, pos),
            }
            .with_context(|| format!("node {:?}: tensor {name:?}", graph.node[*node].name()))?;
        }
        replaced.extend(edit::put_for_node(graph, *node, *slot, t));
    }
    if mode == Mode::Zero {
        return Ok(());
    }
    for &node in &depthwise {
        let out = graph
            .initializer
            .iter()
            .find(|t| t.name() == graph.node[node].input[1])
            .map(|t| t.dims[0])
            .context("depthwise weight vanished")?;
        edit::set_attr_int_if_present(graph, node, "group", out);
    }
    let in_tensor = removed_by_tensor(groups, removed);
    rewrite_shape_constants(graph, &rewired, &in_tensor, &mut replaced)?;
    edit::drop_unread(graph, &replaced);
    let lost: HashMap<String, usize> = in_tensor
        .iter()
        .map(|(name, gone)| (name.clone(), gone.len()))
        .collect();
    edit::shrink_value_info(graph, 1, &lost);
    Ok(())
}
