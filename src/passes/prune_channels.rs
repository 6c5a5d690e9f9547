//! `prune_channels`: structured pruning that removes whole Conv output channels by graph surgery.
//!
//! Before: a Conv `W[C, I, kh, kw]`, `b[C]` whose output (after SiLU, Concat, ...) feeds
//! `W2[O, C, kh, kw]`. After: `W[C', I, kh, kw]`, `b[C']`, `W2[O, C', kh, kw]` with the same
//! `C - C'` channel positions gone everywhere, and every other tensor untouched.
//!
//! Preconditions: the model's channel groups ([`channel_groups`]) say what must be removed
//! together; only *prunable* groups are touched, locked ones are reported and left alone. Weights
//! must be dense initializers (densify sparse ones first).
//!
//! Which channels go, per selected group of `C` channels:
//! - Importance of channel `k`: the norm of its output filters summed over every producer Conv
//!   of the group (`l1`: sum of |w|; `l2`: square root of the sum of w^2 over all producers'
//!   filters `W[k, ..]`). Consumers are not counted: a producer filter is what creates the
//!   channel, and a consumer's input slice is scaled by a following layer anyway.
//!   `random` (a test aid) draws each importance uniformly from a ChaCha8 stream seeded with
//!   `seed`, so tests can try many channel selections.
//! - `scope: layer`: the group's target is to remove `round_half_even(amount x C)` channels.
//!   `scope: global`: each group's importances are divided by the group's mean importance (so
//!   wide or large-valued groups are not favoured), all selected channels are ranked together,
//!   and the `round_half_even(amount x N)` lowest of all `N` are the targets, counted per group.
//! - The number *kept* is then rounded to the nearest multiple of `round_to` (halves to even
//!   multiples), never above `C`, and never below `min_channels` (default: the larger of 8 and
//!   `round_to`, rounded up to a multiple of `round_to`); a group that would go below keeps the
//!   minimum and the report says so. A group whose target is 0 keeps everything.
//! - The channels of lowest importance go (lowest index first among equals), except that a
//!   tensor carrying only part of the group (a Split output, a Slice) always keeps at least one
//!   channel; the group then loses fewer.
//!
//! Surgery for removed channel set `R` of a group: producer weights axis 0 and biases; `group = 1`
//! consumers' weights axis 1 at the positions `R` has there (through the span offsets, e.g. behind
//! a Concat); depthwise consumers' weights axis 0, biases and `group` attribute; per-channel
//! parameters ([`Edit::Param`], e.g. BatchNormalization); Split sizes, Slice bounds on the channel
//! axis and stored Resize sizes (rewritten as new initializers read only by their node); and the
//! channel dimension of every `value_info` entry carrying group channels. Graph inputs and outputs
//! never carry prunable channels. A tensor read by anything besides the node being edited is
//! copied for that node instead of edited in place; replaced initializers nobody reads any more
//! are dropped.
//!
//! [`ChannelPlan::mask`] applies the same selection without surgery: it zeros the removed
//! channels where they are made (producer weights and biases, depthwise consumer weights and
//! biases, and the per-channel operands the [`crate::ops`] registry marks as masked:
//! BatchNormalization scale and bias, those of Add, Sub, Max and Min). The analysis locks every
//! group whose removed channels would reach a Conv or a graph output non-zero (an op with
//! f(0) != 0 on the way, such as Sigmoid, that nothing zeros again), so the masked model computes
//! what the pruned one does. It is the reference `shears prune --verify` compares against.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result, bail, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, Recover};
use super::channels_obs::{ObsChannels, allocate_macs};
use super::correct_statistics::correct_statistics;
use super::prune_magnitude::Scope;
use super::selection::{LayerFilter, round_half_even};
use crate::analysis::{ChannelGroup, Edit, GroupStatus, Span, UseKind, channel_groups};
use crate::graph::{GraphView, Shapes, attr_ints, edit, infer_shapes};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, ModelProto, TensorProto};
use crate::onnx::tensor;
use crate::ops::{self, ChannelRule, ShapeRule};

/// Options of `prune_channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneChannels {
    /// Fraction of each selected group's channels (or of all, with `scope: global`) to remove,
    /// in [0, 1].
    pub amount: f64,
    #[serde(default)]
    pub importance: Importance,
    #[serde(default)]
    pub scope: Scope,
    /// The kept channel count of each group is a multiple of this.
    #[serde(default = "default_round_to")]
    pub round_to: usize,
    /// No group keeps fewer channels (default: max(8, round_to), rounded up to a multiple of
    /// round_to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_channels: Option<usize>,
    /// Seed of `importance: random`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u64,
    /// Only groups with a producer Conv whose node name matches one of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Never groups with a producer Conv whose node name matches one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `obs`: channels chosen by the structured OBS loss at their consumers, which are
    /// re-solved from calibration statistics (`amount` then counts per group, unless
    /// `target_macs` is given).
    #[serde(default, skip_serializing_if = "Recover::is_none")]
    pub recover: Recover,
    /// With `recover: obs`: remove channels until the model has at most this fraction of its
    /// dense MACs, spending them where the loss per MAC is smallest (`amount` is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_macs: Option<f64>,
    /// Pipelines: search the largest amount up to `amount` (with `target_macs`, the smallest
    /// MAC target down to it; resolution 0.01) whose validated drop stays within this budget
    /// (`crate::pipeline::search`; needs a `validate:` block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_map_drop: Option<f64>,
}

fn default_round_to() -> usize {
    8
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// How a channel's importance is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// Sum of |w| of the channel's filters over all producers.
    #[default]
    L1,
    /// Euclidean norm of the channel's filters over all producers.
    L2,
    /// Seeded random importances: a test aid for trying many channel selections.
    Random,
}

/// The channels chosen for removal.
struct Choice {
    /// Group id and its removed channels (ascending), for every group losing at least one.
    removed: Vec<(usize, Vec<usize>)>,
    /// Lines about groups that kept the minimum width.
    at_minimum: Vec<String>,
    /// Lines about groups left alone.
    locked: Vec<String>,
    filtered: usize,
    selected: usize,
}

/// Whether surgery removes channels or the mask zeros them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Remove,
    Zero,
}

impl PruneChannels {
    /// `amount` of every group by L1 importance, with the pipeline's defaults for the rest (what
    /// a `prune_channels: {amount: A}` entry means).
    pub fn new(amount: f64) -> Self {
        PruneChannels {
            amount,
            importance: Importance::default(),
            scope: Scope::default(),
            round_to: default_round_to(),
            min_channels: None,
            seed: 0,
            include: Vec::new(),
            exclude: Vec::new(),
            recover: Recover::None,
            target_macs: None,
            max_map_drop: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.amount) {
            bail!("amount {} is outside [0, 1]", self.amount);
        }
        if let Some(t) = self.target_macs {
            if !(t > 0.0 && t <= 1.0) {
                bail!("target_macs {t} is outside (0, 1]");
            }
            if self.recover != Recover::Obs {
                bail!("target_macs needs recover: obs");
            }
        }
        if self.recover == Recover::Stats {
            bail!("prune_channels recovers with obs (recover: stats is for unstructured pruning)");
        }
        if self.round_to == 0 {
            bail!("round_to must be at least 1");
        }
        if self.min_channels == Some(0) {
            bail!("min_channels must be at least 1");
        }
        super::validate_budget(self.max_map_drop)?;
        LayerFilter::new(&self.include, &self.exclude).map(drop)
    }

    /// The minimum width of a group: a multiple of `round_to`.
    fn min_width(&self) -> usize {
        let min = self.min_channels.unwrap_or(self.round_to.max(8));
        min.div_ceil(self.round_to) * self.round_to
    }

    /// Removes the selected channels; returns the summary line.
    pub fn run(&self, graph: &mut GraphProto) -> Result<String> {
        self.plan(graph)?.prune(graph)
    }

    /// Removes the selected channels, with recovery when `recover` asks for it (then `calib`
    /// is needed); returns the summary line.
    pub fn run_model(
        &self,
        model: &mut ModelProto,
        calib: Option<&mut dyn Calibration>,
    ) -> Result<String> {
        match calib.filter(|_| self.recover == Recover::Obs) {
            Some(calib) => {
                let (plan, recovered) = self.plan_recovered(model, calib)?;
                *model = recovered;
                plan.prune(model.graph.as_mut().context("the model has no graph")?)
            }
            None => self.run(model.graph.as_mut().context("the model has no graph")?),
        }
    }

    /// Analyses `graph` and chooses the channels to remove, once: the result prunes this graph
    /// ([`ChannelPlan::prune`]) and masks a copy of it ([`ChannelPlan::mask`]).
    pub fn plan(&self, graph: &GraphProto) -> Result<ChannelPlan> {
        self.validate()?;
        let analysis = channel_groups(graph)?;
        let choice = self.choose(graph, &analysis.groups)?;
        Ok(ChannelPlan {
            options: self.clone(),
            groups: analysis.groups,
            choice,
        })
    }

    /// With `recover: obs`: chooses the channels by their OBS loss ([`super::channels_obs`]) on
    /// `model`, and returns the plan with the recovered masked model: the consumers re-solved,
    /// then the removed channels zeroed. Pruning that model by the plan removes exactly what is
    /// zero in it.
    pub fn plan_recovered(
        &self,
        model: &ModelProto,
        calib: &mut dyn Calibration,
    ) -> Result<(ChannelPlan, ModelProto)> {
        self.validate()?;
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let analysis = channel_groups(graph)?;
        let (selected, mut choice) = self.select(&analysis.groups)?;
        let obs = ObsChannels::measure(model, &selected, calib)?;
        let counts: Vec<usize> = match self.target_macs {
            Some(target) => allocate_macs(
                graph,
                &selected,
                &obs.orders,
                target,
                self.round_to,
                self.min_width(),
            )?,
            None => selected
                .iter()
                .map(|g| {
                    let target = round_half_even(self.amount * g.channels as f64) as usize;
                    match target {
                        0 => 0,
                        t => g.channels - self.kept_width(g, t, &mut choice).min(g.channels),
                    }
                })
                .collect(),
        };
        let shapes = infer_shapes(&GraphView::new(graph));
        let mut by_selection = Vec::new();
        for (i, (group, count)) in selected.iter().zip(counts).enumerate() {
            if count == 0 {
                continue;
            }
            let mut order = obs.orders[i].0.clone();
            order.extend((0..group.channels).filter(|k| !obs.orders[i].0.contains(k)));
            let mut removed = keep_one_per_part(group, &shapes, &order, count);
            if removed.is_empty() {
                continue;
            }
            removed.sort_unstable();
            by_selection.push((i, removed.clone()));
            choice.removed.push((group.id, removed));
        }
        choice.removed.sort_unstable();
        let mut recovered = model.clone();
        let graph = recovered.graph.as_mut().context("the model has no graph")?;
        obs.resolve_consumers(graph, &selected, &by_selection)?;
        // The removed channels no longer reach any consumer, so correcting before masking sees
        // exactly what the pruned model computes.
        let names = super::all_convs(&recovered)?;
        correct_statistics(&mut recovered, model, &names, calib)?;
        let graph = recovered.graph.as_mut().context("the model has no graph")?;
        let plan = ChannelPlan {
            options: self.clone(),
            groups: analysis.groups.clone(),
            choice,
        };
        plan.mask(graph)?;
        Ok((plan, recovered))
    }

    fn importance_name(&self) -> &'static str {
        match self.importance {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::Random => "random",
        }
    }

    /// The prunable groups include/exclude select, and a [`Choice`] that reports the others.
    fn select<'g>(&self, groups: &'g [ChannelGroup]) -> Result<(Vec<&'g ChannelGroup>, Choice)> {
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
    fn kept_width(&self, group: &ChannelGroup, target: usize, plan: &mut Choice) -> usize {
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

    fn choose(&self, graph: &GraphProto, groups: &[ChannelGroup]) -> Result<Choice> {
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

/// What `prune_channels` decided on one graph: its channel groups and the channels chosen, made
/// once and applied both to the graph it was made on and to a copy to mask.
pub struct ChannelPlan {
    options: PruneChannels,
    groups: Vec<ChannelGroup>,
    choice: Choice,
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
        let mut summary = format!(
            "removed {removed} channels from {} of {} selected groups ({before} -> {} channels; \
             {} importance, {} scope, amount {}, round_to {}, min_channels {})",
            self.choice.removed.len(),
            self.choice.selected,
            before - removed,
            self.options.importance_name(),
            match self.options.scope {
                Scope::Layer => "layer",
                Scope::Global => "global",
            },
            self.options.amount,
            self.options.round_to,
            self.options.min_width(),
        );
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
        if self.choice.removed.is_empty() {
            summary += "; nothing was pruned";
        }
        Ok(summary)
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

/// The first `count` channels of `order` that can go without emptying a tensor that carries only
/// part of the group and nothing else (a Split output, a Slice): each such part keeps at least
/// its channel that comes last in `order`, so fewer than `count` may be returned.
fn keep_one_per_part(
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

/// The positions `span` holds of group channels `removed`.
fn positions(span: &Span, removed: &[usize]) -> impl Iterator<Item = usize> {
    removed.iter().filter_map(move |&k| span.position(k))
}

/// Per tensor carrying group channels, the positions on its channel axis that `removed` takes.
fn removed_by_tensor(
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

/// Per (node, input slot): positions to remove or zero, by axis.
type TensorEdits = BTreeMap<(usize, usize), BTreeMap<usize, BTreeSet<usize>>>;

/// Removes (or zeros) the channels `removed` of the groups they belong to.
fn surgery(
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
        if let Some(a) = graph.node[node]
            .attribute
            .iter_mut()
            .find(|a| a.name() == "group")
        {
            a.i = Some(out);
        }
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

/// Recounts Split sizes, remaps Slice bounds and lowers stored Resize sizes of `nodes`, each as
/// a new initializer read by that node alone (or its attribute, where the node keeps them there).
fn rewrite_shape_constants(
    graph: &mut GraphProto,
    nodes: &BTreeSet<usize>,
    in_tensor: &HashMap<String, BTreeSet<usize>>,
    replaced: &mut Vec<String>,
) -> Result<()> {
    // Constants are read on the graph as it stands: the rewrites below touch only these nodes'
    // own integer inputs, which no channel edit changed.
    let updates: Vec<(usize, ConstUpdate)> = {
        let view = GraphView::new(graph);
        let shapes = infer_shapes(&view);
        let mut out = Vec::new();
        for &index in nodes {
            let node = view.node(index);
            let data = &node.input[0];
            let gone = in_tensor.get(data).cloned().unwrap_or_default();
            let channels = shapes
                .get(data)
                .and_then(|s| s.get(1).copied())
                .with_context(|| format!("{}: unknown channel count", view.describe(index)))?
                as usize;
            let ints = |attr: &str, slot: usize| -> Option<Vec<i64>> {
                if let Some(v) = attr_ints(node, attr) {
                    return Some(v.to_vec());
                }
                let name = node.input.get(slot).filter(|n| !n.is_empty())?;
                Some(shapes.value(name)?.iter().map(|&x| x as i64).collect())
            };
            let below = |p: usize| gone.iter().filter(|&&g| g < p).count();
            let op = ops::of(node);
            match op.map(|op| (op.channels, op.shape)) {
                Some((ChannelRule::Split, _)) => {
                    let n = node.output.len();
                    let sizes = match ints("split", 1) {
                        Some(v) => v,
                        None => {
                            let chunk = channels.div_ceil(n.max(1));
                            (0..n)
                                .map(|i| chunk.min(channels.saturating_sub(i * chunk)) as i64)
                                .collect()
                        }
                    };
                    let mut at = 0usize;
                    let new: Vec<i64> = sizes
                        .iter()
                        .map(|&s| {
                            let end = at + s as usize;
                            let lost = gone.iter().filter(|&&g| g >= at && g < end).count();
                            at = end;
                            s - lost as i64
                        })
                        .collect();
                    if attr_ints(node, "split").is_some() {
                        out.push((index, ConstUpdate::Attr("split", new)));
                    } else if node.input.get(1).is_some_and(|s| !s.is_empty()) {
                        out.push((index, ConstUpdate::Input(1, new)));
                    } else if new.windows(2).any(|w| w[0] != w[1]) {
                        bail!(
                            "{}: splits evenly without sizes, and the removed channels make the \
                             parts uneven; exclude the groups it splits",
                            view.describe(index)
                        );
                    }
                }
                Some((ChannelRule::Slice, _)) => {
                    let rank = shapes.get(data).map_or(4, <[i64]>::len).max(1) as i64;
                    let (Some(starts), Some(ends)) = (ints("starts", 1), ints("ends", 2)) else {
                        bail!("{}: slice bounds not readable", view.describe(index));
                    };
                    let axes =
                        ints("axes", 3).unwrap_or_else(|| (0..starts.len() as i64).collect());
                    let k = axes
                        .iter()
                        .position(|&a| a.rem_euclid(rank) == 1)
                        .context("no channel axis")?;
                    let c = channels as i64;
                    let clamp = |v: i64| {
                        if v < 0 { (v + c).max(0) } else { v.min(c) }
                    };
                    let (b, e) = (clamp(starts[k]), clamp(ends[k]).max(clamp(starts[k])));
                    let mut starts = starts;
                    let mut ends = ends;
                    starts[k] = b - below(b as usize) as i64;
                    ends[k] = e - below(e as usize) as i64;
                    if attr_ints(node, "starts").is_some() {
                        out.push((index, ConstUpdate::Attr("starts", starts)));
                        out.push((index, ConstUpdate::Attr("ends", ends)));
                    } else {
                        out.push((index, ConstUpdate::Input(1, starts)));
                        out.push((index, ConstUpdate::Input(2, ends)));
                    }
                }
                Some((
                    ChannelRule::Resize(_),
                    ShapeRule::Resize {
                        sizes: Some(slot), ..
                    },
                )) => {
                    let mut sizes: Vec<i64> = node
                        .input
                        .get(slot)
                        .and_then(|n| shapes.value(n))
                        .map(|v| v.iter().map(|&x| x as i64).collect())
                        .with_context(|| {
                            format!("{}: stored sizes not readable", view.describe(index))
                        })?;
                    ensure!(sizes.len() > 1, "{}: sizes too short", view.describe(index));
                    sizes[1] -= gone.len() as i64;
                    out.push((index, ConstUpdate::Input(slot, sizes)));
                }
                _ => bail!("{}: unexpected shape rewrite", view.describe(index)),
            }
        }
        out
    };
    for (index, update) in updates {
        match update {
            ConstUpdate::Attr(name, values) => {
                let a = graph.node[index]
                    .attribute
                    .iter_mut()
                    .find(|a| a.name() == name)
                    .context("attribute vanished")?;
                a.ints = values;
            }
            ConstUpdate::Input(slot, values) => {
                let old = graph.node[index].input[slot].clone();
                let dtype = int_type_of(graph, &old);
                let mut t = tensor::from_i64(&old, &[values.len() as i64], &values);
                if dtype == DataType::Int32 as i32 {
                    let raw: Vec<u8> = values
                        .iter()
                        .flat_map(|&v| (v as i32).to_le_bytes())
                        .collect();
                    t.data_type = Some(dtype);
                    t.raw_data = Some(raw.into());
                }
                let fresh = edit::fresh_name(graph, &format!("{old}_pruned_n{index}"));
                t.name = Some(fresh.clone());
                edit::add_initializer(graph, t);
                graph.node[index].input[slot] = fresh;
                replaced.push(old);
            }
        }
    }
    Ok(())
}

enum ConstUpdate {
    Attr(&'static str, Vec<i64>),
    Input(usize, Vec<i64>),
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

/// Bytes per element of the types whose `raw_data` this pass can slice.
fn element_size(data_type: i32) -> Option<usize> {
    use DataType as D;
    Some(match DataType::try_from(data_type).ok()? {
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Float16 | D::Bfloat16 | D::Uint16 | D::Int16 => 2,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        _ => return None,
    })
}

/// Keeps, of each `outer` block of `n x unit` values, the `unit`-runs at positions `keep`.
fn gather<T: Clone>(values: &[T], n: usize, unit: usize, keep: &[usize]) -> Vec<T> {
    let block = n * unit;
    let mut out = Vec::with_capacity(values.len() / n.max(1) * keep.len());
    for chunk in values.chunks(block.max(1)) {
        for &k in keep {
            out.extend_from_slice(&chunk[k * unit..(k + 1) * unit]);
        }
    }
    out
}

/// `t` without the positions `removed` along `axis`, in its own element type and storage field.
fn remove_along(t: &TensorProto, axis: usize, removed: &BTreeSet<usize>) -> Result<TensorProto> {
    let n = *t
        .dims
        .get(axis)
        .with_context(|| format!("has no axis {axis} (dims {:?})", t.dims))? as usize;
    if let Some(&last) = removed.last() {
        ensure!(last < n, "position {last} is outside axis {axis} of {n}");
    }
    let inner = tensor::numel(&t.dims[axis + 1..])?;
    let total = tensor::numel(&t.dims)?;
    let keep: Vec<usize> = (0..n).filter(|k| !removed.contains(k)).collect();
    let mut out = t.clone();
    out.dims[axis] = keep.len() as i64;
    if let Some(raw) = &t.raw_data {
        let size = element_size(t.data_type())
            .with_context(|| format!("cannot slice {} data", tensor::type_name(t)))?;
        ensure!(
            raw.len() == total * size,
            "raw_data length does not match dims"
        );
        out.raw_data = Some(gather(&raw[..], n, inner * size, &keep).into());
        return Ok(out);
    }
    let check = |len: usize| {
        ensure!(len == total, "holds {len} values, dims need {total}");
        Ok(())
    };
    if !t.float_data.is_empty() {
        check(t.float_data.len())?;
        out.float_data = gather(&t.float_data, n, inner, &keep);
    } else if !t.int32_data.is_empty() {
        check(t.int32_data.len())?;
        out.int32_data = gather(&t.int32_data, n, inner, &keep);
    } else if !t.int64_data.is_empty() {
        check(t.int64_data.len())?;
        out.int64_data = gather(&t.int64_data, n, inner, &keep);
    } else if !t.double_data.is_empty() {
        check(t.double_data.len())?;
        out.double_data = gather(&t.double_data, n, inner, &keep);
    } else if !t.uint64_data.is_empty() {
        check(t.uint64_data.len())?;
        out.uint64_data = gather(&t.uint64_data, n, inner, &keep);
    } else if total != 0 {
        bail!("holds no inline data (external data must be loaded first)");
    }
    Ok(out)
}

/// `t` with the positions `zeroed` along `axis` set to 0 (a floating-point tensor).
fn zero_along(t: &TensorProto, axis: usize, zeroed: &BTreeSet<usize>) -> Result<TensorProto> {
    let n = *t
        .dims
        .get(axis)
        .with_context(|| format!("has no axis {axis} (dims {:?})", t.dims))? as usize;
    let inner = tensor::numel(&t.dims[axis + 1..])?;
    let mut values = tensor::to_f32(t)?;
    for (i, v) in values.iter_mut().enumerate() {
        if zeroed.contains(&((i / inner.max(1)) % n.max(1))) {
            *v = 0.0;
        }
    }
    let mut out = t.clone();
    tensor::set_f32(&mut out, values)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(t: &TensorProto) -> Vec<i64> {
        tensor::to_i64(t).unwrap()
    }

    #[test]
    fn remove_along_slices_each_axis() {
        // [2, 3, 2]: remove position 1 of axis 1.
        let values: Vec<i64> = (0..12).collect();
        let t = tensor::from_i64("t", &[2, 3, 2], &values);
        let r = remove_along(&t, 1, &BTreeSet::from([1])).unwrap();
        assert_eq!(r.dims, [2, 2, 2]);
        assert_eq!(ints(&r), [0, 1, 4, 5, 6, 7, 10, 11]);
        let r = remove_along(&t, 0, &BTreeSet::from([0])).unwrap();
        assert_eq!(ints(&r), (6..12).collect::<Vec<_>>());
        let r = remove_along(&t, 2, &BTreeSet::from([0])).unwrap();
        assert_eq!(ints(&r), [1, 3, 5, 7, 9, 11]);
        assert!(remove_along(&t, 1, &BTreeSet::from([3])).is_err());
        assert!(remove_along(&t, 3, &BTreeSet::new()).is_err());
    }

    #[test]
    fn remove_along_keeps_typed_fields() {
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float as i32),
            float_data: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        let r = remove_along(&t, 0, &BTreeSet::from([0, 2])).unwrap();
        assert_eq!(r.float_data, [2.0]);
        assert!(r.raw_data.is_none());
    }

    #[test]
    fn zero_along_zeroes_whole_slices() {
        let t = tensor::from_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let z = zero_along(&t, 1, &BTreeSet::from([0])).unwrap();
        assert_eq!(tensor::to_f32(&z).unwrap(), [0.0, 2.0, 0.0, 4.0]);
    }

    #[test]
    fn global_targets_rank_normalised_importances() {
        // Group 0 is ten times larger in scale but the same shape: each loses one of two.
        let scores = vec![vec![10.0, 30.0], vec![1.0, 3.0]];
        assert_eq!(global_targets(&scores, 0.5), [1, 1]);
        assert_eq!(global_targets(&scores, 0.0), [0, 0]);
        assert_eq!(global_targets(&scores, 1.0), [2, 2]);
    }

    #[test]
    fn options_are_validated() {
        let mut p: PruneChannels = serde_saphyr::from_str("amount: 0.5").unwrap();
        assert_eq!(p.round_to, 8);
        assert_eq!(p.min_width(), 8);
        p.round_to = 3;
        assert_eq!(p.min_width(), 9);
        p.amount = 1.5;
        assert!(p.validate().is_err());
        p.amount = 0.5;
        p.round_to = 0;
        assert!(p.validate().is_err());
        assert!(serde_saphyr::from_str::<PruneChannels>("amount: 0.5\nbogus: 1").is_err());
    }

    #[test]
    fn pipeline_files_name_the_pass_prune_channels() {
        let yaml =
            "prune_channels:\n  amount: 0.3\n  importance: l2\n  scope: global\n  round_to: 16";
        let pass: super::super::PassConfig = serde_saphyr::from_str(yaml).unwrap();
        let super::super::PassConfig::PruneChannels(p) = &pass else {
            panic!("{pass:?}");
        };
        assert_eq!(p.importance, Importance::L2);
        assert_eq!((p.round_to, p.min_width()), (16, 16));
        assert_eq!(pass.name(), "prune_channels");
        assert!(super::super::PASS_NAMES.contains(&"prune_channels"));
    }
}
