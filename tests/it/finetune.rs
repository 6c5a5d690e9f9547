//! Fine-tuning: the trainable network against onnxruntime, the written model against its
//! student (only Conv values change, every zero stays zero, learning rate 0 changes nothing),
//! the same seed giving the same bytes, and an interrupted run resuming to the same result.

use std::path::{Path, PathBuf};
use std::process::Command;

use shears::analysis::head_convs;
use shears::graph::GraphView;
use shears::onnx::proto::ModelProto;
use shears::train::kernels::Tensor;
use shears::train::network::Network;

use crate::common::{
    error_exit, fixture, oracle_python, scratch, shears, small_dataset, small_yolov5n, succeed,
};

const HEAD_ORACLE: &str = include_str!("../oracles/head_outputs.py");

/// The names of the Detect head's output Convs, in graph order.
fn head_names(model: &ModelProto) -> Vec<String> {
    let graph = model.graph.as_ref().unwrap();
    head_convs(&GraphView::new(graph))
        .into_iter()
        .map(|i| graph.node[i].name().to_string())
        .collect()
}

/// onnxruntime's head outputs of `path` on `x`, flattened one after the other.
fn ort_heads(python: &Path, path: &Path, x: &Tensor<f32>, dir: &Path) -> Vec<f32> {
    let model = shears::onnx::load(path).unwrap();
    let raw = dir.join("x.f32");
    let out = dir.join("heads.f32");
    std::fs::write(&raw, bytemuck::cast_slice::<f32, u8>(&x.data)).unwrap();
    let [n, _, h, w] = x.shape.map(|d| d.to_string());
    let mut args: Vec<String> = vec![
        path.display().to_string(),
        raw.display().to_string(),
        n,
        h,
        w,
        out.display().to_string(),
    ];
    args.extend(head_names(&model.proto));
    crate::common::run_python(
        python,
        HEAD_ORACLE,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    bytemuck::cast_slice::<u8, f32>(&std::fs::read(&out).unwrap()).to_vec()
}

#[test]
fn the_trainable_network_equals_onnxruntime_on_yolov5n() {
    let (Some(op12), Some(op17), Some(python), Some(images)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_op17_sim.onnx"),
        oracle_python(),
        fixture("coco/coco128/images/train2017"),
    ) else {
        return;
    };
    let dir = scratch();
    // A real image at the export's size; a batch of two at another size on the simplified
    // opset-17 export (the opset-12 one computes its Resize sizes from constants for 640).
    for (model, size, names) in [
        (&op12, 640, &["000000000009.jpg"][..]),
        (&op17, 320, &["000000000025.jpg", "000000000030.jpg"][..]),
    ] {
        let proto = shears::onnx::load(model).unwrap().proto;
        let mut data = Vec::new();
        for name in names {
            let p = shears::eval::preprocess::preprocess_file(&images.join(name), size, u64::MAX)
                .unwrap();
            data.extend(p.tensor.iter());
        }
        let s = size as usize;
        let x = Tensor {
            shape: [names.len(), 3, s, s],
            data,
        };
        let (net, params) = Network::from_model(&proto).unwrap();
        net.head_shapes(x.shape[0], [x.shape[2], x.shape[3]])
            .unwrap();
        let (ours, _) = net.forward(&params, x.clone(), false);
        let reference = ort_heads(&python, model, &x, dir.path());
        let mut at = 0;
        for head in &ours {
            let r = &reference[at..at + head.data.len()];
            at += head.data.len();
            let top = r.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = head
                .data
                .iter()
                .zip(r)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-4 * top,
                "{size}px head {:?}: max |ours - ORT| {diff} against max |ORT| {top}",
                head.shape
            );
        }
        assert_eq!(at, reference.len(), "head sizes differ from onnxruntime's");
    }
}

/// Copies the first `n` files of the fixture folder `source` (by name) into the new folder `to`;
/// `None` without the fixtures outside CI.
fn first_images(source: &str, to: &Path, n: usize) -> Option<PathBuf> {
    let source = fixture(source)?;
    std::fs::create_dir_all(to).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in &names[..n] {
        std::fs::copy(source.join(name), to.join(name)).unwrap();
    }
    Some(to.to_path_buf())
}

/// A generated yolov5n at 64 pixels pruned to 50% by magnitude, and six coco128 images in a
/// folder of their own; `None` without the fixtures outside CI.
fn small_setup(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let images = first_images("coco/coco128/images/train2017", &dir.join("images"), 6)?;
    let dense = small_yolov5n(dir, "dense.onnx");
    let pruned = dir.join("pruned.onnx");
    succeed(
        shears()
            .arg("prune")
            .arg(&dense)
            .args(["--amount", "0.5", "--scope", "global", "--no-zstd", "-o"])
            .arg(&pruned),
    );
    Some((dense, pruned, images))
}

fn finetune(dense: &Path, pruned: &Path, images: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = shears();
    cmd.arg("finetune")
        .arg(pruned)
        .arg("--teacher")
        .arg(dense)
        .arg("--images")
        .arg(images)
        .args(["--imgsz", "64", "--batch", "2", "--threads", "2", "-o"])
        .arg(out)
        .args(extra);
    cmd
}

/// Every Conv initializer's values, by name, and everything else of the model (metadata
/// excluded) with those values blanked.
fn split_convs(path: &Path) -> (Vec<(String, Vec<f32>)>, ModelProto) {
    let mut model = shears::onnx::load(path).unwrap().proto;
    model.metadata_props.clear();
    let graph = model.graph.as_mut().unwrap();
    let conv_inputs: std::collections::HashSet<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .flat_map(|n| n.input[1..].to_vec())
        .collect();
    let mut values = Vec::new();
    for t in graph.initializer.iter_mut() {
        if conv_inputs.contains(t.name()) {
            values.push((
                t.name().to_string(),
                shears::onnx::tensor::to_f32(t).unwrap(),
            ));
            t.raw_data = None;
            t.float_data.clear();
        }
    }
    (values, model)
}

#[test]
fn fine_tuning_changes_only_conv_values_keeps_every_zero_and_repeats_itself() {
    let dir = scratch();
    let d = dir.path();
    let Some((dense, pruned, images)) = small_setup(d) else {
        return;
    };
    // learning rate 0: the Conv values are the student's
    let still = d.join("still.onnx");
    succeed(&mut finetune(
        &dense,
        &pruned,
        &images,
        &still,
        &["--epochs", "1", "--lr", "0"],
    ));
    assert_eq!(split_convs(&still), split_convs(&pruned));
    // two epochs, nothing held out (so the last is kept): only Conv values changed, zeros
    // stayed, and the run repeats to the byte
    let tuned = d.join("tuned.onnx");
    let again = d.join("again.onnx");
    let args = [
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--holdout",
        "0",
        "--json",
        "report.json",
    ];
    let out = succeed(finetune(&dense, &pruned, &images, &tuned, &args).current_dir(d));
    assert!(out.contains("kept epoch"), "{out}");
    succeed(&mut finetune(&dense, &pruned, &images, &again, &args[..6]));
    assert!(
        std::fs::read(&tuned).unwrap() == std::fs::read(&again).unwrap(),
        "the same seed gave other bytes"
    );
    let (before, rest_before) = split_convs(&pruned);
    let (after, rest_after) = split_convs(&tuned);
    assert_eq!(
        rest_before, rest_after,
        "something besides Conv values changed"
    );
    let mut changed = 0;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        for (x, y) in b.iter().zip(a) {
            if *x == 0.0 {
                assert_eq!(*y, 0.0, "{name}: a pruned weight became non-zero");
            }
            changed += usize::from(x != y);
        }
    }
    assert!(changed > 1000, "only {changed} values changed");
    let model = shears::onnx::load(&tuned).unwrap().proto;
    let record = model
        .metadata_props
        .iter()
        .find(|p| p.key() == "shears.finetune")
        .expect("the provenance record");
    let record: serde_json::Value = serde_json::from_str(record.value()).unwrap();
    assert_eq!(record["train_images"].as_u64(), Some(6), "{record}");
    assert_eq!(record["image_sha256"].as_array().unwrap().len(), 6);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 2, "{report}");
    // inspect shows the record; val warns on the images it was trained on
    let shown = succeed(shears().arg("inspect").arg(&tuned));
    assert!(shown.contains("fine-tuned (shears.finetune"), "{shown}");
    let data = small_dataset(d, 6).unwrap();
    let out = shears()
        .arg("val")
        .arg(&tuned)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("6 of the 6 validation images were used to fine-tune this model"),
        "{stderr}"
    );
}

#[test]
fn an_interrupted_run_resumes_to_the_same_model() {
    let dir = scratch();
    let d = dir.path();
    let Some((dense, pruned, images)) = small_setup(d) else {
        return;
    };
    let args = ["--epochs", "4", "--lr", "0.01"];
    let whole = d.join("whole.onnx");
    succeed(&mut finetune(&dense, &pruned, &images, &whole, &args));
    let out = d.join("out.onnx");
    let checkpoint = d.join("out.onnx.ckpt");
    let mut child = finetune(&dense, &pruned, &images, &out, &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !checkpoint.exists() && waited.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        checkpoint.exists(),
        "no checkpoint was written after the first epoch"
    );
    assert!(!out.exists(), "a killed run left an output");
    error_exit(
        &mut finetune(&dense, &pruned, &images, &out, &args),
        "pass --resume",
    );
    succeed(&mut finetune(
        &dense,
        &pruned,
        &images,
        &out,
        &[&args[..], &["--resume"]].concat(),
    ));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
    assert!(
        !checkpoint.exists(),
        "the checkpoint outlived a finished run"
    );
}

#[test]
fn a_pipeline_fine_tunes_after_pruning_with_its_input_as_the_teacher() {
    let dir = scratch();
    let d = dir.path();
    let Some((dense, pruned, images)) = small_setup(d) else {
        return;
    };
    let pipeline = d.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "models: ['{}']\npasses:\n  - prune_magnitude: {{amount: 0.5, scope: global}}\n  \
             - finetune: {{epochs: 1, imgsz: 64, batch: 2, lr: 0.01, holdout: 0}}\n\
             output: out.onnx\n\
             calibration:\n  data: '{}'\n  images: 1000\n",
            dense.display(),
            images.display()
        ),
    )
    .unwrap();
    let out = succeed(shears().arg("run").arg(&pipeline));
    assert!(out.contains("finetune"), "{out}");
    let tuned = d.join("out.onnx");
    // the prune alone is the CLI's: the same zeros, other Conv values
    let (before, rest_before) = split_convs(&pruned);
    let (after, rest_after) = split_convs(&tuned);
    assert_eq!(rest_before, rest_after);
    let mut changed = 0;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        for (x, y) in b.iter().zip(a) {
            assert_eq!(*x == 0.0, *y == 0.0, "{name}: the pattern of zeros changed");
            changed += usize::from(x != y);
        }
    }
    assert!(changed > 1000, "only {changed} values changed");
    let model = shears::onnx::load(&tuned).unwrap().proto;
    let passes = shears::onnx::metadata::get(&model, "shears.passes").unwrap();
    assert!(passes.contains("\"finetune\""), "{passes}");
    assert!(shears::onnx::metadata::get(&model, "shears.finetune").is_some());
    // a second run finds it up to date
    let again = succeed(shears().arg("run").arg(&pipeline));
    assert!(again.contains("up to date"), "{again}");
}

#[test]
fn a_sweep_point_with_ft_is_prune_then_finetune_on_the_calibration_images() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let data = crate::sweep::small_coco128(d, 4).expect("coco128 fixture");
    let calib = first_images(
        "coco/coco_extra_train/images/train2017",
        &d.join("calib"),
        3,
    )
    .expect("training images");
    let out = d.join("sweep");
    succeed(
        shears()
            .arg("sweep")
            .arg(&dense)
            .arg("--data")
            .arg(&data)
            .args(["--methods", "2:4+ft", "--runs", "0"])
            .arg("--calib")
            .arg(&calib)
            .args(["--calib-images", "3", "-o"])
            .arg(&out),
    );
    // the same two steps by hand, with the same defaults
    let pruned = d.join("pruned.onnx");
    succeed(
        shears()
            .arg("prune")
            .arg(&dense)
            .args(["--pattern", "2:4", "--no-zstd", "-o"])
            .arg(&pruned),
    );
    let tuned = d.join("tuned.onnx");
    succeed(
        shears()
            .arg("finetune")
            .arg(&pruned)
            .arg("--teacher")
            .arg(&dense)
            .arg("--images")
            .arg(&calib)
            .arg("-o")
            .arg(&tuned),
    );
    let point = out.join("models/2-4-ft.onnx");
    let (by_hand, rest_by_hand) = split_convs(&tuned);
    let (in_sweep, rest_in_sweep) = split_convs(&point);
    assert_eq!(rest_by_hand, rest_in_sweep);
    assert!(by_hand == in_sweep, "the sweep point's Conv values differ");
    let (pruned_values, _) = split_convs(&pruned);
    assert!(by_hand != pruned_values, "fine-tuning changed nothing");
    let model = shears::onnx::load(&point).unwrap().proto;
    assert!(shears::onnx::metadata::get(&model, "shears.finetune").is_some());
}

#[test]
fn bad_fine_tuning_input_is_an_error_naming_it_and_writes_nothing() {
    let dir = scratch();
    let d = dir.path();
    let Some((dense, pruned, images)) = small_setup(d) else {
        return;
    };
    let out = d.join("out.onnx");
    let fails = |extra: &[&str], needle: &str| {
        error_exit(&mut finetune(&dense, &pruned, &images, &out, extra), needle);
        assert!(!out.exists(), "{extra:?} left an output");
    };
    fails(&["--device", "cuda"], "CPU only");
    fails(&["--epochs", "0"], "epochs must be 1 or more");
    fails(&["--images-limit", "0"], "images_limit 0");
    fails(&["--lr", "NaN"], "lr NaN");
    fails(&["--holdout", "0.7"], "holdout 0.7");
    fails(&["--feature-weight=-1"], "loss weights must be 0 or more");
    // a teacher that is not the model the student was pruned from
    let other = d.join("other.onnx");
    succeed(
        shears()
            .args(["synth", "yolov5n", "--imgsz", "64", "--nc", "3", "-o"])
            .arg(&other),
    );
    error_exit(
        &mut finetune(&other, &pruned, &images, &out, &[]),
        "is the teacher the model the student was pruned from?",
    );
    assert!(!out.exists());
    // no images
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    error_exit(
        &mut finetune(&dense, &pruned, &empty, &out, &[]),
        &empty.display().to_string(),
    );
    assert!(!out.exists());
    // the output may not be one of the models read
    let before = std::fs::read(&pruned).unwrap();
    error_exit(
        &mut finetune(&dense, &pruned, &images, &pruned, &[]),
        &pruned.display().to_string(),
    );
    assert_eq!(std::fs::read(&pruned).unwrap(), before);
}
