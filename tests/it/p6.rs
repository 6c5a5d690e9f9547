//! P6 models (`models/hub/yolov5{n,s,m,l,x}6.yaml`: a stride-64 stage, four Detect levels, 1280
//! input): the generated graphs against facts of the official exporter's graphs, their channel
//! analysis, and `prune` and `val` on them.
//!
//! The counts below were read from exports of `yolov5n6.yaml` by yolov5 7.0.14's `export.py`
//! (torch 2.15, onnxsim 0.8.1; `scripts/export_yolov5.py`), which `scripts/check-synth.sh`
//! compares with `shears synth` node for node.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use shears::analysis::channel_groups;
use shears::onnx::proto::ModelProto;
use shears::onnx::tensor::{to_f32, value_info_f32};
use shears::synth::{self, Export, SynthSpec, Upsample, Variant};

use crate::common::{
    error_exit, fixtures, oracle_python, run_python, scratch, shears, small_dataset, succeed,
};

fn spec(variant: Variant, export: Export, upsample: Upsample) -> SynthSpec {
    SynthSpec {
        export,
        upsample,
        ..SynthSpec::new(variant)
    }
}

/// Number of nodes of each op type.
fn op_counts(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &model.graph.as_ref().unwrap().node {
        *counts.entry(node.op_type().to_owned()).or_default() += 1;
    }
    counts
}

fn metadata<'a>(model: &'a ModelProto, key: &str) -> &'a str {
    model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .and_then(|p| p.value.as_deref())
        .unwrap_or_else(|| panic!("no {key} metadata"))
}

#[test]
fn yolov5n6_has_the_official_exports_counts_in_every_form() {
    // (form, nodes, initializers, value_info, numbers of onnxsim's folded initializers `_v_<n>`)
    // of the official yolov5n6 exports at 1280.
    let forms = [
        (
            Export::Opset12,
            Upsample::ComputedSizes,
            390,
            158,
            0,
            vec![],
        ),
        (
            Export::Opset12,
            Upsample::ConstantScales,
            348,
            158,
            0,
            vec![],
        ),
        (
            Export::Opset17Simplified,
            Upsample::ComputedSizes,
            323,
            170,
            330,
            (567..=575).chain(601..=603).collect(),
        ),
        (
            Export::Opset17Simplified,
            Upsample::ConstantScales,
            324,
            167,
            331,
            (515..=523).collect(),
        ),
    ];
    for (export, upsample, nodes, initializers, value_info, folded) in forms {
        let label = format!("{export:?} {upsample:?}");
        let model = synth::build(&spec(Variant::N6, export, upsample)).unwrap();
        let g = model.graph.as_ref().unwrap();
        assert_eq!(g.node.len(), nodes, "{label}: nodes");
        assert_eq!(g.initializer.len(), initializers, "{label}: initializers");
        assert_eq!(g.value_info.len(), value_info, "{label}: value_info");
        let folded_names: Vec<String> = folded.iter().map(|n| format!("_v_{n}")).collect();
        let ours: Vec<&str> = (g.initializer.iter())
            .map(|t| t.name())
            .filter(|name| !name.starts_with("model."))
            .collect();
        assert_eq!(ours, folded_names, "{label}: folded initializers");
        assert_eq!(metadata(&model, "stride"), "64", "{label}");
        let rows = 3 * (160 * 160 + 80 * 80 + 40 * 40 + 20 * 20);
        assert_eq!(rows, 102_000);
        assert_eq!(
            g.output,
            [value_info_f32("output0", &[1, rows, 85])],
            "{label}"
        );
    }
    let official_ops: BTreeMap<String, usize> = [
        ("Add", 12),
        ("Cast", 3),
        ("Concat", 29),
        ("Constant", 53),
        ("Conv", 79),
        ("Floor", 6),
        ("MaxPool", 3),
        ("Mul", 91),
        ("Pow", 4),
        ("Reshape", 8),
        ("Resize", 3),
        ("Shape", 3),
        ("Sigmoid", 79),
        ("Slice", 3),
        ("Split", 4),
        ("Transpose", 4),
        ("Unsqueeze", 6),
    ]
    .into_iter()
    .map(|(op, n)| (op.to_owned(), n))
    .collect();
    let plain = synth::build(&SynthSpec::new(Variant::N6)).unwrap();
    assert_eq!(op_counts(&plain), official_ops);
}

#[test]
fn the_four_detect_levels_read_p3_to_p6_with_the_p6_anchors() {
    let model = synth::build(&SynthSpec::new(Variant::N6)).unwrap();
    let g = model.graph.as_ref().unwrap();
    let node = |name: &str| {
        g.node
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    };
    for (level, layer) in [23, 26, 29, 32].into_iter().enumerate() {
        let conv = node(&format!("/model.33/m.{level}/Conv"));
        assert_eq!(
            conv.input,
            [
                format!("/model.{layer}/cv3/act/Mul_output_0"),
                format!("model.33.m.{level}.weight"),
                format!("model.33.m.{level}.bias"),
            ]
        );
    }
    // The level-3 (stride 64, 20x20 cells) anchor_grid holds yolov5n6.yaml's P6/64 anchors.
    let anchor_grid = node("/model.33/Constant_30");
    let values = to_f32(anchor_grid.attribute[0].t.as_ref().unwrap()).unwrap();
    assert_eq!(values.len(), 3 * 20 * 20 * 2);
    let per_anchor = 20 * 20 * 2;
    let anchors: Vec<[f32; 2]> = (0..3)
        .map(|a| [values[a * per_anchor], values[a * per_anchor + 1]])
        .collect();
    assert_eq!(anchors, [[436.0, 615.0], [739.0, 380.0], [925.0, 792.0]]);
    let stride = node("/model.33/Constant_27");
    let stride = to_f32(stride.attribute[0].t.as_ref().unwrap()).unwrap();
    assert_eq!(stride, [64.0]);
    assert_eq!(
        node("/model.33/Concat_4").input.len(),
        4,
        "the output concatenates four levels"
    );
}

#[test]
fn cli_sizes_p6_models_by_stride_64() {
    let dir = scratch();
    let path = dir.path().join("n6.onnx");
    let stdout = common_synth(&path, &["yolov5n6"]);
    assert!(stdout.contains("yolov5n6 (3239884 parameters"), "{stdout}");
    let model = shears::onnx::load(&path).unwrap();
    assert_eq!(
        model.graph().input,
        [value_info_f32("images", &[1, 3, 1280, 1280])],
        "default size 1280"
    );
    error_exit(
        shears()
            .args(["synth", "yolov5n6", "--imgsz", "352", "-o"])
            .arg(dir.path().join("bad.onnx")),
        "multiple of 64 (the largest stride of yolov5n6)",
    );
}

/// `shears synth ARGS -o PATH`: stdout.
fn common_synth(path: &Path, args: &[&str]) -> String {
    succeed(shears().arg("synth").args(args).arg("-o").arg(path))
}

#[test]
fn channel_analysis_locks_exactly_the_four_detect_convs() {
    let model = synth::build(&SynthSpec {
        imgsz: 256,
        ..SynthSpec::new(Variant::N6)
    })
    .unwrap();
    let analysis = channel_groups(model.graph.as_ref().unwrap()).unwrap();
    let locked: Vec<&str> = analysis
        .groups
        .iter()
        .filter(|g| !g.is_prunable())
        .flat_map(|g| g.producer_names.iter().map(String::as_str))
        .collect();
    assert_eq!(
        locked,
        (0..4)
            .map(|i| format!("/model.33/m.{i}/Conv"))
            .collect::<Vec<_>>()
    );
    // 75 Convs before Detect, 8 of them tied by the residual Adds of the backbone's C3 blocks
    // (1 + 2 + 3 + 1 + 1 bottlenecks at depth 0.33).
    assert_eq!(analysis.groups.len() - locked.len(), 67);
}

/// onnx's full checker and onnxruntime: each candidate's outputs against its reference, relative
/// to the reference's largest |output| (`tests/oracles/compare_pairs.py`).
fn ort_relative_differences(pairs: &[(&Path, &Path)]) -> Option<Vec<f64>> {
    let python = oracle_python()?;
    let args: Vec<&str> = pairs
        .iter()
        .flat_map(|(a, b)| [a.to_str().unwrap(), b.to_str().unwrap()])
        .collect();
    let report: Value = serde_json::from_str(&run_python(
        &python,
        include_str!("../oracles/compare_pairs.py"),
        &args,
    ))
    .unwrap();
    Some(
        report
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["max_abs_diff"].as_f64().unwrap() / r["max_abs"].as_f64().unwrap())
            .collect(),
    )
}

#[test]
fn p6_models_prune_by_channels_and_by_weights() {
    let dir = scratch();
    let dense = dir.path().join("n6.onnx");
    common_synth(&dense, &["yolov5n6", "--imgsz", "256", "--opset", "17"]);
    let (channels, masked) = (dir.path().join("ch.onnx"), dir.path().join("masked.onnx"));
    let stdout = succeed(
        shears()
            .arg("prune")
            .arg(&dense)
            .args(["--method", "channel", "--amount", "0.3", "--no-zstd", "-o"])
            .arg(&channels)
            .arg("--emit-masked")
            .arg(&masked),
    );
    assert!(
        stdout.contains("verified against the masked dense model"),
        "{stdout}"
    );
    let sparse = dir.path().join("sparse.onnx");
    succeed(
        shears()
            .arg("prune")
            .arg(&dense)
            .args(["--amount", "0.3", "--scope", "global", "--no-zstd", "-o"])
            .arg(&sparse),
    );
    let stats = |p: &Path| shears::analysis::model_stats(shears::onnx::load(p).unwrap().graph());
    let (before, after) = (stats(&dense).unwrap(), stats(&channels).unwrap());
    assert!(
        (after.params as f64) < 0.8 * before.params as f64,
        "{} of {} parameters left",
        after.params,
        before.params
    );
    let sparsity = stats(&sparse).unwrap().sparsity.conv_weights;
    assert!((sparsity - 0.3).abs() < 0.001, "global sparsity {sparsity}");

    // onnxruntime: the pruned model equals its masked model, and the sparse model runs with the
    // dense model's output shape (its outputs differ, the weights having changed).
    let Some(relative) = ort_relative_differences(&[(&masked, &channels), (&dense, &sparse)])
    else {
        return;
    };
    assert!(relative[0] <= 1e-5, "pruned against masked: {relative:?}");
    assert!(relative[1] > 0.0, "unstructured pruning changed nothing");
}

#[test]
fn val_runs_p6_models_at_1280() {
    let dir = scratch();
    small_dataset(dir.path(), 2).expect("coco128 fixture");
    let model = dir.path().join("n6.onnx");
    // 3 classes keep the random model's candidate boxes few enough for a quick NMS.
    common_synth(&model, &["yolov5n6", "--nc", "3"]);
    // val on the first coco128 images with their COCO annotations.
    let val = || {
        let mut command = shears();
        command
            .arg("val")
            .arg(&model)
            .arg("--coco-json")
            .arg(fixtures().join("coco/coco128/annotations/instances_coco128.json"))
            .arg("--images")
            .arg(dir.path().join("ds/images"));
        command
    };
    let report = |extra: &[&str], name: &str| -> Value {
        let path = dir.path().join(name);
        succeed(val().args(extra).arg("--json").arg(&path));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        report["models"][0].clone()
    };
    // The size comes from the model's fixed input, or from --imgsz.
    let default = report(&[], "default.json");
    let asked = report(&["--imgsz", "1280"], "asked.json");
    assert_eq!(
        default["input_shape"],
        serde_json::json!([1, 3, 1280, 1280])
    );
    assert_eq!(default["coco"]["stats"], asked["coco"]["stats"]);
    error_exit(
        val().args(["--imgsz", "640"]),
        "fixes its height at 1280, not the image size 640",
    );
}
