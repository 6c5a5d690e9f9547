//! The distillation loss: the student's Detect head outputs against the teacher's, no labels.
//!
//! Each head output is `[n, na * (5 + nc), h, w]`: for every anchor `a` (YOLOv5 has `na = 3`
//! per level) the channels `a * (5 + nc) + 0..4` are the box logits (x, y, w, h; the decoded
//! box is a function of their sigmoids), `+ 4` the objectness logit and `+ 5..` the class
//! logits. With `s` a student logit, `t` the teacher's, `p = σ(s)` and `q = σ(t)`:
//!
//! - objectness and classes, binary cross-entropy against the teacher's probability, less its
//!   entropy so that a perfect student scores 0 (the KL divergence of two Bernoullis):
//!   `l = q ln(q / p) + (1 - q) ln((1 - q) / (1 - p))`, computed as
//!   `q (softplus(-s) - softplus(-t)) + (1 - q) (softplus(s) - softplus(t))` (no cancellation
//!   of large logits), `dl/ds = p - q`;
//! - boxes, the squared difference of the sigmoids that the decoded box is made of:
//!   `l = (p - q)^2`, `dl/ds = 2 (p - q) p (1 - p)`.
//!
//! Each kind is averaged over its elements in all levels and the batch, then weighted:
//! `L = w_box * mean(l_box) + w_obj * mean(l_obj) + w_cls * mean(l_cls)`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::{Real, Tensor};

/// Anchors per level of a YOLOv5 Detect head.
pub const ANCHORS: usize = 3;

/// The weights of the three parts of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    #[serde(rename = "box")]
    pub boxes: f64,
    pub obj: f64,
    pub cls: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            boxes: 5.0,
            obj: 1.0,
            cls: 1.0,
        }
    }
}

/// What a loss evaluation measured: the total and its parts (unweighted means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossParts {
    pub total: f64,
    #[serde(rename = "box")]
    pub boxes: f64,
    pub obj: f64,
    pub cls: f64,
}

/// Which part of the loss a channel of a head output belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Box,
    Obj,
    Cls,
}

fn kind(channel: usize, per_anchor: usize) -> Kind {
    match channel % per_anchor {
        0..4 => Kind::Box,
        4 => Kind::Obj,
        _ => Kind::Cls,
    }
}

/// Checks that `channels` is a Detect head output's channel count (`3 * (5 + nc)`, nc >= 1).
pub fn check_head(channels: usize) -> anyhow::Result<()> {
    if !channels.is_multiple_of(ANCHORS) || channels / ANCHORS < 6 {
        anyhow::bail!(
            "a head output of {channels} channels is not a YOLOv5 Detect output \
             ({ANCHORS} anchors x (5 + classes))"
        );
    }
    Ok(())
}

/// The loss of `student` against `teacher` (head outputs in the same order and shapes) and,
/// when `want_grad`, its gradient with respect to each student output.
pub fn distill<T: Real>(
    student: &[Tensor<T>],
    teacher: &[Tensor<T>],
    weights: &LossWeights,
    want_grad: bool,
) -> (LossParts, Vec<Tensor<T>>) {
    // element counts of each kind, over all levels
    let mut counts = [0usize; 3];
    for s in student {
        let per_anchor = s.shape[1] / ANCHORS;
        let positions = s.shape[0] * s.plane() * ANCHORS;
        counts[0] += positions * 4;
        counts[1] += positions;
        counts[2] += positions * (per_anchor - 5);
    }
    let scale = [
        weights.boxes / counts[0] as f64,
        weights.obj / counts[1] as f64,
        weights.cls / counts[2] as f64,
    ];
    let mut sums = [0f64; 3];
    let mut grads = Vec::new();
    for (s, t) in student.iter().zip(teacher) {
        let plane = s.plane();
        let channels = s.shape[1];
        let per_anchor = channels / ANCHORS;
        // one plane (a channel of one image) at a time: its sum, of one kind, and its gradient
        let work = |i: usize, sp: &[T], tp: &[T], mut g: Option<&mut [T]>| -> (Kind, f64) {
            let k = kind(i % channels, per_anchor);
            let w = T::from(scale[k as usize]).expect("a finite weight");
            let mut sum = 0f64;
            for (j, (&sv, &tv)) in sp.iter().zip(tp).enumerate() {
                let (p, ps) = logistic(sv);
                let (q, pt) = logistic(tv);
                let (value, slope) = match k {
                    Kind::Box => {
                        let d = p - q;
                        (d * d, T::of(2.0) * d * p * (T::one() - p))
                    }
                    _ => (q * (ps.1 - pt.1) + (T::one() - q) * (ps.0 - pt.0), p - q),
                };
                sum += value.as_f64();
                if let Some(g) = g.as_deref_mut() {
                    g[j] = w * slope;
                }
            }
            (k, sum)
        };
        let pairs = s.data.par_chunks(plane).zip(t.data.par_chunks(plane));
        let plane_sums: Vec<(Kind, f64)> = if want_grad {
            let mut grad = Tensor::zeros(s.shape);
            let sums = grad
                .data
                .par_chunks_mut(plane)
                .zip(pairs)
                .enumerate()
                .map(|(i, (g, (sp, tp)))| work(i, sp, tp, Some(g)))
                .collect();
            grads.push(grad);
            sums
        } else {
            pairs
                .enumerate()
                .map(|(i, (sp, tp))| work(i, sp, tp, None))
                .collect()
        };
        for (k, sum) in plane_sums {
            sums[k as usize] += sum;
        }
    }
    let means = [
        sums[0] / counts[0] as f64,
        sums[1] / counts[1] as f64,
        sums[2] / counts[2] as f64,
    ];
    let parts = LossParts {
        total: weights.boxes * means[0] + weights.obj * means[1] + weights.cls * means[2],
        boxes: means[0],
        obj: means[1],
        cls: means[2],
    };
    (parts, grads)
}

/// `(σ(x), (softplus(x), softplus(-x)))` from one exponential and one logarithm: with
/// `e = exp(-|x|)`, `σ(x)` is `1 / (1 + e)` or `e / (1 + e)`, and `softplus(±x) =
/// max(±x, 0) + ln(1 + e)`.
fn logistic<T: Real>(x: T) -> (T, (T, T)) {
    let e = (-x.abs()).exp_vec();
    let p = if x >= T::zero() {
        T::one() / (T::one() + e)
    } else {
        e / (T::one() + e)
    };
    let l = e.ln_1p();
    (p, (x.max(T::zero()) + l, (-x).max(T::zero()) + l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_is_zero_for_the_teacher_and_its_gradient_matches_differences() {
        let shape = [1, 3 * 7, 2, 2];
        let n: usize = shape.iter().product();
        let t = Tensor {
            shape,
            data: (0..n).map(|i| ((i * 37 % 11) as f64 - 5.0) / 2.0).collect(),
        };
        let weights = LossWeights::default();
        let (same, _) = distill(
            std::slice::from_ref(&t),
            std::slice::from_ref(&t),
            &weights,
            false,
        );
        assert!(same.total.abs() < 1e-12, "{same:?}");
        let s = Tensor {
            shape,
            data: t
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| v + ((i % 5) as f64 - 2.0) / 3.0)
                .collect(),
        };
        let (_, grads) = distill(
            std::slice::from_ref(&s),
            std::slice::from_ref(&t),
            &weights,
            true,
        );
        let h = 1e-6;
        for i in [0, 3, 4, 5, 6, 7, 11, 40, n - 1] {
            let at = |d: f64| {
                let mut x = s.clone();
                x.data[i] += d;
                distill(
                    std::slice::from_ref(&x),
                    std::slice::from_ref(&t),
                    &weights,
                    false,
                )
                .0
                .total
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let analytic = grads[0].data[i];
            assert!(
                (numeric - analytic).abs() < 1e-6 * (1.0 + numeric.abs()),
                "element {i}: {numeric} against {analytic}"
            );
        }
    }
}
