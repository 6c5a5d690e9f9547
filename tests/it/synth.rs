//! `synth`: generated models against the official exporter's graphs (fixtures), onnx's checker
//! and onnxruntime (oracle venv), and the CLI.

use prost::Message;
use shears::onnx::proto::ModelProto;
use shears::synth::{self, Export, SynthSpec, Upsample, Variant};

use crate::common;

fn spec(variant: Variant, export: Export, upsample: Upsample) -> SynthSpec {
    SynthSpec {
        export,
        upsample,
        ..SynthSpec::new(variant)
    }
}

fn load(path: &std::path::Path) -> ModelProto {
    let bytes = std::fs::read(path).expect("read fixture");
    ModelProto::decode(bytes.as_slice()).expect("decode fixture")
}

/// Names of the initializers that hold trained (or random) weights.
fn is_weight(name: &str) -> bool {
    name.starts_with("model.")
}

/// Drops what may differ by design: weight values, the producer fields, the doc string and
/// onnxsim's bookkeeping metadata.
fn normalized(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    m.producer_name = None;
    m.producer_version = None;
    m.doc_string = None;
    m.metadata_props
        .retain(|p| !p.key.as_deref().unwrap_or("").starts_with("onnxsim."));
    for t in &mut m.graph.as_mut().expect("graph").initializer {
        if is_weight(t.name.as_deref().unwrap_or("")) {
            t.raw_data = None;
        }
    }
    m
}

/// Asserts that `ours` equals the exporter's `theirs` in everything but the weight values,
/// pointing at the first differing node, initializer or value_info when not.
fn assert_same_layout(ours: &ModelProto, theirs: &ModelProto, label: &str) {
    let (a, b) = (normalized(ours), normalized(theirs));
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(ga.node.len(), gb.node.len(), "{label}: node count");
    for (i, (x, y)) in ga.node.iter().zip(&gb.node).enumerate() {
        assert_eq!(x, y, "{label}: node #{i} {:?}", y.name);
    }
    assert_eq!(
        ga.initializer.len(),
        gb.initializer.len(),
        "{label}: initializer count"
    );
    for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
        assert_eq!(x, y, "{label}: initializer {:?}", y.name);
    }
    assert_eq!(ga.input, gb.input, "{label}: graph inputs");
    assert_eq!(ga.output, gb.output, "{label}: graph outputs");
    assert_eq!(
        ga.value_info.len(),
        gb.value_info.len(),
        "{label}: value_info count"
    );
    for (x, y) in ga.value_info.iter().zip(&gb.value_info) {
        assert_eq!(x, y, "{label}: value_info {:?}", y.name);
    }
    assert_eq!(a.metadata_props, b.metadata_props, "{label}: metadata");
    assert_eq!(a, b, "{label}: remaining model fields");

    // The weights themselves are ours, not copies: names and shapes match, values differ.
    let weights = |m: &ModelProto| -> Vec<(String, bytes::Bytes)> {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .filter(|t| is_weight(t.name.as_deref().unwrap_or("")))
            .map(|t| (t.name.clone().unwrap(), t.raw_data.clone().unwrap()))
            .collect()
    };
    let (wa, wb) = (weights(ours), weights(theirs));
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        assert_eq!(x.len(), y.len(), "{label}: {name} byte size");
        assert_ne!(x, y, "{label}: {name} copies the fixture's values");
    }
}

#[test]
fn yolov5n_opset12_matches_official_export() {
    let Some(path) = common::fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let ours = synth::build(&SynthSpec::new(Variant::N)).unwrap();
    assert_same_layout(&ours, &load(&path), "yolov5n op12");
}

#[test]
fn yolov5s_opset12_scales_matches_random_export() {
    // Built from the yaml (not a release checkpoint): its Resize takes constant scales.
    let Some(path) = common::fixture("models/yolov5s_random_op12.onnx") else {
        return;
    };
    let s = spec(Variant::S, Export::Opset12, Upsample::ConstantScales);
    let ours = synth::build(&s).unwrap();
    assert_same_layout(&ours, &load(&path), "yolov5s op12 scales");
}

#[test]
fn yolov5n_opset17_matches_simplified_export() {
    let Some(path) = common::fixture("models/yolov5n_op17_sim.onnx") else {
        return;
    };
    let s = spec(
        Variant::N,
        Export::Opset17Simplified,
        Upsample::ComputedSizes,
    );
    let ours = synth::build(&s).unwrap();
    assert_same_layout(&ours, &load(&path), "yolov5n op17 simplified");
}

#[test]
fn parameter_counts_match_the_fused_official_models() {
    // n and s: fixtures/README.md (fused counts of the official yolov5n and of yolov5s);
    // m, l, x: the fused models of the official yolov5 7.0.14 code, whose README rounds them to
    // 21.2M, 46.5M and 86.7M; the P6 sizes: the fused `Model` of each yolov5*6.yaml there.
    let expected = [
        (Variant::N, 1_867_405),
        (Variant::S, 7_225_885),
        (Variant::M, 21_172_173),
        (Variant::L, 46_533_693),
        (Variant::X, 86_705_005),
        (Variant::N6, 3_239_884),
        (Variant::S6, 12_612_508),
        (Variant::M6, 35_704_908),
        (Variant::L6, 76_726_332),
        (Variant::X6, 140_730_220),
    ];
    for (variant, count) in expected {
        let s = SynthSpec::new(variant);
        assert_eq!(synth::parameter_count(&s).unwrap(), count, "{variant}");
    }
    // The written model holds exactly that many weight values.
    let model = synth::build(&SynthSpec::new(Variant::N)).unwrap();
    let values: usize = model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| is_weight(t.name.as_deref().unwrap_or("")))
        .map(|t| t.raw_data.as_ref().unwrap().len() / 4)
        .sum();
    assert_eq!(values, 1_867_405);
}

#[test]
fn seed_decides_the_weights_and_nothing_else() {
    let a = synth::build(&SynthSpec::new(Variant::N)).unwrap();
    let b = synth::build(&SynthSpec::new(Variant::N)).unwrap();
    assert_eq!(
        a.encode_to_vec(),
        b.encode_to_vec(),
        "same seed, same bytes"
    );
    let c = synth::build(&SynthSpec {
        seed: 1,
        ..SynthSpec::new(Variant::N)
    })
    .unwrap();
    assert_ne!(a.encode_to_vec(), c.encode_to_vec());
    assert_eq!(
        normalized(&a),
        normalized(&c),
        "only the weights change with the seed"
    );
}

#[test]
fn nc_and_imgsz_reshape_the_head() {
    let s = SynthSpec {
        nc: 3,
        imgsz: 320,
        ..SynthSpec::new(Variant::N)
    };
    let model = synth::build(&s).unwrap();
    let g = model.graph.as_ref().unwrap();
    let dims = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .map(|t| t.dims.clone())
            .unwrap()
    };
    assert_eq!(dims("model.24.m.0.weight"), [24, 64, 1, 1]);
    assert_eq!(dims("model.24.m.2.bias"), [24]);
    let names = model
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some("names"))
        .unwrap();
    assert_eq!(
        names.value.as_deref(),
        Some("{0: 'class0', 1: 'class1', 2: 'class2'}")
    );
    for bad in [0, 100, 8200] {
        assert!(
            synth::build(&SynthSpec {
                imgsz: bad,
                ..s.clone()
            })
            .is_err(),
            "imgsz {bad}"
        );
    }
    assert!(synth::build(&SynthSpec { nc: 0, ..s.clone() }).is_err());
}

/// onnx.checker (full check, with shape inference) and onnxruntime on each model; prints
/// `<file> <output shape> <finite>` per model.
const ORACLE: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
for path in sys.argv[1:]:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"images": x})
    print(path.rsplit("/", 1)[-1], "x".join(map(str, y.shape)), bool(np.isfinite(y).all()))
"#;

#[test]
fn generated_models_pass_checker_and_run_in_onnxruntime() {
    let Some(python) = common::oracle_python() else {
        return;
    };
    let dir = common::scratch();
    let cases: [(&str, &[&str], &str); 7] = [
        ("n12.onnx", &["yolov5n"], "1x25200x85"),
        ("n17.onnx", &["yolov5n", "--opset", "17"], "1x25200x85"),
        (
            "s12s.onnx",
            &["yolov5s", "--upsample", "scales"],
            "1x25200x85",
        ),
        (
            "n17s.onnx",
            &[
                "yolov5n",
                "--opset",
                "17",
                "--upsample",
                "scales",
                "--seed",
                "7",
            ],
            "1x25200x85",
        ),
        (
            "n3.onnx",
            &["yolov5n", "--nc", "3", "--imgsz", "320", "--opset", "17"],
            "1x6300x8",
        ),
        // P6: four levels, 1280 by default
        ("n6.onnx", &["yolov5n6"], "1x102000x85"),
        (
            "s6.onnx",
            &[
                "yolov5s6",
                "--opset",
                "17",
                "--upsample",
                "scales",
                "--imgsz",
                "256",
            ],
            "1x4080x85",
        ),
    ];
    let mut paths = Vec::new();
    for (file, args, _) in &cases {
        let path = dir.path().join(file);
        common::succeed(
            common::shears()
                .args(["-q", "synth"])
                .args(*args)
                .arg("-o")
                .arg(&path),
        );
        paths.push(path.to_str().unwrap().to_owned());
    }
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let report = common::run_python(&python, ORACLE, &refs);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{report}");
    for ((file, _, shape), line) in cases.iter().zip(lines) {
        assert_eq!(line, format!("{file} {shape} True"), "{report}");
    }
}

#[test]
fn cli_writes_the_library_model_and_rejects_bad_sizes() {
    let dir = common::scratch();
    let path = dir.path().join("m.onnx");
    let stdout = common::succeed(
        common::shears()
            .args(["synth", "yolov5n", "--seed", "3", "-o"])
            .arg(&path),
    );
    let expected = synth::build(&SynthSpec {
        seed: 3,
        ..SynthSpec::new(Variant::N)
    })
    .unwrap()
    .encode_to_vec();
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    assert!(stdout.contains("1867405 parameters"));

    common::error_exit(
        common::shears()
            .args(["synth", "yolov5n", "--imgsz", "650", "-o"])
            .arg(dir.path().join("bad.onnx")),
        "multiple of 32",
    );
    assert!(!dir.path().join("bad.onnx").exists());
}
