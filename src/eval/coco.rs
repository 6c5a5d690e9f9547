//! COCO results files as val.py writes them, and COCOeval (bbox) through `hotcoco`.
//!
//! Results (`save_one_json`): `image_id` from the file stem ([`ImageId`]), `category_id`
//! through the 80 -> 91 map when the dataset is COCO (else the class index), `bbox` =
//! `[x, y, w, h]` computed in f32 from the xyxy box then rounded to 3 decimals, `score`
//! rounded to 5 decimals (Python `round`, half to even on the exact binary value).
//!
//! Evaluation: pycocotools' `COCOeval(gt, dt, 'bbox')` semantics (hotcoco reproduces them),
//! optionally restricted to the given image ids, giving the 12 standard stats.

use std::path::Path;

use anyhow::{Context, bail};
use hotcoco::params::IouType;
use hotcoco::types::Annotation;
use hotcoco::{COCO, COCOeval};
use serde::{Deserialize, Serialize};

use super::types::{COCO80_TO_91, Detection, ImageId};

/// One entry of a COCO results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    pub image_id: ImageId,
    pub category_id: u64,
    /// `[x, y, w, h]`, original-image pixels.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// Python's `round(x, digits)`: the decimal nearest to the exact binary value, ties to even.
fn py_round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// val.py `save_one_json` for one image: detections in original-image pixels.
pub fn to_coco_results(id: &ImageId, dets: &[Detection], is_coco: bool) -> Vec<CocoResult> {
    dets.iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox;
            let (cx, cy, w, h) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1);
            let (x, y) = (cx - w / 2.0, cy - h / 2.0);
            let category_id = if is_coco {
                COCO80_TO_91
                    .get(d.class as usize)
                    .copied()
                    .unwrap_or(u64::from(d.class))
            } else {
                u64::from(d.class)
            };
            CocoResult {
                image_id: id.clone(),
                category_id,
                bbox: [x, y, w, h].map(|v| py_round(f64::from(v), 3)),
                score: py_round(f64::from(d.score), 5),
            }
        })
        .collect()
}

/// Results as a COCO results JSON array (what `--save-json` writes).
pub fn results_json(results: &[CocoResult]) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(results).context("cannot encode the predictions as JSON")
}

/// Reads a COCO results file (JSON array; `.gz` files are not supported here).
pub fn read_results(path: &Path) -> anyhow::Result<Vec<CocoResult>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a COCO results JSON array", path.display()))
}

/// The 12 COCOeval bbox stats and the standard summary lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoStats {
    /// AP, AP50, AP75, AP small/medium/large, AR@1, AR@10, AR@100, AR small/medium/large.
    pub stats: [f64; 12],
    /// The 12 lines pycocotools' `summarize()` prints ([`summary_lines`]).
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// Loads a COCO annotation JSON (ground truth) for evaluation.
pub fn load_ground_truth(path: &Path) -> anyhow::Result<COCO> {
    if !path.is_file() {
        bail!("annotation file {} does not exist", path.display());
    }
    COCO::new(path).with_context(|| format!("cannot load COCO annotations {}", path.display()))
}

/// Evaluates results against ground truth (COCOeval bbox). `img_ids`, when given, restricts
/// the evaluation to those images (val.py does this for COCO datasets). Results must use
/// numeric image ids that exist in the ground truth.
pub fn evaluate(
    gt: COCO,
    results: &[CocoResult],
    img_ids: Option<&[u64]>,
) -> anyhow::Result<CocoStats> {
    let anns = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let image_id = match &r.image_id {
                ImageId::Num(n) => *n,
                ImageId::Name(s) => {
                    bail!("result {i}: image_id {s:?} is not numeric; COCOeval needs numeric ids")
                }
            };
            if !(r.score.is_finite() && r.bbox.iter().all(|v| v.is_finite())) {
                bail!("result {i}: non-finite bbox or score");
            }
            Ok(Annotation {
                image_id,
                category_id: r.category_id,
                bbox: Some(r.bbox),
                score: Some(r.score),
                ..Annotation::default()
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dt = gt.load_res_anns(anns).context("cannot load detections")?;
    let mut ev = COCOeval::new(gt, dt, IouType::Bbox);
    if let Some(ids) = img_ids {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ev.params.img_ids = ids;
    }
    ev.evaluate().context("COCOeval evaluate failed")?;
    ev.accumulate();
    ev.summarize_lines();
    let stats: [f64; 12] = ev
        .stats()
        .and_then(|s| s.try_into().ok())
        .context("COCOeval did not produce the 12 bbox stats")?;
    Ok(CocoStats {
        stats,
        lines: summary_lines(&stats),
    })
}

/// pycocotools' `summarize()` lines for the 12 bbox stats, character for character.
pub fn summary_lines(stats: &[f64; 12]) -> Vec<String> {
    // (AP?, IoU, area, maxDets) of each stat, in order
    const ROWS: [(bool, &str, &str, u32); 12] = [
        (true, "0.50:0.95", "all", 100),
        (true, "0.50", "all", 100),
        (true, "0.75", "all", 100),
        (true, "0.50:0.95", "small", 100),
        (true, "0.50:0.95", "medium", 100),
        (true, "0.50:0.95", "large", 100),
        (false, "0.50:0.95", "all", 1),
        (false, "0.50:0.95", "all", 10),
        (false, "0.50:0.95", "all", 100),
        (false, "0.50:0.95", "small", 100),
        (false, "0.50:0.95", "medium", 100),
        (false, "0.50:0.95", "large", 100),
    ];
    ROWS.iter()
        .zip(stats)
        .map(|(&(ap, iou, area, max_det), v)| {
            let (title, kind) = if ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
            format!(" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_det:>3} ] = {v:.3}")
        })
        .collect()
}

/// Evaluates a results file against an annotation file (the `cocoeval` command).
pub fn evaluate_files(gt: &Path, dt: &Path) -> anyhow::Result<CocoStats> {
    let gt_coco = load_ground_truth(gt)?;
    let results = read_results(dt)?;
    evaluate(gt_coco, &results, None)
        .with_context(|| format!("evaluating {} against {}", dt.display(), gt.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::types::coco91_to_80;

    #[test]
    fn python_round_is_half_even_on_exact_values() {
        assert_eq!(py_round(0.0625, 3), 0.062);
        assert_eq!(py_round(2.675, 2), 2.67); // 2.675 is below the tie in binary
        assert_eq!(py_round(0.123456789, 5), 0.12346);
    }

    #[test]
    fn results_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preds.json");
        let d = Detection {
            bbox: [1.0, 2.0, 3.0, 4.0],
            score: 0.5,
            class: 0,
        };
        let mut rs = to_coco_results(&ImageId::Num(7), &[d], true);
        rs.extend(to_coco_results(&ImageId::Name("x".into()), &[d], false));
        std::fs::write(&path, results_json(&rs).unwrap()).unwrap();
        assert_eq!(read_results(&path).unwrap(), rs);
    }

    /// A model that detects nothing scores 0, like any model whose detections are all wrong
    /// (pycocotools cannot load an empty results list; val.py then reports no COCO stats).
    #[test]
    fn no_detections_score_zero() {
        let dir = tempfile::tempdir().unwrap();
        let gt = dir.path().join("gt.json");
        std::fs::write(
            &gt,
            r#"{"images": [{"id": 1, "width": 100, "height": 100}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50],
                                 "area": 2500, "iscrowd": 0}],
                "categories": [{"id": 1, "name": "person"}]}"#,
        )
        .unwrap();
        let stats = evaluate(load_ground_truth(&gt).unwrap(), &[], None).unwrap();
        assert_eq!(stats.stats[0], 0.0, "{:?}", stats.stats);
        assert_eq!(stats.stats[8], 0.0, "{:?}", stats.stats);
    }

    #[test]
    fn results_follow_save_one_json() {
        let d = Detection {
            bbox: [10.0, 20.0, 30.5, 60.25],
            score: 0.123456,
            class: 11,
        };
        let r = to_coco_results(&ImageId::Num(9), &[d], true);
        assert_eq!(r[0].category_id, 13);
        assert_eq!(r[0].bbox, [10.0, 20.0, 20.5, 40.25]);
        assert_eq!(r[0].score, 0.12346);
        assert_eq!(serde_json::to_string(&r[0].image_id).unwrap(), "9");
        let r = to_coco_results(&ImageId::Name("a".into()), &[d], false);
        assert_eq!(r[0].category_id, 11);
        assert_eq!(coco91_to_80(90), Some(79));
    }
}
