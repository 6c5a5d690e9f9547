"""Dumps the trainable part of a YOLOv5 ONNX export for the Rust train-step bench.

The trainable part is the graph from the input `images` up to the three Detect-head Conv outputs
(the Convs whose outputs feed a Reshape). Everything after them (Reshape, Sigmoid, grid maths) is
decoding, which distillation on raw head outputs does not need.

Writes into OUT (default target/train-step under the repository root):
  graph.json      nodes in ONNX order (op, inputs, outputs, attributes) and the Conv parameters'
                  names, shapes and offsets into the .bin files
  teacher.bin     the teacher's Conv weights and biases, f32 little endian, in graph.json's order
  student.bin     the same for the student (same shapes required)
  input_<S>.bin   a seeded input image batch (1x3xSxS, uniform [0,1)) for the forward check
  ref_<S>_<i>.bin onnxruntime's outputs for the three head convs of the teacher on that input

Runs in the test .venv (onnx, onnxruntime, numpy): .venv/bin/python benches/train_step/export_graph.py
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

ALLOWED = {"Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize"}


def head_convs(graph):
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    heads = [n for n in graph.node
             if n.op_type == "Conv" and any(c.op_type == "Reshape" for c in consumers.get(n.output[0], []))]
    assert len(heads) == 3, f"expected 3 head convs, found {len(heads)}"
    return heads


def trainable_nodes(graph, heads):
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    need, stack = set(), [h.output[0] for h in heads]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in need:
            continue
        need.add(n.name)
        data_inputs = n.input[:1] if n.op_type == "Resize" else n.input
        for i in data_inputs:
            if i and i not in inits:
                stack.append(i)
    nodes = [n for n in graph.node if n.name in need]
    bad = {n.op_type for n in nodes} - ALLOWED
    assert not bad, f"ops outside the trainable set: {bad}"
    return nodes


def attrs(n):
    out = {}
    for a in n.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else (list(v) if isinstance(v, (list, tuple)) else v)
    return out


def conv_params(model, nodes):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    params = []
    for n in nodes:
        if n.op_type == "Conv":
            for name in n.input[1:]:
                params.append((name, inits[name].astype(np.float32)))
    return params


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", default="/work/shared/fixtures/models/yolov5n_op12.onnx")
    p.add_argument("--student", default="/work/shared/fixtures/models/yolov5n_pruned30_op12.onnx")
    p.add_argument("--out", default=os.path.join(root, "target", "train-step"))
    p.add_argument("--sizes", default="640")  # the op12 export's Resize has fixed sizes: 640 only
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)

    teacher = onnx.load(a.teacher)
    student = onnx.load(a.student)
    heads = head_convs(teacher.graph)
    nodes = trainable_nodes(teacher.graph, heads)
    for n in nodes:
        if n.op_type == "Resize":
            at = attrs(n)
            assert at.get("mode") == "nearest", at
    t_params = conv_params(teacher, nodes)
    s_inits = {i.name: numpy_helper.to_array(i) for i in student.graph.initializer}
    meta, off = [], 0
    with open(os.path.join(a.out, "teacher.bin"), "wb") as ft, open(os.path.join(a.out, "student.bin"), "wb") as fs:
        for name, w in t_params:
            sw = s_inits[name].astype(np.float32)
            assert sw.shape == w.shape, (name, sw.shape, w.shape)
            ft.write(np.ascontiguousarray(w).astype("<f4").tobytes())
            fs.write(np.ascontiguousarray(sw).astype("<f4").tobytes())
            meta.append({"name": name, "shape": list(w.shape), "offset": off})
            off += int(w.size)
    graph = {
        "input": teacher.graph.input[0].name,
        "outputs": [h.output[0] for h in heads],
        "nodes": [{"op": n.op_type, "name": n.name, "inputs": list(n.input[:1] if n.op_type == "Resize" else n.input),
                   "outputs": list(n.output), "attrs": attrs(n)} for n in nodes],
        "params": meta,
        "param_count": off,
        "teacher": os.path.abspath(a.teacher),
        "student": os.path.abspath(a.student),
    }
    with open(os.path.join(a.out, "graph.json"), "w") as f:
        json.dump(graph, f, indent=1)

    # onnxruntime reference: the teacher with the head convs as its outputs.
    import onnxruntime as ort
    m = onnx.load(a.teacher)
    del m.graph.output[:]
    for h in heads:
        m.graph.output.append(helper.make_tensor_value_info(h.output[0], onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(a.seed)
    for s in [int(x) for x in a.sizes.split(",")]:
        x = rng.random((1, 3, s, s), dtype=np.float32)
        # the fixture's input is fixed at 640; a dynamic copy serves other sizes
        mm = onnx.ModelProto()
        mm.CopyFrom(m)
        for d, v in zip(mm.graph.input[0].type.tensor_type.shape.dim, ["n", 3, "h", "w"]):
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = v
        sess = ort.InferenceSession(mm.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {graph["input"]: x})
        x.astype("<f4").tofile(os.path.join(a.out, f"input_{s}.bin"))
        for i, o in enumerate(outs):
            o.astype("<f4").tofile(os.path.join(a.out, f"ref_{s}_{i}.bin"))
        print(f"size {s}: head outputs {[list(o.shape) for o in outs]}")
    print(f"{len(nodes)} nodes, {len(meta)} conv tensors, {off} parameters -> {a.out}")


if __name__ == "__main__":
    main()
