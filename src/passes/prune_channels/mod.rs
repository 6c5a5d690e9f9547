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

mod plan;
mod recovery;
mod rewrite;
mod select;
mod surgery;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use plan::ChannelPlan;
use recovery::{ObsChannels, allocate_macs};
use select::keep_one_per_part;

use super::options::{CalibOrder, Recover, pass_options, validate_budget};
use super::prune_magnitude::Scope;
use super::recovery::{all_convs, calibration, correct_statistics};
use super::selection::{LayerFilter, round_half_even};
use super::{Pass, PassContext, PassOutput, SearchAxis};
use crate::analysis::channel_groups;
use crate::calib::Calibration;
use crate::graph::{GraphView, infer_shapes};
use crate::onnx::proto::{GraphProto, ModelProto};

pass_options! {
    /// Options of `prune_channels`. `recover: obs` chooses channels by the structured OBS loss
    /// at their consumers, which are re-solved from calibration statistics (`amount` then
    /// counts per group, unless `target_macs` is given); `order` does not apply (each consumer
    /// is solved from the dense model's inputs).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PruneChannels {
        /// Fraction of each selected group's channels (or of all, with `scope: global`) to
        /// remove, in [0, 1].
        pub amount: f64,
        #[serde(default)]
        pub importance: Importance,
        #[serde(default)]
        pub scope: Scope,
        /// The kept channel count of each group is a multiple of this.
        #[serde(default = "default_round_to")]
        pub round_to: usize,
        /// No group keeps fewer channels (default: max(8, round_to), rounded up to a multiple
        /// of round_to).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub min_channels: Option<usize>,
        /// Seed of `importance: random`.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub seed: u64,
        ..layers,
        ..recovery,
        /// With `recover: obs`: remove channels until the model has at most this fraction of
        /// its dense MACs, spending them where the loss per MAC is smallest (`amount` is then
        /// unused; with `max_map_drop`, the search goes down to it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub target_macs: Option<f64>,
        ..budget,
    }
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

impl Pass for PruneChannels {
    fn name(&self) -> &'static str {
        "prune_channels"
    }

    fn validate(&self) -> Result<()> {
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
        if self.order.is_some() {
            bail!(
                "order is for prune_magnitude and prune_n_m: channel recovery solves each \
                 consumer from the dense model's inputs"
            );
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
        validate_budget(self.max_map_drop)?;
        LayerFilter::new(&self.include, &self.exclude).map(drop)
    }

    fn needs_calibration(&self) -> bool {
        !self.recover.is_none()
    }

    fn drop_calibration(&mut self) {
        (self.recover, self.order) = (Recover::None, None);
    }

    /// Plans once ([`PruneChannels::plan`], or [`PruneChannels::plan_recovered`] with
    /// `recover: obs`) and removes the chosen channels; the reference, when wanted, is the
    /// input (recovered) with exactly those channels zeroed.
    fn run(&self, model: &mut ModelProto, cx: &mut PassContext) -> Result<PassOutput> {
        let wants_reference = cx.wants_reference;
        let (plan, masked) = match calibration(self.recover, cx)? {
            Some(calib) => {
                let (plan, recovered) = self.plan_recovered(model, calib)?;
                // The pruned model is the recovered one with its zeroed channels removed.
                *model = recovered.clone();
                (plan, recovered)
            }
            None => {
                let plan = self.plan(model.graph.as_ref().context("the model has no graph")?)?;
                let mut masked = model.clone();
                if wants_reference {
                    plan.mask(masked.graph.as_mut().context("the model has no graph")?)?;
                }
                (plan, masked)
            }
        };
        let summary = plan.prune(model.graph.as_mut().context("the model has no graph")?)?;
        let reference = wants_reference.then(|| plan.reference(masked));
        Ok(PassOutput { summary, reference })
    }

    fn budget(&self) -> Option<(f64, SearchAxis)> {
        let axis = match self.target_macs {
            Some(_) => SearchAxis::Macs,
            None => SearchAxis::Amount,
        };
        self.max_map_drop.map(|drop| (drop, axis))
    }

    /// The amount, or with [`SearchAxis::Macs`] the MACs removed down to `target_macs` (any
    /// fraction below 1 when there is none).
    fn search_limit(&self, axis: SearchAxis) -> Option<(f64, bool)> {
        Some(match axis {
            SearchAxis::Amount => (self.amount, false),
            SearchAxis::Macs => (1.0 - self.target_macs.unwrap_or(0.0), true),
        })
    }

    fn set_search_step(&mut self, axis: SearchAxis, k: u32, steps: u32) {
        match axis {
            SearchAxis::Amount => self.amount = f64::from(k) / f64::from(steps),
            SearchAxis::Macs => self.target_macs = Some(f64::from(steps - k) / f64::from(steps)),
        }
        self.max_map_drop = None;
    }
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
            order: None,
            target_macs: None,
            max_map_drop: None,
        }
    }

    /// The minimum width of a group: a multiple of `round_to`.
    fn min_width(&self) -> usize {
        let min = self.min_channels.unwrap_or(self.round_to.max(8));
        min.div_ceil(self.round_to) * self.round_to
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

    /// With `recover: obs`: chooses the channels by their OBS loss ([`recovery`]) on
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
        let names = all_convs(&recovered)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
