//! Unstructured pruning against the official pruned export, onnx's checker and onnxruntime.

use std::collections::HashMap;
use std::path::Path;

use shears::analysis::model_stats;
use shears::onnx::{self, tensor};

use crate::common::{fixture, oracle_python, run_python, scratch, shears, succeed};

fn prune(args: &[&str], model: &Path, out: &Path) -> String {
    succeed(
        shears()
            .arg("prune")
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(model),
    )
}

fn check_and_compare(models: &[&Path]) -> serde_json::Value {
    let python = oracle_python().expect("oracle python");
    let args: Vec<&str> = models.iter().map(|m| m.to_str().unwrap()).collect();
    serde_json::from_str(&run_python(
        &python,
        include_str!("../oracles/check_and_compare.py"),
        &args,
    ))
    .unwrap()
}

fn initializers(path: &Path) -> HashMap<String, shears::onnx::proto::TensorProto> {
    let model = onnx::load(path).unwrap();
    model
        .graph()
        .initializer
        .iter()
        .map(|t| (t.name().to_string(), t.clone()))
        .collect()
}

#[test]
fn layer_scope_matches_the_official_pruned_export() {
    let (Some(dense), Some(official)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_pruned30_op12.onnx"),
    ) else {
        return;
    };
    let Some(sparsity_oracle) = fixture("oracles/yolov5n_pruned30_sparsity.json") else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("pruned.onnx");
    let stdout = prune(&["--amount", "0.3", "--scope", "layer"], &dense, &out);
    assert!(
        stdout.contains("0.2991"),
        "reported global sparsity: {stdout}"
    );

    let ours = initializers(&out);
    let theirs = initializers(&official);
    assert_eq!(ours.len(), theirs.len());
    let oracle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sparsity_oracle).unwrap()).unwrap();
    let mut conv_weights = 0;
    for (name, t) in &theirs {
        let mine = &ours[name];
        if !(name.ends_with(".weight") && t.dims.len() == 4) {
            assert!(mine == t, "{name} must stay bit-identical");
            continue;
        }
        conv_weights += 1;
        let (a, b) = (tensor::to_f32(mine).unwrap(), tensor::to_f32(t).unwrap());
        let zeros = |v: &[f32]| v.iter().filter(|x| **x == 0.0).count();
        assert_eq!(zeros(&a), zeros(&b), "{name}: zero count");
        // Where the two differ, both values must tie in magnitude with this layer's threshold:
        // the largest magnitude zeroed by the official export.
        let original = tensor::to_f32(&initializers(&dense)[name]).unwrap();
        let threshold = original
            .iter()
            .zip(&b)
            .filter(|(_, p)| **p == 0.0)
            .map(|(o, _)| o.abs())
            .fold(0.0, f32::max);
        for i in 0..a.len() {
            if (a[i] == 0.0) != (b[i] == 0.0) {
                assert_eq!(
                    original[i].abs(),
                    threshold,
                    "{name}[{i}] differs away from the threshold"
                );
            } else {
                assert_eq!(a[i].to_bits(), b[i].to_bits(), "{name}[{i}]");
            }
        }
    }
    assert_eq!(conv_weights, 60);
    // The guide's own per-layer zero counts and global sparsity (zeros over all parameters).
    for (layer, counts) in oracle["conv_zero_counts"].as_object().unwrap() {
        let values = tensor::to_f32(&ours[&format!("{layer}.weight")]).unwrap();
        assert_eq!(
            values.iter().filter(|x| **x == 0.0).count() as u64,
            counts[0].as_u64().unwrap(),
            "{layer}"
        );
        assert_eq!(values.len() as u64, counts[1].as_u64().unwrap(), "{layer}");
    }
    let stats = model_stats(onnx::load(&out).unwrap().graph()).unwrap();
    let expected = oracle["global_sparsity"].as_f64().unwrap();
    // The guide divides in float32 (a torch tensor), so its figure carries float32 rounding.
    assert!(
        (stats.sparsity.global - expected).abs() < 1e-7,
        "{} vs {expected}",
        stats.sparsity.global
    );
}

#[test]
fn pruned_outputs_pass_the_checker_and_run_in_onnxruntime() {
    let Some(dense) = fixture("models/yolov5n_op17_sim.onnx") else {
        return;
    };
    if oracle_python().is_none() {
        return;
    }
    let dir = scratch();
    let layer = dir.path().join("layer.onnx");
    let global = dir.path().join("global.onnx");
    let nm = dir.path().join("nm.onnx");
    prune(&["--amount", "0.3"], &dense, &layer);
    let stdout = prune(
        &[
            "--amount",
            "0.5",
            "--scope",
            "global",
            "--exclude",
            "model\\.24",
        ],
        &dense,
        &global,
    );
    assert!(stdout.contains("global scope"), "{stdout}");
    prune(
        &["--pattern", "2:4", "--exclude", "^/model\\.0/"],
        &dense,
        &nm,
    );

    let report = check_and_compare(&[&dense, &layer, &global, &nm]);
    for i in 0..4 {
        assert_eq!(
            report["shapes"][i],
            serde_json::json!([1, 25200, 85]),
            "{report}"
        );
        assert_eq!(report["finite"][i], true, "{report}");
    }
    // Pruning changes outputs, but a 30% layer-wise cut keeps them in the same range.
    assert!(report["max_abs_diff"][1].as_f64().unwrap() > 0.0);

    let global_stats = model_stats(onnx::load(&global).unwrap().graph()).unwrap();
    let head: Vec<_> = global_stats
        .layers
        .iter()
        .filter(|l| l.name.contains("model.24"))
        .collect();
    assert!(
        head.iter().all(|l| l.weight_zeros == 0),
        "the excluded Detect head stays dense"
    );
    let nm_stats = model_stats(onnx::load(&nm).unwrap().graph()).unwrap();
    let first = &nm_stats.layers[0];
    assert_eq!(first.weight_zeros, 0, "layer 0 is excluded");
    assert!(
        nm_stats.layers[1..]
            .iter()
            .all(|l| (l.weight_sparsity() - 0.5).abs() < 0.01)
    );
}

#[test]
fn sparse_storage_shrinks_the_file_and_keeps_outputs() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    if oracle_python().is_none() {
        return;
    }
    let dir = scratch();
    let zeros = dir.path().join("dense.onnx");
    let sparse = dir.path().join("sparse.onnx");
    prune(&["--amount", "0.8", "--scope", "global"], &dense, &zeros);
    let stdout = prune(
        &[
            "--amount",
            "0.8",
            "--scope",
            "global",
            "--storage",
            "sparse",
        ],
        &dense,
        &sparse,
    );
    assert!(stdout.contains("in sparse form"), "{stdout}");
    let (dense_size, sparse_size) = (
        std::fs::metadata(&zeros).unwrap().len(),
        std::fs::metadata(&sparse).unwrap().len(),
    );
    assert!(sparse_size < dense_size, "{sparse_size} >= {dense_size}");

    let loaded = onnx::load(&sparse).unwrap();
    assert!(loaded.graph().node.iter().any(
        |n| n.op_type() == "Constant" && n.attribute.iter().any(|a| a.name() == "sparse_value")
    ));
    let report = check_and_compare(&[&zeros, &sparse]);
    assert_eq!(
        report["max_abs_diff"][1], 0.0,
        "sparse storage changes no output: {report}"
    );

    // Weights stored as sparse Constants are still the layers' weights for every count.
    let (stored, zeroed) = (
        model_stats(loaded.graph()).unwrap(),
        model_stats(onnx::load(&zeros).unwrap().graph()).unwrap(),
    );
    assert!(stored.macs_complete, "every layer's MACs are known");
    assert_eq!(
        (stored.conv_layers, stored.params, stored.macs),
        (zeroed.conv_layers, zeroed.params, zeroed.macs)
    );
    assert_eq!(stored.sparsity, zeroed.sparsity);
    let inspected = succeed(shears().arg("inspect").arg(&sparse));
    assert!(!inspected.contains("unknown"), "{inspected}");
    let sparse_constants = loaded
        .graph()
        .node
        .iter()
        .filter(|n| n.attribute.iter().any(|a| a.name() == "sparse_value"))
        .count();
    let checked = succeed(shears().arg("check").arg(&sparse));
    assert!(
        checked.contains(&format!("{sparse_constants} sparse Constant nodes")),
        "{checked}"
    );

    let mut densified = loaded.proto.clone();
    shears::graph::densify_sparse(&mut densified).unwrap();
    let reference = onnx::load(&zeros).unwrap();
    let values = |m: &shears::onnx::proto::ModelProto| -> HashMap<String, Vec<f32>> {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .filter_map(|t| Some((t.name().to_string(), tensor::to_f32(t).ok()?)))
            .collect()
    };
    assert_eq!(values(&densified), values(&reference.proto));
}

#[test]
fn outputs_record_provenance_and_are_deterministic() {
    let Some(dense) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    prune(&["--amount", "0.3", "--no-zstd"], &dense, &a);
    prune(&["--amount", "0.3", "--no-zstd"], &dense, &b);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let model = onnx::load(&a).unwrap();
    let props: HashMap<_, _> = model
        .proto
        .metadata_props
        .iter()
        .map(|p| (p.key(), p.value()))
        .collect();
    assert!(props.contains_key("names"), "existing metadata kept");
    let passes: serde_json::Value = serde_json::from_str(props["shears.passes"]).unwrap();
    assert_eq!(passes[0]["tool"], "shears");
    assert_eq!(passes[0]["pass"], "prune_magnitude");
    assert_eq!(passes[0]["options"]["amount"], 0.3);
    assert_eq!(passes[0]["options"]["scope"], "layer");
    // `inspect` shows what the metadata records, in text and JSON.
    let text = succeed(shears().arg("inspect").arg(&a));
    assert!(
        text.contains("passes recorded in shears.passes:")
            && text.contains(&format!(
                "1. prune_magnitude (shears {}): amount=0.3",
                passes[0]["version"].as_str().unwrap()
            ))
            && text.contains("scope=\"layer\""),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&succeed(shears().args(["inspect", "--json"]).arg(&a))).unwrap();
    assert_eq!(json["shears_passes"], passes);
    let plain = succeed(shears().arg("inspect").arg(&dense));
    assert!(!plain.contains("shears.passes"), "{plain}");
}

/// Elements of the float tensors an ONNX model stores (initializers and Constant values), by
/// onnx's own reading of the file.
const FLOAT_ELEMENTS: &str = r#"
import sys, onnx, numpy as np
m = onnx.load(sys.argv[1])
floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
tensors = list(m.graph.initializer)
tensors += [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
print(sum(int(np.prod(t.dims)) for t in tensors if t.data_type in floats))
"#;

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn inspect_counts_parameters_like_yolov5() {
    for (name, params) in [
        ("models/yolov5n_op12.onnx", 1_867_405u64),
        ("models/yolov5n_op17_sim.onnx", 1_867_405),
        ("models/yolov5s_random_op12.onnx", 7_225_885),
    ] {
        let Some(path) = fixture(name) else { return };
        let json = succeed(shears().args(["inspect", "--json"]).arg(&path));
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["params"], params, "{name}");
        if let Some(python) = oracle_python() {
            let floats = run_python(&python, FLOAT_ELEMENTS, &[path.to_str().unwrap()]);
            assert_eq!(
                report["float_tensor_params"].as_u64().unwrap(),
                floats.trim().parse::<u64>().unwrap(),
                "{name}"
            );
        }
        let text = succeed(shears().arg("inspect").arg(&path));
        assert!(
            text.contains(&format!(
                "{} conv parameters (weights and biases), {} parameters in all float tensors",
                grouped(params),
                grouped(report["float_tensor_params"].as_u64().unwrap())
            )),
            "{text}"
        );
        assert_eq!(report["conv_layers"], 60);
        assert!(
            report["sparsity"]["global"].as_f64().unwrap() < 1e-5,
            "dense (one parameter of yolov5n is 0)"
        );
        assert_eq!(report["layers"].as_array().unwrap().len(), 60);
        assert_eq!(
            report["macs_complete"], true,
            "{name}: every conv's output shape inferred"
        );
        // YOLOv5 reports 4.5 GFLOPs (yolov5n) and 16.4 GFLOPs (yolov5s) fused at 640: 2 FLOPs per MAC.
        let gflops = 2.0 * report["macs"].as_f64().unwrap() / 1e9;
        let expected = if params > 2_000_000 { 16.4 } else { 4.5 };
        assert!((gflops - expected).abs() < 0.05, "{name}: {gflops} GFLOPs");
    }
}

/// Writes two small opset-9 models with the oracle's onnx: `conv9.onnx` (Conv, Relu, MaxPool:
/// unchanged in meaning up to opset 11) and `upsample9.onnx` (the same plus an Upsample, which
/// opset 10 deprecated).
const LOW_OPSET_MODELS: &str = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

def build(path, upsample):
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y" if not upsample else "p"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
    ]
    inits = [numpy_helper.from_array(w, "w")]
    if upsample:
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
        nodes.append(helper.make_node("Upsample", ["p", "scales"], ["y"], name="up"))
    graph = helper.make_graph(
        nodes, "low", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4 * (1 + upsample), 4 * (1 + upsample)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)

build(sys.argv[1] + "/conv9.onnx", False)
build(sys.argv[1] + "/upsample9.onnx", True)
"#;

#[test]
fn sparse_storage_raises_an_old_opset_when_valid_and_refuses_otherwise() {
    let Some(python) = oracle_python() else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    run_python(&python, LOW_OPSET_MODELS, &[d.to_str().unwrap()]);
    let (zeros, sparse) = (d.join("zeros.onnx"), d.join("sparse.onnx"));
    let amount = ["--amount", "0.9", "--scope", "global"];
    prune(&amount, &d.join("conv9.onnx"), &zeros);
    let stdout = prune(
        &[&amount[..], &["--storage", "sparse"]].concat(),
        &d.join("conv9.onnx"),
        &sparse,
    );
    assert!(
        stdout.contains("opset import raised from 9 to 11"),
        "{stdout}"
    );
    assert_eq!(
        onnx::opset::default_opset(&onnx::load(&sparse).unwrap().proto),
        Some(11)
    );
    // onnx's full checker accepts it, and onnxruntime computes the same as the dense zeros
    let report = check_and_compare(&[&zeros, &sparse]);
    assert_eq!(report["max_abs_diff"][1], 0.0, "{report}");

    let refused = d.join("refused.onnx");
    let stderr = crate::common::error_exit(
        shears()
            .arg("prune")
            .args(amount)
            .args(["--storage", "sparse", "-o"])
            .arg(&refused)
            .arg(d.join("upsample9.onnx")),
        "node \"up\" (Upsample) changes meaning between opset 9 and 11",
    );
    assert!(stderr.contains("sparse storage needs opset 11"), "{stderr}");
    assert!(!refused.exists());
}
