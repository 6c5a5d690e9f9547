"""Derives the export forms users ship from an fp32 YOLOv5 export, without PyTorch.

usage: export_form.py MODEL OUT FORM

FORM is one of:
  half       what yolov5's `export.py --half` writes: the image input, the outputs, every float
             initializer and every float Constant in the image's data flow are FLOAT16. The
             Resize size arithmetic (Floor of float constants, roi, scales) stays FLOAT, as the
             exporter leaves Python floats.
  half-cast  what fp16 conversion tools with keep_io_types write: FLOAT input and outputs, each
             float initializer stored as FLOAT16 and read through a `Cast(to=FLOAT)` node.
  dynamic    what `export.py --dynamic` declares: batch, height and width of the input and the
             output's batch and box count are symbolic (dim_param).

The result passes onnx's checker, and for the fp16 forms onnxruntime loads it.
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

path, out, form = sys.argv[1:4]
model = onnx.load(path)
graph = model.graph


def fp16(tensor):
    half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)
    tensor.CopyFrom(half)


def size_arithmetic():
    """Names of the float tensors that compute Resize sizes, roi and scales."""
    names = set()
    for node in graph.node:
        if node.op_type == "Floor":
            names.update(node.input)
        if node.op_type == "Resize":
            names.update(node.input[1:3])
    return names


if form == "half":
    keep = size_arithmetic()
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in keep:
            fp16(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in keep:
            value = node.attribute[0].t
            if value.data_type == TensorProto.FLOAT:
                fp16(value)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
elif form == "half-cast":
    casts = []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            continue
        name = tensor.name
        fp16(tensor)
        tensor.name = name + "_fp16"
        casts.append(
            helper.make_node("Cast", [tensor.name], [name], name=name + "_cast", to=TensorProto.FLOAT)
        )
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
elif form == "dynamic":
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip([dims[0], dims[2], dims[3]], ["batch", "height", "width"]):
        dim.dim_param = name
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        dims[1].dim_param = "anchors"
    del graph.value_info[:]
else:
    sys.exit(f"unknown form {form!r}: half, half-cast or dynamic")

onnx.checker.check_model(model, full_check=True)
onnx.save(model, out)
if form.startswith("half"):
    import onnxruntime as ort

    ort.InferenceSession(out, providers=["CPUExecutionProvider"])
