//! Channel dependency groups on the real YOLOv5 exports, with onnxruntime as referee.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears::analysis::{ChannelAnalysis, ChannelGroup, Edit, GroupStatus, UseKind, channel_groups};
use shears::onnx::proto::ModelProto;
use shears::onnx::{self, SaveOptions, tensor};

use crate::common::{fixture, oracle_python, run_python, scratch, shears, succeed};

const MODELS: [&str; 3] = [
    "models/yolov5n_op12.onnx",
    "models/yolov5n_op17_sim.onnx",
    "models/yolov5s_random_op12.onnx",
];

/// Each fixture model with its analysis; empty when fixtures are missing (outside CI).
fn analysed() -> Vec<(PathBuf, ModelProto, ChannelAnalysis)> {
    MODELS
        .iter()
        .filter_map(|m| fixture(m))
        .map(|path| {
            let model = onnx::load(&path).unwrap();
            let analysis = channel_groups(model.graph()).unwrap();
            (path, model.proto, analysis)
        })
        .collect()
}

fn graph(model: &ModelProto) -> &shears::onnx::proto::GraphProto {
    model.graph.as_ref().unwrap()
}

fn node_index(model: &ModelProto, name: &str) -> usize {
    graph(model)
        .node
        .iter()
        .position(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn group_named<'a>(model: &ModelProto, a: &'a ChannelAnalysis, conv: &str) -> &'a ChannelGroup {
    a.group_of(node_index(model, conv))
        .unwrap_or_else(|| panic!("{conv} is in no group"))
}

/// The stored dims of initializer `name`.
fn dims<'m>(model: &'m ModelProto, name: &str) -> &'m [i64] {
    &graph(model)
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
        .dims
}

#[test]
fn every_conv_output_is_in_exactly_one_group() {
    for (path, model, analysis) in analysed() {
        let g = graph(&model);
        let convs: Vec<usize> = (0..g.node.len())
            .filter(|&i| g.node[i].op_type() == "Conv")
            .collect();
        assert_eq!(convs.len(), 60, "{}", path.display());
        for &conv in &convs {
            let owners: Vec<&ChannelGroup> = analysis
                .groups
                .iter()
                .filter(|gr| gr.producers.contains(&conv))
                .collect();
            assert_eq!(owners.len(), 1, "{}: node {conv}", path.display());
            let group = owners[0];
            let node = &g.node[conv];
            // The stored weight is [out, in, kh, kw]: its out is the group's channel count.
            assert_eq!(
                dims(&model, &node.input[1])[0] as usize,
                group.channels,
                "{}",
                node.name()
            );
            let output = &node.output[0];
            let carried: Vec<_> = group.tensors.iter().filter(|t| &t.name == output).collect();
            assert_eq!(carried.len(), 1, "{output}");
            assert_eq!(
                (
                    carried[0].span.offset,
                    carried[0].span.start,
                    carried[0].span.len
                ),
                (0, 0, group.channels)
            );
        }
        let producers: usize = analysis.groups.iter().map(|g| g.producers.len()).sum();
        assert_eq!(producers, convs.len());
        for (id, group) in analysis.groups.iter().enumerate() {
            assert_eq!(group.id, id);
        }
        // Deterministic: a second run gives the same document.
        let again = channel_groups(graph(&model)).unwrap();
        assert_eq!(
            serde_json::to_string(&analysis).unwrap(),
            serde_json::to_string(&again).unwrap()
        );
    }
}

#[test]
fn detect_head_convs_are_the_only_locked_groups() {
    for (path, model, analysis) in analysed() {
        for i in 0..3 {
            let name = format!("/model.24/m.{i}/Conv");
            let group = group_named(&model, &analysis, &name);
            assert_eq!(group.producer_names, [name.as_str()]);
            // 3 anchors x (5 + 80 classes).
            assert_eq!(group.channels, 255);
            let GroupStatus::Locked { reasons } = &group.status else {
                panic!("{}: {name} is not locked", path.display());
            };
            assert!(
                reasons
                    .iter()
                    .any(|r| r.reason.contains("Reshape") && r.reason.contains("Detect head")),
                "{name}: {reasons:?}"
            );
        }
        let locked = analysis.groups.iter().filter(|g| !g.is_prunable()).count();
        assert_eq!(locked, 3, "{}", path.display());
    }
}

#[test]
fn c3_residual_adds_tie_their_producers() {
    // yolov5n and yolov5s share depth 0.33: backbone C3 blocks 2, 4, 6, 8 hold 1, 2, 3, 1
    // bottlenecks with a residual Add; the neck C3 blocks (13, 17, 20, 23) have none.
    for (path, model, analysis) in analysed() {
        for (block, n) in [(2, 1), (4, 2), (6, 3), (8, 1)] {
            let cv1 = format!("/model.{block}/cv1/conv/Conv");
            let mut expected = vec![cv1.clone()];
            expected.extend((0..n).map(|m| format!("/model.{block}/m/m.{m}/cv2/conv/Conv")));
            let group = group_named(&model, &analysis, &cv1);
            assert_eq!(group.producer_names, expected, "{}", path.display());
        }
        for block in [13, 17, 20, 23] {
            let cv1 = group_named(&model, &analysis, &format!("/model.{block}/cv1/conv/Conv"));
            let cv2 = group_named(
                &model,
                &analysis,
                &format!("/model.{block}/m/m.0/cv2/conv/Conv"),
            );
            assert_ne!(cv1.id, cv2.id, "model.{block}");
            assert_eq!(cv1.producers.len(), 1);
        }
        // 60 Convs, 7 residual ties.
        assert_eq!(analysis.groups.len(), 53, "{}", path.display());
    }
}

#[test]
fn consumer_spans_tile_every_conv_input() {
    // Every Conv but the first reads only group channels: the spans of all groups' uses of it
    // (Concat offsets, SPPF's four copies) must cover its stored input-channel count exactly once.
    for (path, model, analysis) in analysed() {
        let g = graph(&model);
        for (index, node) in g.node.iter().enumerate() {
            if node.op_type() != "Conv" || node.input[0] == "images" {
                continue;
            }
            let mut spans: Vec<(usize, usize)> = analysis
                .groups
                .iter()
                .flat_map(|gr| &gr.consumers)
                .filter(|c| c.node == index)
                .map(|c| {
                    assert_eq!(c.kind, UseKind::Input);
                    (c.span.offset, c.span.len)
                })
                .collect();
            spans.sort_unstable();
            let mut at = 0;
            for (offset, len) in spans {
                assert_eq!(offset, at, "{}: {}", path.display(), node.name());
                at += len;
            }
            assert_eq!(
                at as i64,
                dims(&model, &node.input[1])[1],
                "{}",
                node.name()
            );
        }
        let sppf = group_named(&model, &analysis, "/model.9/cv1/conv/Conv");
        let offsets: Vec<usize> = sppf
            .consumers
            .iter()
            .filter(|c| c.name == "/model.9/cv2/conv/Conv")
            .map(|c| c.span.offset)
            .collect();
        let c = sppf.channels;
        assert_eq!(offsets, [0, c, 2 * c, 3 * c]);
    }
}

#[test]
fn opset12_and_opset17_simplified_group_alike() {
    let (Some(op12), Some(op17)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_op17_sim.onnx"),
    ) else {
        return;
    };
    let summary = |path: &Path| {
        let model = onnx::load(path).unwrap();
        let analysis = channel_groups(model.graph()).unwrap();
        let groups: Vec<_> = analysis
            .groups
            .iter()
            .map(|g| {
                let uses: Vec<_> = g
                    .consumers
                    .iter()
                    .map(|c| (c.name.clone(), c.span))
                    .collect();
                (g.producer_names.clone(), g.channels, g.is_prunable(), uses)
            })
            .collect();
        (groups, analysis, model)
    };
    let (a, _, _) = summary(&op12);
    let (b, analysis17, model17) = summary(&op17);
    assert_eq!(a, b);
    // The simplified export stores Resize sizes as constants [1, C, H, W]: each must be
    // recorded as an edit of the group it resizes, whose channel count is entry 1.
    let mut resize_edits = 0;
    for group in &analysis17.groups {
        for edit in &group.edits {
            let Edit::ResizeSizes { tensor: name, .. } = edit else {
                panic!("unexpected edit {edit:?}");
            };
            let stored = model17
                .graph()
                .initializer
                .iter()
                .find(|t| t.name() == name)
                .unwrap();
            assert_eq!(tensor::to_i64(stored).unwrap()[1] as usize, group.channels);
            resize_edits += 1;
        }
    }
    assert_eq!(resize_edits, 2);
}

#[test]
fn inspect_groups_prints_a_table_and_json() {
    let Some(model) = fixture("models/yolov5n_op17_sim.onnx") else {
        return;
    };
    let text = succeed(shears().args(["inspect", "--groups"]).arg(&model));
    assert!(text.contains("53 channel groups: 50 prunable"), "{text}");
    assert!(text.contains("locked: channels reshaped by"), "{text}");

    let json = succeed(shears().args(["inspect", "--groups", "--json"]).arg(&model));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let groups = doc["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 53);
    assert_eq!(groups[0]["status"], "prunable");
    assert_eq!(groups[50]["status"], "locked");
    assert!(groups[50]["reasons"][0]["reason"].is_string());
    // Without --groups the key is absent.
    let json = succeed(shears().args(["inspect", "--json"]).arg(&model));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(doc.get("groups").is_none());
}

/// Zeroes, in a copy of `model`, the slices `(axis, index)` of the named initializers.
fn zeroed(model: &ModelProto, slices: &[(String, usize, usize)]) -> ModelProto {
    let mut out = model.clone();
    let mut by_tensor: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (name, axis, index) in slices {
        by_tensor.entry(name).or_default().push((*axis, *index));
    }
    for t in &mut out.graph.as_mut().unwrap().initializer {
        let Some(slices) = by_tensor.get(t.name()) else {
            continue;
        };
        let mut values = tensor::to_f32(t).unwrap();
        for &(axis, index) in slices {
            let d: Vec<usize> = t.dims.iter().map(|&x| x as usize).collect();
            let inner: usize = d[axis + 1..].iter().product();
            let outer: usize = d[..axis].iter().product();
            for o in 0..outer {
                let base = (o * d[axis] + index) * inner;
                values[base..base + inner].fill(0.0);
            }
        }
        tensor::set_f32(t, values).unwrap();
    }
    out
}

/// The referee: onnx's checker on every model, then onnxruntime's max |difference| of each
/// model's output to the first one's, and the first output's max |value|.
fn referee(models: &[&Path]) -> (Vec<f64>, f64) {
    let python = oracle_python().expect("oracle python");
    let args: Vec<&str> = models.iter().map(|m| m.to_str().unwrap()).collect();
    let v: serde_json::Value = serde_json::from_str(&run_python(
        &python,
        include_str!("../oracles/check_and_compare.py"),
        &args,
    ))
    .unwrap();
    assert!(v["finite"].as_array().unwrap().iter().all(|f| f == true));
    let diffs = v["max_abs_diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().expect("same output shapes"))
        .collect();
    (diffs, v["max_abs"].as_f64().unwrap())
}

/// Zeroing a group's channels, checked by onnxruntime. For a random half `K` of a group's
/// channels, with `P` = its producers' weight rows and biases at `K` and `U` = its consumers'
/// input-channel weight slices at the positions of `K`:
/// - `A` (P zeroed) equals `B` (P and U zeroed): every listed use reads only channels that are
///   exactly 0 once P is (SiLU(0) = 0, pooling, resizing and adding zeros give zeros), so the
///   offsets are right and no producer tied in by an Add is missing (it would leave non-zero
///   values there).
/// - `C` (only U zeroed) equals `B`: with the group's channels at their original values and
///   only the listed uses blind to them, nothing else may see them, so the consumer list is
///   complete: a missed consumer reads the original values in `C` and zeros in `B`.
/// - `C'` (U less one use) must differ from `B`: the referee does see a missed consumer.
///
/// "Equals" is within 1e-4 of the largest output value (boxes in pixels); in practice the
/// outputs are bit-identical, since only exact zeros are added.
fn check_zeroing(path: &Path, model: &ModelProto, analysis: &ChannelAnalysis, conv: &str) {
    let group = group_named(model, analysis, conv);
    assert!(group.is_prunable(), "{conv}");
    let g = graph(model);
    let mut rng = ChaCha8Rng::seed_from_u64(group.id as u64);
    let mut chosen: Vec<usize> = (0..group.channels)
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if chosen.is_empty() {
        chosen.push(0);
    }
    let mut producers = Vec::new();
    for &p in &group.producers {
        let node = &g.node[p];
        for &k in &chosen {
            producers.push((node.input[1].clone(), 0, k));
            producers.push((node.input[2].clone(), 0, k));
        }
    }
    let uses = |skip_last: bool| {
        let n = group.consumers.len() - usize::from(skip_last);
        let mut slices = Vec::new();
        for c in &group.consumers[..n] {
            assert_eq!(c.kind, UseKind::Input);
            for &k in &chosen {
                if let Some(pos) = c.span.position(k) {
                    slices.push((g.node[c.node].input[1].clone(), 1, pos));
                }
            }
        }
        slices
    };
    let consumers = uses(false);
    let both: Vec<_> = producers.iter().chain(&consumers).cloned().collect();
    let dir = scratch();
    let write = |name: &str, m: &ModelProto| {
        let out = dir.path().join(name);
        onnx::save(m, &out, &SaveOptions::default()).unwrap();
        out
    };
    let b = write("b.onnx", &zeroed(model, &both));
    let a = write("a.onnx", &zeroed(model, &producers));
    let c = write("c.onnx", &zeroed(model, &consumers));
    let missed = write("missed.onnx", &zeroed(model, &uses(true)));
    let (diffs, max_abs) = referee(&[&b, &a, &c, &missed]);
    let tolerance = 1e-4 * max_abs;
    let what = format!(
        "{} {conv} ({} channels zeroed)",
        path.display(),
        chosen.len()
    );
    assert!(
        diffs[1] <= tolerance,
        "{what}: A vs B differ by {}",
        diffs[1]
    );
    assert!(
        diffs[2] <= tolerance,
        "{what}: C vs B differ by {}",
        diffs[2]
    );
    assert!(
        diffs[3] > tolerance,
        "{what}: dropping a use went unnoticed ({})",
        diffs[3]
    );
}

#[test]
fn zeroing_groups_agrees_with_onnxruntime() {
    // On yolov5n opset 17, one group of each kind: a residual tie of three producers, SPPF's
    // four reads, a Resize into two Concats and a long skip, a backbone skip into the neck, a
    // Detect head input. On opset 12 (Resize sizes computed from Shape at run time) and on
    // yolov5s, the Resize group and the residual tie; each referee run takes seconds.
    let cases: [(&str, &[&str]); 3] = [
        (
            "models/yolov5n_op17_sim.onnx",
            &[
                "/model.4/cv1/conv/Conv",
                "/model.9/cv1/conv/Conv",
                "/model.10/conv/Conv",
                "/model.6/cv3/conv/Conv",
                "/model.17/cv3/conv/Conv",
            ],
        ),
        (
            "models/yolov5n_op12.onnx",
            &["/model.10/conv/Conv", "/model.4/cv1/conv/Conv"],
        ),
        ("models/yolov5s_random_op12.onnx", &["/model.10/conv/Conv"]),
    ];
    for (file, convs) in cases {
        let Some(path) = fixture(file) else {
            continue;
        };
        let model = onnx::load(&path).unwrap();
        let analysis = channel_groups(model.graph()).unwrap();
        for conv in convs {
            check_zeroing(&path, &model.proto, &analysis, conv);
        }
    }
}
