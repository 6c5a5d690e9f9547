//! The export forms users ship besides the plain float32 one, derived from the fixture opset-12
//! export by `tests/oracles/export_form.py` (no PyTorch needed): `export.py --half` (FLOAT16
//! input, outputs, weights and constants), fp16 weights read through `Cast` nodes (fp16
//! conversion tools), and `export.py --dynamic` (symbolic batch, height and width).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{
    error_exit, fixture, fixtures, oracle_python, run_python, scratch, shears, small_dataset,
    succeed,
};

/// Images validated: few, to keep the suite fast; enough to give every figure a value.
const IMAGES: usize = 8;

/// The fixture export converted to `form` (`half`, `half-cast` or `dynamic`) in `dir`; `None`
/// when the fixture or the oracle venv is absent outside CI.
fn derive(form: &str, dir: &Path) -> Option<PathBuf> {
    let model = fixture("models/yolov5n_op12.onnx")?;
    let python = oracle_python()?;
    let out = dir.join(format!("{form}.onnx"));
    run_python(
        &python,
        include_str!("../oracles/export_form.py"),
        &[model.to_str()?, out.to_str()?, form],
    );
    Some(out)
}

/// `shears val` of `models` on the first [`IMAGES`] coco128 images with their COCO annotations,
/// on `backend`, with `extra` flags: each model's JSON report.
fn val(models: &[&Path], backend: &str, extra: &[&str], dir: &Path) -> Vec<Value> {
    small_dataset(dir, IMAGES).expect("coco128 fixture");
    let report = dir.join(format!("val-{backend}.json"));
    succeed(
        shears()
            .arg("val")
            .args(models)
            .arg("--coco-json")
            .arg(fixtures().join("coco/coco128/annotations/instances_coco128.json"))
            .arg("--images")
            .arg(dir.join("ds/images"))
            .args(["--backend", backend])
            .args(extra)
            .arg("--json")
            .arg(&report),
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    report["models"].as_array().unwrap().clone()
}

/// val.py's mAP@.5:.95 and COCOeval's AP of one model's report.
fn figures(report: &Value) -> [f64; 2] {
    [
        report["map50_95"].as_f64().unwrap(),
        report["coco"]["stats"][0].as_f64().unwrap(),
    ]
}

/// `shears prune --method channel --amount 0.3` of `model` to `out`, with its masked model: stdout.
fn prune_channels(model: &Path, out: &Path, masked: &Path) -> String {
    succeed(
        shears()
            .args(["prune", "--method", "channel", "--amount", "0.3"])
            .arg(model)
            .arg("-o")
            .arg(out)
            .arg("--emit-masked")
            .arg(masked),
    )
}

/// onnx's full checker on both models, then their outputs in onnxruntime: the largest |difference|
/// relative to the largest |output| of `reference`.
fn ort_relative_difference(reference: &Path, candidate: &Path) -> f64 {
    let python = oracle_python().expect("oracle python");
    let args = [reference.to_str().unwrap(), candidate.to_str().unwrap()];
    let report: Value = serde_json::from_str(&run_python(
        &python,
        include_str!("../oracles/check_and_compare.py"),
        &args,
    ))
    .unwrap();
    assert_eq!(report["shapes"][0], report["shapes"][1], "{report}");
    assert_eq!(
        report["finite"],
        serde_json::json!([true, true]),
        "{report}"
    );
    report["max_abs_diff"][1].as_f64().unwrap() / report["max_abs"].as_f64().unwrap()
}

/// The element type and dimensions (`dim_param` names or values) declared for a graph input.
fn declared_input(model: &Path) -> (i32, Vec<String>) {
    use shears::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use shears::onnx::proto::type_proto::Value as Type;
    let model = shears::onnx::load(model).unwrap();
    let input = &model.graph().input[0];
    let Some(Type::TensorType(t)) = input.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("input is not a tensor");
    };
    let dims = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Dim::DimValue(v)) => v.to_string(),
            Some(Dim::DimParam(p)) => p.clone(),
            None => "?".into(),
        });
    (t.elem_type(), dims.collect())
}

#[test]
fn half_export_validates_within_0_002_of_float32_on_tract_and_ort() {
    let dir = scratch();
    let (Some(dense), Some(half)) = (
        fixture("models/yolov5n_op12.onnx"),
        derive("half", dir.path()),
    ) else {
        return;
    };
    for backend in ["tract", "ort"] {
        let reports = val(&[&dense, &half], backend, &[], dir.path());
        let (fp32, fp16) = (figures(&reports[0]), figures(&reports[1]));
        for (name, a, b) in [
            ("mAP@.5:.95", fp32[0], fp16[0]),
            ("COCO AP", fp32[1], fp16[1]),
        ] {
            assert!(a > 0.3, "{backend} {name} {a}: the images excite the model");
            assert!(
                (a - b).abs() <= 0.002,
                "{backend} {name}: fp16 {b} against fp32 {a}"
            );
        }
    }
}

#[test]
fn channel_pruned_half_export_verifies_stays_fp16_and_equals_its_masked_model_in_ort() {
    let dir = scratch();
    let Some(half) = derive("half", dir.path()) else {
        return;
    };
    let (pruned, masked) = (
        dir.path().join("pruned.onnx"),
        dir.path().join("masked.onnx"),
    );
    let stdout = prune_channels(&half, &pruned, &masked);
    assert!(
        stdout.contains("verified against the masked dense model"),
        "{stdout}"
    );
    let float16 = shears::onnx::proto::tensor_proto::DataType::Float16 as i32;
    assert_eq!(declared_input(&pruned).0, float16);
    let weights = shears::onnx::load(&pruned).unwrap();
    assert!(
        weights
            .graph()
            .initializer
            .iter()
            .all(|t| t.data_type() == float16),
        "every weight of the pruned model stays FLOAT16"
    );
    // Both run in fp16 arithmetic, summing in different orders: within fp16's rounding (2^-10).
    let relative = ort_relative_difference(&masked, &pruned);
    assert!(
        relative <= 1e-3,
        "pruned against masked in ORT: {relative:e}"
    );
}

#[test]
fn dynamic_export_validates_at_imgsz_as_the_static_export_does_and_prunes() {
    let dir = scratch();
    let (Some(dense), Some(dynamic)) = (
        fixture("models/yolov5n_op12.onnx"),
        derive("dynamic", dir.path()),
    ) else {
        return;
    };
    assert_eq!(
        declared_input(&dynamic).1,
        ["batch", "3", "height", "width"]
    );
    let reports = val(&[&dense, &dynamic], "ort", &["--imgsz", "640"], dir.path());
    assert_eq!(
        reports[1]["input_shape"],
        serde_json::json!([1, 3, 640, 640])
    );
    assert_eq!(figures(&reports[0]), figures(&reports[1]));
    assert_eq!(reports[0]["coco"]["stats"], reports[1]["coco"]["stats"]);

    // A model that fixes its size is not run at another.
    error_exit(
        shears()
            .arg("val")
            .arg(&dense)
            .arg("--coco-json")
            .arg(fixtures().join("coco/coco128/annotations/instances_coco128.json"))
            .arg("--images")
            .arg(dir.path().join("ds/images"))
            .args(["--imgsz", "320"]),
        "fixes its height at 640, not the image size 320",
    );

    let (pruned, masked) = (
        dir.path().join("pruned.onnx"),
        dir.path().join("masked.onnx"),
    );
    let stdout = prune_channels(&dynamic, &pruned, &masked);
    assert!(
        stdout.contains("verified against the masked dense model"),
        "{stdout}"
    );
    // Analysed at 640, as the static export is.
    let (fixed, symbolic) = (stats(&dense), stats(&dynamic));
    assert!(symbolic.macs_complete);
    assert_eq!(symbolic.macs, fixed.macs);
    let (dense_params, pruned_params) = (symbolic.params, stats(&pruned).params);
    assert!(
        (pruned_params as f64) < 0.8 * dense_params as f64,
        "channels went: {pruned_params} of {dense_params} conv parameters left"
    );
    assert_eq!(declared_input(&pruned).1, ["batch", "3", "height", "width"]);
    let relative = ort_relative_difference(&masked, &pruned);
    assert!(
        relative <= 1e-5,
        "pruned against masked in ORT: {relative:e}"
    );
}

/// What `shears inspect` counts of a model.
fn stats(model: &Path) -> shears::analysis::ModelStats {
    shears::analysis::model_stats(shears::onnx::load(model).unwrap().graph()).unwrap()
}

#[test]
fn fp16_weights_behind_casts_are_refused_naming_fp16_and_the_cast() {
    let dir = scratch();
    let Some(cast) = derive("half-cast", dir.path()) else {
        return;
    };
    let out = dir.path().join("pruned.onnx");
    let stderr = error_exit(
        shears()
            .args(["prune", "--method", "channel", "--amount", "0.3"])
            .arg(&cast)
            .arg("-o")
            .arg(&out),
        "is the FLOAT16 initializer \"model.0.conv.weight_fp16\"",
    );
    assert!(
        stderr.contains("\"model.0.conv.weight_cast\" Cast"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written");
}
