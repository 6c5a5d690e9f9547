//! Decode a YOLOv5 `output0` tensor and run YOLOv5 v7.0's `non_max_suppression`.
//!
//! Contract (val.py, float32 torch on the CPU, reproduced operation by operation):
//! - rows are `xc, yc, w, h, obj, cls_0 .. cls_{nc-1}` in network-input pixels;
//! - a row is a candidate when `obj > conf` (compared in f32); its class scores become
//!   `cls * obj` (f32);
//! - multi-label: every (row, class) pair with score `> conf` is a candidate, in row-major
//!   order; single-label: the first highest class of each row;
//! - boxes become xyxy (`x - w / 2`, `x + w / 2` in f32);
//! - candidates are sorted by score descending with a stable sort (torch's CPU sort is
//!   stable), and at most `max_nms` (30000) are kept;
//! - boxes are offset by `class * 7680` (f32) unless agnostic, and greedy NMS runs on the
//!   offset boxes like `torchvision.ops.nms`: IoU without `+1`, computed in f32 and
//!   compared in f64 (`iou > iou_thres` suppresses);
//! - at most `max_det` (300) detections are kept, in score order, with their un-offset boxes.

use anyhow::{Context, bail};
use ndarray::{ArrayView2, ArrayViewD, Axis, Ix2};

use super::types::{Detection, Letterbox};

/// Largest box side YOLOv5 assumes: the class offset of batched NMS.
const MAX_WH: f32 = 7680.0;

/// `non_max_suppression` settings; [`Default`] is val.py's (`multi_label` on, IoU 0.6).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NmsConfig {
    /// Candidates need `obj > conf_thres` and `obj * cls > conf_thres`.
    pub conf_thres: f32,
    /// A box whose IoU with a kept box of its class exceeds this is suppressed.
    pub iou_thres: f64,
    /// Detections kept per image.
    pub max_det: usize,
    /// Candidates kept, best first, before NMS.
    pub max_nms: usize,
    /// Suppress across classes (no class offset).
    pub agnostic: bool,
    /// Every class above the threshold is a candidate, not only the best one.
    pub multi_label: bool,
}

impl Default for NmsConfig {
    fn default() -> Self {
        Self {
            conf_thres: 0.001,
            iou_thres: 0.6,
            max_det: 300,
            max_nms: 30_000,
            agnostic: false,
            multi_label: true,
        }
    }
}

impl NmsConfig {
    /// val.py's settings with these thresholds and detection limit.
    pub fn with(conf_thres: f32, iou_thres: f64, max_det: usize) -> Self {
        NmsConfig {
            conf_thres,
            iou_thres,
            max_det,
            ..NmsConfig::default()
        }
    }

    /// Refuses settings that make validation meaningless: an IoU threshold outside (0, 1], a
    /// confidence threshold outside [0, 1], NaN, or no detection kept. Messages use the names
    /// `val`'s flags and pipelines' keys share (`iou`, `conf`, `max_det`).
    pub fn validate(&self) -> anyhow::Result<()> {
        let iou = self.iou_thres;
        if !(iou > 0.0 && iou <= 1.0) {
            anyhow::bail!("iou {iou} must be in (0, 1]");
        }
        let conf = self.conf_thres;
        if !(0.0..=1.0).contains(&conf) {
            anyhow::bail!("conf {conf} must be in [0, 1]");
        }
        if self.max_det == 0 {
            anyhow::bail!("max_det 0 keeps no detection: give 1 or more");
        }
        Ok(())
    }
}

/// The `[N, 5 + nc]` rows of one image from a model output of shape `[1, N, 5 + nc]` or
/// `[N, 5 + nc]`.
pub fn output_rows(output: ArrayViewD<'_, f32>) -> anyhow::Result<ArrayView2<'_, f32>> {
    let shape = output.shape().to_vec();
    let view = match shape.len() {
        3 if shape[0] == 1 => output.index_axis_move(Axis(0), 0),
        2 => output,
        _ => bail!("model output has shape {shape:?}; expected [1, N, 5 + classes]"),
    };
    let rows = view
        .into_dimensionality::<Ix2>()
        .context("model output is not [1, N, 5 + classes]")?;
    if rows.ncols() < 6 {
        bail!(
            "model output rows have {} values; expected 5 + classes (at least 6)",
            rows.ncols()
        );
    }
    Ok(rows)
}

/// Runs `non_max_suppression` on the rows of one image (`[N, 5 + nc]`, network-input
/// pixels). Returns detections in network-input pixels, best first.
pub fn non_max_suppression(rows: ArrayView2<'_, f32>, cfg: &NmsConfig) -> Vec<Detection> {
    let nc = rows.ncols().saturating_sub(5);
    if nc == 0 {
        return Vec::new();
    }
    let multi_label = cfg.multi_label && nc > 1;
    let mut cands: Vec<Detection> = Vec::new();
    for row in rows.outer_iter() {
        let obj = row[4];
        // NaN objectness is never a candidate (torch's `>` is false for NaN)
        if obj.is_nan() || obj <= cfg.conf_thres {
            continue;
        }
        let (xc, yc, w, h) = (row[0], row[1], row[2], row[3]);
        let bbox = [xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0];
        if multi_label {
            for c in 0..nc {
                let score = row[5 + c] * obj;
                if score > cfg.conf_thres {
                    cands.push(Detection {
                        bbox,
                        score,
                        class: c as u32,
                    });
                }
            }
        } else {
            let mut best = 0;
            let mut best_score = row[5] * obj;
            for c in 1..nc {
                let score = row[5 + c] * obj;
                if score > best_score || (best_score.is_nan() && !score.is_nan()) {
                    best = c;
                    best_score = score;
                }
            }
            if best_score > cfg.conf_thres {
                cands.push(Detection {
                    bbox,
                    score: best_score,
                    class: best as u32,
                });
            }
        }
    }
    // torch sorts NaN first when descending; scores here are finite or NaN-free in practice.
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(cfg.max_nms);
    let keep = nms_indices(&cands, cfg);
    keep.into_iter()
        .take(cfg.max_det)
        .map(|i| cands[i])
        .collect()
}

/// Greedy NMS over candidates already sorted best first, on class-offset boxes.
fn nms_indices(cands: &[Detection], cfg: &NmsConfig) -> Vec<usize> {
    let boxes: Vec<[f32; 4]> = cands
        .iter()
        .map(|d| {
            let off = if cfg.agnostic {
                0.0
            } else {
                d.class as f32 * MAX_WH
            };
            [
                d.bbox[0] + off,
                d.bbox[1] + off,
                d.bbox[2] + off,
                d.bbox[3] + off,
            ]
        })
        .collect();
    let areas: Vec<f32> = boxes
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; cands.len()];
    let mut keep = Vec::new();
    for i in 0..cands.len() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        if keep.len() == cfg.max_det {
            break;
        }
        let bi = boxes[i];
        for j in i + 1..cands.len() {
            if suppressed[j] {
                continue;
            }
            let bj = boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (areas[i] + areas[j] - inter);
            if f64::from(iou) > cfg.iou_thres {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Maps detections from network-input pixels back to the original image (YOLOv5
/// `scale_boxes`): subtract the padding, divide by the gain, clip to the image.
pub fn scale_to_original(dets: &mut [Detection], lb: &Letterbox) {
    for d in dets {
        d.bbox = lb.box_to_original(d.bbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn row(b: [f32; 4], obj: f32, cls: &[f32]) -> Vec<f32> {
        let mut r = b.to_vec();
        r.push(obj);
        r.extend_from_slice(cls);
        r
    }

    #[test]
    fn suppresses_same_class_keeps_other_class_and_sorts_descending() {
        let rows = [
            row([50.0, 50.0, 20.0, 20.0], 0.5, &[0.9, 0.1]),
            row([51.0, 50.0, 20.0, 20.0], 0.9, &[0.9, 0.0]),
            row([200.0, 200.0, 10.0, 10.0], 0.8, &[0.0, 0.5]),
        ];
        let flat: Vec<f32> = rows.concat();
        let a = Array2::from_shape_vec((3, 7), flat).unwrap();
        let dets = non_max_suppression(a.view(), &NmsConfig::default());
        // row1 cls0 (0.81) beats row0 cls0 (0.45, suppressed); row2 cls1 0.4; row0 cls1 0.05.
        let got: Vec<(u32, f32)> = dets.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(
            got,
            vec![(0, 0.9f32 * 0.9), (1, 0.5f32 * 0.8), (1, 0.1f32 * 0.5)]
        );
        let agn = NmsConfig {
            agnostic: true,
            ..NmsConfig::default()
        };
        assert_eq!(non_max_suppression(a.view(), &agn).len(), 2);
    }

    #[test]
    fn single_label_keeps_the_best_class_and_output_shapes_are_checked() {
        let rows = [row([50.0, 50.0, 20.0, 20.0], 0.5, &[0.2, 0.9, 0.9])];
        let a = Array2::from_shape_vec((1, 8), rows.concat()).unwrap();
        let cfg = NmsConfig {
            multi_label: false,
            ..NmsConfig::default()
        };
        let dets = non_max_suppression(a.view(), &cfg);
        // first of the tied maxima, as torch.max
        assert_eq!(dets.iter().map(|d| d.class).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            non_max_suppression(a.view(), &NmsConfig::default()).len(),
            3
        );

        let batch = a
            .clone()
            .into_shape_with_order((1, 1, 8))
            .unwrap()
            .into_dyn();
        assert_eq!(output_rows(batch.view()).unwrap().dim(), (1, 8));
        let bad = ndarray::ArrayD::<f32>::zeros(vec![2, 1, 8]);
        assert!(output_rows(bad.view()).is_err());
    }

    #[test]
    fn equal_scores_keep_row_order() {
        let rows = [
            row([10.0, 10.0, 4.0, 4.0], 0.5, &[0.5]),
            row([100.0, 10.0, 4.0, 4.0], 0.5, &[0.5]),
        ];
        let a = Array2::from_shape_vec((2, 6), rows.concat()).unwrap();
        let dets = non_max_suppression(a.view(), &NmsConfig::default());
        assert_eq!(dets[0].bbox[0], 8.0);
        assert_eq!(dets[1].bbox[0], 98.0);
    }
}
