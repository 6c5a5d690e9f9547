//! Adam on the Conv parameters with the pruning held fixed, and the learning-rate schedule.
//!
//! The mask of a parameter is "it was non-zero in the student": a masked gradient is zeroed
//! before Adam sees it and a masked parameter is never written, so every zero of the pruned
//! model stays exactly zero (unstructured sparsity and N:M groups hold), and shapes never
//! change (channel-pruned models keep their widths).

use serde::{Deserialize, Serialize};

use super::network::ConvParams;

/// Which parameters may change: `true` where the student's value is non-zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub weight: Vec<bool>,
    pub bias: Vec<bool>,
}

impl Mask {
    pub fn of(params: &ConvParams<f32>) -> Self {
        Mask {
            weight: params.weight.iter().map(|&v| v != 0.0).collect(),
            bias: params.bias.iter().map(|&v| v != 0.0).collect(),
        }
    }
}

/// Adam's hyper-parameters (Kingma & Ba): the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam's state: the step count and the first and second moments of every parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub settings: AdamSettings,
    pub step: u64,
    pub m: Vec<ConvParams<f32>>,
    pub v: Vec<ConvParams<f32>>,
}

impl Adam {
    pub fn new(settings: AdamSettings, params: &[ConvParams<f32>]) -> Self {
        Adam {
            settings,
            step: 0,
            m: params.iter().map(ConvParams::zeros_like).collect(),
            v: params.iter().map(ConvParams::zeros_like).collect(),
        }
    }

    /// One update of `params` by `grads` at learning rate `lr`, skipping masked entries.
    pub fn update(
        &mut self,
        params: &mut [ConvParams<f32>],
        grads: &[ConvParams<f32>],
        masks: &[Mask],
        lr: f32,
    ) {
        use rayon::prelude::*;
        self.step += 1;
        let AdamSettings { beta1, beta2, eps } = self.settings;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        let step = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], keep: &[bool]| {
            p.par_iter_mut()
                .zip(g.par_iter())
                .zip(m.par_iter_mut().zip(v.par_iter_mut()))
                .zip(keep.par_iter())
                .for_each(|(((p, &g), (m, v)), &keep)| {
                    if keep {
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                });
        };
        for (((p, g), (m, v)), mask) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .zip(masks)
        {
            step(
                &mut p.weight,
                &g.weight,
                &mut m.weight,
                &mut v.weight,
                &mask.weight,
            );
            step(&mut p.bias, &g.bias, &mut m.bias, &mut v.bias, &mask.bias);
        }
    }
}

/// The learning rate at `step` of `total`: cosine decay from `lr` to `lr * final_fraction`.
pub fn cosine_lr(lr: f32, final_fraction: f32, step: u64, total: u64) -> f32 {
    let progress = step as f32 / total.max(1) as f32;
    let cos = 0.5 * (1.0 + (std::f32::consts::PI * progress.min(1.0)).cos());
    lr * (final_fraction + (1.0 - final_fraction) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_parameters_never_move_and_the_others_descend() {
        let mut params = vec![ConvParams {
            weight: vec![0.0, 1.0, -2.0, 0.0],
            bias: vec![0.5, 0.0],
        }];
        let masks: Vec<Mask> = params.iter().map(Mask::of).collect();
        let mut adam = Adam::new(AdamSettings::default(), &params);
        let grads = vec![ConvParams {
            weight: vec![1.0, 1.0, -1.0, -3.0],
            bias: vec![1.0, 1.0],
        }];
        for _ in 0..3 {
            adam.update(&mut params, &grads, &masks, 0.1);
        }
        let p = &params[0];
        assert_eq!((p.weight[0], p.weight[3], p.bias[1]), (0.0, 0.0, 0.0));
        // Adam's bias-corrected step is lr * sign(g) for a constant gradient
        assert!((p.weight[1] - 0.7).abs() < 1e-5, "{p:?}");
        assert!((p.weight[2] + 1.7).abs() < 1e-5, "{p:?}");
        assert!((p.bias[0] - 0.2).abs() < 1e-5, "{p:?}");
    }

    #[test]
    fn the_cosine_schedule_runs_from_lr_to_its_floor() {
        assert_eq!(cosine_lr(1.0, 0.01, 0, 100), 1.0);
        assert!((cosine_lr(1.0, 0.01, 50, 100) - 0.505).abs() < 1e-6);
        assert!((cosine_lr(1.0, 0.01, 100, 100) - 0.01).abs() < 1e-6);
    }
}
