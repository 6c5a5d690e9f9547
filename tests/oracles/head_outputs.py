"""Oracle for shears' trainable network: onnxruntime's outputs of the Detect head convolutions.

usage: head_outputs.py MODEL INPUT.f32 N H W OUTPUT.f32 NODE [NODE ...]

The model's outputs are replaced by the outputs of the named Conv nodes and its input's batch,
height and width made free, so that it runs on the N x 3 x H x W float32 input read from
INPUT.f32; the head outputs are written one after the other to OUTPUT.f32 and their shapes
printed as JSON.

The exports fix each Resize's output size for their own input (constant sizes, or sizes computed
from constants): each Resize is given its factor as scales instead, as the PyTorch
nn.Upsample(scale_factor=2) it was exported from has, and the recorded intermediate shapes are
dropped (onnxruntime would fold them in), and the nodes after the heads removed, so that the
model runs at any size.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

path, raw, n, h, w, out = sys.argv[1:7]
nodes = sys.argv[7:]
model = onnx.load(path)
# each Resize's input and output shapes, measured by running the export at its own size
resizes = [node for node in model.graph.node if node.op_type == "Resize"]
probe = onnx.load(path)
probe.graph.output.extend(
    onnx.helper.make_empty_tensor_value_info(t)
    for node in resizes
    for t in (node.input[0], node.output[0])
)
probed = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
native = probed.get_inputs()[0]
tensors = [t for node in resizes for t in (node.input[0], node.output[0])]
values = probed.run(tensors, {native.name: np.zeros(native.shape, np.float32)})
shapes = {t: v.shape for t, v in zip(tensors, values)}
for node in model.graph.node:
    if node.op_type == "Resize":
        before, after = shapes[node.input[0]], shapes[node.output[0]]
        scales = np.array([b / a for a, b in zip(before, after)], dtype=np.float32)
        name, roi = node.name + "/oracle_scales", node.name + "/oracle_roi"
        model.graph.initializer.append(onnx.numpy_helper.from_array(scales, name))
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), roi))
        data = node.input[0]
        del node.input[:]
        node.input.extend([data, roi, name])
by_name = {node.name: node for node in model.graph.node}
heads = [by_name[name].output[0] for name in nodes]
del model.graph.output[:]
model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in heads)
# only the nodes the heads are computed from (the Detect head's decoding is for 640)
producer = {t: node for node in model.graph.node for t in node.output}
needed, stack = set(), list(heads)
while stack:
    node = producer.get(stack.pop())
    if node is not None and id(node) not in needed:
        needed.add(id(node))
        stack.extend(node.input)
kept = [node for node in model.graph.node if id(node) in needed]
del model.graph.node[:]
model.graph.node.extend(kept)
del model.graph.value_info[:]
dims = model.graph.input[0].type.tensor_type.shape.dim
for dim, name in zip(dims, ["n", "c", "h", "w"]):
    if name != "c":
        dim.ClearField("dim_value")
        dim.dim_param = name
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
x = np.fromfile(raw, dtype=np.float32).reshape(int(n), 3, int(h), int(w))
results = session.run(heads, {session.get_inputs()[0].name: x})
np.concatenate([r.ravel() for r in results]).astype(np.float32).tofile(out)
print(json.dumps([list(r.shape) for r in results]))
