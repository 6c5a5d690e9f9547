//! Bad input never hurts: a clear message naming the culprit, exit code 2, no file left behind.

use std::path::{Path, PathBuf};

use prost::Message;
use shears::onnx::proto::{ModelProto, NodeProto};
use shears::onnx::{self, SaveOptions};

use crate::common::{error_exit, fixture, scratch, shears, small_yolov5n, succeed};

/// Runs shears with `args`, expects exit code 2 with `needle` in stderr, and checks that the
/// folder `dir` holds the same files afterwards.
fn fails(dir: &Path, args: &[&str], needle: &str) {
    let listing = || {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let stderr = error_exit(shears().args(args), needle);
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(
        stderr.matches(error_line).count(),
        1,
        "the error is printed once: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(listing(), before, "{args:?} left files behind");
}

fn write_model(path: &Path, model: &ModelProto) {
    onnx::save(model, path, &SaveOptions::default()).unwrap();
}

#[test]
fn unreadable_files_are_clear_errors() {
    let dir = scratch();
    let d = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = s(&d.join("out.onnx"));
    let prune_fails = |input: &str, needle: &str| {
        fails(
            d,
            &["prune", "--amount", "0.3", "-o", &out, &s(&d.join(input))],
            needle,
        )
    };
    prune_fails("missing.onnx", "cannot open");
    std::fs::write(d.join("empty.onnx"), b"").unwrap();
    prune_fails("empty.onnx", "is empty");
    std::fs::write(d.join("text.onnx"), b"this is not a model at all\n").unwrap();
    fails(
        d,
        &["inspect", &s(&d.join("text.onnx"))],
        "text.onnx is not",
    );
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(d.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    prune_fails("truncated.onnx", "truncated.onnx is not a valid ONNX model");
    let Some(jpeg) = fixture("coco/coco128/images/train2017/000000000009.jpg") else {
        return;
    };
    fails(
        d,
        &["check", jpeg.to_str().unwrap()],
        "000000000009.jpg is not",
    );
}

#[test]
fn graphs_without_prunable_convs_are_clear_errors() {
    let Some(src) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let out = d.join("out.onnx");
    let original = onnx::load(&src).unwrap().proto;

    let mut no_conv = original.clone();
    let graph = no_conv.graph.as_mut().unwrap();
    graph.node = vec![NodeProto {
        op_type: Some("Relu".into()),
        name: Some("relu".into()),
        input: vec!["images".into()],
        output: vec!["output0".into()],
        ..Default::default()
    }];
    graph.initializer.clear();
    let no_conv_path = d.join("no_conv.onnx");
    write_model(&no_conv_path, &no_conv);

    let mut missing = original.clone();
    missing
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name() != "model.2.cv1.conv.weight");
    let missing_path = d.join("missing_init.onnx");
    write_model(&missing_path, &missing);

    let mut computed = original.clone();
    let graph = computed.graph.as_mut().unwrap();
    let index = graph
        .initializer
        .iter()
        .position(|t| t.name() == "model.1.conv.weight")
        .unwrap();
    let weight = graph.initializer.remove(index);
    graph.node.insert(
        0,
        NodeProto {
            op_type: Some("Constant".into()),
            name: Some("weight_as_constant".into()),
            output: vec!["model.1.conv.weight".into()],
            attribute: vec![shears::onnx::proto::AttributeProto {
                name: Some("value".into()),
                r#type: Some(4),
                t: Some(weight),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let computed_path = d.join("computed.onnx");
    write_model(&computed_path, &computed);

    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = s(&out);
    fails(
        d,
        &["prune", "--amount", "0.3", "-o", &o, &s(&no_conv_path)],
        "no Conv layer",
    );
    fails(
        d,
        &["prune", "--amount", "0.3", "-o", &o, &s(&missing_path)],
        "\"model.2.cv1.conv.weight\" is missing",
    );
    fails(
        d,
        &["prune", "--amount", "0.3", "-o", &o, &s(&computed_path)],
        "\"/model.1/conv/Conv\" Conv: input 1 (\"model.1.conv.weight\") is not an initializer",
    );
}

#[test]
fn bad_options_and_outputs_are_clear_errors() {
    let Some(src) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let model = d.join("model.onnx");
    std::fs::copy(&src, &model).unwrap();
    let m = model.to_str().unwrap();
    let out = d.join("out.onnx");
    let o = out.to_str().unwrap();
    fails(
        d,
        &["prune", "--amount", "1.5", "-o", o, m],
        "amount 1.5 is outside [0, 1]",
    );
    fails(
        d,
        &["prune", "--amount", "-0.1", "-o", o, m],
        "outside [0, 1]",
    );
    // N:M leaves the 3-channel stem dense and says so; selecting only the stem is an error.
    let stdout = succeed(shears().args(["prune", "--pattern", "2:4", "-o", o, m]));
    assert!(
        stdout.contains("left dense: /model.0/conv/Conv (3 input channels)"),
        "{stdout}"
    );
    std::fs::remove_file(&out).unwrap();
    fails(
        d,
        &[
            "prune",
            "--pattern",
            "2:4",
            "--include",
            "^/model\\.0/",
            "-o",
            o,
            m,
        ],
        "no selected layer has a multiple of M = 4 input channels",
    );
    fails(
        d,
        &["prune", "--pattern", "two:four", "-o", o, m],
        "not of the form N:M",
    );
    fails(
        d,
        &["prune", "--amount", "0.3", "-o", m, m],
        "is the input model",
    );
    let via_dot = format!("{}/./model.onnx", d.display());
    fails(
        d,
        &["prune", "--amount", "0.3", "-o", &via_dot, m],
        "is the input model",
    );
    let nowhere = d.join("no/such/folder/out.onnx");
    fails(
        d,
        &[
            "prune",
            "--amount",
            "0.3",
            "-o",
            nowhere.to_str().unwrap(),
            m,
        ],
        "does not exist",
    );
    let under_file = d.join("model.onnx/out.onnx");
    fails(
        d,
        &[
            "prune",
            "--amount",
            "0.3",
            "-o",
            under_file.to_str().unwrap(),
            m,
        ],
        "does not exist",
    );
    fails(
        d,
        &["prune", "--amount", "0.3", "--include", "(", "-o", o, m],
        "invalid include pattern",
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&src).unwrap(),
        "the input is never modified"
    );
}

#[test]
fn broken_pipe_exits_quietly() {
    let Some(src) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    use std::process::Stdio;
    let mut child = shears()
        .arg("inspect")
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn decoding_rejects_a_non_model_protobuf() {
    // A valid protobuf that is not a model: an encoded NodeProto.
    let dir = scratch();
    let path = dir.path().join("node.onnx");
    std::fs::write(
        &path,
        NodeProto {
            op_type: Some("Relu".into()),
            ..Default::default()
        }
        .encode_to_vec(),
    )
    .unwrap();
    let err = onnx::load(&path).unwrap_err().to_string();
    assert!(err.contains("node.onnx is not"), "{err}");
}

#[test]
fn a_pytorch_checkpoint_is_named_as_one() {
    let Some(checkpoint) = fixture("models/yolov5n.pt") else {
        return;
    };
    let stderr = error_exit(shears().arg("check").arg(&checkpoint), "PyTorch checkpoint");
    assert!(stderr.contains("export it to ONNX first"), "{stderr}");
    assert!(!stderr.contains("invalid tag"), "{stderr}");
}

#[test]
fn val_without_a_dataset_names_both_ways_to_give_one() {
    let stderr = error_exit(shears().args(["val", "model.onnx"]), "--data");
    assert!(stderr.contains("--coco-json"), "{stderr}");
}

/// Runs `args` with stderr a pipe whose reading end is closed at once; returns the exit code.
fn exit_code_with_stderr_closed(dir: &Path, args: &[&str]) -> Option<i32> {
    use std::process::Stdio;
    let mut child = shears()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    child.wait().unwrap().code()
}

#[test]
fn a_closed_stderr_never_aborts_the_work() {
    let dir = scratch();
    let d = dir.path();
    std::fs::write(d.join("empty.onnx"), b"").unwrap();
    // an error message to a closed stderr: still exit code 2, not a panic (101)
    assert_eq!(
        exit_code_with_stderr_closed(d, &["check", "empty.onnx"]),
        Some(2)
    );
    // progress lines and warnings to a closed stderr: the work is done all the same
    assert_eq!(
        exit_code_with_stderr_closed(d, &["synth", "yolov5n", "--imgsz", "64", "-o", "m.onnx"]),
        Some(0)
    );
    assert_eq!(
        exit_code_with_stderr_closed(
            d,
            &["prune", "m.onnx", "--amount", "0.3", "-o", "p.onnx", "-v"]
        ),
        Some(0)
    );
    assert!(d.join("p.onnx").is_file());
}

#[test]
fn check_reports_every_file_and_goes_on() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "good.onnx");
    std::fs::write(d.join("empty.onnx"), b"").unwrap();
    std::fs::create_dir(d.join("folder.onnx")).unwrap();
    let out = shears()
        .current_dir(d)
        .args([
            "check",
            "empty.onnx",
            "folder.onnx",
            "good.onnx",
            "missing.onnx",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stdout.contains("good.onnx: round trip byte-identical"),
        "{stdout}"
    );
    for needle in [
        "empty.onnx is empty",
        "folder.onnx is a directory",
        "cannot open missing.onnx",
        "3 of 4 models could not be read",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}
