"""The Python peer of `shears prune --scope layer`: what a user would write with onnx and numpy.

usage: peer_prune.py MODEL OUT AMOUNT

onnx.load, then for every Conv weight initializer zero the round(AMOUNT x n) entries of smallest
|w| (torch's l1_unstructured count), then onnx.save.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

model_path, out_path, amount = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = onnx.load(model_path)
initializers = {t.name: t for t in model.graph.initializer}
for node in model.graph.node:
    if node.op_type != "Conv" or node.input[1] not in initializers:
        continue
    tensor = initializers[node.input[1]]
    weights = numpy_helper.to_array(tensor).copy()
    flat = weights.reshape(-1)
    k = round(amount * flat.size)
    if k > 0:
        flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0.0
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
onnx.save(model, out_path)
