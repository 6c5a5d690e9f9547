//! `prune_magnitude`: unstructured magnitude pruning of Conv weights.
//!
//! Before: dense Conv weights. After: the same tensors (same shapes, same storage) with the
//! smallest-|w| entries set to 0; biases and every other tensor untouched.
//!
//! - `scope: layer` (the pruning guide's `l1_unstructured` on each Conv): in every selected
//!   weight of n entries, the `round_half_even(amount x n)` entries of smallest |w| become 0.
//! - `scope: global`: one threshold over all selected weights; `round_half_even(amount x N)`
//!   entries of smallest |w| over the N selected entries become 0.
//!
//! Ties at the threshold are broken by position (layer order, then index), so the result is
//! deterministic. Entries already 0 count among the smallest.

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::options::{CalibOrder, Recover, pass_options, validate_budget};
use super::recovery::prune_obs::{Target, prune_with_obs};
use super::recovery::{calibration, with_recovery};
use super::selection::{
    LayerFilter, SelectedWeight, read_values, rewrite_weights, round_half_even, selected_weights,
    zero_like,
};
use super::{Pass, PassContext, PassOutput, SearchAxis};
use crate::onnx::proto::{GraphProto, ModelProto};

pass_options! {
    /// Options of `prune_magnitude`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PruneMagnitude {
        /// Fraction of weights to zero, in [0, 1] (with `max_map_drop`, the largest the search
        /// tries).
        pub amount: f64,
        #[serde(default)]
        pub scope: Scope,
        ..layers,
        ..recovery,
        ..budget,
    }
}

/// Where the fraction applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The fraction of each layer.
    #[default]
    Layer,
    /// The fraction of all selected layers together.
    Global,
}

impl Pass for PruneMagnitude {
    fn name(&self) -> &'static str {
        "prune_magnitude"
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.amount) {
            bail!("amount {} is outside [0, 1]", self.amount);
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

    /// Prunes with the recovery `recover` asks for.
    fn run(&self, model: &mut ModelProto, cx: &mut PassContext) -> Result<PassOutput> {
        let filter = LayerFilter::new(&self.include, &self.exclude)?;
        let target = match self.scope {
            Scope::Layer => Target::Layer(self.amount),
            Scope::Global => Target::Global(self.amount),
        };
        with_recovery(
            model,
            self.recover,
            calibration(self.recover, cx)?,
            |graph| self.prune(graph),
            |model, calib| {
                prune_with_obs(
                    model,
                    &filter,
                    target,
                    self.order.unwrap_or_default(),
                    calib,
                )
            },
        )
        .map(PassOutput::summary)
    }

    fn budget(&self) -> Option<(f64, SearchAxis)> {
        self.max_map_drop.map(|drop| (drop, SearchAxis::Amount))
    }

    fn search_limit(&self, axis: SearchAxis) -> Option<(f64, bool)> {
        (axis == SearchAxis::Amount).then_some((self.amount, false))
    }

    fn set_search_step(&mut self, _: SearchAxis, k: u32, steps: u32) {
        self.amount = f64::from(k) / f64::from(steps);
        self.max_map_drop = None;
    }
}

impl PruneMagnitude {
    /// Prunes by magnitude, with no recovery.
    pub fn prune(&self, graph: &mut GraphProto) -> Result<String> {
        let filter = LayerFilter::new(&self.include, &self.exclude)?;
        let weights = selected_weights(graph, &filter)?;
        let zeroed = match self.scope {
            Scope::Layer => rewrite_weights(graph, &weights, |_, w, values| {
                let k = round_half_even(self.amount * w.numel as f64) as usize;
                zero_smallest(values, k)
            })?,
            Scope::Global => {
                let quotas = global_quotas(graph, &weights, self.amount)?;
                rewrite_weights(graph, &weights, |i, _, values| {
                    zero_below(values, quotas[i])
                })?
            }
        };
        let total: usize = weights.iter().map(|w| w.numel).sum();
        let scope = match self.scope {
            Scope::Layer => "layer",
            Scope::Global => "global",
        };
        Ok(format!(
            "zeroed {zeroed} of {total} weights in {} conv layers ({scope} scope, amount {})",
            weights.len(),
            self.amount
        ))
    }
}

/// Zeros the `k` entries of smallest |w| (lowest index first among equals); returns `k`.
fn zero_smallest(values: &mut [f32], k: usize) -> u64 {
    let k = k.min(values.len());
    if k == 0 {
        return 0;
    }
    let mut histogram = Histogram::new();
    histogram.add(values);
    let (bucket, below) = histogram.locate(k);
    let quota = Quota::at_rank(&mut keys_in_bucket(values, bucket), k, below);
    zero_below(values, quota)
}

/// The order in which entries go: the bits of |w|, which order like |w| (NaN above all).
fn magnitude_key(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// What one layer zeroes: every entry whose [`magnitude_key`] is below `threshold`, and the first
/// `ties` entries equal to it.
#[derive(Debug, Clone, Copy)]
struct Quota {
    threshold: u32,
    ties: usize,
}

impl Quota {
    const NONE: Quota = Quota {
        threshold: 0,
        ties: 0,
    };

    /// The quota of the `k` smallest keys (1-based), given `candidates`, the keys of the
    /// [`Histogram`] bucket that holds the `k`-th, and `below`, the count of keys in lower
    /// buckets. Reorders `candidates`.
    fn at_rank(candidates: &mut [u32], k: usize, below: usize) -> Quota {
        let threshold = *candidates.select_nth_unstable(k - below - 1).1;
        let smaller = below + candidates.iter().filter(|&&c| c < threshold).count();
        Quota {
            threshold,
            ties: k - smaller,
        }
    }
}

/// Counts of magnitude keys by their high 16 bits: selecting the `k` smallest entries first
/// finds the bucket of the `k`-th, so only that bucket's keys are copied and ordered.
struct Histogram(Vec<u64>);

impl Histogram {
    const SHIFT: u32 = 15;

    fn new() -> Self {
        Histogram(vec![0; 1 << (31 - Self::SHIFT)])
    }

    fn add(&mut self, values: &[f32]) {
        for &v in values {
            self.0[(magnitude_key(v) >> Self::SHIFT) as usize] += 1;
        }
    }

    fn merge(mut self, other: Histogram) -> Histogram {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a += b);
        self
    }

    /// The bucket that holds the `k`-th smallest key (1 <= k <= the number of keys counted),
    /// and the number of keys in lower buckets.
    fn locate(&self, k: usize) -> (u32, usize) {
        let mut below = 0;
        for (bucket, &count) in self.0.iter().enumerate() {
            if below + count as usize >= k {
                return (bucket as u32, below);
            }
            below += count as usize;
        }
        unreachable!("k = {k} exceeds the {below} keys counted")
    }
}

/// The magnitude keys of `values` that fall in `bucket` of a [`Histogram`].
fn keys_in_bucket(values: &[f32], bucket: u32) -> Vec<u32> {
    values
        .iter()
        .map(|&v| magnitude_key(v))
        .filter(|key| key >> Histogram::SHIFT == bucket)
        .collect()
}

/// One threshold over all weights: the `round_half_even(amount x N)`-th smallest |w|. Entries
/// below it all go; entries equal to it go in layer and index order until exactly that many are
/// zero. Reads the weights twice (a histogram, then the keys near the threshold) and holds only
/// those keys, never all weights.
fn global_quotas(
    graph: &GraphProto,
    weights: &[SelectedWeight],
    amount: f64,
) -> Result<Vec<Quota>> {
    let total: usize = weights.iter().map(|w| w.numel).sum();
    let k = (round_half_even(amount * total as f64) as usize).min(total);
    if k == 0 {
        return Ok(vec![Quota::NONE; weights.len()]);
    }
    let histogram = weights
        .par_iter()
        .map(|w| {
            let mut h = Histogram::new();
            h.add(&read_values(graph, w)?);
            anyhow::Ok(h)
        })
        .try_reduce(Histogram::new, |a, b| Ok(a.merge(b)))?;
    let (bucket, below) = histogram.locate(k);
    let candidates: Vec<Vec<u32>> = weights
        .par_iter()
        .map(|w| Ok(keys_in_bucket(&read_values(graph, w)?, bucket)))
        .collect::<Result<_>>()?;
    let Quota { threshold, ties } = Quota::at_rank(&mut candidates.concat(), k, below);
    let mut ties_left = ties;
    Ok(candidates
        .iter()
        .map(|keys| {
            let equal = keys.iter().filter(|&&key| key == threshold).count();
            let ties = equal.min(ties_left);
            ties_left -= ties;
            Quota { threshold, ties }
        })
        .collect())
}

/// Applies a [`Quota`]; returns how many entries it zeroed.
fn zero_below(values: &mut [f32], quota: Quota) -> u64 {
    let mut zeroed = 0;
    for v in values.iter_mut() {
        // Branch-free, so that it vectorises: entries below keep only their sign bit.
        let below = magnitude_key(*v) < quota.threshold;
        let keep = if below { 0x8000_0000 } else { u32::MAX };
        *v = f32::from_bits(v.to_bits() & keep);
        zeroed += u64::from(below);
    }
    let mut ties = quota.ties;
    for v in values.iter_mut() {
        if ties == 0 {
            break;
        }
        if magnitude_key(*v) == quota.threshold {
            *v = zero_like(*v);
            ties -= 1;
            zeroed += 1;
        }
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor;
    use crate::synth::{SynthSpec, Variant, build};

    /// The synthetic yolov5n's graph with weights rounded to multiples of 1/64, so that many
    /// entries tie at any threshold, within and across layers.
    fn coarse_yolov5n() -> (GraphProto, Vec<SelectedWeight>) {
        let mut graph = build(&SynthSpec::new(Variant::N)).unwrap().graph.unwrap();
        let all = LayerFilter::new(&[], &[]).unwrap();
        let weights = selected_weights(&graph, &all).unwrap();
        for w in &weights {
            let t = &mut graph.initializer[w.initializer];
            let coarse = tensor::to_f32(t)
                .unwrap()
                .iter()
                .map(|v| (v * 64.0).round() / 64.0)
                .collect();
            tensor::set_f32(t, coarse).unwrap();
        }
        (graph, weights)
    }

    /// Oracle: zero the first `k` of `keys` after a full sort of (|w|, layer, index).
    fn zero_first_k(
        mut layers: Vec<Vec<f32>>,
        mut keys: Vec<(u32, usize, usize)>,
        k: usize,
    ) -> Vec<Vec<f32>> {
        keys.sort_unstable();
        for &(_, layer, index) in &keys[..k] {
            let v = &mut layers[layer][index];
            *v = zero_like(*v);
        }
        layers
    }

    fn bits(layers: &[Vec<f32>]) -> Vec<Vec<u32>> {
        layers
            .iter()
            .map(|l| l.iter().map(|v| v.to_bits()).collect())
            .collect()
    }

    #[test]
    fn both_scopes_zero_the_k_smallest_as_a_full_sort_does() {
        let (graph, weights) = coarse_yolov5n();
        let before: Vec<Vec<f32>> = weights
            .iter()
            .map(|w| read_values(&graph, w).unwrap())
            .collect();
        let keys = |layer: usize| {
            before[layer]
                .iter()
                .enumerate()
                .map(move |(index, v)| (v.abs().to_bits(), layer, index))
        };
        let amount = 0.37;
        for scope in [Scope::Layer, Scope::Global] {
            let mut pruned = graph.clone();
            let pass = PruneMagnitude {
                amount,
                scope,
                include: vec![],
                exclude: vec![],
                recover: Recover::None,
                order: None,
                max_map_drop: None,
            };
            pass.prune(&mut pruned).unwrap();
            let got: Vec<Vec<f32>> = weights
                .iter()
                .map(|w| read_values(&pruned, w).unwrap())
                .collect();
            let expected = match scope {
                Scope::Layer => (0..before.len())
                    .map(|l| {
                        let k = round_half_even(amount * before[l].len() as f64) as usize;
                        zero_first_k(
                            vec![before[l].clone()],
                            keys(l).map(|(m, _, i)| (m, 0, i)).collect(),
                            k,
                        )
                        .remove(0)
                    })
                    .collect(),
                Scope::Global => {
                    let all: Vec<_> = (0..before.len()).flat_map(keys).collect();
                    let k = round_half_even(amount * all.len() as f64) as usize;
                    zero_first_k(before.clone(), all, k)
                }
            };
            assert!(
                bits(&got) == bits(&expected),
                "{scope:?} scope differs from the full sort"
            );
        }
    }

    #[test]
    fn zero_smallest_breaks_ties_by_index() {
        // Three entries tie at |0.1|: the two of lowest index go.
        let mut v = [0.5, -0.1, 0.1, 0.3, -0.1];
        assert_eq!(zero_smallest(&mut v, 2), 2);
        assert_eq!(v, [0.5, 0.0, 0.0, 0.3, -0.1]);
        let mut v = [0.5, -0.1, 0.1, 0.3, -0.1];
        zero_smallest(&mut v, 3);
        assert_eq!(v, [0.5, 0.0, 0.0, 0.3, 0.0]);
    }

    #[test]
    fn zero_smallest_handles_all_and_none() {
        let mut v = [1.0, 2.0];
        assert_eq!(zero_smallest(&mut v, 0), 0);
        assert_eq!(v, [1.0, 2.0]);
        zero_smallest(&mut v, 2);
        assert_eq!(v, [0.0, 0.0]);
    }
}
