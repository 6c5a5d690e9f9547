//! Inference backends against each other and against onnxruntime run from Python, plus the
//! errors a user meets (bad model bytes, missing ONNX Runtime, CUDA without a CUDA build).
//!
//! Difference measure used throughout: `rel(a, b) = max_i |a_i - b_i| / max(|b_i|, 1)`, i.e. an
//! absolute error for values below 1 (scores) and a relative one above (box coordinates in
//! input pixels, up to 640).

use std::path::Path;

use ndarray::{Array4, ArrayD, ArrayView4, Axis};
use shears::backend::{self, BackendSpec};

use crate::common;

const INPUT_PNG: &str = "oracles/pipeline/000000000009_input640.png";
const ROWS_NPY: &str = "oracles/pipeline/000000000009_output0_obj_gt_0.001_rows.npy";

/// The exact network input of the pipeline oracle: the letterboxed RGB PNG / 255, NCHW.
fn oracle_input(png: &Path) -> Array4<f32> {
    let rgb = image::open(png).expect("decode input png").to_rgb8();
    let (w, h) = rgb.dimensions();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| {
        f32::from(rgb.get_pixel(x as u32, y as u32)[c]) / 255.0
    })
}

/// `max_i |a_i - b_i| / max(|b_i|, 1)` and `max_i |a_i - b_i|` over two equal-shape arrays.
fn rel_and_abs(a: &ArrayD<f32>, b: &ArrayD<f32>) -> (f64, f64) {
    assert_eq!(a.shape(), b.shape(), "output shapes differ");
    a.iter().zip(b).fold((0.0, 0.0), |(rel, abs), (&x, &y)| {
        let d = (f64::from(x) - f64::from(y)).abs();
        (rel.max(d / f64::from(y).abs().max(1.0)), abs.max(d))
    })
}

/// Reads a little-endian float32, C-order, rank-2 `.npy` file.
fn read_npy_f32_2d(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read npy");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an npy file");
    assert_eq!(bytes[6], 1, "npy version 1 expected");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("npy header");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = &header[header.find("'shape': (").expect("shape") + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').expect("shape end")]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("shape dim"))
        .collect();
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

/// Compares `output` ([1, 25200, 85]) with the oracle rows `[row_index, 85 values]` that
/// onnxruntime 1.31.1 produced for this input when the fixtures were made; returns `rel`.
fn rel_to_oracle_rows(output: &ArrayD<f32>, rows_npy: &Path) -> f64 {
    let (n, width, data) = read_npy_f32_2d(rows_npy);
    assert_eq!(width, 86);
    assert!(n > 1000, "oracle has {n} rows");
    let rows = output.index_axis(Axis(0), 0);
    let mut worst: f64 = 0.0;
    for row in data.chunks_exact(width) {
        let index = row[0] as usize;
        for (k, &expected) in row[1..].iter().enumerate() {
            let d = (f64::from(rows[[index, k]]) - f64::from(expected)).abs();
            worst = worst.max(d / f64::from(expected).abs().max(1.0));
        }
    }
    worst
}

/// Runs `model` with onnxruntime from the oracle venv on `input`; returns its first output.
fn python_onnxruntime(python: &Path, model: &Path, input: ArrayView4<f32>) -> ArrayD<f32> {
    let dir = common::scratch();
    let input_path = dir.path().join("input.f32");
    let output_path = dir.path().join("output.f32");
    let raw: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input_path, raw).expect("write input");
    let script = r#"
import sys, numpy as np, onnxruntime as ort
model, inp, out, shape = sys.argv[1], sys.argv[2], sys.argv[3], [int(d) for d in sys.argv[4:]]
x = np.fromfile(inp, dtype='<f4').reshape(shape)
s = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
y = s.run(None, {s.get_inputs()[0].name: x})[0]
y.astype('<f4').tofile(out)
print(' '.join(str(d) for d in y.shape))
"#;
    let shape: Vec<String> = input.shape().iter().map(usize::to_string).collect();
    let mut args = vec![
        model.to_str().unwrap(),
        input_path.to_str().unwrap(),
        output_path.to_str().unwrap(),
    ];
    args.extend(shape.iter().map(String::as_str));
    let printed = common::run_python(python, script, &args);
    let out_shape: Vec<usize> = printed
        .split_whitespace()
        .map(|d| d.parse().unwrap())
        .collect();
    let data: Vec<f32> = std::fs::read(&output_path)
        .expect("read python output")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(out_shape, data).expect("python output shape")
}

/// tract and ort agree on both yolov5n exports, and ort agrees with onnxruntime from Python and
/// with the fixture's onnxruntime rows. ort runs on a second thread while tract runs on this
/// one (sessions are `Send`).
#[test]
fn tract_and_ort_agree_with_onnxruntime() {
    let (Some(png), Some(rows_npy)) = (common::fixture(INPUT_PNG), common::fixture(ROWS_NPY))
    else {
        return;
    };
    let python = common::oracle_python();
    let input = oracle_input(&png);
    for (name, check_rows) in [
        ("models/yolov5n_op12.onnx", true),
        ("models/yolov5n_op17_sim.onnx", false),
    ] {
        let Some(model) = common::fixture(name) else {
            return;
        };
        let bytes = std::fs::read(&model).unwrap();
        let ort_spec = BackendSpec::parse("ort", "cpu").unwrap();
        let mut ort = backend::open(&ort_spec, &bytes).expect("ort session");
        assert_eq!(
            (ort.name(), ort.provider()),
            ("ort", "CPUExecutionProvider")
        );
        assert_eq!(ort.input_shape(), [1, 3, 640, 640]);
        let ort_input = input.clone();
        let ort_thread = std::thread::spawn(move || ort.run(ort_input.view()).expect("ort run"));

        let mut tract = backend::open(&BackendSpec::default(), &bytes).expect("tract session");
        assert_eq!((tract.name(), tract.provider()), ("tract", "tract"));
        let tract_out = tract.run(input.view()).expect("tract run");
        let ort_out = ort_thread.join().expect("ort thread");
        assert_eq!(tract_out.shape(), [1, 25200, 85]);

        let (rel, abs) = rel_and_abs(&tract_out, &ort_out);
        eprintln!("{name}: tract vs ort: rel {rel:.3e}, max abs {abs:.3e}");
        assert!(rel < 1e-3, "{name}: tract vs ort rel {rel}");

        if check_rows {
            let rel_t = rel_to_oracle_rows(&tract_out, &rows_npy);
            let rel_o = rel_to_oracle_rows(&ort_out, &rows_npy);
            eprintln!("{name}: vs fixture rows: tract rel {rel_t:.3e}, ort rel {rel_o:.3e}");
            assert!(rel_t < 1e-3, "{name}: tract vs fixture rows {rel_t}");
            assert!(rel_o < 1e-4, "{name}: ort vs fixture rows {rel_o}");
        }
        if let Some(python) = &python {
            let py_out = python_onnxruntime(python, &model, input.view());
            let (rel, abs) = rel_and_abs(&ort_out, &py_out);
            eprintln!("{name}: ort vs python onnxruntime: rel {rel:.3e}, max abs {abs:.3e}");
            assert!(rel < 1e-4, "{name}: ort vs python onnxruntime rel {rel}");
            let (rel, _) = rel_and_abs(&tract_out, &py_out);
            assert!(rel < 1e-3, "{name}: tract vs python onnxruntime rel {rel}");
        }
    }
}

/// tract shares an inference out among threads without changing any output value.
#[test]
fn tract_threads_leave_outputs_unchanged() {
    let Some(model) = common::fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    let input = backend::bench::random_input([1, 3, 640, 640], 0);
    let [one, three] = [1, 3].map(|threads| {
        let spec = BackendSpec::default().with_threads(threads);
        let mut session = backend::open(&spec, &bytes).expect("tract session");
        session.run(input.view()).expect("tract run")
    });
    assert!(one == three, "1 and 3 tract threads disagree");
}

/// Every output comes back from `run_all`, the first equal to `run`'s, and a wrong input shape
/// is an error, not a crash.
#[test]
fn run_all_and_input_shape_check() {
    let Some(model) = common::fixture("models/yolov5n_op17_sim.onnx") else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    let spec = BackendSpec::parse("ort", "cpu").unwrap();
    let mut session = backend::open(&spec, &bytes).unwrap();
    let input = Array4::<f32>::from_elem((1, 3, 640, 640), 0.5);
    let all = session.run_all(input.view()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0], session.run(input.view()).unwrap());
    let err = session
        .run(Array4::<f32>::zeros((1, 3, 320, 320)).view())
        .unwrap_err();
    assert!(format!("{err:#}").contains("[1, 3, 640, 640]"), "{err:#}");
}

#[test]
fn garbage_bytes_are_a_clear_error() {
    let garbage = b"this is not an ONNX model \x00\xff\x12";
    for spec in [
        BackendSpec::default(),
        BackendSpec::parse("ort", "cpu").unwrap(),
    ] {
        let err = match backend::open(&spec, garbage) {
            Ok(_) => panic!("{spec}: garbage bytes built a session"),
            Err(err) => format!("{err:#}"),
        };
        assert!(
            err.contains("could not decode the ONNX model")
                || err.contains("could not build a session from the model"),
            "{spec}: {err}"
        );
    }
}

#[test]
fn missing_onnxruntime_library_exits_2() {
    let dir = common::scratch();
    let Some(model) = common::fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let missing = dir.path().join("no/libonnxruntime.so.1.31.1");
    let stderr = common::error_exit(
        common::shears()
            .args(["bench", "--backend", "ort", "--runs", "1"])
            .arg(&model)
            .env("ORT_DYLIB_PATH", &missing),
        &missing.to_string_lossy(),
    );
    for hint in ["scripts/setup-venv.sh", "ORT_DYLIB_PATH", "--backend tract"] {
        assert!(stderr.contains(hint), "{hint} in: {stderr}");
    }
}

#[test]
fn non_onnxruntime_library_exits_2() {
    let dir = common::scratch();
    let Some(model) = common::fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a shared library").unwrap();
    common::error_exit(
        common::shears()
            .args(["bench", "--backend", "ort", "--runs", "1"])
            .arg(&model)
            .env("ORT_DYLIB_PATH", &fake),
        &format!("could not load ONNX Runtime from {}", fake.display()),
    );
}

#[test]
fn tract_on_cuda_is_rejected() {
    common::error_exit(
        common::shears().args(["bench", "model.onnx", "--device", "cuda"]),
        "CPU only",
    );
}

/// `--device cuda` either runs on CUDA or fails saying why; with the CPU-only wheel of the
/// oracle venv it must fail, never fall back to the CPU.
#[test]
fn cuda_runs_on_cuda_or_fails_clearly() {
    let (Some(model), Some(python)) = (
        common::fixture("models/yolov5n_op17_sim.onnx"),
        common::oracle_python(),
    ) else {
        return;
    };
    let providers = common::run_python(
        &python,
        "import onnxruntime as o; print(' '.join(o.get_available_providers()))",
        &[],
    );
    let out = common::shears()
        .args(["bench", "--backend", "ort", "--device", "cuda"])
        .args(["--runs", "1", "--warmup", "0"])
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if providers.contains("CUDAExecutionProvider") {
        // A CUDA build: either every node runs on CUDA, or the error names the CUDA provider.
        if out.status.success() {
            assert!(stdout.contains("CUDAExecutionProvider"), "{stdout}");
            assert!(!stdout.contains("CPUExecutionProvider"), "{stdout}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("CUDA"), "{stderr}");
        }
    } else {
        assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
        assert!(stderr.contains("built without CUDA"), "{stderr}");
        assert!(stderr.contains("onnxruntime-gpu==1.31.1"), "{stderr}");
        assert!(!stdout.contains("CPUExecutionProvider"), "{stdout}");
    }
}

/// `bench` on two models prints both with latency ratios and writes the JSON it promises.
#[test]
fn bench_two_models_side_by_side() {
    let (Some(a), Some(b)) = (
        common::fixture("models/yolov5n_op12.onnx"),
        common::fixture("models/yolov5n_op17_sim.onnx"),
    ) else {
        return;
    };
    let dir = common::scratch();
    let json = dir.path().join("bench.json");
    let stdout = common::succeed(
        common::shears()
            .args([
                "bench",
                "--backend",
                "ort",
                "--runs",
                "3",
                "--warmup",
                "1",
                "--json",
            ])
            .arg(&json)
            .arg(&a)
            .arg(&b),
    );
    assert!(stdout.contains("ratio"), "{stdout}");
    assert!(stdout.contains("1.000x"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["latency_ratio"], 1.0);
    assert_eq!(models[0]["min_ratio"], 1.0);
    for m in models {
        let t = &m["timing"];
        assert_eq!(t["runs"], 3);
        let (min, median, max) = (
            t["min_ms"].as_f64().unwrap(),
            t["median_ms"].as_f64().unwrap(),
            t["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= median && median <= max, "{t}");
        assert_eq!(m["provider"], "CPUExecutionProvider");
    }
    for (ratio, statistic) in [("latency_ratio", "median_ms"), ("min_ratio", "min_ms")] {
        let expected = models[1]["timing"][statistic].as_f64().unwrap()
            / models[0]["timing"][statistic].as_f64().unwrap();
        let ratio = models[1][ratio].as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
    }
}
