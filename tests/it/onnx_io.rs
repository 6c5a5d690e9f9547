//! Lossless ONNX I/O: byte-identical round trips, atomic deterministic writes, external data,
//! and models carrying fields the schema does not know.

use std::path::Path;

use shears::onnx::{self, SaveOptions};

use crate::common::{error_exit, fixture, oracle_python, run_python, scratch, shears, succeed};

const FIXTURE_MODELS: [&str; 4] = [
    "models/yolov5n_op12.onnx",
    "models/yolov5n_op17_sim.onnx",
    "models/yolov5n_pruned30_op12.onnx",
    "models/yolov5s_random_op12.onnx",
];

#[test]
fn every_fixture_model_saves_back_byte_identical() {
    let dir = scratch();
    for name in FIXTURE_MODELS {
        let Some(path) = fixture(name) else { return };
        let model = onnx::load(&path).unwrap();
        assert!(
            model.schema_findings.is_empty(),
            "{name}: {:?}",
            model.schema_findings
        );
        let out = dir.path().join("copy.onnx");
        onnx::save(&model.proto, &out, &SaveOptions::default()).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&path).unwrap(),
            "{name} changed on the way through"
        );
    }
}

#[test]
fn check_command_reports_identical_round_trip() {
    let paths: Option<Vec<_>> = FIXTURE_MODELS.iter().map(|m| fixture(m)).collect();
    let Some(paths) = paths else { return };
    let stdout = succeed(shears().arg("check").args(&paths));
    assert_eq!(
        stdout.matches("round trip byte-identical").count(),
        FIXTURE_MODELS.len(),
        "{stdout}"
    );
    assert!(
        stdout.contains("IR version 7, opsets ai.onnx 12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("IR version 8, opsets ai.onnx 17"),
        "{stdout}"
    );
    assert!(stdout.contains("292 nodes, 120 initializers"), "{stdout}");
}

/// Appends a varint field #99 to the model: a field this schema does not know.
fn with_unknown_field(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn unknown_fields_warn_and_block_rewrites_unless_forced() {
    let Some(src) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let model = dir.path().join("future.onnx");
    with_unknown_field(&src, &model);

    let inspect = shears().arg("inspect").arg(&model).output().unwrap();
    assert!(inspect.status.success());
    assert!(String::from_utf8_lossy(&inspect.stderr).contains("unknown field ModelProto: #99"));

    let out = dir.path().join("pruned.onnx");
    error_exit(
        shears()
            .args(["prune", "--amount", "0.3", "-o"])
            .arg(&out)
            .arg(&model),
        "--force",
    );
    assert!(!out.exists());

    succeed(
        shears()
            .args(["prune", "--force", "--no-zstd", "--amount", "0.3", "-o"])
            .arg(&out)
            .arg(&model),
    );
    assert!(out.exists());
}

#[test]
fn external_data_loads_and_saves() {
    let Some(src) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let Some(python) = oracle_python() else {
        return;
    };
    let dir = scratch();
    // onnx itself writes the external-data model shears must read.
    let external = dir.path().join("ext.onnx");
    run_python(
        &python,
        "import onnx, sys; m = onnx.load(sys.argv[1]); onnx.save_model(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True, location='ext.onnx.data', size_threshold=1024)",
        &[src.to_str().unwrap(), external.to_str().unwrap()],
    );
    let model = onnx::load(&external).unwrap();
    assert!(model.had_external_data());
    let on_disk = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(
        model.total_size(),
        on_disk(&external) + on_disk(&dir.path().join("ext.onnx.data"))
    );
    let original = onnx::load(&src).unwrap();
    assert_eq!(
        model.proto, original.proto,
        "inlined external data equals the original tensors"
    );

    // shears writes external data that onnx and onnxruntime read back.
    let out = dir.path().join("out.onnx");
    let saved = onnx::save(
        &model.proto,
        &out,
        &SaveOptions {
            external_data: Some("out.weights".into()),
        },
    )
    .unwrap();
    let (data_path, data_bytes) = saved.external_data.expect("external data written");
    assert!(data_path.ends_with("out.weights") && data_bytes > 7_000_000);
    assert!(
        saved.bytes < 100_000,
        "tensors moved out of the .onnx ({} bytes)",
        saved.bytes
    );
    let report = run_python(
        &python,
        include_str!("../oracles/check_and_compare.py"),
        &[src.to_str().unwrap(), out.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["max_abs_diff"][1], 0.0, "{report}");
}

#[test]
fn saving_is_deterministic_and_leaves_no_temporary_files() {
    let Some(src) = fixture("models/yolov5n_op17_sim.onnx") else {
        return;
    };
    let dir = scratch();
    let model = onnx::load(&src).unwrap();
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    onnx::save(&model.proto, &a, &SaveOptions::default()).unwrap();
    onnx::save(&model.proto, &b, &SaveOptions::default()).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "only the two outputs: {names:?}");
}
