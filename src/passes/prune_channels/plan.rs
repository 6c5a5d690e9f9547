//! [`ChannelPlan`]: what `prune_channels` decided, applied to the graph it was made on (surgery)
//! and to a copy (the mask the proof compares against).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;

use super::PruneChannels;
use super::select::Choice;
use super::surgery::{Mode, surgery};
use crate::analysis::{ChannelGroup, Span};
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::passes::Reference;
use crate::passes::Scope;

/// What `prune_channels` decided on one graph: its channel groups and the channels chosen, made
/// once and applied both to the graph it was made on and to a copy to mask.
pub struct ChannelPlan {
    pub(super) options: PruneChannels,
    pub(super) groups: Vec<ChannelGroup>,
    pub(super) choice: Choice,
}

impl ChannelPlan {
    /// Removes the chosen channels from `graph` (the graph the plan was made on); returns the
    /// summary line.
    pub fn prune(&self, graph: &mut GraphProto) -> Result<String> {
        let before: usize = self
            .choice
            .removed
            .iter()
            .map(|(g, _)| self.groups[*g].channels)
            .sum();
        let removed: usize = self.choice.removed.iter().map(|(_, r)| r.len()).sum();
        surgery(graph, &self.groups, &self.choice.removed, Mode::Remove)?;
        // Widths before -> after with how many groups went that way, widest first.
        let mut widths: BTreeMap<(Reverse<usize>, Reverse<usize>), usize> = BTreeMap::new();
        for (g, r) in &self.choice.removed {
            let c = self.groups[*g].channels;
            *widths
                .entry((Reverse(c), Reverse(c - r.len())))
                .or_default() += 1;
        }
        let per_group: Vec<String> = widths
            .iter()
            .map(|((Reverse(c), Reverse(kept)), n)| format!("{c}->{kept} x{n}"))
            .collect();
        let settings = format!(
            "{} importance, {} scope, amount {}, round_to {}, min_channels {}",
            self.options.importance_name(),
            match self.options.scope {
                Scope::Layer => "layer",
                Scope::Global => "global",
            },
            self.options.amount,
            self.options.round_to,
            self.options.min_width(),
        );
        let mut summary = if removed == 0 {
            format!(
                "nothing was pruned: none of {} selected groups lost a channel ({settings})",
                self.choice.selected
            )
        } else {
            format!(
                "removed {removed} channels from {} of {} selected groups ({before} -> {} \
                 channels; {settings})",
                self.choice.removed.len(),
                self.choice.selected,
                before - removed,
            )
        };
        if !per_group.is_empty() {
            summary += &format!("; widths (groups): {}", per_group.join(", "));
        }
        if !self.choice.at_minimum.is_empty() {
            let first: Vec<&str> = self
                .choice
                .at_minimum
                .iter()
                .take(3)
                .map(String::as_str)
                .collect();
            summary += &format!(
                "; {} groups kept the minimum width (first: {})",
                self.choice.at_minimum.len(),
                first.join("; ")
            );
        }
        summary += &format!(
            "; left alone: {} locked, {} not selected by include/exclude",
            self.choice.locked.len(),
            self.choice.filtered
        );
        if let Some(first) = self.choice.locked.first() {
            summary += &format!(" (first locked: {first})");
        }
        Ok(summary)
    }

    /// The proof's reference: `masked` (the model the plan was made on with its channels
    /// zeroed, [`ChannelPlan::mask`]) and the tensors that carry the pruned channels' signal.
    pub fn reference(&self, masked: ModelProto) -> Reference {
        let tensors = match &masked.graph {
            Some(graph) => self.signal_tensors(graph),
            None => Vec::new(),
        };
        Reference {
            model: masked,
            tensors,
            masked_channels: self.removed_channels(),
        }
    }

    /// How many channels the plan removes.
    pub fn removed_channels(&self) -> usize {
        self.choice.removed.iter().map(|(_, r)| r.len()).sum()
    }

    /// Zeros, without surgery, exactly the channels [`ChannelPlan::prune`] removes, in a copy of
    /// the graph the plan was made on (see the module doc); returns how many channels it zeroed.
    pub fn mask(&self, graph: &mut GraphProto) -> Result<usize> {
        surgery(graph, &self.groups, &self.choice.removed, Mode::Zero)?;
        Ok(self.choice.removed.iter().map(|(_, r)| r.len()).sum())
    }

    /// The tensors that carry the pruned channels' signal, by name, with the channel positions
    /// (axis 1) pruning removes from each: the graph outputs, and the output of every Conv that
    /// reads a pruned group (the pre-activation values that channel surgery changes first).
    /// Names are those of the graph the plan was made on; surgery keeps them.
    pub fn signal_tensors(&self, graph: &GraphProto) -> Vec<(String, BTreeSet<usize>)> {
        let removed = removed_by_tensor(&self.groups, &self.choice.removed);
        let consumers: BTreeSet<usize> = self
            .choice
            .removed
            .iter()
            .flat_map(|(g, _)| self.groups[*g].consumers.iter().map(|c| c.node))
            .collect();
        let names = graph.output.iter().map(|o| o.name().to_string()).chain(
            consumers
                .into_iter()
                .filter_map(|n| graph.node[n].output.first().cloned()),
        );
        let mut seen = BTreeSet::new();
        names
            .filter(|name| seen.insert(name.clone()))
            .map(|name| {
                let gone = removed.get(&name).cloned().unwrap_or_default();
                (name, gone)
            })
            .collect()
    }
}

/// The positions `span` holds of group channels `removed`.
pub(super) fn positions(span: &Span, removed: &[usize]) -> impl Iterator<Item = usize> {
    removed.iter().filter_map(move |&k| span.position(k))
}

/// Per tensor carrying group channels, the positions on its channel axis that `removed` takes.
pub(super) fn removed_by_tensor(
    groups: &[ChannelGroup],
    removed: &[(usize, Vec<usize>)],
) -> HashMap<String, BTreeSet<usize>> {
    let mut in_tensor: HashMap<String, BTreeSet<usize>> = HashMap::new();
    for (g, r) in removed {
        for t in &groups[*g].tensors {
            in_tensor
                .entry(t.name.clone())
                .or_default()
                .extend(positions(&t.span, r));
        }
    }
    in_tensor
}
