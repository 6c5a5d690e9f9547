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
//! Objectness is averaged over every position (anchor and cell) of every level and image. The
//! box and class terms only matter where there is an object: at each position their sums over
//! the 4 box and the nc class channels are weighted by the teacher's objectness `q_obj` there,
//! and divided by the total of `q_obj` (so that thousands of background cells do not drown the
//! few objects; with every term averaged over all elements, distillation lowered the
//! held-out loss while class scores on objects got worse and COCO AP fell, 0.106 to 0.043 for
//! an OBS 2:4 yolov5n). Then
//! `L = w_box * l_box + w_obj * l_obj + w_cls * l_cls + w_feat * l_feat`.
//!
//! The feature term ([`feature_distill`]) compares intermediate activations that the student
//! and the teacher share (same node, same shape): the output of every convolution block's
//! SiLU. Each one's mean squared difference is divided by the teacher's mean square there (so
//! that every layer counts alike whatever its scale), and the layers are averaged:
//! `l_feat = 1/K sum_k mean((s_k - t_k)^2) / mean(t_k^2)`. It gives every layer of a pruned
//! model a target of its own instead of only what reaches the head.
//!
//! The default weight 20 (with `lr` 3e-4) was chosen on training images only: an OBS 2:4
//! yolov5n fine-tuned for 10 epochs on 227 of `coco_extra_train` and `unlabeled_pool` with 40
//! labelled ones kept aside reached, on those 40, COCO AP 0.211 (0.124 before fine-tuning):
//! against 0.184, 0.192, 0.200 and 0.207 with weights 0, 1, 5 and 20 at lr 1e-4, and 0.203
//! with weight 5 at 3e-4; its held-out head loss was the lowest too (0.766 against 1.055
//! without features). 20 epochs of the same reached 0.222 there (`FineTuneSettings`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::{CHUNK, Real, Tensor, sigmoid, vector_targets, zip_map};

/// Anchors per level of a YOLOv5 Detect head.
pub const ANCHORS: usize = 3;

/// The weights of the parts of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    #[serde(rename = "box")]
    pub boxes: f64,
    pub obj: f64,
    pub cls: f64,
    /// The weight of the feature term (0: head outputs only).
    pub feat: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            boxes: 5.0,
            obj: 1.0,
            cls: 1.0,
            feat: 20.0,
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
    pub feat: f64,
}

impl LossParts {
    /// `self + w * other`, part by part.
    pub fn add_scaled(&self, w: f64, other: &LossParts) -> LossParts {
        LossParts {
            total: self.total + w * other.total,
            boxes: self.boxes + w * other.boxes,
            obj: self.obj + w * other.obj,
            cls: self.cls + w * other.cls,
            feat: self.feat + w * other.feat,
        }
    }
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
    // The teacher's objectness probability at every position (anchor x cell) of every head,
    // and their total: the weight and the normaliser of the box and class terms.
    let objectness: Vec<Vec<T>> = teacher
        .iter()
        .map(|t| {
            let per_anchor = t.shape[1] / ANCHORS;
            let plane = t.plane();
            (0..t.shape[0] * ANCHORS)
                .flat_map(|ba| {
                    let (b, a) = (ba / ANCHORS, ba % ANCHORS);
                    let at = (b * t.shape[1] + a * per_anchor + 4) * plane;
                    t.data[at..at + plane].iter().map(|&v| logistic(v).0)
                })
                .collect()
        })
        .collect();
    let q_total: f64 = objectness
        .iter()
        .flatten()
        .map(|q| q.as_f64())
        .sum::<f64>()
        .max(1e-12);
    let positions: usize = objectness.iter().map(Vec::len).sum();
    let scale = [
        weights.boxes / q_total,
        weights.obj / positions as f64,
        weights.cls / q_total,
    ];
    let mut sums = [0f64; 3];
    let mut grads = Vec::new();
    for ((s, t), obj) in student.iter().zip(teacher).zip(&objectness) {
        let plane = s.plane();
        let channels = s.shape[1];
        let per_anchor = channels / ANCHORS;
        // one plane (a channel of one image) at a time: its sum, of one kind, and its gradient
        let work = |i: usize, sp: &[T], tp: &[T], g: &mut [T]| -> (Kind, f64) {
            let (b, c) = (i / channels, i % channels);
            let k = kind(c, per_anchor);
            let w = T::from(scale[k as usize]).expect("a finite weight");
            let at = (b * ANCHORS + c / per_anchor) * plane;
            let q_obj = &obj[at..at + plane];
            let mut values = vec![T::zero(); plane];
            plane_terms(k, w, sp, tp, q_obj, g, &mut values);
            (k, lane_sum(&values, &values, &|v, _| v))
        };
        let mut grad = Tensor::zeros(s.shape);
        let plane_sums: Vec<(Kind, f64)> = grad
            .data
            .par_chunks_mut(plane)
            .zip(s.data.par_chunks(plane).zip(t.data.par_chunks(plane)))
            .enumerate()
            .map(|(i, (g, (sp, tp)))| work(i, sp, tp, g))
            .collect();
        if want_grad {
            grads.push(grad);
        }
        for (k, sum) in plane_sums {
            sums[k as usize] += sum;
        }
    }
    let means = [
        sums[0] / q_total,
        sums[1] / positions as f64,
        sums[2] / q_total,
    ];
    let parts = LossParts {
        total: weights.boxes * means[0] + weights.obj * means[1] + weights.cls * means[2],
        boxes: means[0],
        obj: means[1],
        cls: means[2],
        feat: 0.0,
    };
    (parts, grads)
}

vector_targets! {
    /// The loss terms of one plane of `kind` (before scaling) into `values`, and their
    /// gradients scaled by `w` into `g`; `q_obj` is the teacher's objectness at each position.
    fn plane_terms<T: Real>(
        kind: Kind,
        w: T,
        sp: &[T],
        tp: &[T],
        q_obj: &[T],
        g: &mut [T],
        values: &mut [T],
    ) {
        let terms = sp.iter().zip(tp).zip(g.iter_mut()).zip(values);
        match kind {
            Kind::Box => {
                for ((((&sv, &tv), g), v), &o) in terms.zip(q_obj) {
                    let (p, q) = (sigmoid(sv), sigmoid(tv));
                    let d = p - q;
                    *v = o * d * d;
                    *g = w * o * T::of(2.0) * d * p * (T::one() - p);
                }
            }
            Kind::Obj => {
                for (((&sv, &tv), g), v) in terms {
                    let (kl, slope) = bernoulli_kl(sv, tv);
                    *v = kl;
                    *g = w * slope;
                }
            }
            Kind::Cls => {
                for ((((&sv, &tv), g), v), &o) in terms.zip(q_obj) {
                    let (kl, slope) = bernoulli_kl(sv, tv);
                    *v = o * kl;
                    *g = w * o * slope;
                }
            }
        }
    }
}

/// The feature term `l_feat` of `student` against `teacher` (pairs of equal shapes) and, when
/// `want_grad`, its gradient scaled by `weight` with respect to each student feature.
pub fn feature_distill<T: Real>(
    student: &[Tensor<T>],
    teacher: &[Tensor<T>],
    weight: f64,
    want_grad: bool,
) -> (f64, Vec<Tensor<T>>) {
    let layers = student.len().max(1) as f64;
    let mut total = 0.0;
    let mut grads = Vec::new();
    for (s, t) in student.iter().zip(teacher) {
        assert_eq!(s.shape, t.shape, "features of the same shape");
        let n = s.data.len() as f64;
        let power = chunked_sum(&t.data, &t.data, |b, _| b * b) / n;
        let scale = 1.0 / (n * power.max(1e-12) * layers);
        let squares = chunked_sum(&s.data, &t.data, |a, b| (a - b) * (a - b));
        total += squares * scale;
        if want_grad {
            let g = T::from(2.0 * weight * scale).expect("a finite scale");
            grads.push(zip_map(s, t, |a, b| g * (a - b)));
        }
    }
    (total, grads)
}

/// `(σ(x), (softplus(x), softplus(-x)))` from one exponential and one logarithm: with
/// `e = exp(-|x|)`, `σ(x)` is `1 / (1 + e)` or `e / (1 + e)`, and `softplus(±x) =
/// max(±x, 0) + ln(1 + e)`.
#[inline(always)]
fn logistic<T: Real>(x: T) -> (T, (T, T)) {
    let e = (-x.abs()).exp_vec();
    let p = T::one() / (T::one() + e);
    let p = if x >= T::zero() { p } else { e * p };
    let l = e.ln_1p_unit();
    (p, (x.max(T::zero()) + l, (-x).max(T::zero()) + l))
}

/// The KL divergence of Bernoulli(σ(t)) from Bernoulli(σ(s)) and its derivative in `s`,
/// `σ(s) - σ(t)`.
#[inline(always)]
fn bernoulli_kl<T: Real>(s: T, t: T) -> (T, T) {
    let (p, ps) = logistic(s);
    let (q, pt) = logistic(t);
    (q * (ps.1 - pt.1) + (T::one() - q) * (ps.0 - pt.0), p - q)
}

/// `Σ f(a[i], b[i])` in f64, over [`CHUNK`]-long chunks in parallel, each summed in lanes
/// of `T`; the chunks' sums are added in order, so the result does not depend on the threads.
fn chunked_sum<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> f64 {
    let sums: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| lane_sum(a, b, &f))
        .collect();
    sums.iter().sum()
}

vector_targets! {
    /// `Σ f(a[i], b[i])` in f64, over eight lanes first so that the loop vectorises.
    fn lane_sum<T: Real, F: Fn(T, T) -> T>(a: &[T], b: &[T], f: &F) -> f64 {
        let mut lanes = [T::zero(); 8];
        let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
        let rest: T = chunks_a
            .remainder()
            .iter()
            .zip(chunks_b.remainder())
            .map(|(&x, &y)| f(x, y))
            .sum();
        for (ca, cb) in chunks_a.zip(chunks_b) {
            for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
                *lane += f(x, y);
            }
        }
        lanes.iter().map(|v| v.as_f64()).sum::<f64>() + rest.as_f64()
    }
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
