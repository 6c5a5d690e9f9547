//! A gate, budget search, sweep or sensitivity run never passes on a validation that measured
//! nothing: data without labels, a dense model that scores 0, or NMS settings that make the
//! figures meaningless are errors, and nothing is written.

use std::path::{Path, PathBuf};

use crate::common::{scratch, shears, small_dataset, small_yolov5n};

/// `small_dataset` with its label files removed; `None` without the fixtures outside CI.
fn unlabelled_dataset(dir: &Path) -> Option<PathBuf> {
    let data = small_dataset(dir, 2)?;
    std::fs::remove_dir_all(dir.join("ds/labels")).unwrap();
    Some(data)
}

/// Runs `args` in `dir`: exit code 2 with `needle` in its output (a pipeline reports a failed
/// model in its summary, on stdout), and no file named `out*` appeared.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let out = shears().current_dir(dir).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
    assert!(
        text.contains(needle),
        "{args:?}: expected {needle:?} in: {text}"
    );
    let written: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out"))
        .collect();
    assert!(written.is_empty(), "{args:?} wrote {written:?}");
}

/// The commands that compare against the dense model's validation on `ds.yaml`: a budget
/// search, a sweep and a sensitivity run (their outputs named `out*`).
const SEARCH: &[&str] = &[
    "prune",
    "model.onnx",
    "-o",
    "out.onnx",
    "--max-map-drop",
    "0.01",
    "--data",
    "ds.yaml",
];
const SWEEP: &[&str] = &[
    "sweep",
    "model.onnx",
    "--data",
    "ds.yaml",
    "--methods",
    "layer",
    "--amounts",
    "0.3",
    "-o",
    "out-sweep",
];
const SENSITIVITY: &[&str] = &[
    "sensitivity",
    "model.onnx",
    "--data",
    "ds.yaml",
    "-o",
    "out-sensitivity",
];

/// `command` followed by `extra`.
fn with<'a>(command: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    command.iter().chain(extra).copied().collect()
}

/// Writes `dir/gate.yaml`: a pipeline gating a 30% prune of `model.onnx` on `ds.yaml`, with
/// `validate` lines added to its `validate:` block.
fn write_gate(dir: &Path, validate: &str) {
    std::fs::write(
        dir.join("gate.yaml"),
        format!(
            "models: [model.onnx]\npasses:\n  - prune_magnitude: {{amount: 0.3}}\n\
             output: out.onnx\nvalidate:\n  data: ds.yaml\n{validate}"
        ),
    )
    .unwrap();
}

#[test]
fn data_without_labels_fails_every_gate_search_sweep_and_sensitivity() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "model.onnx");
    if unlabelled_dataset(d).is_none() {
        return;
    }
    let needle = "the validation data measures nothing: no labels found";
    // the search once wrote a 99%-pruned model with exit code 0 (dense 0.000, drop 0)
    for command in [SEARCH, SWEEP, SENSITIVITY] {
        refused(d, command, needle);
    }
    write_gate(d, "  max_map_drop: 0.01\n");
    refused(d, &["run", "gate.yaml"], needle);
}

#[test]
fn a_dense_model_that_scores_zero_fails_the_search_and_the_gate() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "model.onnx");
    if small_dataset(d, 2).is_none() {
        return;
    }
    // conf 1: no score exceeds it, so every model scores 0 on labelled data
    let conf = ["--conf", "1"];
    refused(d, &with(SEARCH, &conf), "the dense model's map50_95 is 0");
    refused(
        d,
        &with(SWEEP, &conf),
        "measures nothing to compare against",
    );
    write_gate(d, "  conf: 1.0\n  max_map_drop: 0.01\n");
    refused(
        d,
        &["run", "gate.yaml"],
        "measures nothing to compare against",
    );
}

#[test]
fn nms_settings_outside_their_range_are_refused_everywhere() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "model.onnx");
    if small_dataset(d, 1).is_none() {
        return;
    }
    let bad: [(&str, &str, &str); 7] = [
        ("--iou", "0", "iou 0 must be in (0, 1]"),
        ("--iou", "1.5", "iou 1.5 must be in (0, 1]"),
        ("--iou", "NaN", "iou NaN must be in (0, 1]"),
        ("--conf", "-0.1", "conf -0.1 must be in [0, 1]"),
        ("--conf", "1.5", "conf 1.5 must be in [0, 1]"),
        ("--conf", "NaN", "conf NaN must be in [0, 1]"),
        ("--max-det", "0", "max_det 0 keeps no detection"),
    ];
    for (flag, value, needle) in bad {
        let setting = format!("{flag}={value}");
        let extra = [setting.as_str()];
        refused(
            d,
            &with(&["val", "model.onnx", "--data", "ds.yaml"], &extra),
            needle,
        );
        refused(d, &with(SWEEP, &extra), needle);
        refused(d, &with(SENSITIVITY, &extra), needle);
        // the budget search takes no --max-det
        if flag != "--max-det" {
            refused(d, &with(SEARCH, &extra), needle);
        }
        let key = flag.trim_start_matches("--").replace('-', "_");
        let value = if value == "NaN" { ".nan" } else { value };
        write_gate(d, &format!("  {key}: {value}\n"));
        refused(d, &["run", "gate.yaml"], needle);
    }
}
