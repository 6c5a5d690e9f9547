//! Accuracy recovery (`--recover stats | obs`): the OBS algebra against numpy's least squares,
//! exact sparsity after re-solving, calibration pixels against val.py's, and the provenance that
//! lets `val` warn about calibration images.

use std::path::Path;

use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears::analysis::model_stats;
use shears::calib::{CalibrationSet, CalibrationSpec, load_inputs};
use shears::eval::preprocess::{DEFAULT_MAX_PIXELS, preprocess_file};
use shears::onnx::metadata::CALIBRATION_KEY;
use shears::onnx::{self, tensor};
use shears::passes::obs::{StructuredLayer, damped_inverse};

use crate::common::{fixture, oracle_python, run_python, scratch, shears, small_yolov5n, succeed};

/// numpy: the least-squares re-fit of each row `w` of W on `X` without `removed` columns,
/// i.e. argmin |X w' - X w| with w'[removed] = 0.
const LSTSQ: &str = r#"
import json, sys
import numpy as np
d = json.loads(open(sys.argv[1]).read())
X = np.array(d["x"]); W = np.array(d["w"]); removed = d["removed"]
keep = [j for j in range(X.shape[1]) if j not in removed]
out = np.zeros_like(W)
for r in range(W.shape[0]):
    sol, *_ = np.linalg.lstsq(X[:, keep], X @ W[r], rcond=None)
    out[r, keep] = sol
print(json.dumps(out.tolist()))
"#;

#[test]
fn obs_removal_equals_numpy_least_squares() {
    let Some(python) = oracle_python() else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (samples, n, rows) = (300, 9, 4);
    // Correlated inputs with a bias column of ones, as im2col columns are.
    let x = Mat::from_fn(samples, n + 1, |_, j| {
        if j == n {
            1.0
        } else {
            rng.random_range(-1.0..1.0)
        }
    });
    let x = Mat::from_fn(samples, n + 1, |s, j| {
        if j == n {
            1.0
        } else {
            x[(s, j)] + 0.5 * x[(s, (j + 1) % n)] + 0.2
        }
    });
    let w = Mat::from_fn(rows, n + 1, |_, _| rng.random_range(-1.0..1.0));
    let gram = x.transpose() * &x;
    let dir = scratch();
    for removed in [vec![3], vec![1, 4, 7]] {
        let mut layer = StructuredLayer {
            w: w.clone(),
            h_inverse: damped_inverse(&gram, 0.0).unwrap(),
        };
        layer.remove(&removed).unwrap();
        let rows_of = |m: &Mat<f64>| -> Vec<Vec<f64>> {
            (0..m.nrows())
                .map(|r| (0..m.ncols()).map(|j| m[(r, j)]).collect())
                .collect()
        };
        let input = dir.path().join("problem.json");
        std::fs::write(
            &input,
            serde_json::json!({"x": rows_of(&x), "w": rows_of(&w), "removed": removed}).to_string(),
        )
        .unwrap();
        let want: Vec<Vec<f64>> =
            serde_json::from_str(&run_python(&python, LSTSQ, &[input.to_str().unwrap()])).unwrap();
        for r in 0..rows {
            for j in 0..=n {
                let (got, want) = (layer.w[(r, j)], want[r][j]);
                assert!(
                    (got - want).abs() < 1e-8,
                    "removing {removed:?}: row {r} column {j}: {got} against numpy {want}"
                );
            }
        }
    }
}

/// A calibration YAML for `coco_extra_train` and the fixture root to read it with.
fn extra_train() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let yaml = fixture("coco/coco_extra_train.yaml")?;
    let root = fixture("coco/coco_extra_train")?;
    Some((yaml, root))
}

fn prune_recovered(model: &Path, out: &Path, args: &[&str], images: &str) -> String {
    let (yaml, root) = extra_train().expect("calibration fixture");
    succeed(
        shears()
            .arg("prune")
            .arg(model)
            .arg("-o")
            .arg(out)
            .args(args)
            .args(["--recover", "obs", "--calib-images", images, "--calib"])
            .arg(&yaml)
            .arg("--calib-root")
            .arg(&root),
    )
}

/// onnx's full checker on both models, then onnxruntime's outputs of each on one seeded input.
fn check_and_compare(dense: &Path, out: &Path) -> serde_json::Value {
    let python = oracle_python().expect("oracle python");
    serde_json::from_str(&run_python(
        &python,
        include_str!("../oracles/check_and_compare.py"),
        &[dense.to_str().unwrap(), out.to_str().unwrap()],
    ))
    .unwrap()
}

fn conv_zeros(path: &Path) -> (u64, u64) {
    let model = onnx::load(path).unwrap();
    let stats = model_stats(model.graph()).unwrap();
    let zeros = stats.layers.iter().map(|l| l.weight_zeros).sum();
    let numel = stats.layers.iter().map(|l| l.weight_numel).sum();
    (zeros, numel)
}

#[test]
fn recovered_global_pruning_zeroes_exactly_the_amount_and_records_its_calibration() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("obs30.onnx");
    let stdout = prune_recovered(&dense, &out, &["--amount", "0.3", "--scope", "global"], "4");
    assert!(stdout.contains("OBS re-solved"), "{stdout}");
    let (zeros, numel) = conv_zeros(&out);
    // Exactly the requested count goes; a weight that was already zero (the fixture has one)
    // stays zero only where its layer loses nothing and is not re-solved.
    let (dense_zeros, _) = conv_zeros(&dense);
    let k = (0.3 * numel as f64).round() as u64;
    assert!(
        (k..=k + dense_zeros).contains(&zeros),
        "{zeros} zeros of {numel}, asked for {k}"
    );
    let model = onnx::load(&out).unwrap();
    let record: serde_json::Value = serde_json::from_str(
        model
            .proto
            .metadata_props
            .iter()
            .find(|p| p.key() == CALIBRATION_KEY)
            .expect("calibration recorded")
            .value(),
    )
    .unwrap();
    assert_eq!(record["images"], 4);
    assert_eq!(record["image_sha256"].as_array().unwrap().len(), 4);
    // onnx's checker and onnxruntime accept it, and it still computes finite outputs.
    let report = check_and_compare(&dense, &out);
    assert_eq!(report["finite"], serde_json::json!([true, true]));
}

#[test]
fn recovered_two_of_four_holds_the_pattern_and_names_the_stem() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("obs24.onnx");
    let stdout = prune_recovered(&dense, &out, &["--pattern", "2:4"], "2");
    assert!(
        stdout.contains("left dense: /model.0/conv/Conv (3 input channels)"),
        "{stdout}"
    );
    let model = onnx::load(&out).unwrap();
    let graph = model.graph();
    let mut checked = 0;
    for node in graph.node.iter().filter(|n| n.op_type() == "Conv") {
        let w = graph
            .initializer
            .iter()
            .find(|t| t.name() == node.input[1])
            .unwrap();
        let [out_ch, in_ch, kh, kw] = w.dims[..] else {
            panic!()
        };
        let (in_ch, taps) = (in_ch as usize, (kh * kw) as usize);
        let values = tensor::to_f32(w).unwrap();
        if in_ch % 4 != 0 {
            assert!(
                values.iter().all(|v| *v != 0.0),
                "{} was pruned",
                node.name()
            );
            continue;
        }
        for o in 0..out_ch as usize {
            for t in 0..taps {
                for g in (0..in_ch).step_by(4) {
                    let kept = (g..g + 4)
                        .filter(|c| values[(o * in_ch + c) * taps + t] != 0.0)
                        .count();
                    assert!(
                        kept <= 2,
                        "{}: output {o}, tap {t}, channels {g}..",
                        node.name()
                    );
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 59);
}

#[test]
fn a_zero_amount_leaves_the_outputs_unchanged() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("obs0.onnx");
    prune_recovered(&dense, &out, &["--amount", "0"], "2");
    let report = check_and_compare(&dense, &out);
    let diff = report["max_abs_diff"][1].as_f64().unwrap();
    let scale = report["max_abs"].as_f64().unwrap();
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "max |diff| {diff} on outputs up to {scale}"
    );
}

/// Calibration reads images exactly as validation does: the same tensors as `val`'s
/// pre-processing, and val.py's own network inputs (within one grey level where OpenCV resized).
#[test]
fn calibration_pixels_equal_the_validation_pixels() {
    let (Some(oracles), Some(images)) = (
        fixture("oracles/pipeline"),
        fixture("coco/coco128/images/train2017"),
    ) else {
        return;
    };
    let dir = scratch();
    let stems = ["000000000009", "000000000036", "000000000049"];
    for stem in stems {
        std::os::unix::fs::symlink(
            images.join(format!("{stem}.jpg")),
            dir.path().join(format!("{stem}.jpg")),
        )
        .unwrap();
    }
    let set = CalibrationSet::resolve(&CalibrationSpec {
        data: dir.path().to_path_buf(),
        data_root: None,
        images: 8,
    })
    .unwrap();
    assert_eq!(set.images.len(), 3);
    let inputs = load_inputs(&set, 640).unwrap();
    for ((path, input), stem) in set.images.iter().zip(&inputs).zip(stems) {
        assert_eq!(
            input,
            &preprocess_file(path, 640, DEFAULT_MAX_PIXELS)
                .unwrap()
                .tensor
        );
        let want = image::open(oracles.join(format!("{stem}_input640.png")))
            .unwrap()
            .into_rgb8();
        let worst = want
            .enumerate_pixels()
            .flat_map(|(x, y, px)| {
                (0..3).map(move |c| {
                    (input[[0, c, y as usize, x as usize]] - f32::from(px[c]) / 255.0).abs()
                })
            })
            .fold(0.0f32, f32::max);
        assert!(worst <= 1.0 / 255.0 + 1e-6, "{stem}: {worst}");
    }
}

#[test]
fn recovery_and_calibration_images_go_together() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "n.onnx");
    let prune = |args: &[&str]| {
        let mut command = shears();
        command
            .current_dir(d)
            .args(["prune", "n.onnx", "-o", "out.onnx"])
            .args(args);
        command
    };
    crate::common::error_exit(
        &mut prune(&["--amount", "0.3", "--recover", "obs"]),
        "need calibration images: give --calib DATA",
    );
    crate::common::error_exit(
        &mut prune(&["--amount", "0.3", "--calib", "."]),
        "--calib is only used with --recover stats or obs",
    );
    crate::common::error_exit(
        &mut prune(&["--method", "channel", "--target-macs", "0.9"]),
        "target_macs needs recover: obs",
    );
    crate::common::error_exit(
        &mut prune(&[
            "--method",
            "channel",
            "--amount",
            "0.1",
            "--recover",
            "obs",
            "--calib",
            ".",
            "--calib-order",
            "sequential",
        ]),
        "--calib-order does not apply to --method channel",
    );
    assert!(!d.join("out.onnx").exists());
}

#[test]
fn recovered_channel_pruning_meets_its_mac_target_and_equals_its_masked_model() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let (out, masked) = (dir.path().join("ch.onnx"), dir.path().join("masked.onnx"));
    let stdout = prune_recovered(
        &dense,
        &out,
        &[
            "--method",
            "channel",
            "--target-macs",
            "0.9",
            "--emit-masked",
            masked.to_str().unwrap(),
        ],
        "2",
    );
    assert!(stdout.contains("verify:"), "{stdout}");
    let macs = |path: &Path| model_stats(onnx::load(path).unwrap().graph()).unwrap().macs;
    assert!(
        macs(&out) as f64 <= 0.9 * macs(&dense) as f64,
        "{} MACs of {}",
        macs(&out),
        macs(&dense)
    );
    // onnxruntime, an engine the pass's own proof does not use, agrees.
    crate::prune_channels::assert_equivalent(&[(masked, out)]);
}

#[test]
fn calibration_images_are_read_as_val_reads_them() {
    let Some(images) = fixture("coco/coco_extra_train/images/train2017") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let calib = d.join("calib");
    std::fs::create_dir(&calib).unwrap();
    for name in ["000000000790.jpg", "000000008193.jpg"] {
        std::fs::copy(images.join(name), calib.join(name)).unwrap();
    }
    // the same content twice, a loop of folders, and two images `val` skips
    std::fs::copy(images.join("000000000790.jpg"), calib.join("copy.jpg")).unwrap();
    std::os::unix::fs::symlink(".", calib.join("loop")).unwrap();
    image::RgbImage::new(1, 1)
        .save(calib.join("tiny.png"))
        .unwrap();
    std::fs::File::create(calib.join("empty.jpg")).unwrap();
    let set = CalibrationSet::resolve(&CalibrationSpec {
        data: calib.clone(),
        data_root: None,
        images: 100,
    })
    .unwrap();
    let names: Vec<String> = set
        .images
        .iter()
        .map(|p| p.strip_prefix(&calib).unwrap().display().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"000000008193.jpg".to_string()), "{names:?}");
    let messages = set.messages.join("\n");
    for needed in [
        "tiny.png: ignoring corrupt image/label: image size 1x1 < 10 pixels",
        "empty.jpg: ignoring corrupt image/label",
        "counted once",
        "2 usable calibration images, fewer than the 100 asked for",
    ] {
        assert!(messages.contains(needed), "{needed:?} in:\n{messages}");
    }

    // A prune goes on without them and says so.
    small_yolov5n(d, "n.onnx");
    let out = shears()
        .current_dir(d)
        .args(["prune", "n.onnx", "-o", "out.onnx", "--amount", "0.3"])
        .args([
            "--recover",
            "stats",
            "--calib",
            "calib",
            "--calib-images",
            "100",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for needed in [
        "warning: ",
        "tiny.png: ignoring corrupt image/label",
        "fewer than the 100 asked for",
    ] {
        assert!(stderr.contains(needed), "{needed:?} in:\n{stderr}");
    }
    let model = onnx::load(&d.join("out.onnx")).unwrap();
    let record = shears::onnx::metadata::get(&model.proto, CALIBRATION_KEY).unwrap();
    let record: serde_json::Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["images"], 2);
}

#[test]
fn every_phase_of_a_recovering_prune_is_named() {
    let Some(images) = fixture("coco/coco_extra_train/images/train2017") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    std::fs::create_dir(d.join("calib")).unwrap();
    for name in ["000000000790.jpg", "000000008193.jpg"] {
        std::os::unix::fs::symlink(images.join(name), d.join("calib").join(name)).unwrap();
    }
    small_yolov5n(d, "n.onnx");
    let phases = |method: &[&str]| {
        let out = shears()
            .current_dir(d)
            .args(["prune", "n.onnx", "-o", "out.onnx"])
            .args(method)
            .args(["--amount", "0.3", "--recover", "obs", "--calib", "calib"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    // Off a terminal each phase is one line.
    let stderr = phases(&["--scope", "global"]);
    for phase in [
        "calibrating...",
        "measuring each layer's error by sparsity...",
        "measuring how far each layer's error reaches...",
        "solving layers (OBS)...",
        "correcting output statistics...",
    ] {
        assert!(stderr.contains(phase), "{phase:?} in:\n{stderr}");
    }
    let stderr = phases(&["--method", "channel"]);
    for phase in [
        "measuring each consumer's channel losses...",
        "measuring how far each layer's error reaches...",
        "ordering each group's channels...",
        "correcting output statistics...",
    ] {
        assert!(stderr.contains(phase), "{phase:?} in:\n{stderr}");
    }
}
