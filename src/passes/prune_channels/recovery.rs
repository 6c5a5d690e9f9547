//! `prune_channels` with `recover: obs`: which channels go, by the structured OBS loss they cost
//! the Convs that read them, and the re-solved weights of those Convs.
//!
//! For a consumer Conv with `[W | b]` and calibration Gram `H` of its im2col input, removing
//! input channel `c` removes the block `Q` of its `kh * kw` columns; the optimal update of the rest
//! and its loss are [`StructuredLayer::remove`]. A group channel may reach a consumer more than
//! once (SPPF's Concat of the pooled copies): its block then holds every position.
//!
//! - Order within a group: greedily, the channel whose removal adds the least loss, summed over
//!   every consumer of the group as a fraction of that consumer's output energy `|W X|^2` weighed
//!   by how much of the consumer's error reaches the model's outputs
//!   ([`crate::passes::recovery::reach`], probed with [`PROBE_SHARE`] of its input channels
//!   removed by structured OBS), is removed next (and the consumers updated) until
//!   [`MAX_FRACTION`] of the group is gone.
//! - Allocation: with a MAC target, `round_to` channels at a time go from the group whose next
//!   step costs the least loss per MAC saved, until the model has at most the target's MACs,
//!   each group losing at most the smallest of [`GROUP_SHARES`] that reaches the target;
//!   otherwise each group loses `amount` of its channels as without recovery.
//! - Re-solve: each consumer loses all its removed input channels, from every group, in one
//!   structured OBS step from the dense weights (exact least squares on the remaining columns).
//!   Then the removed channels are masked, and surgery removes exactly them.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use faer::Mat;
use rayon::prelude::*;

use crate::analysis::{ChannelGroup, UseKind, conv_layers, model_stats};
use crate::calib::{Calibration, ConvSite, conv_sites};
use crate::graph::GraphView;
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::passes::recovery::obs::{StructuredLayer, damped_inverse, output_energy, output_error};
use crate::passes::recovery::prune_obs::DAMPING;
use crate::passes::recovery::reach::{Probe, reach};
use crate::passes::selection::LayerMatrix;

/// The deepest a group's greedy order goes, so the most a group can lose.
pub const MAX_FRACTION: f64 = 0.75;

/// The shares of a group the MAC allocation may take, tried in turn until the target is
/// reached. The loss of one layer's output is a poor guide deep into a group, so shallow cuts
/// spread over many groups come first: yolov5n at 0.9 of its MACs (32 calibration images) kept
/// COCO AP 0.224 with at most an eighth of each group, 0.203 with a quarter, and (before
/// statistics correction) 0.150 with a half and 0.132 with three quarters; 0.8 of the MACs needs
/// a quarter. Weighed by reach (128 images) the order holds: at 0.9, an eighth 0.249 against a
/// quarter 0.173; at 0.8, a quarter 0.165 against a half 0.102.
const GROUP_SHARES: [f64; 4] = [0.125, 0.25, 0.5, MAX_FRACTION];

/// A consumer Conv of the selected groups, with its dense layer.
struct Consumer {
    site: ConvSite,
    weight: String,
    bias: String,
    layer: StructuredLayer,
    /// `|W X|^2` on the calibration images.
    energy: f64,
    /// How much of its relative output error reaches the model's outputs ([`reach`]).
    reach: f64,
}

impl Consumer {
    /// What one unit of its OBS loss costs: relative to its output, weighed by reach.
    fn loss_weight(&self) -> f64 {
        self.reach / self.energy
    }

    fn matrix(&self) -> LayerMatrix<'_> {
        LayerMatrix::of(&self.site, &self.weight, &self.bias)
    }
}

/// The share of a consumer's input channels (those of least structured OBS loss each) removed
/// together to probe its [`reach`]. Probing with 30% of its weights removed unstructured instead
/// gave the same allocations a little less: at 0.9 of the MACs COCO AP 0.249 against 0.250 on
/// coco128 and 0.265 against 0.288 on the 32 `coco_extra_train` images outside the calibration
/// draw; at 0.8, 0.163 against 0.164 and 0.185 against 0.191.
const PROBE_SHARE: f64 = 0.125;

/// What the calibration statistics say about the selected groups.
pub struct ObsChannels {
    consumers: Vec<Consumer>,
    /// Per selected group: its removal order and the cumulative loss after each removal.
    pub orders: Vec<(Vec<usize>, Vec<f64>)>,
    /// Consumer index by node index.
    consumer_of: HashMap<usize, usize>,
}

impl ObsChannels {
    /// Collects the consumers' statistics from `calib` and orders each group's channels.
    pub fn measure(
        model: &ModelProto,
        groups: &[&ChannelGroup],
        calib: &mut dyn Calibration,
    ) -> Result<Self> {
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let mut nodes: Vec<usize> = groups
            .iter()
            .flat_map(|g| g.consumers.iter())
            .filter(|c| c.kind == UseKind::Input)
            .map(|c| c.node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let names: Vec<String> = nodes
            .iter()
            .map(|&n| graph.node[n].name().to_string())
            .collect();
        if names.iter().any(String::is_empty) {
            bail!("channel recovery needs named Conv nodes");
        }
        let sites = conv_sites(model, &names)?;
        let stats = calib.input_stats(model, &sites)?;
        let mut consumers = sites
            .into_iter()
            .zip(&stats)
            .zip(&nodes)
            .map(|((site, stats), &node)| {
                let inputs = &graph.node[node].input;
                let bias = inputs
                    .get(2)
                    .filter(|b| !b.is_empty())
                    .with_context(|| format!("{}: channel recovery needs a bias", site.name))?
                    .clone();
                let w = LayerMatrix::of(&site, &inputs[1], &bias).read(graph)?;
                let energy = output_energy(&w, &stats.gram).max(f64::MIN_POSITIVE);
                Ok(Consumer {
                    layer: StructuredLayer {
                        w,
                        h_inverse: damped_inverse(&stats.gram, DAMPING)?,
                    },
                    weight: inputs[1].clone(),
                    bias,
                    site,
                    energy,
                    reach: 1.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let progress = calib.progress();
        progress.start(
            "measuring each consumer's channel losses",
            Some(consumers.len() as u64),
        );
        let perturbed: Vec<(Mat<f64>, f64)> = consumers
            .par_iter()
            .zip(&stats)
            .map(|(c, stats)| {
                let taps = c.site.kernel[0] * c.site.kernel[1];
                let block = |ch: usize| ch * taps..(ch + 1) * taps;
                let mut losses = (0..c.site.in_channels)
                    .map(|ch| Ok((c.layer.removal_loss(&block(ch).collect::<Vec<_>>())?, ch)))
                    .collect::<Result<Vec<_>>>()?;
                losses.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let count = ((c.site.in_channels as f64 * PROBE_SHARE) as usize).max(1);
                let columns: Vec<usize> = losses[..count]
                    .iter()
                    .flat_map(|&(_, ch)| block(ch))
                    .collect();
                let mut probe = c.layer.clone();
                probe.remove(&columns)?;
                let own = output_error(&c.layer.w, &probe.w, &stats.gram) / c.energy;
                progress.advance(1);
                Ok((probe.w, own))
            })
            .collect::<Result<_>>()?;
        progress.finish();
        let probes: Vec<Probe> = consumers
            .iter()
            .zip(&perturbed)
            .map(|(c, (p, own))| Probe {
                layer: c.matrix(),
                perturbed: p,
                own_error: *own,
            })
            .collect();
        let reaches = reach(model, &probes, calib)?;
        for (c, r) in consumers.iter_mut().zip(reaches) {
            c.reach = r;
        }
        let consumer_of: HashMap<usize, usize> =
            nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut this = ObsChannels {
            consumers,
            orders: Vec::new(),
            consumer_of,
        };
        let progress = calib.progress();
        progress.start("ordering each group's channels", Some(groups.len() as u64));
        this.orders = groups
            .par_iter()
            .map(|g| {
                let order = this.greedy_order(g);
                progress.advance(1);
                order
            })
            .collect::<Result<_>>()?;
        progress.finish();
        Ok(this)
    }

    /// The columns of each consumer that group channel `k` occupies.
    fn columns_of(&self, group: &ChannelGroup, k: usize) -> BTreeMap<usize, Vec<usize>> {
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for use_ in group.consumers.iter().filter(|c| c.kind == UseKind::Input) {
            let Some(position) = use_.span.position(k) else {
                continue;
            };
            let consumer = self.consumer_of[&use_.node];
            let taps =
                self.consumers[consumer].site.kernel[0] * self.consumers[consumer].site.kernel[1];
            out.entry(consumer)
                .or_default()
                .extend(position * taps..(position + 1) * taps);
        }
        out
    }

    /// Greedy OBS order of `group`'s channels with the cumulative relative loss.
    fn greedy_order(&self, group: &ChannelGroup) -> Result<(Vec<usize>, Vec<f64>)> {
        let blocks: Vec<BTreeMap<usize, Vec<usize>>> = (0..group.channels)
            .map(|k| self.columns_of(group, k))
            .collect();
        let mut layers: BTreeMap<usize, StructuredLayer> = BTreeMap::new();
        for block in &blocks {
            for &c in block.keys() {
                layers
                    .entry(c)
                    .or_insert_with(|| self.consumers[c].layer.clone());
            }
        }
        let depth = ((group.channels as f64 * MAX_FRACTION) as usize).min(group.channels);
        let mut left: Vec<usize> = (0..group.channels).collect();
        let (mut order, mut cumulative, mut total) = (Vec::new(), Vec::new(), 0.0);
        while order.len() < depth {
            let mut best: Option<(f64, usize)> = None;
            for (i, &k) in left.iter().enumerate() {
                let mut cost = 0.0;
                for (c, cols) in &blocks[k] {
                    cost += layers[c].removal_loss(cols)? * self.consumers[*c].loss_weight();
                }
                if best.is_none_or(|(b, _)| cost < b) {
                    best = Some((cost, i));
                }
            }
            let Some((_, i)) = best else { break };
            let k = left.remove(i);
            for (c, cols) in &blocks[k] {
                total += layers.get_mut(c).expect("layer").remove(cols)?
                    * self.consumers[*c].loss_weight();
            }
            order.push(k);
            cumulative.push(total);
        }
        Ok((order, cumulative))
    }

    /// Re-solves every consumer without the input channels `removed` (group index in `groups`,
    /// channels) and writes its weights and bias into `graph`.
    pub fn resolve_consumers(
        &self,
        graph: &mut GraphProto,
        groups: &[&ChannelGroup],
        removed: &[(usize, Vec<usize>)],
    ) -> Result<()> {
        let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (g, channels) in removed {
            for &k in channels {
                for (c, cols) in self.columns_of(groups[*g], k) {
                    columns.entry(c).or_default().extend(cols);
                }
            }
        }
        for (c, mut cols) in columns {
            cols.sort_unstable();
            cols.dedup();
            let consumer = &self.consumers[c];
            let mut layer = consumer.layer.clone();
            layer.remove(&cols)?;
            consumer.matrix().write(graph, &layer.w)?;
        }
        Ok(())
    }
}

/// Per selected group, how many channels to remove so that the model has at most `target` of its
/// dense MACs: `round_to` channels at a time, cheapest loss per MAC first, each group keeping at
/// least `min_width` channels and losing no more than the first of [`GROUP_SHARES`] that
/// reaches the target.
pub fn allocate_macs(
    graph: &GraphProto,
    groups: &[&ChannelGroup],
    orders: &[(Vec<usize>, Vec<f64>)],
    target: f64,
    round_to: usize,
    min_width: usize,
) -> Result<Vec<usize>> {
    let macs = MacModel::new(graph, groups)?;
    let dense = macs.total(&vec![0; groups.len()]);
    let cost = |g: usize, r: usize| if r == 0 { 0.0 } else { orders[g].1[r - 1] };
    let mut left = 1.0;
    for share in GROUP_SHARES {
        let limit = |g: usize| -> usize {
            let c = groups[g].channels;
            let deepest = orders[g].0.len().min((c as f64 * share) as usize);
            deepest.min(c - min_width.min(c)) / round_to * round_to
        };
        let mut removed = vec![0usize; groups.len()];
        while macs.total(&removed) > target * dense {
            let now = macs.total(&removed);
            let best = (0..groups.len())
                .filter(|&g| removed[g] + round_to <= limit(g))
                .map(|g| {
                    let mut next = removed.clone();
                    next[g] += round_to;
                    let saved = (now - macs.total(&next)).max(f64::MIN_POSITIVE);
                    ((cost(g, next[g]) - cost(g, removed[g])) / saved, g)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            match best {
                Some((_, g)) => removed[g] += round_to,
                None => break,
            }
        }
        left = macs.total(&removed) / dense;
        if left <= target {
            return Ok(removed);
        }
    }
    bail!("cannot reach {target} of the dense MACs: every group is at its minimum ({left:.3} left)")
}

/// Every Conv's MACs as a function of how many channels each selected group loses.
struct MacModel {
    convs: Vec<ConvMacs>,
}

/// One Conv of a [`MacModel`].
struct ConvMacs {
    /// Dense output and input channels.
    out: f64,
    inputs: f64,
    /// MACs per (output, input) channel pair.
    unit: f64,
    /// The selected group whose channels it produces, if any.
    produces: Option<usize>,
    /// Selected groups reaching its input, with how many times each does.
    reads: Vec<(usize, f64)>,
}

impl MacModel {
    fn new(graph: &GraphProto, groups: &[&ChannelGroup]) -> Result<Self> {
        let view = GraphView::new(graph);
        let layers = conv_layers(&view)?;
        let stats = model_stats(graph)?;
        let mut convs = Vec::new();
        for (layer, s) in layers.iter().zip(&stats.layers) {
            let out = s.weight_shape[0] as f64;
            let inputs = s.weight_shape[1] as f64 * layer.group as f64;
            let unit = s.macs.context("MACs of a Conv are unknown")? as f64 / (out * inputs);
            let produces = groups
                .iter()
                .position(|g| g.producers.contains(&layer.node));
            let reads = groups
                .iter()
                .enumerate()
                .map(|(g, group)| {
                    let uses = group
                        .consumers
                        .iter()
                        .filter(|c| c.node == layer.node && c.kind == UseKind::Input)
                        .count();
                    (g, uses as f64)
                })
                .filter(|&(_, n)| n > 0.0)
                .collect();
            convs.push(ConvMacs {
                out,
                inputs,
                unit,
                produces,
                reads,
            });
        }
        Ok(MacModel { convs })
    }

    fn total(&self, removed: &[usize]) -> f64 {
        self.convs
            .iter()
            .map(|c| {
                let out = c.out - c.produces.map_or(0.0, |g| removed[g] as f64);
                let inputs = c.inputs
                    - c.reads
                        .iter()
                        .map(|&(g, n)| removed[g] as f64 * n)
                        .sum::<f64>();
                out * inputs * c.unit
            })
            .sum()
    }
}
