//! Channel pruning (`shears prune --method channel`): onnx's full checker and onnxruntime referee
//! every output against the masked dense model (the input with exactly the removed channels
//! zeroed, written by `--emit-masked`). Many channel selections are tried with the hidden test
//! aid `--importance random --seed N` besides the real l1/l2 rankings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears::analysis::{ChannelAnalysis, GroupStatus, UseKind, channel_groups, model_stats};
use shears::job::{Check, JobOptions, prune_to_file};
use shears::onnx::build::{int_attr, ints_attr, node, string_attr};
use shears::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use shears::onnx::tensor::{from_f32, from_i64, value_info_f32};
use shears::onnx::{self, OutputPlan, SaveOptions};
use shears::passes::{PassConfig, PruneChannels, Reference};
use shears::synth::{Export, SynthSpec, Upsample, Variant, build};

use crate::common::{
    compare_outputs, error_exit, fixture, oracle_python, run_python, scratch, shears,
    small_yolov5n, succeed,
};
use shears::verify::{Probe, masked_proof};

/// Runs `shears prune MODEL -o OUT --method channel ARGS --emit-masked MASKED` (verify on) and
/// returns stdout; panics when it fails.
fn prune(model: &Path, out: &Path, masked: &Path, args: &[&str]) -> String {
    let stdout = succeed(
        shears()
            .arg("prune")
            .arg(model)
            .arg("-o")
            .arg(out)
            .args(["--method", "channel", "--no-zstd", "--emit-masked"])
            .arg(masked)
            .args(args),
    );
    assert!(
        stdout.contains("verified against the masked dense model"),
        "{stdout}"
    );
    stdout
}

/// The oracle's report per (reference, candidate) pair.
fn compare_pairs(pairs: &[(PathBuf, PathBuf)]) -> Option<Vec<serde_json::Value>> {
    let python = oracle_python()?;
    let args: Vec<String> = pairs
        .iter()
        .flat_map(|(a, b)| [a.display().to_string(), b.display().to_string()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python(&python, include_str!("../oracles/compare_pairs.py"), &args);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    Some(report.as_array().unwrap().clone())
}

/// Asserts that onnxruntime finds each candidate equal to its reference within 1e-4 relative,
/// with the same output shapes.
pub fn assert_equivalent(pairs: &[(PathBuf, PathBuf)]) {
    let Some(report) = compare_pairs(pairs) else {
        return;
    };
    for ((a, b), r) in pairs.iter().zip(report) {
        assert_eq!(
            r["reference_shapes"],
            r["candidate_shapes"],
            "{}",
            b.display()
        );
        let diff = r["max_abs_diff"].as_f64().unwrap();
        let top = r["max_abs"].as_f64().unwrap();
        assert!(
            diff <= 1e-4 * top.max(1.0),
            "{} against {}: max |diff| {diff}, max |output| {top}",
            b.display(),
            a.display()
        );
    }
}

/// Checks every Conv of `pruned` against the widths the original analysis implies: a group's
/// producers all keep the same width `C - r`, and a consumer's input axis loses the `r` of every
/// group it reads (full spans in these models). Returns the expected (params, MACs).
fn expected_counts(original: &ModelProto, pruned: &ModelProto) -> (u64, u64) {
    let g0 = original.graph.as_ref().unwrap();
    let g1 = pruned.graph.as_ref().unwrap();
    let analysis = channel_groups(g0).unwrap();
    let dims = |g: &GraphProto, name: &str| -> Vec<i64> {
        g.initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
            .dims
            .clone()
    };
    let conv = |g: &GraphProto, name: &str| -> NodeProto {
        g.node
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .clone()
    };
    // Removed per group, read from the first producer; every producer must agree.
    let mut removed = vec![0i64; analysis.groups.len()];
    for group in &analysis.groups {
        let widths: Vec<i64> = group
            .producer_names
            .iter()
            .map(|p| dims(g1, &conv(g1, p).input[1])[0])
            .collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}");
        removed[group.id] = group.channels as i64 - widths[0];
        if !group.is_prunable() {
            assert_eq!(removed[group.id], 0, "locked group {} changed", group.id);
        }
    }
    let mut lost_inputs: HashMap<usize, i64> = HashMap::new();
    for group in &analysis.groups {
        for c in &group.consumers {
            assert_eq!(c.kind, UseKind::Input);
            assert_eq!((c.span.start, c.span.len), (0, group.channels));
            *lost_inputs.entry(c.node).or_default() += removed[group.id];
        }
    }
    let stats = model_stats(g0).unwrap();
    let (mut params, mut macs) = (0u64, 0u64);
    for (index, node) in g0.node.iter().enumerate() {
        if node.op_type() != "Conv" {
            continue;
        }
        let group = analysis.group_of(index).unwrap();
        let w = dims(g0, &node.input[1]);
        let out = w[0] - removed[group.id];
        let inp = w[1] - lost_inputs.get(&index).copied().unwrap_or(0);
        let expected: Vec<i64> = [out, inp]
            .into_iter()
            .chain(w[2..].iter().copied())
            .collect();
        let got = dims(g1, &conv(g1, node.name()).input[1]);
        assert_eq!(got, expected, "{}", node.name());
        let numel = expected.iter().product::<i64>() as u64;
        params += numel + out as u64;
        let layer = stats.layers.iter().find(|l| l.name == node.name()).unwrap();
        macs += layer.macs.unwrap() / layer.weight_numel * numel;
    }
    (params, macs)
}

#[test]
fn fixture_models_prune_to_their_masked_models() {
    let settings: [(&str, &[&str]); 6] = [
        ("models/yolov5n_op12.onnx", &["--amount", "0.3"]),
        (
            "models/yolov5n_op12.onnx",
            &[
                "--amount",
                "0.5",
                "--importance",
                "random",
                "--seed",
                "7",
                "--scope",
                "global",
            ],
        ),
        (
            "models/yolov5n_op17_sim.onnx",
            &["--amount", "0.5", "--importance", "l2"],
        ),
        (
            "models/yolov5n_op17_sim.onnx",
            &[
                "--amount",
                "0.3",
                "--importance",
                "random",
                "--seed",
                "11",
                "--round-to",
                "4",
            ],
        ),
        ("models/yolov5s_random_op12.onnx", &["--amount", "0.5"]),
        (
            "models/yolov5s_random_op12.onnx",
            &[
                "--amount",
                "0.3",
                "--importance",
                "random",
                "--seed",
                "5",
                "--scope",
                "global",
            ],
        ),
    ];
    let dir = scratch();
    let mut pairs = Vec::new();
    for (i, (model, args)) in settings.iter().enumerate() {
        let Some(path) = fixture(model) else {
            continue;
        };
        let out = dir.path().join(format!("pruned{i}.onnx"));
        let masked = dir.path().join(format!("masked{i}.onnx"));
        let stdout = prune(&path, &out, &masked, args);
        assert!(stdout.contains("left alone: 3 locked"), "{stdout}");
        let original = onnx::load(&path).unwrap().proto;
        let pruned = onnx::load(&out).unwrap().proto;
        let (params, macs) = expected_counts(&original, &pruned);
        let before = model_stats(original.graph.as_ref().unwrap()).unwrap();
        let after = model_stats(pruned.graph.as_ref().unwrap()).unwrap();
        assert_eq!(after.params, params, "{model} {args:?}");
        assert_eq!(after.macs, macs, "{model} {args:?}");
        assert!(after.macs_complete);
        assert!(after.params < before.params && after.macs < before.macs);
        // The masked model keeps every shape of the input.
        let masked_model = onnx::load(&masked).unwrap().proto;
        assert_eq!(
            model_stats(masked_model.graph.as_ref().unwrap())
                .unwrap()
                .params,
            before.params
        );
        pairs.push((masked, out.clone()));
        // Output shapes match the original model's.
        pairs.push((path.clone(), out));
    }
    let Some(report) = compare_pairs(&pairs) else {
        return;
    };
    for (pair, r) in pairs.chunks(2).zip(report.chunks(2)) {
        let (masked, original) = (&r[0], &r[1]);
        assert_eq!(original["reference_shapes"], original["candidate_shapes"]);
        assert_eq!(masked["reference_shapes"], masked["candidate_shapes"]);
        let diff = masked["max_abs_diff"].as_f64().unwrap();
        let top = masked["max_abs"].as_f64().unwrap();
        assert!(
            diff <= 1e-4 * top.max(1.0),
            "{}: {diff} against {top}",
            pair[0].1.display()
        );
    }
}

#[test]
fn yolov5s_at_half_width_has_the_yolov5n_architecture() {
    // yolov5s has width multiple 0.50, yolov5n 0.25: removing half of every prunable group of
    // yolov5s (all widths are multiples of 16) gives yolov5n's layer shapes, parameter count and
    // MACs.
    let (Some(s), Some(n)) = (
        fixture("models/yolov5s_random_op12.onnx"),
        fixture("models/yolov5n_op12.onnx"),
    ) else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("half.onnx");
    succeed(shears().arg("prune").arg(&s).arg("-o").arg(&out).args([
        "--method",
        "channel",
        "--amount",
        "0.5",
        "--no-verify",
        "--no-zstd",
    ]));
    let ours = model_stats(onnx::load(&out).unwrap().graph()).unwrap();
    let yolov5n = model_stats(onnx::load(&n).unwrap().graph()).unwrap();
    assert_eq!(ours.params, 1_867_405);
    assert_eq!(ours.macs, yolov5n.macs);
    let shapes = |s: &shears::analysis::ModelStats| -> Vec<(String, Vec<i64>)> {
        s.layers
            .iter()
            .map(|l| (l.name.clone(), l.weight_shape.clone()))
            .collect()
    };
    assert_eq!(shapes(&ours), shapes(&yolov5n));
}

#[test]
fn synthesised_models_prune_to_their_masked_models() {
    let dir = scratch();
    let specs = [
        (
            SynthSpec {
                imgsz: 320,
                export: Export::Opset17Simplified,
                upsample: Upsample::ConstantScales,
                seed: 3,
                ..SynthSpec::new(Variant::N)
            },
            vec!["--amount", "0.4", "--importance", "random", "--seed", "2"],
        ),
        (
            SynthSpec {
                imgsz: 192,
                seed: 1,
                ..SynthSpec::new(Variant::M)
            },
            vec!["--amount", "0.3", "--scope", "global"],
        ),
    ];
    let mut pairs = Vec::new();
    for (i, (spec, args)) in specs.iter().enumerate() {
        let model = build(spec).unwrap();
        let path = dir.path().join(format!("synth{i}.onnx"));
        onnx::save(&model, &path, &SaveOptions::default()).unwrap();
        let (out, masked) = (
            dir.path().join(format!("pruned{i}.onnx")),
            dir.path().join(format!("masked{i}.onnx")),
        );
        prune(&path, &out, &masked, args);
        let pruned = onnx::load(&out).unwrap().proto;
        let (params, _) = expected_counts(&model, &pruned);
        assert_eq!(
            model_stats(pruned.graph.as_ref().unwrap()).unwrap().params,
            params
        );
        pairs.push((masked, out));
    }
    assert_equivalent(&pairs);
}

// ---- A small graph with the ops YOLOv5 does not use ----

fn info(name: &str, shape: &[i64]) -> ValueInfoProto {
    value_info_f32(name, shape)
}

struct Builder {
    g: GraphProto,
    rng: ChaCha8Rng,
}

impl Builder {
    fn tensor(&mut self, name: &str, dims: &[i64], lo: f32, hi: f32) {
        let n = dims.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        self.g.initializer.push(from_f32(name, dims, &values));
    }

    /// A Conv (kernel 1, or 3 with padding 1) with a bias, then Relu; `hw` is the spatial size.
    fn conv(&mut self, name: &str, input: &str, cin: i64, out: i64, group: i64, hw: i64) -> String {
        let (w, b) = (format!("{name}.w"), format!("{name}.b"));
        self.tensor(&w, &[out, cin / group, 3, 3], -0.5, 0.5);
        self.tensor(&b, &[out], -0.5, 0.5);
        let mut conv = node("Conv", name, &[input, &w, &b], &[&format!("{name}.y")]);
        conv.attribute.push(int_attr("group", group));
        conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
        self.g.node.push(conv);
        self.g
            .value_info
            .push(info(&format!("{name}.y"), &[1, out, hw, hw]));
        self.g.node.push(node(
            "Relu",
            &format!("{name}.relu"),
            &[&format!("{name}.y")],
            &[name],
        ));
        self.g.value_info.push(info(name, &[1, out, hw, hw]));
        name.to_string()
    }

    fn op(&mut self, n: NodeProto, shape: &[i64]) {
        for o in &n.output {
            self.g.value_info.push(info(o, shape));
        }
        self.g.node.push(n);
    }
}

/// Input `x` [1, 4, 8, 8]; BatchNormalization then Split (sizes as an input), a Slice on the
/// channel axis, a depthwise Conv, a Resize with stored sizes, all concatenated into a head Conv
/// whose output is the graph output.
fn odd_ops_model(seed: u64) -> ModelProto {
    let mut b = Builder {
        g: GraphProto {
            name: Some("odd".into()),
            input: vec![info("x", &[1, 4, 8, 8])],
            output: vec![info("y", &[1, 6, 8, 8])],
            ..Default::default()
        },
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    // BatchNormalization after a Conv, then Split into 8 + 8.
    let c1 = b.conv("c1", "x", 4, 16, 1, 8);
    b.tensor("bn.s", &[16], 0.5, 1.5);
    b.tensor("bn.b", &[16], -0.5, 0.5);
    b.tensor("bn.m", &[16], -0.5, 0.5);
    b.tensor("bn.v", &[16], 0.5, 1.5);
    b.op(
        node(
            "BatchNormalization",
            "bn",
            &[&c1, "bn.s", "bn.b", "bn.m", "bn.v"],
            &["bn"],
        ),
        &[1, 16, 8, 8],
    );
    b.g.initializer.push(from_i64("split.sizes", &[2], &[8, 8]));
    let mut split = node("Split", "split", &["bn", "split.sizes"], &["s0", "s1"]);
    split.attribute.push(int_attr("axis", 1));
    b.op(split, &[1, 8, 8, 8]);
    let a0 = b.conv("a0", "s0", 8, 8, 1, 8);
    let a1 = b.conv("a1", "s1", 8, 8, 1, 8);
    // Slice channels 4..12 of a 16-channel Conv.
    let c2 = b.conv("c2", "x", 4, 16, 1, 8);
    b.g.initializer.push(from_i64("sl.starts", &[1], &[4]));
    b.g.initializer.push(from_i64("sl.ends", &[1], &[12]));
    b.g.initializer.push(from_i64("sl.axes", &[1], &[1]));
    b.op(
        node(
            "Slice",
            "slice",
            &[&c2, "sl.starts", "sl.ends", "sl.axes"],
            &["sl"],
        ),
        &[1, 8, 8, 8],
    );
    let c3 = b.conv("c3", "sl", 8, 8, 1, 8);
    // Depthwise.
    let c4 = b.conv("c4", "x", 4, 16, 1, 8);
    let dw = b.conv("dw", &c4, 16, 16, 16, 8);
    let c5 = b.conv("c5", &dw, 16, 8, 1, 8);
    // Resize with stored sizes, back down by MaxPool.
    let c6 = b.conv("c6", "x", 4, 16, 1, 8);
    b.g.initializer
        .push(from_i64("rs.sizes", &[4], &[1, 16, 16, 16]));
    let mut resize = node("Resize", "resize", &[&c6, "", "", "rs.sizes"], &["up"]);
    resize.attribute.push(string_attr("mode", "nearest"));
    b.op(resize, &[1, 16, 16, 16]);
    let mut pool = node("MaxPool", "pool", &["up"], &["pooled"]);
    pool.attribute.push(ints_attr("kernel_shape", &[2, 2]));
    pool.attribute.push(ints_attr("strides", &[2, 2]));
    b.op(pool, &[1, 16, 8, 8]);
    let c7 = b.conv("c7", "pooled", 16, 8, 1, 8);
    let mut cat = node("Concat", "cat", &[&a0, &a1, &c3, &c5, &c7], &["cat"]);
    cat.attribute.push(int_attr("axis", 1));
    b.op(cat, &[1, 40, 8, 8]);
    b.tensor("head.w", &[6, 40, 1, 1], -0.5, 0.5);
    b.g.node
        .push(node("Conv", "head", &["cat", "head.w"], &["y"]));
    ModelProto {
        ir_version: Some(7),
        producer_name: Some("shears-tests".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(b.g),
        ..Default::default()
    }
}

#[test]
fn split_slice_depthwise_batchnorm_and_resize_survive_random_selections() {
    let dir = scratch();
    let mut pairs = Vec::new();
    for seed in 0..6u64 {
        let model = odd_ops_model(seed);
        let path = dir.path().join(format!("odd{seed}.onnx"));
        onnx::save(&model, &path, &SaveOptions::default()).unwrap();
        let amount = ["0.25", "0.5", "0.75"][seed as usize % 3];
        let (out, masked) = (
            dir.path().join(format!("pruned{seed}.onnx")),
            dir.path().join(format!("masked{seed}.onnx")),
        );
        let seed_arg = (seed + 100).to_string();
        let stdout = prune(
            &path,
            &out,
            &masked,
            &[
                "--amount",
                amount,
                "--importance",
                "random",
                "--seed",
                &seed_arg,
                "--round-to",
                "1",
                "--min-channels",
                "1",
            ],
        );
        assert!(stdout.contains("left alone: 1 locked"), "{stdout}");
        let pruned = onnx::load(&out).unwrap().proto;
        let g = pruned.graph.as_ref().unwrap();
        let dw = g.node.iter().find(|n| n.name() == "dw").unwrap();
        let dw_w = g
            .initializer
            .iter()
            .find(|t| t.name() == dw.input[1])
            .unwrap();
        let group = dw.attribute.iter().find(|a| a.name() == "group").unwrap();
        assert_eq!(group.i, Some(dw_w.dims[0]));
        assert!(dw_w.dims[0] < 16);
        // The comparison `--verify` relies on is not vacuous: the pruned model is not the
        // unpruned one.
        let diff = compare_outputs(&model, &pruned, &[0]).unwrap();
        assert!(diff.max_abs_diff > 1e-3, "{diff:?}");
        pairs.push((masked, out.clone()));
        pairs.push((path, out));
    }
    let Some(report) = compare_pairs(&pairs) else {
        return;
    };
    for (pair, r) in pairs.chunks(2).zip(report.chunks(2)) {
        assert_eq!(r[1]["reference_shapes"], r[1]["candidate_shapes"]);
        let diff = r[0]["max_abs_diff"].as_f64().unwrap();
        let top = r[0]["max_abs"].as_f64().unwrap();
        assert!(
            diff <= 1e-4 * top.max(1.0),
            "{}: {diff}",
            pair[0].1.display()
        );
    }
}

#[test]
fn include_and_exclude_select_groups_by_producer_name() {
    let dir = scratch();
    let path = dir.path().join("odd.onnx");
    onnx::save(&odd_ops_model(2), &path, &SaveOptions::default()).unwrap();
    let (out, masked) = (dir.path().join("out.onnx"), dir.path().join("masked.onnx"));
    let args = [
        "--amount",
        "0.5",
        "--round-to",
        "1",
        "--include",
        "^c[26]$",
        "--include",
        "^c7",
        "--exclude",
        "7",
    ];
    let stdout = prune(&path, &out, &masked, &args);
    assert!(stdout.contains("from 2 of 2 selected groups"), "{stdout}");
    assert!(stdout.contains("1 locked, 7 not selected"), "{stdout}");
    let original = onnx::load(&path).unwrap().proto;
    let pruned = onnx::load(&out).unwrap().proto;
    let width = |m: &ModelProto, conv: &str| {
        let g = m.graph.as_ref().unwrap();
        let node = g.node.iter().find(|n| n.name() == conv).unwrap();
        g.initializer
            .iter()
            .find(|t| t.name() == node.input[1])
            .unwrap()
            .dims[0]
    };
    for conv in ["c1", "a0", "a1", "c3", "c4", "c5", "c7", "head"] {
        assert_eq!(width(&pruned, conv), width(&original, conv), "{conv}");
    }
    // min_channels defaults to 8: 16 -> 8.
    assert_eq!((width(&pruned, "c2"), width(&pruned, "c6")), (8, 8));
    assert_equivalent(&[(masked, out)]);
}

#[test]
fn amounts_outside_the_unit_interval_are_refused() {
    let dir = scratch();
    let path = dir.path().join("odd.onnx");
    onnx::save(&odd_ops_model(0), &path, &SaveOptions::default()).unwrap();
    for amount in ["1.5", "-0.1"] {
        let out = dir.path().join("out.onnx");
        error_exit(
            shears()
                .arg("prune")
                .arg(&path)
                .arg("-o")
                .arg(&out)
                .args(["--method", "channel", "--amount", amount]),
            "outside [0, 1]",
        );
        assert!(!out.exists());
    }
}

#[test]
fn emptying_a_group_keeps_the_minimum_width_and_says_so() {
    let Some(path) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let (out, masked) = (dir.path().join("all.onnx"), dir.path().join("masked.onnx"));
    let stdout = prune(
        &path,
        &out,
        &masked,
        &["--amount", "1", "--min-channels", "16"],
    );
    assert!(stdout.contains("kept the minimum width"), "{stdout}");
    assert!(
        stdout.contains("50 groups kept the minimum width"),
        "{stdout}"
    );
    assert!(stdout.contains("would keep 0 of 32, keeps 16"), "{stdout}");
    let original = onnx::load(&path).unwrap().proto;
    let pruned = onnx::load(&out).unwrap().proto;
    let analysis = channel_groups(original.graph.as_ref().unwrap()).unwrap();
    let g = pruned.graph.as_ref().unwrap();
    for group in &analysis.groups {
        let node = g
            .node
            .iter()
            .find(|n| n.name() == group.producer_names[0])
            .unwrap();
        let w = g
            .initializer
            .iter()
            .find(|t| t.name() == node.input[1])
            .unwrap();
        let expected = if group.is_prunable() {
            group.channels.min(16)
        } else {
            group.channels
        };
        assert_eq!(w.dims[0] as usize, expected, "{}", node.name());
    }
    assert_equivalent(&[(masked, out)]);
}

#[test]
fn a_model_whose_groups_are_all_locked_prunes_nothing() {
    let mut g = GraphProto {
        name: Some("locked".into()),
        input: vec![info("x", &[1, 4, 8, 8])],
        output: vec![info("y", &[1, 16, 8, 8])],
        ..Default::default()
    };
    g.initializer
        .push(from_f32("w", &[16, 4, 1, 1], &[0.5; 64]));
    g.node.push(node("Conv", "only", &["x", "w"], &["y"]));
    let model = ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(g),
        ..Default::default()
    };
    let dir = scratch();
    let path = dir.path().join("locked.onnx");
    onnx::save(&model, &path, &SaveOptions::default()).unwrap();
    let (out, masked) = (dir.path().join("out.onnx"), dir.path().join("masked.onnx"));
    let stdout = prune(&path, &out, &masked, &["--amount", "0.5"]);
    assert!(stdout.contains("nothing was pruned"), "{stdout}");
    assert!(stdout.contains("left alone: 1 locked"), "{stdout}");
    assert!(stdout.contains("reaches graph output"), "{stdout}");
    let pruned = onnx::load(&out).unwrap().proto;
    assert_eq!(
        pruned.graph.as_ref().unwrap().initializer,
        model.graph.as_ref().unwrap().initializer
    );
}

/// `x -> Conv c (16) -> <act> -> Conv head (6) -> y` with random weights.
fn activation_model(activation: &str) -> ModelProto {
    let mut b = Builder {
        g: GraphProto {
            name: Some("activation".into()),
            input: vec![info("x", &[1, 4, 8, 8])],
            output: vec![info("y", &[1, 6, 8, 8])],
            ..Default::default()
        },
        rng: ChaCha8Rng::seed_from_u64(9),
    };
    b.tensor("c.w", &[16, 4, 1, 1], -0.5, 0.5);
    b.g.node.push(node("Conv", "c", &["x", "c.w"], &["c"]));
    b.g.node.push(node(activation, "act", &["c"], &["s"]));
    b.tensor("head.w", &[6, 16, 1, 1], -0.5, 0.5);
    b.g.node
        .push(node("Conv", "head", &["s", "head.w"], &["y"]));
    ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(b.g),
        ..Default::default()
    }
}

#[test]
fn a_sigmoid_before_the_consumer_locks_the_group() {
    // Sigmoid(0) = 0.5: a masked channel would still feed the head while a removed one does not,
    // so the analysis refuses the group, and the pruned model is the input.
    let model = activation_model("Sigmoid");
    let analysis = channel_groups(model.graph.as_ref().unwrap()).unwrap();
    let reason =
        r#"#1 "act" Sigmoid maps a removed channel to 0.5, not 0, and #2 "head" Conv reads it"#;
    assert_eq!(locked_reasons(&analysis, "c"), [reason]);
    let dir = scratch();
    let path = dir.path().join("sigmoid.onnx");
    onnx::save(&model, &path, &SaveOptions::default()).unwrap();
    let (out, masked) = (dir.path().join("out.onnx"), dir.path().join("masked.onnx"));
    let stdout = prune(&path, &out, &masked, &["--amount", "0.5"]);
    assert!(stdout.contains("nothing was pruned"), "{stdout}");
    assert!(stdout.contains(reason), "{stdout}");
    let pruned = onnx::load(&out).unwrap().proto;
    assert_eq!(
        pruned.graph.as_ref().unwrap().initializer,
        model.graph.as_ref().unwrap().initializer
    );
}

/// The reasons the group produced by Conv `producer` is locked for (empty when prunable).
fn locked_reasons(analysis: &ChannelAnalysis, producer: &str) -> Vec<String> {
    let group = analysis
        .groups
        .iter()
        .find(|g| g.producer_names.iter().any(|p| p == producer))
        .unwrap();
    match &group.status {
        GroupStatus::Prunable => Vec::new(),
        GroupStatus::Locked { reasons } => reasons.iter().map(|r| r.reason.clone()).collect(),
    }
}

/// Plans, masks and prunes `model` (whose node `act` is a Relu, so the analysis allows it) and
/// then turns `act` into a Sigmoid in both the masked and the pruned model: what an analysis
/// that let a Sigmoid through would produce. Returns the proof's reference (the masked model)
/// and the pruned model.
fn sigmoid_let_through(model: &ModelProto) -> (Reference, ModelProto) {
    let options: PruneChannels = serde_saphyr::from_str("amount: 0.5").unwrap();
    let plan = options.plan(model.graph.as_ref().unwrap()).unwrap();
    assert!(plan.removed_channels() > 0);
    let (mut masked, mut pruned) = (model.clone(), model.clone());
    plan.mask(masked.graph.as_mut().unwrap()).unwrap();
    plan.prune(pruned.graph.as_mut().unwrap()).unwrap();
    let mut reference = plan.reference(masked);
    masked_proof(&reference, &pruned, &Probe::default()).expect("Relu(0) = 0: the proof holds");
    for m in [&mut reference.model, &mut pruned] {
        let graph = m.graph.as_mut().unwrap();
        let act = graph.node.iter_mut().find(|n| n.name() == "act").unwrap();
        act.op_type = Some("Sigmoid".into());
    }
    (reference, pruned)
}

#[test]
fn the_masked_proof_refuses_a_pruned_model_that_differs_from_its_masked_model() {
    let (reference, pruned) = sigmoid_let_through(&activation_model("Relu"));
    let err = masked_proof(&reference, &pruned, &Probe::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("differ from the masked model"), "{err}");
    assert!(err.contains("y by"), "{err}");
}

#[test]
fn a_failed_check_writes_nothing() {
    let dir = scratch();
    let path = dir.path().join("odd.onnx");
    onnx::save(&odd_ops_model(1), &path, &SaveOptions::default()).unwrap();
    let out = dir.path().join("out.onnx");
    let options = JobOptions {
        check: Some(Check::new(|_, _| anyhow::bail!("refused by the test"))),
        ..Default::default()
    };
    let pass = PassConfig::PruneChannels(PruneChannels {
        amount: 0.5,
        importance: Default::default(),
        scope: Default::default(),
        round_to: 1,
        min_channels: None,
        seed: 0,
        include: vec![],
        exclude: vec![],
        recover: Default::default(),
        order: None,
        target_macs: None,
        max_map_drop: None,
    });
    let model = onnx::load(&path).unwrap();
    let mut plan = OutputPlan::new();
    plan.input_model(&model).unwrap();
    plan.output("-o", &out).unwrap();
    let err = prune_to_file(
        model,
        &[pass],
        &out,
        &options,
        &shears::progress::Silent,
        &mut plan,
    )
    .unwrap_err();
    drop(plan);
    assert!(
        format!("{err:#}").contains("refused by the test"),
        "{err:#}"
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn channel_prune_sums_up_its_widths_and_warns_to_validate() {
    let Some(path) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let out = dir.path().join("narrow.onnx");
    let run = shears()
        .arg("prune")
        .arg(&path)
        .arg("-o")
        .arg(&out)
        .args(["--method", "channel", "--amount", "0.3", "--no-zstd"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: channel pruning changes what the model detects")
            && stderr.contains("shears val"),
        "{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("prune_channels:"))
        .unwrap();
    assert!(line.len() < 600, "one short line: {line}");
    let widths = line
        .split("; widths (groups): ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    // Each `before->after xN` entry against the producers' weights in the two models.
    let original = onnx::load(&path).unwrap().proto;
    let pruned = onnx::load(&out).unwrap().proto;
    let out_channels = |m: &ModelProto, producer: &str| -> usize {
        let g = m.graph.as_ref().unwrap();
        let node = g.node.iter().find(|n| n.name() == producer).unwrap();
        let w = g.initializer.iter().find(|t| t.name() == node.input[1]);
        w.unwrap().dims[0] as usize
    };
    let mut expected: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for group in channel_groups(original.graph.as_ref().unwrap())
        .unwrap()
        .groups
    {
        let producer = &group.producer_names[0];
        let kept = out_channels(&pruned, producer);
        if kept < group.channels {
            *expected.entry((group.channels, kept)).or_default() += 1;
        }
    }
    let mut reported: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for entry in widths.split(", ") {
        let (change, count) = entry.split_once(" x").unwrap();
        let (before, after) = change.split_once("->").unwrap();
        reported.insert(
            (before.parse().unwrap(), after.parse().unwrap()),
            count.parse().unwrap(),
        );
    }
    assert!(!expected.is_empty());
    assert_eq!(reported, expected, "{line}");
}

#[test]
fn importance_applies_to_channel_pruning_only() {
    let dir = scratch();
    let out = dir.path().join("out.onnx");
    error_exit(
        shears()
            .arg("prune")
            .arg(dir.path().join("model.onnx"))
            .arg("-o")
            .arg(&out)
            .args(["--amount", "0.3", "--importance", "l2"]),
        "--importance applies to --method channel only",
    );
    assert!(!out.exists());
}

/// `x -> Conv c (16) -> <act> -> Conv head (6, bias `head_bias`) -> Sigmoid -> y`. A large
/// negative `head_bias` saturates the output near 0 (tiny, but not constant); a large positive one
/// makes it exactly 1.0 everywhere.
fn saturating_model(head_bias: f32, activation: &str) -> ModelProto {
    let mut b = Builder {
        g: GraphProto {
            name: Some("saturating".into()),
            input: vec![info("x", &[1, 4, 8, 8])],
            output: vec![info("y", &[1, 6, 8, 8])],
            ..Default::default()
        },
        rng: ChaCha8Rng::seed_from_u64(11),
    };
    b.tensor("c.w", &[16, 4, 1, 1], -0.5, 0.5);
    b.g.node.push(node("Conv", "c", &["x", "c.w"], &["c"]));
    b.g.node.push(node(activation, "act", &["c"], &["s"]));
    b.tensor("head.w", &[6, 16, 1, 1], -0.5, 0.5);
    b.g.initializer
        .push(from_f32("head.b", &[6], &[head_bias; 6]));
    b.g.node.push(node(
        "Conv",
        "head",
        &["s", "head.w", "head.b"],
        &["logits"],
    ));
    b.g.node.push(node("Sigmoid", "out", &["logits"], &["y"]));
    ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(b.g),
        ..Default::default()
    }
}

#[test]
fn verification_compares_pre_activations_when_the_output_saturates() {
    // A Sigmoid let through: masked channels still reach the head, removed ones do not.
    let (reference, pruned) = sigmoid_let_through(&saturating_model(-12.0, "Relu"));
    // The final outputs alone cannot tell: they differ by far less than the old absolute floor.
    let diff = compare_outputs(&reference.model, &pruned, &[0, 1]).unwrap();
    assert!(diff.max_abs_diff < 1e-4, "{diff:?}");
    // The head's pre-activation output carries the difference: the proof refuses.
    let err = masked_proof(&reference, &pruned, &Probe::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("differ from the masked model"), "{err}");
    assert!(err.contains("logits by"), "{err}");
}

#[test]
fn verification_fails_on_a_constant_reference() {
    let dir = scratch();
    let path = dir.path().join("constant.onnx");
    onnx::save(
        &saturating_model(1000.0, "Relu"),
        &path,
        &SaveOptions::default(),
    )
    .unwrap();
    let out = dir.path().join("out.onnx");
    let stderr = error_exit(
        shears().arg("prune").arg(&path).arg("-o").arg(&out).args([
            "--method",
            "channel",
            "--amount",
            "0.5",
            "--no-zstd",
        ]),
        "is constant",
    );
    assert!(stderr.contains("tensor y"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn verification_runs_on_dataset_images_when_given() {
    let (Some(path), Some(data)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("coco/coco128.yaml"),
    ) else {
        return;
    };
    let dir = scratch();
    let (out, masked) = (dir.path().join("out.onnx"), dir.path().join("masked.onnx"));
    let root = data.with_extension("");
    let stdout = prune(
        &path,
        &out,
        &masked,
        &[
            "--amount",
            "0.3",
            "--verify-data",
            data.to_str().unwrap(),
            "--data-root",
            root.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("on 4 dataset images"), "{stdout}");
    assert_equivalent(&[(masked, out)]);
}

#[test]
fn pipelines_verify_channel_surgery_and_show_the_figure() {
    let dir = scratch();
    let good = dir.path().join("good.onnx");
    let bad = dir.path().join("bad.onnx");
    onnx::save(&odd_ops_model(1), &good, &SaveOptions::default()).unwrap();
    onnx::save(
        &saturating_model(1000.0, "Relu"),
        &bad,
        &SaveOptions::default(),
    )
    .unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        "models: [good.onnx, bad.onnx]\npasses:\n  - prune_channels: {amount: 0.5, round_to: 1}\n\
         output: 'out/{stem}.onnx'\nreport: out/summary\n",
    )
    .unwrap();
    let out = shears().arg("run").arg(&pipeline).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    let models = summary["models"].as_array().unwrap();
    assert_eq!(models[0]["status"], "ok");
    let proof = &models[0]["report"]["passes"][0]["proof"];
    let figure = proof["max_rel_diff"].as_f64().unwrap();
    assert!(figure <= 1e-4, "{proof}");
    assert!(
        stdout.contains(&format!("prune_channels: {figure:.1e}")),
        "{stdout}"
    );
    assert_eq!(models[1]["status"], "failed");
    let error = models[1]["error"].as_str().unwrap();
    assert!(error.contains("is constant"), "{error}");
    assert!(!dir.path().join("out/bad.onnx").exists());
}

#[test]
fn a_pipeline_verifies_real_sized_models_side_by_side() {
    // Verification sessions run inside the pipeline's worker pool: tract's own pool must not
    // hand one model's work to a thread that is running another's (it crashed this way once).
    let dir = scratch();
    for name in ["a", "b"] {
        let model = build(&SynthSpec::new(Variant::N)).unwrap();
        onnx::save(
            &model,
            &dir.path().join(format!("{name}.onnx")),
            &Default::default(),
        )
        .unwrap();
    }
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        "models: [a.onnx, b.onnx]\npasses:\n  - prune_channels: {amount: 0.3}\n\
         output: 'out/{stem}.onnx'\n",
    )
    .unwrap();
    // --force: the second run would otherwise find the outputs up to date.
    for jobs in ["1", "2"] {
        let stdout = succeed(
            shears()
                .arg("run")
                .arg(&pipeline)
                .args(["-j", jobs, "--force"]),
        );
        assert_eq!(stdout.matches("prune_channels: ").count(), 2, "{stdout}");
    }
}

#[test]
fn ir3_models_keep_initializers_and_graph_inputs_in_step() {
    // IR version 3 lists every initializer as a graph input too: pruning must edit those
    // listings with the weights, or the output fails onnx's checker and keeps the old weights.
    let mut model = build(&SynthSpec::new(Variant::N)).unwrap();
    model.ir_version = Some(3);
    let g = model.graph.as_mut().unwrap();
    let listings: Vec<ValueInfoProto> = g
        .initializer
        .iter()
        .map(|t| {
            let dims: Vec<i64> = t.dims.clone();
            let mut info = info(t.name(), &dims);
            if let Some(shears::onnx::proto::type_proto::Value::TensorType(tt)) =
                info.r#type.as_mut().and_then(|x| x.value.as_mut())
            {
                tt.elem_type = t.data_type;
            }
            info
        })
        .collect();
    g.input.extend(listings);
    let dir = scratch();
    let path = dir.path().join("ir3.onnx");
    onnx::save(&model, &path, &SaveOptions::default()).unwrap();
    let (out, masked) = (dir.path().join("out.onnx"), dir.path().join("masked.onnx"));
    prune(&path, &out, &masked, &["--amount", "0.5"]);
    let pruned = onnx::load(&out).unwrap().proto;
    let g = pruned.graph.as_ref().unwrap();
    let inputs: Vec<&str> = g.input.iter().skip(1).map(|i| i.name()).collect();
    let initializers: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    assert_eq!(inputs, initializers);
    let original = model.graph.as_ref().unwrap().initializer.len();
    assert!(
        initializers.len() <= original,
        "{} > {original}",
        initializers.len()
    );
    assert!(
        std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&path).unwrap().len() * 2 / 3
    );
    // onnx's full checker (IR 3: every initializer must be a graph input) and onnxruntime.
    assert_equivalent(&[(masked, out)]);
}

/// `x -> Conv c (16) -> <chain> -> Conv head (6) -> y` (opset 14), where `chain` adds the nodes
/// between the two Convs and returns the tensor the head reads.
fn chain_model(chain: impl FnOnce(&mut Builder) -> String) -> ModelProto {
    let mut b = Builder {
        g: GraphProto {
            name: Some("chain".into()),
            input: vec![info("x", &[1, 4, 8, 8])],
            output: vec![info("y", &[1, 6, 8, 8])],
            ..Default::default()
        },
        rng: ChaCha8Rng::seed_from_u64(5),
    };
    b.tensor("c.w", &[16, 4, 1, 1], -0.5, 0.5);
    b.tensor("c.b", &[16], -0.5, 0.5);
    b.g.node
        .push(node("Conv", "c", &["x", "c.w", "c.b"], &["c"]));
    for (name, v) in [("zero", 0.0), ("three", 3.0), ("six", 6.0)] {
        b.g.initializer.push(from_f32(name, &[], &[v]));
    }
    let read = chain(&mut b);
    b.tensor("head.w", &[6, 16, 1, 1], -0.5, 0.5);
    b.g.node
        .push(node("Conv", "head", &[&read, "head.w"], &["y"]));
    ModelProto {
        ir_version: Some(7),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(14),
        }],
        graph: Some(b.g),
        ..Default::default()
    }
}

/// A copy of `model` with channels `ks` of Conv `c` zeroed (weights and bias) and, with
/// `unread`, the head's weights for them too: what pruning them leaves the head to compute.
fn with_channels_zeroed(model: &ModelProto, ks: &[usize], unread: bool) -> ModelProto {
    let mut out = model.clone();
    for t in &mut out.graph.as_mut().unwrap().initializer {
        let (axis, zero) = match t.name() {
            "c.w" | "c.b" => (0, true),
            "head.w" => (1, unread),
            _ => continue,
        };
        if !zero {
            continue;
        }
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let inner: usize = dims[axis + 1..].iter().product();
        let mut values = shears::onnx::tensor::to_f32(t).unwrap();
        for (i, v) in values.iter_mut().enumerate() {
            if ks.contains(&((i / inner) % dims[axis])) {
                *v = 0.0;
            }
        }
        shears::onnx::tensor::set_f32(t, values).unwrap();
    }
    out
}

#[test]
fn ops_that_do_not_keep_a_removed_channel_zero_lock_it_before_a_conv() {
    // Each chain between Conv c and the head, with what the analysis must conclude: prunable, or
    // locked for the reason given.
    type Chain = fn(&mut Builder) -> String;
    let chains: [(&str, Chain, Option<&str>); 6] = [
        (
            "scalar_add",
            |b| {
                b.g.node.push(node("Add", "add", &["c", "three"], &["a"]));
                "a".into()
            },
            Some(r#""add" Add maps a removed channel to 3, not 0"#),
        ),
        (
            "hard_sigmoid",
            |b| {
                b.g.node.push(node("HardSigmoid", "hsig", &["c"], &["h"]));
                "h".into()
            },
            Some(r#""hsig" HardSigmoid maps a removed channel to 0.5, not 0"#),
        ),
        (
            // x * Clip(x + 3, 0, 6) / 6: 3 in the middle, 0 again after the Mul.
            "hard_swish_decomposed",
            |b| {
                b.g.node.push(node("Add", "add", &["c", "three"], &["a"]));
                b.g.node
                    .push(node("Clip", "clip", &["a", "zero", "six"], &["k"]));
                b.g.node.push(node("Mul", "mul", &["c", "k"], &["m"]));
                b.g.node.push(node("Div", "div", &["m", "six"], &["h"]));
                "h".into()
            },
            None,
        ),
        (
            "hard_swish",
            |b| {
                b.g.node.push(node("HardSwish", "hswish", &["c"], &["h"]));
                "h".into()
            },
            None,
        ),
        (
            "silu",
            |b| {
                b.g.node.push(node("Sigmoid", "sig", &["c"], &["s"]));
                b.g.node.push(node("Mul", "mul", &["c", "s"], &["m"]));
                "m".into()
            },
            None,
        ),
        (
            "exp_times_three",
            |b| {
                b.g.node.push(node("Exp", "exp", &["c"], &["e"]));
                b.g.node.push(node("Mul", "mul", &["e", "three"], &["m"]));
                "m".into()
            },
            Some(r#""exp" Exp maps a removed channel to 1, not 0"#),
        ),
    ];
    let dir = scratch();
    let mut zeroing = Vec::new();
    let mut pruning = Vec::new();
    for (name, chain, locked) in chains {
        let model = chain_model(chain);
        let reasons = locked_reasons(&channel_groups(model.graph.as_ref().unwrap()).unwrap(), "c");
        match locked {
            Some(reason) => {
                assert_eq!(reasons.len(), 1, "{name}: {reasons:?}");
                assert!(reasons[0].contains(reason), "{name}: {reasons:?}");
                assert!(
                    reasons[0].ends_with(r#""head" Conv reads it"#),
                    "{name}: {reasons:?}"
                );
            }
            None => assert!(reasons.is_empty(), "{name}: {reasons:?}"),
        }
        // The oracle: with channels 0 and 5 of c zeroed, does the head compute the same whether
        // or not it reads them? Exactly when the chain keeps them zero.
        let save = |suffix: &str, m: &ModelProto| {
            let path = dir.path().join(format!("{name}_{suffix}.onnx"));
            onnx::save(m, &path, &SaveOptions::default()).unwrap();
            path
        };
        zeroing.push((
            save("masked", &with_channels_zeroed(&model, &[0, 5], false)),
            save("unread", &with_channels_zeroed(&model, &[0, 5], true)),
        ));
        // The command: verified against the masked model, which onnxruntime then compares too.
        let path = save("model", &model);
        let out = dir.path().join(format!("{name}_out.onnx"));
        let masked = dir.path().join(format!("{name}_pruned_masked.onnx"));
        let stdout = prune(&path, &out, &masked, &["--amount", "0.5"]);
        let pruned = onnx::load(&out).unwrap().proto;
        let width = pruned
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == "c.w")
            .unwrap()
            .dims[0];
        assert_eq!(
            width,
            if locked.is_some() { 16 } else { 8 },
            "{name}: {stdout}"
        );
        pruning.push((masked, out));
    }
    let Some(report) = compare_pairs(&zeroing) else {
        return;
    };
    for ((name, _, locked), r) in chains.iter().zip(report) {
        let (diff, top) = (
            r["max_abs_diff"].as_f64().unwrap(),
            r["max_abs"].as_f64().unwrap(),
        );
        let same = diff <= 1e-6 * top.max(1.0);
        assert_eq!(
            same,
            locked.is_none(),
            "{name}: max |diff| {diff}, max |output| {top}"
        );
    }
    assert_equivalent(&pruning);
}

#[test]
fn a_channel_prune_that_removes_nothing_says_so_once_and_warns_of_nothing() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "n.onnx");
    // 0.1% of a group rounds to no channel.
    let out = shears()
        .current_dir(d)
        .args(["prune", "n.onnx", "-o", "out.onnx", "--method", "channel"])
        .args(["--amount", "0.001"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("nothing was pruned").count(), 1, "{stdout}");
    assert!(!stdout.contains("removed 0"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // A prune that removes channels still warns.
    let out = shears()
        .current_dir(d)
        .args(["prune", "n.onnx", "-o", "out.onnx", "--method", "channel"])
        .args(["--amount", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("changes what the model detects"),
        "{stderr}"
    );
}
