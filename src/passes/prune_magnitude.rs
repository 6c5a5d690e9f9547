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
use serde::{Deserialize, Serialize};

use super::selection::{
    LayerFilter, SelectedWeight, read_values, rewrite_weights, round_half_even, selected_weights,
    zero_like,
};
use crate::onnx::proto::GraphProto;

/// Options of `prune_magnitude`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneMagnitude {
    /// Fraction of weights to zero, in [0, 1].
    pub amount: f64,
    #[serde(default)]
    pub scope: Scope,
    /// Only layers whose node name matches one of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Never layers whose node name matches one of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Where the fraction applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The fraction of each layer.
    #[default]
    Layer,
    /// The fraction of all selected layers together.
    Global,
}

impl PruneMagnitude {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.amount) {
            bail!("amount {} is outside [0, 1]", self.amount);
        }
        LayerFilter::new(&self.include, &self.exclude).map(drop)
    }

    pub fn run(&self, graph: &mut GraphProto) -> Result<String> {
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
    if k == 0 {
        return 0;
    }
    // |w| as bits orders like |w| for non-NaN floats; the index in the low half breaks ties.
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (u64::from(v.abs().to_bits()) << 32) | i as u64)
        .collect();
    if k < keys.len() {
        keys.select_nth_unstable(k);
    }
    for &key in &keys[..k.min(keys.len())] {
        let v = &mut values[(key & 0xffff_ffff) as usize];
        *v = zero_like(*v);
    }
    k.min(values.len()) as u64
}

/// What one layer zeroes in global scope: every |w| below `threshold`, and the first `ties`
/// entries equal to it.
#[derive(Debug, Clone, Copy)]
struct Quota {
    threshold: f32,
    ties: usize,
}

/// One threshold over all weights: the `round_half_even(amount x N)`-th smallest |w|. Entries
/// below it all go; entries equal to it go in layer and index order until exactly that many are
/// zero.
fn global_quotas(
    graph: &GraphProto,
    weights: &[SelectedWeight],
    amount: f64,
) -> Result<Vec<Quota>> {
    let total: usize = weights.iter().map(|w| w.numel).sum();
    let k = round_half_even(amount * total as f64) as usize;
    if k == 0 {
        return Ok(vec![
            Quota {
                threshold: 0.0,
                ties: 0
            };
            weights.len()
        ]);
    }
    let mut magnitudes = Vec::with_capacity(total);
    for w in weights {
        magnitudes.extend(read_values(graph, w)?.iter().map(|v| v.abs()));
    }
    let mut sorted = magnitudes.clone();
    let threshold = if k >= total {
        f32::INFINITY
    } else {
        *sorted.select_nth_unstable_by(k - 1, f32::total_cmp).1
    };
    drop(sorted);
    let below = magnitudes.iter().filter(|m| **m < threshold).count();
    let mut ties_left = k.saturating_sub(below);
    let mut offset = 0;
    Ok(weights
        .iter()
        .map(|w| {
            let equal = magnitudes[offset..offset + w.numel]
                .iter()
                .filter(|m| **m == threshold)
                .count();
            offset += w.numel;
            let ties = equal.min(ties_left);
            ties_left -= ties;
            Quota { threshold, ties }
        })
        .collect())
}

/// Applies a [`Quota`]; returns how many entries it zeroed.
fn zero_below(values: &mut [f32], quota: Quota) -> u64 {
    let mut ties = quota.ties;
    let mut zeroed = 0;
    for v in values.iter_mut() {
        let m = v.abs();
        if m < quota.threshold || (m == quota.threshold && ties > 0) {
            if m == quota.threshold {
                ties -= 1;
            }
            *v = zero_like(*v);
            zeroed += 1;
        }
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;

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
