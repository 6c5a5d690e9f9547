//! `graph::infer_shapes` against onnx's own shape inference (`onnx.shape_inference.infer_shapes`
//! with data propagation), on the fixture models and on generated ones, with every `value_info`
//! removed first so both infer from the graph alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shears::graph::{GraphView, infer_shapes};
use shears::onnx;

use crate::common::{fixture, oracle_python, run_python, scratch, shears, succeed};

/// Prints, as JSON, every tensor whose shape onnx infers with all dimensions known.
const ONNX_SHAPES: &str = r#"
import json, sys
import onnx
from onnx import shape_inference

model = onnx.load(sys.argv[1])
del model.graph.value_info[:]
inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
shapes = {}
for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
    t = info.type.tensor_type
    if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
        shapes[info.name] = [d.dim_value for d in t.shape.dim]
print(json.dumps(shapes))
"#;

/// Compares shears' shapes with onnx's on `path`: every tensor both know has the same shape,
/// and shears knows the shape of every Conv's input, weight and output (onnx does not after the
/// opset-12 export's computed `Resize` sizes; shears folds them). Returns how many tensors were
/// compared.
fn compare(python: &Path, path: &Path) -> usize {
    let theirs: HashMap<String, Vec<i64>> =
        serde_json::from_str(&run_python(python, ONNX_SHAPES, &[path.to_str().unwrap()])).unwrap();
    let mut model = onnx::load(path).unwrap().proto;
    let graph = model.graph.as_mut().unwrap();
    graph.value_info.clear();
    let view = GraphView::new(graph);
    let ours = infer_shapes(&view);
    let mut compared = 0;
    for (name, shape) in &theirs {
        if let Some(mine) = ours.get(name) {
            assert_eq!(mine, &shape[..], "{}: tensor {name:?}", path.display());
            compared += 1;
        }
    }
    for node in graph.node.iter().filter(|n| n.op_type() == "Conv") {
        for tensor in node.input.iter().take(2).chain(&node.output) {
            assert!(
                ours.get(tensor).is_some(),
                "{}: no shape for {tensor:?} of Conv {:?}",
                path.display(),
                node.name()
            );
        }
    }
    compared
}

#[test]
fn shapes_agree_with_onnx_shape_inference() {
    let Some(python) = oracle_python() else {
        return;
    };
    let dir = scratch();
    let mut models: Vec<PathBuf> = Vec::new();
    for name in [
        "models/yolov5n_op12.onnx",
        "models/yolov5n_op17_sim.onnx",
        "models/yolov5s_random_op12.onnx",
        "models/yolov5n_pruned30_op12.onnx",
    ] {
        let Some(path) = fixture(name) else {
            return;
        };
        models.push(path);
    }
    for (variant, extra) in [
        (
            "yolov5n",
            &["--opset", "12", "--imgsz", "320", "--nc", "3"][..],
        ),
        ("yolov5s", &["--opset", "17", "--imgsz", "256"][..]),
        (
            "yolov5n",
            &["--upsample", "scales", "--imgsz", "192", "--nc", "1"][..],
        ),
    ] {
        let out = dir.path().join(format!("{variant}-{}.onnx", models.len()));
        succeed(
            shears()
                .args(["synth", variant, "-o"])
                .arg(&out)
                .args(extra),
        );
        models.push(out);
    }
    for path in &models {
        let compared = compare(&python, path);
        eprintln!("{}: {compared} tensor shapes compared", path.display());
        assert!(
            compared > 200,
            "{}: only {compared} tensors compared",
            path.display()
        );
    }
}
