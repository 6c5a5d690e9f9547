//! Validation core against oracles: the fixtures' exact network inputs and NMS outputs, the
//! official val.py predictions, reference.json (val.py metrics and pycocotools stats) and a
//! live pycocotools run.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde_json::Value;
use shears::eval::coco::{self, CocoResult};
use shears::eval::dataset::{DataConfig, Dataset, Split};
use shears::eval::metrics::ValAccumulator;
use shears::eval::nms::{NmsConfig, non_max_suppression, scale_to_original};
use shears::eval::preprocess::{
    DEFAULT_MAX_PIXELS, DEFAULT_SIZE, letterbox_rgb, load_rgb, preprocess_file,
};
use shears::eval::types::{Detection, ImageId, Letterbox, coco91_to_80};
use shears::progress::Silent;

use crate::common::{error_exit, fixture, oracle_python, run_python, scratch, shears, succeed};

const RUNS: [&str; 4] = [
    "yolov5n_pt",
    "yolov5n_pt_pruned30",
    "yolov5n_onnx_op12",
    "yolov5n_pruned30_onnx_op12",
];

/// A data YAML like the fixture's, with `path:` set to the absolute dataset folder.
fn write_yaml(dir: &Path, name: &str) -> Option<PathBuf> {
    let src = fixture(&format!("coco/{name}.yaml"))?;
    let root = fixture(&format!("coco/{name}"))?;
    let text = std::fs::read_to_string(src).unwrap();
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with("path:")).collect();
    let out = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &out,
        format!("path: {}\n{}\n", root.display(), body.join("\n")),
    )
    .unwrap();
    Some(out)
}

fn reference() -> Option<Value> {
    let p = fixture("reference.json")?;
    Some(serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
}

fn read_maybe_gz(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

fn predictions(dataset: &str, run: &str) -> Option<(PathBuf, Vec<CocoResult>)> {
    let name = if dataset == "coco128" {
        format!("oracles/coco128/{run}_predictions.json")
    } else {
        format!("oracles/{dataset}/{run}_predictions.json.gz")
    };
    let p = fixture(&name)?;
    let preds = serde_json::from_slice(&read_maybe_gz(&p)).unwrap();
    Some((p, preds))
}

fn annotations(dataset: &str) -> Option<PathBuf> {
    fixture(if dataset == "coco128" {
        "coco/coco128/annotations/instances_coco128.json"
    } else {
        "coco/coco_extra_train/annotations/instances_train2017_subset.json"
    })
}

#[test]
fn coco128_yaml_loads_like_yolov5() {
    let tmp = scratch();
    let Some(yaml) = write_yaml(tmp.path(), "coco128") else {
        return;
    };
    let cfg = DataConfig::load(&yaml, None).unwrap();
    assert!(cfg.is_coco, "val list is coco/val2017.txt");
    assert_eq!(cfg.names.len(), 80);
    assert_eq!(cfg.names[79], "toothbrush");
    let ds = Dataset::from_yolo(&cfg, Split::Val, DEFAULT_MAX_PIXELS, &Silent).unwrap();
    // yolov5: "126 images, 2 backgrounds, 0 corrupt"; 929 instances; orphans ignored
    assert_eq!(ds.images.len(), 128);
    assert_eq!(
        (ds.report.found, ds.report.missing, ds.report.corrupt),
        (126, 2, 0)
    );
    assert_eq!(ds.instances(), 929);
    assert_eq!(ds.images[0].id, ImageId::Num(9));
    assert_eq!((ds.images[0].width, ds.images[0].height), (640, 480));

    // the fixture's own YAML has a placeholder `path:`; the caller passes the root instead
    let orig = fixture("coco/coco128.yaml").unwrap();
    let root = fixture("coco/coco128").unwrap();
    let cfg2 = DataConfig::load(&orig, Some(&root)).unwrap();
    assert_eq!(
        Dataset::from_yolo(&cfg2, Split::Val, DEFAULT_MAX_PIXELS, &Silent)
            .unwrap()
            .images,
        ds.images
    );
    // without it, the library's error names the missing root and says it is what is needed;
    // the command line adds the option that gives it, a pipeline its key
    let err = DataConfig::load(&orig, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("/ABSOLUTE/PATH/TO/fixtures/coco/coco128) does not exist")
            && matches!(err.downcast_ref(), Some(shears::Needs::DataRoot { .. })),
        "{err:#}"
    );
    let model = fixture("models/yolov5n_op12.onnx").unwrap();
    let mut val = shears();
    val.arg("val").arg(&model).arg("--data").arg(&orig);
    error_exit(
        &mut val,
        "does not exist; give the dataset's folder with --data-root DIR",
    );
}

#[test]
fn coco_extra_yolo_labels_equal_official_json_without_crowds() {
    let tmp = scratch();
    let Some(yaml) = write_yaml(tmp.path(), "coco_extra_train") else {
        return;
    };
    let Some(ann) = annotations("coco_extra_train") else {
        return;
    };
    let yolo = Dataset::from_yolo(
        &DataConfig::load(&yaml, None).unwrap(),
        Split::Val,
        DEFAULT_MAX_PIXELS,
        &Silent,
    )
    .unwrap();
    let dir = fixture("coco/coco_extra_train/images/train2017").unwrap();
    let json = Dataset::from_coco_json(&ann, &dir, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(yolo.images.len(), 160);
    assert_eq!(json.images.len(), 160);
    assert_eq!(yolo.instances(), 1430);
    assert_eq!(json.instances(), 1430);
    let crowds: usize = json
        .images
        .iter()
        .map(|i| i.labels.iter().filter(|l| l.crowd).count())
        .sum();
    assert_eq!(crowds, 14);
    assert!(json.is_coco && yolo.is_coco);
    assert_eq!(json.names, yolo.names);
    let by_id: HashMap<&ImageId, _> = json.images.iter().map(|i| (&i.id, i)).collect();
    for y in &yolo.images {
        let j = by_id[&y.id];
        assert_eq!(
            (j.width, j.height),
            (y.width, y.height),
            "{}",
            y.path.display()
        );
        let mut jl: Vec<_> = j.labels.iter().filter(|l| !l.crowd).collect();
        assert_eq!(jl.len(), y.labels.len(), "{}", y.path.display());
        // YOLO files hold %g (6 significant digits) of the JSON boxes
        for l in &y.labels {
            let pos = jl
                .iter()
                .position(|k| {
                    k.class == l.class
                        && k.xywhn
                            .iter()
                            .zip(l.xywhn)
                            .all(|(a, b)| (a - b).abs() < 1e-5)
                })
                .unwrap_or_else(|| panic!("{}: label {l:?} not in the JSON", y.path.display()));
            jl.remove(pos);
        }
    }
}

#[test]
fn broken_files_are_reported_and_skipped() {
    let Some(src) = fixture("coco/coco128/images/train2017") else {
        return;
    };
    let tmp = scratch();
    let (img, lab) = (tmp.path().join("images"), tmp.path().join("labels"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    for (i, stem) in [
        "000000000009",
        "000000000025",
        "000000000030",
        "000000000034",
        "000000000036",
    ]
    .iter()
    .enumerate()
    {
        std::fs::copy(
            src.join(format!("{stem}.jpg")),
            img.join(format!("{stem}.jpg")),
        )
        .unwrap();
        let label = match i {
            0 => "0 0.5 0.5 0.2 0.2\n",
            1 => "0 0.5 0.5 1.5 0.2\n",  // coordinate out of range
            2 => "80 0.5 0.5 0.2 0.2\n", // class out of range
            3 => "0 0.5 0.5\n",          // too few columns
            _ => continue,               // background
        };
        std::fs::write(lab.join(format!("{stem}.txt")), label).unwrap();
    }
    std::fs::write(img.join("000000000001.jpg"), b"not a jpeg").unwrap();
    let names: Vec<String> = (0..80).map(|i| format!("  - c{i}")).collect();
    let yaml = tmp.path().join("d.yaml");
    std::fs::write(
        &yaml,
        format!("path: .\nval: images\nnames:\n{}\n", names.join("\n")),
    )
    .unwrap();
    let cfg = DataConfig::load(&yaml, None).unwrap();
    assert!(!cfg.is_coco);
    let ds = Dataset::from_yolo(&cfg, Split::Val, DEFAULT_MAX_PIXELS, &Silent).unwrap();
    assert_eq!(ds.images.len(), 2);
    assert_eq!(
        (ds.report.found, ds.report.missing, ds.report.corrupt),
        (1, 1, 4)
    );
    assert_eq!(ds.report.messages.len(), 4, "{:?}", ds.report.messages);
    assert!(
        ds.report
            .messages
            .iter()
            .any(|m| m.contains("000000000001.jpg"))
    );

    std::fs::write(&yaml, "val: images\nnames: [a]\nbogus: 1\n").unwrap();
    let err = format!("{:#}", DataConfig::load(&yaml, None).unwrap_err());
    eprintln!("unknown key: {err}");
    assert!(err.contains("d.yaml") && err.contains("bogus"), "{err}");
}

/// The oracle's letterboxed inputs: identical where nothing is resized, within one grey
/// level where OpenCV resized.
#[test]
fn letterbox_matches_network_input_oracle() {
    let Some(dir) = fixture("oracles/pipeline") else {
        return;
    };
    let images = fixture("coco/coco128/images/train2017").unwrap();
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    for (stem, m) in meta.as_object().unwrap() {
        let img = load_rgb(&images.join(format!("{stem}.jpg")), DEFAULT_MAX_PIXELS)
            .unwrap()
            .image;
        let (boxed, lb) = letterbox_rgb(&img, 640).unwrap();
        let want = image::open(dir.join(format!("{stem}_input640.png")))
            .unwrap()
            .into_rgb8();
        assert_eq!(
            lb.orig_hw.map(u64::from).to_vec(),
            m["orig_hw"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            lb.pad.to_vec(),
            m["pad_wh"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(boxed.dimensions(), want.dimensions());
        let diffs: Vec<i32> = boxed
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let n_off = diffs.iter().filter(|d| **d > 0).count();
        eprintln!(
            "{stem}: max |diff| {max}, {n_off} of {} values differ",
            diffs.len()
        );
        let resized = lb.resized_hw != lb.orig_hw;
        assert!(
            max <= i32::from(resized),
            "{stem}: max diff {max} ({n_off} values differ)"
        );
    }
    // the whole per-image step: NCHW, RGB, value / 255 in f32, as val.py's tensor
    let stem = "000000000036";
    let pre = preprocess_file(
        &images.join(format!("{stem}.jpg")),
        DEFAULT_SIZE,
        DEFAULT_MAX_PIXELS,
    )
    .unwrap();
    let want = image::open(dir.join(format!("{stem}_input640.png")))
        .unwrap()
        .into_rgb8();
    assert_eq!(pre.tensor.shape(), &[1, 3, 640, 640]);
    for (x, y, px) in want.enumerate_pixels() {
        for c in 0..3 {
            assert_eq!(
                pre.tensor[[0, c, y as usize, x as usize]],
                f32::from(px[c]) / 255.0
            );
        }
    }
    assert_eq!(pre.letterbox.border, [0, 0, 79, 80]);
}

/// Minimal reader of a little-endian f32 C-order 2-D .npy file.
fn read_npy_f32(path: &Path) -> Array2<f32> {
    let raw = std::fs::read(path).unwrap();
    assert_eq!(&raw[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([raw[8], raw[9]]) as usize;
    let header = std::str::from_utf8(&raw[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = raw[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Array2::from_shape_vec((shape[0], shape[1]), data).unwrap()
}

fn read_txt_dets(path: &Path) -> Vec<[f64; 6]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().map(|s| s.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3], v[4], v[5]]
        })
        .collect()
}

fn assert_dets_close(stem: &str, what: &str, got: &[Detection], want: &[[f64; 6]]) {
    assert_eq!(got.len(), want.len(), "{stem} {what}: detection count");
    let (mut max_box, mut max_score) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(f64::from(g.class), w[5], "{stem} {what}: class order");
        for (a, b) in g.bbox.iter().zip(w) {
            max_box = max_box.max((f64::from(*a) - b).abs());
        }
        max_score = max_score.max((f64::from(g.score) - w[4]).abs());
    }
    eprintln!(
        "{stem} {what}: {} detections, max |box diff| {max_box:.2e} px, max |score diff| {max_score:.2e}",
        got.len()
    );
    assert!(
        max_box <= 0.05 && max_score <= 1e-4,
        "{stem} {what}: box {max_box}, score {max_score}"
    );
}

#[test]
fn nms_matches_torch_oracle() {
    let Some(dir) = fixture("oracles/pipeline") else {
        return;
    };
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    for stem in ["000000000009", "000000000049"] {
        let rows = read_npy_f32(&dir.join(format!("{stem}_output0_obj_gt_0.001_rows.npy")));
        // column 0 is the row index in output0; rows with obj <= 0.001 never matter
        let out = rows.slice(ndarray::s![.., 1..]).to_owned();
        assert_eq!(
            out.nrows() as u64,
            meta[stem]["n_candidates_obj_gt_0001"].as_u64().unwrap()
        );
        let cfg = NmsConfig {
            iou_thres: 0.65,
            ..NmsConfig::default()
        };
        let mut dets = non_max_suppression(out.view(), &cfg);
        assert_dets_close(
            stem,
            "letterbox",
            &dets,
            &read_txt_dets(&dir.join(format!("{stem}_nms_letterbox_xyxy_conf_cls.txt"))),
        );
        let hw = &meta[stem]["orig_hw"];
        let lb = Letterbox::new(
            hw[0].as_u64().unwrap() as u32,
            hw[1].as_u64().unwrap() as u32,
            640,
        )
        .unwrap();
        scale_to_original(&mut dets, &lb);
        assert_dets_close(
            stem,
            "native",
            &dets,
            &read_txt_dets(&dir.join(format!("{stem}_nms_native_xyxy_conf_cls.txt"))),
        );
    }
}

#[test]
fn scale_boxes_matches_oracle_on_all_pipeline_images() {
    let Some(dir) = fixture("oracles/pipeline") else {
        return;
    };
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    for (stem, m) in meta.as_object().unwrap() {
        let boxed = read_txt_dets(&dir.join(format!("{stem}_nms_letterbox_xyxy_conf_cls.txt")));
        let mut dets: Vec<Detection> = boxed
            .iter()
            .map(|r| Detection {
                bbox: [r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32],
                score: r[4] as f32,
                class: r[5] as u32,
            })
            .collect();
        let hw = &m["orig_hw"];
        let lb = Letterbox::new(
            hw[0].as_u64().unwrap() as u32,
            hw[1].as_u64().unwrap() as u32,
            640,
        )
        .unwrap();
        scale_to_original(&mut dets, &lb);
        let want = read_txt_dets(&dir.join(format!("{stem}_nms_native_xyxy_conf_cls.txt")));
        assert_dets_close(stem, "scaled", &dets, &want);
    }
}

/// Per-image detections back from a predictions JSON (91 -> 80 ids, xywh -> xyxy).
fn detections_by_image(preds: &[CocoResult]) -> HashMap<u64, Vec<Detection>> {
    let mut by: HashMap<u64, Vec<Detection>> = HashMap::new();
    for p in preds {
        let ImageId::Num(id) = p.image_id else {
            panic!("numeric ids expected")
        };
        let [x, y, w, h] = p.bbox;
        by.entry(id).or_default().push(Detection {
            bbox: [x as f32, y as f32, (x + w) as f32, (y + h) as f32],
            score: p.score as f32,
            class: coco91_to_80(p.category_id).expect("COCO category"),
        });
    }
    by
}

#[test]
fn val_metrics_match_reference_on_official_predictions() {
    let Some(reference) = reference() else { return };
    let tmp = scratch();
    let mut worst = 0f64;
    for dataset in ["coco128", "coco_extra_train"] {
        let Some(yaml) = write_yaml(tmp.path(), dataset) else {
            return;
        };
        let ds = Dataset::from_yolo(
            &DataConfig::load(&yaml, None).unwrap(),
            Split::Val,
            DEFAULT_MAX_PIXELS,
            &Silent,
        )
        .unwrap();
        for run in RUNS {
            let Some((_, preds)) = predictions(dataset, run) else {
                return;
            };
            let by = detections_by_image(&preds);
            let mut acc = ValAccumulator::new();
            for img in &ds.images {
                let lb = Letterbox::new(img.height, img.width, 640).unwrap();
                let ImageId::Num(id) = img.id else { panic!() };
                acc.add_image(
                    by.get(&id).map(Vec::as_slice).unwrap_or_default(),
                    &img.ground_truth(&lb),
                );
            }
            let m = acc.finish();
            let r = &reference["datasets"][dataset]["runs"][run]["valpy_internal"];
            let got = [m.precision, m.recall, m.map50, m.map50_95];
            let want = ["P", "R", "mAP50", "mAP50_95"].map(|k| r[k].as_f64().unwrap());
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            worst = worst.max(diff);
            eprintln!(
                "{dataset} {run}: P R mAP50 mAP = {got:.5?} vs {want:.5?}, max |diff| {diff:.2e}"
            );
            // the brief allows 2e-3 for the JSON rounding (3 decimals, scores 5); measured 1.9e-5
            assert!(diff <= 2e-4, "{dataset} {run}: {got:?} vs {want:?}");
            assert_eq!(m.images, ds.images.len());
            assert_eq!(m.instances, ds.instances());
            let per = &reference["datasets"][dataset]["runs"][run]["per_class_internal"];
            assert_eq!(m.per_class.len(), per.as_object().unwrap().len());
        }
    }
    eprintln!("worst |diff| over 8 runs: {worst:.2e}");
}

#[test]
fn cocoeval_matches_pycocotools_reference() {
    let Some(reference) = reference() else { return };
    let keys = [
        "AP@[.5:.95]",
        "AP@.5",
        "AP@.75",
        "AP_small",
        "AP_medium",
        "AP_large",
        "AR@1",
        "AR@10",
        "AR@100",
        "AR_small",
        "AR_medium",
        "AR_large",
    ];
    let mut worst = 0f64;
    for dataset in ["coco128", "coco_extra_train"] {
        let Some(ann) = annotations(dataset) else {
            return;
        };
        let dir = ann
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("images/train2017");
        let ds = Dataset::from_coco_json(&ann, &dir, DEFAULT_MAX_PIXELS).unwrap();
        let ids: Vec<u64> = ds
            .images
            .iter()
            .map(|i| match i.id {
                ImageId::Num(n) => n,
                _ => panic!(),
            })
            .collect();
        for run in RUNS {
            let Some((_, preds)) = predictions(dataset, run) else {
                return;
            };
            let stats =
                coco::evaluate(coco::load_ground_truth(&ann).unwrap(), &preds, Some(&ids)).unwrap();
            let want = &reference["datasets"][dataset]["runs"][run]["pycocotools"];
            for (k, got) in keys.iter().zip(stats.stats) {
                let d = (got - want[k].as_f64().unwrap()).abs();
                worst = worst.max(d);
                assert!(d <= 1e-4, "{dataset} {run} {k}: {got} vs {}", want[k]);
            }
            assert_eq!(stats.lines.len(), 12);
        }
    }
    eprintln!("COCOeval vs pycocotools reference, worst |diff| over 96 stats: {worst:.2e}");
}

#[test]
fn cocoeval_command_matches_live_pycocotools() {
    let Some(python) = oracle_python() else {
        return;
    };
    let Some(ann) = annotations("coco128") else {
        return;
    };
    let Some((dt, _)) = predictions("coco128", "yolov5n_pruned30_onnx_op12") else {
        return;
    };
    let tmp = scratch();
    let report = tmp.path().join("stats.json");
    let stdout = succeed(
        shears()
            .args(["cocoeval", "--gt"])
            .arg(&ann)
            .arg("--dt")
            .arg(&dt)
            .arg("--json")
            .arg(&report),
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("Average")).count(),
        12,
        "{stdout}"
    );
    let ours: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let script = r#"
import sys, json, io, contextlib
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2]); e = COCOeval(gt, dt, 'bbox')
    e.evaluate(); e.accumulate()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    e.summarize()
print(json.dumps({"stats": [float(x) for x in e.stats], "summary": out.getvalue()}))
"#;
    let live: Value = serde_json::from_str(
        run_python(
            &python,
            script,
            &[ann.to_str().unwrap(), dt.to_str().unwrap()],
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(
        stdout,
        live["summary"].as_str().unwrap(),
        "summary differs from pycocotools"
    );
    let live: Vec<f64> = live["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let ours: Vec<f64> = ours["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(ours.len(), 12);
    for (a, b) in ours.iter().zip(&live) {
        assert!((a - b).abs() <= 1e-12, "{ours:?} vs pycocotools {live:?}");
    }
}

#[test]
fn cocoeval_command_reports_bad_input_with_exit_2() {
    let tmp = scratch();
    let missing = tmp.path().join("missing.json");
    error_exit(
        shears()
            .args(["cocoeval", "--gt"])
            .arg(&missing)
            .arg("--dt")
            .arg(&missing),
        "missing.json",
    );
    let Some(ann) = annotations("coco128") else {
        return;
    };
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, b"{\"not\": \"a list\"}").unwrap();
    error_exit(
        shears()
            .args(["cocoeval", "--gt"])
            .arg(&ann)
            .arg("--dt")
            .arg(&bad),
        "bad.json",
    );
}

#[test]
fn results_round_trip_official_predictions() {
    // to_coco_results on boxes read back from val.py's JSON reproduces that JSON
    let Some((_, preds)) = predictions("coco128", "yolov5n_onnx_op12") else {
        return;
    };
    let by = detections_by_image(&preds);
    let mut ids: Vec<&u64> = by.keys().collect();
    ids.sort();
    let mut max_box = 0f64;
    let mut n = 0;
    let mut by_img: HashMap<u64, Vec<&CocoResult>> = HashMap::new();
    for p in &preds {
        if let ImageId::Num(id) = p.image_id {
            by_img.entry(id).or_default().push(p);
        }
    }
    for id in ids {
        let ours = coco::to_coco_results(&ImageId::Num(*id), &by[id], true);
        for (a, b) in ours.iter().zip(&by_img[id]) {
            assert_eq!(
                (&a.image_id, a.category_id, a.score),
                (&b.image_id, b.category_id, b.score)
            );
            for k in 0..4 {
                max_box = max_box.max((a.bbox[k] - b.bbox[k]).abs());
            }
            n += 1;
        }
    }
    assert_eq!(n, preds.len());
    // x + w computed in f32 and back loses at most a few units of the 3rd decimal
    assert!(max_box <= 2e-3, "{max_box}");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The fixtures are all baseline 4:4:4 / 4:2:0 / grey; these cover the other decoder paths.
#[test]
fn jpeg_decoder_equals_libjpeg_turbo_on_progressive_restart_and_subsampled_files() {
    for (what, jpeg, w, h, rgb) in JPEG_CASES {
        let img = shears::eval::jpeg::decode(&unhex(jpeg), DEFAULT_MAX_PIXELS)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(img.dimensions(), (w, h), "{what}");
        let want = unhex(rgb);
        let off = img
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(off, 0, "{what}: {off} values differ from cv2.imdecode");
    }
}

/// Small JPEGs written by OpenCV 4.11 (libjpeg-turbo) with the RGB pixels `cv2.imdecode`
/// returns for them: (what, jpeg hex, width, height, rgb hex).
const JPEG_CASES: [(&str, &str, u32, u32, &str); 4] = [
    (
        "progressive 4:2:2 (h2v1), restart interval 1, optimised tables",
        concat!(
            "ffd8ffe000104a46494600010100000100010000ffdb0043000504040504030505040506060506080e0908070708110c",
            "0d0a0e141115141311131316181f1b16171e1713131b251c1e2021232323151a26292622291f222322ffdb0043010606",
            "060807081009091022161316222222222222222222222222222222222222222222222222222222222222222222222222",
            "2222222222222222222222222222ffc2001108000d001503012100021101031101ffc400180000030101000000000000",
            "0000000000000005060104ffc4001801000203000000000000000000000000000406010305ffdd00040001ffda000c03",
            "01000210031000000197a5ab77ffd07216c9ffd17b85b27fffd2e925afffc4001a100100030003000000000000000000",
            "000003000102051332ffda00080101000105023047dfffd01e367fffd1c19967ffd2f35fffd34bebcfffd4b6ddcfffc4",
            "001811010100030000000000000000000000000001020312ffda0008010301013f01d78bffd0e5ffd191ffd291ffc400",
            "1a110003000301000000000000000000000000010203042112ffda0008010201013f01c3afebacffd05327ffd17c47ff",
            "d2acb499ffc4001c1000020202030000000000000000000000000201110331237181ffda0008010100063f02e24b3fff",
            "d0bcede29fffd1a4588e8fffd2a8d41fffd3bd9fffd4d9ffc4001d100100020202030000000000000000000001001121",
            "4151c1316171ffda0008010100013f21ad2577e03ecfffd0103279fb9fffd1ac37d3b9ffd2c08d60027fffd3a5ae5a67",
            "ffd4c85c3827ffda000c030100020003000000100fffd0cfffd13fffd2efffc400171100030100000000000000000000",
            "00000000011121ffda0008010301013f10b69fffd0c9ffd15d87ffd24a47ffc400171101010101000000000000000000",
            "00000001001131ffda0008010201013f10d247ffd011997fffd15c2fffd24017ffc4001e100100020202030100000000",
            "0000000000010011213141917181a1d1ffda0008010100013f103e8953d5a681e72f389fffd0b110dfc8e2f44fffd123",
            "cf632be767dcffd2a0090c1013ffd3beaf0d2507ecffd4aab5696827ffd9",
        ),
        21,
        13,
        concat!(
            "77362271301c7a392563220c6f2f166e2d116928087a3613813b17883e1b8a3b1a8733198a311f9638309c3d399e3a42",
            "8a293d89264393304db04c6ed56f967b3b2278381f7e3d277736205917006320067b381d762f1383391c873a208e3c26",
            "953d2f943a328e2e3086222a811a2f942f51b9527fe37ca9f68ebff186bc76361a89492e6321076c2a1476321d78311f",
            "762f1d8438287e2f228430268c34308f33368d2b38962e45b34b66d56891f588bff485c7f384c6f283c8f482ca7b3c1d",
            "733317702e168945327b3529712620742622732123943e418d313c8b2a3b99324daf476acd5f8cea7baeff8dc9fb86cd",
            "f781cdf17bc9ee77c7ee77c981412669270f702d1c6d241b70252276252b802a37872c3e6f10288e2949b95176e274a3",
            "fe8ec6ff95d6fe89cff178c5e167b4ed72c2fa7fcfff84d5fc81d271301e7f3b2e89433b671b1d7d2d38812c41802340",
            "97355bcc6590e67aabf888c0f581c0ea75bbeb72bff276caf87acefe7fd0fb7acaf877c7f877c7fa7bca6b271e68211d",
            "7c34377c2e3b762039a14669e784b0ff9fd2f689c2f785c3f782c6f981c9fc81d1fb7fd3f677d2f06fc9f773c7fb76c7",
            "fd78c9f974c5f06dbd7f3937762e31671e27ab5c71de87a7ec8fbbe985b7ec83bcf483c3ee79bfec74bcf177c4f577cb",
            "f273ccf372cff976d3f872c9f971c5f971c5fc74c8fe79caa5407ad16ca8f088c5ef85c7ec81c5f183ccf181cdf07ccd",
            "f07ccdf07acef47fd0f37ecfee77c7ef78c8f07ac8eb72c1f178c8f97eceff85d1ff87d1ff84cbd369a9eb81c3f689cc",
            "ec7ec5e979c1eb7bc7ed7ac7ee79c8ec77c8ef78caf47dcdf079c9e86fbced74c1f880cafc82cdf97fcaf87ac4f173ba",
            "ec6baee766a7f381c7f987cff381c9ea77c2ed78c6ee79c8ef78c8f17accf37acaed74c4ee74c1ef75c2f478c1fe82cb",
            "ff87ceff81c8f273b8ea69acdf5d9dd95591d7548af47ecaf37dc9ee78c6ed76c6f37cccf17accef75c8f278cbf77ccc",
            "f476c7f679c5fa7cc6fc7dc4fe7fc4f978b9eb68aadd5b99dc5693d8538ad85285dd5583f57acaf479c9f075c6f378c9",
            "f67ccfef75c8e76dc0ec70c4f378c8fe7fceff8cd6ff85cdf270b6e660a5df5a9bd85291d64e8cd8518bdd5587df5684",
            "df577d",
        ),
    ),
    (
        "baseline 4:4:0 (h1v2), restart interval 2",
        concat!(
            "ffd8ffe000104a46494600010100000100010000ffdb004300090607080706090808080a0a090b0e170f0e0d0d0e1c14",
            "151117221e2323211e2020252a352d2527322820202e3f2f3237393c3c3c242d4246413a46353b3c39ffdb0043010a0a",
            "0a0e0c0e1b0f0f1b39262026393939393939393939393939393939393939393939393939393939393939393939393939",
            "3939393939393939393939393939ffc00011080011001303011200021101031101ffc4001f0000010501010101010100",
            "000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d010203000411051221",
            "31410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a",
            "434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293949596979899",
            "9aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1",
            "f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bffc400b51100",
            "020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c109233352f015",
            "6272d10a162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a63646566676869",
            "6a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4",
            "c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffdd00040002ffda000c0301000211",
            "0311003f00b363a4da58a620b748c7ab0e7f3a6348f21f9989f6af41d66cfb0861e10d922db4d1c67ef163ed5507e159",
            "f3b66b65dcffd0bff6c6ed1ae2abed6ed5d5ed3ccfb4bc460a2865b3ffd1b5174a2b49ec7d748b2bd0515cace57b9fff",
            "d9",
        ),
        19,
        17,
        concat!(
            "2e0a613a0f684b1970672680873893a54ba5be59b5cb62bef661c5f560c4f35fc1f25ebef35fbdf663bef966bffb68c1",
            "ee63c0f065c2f267c454227b68308b8847a1ab5cb8c469c6d36cc8d866c5d862c2f05ec1ef5dbfee5cbeee5dbcef5ebb",
            "f160bbf363bbf464bcf86bc7f96cc8fa6dc9a452b4ae58b9c062c3d26acde16dd0ea6ccfee68cbef64c7eb5bbaec5cbb",
            "ed5ebaee5fb9f061b9f264baf365b9f466bafc6ec2fb6dc1fa6cc0dd73d8d96dd2d965cadb5cc3df58bee958bdf15bbf",
            "f85dc3ec5fbbed61baef63bcf266bdf367bdf469bcf56abdf56abbf361b2f15fb0ef5daee066c9e466cae965caee63c8",
            "f45fc3f65bc0f959bdf856bbf46ac0f46abff369bef269bbf168baef66b6ed64b2ec63b1e755a0e6549fe4529ddc58bb",
            "e25cbfea5fc2f363c5fb65c6ff65c6ff66c5ff64c4f86dc0f66bbcf267b8ed63b1e85eace359a6e056a3de54a1e7519b",
            "e6509ae6509ae566bfe665bfe863bcea64bbf066bcf769bffd6ac2ff6dc2f263b2ef60afeb5cabe657a6e152a1de509c",
            "dc4e9adc4e98e65098e75199e8529af070c5f472c8f874c8f874c7f671c2f269b9ea61b1e55caaea56a2e854a0e5519d",
            "e24e9ce14d9be24e9ae4509ce5519de54d98e74f9ae9519cf370c0f26fbfef6cbaec67b6e662aee05ca8dc55a2d9529e",
            "e64e99e74f9ae74f9ae74f9ae8509be8509be8509be9519ce7509de8519ee8519eef62b1ed60afe95caae359a6df55a2",
            "dd53a0dc529fdb519cec509aec509aec509aed509ded509dee519eee519eee519ee5519fe5519fe5519fec53a3e950a0",
            "e54c9ce24999e24a97e34b98e54e9be7509ded5097ed4f99ed4f99ee509bee509bef519eef519eef50a0e4529de4529d",
            "e4529dee4b9cec499aea4798e94898e94898eb4a9aec4d9dee4f9fe94d94ea4e97ea4e97ea4e98eb4f99eb4e9beb4e9d",
            "ec4f9ee2549ce1539be1539beb4995ec4998ed4a99ed4c9aee4d9bee4d9dee4d9dec4d9de55094e65195e65097e65098",
            "e7519be7509de7509de851a0e05898df5797df5797e74994e84a97ea4c99eb4e9beb4e9bea4d9ce94c9be84b9ae55497",
            "e55497e55499e6549be6549de755a0e754a2e754a2df5b95df5b95df5b95e04e95e04e95e04e95e14f98e14f98e2509b",
            "e3519ce3529ddf5797df5799df5799e0579de0579fe157a2e157a4e157a4de5e8fde5e8fdf5f90e2529ae15199df4f97",
            "dc4e96dd4f97e0529ce456a0e658a2db5594dc5597db5697db5698dc5799dc5799da5799db589adb628bda638bdb648c",
            "e24e9ae34f9be34f99e34f9be3519ae3519ae25298e35399db5793da5894dd5b99de5e9bde619bdf649adf6596de6693",
            "d96e8ada728dd9758d",
        ),
    ),
    (
        "progressive 4:2:0 (h2v2) with odd size",
        concat!(
            "ffd8ffe000104a46494600010100000100010000ffdb0043000302020202020302020203030303040604040404040806",
            "06050609080a0a090809090a0c0f0c0a0b0e0b09090d110d0e0f101011100a0c12131210130f101010ffdb0043010303",
            "0304030408040408100b090b101010101010101010101010101010101010101010101010101010101010101010101010",
            "1010101010101010101010101010ffc20011080013001703012200021101031101ffc400180001010101010000000000",
            "0000000000000004020108ffc4001801000203000000000000000000000000000002010304ffda000c03010002100310",
            "000001f355526f3595232a73630107ffc4001d100101000007010000000000000000000001000203101112212231ffda",
            "0008010100010502e972f19721d366f447d62fffc4001511010100000000000000000000000000001120ffda00080103",
            "01013f0158ffc40017110101010100000000000000000000000001001012ffda0008010201013f016e49cfffc4001910",
            "00030003000000000000000000000000000111102021ffda0008010100063f0238e13459ffc4001b1000030003010100",
            "00000000000000000000011121315110e1ffda0008010100013f21d845329e68b562bad2129618aca96d93e1e6c5b8f6",
            "21ffda000c03010002000300000010a0cf43ffc40017110101010100000000000000000000000001110010ffda000801",
            "0301013f1042ae877fffc400161101010100000000000000000000000000010010ffda0008010201013f1024a6ff00ff",
            "c4001e100100020202030100000000000000000001001121314151617191a1ffda0008010100013f104b1d1d4059a148",
            "c3ddb707809cda57ec0c0d6bcc0d76a3647639de9343bdc6890e59dc2be7ecffd9",
        ),
        23,
        19,
        concat!(
            "1c0d061a0d05190c03150d02150d02130f031411021311021112021213031415031a1b092322102827152a2917282917",
            "1d1f0a1a1d081a1e071b1f081b1f08191d06171b041f10091c0f07180e04150d02140c01140e02131001141203151304",
            "1617071718061819071e1d0b23221024231121200e20220d1e210c1f220d21250e20240d1d210a191d0621140c1e1109",
            "190f06150c03140c01140e02141004141205211f10232112201e0f1816071615031a19071c190817160421221021240f",
            "2326112427122225101d200b191c0721140c1d130a1a1007160d04140d03150f031511051612061311041816071a1809",
            "1917081c1b0923200f272413262513171806181b081a1d0a1a1d08171a071518031619041c110b1b100a1a0f09180f06",
            "1710061710061612071612061814081b170b201d0e232011232011211b0d1f190b1d1a0b1a18091b1c0c1d1e0e1b1c0a",
            "1819091b1c0a222311190e08180f08180f08181109181107181107161207171308130f03130f031713071c190a211b0d",
            "201a0c231d0f252213191708191a0a1819091415051112021516061c1d0d150c05160d06160d06160f07171008161209",
            "161207161207130f04110d01120c00130d011711031c1608241c0f2822141a180b191a0c17180a141507131406161709",
            "191a0c140b04130c04140d05150e06141007151108151106161207130f04141005150f03130d01140e001812041c1407",
            "1a140613110411120411120412130515160818190b191a0c120b05100b05110d04120e05130f06141007151106151106",
            "161207151106161004150f03150f03150f03160e0116100215110512100412100414120617150919170b19170b110c06",
            "120d07120e05130f06130f06141007151106151106110d02120e03161004181206191307191307181003161002181409",
            "151307141206141206141206141206131105120f06120f06131007131007131007131007141206141206100c01110d02",
            "141004161206181506171405181204151203121004101004101004101004101004101004101103141108131007120f06",
            "131007141108141108131105121004141005141005141004130f03120f001310011512031714050d0b000c0c000e0e02",
            "0f0f030f0f0310100411120414140a1111070f0f05101006151307161408131105100e02161407161407141205110f02",
            "0f0d000f0d001311021614050e0f010f10021011031011030f10020e0f010f100214140a1111070e0e040f0f05151307",
            "161408131105100e02151306151306151306141205131102131102141203151304131406141507131406121305101103",
            "0f10020e0f01121208111107101004101004121206131307141205121003161407151306141505171808191a0a191a0a",
            "151606111202151606151606151606141505131404121303111202111107111107111105121206121206121206141205",
            "14120519170a171508141505191a0a1f20101e1f0f171808101101171808171808161707151606151606141505131404",
            "1010061010061010060f0f05101004111105131307151509191a0c141507101101121303171808191a0a161707121303",
            "1112041112041112041213051314061314061415070f0f051010061010060f0f050f0f03101004131307151509161709",
            "1314061011011112021314041415051213031011011011031011031011031011031112041213051314060f0f05101006",
            "1111071010060e0e020f0f0313130716160a161709151608131404121303111202111202101101101101111204111204",
            "111204121305121305131406141507",
        ),
    ),
    (
        "progressive grey",
        concat!(
            "ffd8ffe000104a46494600010100000100010000ffdb0043000403030303020403030304040405060a06060505060c08",
            "09070a0e0c0f0e0e0c0d0d0f1116130f1015110d0d131a131517181919190f121b1d1b181d16181918ffc2000b08000b",
            "001701011100ffc400160001010100000000000000000000000000010207ffda0008010100000001c81617ffc4001410",
            "0100000000000000000000000000000020ffda00080101000105025fffc4001410010000000000000000000000000000",
            "0020ffda0008010100063f025fffc4001810010100030000000000000000000000000041011011ffda0008010100013f",
            "21ba8ea30fffda00080101000000101fffc4001a100101000203000000000000000000000001001121314151ffda0008",
            "010100013f1037804e984997b76b85ffd9",
        ),
        23,
        11,
        concat!(
            "202020202020202020212121212121212121212121212121222222222222222222222222222222222222222222232323",
            "222222222222232323242424242424242424232323212121212121212121212121212121212121212121212121222222",
            "222222222222222222222222222222222222222222222222232323232323242424242424242424232323222222222222",
            "222222212121212121212121222222222222222222222222222222222222222222222222222222222222222222232323",
            "232323242424242424242424242424222222222222212121212121212121212121212121222222232323222222222222",
            "222222222222222222222222222222222222232323242424242424242424242424242424212121212121202020202020",
            "202020202020212121212121232323232323222222222222222222212121222222222222222222232323232323242424",
            "2424242424242424242121212020202020201f1f1f202020202020212121222222232323232323222222222222212121",
            "2121212121212121212222222222222323232323232424242323232323232121212020202020201f1f1f202020212121",
            "232323242424232323232323232323222222212121212121212121212121212121222222222222232323232323232323",
            "232323212121202020202020202020202020222222242424252525242424232323232323222222212121212121212121",
            "212121212121212121222222232323232323232323222222222222222222222222222222222222222222222222222222",
            "212121212121212121222222232323222222212121202020212121212121222222232323232323232323232323212121",
            "212121212121212121212121212121212121212121212121212121212121222222232323222222212121202020212121",
            "212121222222232323232323232323232323202020202020202020202020202020202020202020202020212121212121",
            "212121222222232323222222212121202020212121212121222222232323232323232323232323",
        ),
    ),
];
