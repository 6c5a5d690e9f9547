//! `prune_n_m`: N:M semi-structured sparsity of Conv weights.
//!
//! Before: dense Conv weights `[out, in / group, k...]`. After: in every run of M consecutive
//! weights along the input-channel axis (fixed output channel and kernel position), only the N of
//! largest |w| stay; the others become 0 (ties: the lower input channel stays). The input-channel
//! count of every selected layer must be a multiple of M. Biases are untouched.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::selection::{LayerFilter, rewrite_weights, selected_weights, zero_like};
use crate::onnx::proto::GraphProto;

/// Options of `prune_n_m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneNM {
    /// Weights kept in each group.
    pub n: usize,
    /// Group size along the input-channel axis.
    pub m: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl PruneNM {
    /// Parses "N:M", e.g. "2:4".
    pub fn parse_pattern(pattern: &str) -> Result<(usize, usize)> {
        let parsed = pattern
            .split_once(':')
            .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
        match parsed {
            Some(nm) => Ok(nm),
            None => bail!("pattern {pattern:?} is not of the form N:M (e.g. 2:4)"),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.m == 0 || self.n > self.m {
            bail!(
                "N:M pattern {}:{} needs 0 <= N <= M and M > 0",
                self.n,
                self.m
            );
        }
        LayerFilter::new(&self.include, &self.exclude).map(drop)
    }

    pub fn run(&self, graph: &mut GraphProto) -> Result<String> {
        let filter = LayerFilter::new(&self.include, &self.exclude)?;
        let weights = selected_weights(graph, &filter)?;
        for w in &weights {
            let inputs = w.dims.get(1).copied().unwrap_or(0);
            if !(inputs as usize).is_multiple_of(self.m) {
                bail!(
                    "{:?}: {} input channels are not a multiple of M = {} (pattern {}:{}); exclude the layer with --exclude",
                    w.layer.name,
                    inputs,
                    self.m,
                    self.n,
                    self.m
                );
            }
        }
        let zeroed = rewrite_weights(graph, &weights, |_, w, values| {
            let inputs = w.dims[1] as usize;
            let inner: usize = w.dims[2..].iter().product::<i64>() as usize;
            prune_groups(values, inputs, inner, self.n, self.m)
        })?;
        let total: usize = weights.iter().map(|w| w.numel).sum();
        Ok(format!(
            "zeroed {zeroed} of {total} weights in {} conv layers ({}:{} pattern)",
            weights.len(),
            self.n,
            self.m
        ))
    }
}

/// Applies N:M along the input-channel axis of `[out, inputs, inner]` values; returns the count
/// of entries newly set to zero or kept zero by the pattern.
fn prune_groups(values: &mut [f32], inputs: usize, inner: usize, n: usize, m: usize) -> u64 {
    let mut zeroed = 0;
    let mut group: Vec<(usize, f32)> = Vec::with_capacity(m);
    for filter in values.chunks_exact_mut(inputs * inner) {
        for position in 0..inner {
            for start in (0..inputs).step_by(m) {
                group.clear();
                group.extend(
                    (start..start + m)
                        .map(|c| (c * inner + position, filter[c * inner + position].abs())),
                );
                // Largest |w| first; equal magnitudes keep the lower input channel.
                group.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for &(index, _) in &group[n..] {
                    filter[index] = zero_like(filter[index]);
                    zeroed += 1;
                }
            }
        }
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_two_largest_of_four_along_input_channels() {
        // One filter, 4 input channels, kernel of 2 positions: values[c * 2 + p].
        let mut v = [1.0, -8.0, -3.0, 0.5, 2.0, 0.25, -0.5, 4.0];
        prune_groups(&mut v, 4, 2, 2, 4);
        // Position 0 holds 1, -3, 2, -0.5: keep -3 and 2. Position 1 holds -8, 0.5, 0.25, 4.
        assert_eq!(v, [0.0, -8.0, -3.0, 0.0, 2.0, 0.0, 0.0, 4.0]);
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(PruneNM::parse_pattern("2:4").unwrap(), (2, 4));
        assert!(PruneNM::parse_pattern("2-4").is_err());
    }
}
