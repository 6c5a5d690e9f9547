//! val.py's own metrics: per-image matching (`process_batch`) and `ap_per_class`.
//!
//! Contract, operation by operation as YOLOv5 v7.0 (float32 torch for IoU, float64 numpy for
//! the curves):
//! - IoU thresholds `torch.linspace(0.5, 0.95, 10)` in f32 ([`iou_thresholds`]);
//! - per image and threshold, candidate pairs have `iou >= t` and equal classes; they are
//!   ranked by IoU descending, each detection keeps its best label, then (in detection
//!   order) each label keeps its first detection; those detections are true positives;
//! - `ap_per_class`: predictions sorted by confidence descending (stable, in the order the
//!   images were added), per class with labels: recall and precision curves, AP by 101-point
//!   `np.interp` + `np.trapz` on the precision envelope, P and R sampled at 1000 confidences;
//!   P and R reported at the maximum of the class-mean F1 curve smoothed by a 101-wide box
//!   filter; classes without labels are ignored, classes with labels but no predictions count
//!   as zero.

use serde::{Deserialize, Serialize};

use super::types::Detection;

/// Number of IoU thresholds (0.50:0.05:0.95).
pub const N_IOU: usize = 10;

/// A ground-truth box in original-image pixels (`x1, y1, x2, y2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    pub class: u32,
    pub bbox: [f32; 4],
}

/// `torch.linspace(0.5, 0.95, 10)` as float32 torch computes it on the CPU.
pub fn iou_thresholds() -> [f32; N_IOU] {
    let (start, end) = (0.5f32, 0.95f32);
    let step = (end - start) / (N_IOU - 1) as f32;
    std::array::from_fn(|i| {
        if i < N_IOU / 2 {
            start + step * i as f32
        } else {
            end - step * (N_IOU - 1 - i) as f32
        }
    })
}

/// YOLOv5 `box_iou` (f32, `eps = 1e-7`).
fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter + 1e-7)
}

/// val.py `process_batch`: which detections are true positives at each IoU threshold.
pub fn process_batch(
    dets: &[Detection],
    labels: &[GroundTruth],
    iouv: &[f32; N_IOU],
) -> Vec<[bool; N_IOU]> {
    let mut correct = vec![[false; N_IOU]; dets.len()];
    if dets.is_empty() || labels.is_empty() {
        return correct;
    }
    let iou: Vec<Vec<f32>> = labels
        .iter()
        .map(|l| dets.iter().map(|d| box_iou(&l.bbox, &d.bbox)).collect())
        .collect();
    for (ti, &t) in iouv.iter().enumerate() {
        // (label, detection, iou) in torch.where's row-major order
        let mut m: Vec<(usize, usize, f32)> = Vec::new();
        for (li, l) in labels.iter().enumerate() {
            for (di, d) in dets.iter().enumerate() {
                let v = iou[li][di];
                if v >= t && l.class == d.class {
                    m.push((li, di, v));
                }
            }
        }
        if m.len() > 1 {
            // argsort ascending then reversed: among equal IoUs the later pair comes first
            m.reverse();
            m.sort_by(|a, b| b.2.total_cmp(&a.2));
            // first pair of each detection, ordered by detection
            let mut by_det: Vec<(usize, usize, f32)> = Vec::new();
            let mut seen = vec![false; dets.len()];
            for p in &m {
                if !seen[p.1] {
                    seen[p.1] = true;
                    by_det.push(*p);
                }
            }
            by_det.sort_by_key(|p| p.1);
            // first pair of each label in that order
            let mut seen_l = vec![false; labels.len()];
            m = by_det
                .into_iter()
                .filter(|p| !std::mem::replace(&mut seen_l[p.0], true))
                .collect();
        }
        for &(_, di, _) in &m {
            correct[di][ti] = true;
        }
    }
    correct
}

/// Per-class result of `ap_per_class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: u32,
    /// Labels of this class.
    pub instances: usize,
    pub precision: f64,
    pub recall: f64,
    /// AP at IoU 0.5.
    pub ap50: f64,
    /// AP averaged over IoU 0.50:0.95.
    pub ap50_95: f64,
}

/// val.py's summary line (`all`) plus the per-class rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    /// Images seen.
    pub images: usize,
    /// Labels seen.
    pub instances: usize,
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map50_95: f64,
    /// Classes present in the labels, ascending.
    pub per_class: Vec<ClassMetrics>,
}

/// Accumulates val.py's `stats` image by image; add images in dataset order for results
/// identical to val.py (the confidence sort is stable).
#[derive(Debug, Clone)]
pub struct ValAccumulator {
    iouv: [f32; N_IOU],
    correct: Vec<[bool; N_IOU]>,
    conf: Vec<f32>,
    pred_cls: Vec<u32>,
    target_cls: Vec<u32>,
    images: usize,
}

impl Default for ValAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl ValAccumulator {
    pub fn new() -> Self {
        Self {
            iouv: iou_thresholds(),
            correct: Vec::new(),
            conf: Vec::new(),
            pred_cls: Vec::new(),
            target_cls: Vec::new(),
            images: 0,
        }
    }

    /// Adds one image: its detections (original-image pixels, NMS order) and its labels
    /// (crowd boxes excluded, as YOLO labels have none).
    pub fn add_image(&mut self, dets: &[Detection], labels: &[GroundTruth]) {
        self.images += 1;
        self.correct.extend(process_batch(dets, labels, &self.iouv));
        self.conf.extend(dets.iter().map(|d| d.score));
        self.pred_cls.extend(dets.iter().map(|d| d.class));
        self.target_cls.extend(labels.iter().map(|l| l.class));
    }

    /// The metrics of everything added so far (val.py prints zeros when no detection is a
    /// true positive at IoU 0.5 or above anywhere).
    pub fn finish(&self) -> ValMetrics {
        let mut out = ValMetrics {
            images: self.images,
            instances: self.target_cls.len(),
            precision: 0.0,
            recall: 0.0,
            map50: 0.0,
            map50_95: 0.0,
            per_class: Vec::new(),
        };
        if !self.correct.iter().any(|c| c.iter().any(|&b| b)) {
            return out;
        }
        out.per_class = ap_per_class(&self.correct, &self.conf, &self.pred_cls, &self.target_cls);
        let col =
            |f: fn(&ClassMetrics) -> f64| np_mean(&out.per_class.iter().map(f).collect::<Vec<_>>());
        out.precision = col(|c| c.precision);
        out.recall = col(|c| c.recall);
        out.map50 = col(|c| c.ap50);
        out.map50_95 = col(|c| c.ap50_95);
        out
    }
}

/// numpy's pairwise summation of a contiguous f64 array (`np.add.reduce`).
fn np_sum(a: &[f64]) -> f64 {
    fn pairwise(a: &[f64]) -> f64 {
        let n = a.len();
        if n < 8 {
            a.iter().fold(0.0, |s, &x| s + x)
        } else if n <= 128 {
            let mut r: [f64; 8] = a[..8].try_into().expect("8 values");
            let full = n - n % 8;
            let mut i = 8;
            while i < full {
                for j in 0..8 {
                    r[j] += a[i + j];
                }
                i += 8;
            }
            let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for &x in &a[full..] {
                res += x;
            }
            res
        } else {
            let mut n2 = n / 2;
            n2 -= n2 % 8;
            pairwise(&a[..n2]) + pairwise(&a[n2..])
        }
    }
    0.0 + pairwise(a)
}

fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `np.linspace(0, 1, n)`.
fn linspace01(n: usize) -> Vec<f64> {
    let step = 1.0 / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = 1.0;
    v
}

/// `np.interp(x, xp, fp, left, right)` for increasing (possibly repeated) `xp`.
fn np_interp(x: &[f64], xp: &[f64], fp: &[f64], left: f64, right: f64) -> Vec<f64> {
    let n = xp.len();
    x.iter()
        .map(|&v| {
            if n == 1 {
                return if v < xp[0] {
                    left
                } else if v > xp[0] {
                    right
                } else {
                    fp[0]
                };
            }
            if v > xp[n - 1] {
                return right;
            }
            if v < xp[0] {
                return left;
            }
            // last j with xp[j] <= v
            let j = xp.partition_point(|&p| p <= v) - 1;
            if j == n - 1 || xp[j] == v {
                return fp[j];
            }
            let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
            let mut r = slope * (v - xp[j]) + fp[j];
            if r.is_nan() {
                r = slope * (v - xp[j + 1]) + fp[j + 1];
                if r.is_nan() && fp[j] == fp[j + 1] {
                    r = fp[j];
                }
            }
            r
        })
        .collect()
}

/// YOLOv5 `compute_ap`: 101-point interpolated area under the precision envelope.
fn compute_ap(recall: &[f64], precision: &[f64], x101: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(1.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    let y = np_interp(x101, &mrec, &mpre, mpre[0], mpre[mpre.len() - 1]);
    // np.trapz: sum(diff(x) * (y[1:] + y[:-1]) / 2)
    let terms: Vec<f64> = (1..x101.len())
        .map(|i| (x101[i] - x101[i - 1]) * (y[i] + y[i - 1]) / 2.0)
        .collect();
    np_sum(&terms)
}

/// YOLOv5 `smooth(y, 0.1)` on a 1000-point curve: box filter with edge padding.
fn smooth(y: &[f64], f: f64) -> Vec<f64> {
    let nf = ((y.len() as f64 * f * 2.0).round_ties_even() as usize) / 2 + 1;
    let half = nf / 2;
    let mut yp = vec![y[0]; half];
    yp.extend_from_slice(y);
    yp.extend(std::iter::repeat_n(y[y.len() - 1], half));
    let w = 1.0 / nf as f64;
    (0..y.len())
        .map(|i| yp[i..i + nf].iter().fold(0.0, |s, &v| s + v * w))
        .collect()
}

/// YOLOv5 `ap_per_class` (without plots): one row per class present in `target_cls`.
pub fn ap_per_class(
    tp: &[[bool; N_IOU]],
    conf: &[f32],
    pred_cls: &[u32],
    target_cls: &[u32],
) -> Vec<ClassMetrics> {
    let mut order: Vec<usize> = (0..conf.len()).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
    let mut classes: Vec<u32> = target_cls.to_vec();
    classes.sort_unstable();
    let mut uniq: Vec<(u32, usize)> = Vec::new();
    for c in classes {
        match uniq.last_mut() {
            Some((lc, n)) if *lc == c => *n += 1,
            _ => uniq.push((c, 1)),
        }
    }
    let px = linspace01(1000);
    let neg_px: Vec<f64> = px.iter().map(|v| -v).collect();
    let x101 = linspace01(101);
    let eps = 1e-16;
    let mut p_curves = vec![vec![0.0; 1000]; uniq.len()];
    let mut r_curves = vec![vec![0.0; 1000]; uniq.len()];
    let mut ap = vec![[0.0f64; N_IOU]; uniq.len()];
    for (ci, &(c, n_l)) in uniq.iter().enumerate() {
        let idx: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| pred_cls[i] == c)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let neg_conf: Vec<f64> = idx.iter().map(|&i| -f64::from(conf[i])).collect();
        let mut recall = vec![vec![0.0; idx.len()]; N_IOU];
        let mut precision = vec![vec![0.0; idx.len()]; N_IOU];
        for t in 0..N_IOU {
            let (mut tpc, mut fpc) = (0u64, 0u64);
            for (k, &i) in idx.iter().enumerate() {
                if tp[i][t] {
                    tpc += 1;
                } else {
                    fpc += 1;
                }
                recall[t][k] = tpc as f64 / (n_l as f64 + eps);
                precision[t][k] = tpc as f64 / (tpc + fpc) as f64;
            }
        }
        r_curves[ci] = np_interp(
            &neg_px,
            &neg_conf,
            &recall[0],
            0.0,
            recall[0][idx.len() - 1],
        );
        p_curves[ci] = np_interp(
            &neg_px,
            &neg_conf,
            &precision[0],
            1.0,
            precision[0][idx.len() - 1],
        );
        for t in 0..N_IOU {
            ap[ci][t] = compute_ap(&recall[t], &precision[t], &x101);
        }
    }
    // mean F1 over classes (sequential sum over the class axis, as numpy's axis-0 mean)
    let f1: Vec<Vec<f64>> = p_curves
        .iter()
        .zip(&r_curves)
        .map(|(p, r)| {
            p.iter()
                .zip(r)
                .map(|(&p, &r)| 2.0 * p * r / (p + r + eps))
                .collect()
        })
        .collect();
    let mean_f1: Vec<f64> = (0..1000)
        .map(|k| f1.iter().fold(0.0, |s, row| s + row[k]) / f1.len() as f64)
        .collect();
    let smoothed = smooth(&mean_f1, 0.1);
    let mut best = 0;
    for (k, &v) in smoothed.iter().enumerate() {
        if v > smoothed[best] {
            best = k;
        }
    }
    uniq.iter()
        .enumerate()
        .map(|(ci, &(class, instances))| ClassMetrics {
            class,
            instances,
            precision: p_curves[ci][best],
            recall: r_curves[ci][best],
            ap50: ap[ci][0],
            ap50_95: np_mean(&ap[ci]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(b: [f32; 4], score: f32, class: u32) -> Detection {
        Detection {
            bbox: b,
            score,
            class,
        }
    }

    #[test]
    fn thresholds_are_torch_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
    }

    #[test]
    fn each_label_matches_its_first_detection_only() {
        let labels = [GroundTruth {
            class: 0,
            bbox: [0.0, 0.0, 10.0, 10.0],
        }];
        let dets = [
            det([0.0, 0.0, 10.0, 9.0], 0.9, 0),
            det([0.0, 0.0, 10.0, 10.0], 0.8, 0),
        ];
        let c = process_batch(&dets, &labels, &iou_thresholds());
        // both exceed 0.5; the label keeps the lower-index detection even though the
        // second one has the higher IoU (val.py's second unique pass)
        assert!(c[0][0]);
        assert!(!c[1][0]);
        // at 0.95 only the exact box qualifies, so it matches there
        assert!(!c[0][9] && c[1][9]);
    }

    #[test]
    fn perfect_detection_gives_yolov5s_0_995() {
        let mut acc = ValAccumulator::new();
        let labels = [GroundTruth {
            class: 3,
            bbox: [0.0, 0.0, 10.0, 10.0],
        }];
        acc.add_image(&[det([0.0, 0.0, 10.0, 10.0], 0.9, 3)], &labels);
        let m = acc.finish();
        // np.interp at recall 1 hits the sentinel (1, 0), so the last trapezoid is lost: the
        // 0.995 val.py prints for perfect classes (reference.json, coco128 class 11)
        assert!((m.map50 - 0.995).abs() < 1e-12, "{m:?}");
        assert_eq!((m.precision, m.recall), (1.0, 1.0));
        assert_eq!(m.instances, 1);
    }

    #[test]
    fn numpy_helpers() {
        assert_eq!(
            np_interp(
                &[0.5, -1.0, 3.0],
                &[0.0, 1.0, 1.0, 2.0],
                &[0.0, 1.0, 5.0, 6.0],
                -7.0,
                9.0
            ),
            vec![0.5, -7.0, 9.0]
        );
        // repeated xp: the last of the equal points wins
        assert_eq!(
            np_interp(
                &[1.0],
                &[0.0, 1.0, 1.0, 2.0],
                &[0.0, 1.0, 5.0, 6.0],
                0.0,
                0.0
            ),
            vec![5.0]
        );
        let v: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.1).collect();
        assert!((np_sum(&v) - 4485.0).abs() < 1e-9);
    }
}
