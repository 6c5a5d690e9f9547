//! `shears val` reproduces the official val.py and pycocotools numbers (fixture REFERENCE.md)
//! on both datasets, on ONNX Runtime and tract, for the dense, the official pruned and shears'
//! own pruned yolov5n.

use std::path::Path;

use serde_json::Value;

use crate::common::{error_exit, fixture, fixtures, oracle_python, scratch, shears, succeed};

/// The official numbers allow this much difference (issue 3: within 0.003).
const TOLERANCE: f64 = 0.003;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

/// Runs `shears val` on `dataset` (`coco128` or `coco_extra_train`) and returns its JSON report.
fn val(dataset: &str, backend: &str, models: &[&Path], dir: &Path) -> Value {
    let root = fixtures().join("coco").join(dataset);
    let report = dir.join(format!("{dataset}-{backend}.json"));
    let stdout = succeed(
        shears()
            .arg("val")
            .args(models)
            .arg("--data")
            .arg(fixtures().join(format!("coco/{dataset}.yaml")))
            .arg("--data-root")
            .arg(&root)
            .args(["--backend", backend, "--iou", "0.65", "--json"])
            .arg(&report),
    );
    assert!(
        stdout.contains("Speed: ") && stdout.contains("per image at shape (1, 3, 640, 640)"),
        "{stdout}"
    );
    // The header names the backend, and the provider only when it is another name.
    let header = if backend == "tract" {
        "(tract)\n".to_string()
    } else {
        format!("({backend} CPUExecutionProvider)\n")
    };
    assert!(stdout.contains(&header), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// Checks one model's report against the official run `run` of `dataset`.
fn assert_matches(report: &Value, dataset: &str, run: &str) {
    let reference = reference();
    let official = &reference["datasets"][dataset]["runs"][run];
    let ours = |key: &str| report[key].as_f64().unwrap();
    let pairs = [
        (
            "map50_95",
            ours("map50_95"),
            &official["valpy_internal"]["mAP50_95"],
        ),
        ("map50", ours("map50"), &official["valpy_internal"]["mAP50"]),
        (
            "coco AP",
            report["coco"]["stats"][0].as_f64().unwrap(),
            &official["pycocotools"]["AP@[.5:.95]"],
        ),
        (
            "coco AP50",
            report["coco"]["stats"][1].as_f64().unwrap(),
            &official["pycocotools"]["AP@.5"],
        ),
    ];
    for (name, value, expected) in pairs {
        let expected = expected.as_f64().unwrap();
        assert!(
            (value - expected).abs() <= TOLERANCE,
            "{dataset} {run} {name}: {value} vs official {expected}"
        );
    }
}

#[test]
fn ort_reproduces_the_official_numbers_on_coco128_for_dense_and_pruned() {
    let (Some(dense), Some(official)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_pruned30_op12.onnx"),
    ) else {
        return;
    };
    if oracle_python().is_none() {
        return;
    }
    let dir = scratch();
    let ours = dir.path().join("ours_pruned30.onnx");
    succeed(
        shears()
            .args(["prune", "--amount", "0.3", "--no-zstd", "-o"])
            .arg(&ours)
            .arg(&dense),
    );
    let report = val("coco128", "ort", &[&dense, &official, &ours], dir.path());
    let models = report["models"].as_array().unwrap();
    assert_eq!(models[0]["provider"], "CPUExecutionProvider");
    assert_eq!(models[0]["images"], 128);
    assert_eq!(models[0]["instances"], 929);
    assert_matches(&models[0], "coco128", "yolov5n_onnx_op12");
    assert_matches(&models[1], "coco128", "yolov5n_pruned30_onnx_op12");
    assert_matches(&models[2], "coco128", "yolov5n_pruned30_onnx_op12");
}

#[test]
fn ort_reproduces_the_official_numbers_on_coco_extra_train() {
    let (Some(dense), Some(official)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_pruned30_op12.onnx"),
    ) else {
        return;
    };
    if oracle_python().is_none() {
        return;
    }
    let dir = scratch();
    let report = val("coco_extra_train", "ort", &[&dense, &official], dir.path());
    let models = report["models"].as_array().unwrap();
    assert_eq!(models[0]["instances"], 1430);
    assert_matches(&models[0], "coco_extra_train", "yolov5n_onnx_op12");
    assert_matches(&models[1], "coco_extra_train", "yolov5n_pruned30_onnx_op12");
}

#[test]
fn tract_reproduces_the_official_numbers_on_coco128() {
    let (Some(dense), Some(official)) = (
        fixture("models/yolov5n_op17_sim.onnx"),
        fixture("models/yolov5n_pruned30_op12.onnx"),
    ) else {
        return;
    };
    let dir = scratch();
    let report = val("coco128", "tract", &[&dense, &official], dir.path());
    let models = report["models"].as_array().unwrap();
    assert_eq!(models[0]["provider"], "tract");
    assert_matches(&models[0], "coco128", "yolov5n_onnx_op12");
    assert_matches(&models[1], "coco128", "yolov5n_pruned30_onnx_op12");
}

#[test]
fn val_without_a_dataset_is_a_clear_error() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    error_exit(
        shears()
            .arg("val")
            .arg(&dense)
            .arg("--data")
            .arg(dir.path().join("missing.yaml")),
        "missing.yaml",
    );
}
