//! Which channels `prune_channels` removes without calibration: importance, targets, rounding
//! to `round_to`, the minimum width, and the channel each partial tensor keeps.

use anyhow::{Context, Result, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Importance, PruneChannels};
use crate::analysis::{ChannelGroup, GroupStatus};
use crate::graph::{GraphView, Shapes, infer_shapes};
use crate::onnx::proto::GraphProto;
use crate::onnx::tensor;
use crate::passes::Scope;
use crate::passes::selection::{LayerFilter, round_half_even};

/// The channels chosen for removal.
pub(super) struct Choice {
    /// Group id and its removed channels (ascending), for every group losing at least one.
    pub(super) removed: Vec<(usize, Vec<usize>)>,
    /// Lines about groups that kept the minimum width.
    pub(super) at_minimum: Vec<String>,
    /// Lines about groups left alone.
    pub(super) locked: Vec<String>,
    pub(super) filtered: usize,
    pub(super) selected: usize,
}

impl PruneChannels {
    /// The prunable groups include/exclude select, and a [`Choice`] that reports the others.
    pub(super) fn select<'g>(
        &self,
        groups: &'g [ChannelGroup],
    ) -> Result<(Vec<&'g ChannelGroup>, Choice)> {
        let include = LayerFilter::new(&self.include, &[])?;
        let exclude = LayerFilter::new(&[], &self.exclude)?;
        let mut plan = Choice {
            removed: Vec::new(),
            at_minimum: Vec::new(),
            locked: Vec::new(),
            filtered: 0,
            selected: 0,
        };
        let mut selected = Vec::new();
        for group in groups {
            if let GroupStatus::Locked { reasons } = &group.status {
                let first = reasons.first().map_or("", |r| r.reason.as_str());
                plan.locked.push(format!("{}: {first}", describe(group)));
                continue;
            }
            let names = &group.producer_names;
            if !names.iter().any(|n| include.selects(n))
                || !names.iter().all(|n| exclude.selects(n))
            {
                plan.filtered += 1;
                continue;
            }
            selected.push(group);
        }
        plan.selected = selected.len();
        Ok((selected, plan))
    }

    /// How many channels `group` keeps when `target` of them are to go: rounded to `round_to`,
    /// at least the minimum width (noted in `plan`).
    pub(super) fn kept_width(
        &self,
        group: &ChannelGroup,
        target: usize,
        plan: &mut Choice,
    ) -> usize {
        let c = group.channels;
        let wanted = c - target.min(c);
        let rounded = round_half_even(wanted as f64 / self.round_to as f64) as usize;
        let mut kept = (rounded * self.round_to).min(c);
        let min = self.min_width();
        if kept < min {
            kept = min.min(c);
            plan.at_minimum.push(format!(
                "{} would keep {wanted} of {c}, keeps {kept}",
                describe(group)
            ));
        }
        kept
    }

    pub(super) fn choose(&self, graph: &GraphProto, groups: &[ChannelGroup]) -> Result<Choice> {
        let (selected, mut plan) = self.select(groups)?;
        let view = GraphView::new(graph);
        let shapes = infer_shapes(&view);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut scores = Vec::with_capacity(selected.len());
        for group in &selected {
            scores.push(self.importance(&view, group, &mut rng)?);
        }
        let targets: Vec<usize> = match self.scope {
            Scope::Layer => selected
                .iter()
                .map(|g| round_half_even(self.amount * g.channels as f64) as usize)
                .collect(),
            Scope::Global => global_targets(&scores, self.amount),
        };
        for ((group, score), target) in selected.iter().zip(&scores).zip(targets) {
            let c = group.channels;
            if target == 0 {
                continue;
            }
            let kept = self.kept_width(group, target, &mut plan);
            if kept >= c {
                continue;
            }
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
            let mut removed = keep_one_per_part(group, &shapes, &order, c - kept);
            if removed.is_empty() {
                continue;
            }
            removed.sort_unstable();
            plan.removed.push((group.id, removed));
        }
        Ok(plan)
    }

    /// The importance of each channel of `group`.
    fn importance(
        &self,
        view: &GraphView,
        group: &ChannelGroup,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        let c = group.channels;
        if self.importance == Importance::Random {
            return Ok((0..c).map(|_| rng.random::<f64>()).collect());
        }
        let mut score = vec![0.0f64; c];
        for &p in &group.producers {
            let node = view.node(p);
            let weight = view.initializer(&node.input[1]).with_context(|| {
                format!(
                    "{}: weight {:?} is not a dense initializer (densify it before pruning)",
                    view.describe(p),
                    node.input[1]
                )
            })?;
            let values =
                tensor::to_f32(weight).with_context(|| format!("{}: weight", view.describe(p)))?;
            ensure!(
                weight.dims.first() == Some(&(c as i64)),
                "{}: weight has {:?} output channels, the group {c}",
                view.describe(p),
                weight.dims.first()
            );
            let per = values.len() / c.max(1);
            for (k, filter) in values.chunks(per.max(1)).enumerate().take(c) {
                score[k] += match self.importance {
                    Importance::L1 => filter.iter().map(|v| f64::from(v.abs())).sum::<f64>(),
                    _ => filter.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>(),
                };
            }
        }
        if self.importance == Importance::L2 {
            score.iter_mut().for_each(|s| *s = s.sqrt());
        }
        Ok(score)
    }
}

/// The first `count` channels of `order` that can go without emptying a tensor that carries only
/// part of the group and nothing else (a Split output, a Slice): each such part keeps at least
/// its channel that comes last in `order`, so fewer than `count` may be returned.
pub(super) fn keep_one_per_part(
    group: &ChannelGroup,
    shapes: &Shapes,
    order: &[usize],
    count: usize,
) -> Vec<usize> {
    let parts: Vec<(usize, usize)> = group
        .tensors
        .iter()
        .filter(|t| {
            t.span.len < group.channels
                && shapes.get(&t.name).and_then(|s| s.get(1).copied()) == Some(t.span.len as i64)
        })
        .map(|t| (t.span.start, t.span.start + t.span.len))
        .collect();
    let mut left: Vec<usize> = parts.iter().map(|(a, b)| b - a).collect();
    let mut removed = Vec::with_capacity(count);
    for &k in order {
        if removed.len() == count {
            break;
        }
        let inside = |&(a, b): &(usize, usize)| (a..b).contains(&k);
        if parts.iter().zip(&left).any(|(p, &l)| inside(p) && l == 1) {
            continue;
        }
        for (p, l) in parts.iter().zip(left.iter_mut()) {
            if inside(p) {
                *l -= 1;
            }
        }
        removed.push(k);
    }
    removed
}

/// With `scope: global`: how many channels each group should lose, ranking all channels by
/// importance over their group's mean.
fn global_targets(scores: &[Vec<f64>], amount: f64) -> Vec<usize> {
    let mut all: Vec<(f64, usize, usize)> = Vec::new();
    for (g, score) in scores.iter().enumerate() {
        let mean = score.iter().sum::<f64>() / score.len().max(1) as f64;
        let scale = if mean > 0.0 { mean } else { 1.0 };
        all.extend(score.iter().enumerate().map(|(k, s)| (s / scale, g, k)));
    }
    let n = round_half_even(amount * all.len() as f64) as usize;
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut targets = vec![0; scores.len()];
    for &(_, g, _) in &all[..n.min(all.len())] {
        targets[g] += 1;
    }
    targets
}

fn describe(group: &ChannelGroup) -> String {
    format!(
        "group #{} ({}, {} channels)",
        group.id,
        group.producer_names.first().map_or("?", String::as_str),
        group.channels
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_targets_rank_normalised_importances() {
        // Group 0 is ten times larger in scale but the same shape: each loses one of two.
        let scores = vec![vec![10.0, 30.0], vec![1.0, 3.0]];
        assert_eq!(global_targets(&scores, 0.5), [1, 1]);
        assert_eq!(global_targets(&scores, 0.0), [0, 0]);
        assert_eq!(global_targets(&scores, 1.0), [2, 2]);
    }
}
