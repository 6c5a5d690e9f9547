//! `prune_n_m`: N:M semi-structured sparsity of Conv weights.
//!
//! Before: dense Conv weights `[out, in / group, k...]`. After: in every run of M consecutive
//! weights along the input-channel axis (fixed output channel and kernel position), only the N of
//! largest |w| stay; the others become 0 (ties: the lower input channel stays). Selected layers
//! whose input-channel count is not a multiple of M (a 3-channel stem) stay dense and are named
//! in the report. Biases are untouched.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::options::{CalibOrder, Recover, pass_options};
use super::recovery::prune_obs::{Target, prune_with_obs};
use super::recovery::{calibration, with_recovery};
use super::selection::{LayerFilter, rewrite_weights, selected_weights, zero_like};
use super::{Pass, PassContext, PassOutput};
use crate::onnx::proto::{GraphProto, ModelProto};

pass_options! {
    /// Options of `prune_n_m`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PruneNM {
        /// Weights kept in each group.
        pub n: usize,
        /// Group size along the input-channel axis.
        pub m: usize,
        ..layers,
        ..recovery,
    }
}

impl Pass for PruneNM {
    fn name(&self) -> &'static str {
        "prune_n_m"
    }

    fn validate(&self) -> Result<()> {
        if self.m == 0 || self.n > self.m {
            bail!(
                "N:M pattern {}:{} needs 0 <= N <= M and M > 0",
                self.n,
                self.m
            );
        }
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
        let target = Target::Pattern {
            n: self.n,
            m: self.m,
        };
        let order = self.order.unwrap_or_default();
        with_recovery(
            model,
            self.recover,
            calibration(self.recover, cx)?,
            |graph| self.prune(graph),
            |model, calib| prune_with_obs(model, &filter, target, order, calib),
        )
        .map(PassOutput::summary)
    }
}

impl PruneNM {
    /// Prunes by magnitude, with no recovery.
    pub fn prune(&self, graph: &mut GraphProto) -> Result<String> {
        let filter = LayerFilter::new(&self.include, &self.exclude)?;
        let (weights, skipped): (Vec<_>, Vec<_>) = selected_weights(graph, &filter)?
            .into_iter()
            .partition(|w| (w.dims.get(1).copied().unwrap_or(0) as usize).is_multiple_of(self.m));
        if weights.is_empty() {
            bail!(
                "no selected layer has a multiple of M = {} input channels (pattern {}:{})",
                self.m,
                self.n,
                self.m
            );
        }
        let zeroed = rewrite_weights(graph, &weights, |_, w, values| {
            let inputs = w.dims[1] as usize;
            let inner: usize = w.dims[2..].iter().product::<i64>() as usize;
            prune_groups(values, inputs, inner, self.n, self.m)
        })?;
        let total: usize = weights.iter().map(|w| w.numel).sum();
        let mut summary = format!(
            "zeroed {zeroed} of {total} weights in {} conv layers ({}:{} pattern)",
            weights.len(),
            self.n,
            self.m
        );
        if !skipped.is_empty() {
            let names: Vec<String> = skipped
                .iter()
                .map(|w| format!("{} ({} input channels)", w.layer.name, w.dims[1]))
                .collect();
            summary += &format!("; left dense: {}", names.join(", "));
        }
        Ok(summary)
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
}
