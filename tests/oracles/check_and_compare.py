"""Oracle for shears' tests: onnx's full checker on every model, then onnxruntime runs each on the
same seeded input (uniform [0, 1), the model's static input shape) and reports, as JSON, each
output's shape and whether it is finite, and each model's max |difference| to the first model.

usage: check_and_compare.py MODEL [MODEL...]
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

models = sys.argv[1:]
outputs = []
for path in models:
    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random(inp.shape, dtype=np.float32)
    outputs.append(session.run(None, {inp.name: x})[0])
first = outputs[0]
print(json.dumps({
    "shapes": [list(o.shape) for o in outputs],
    "finite": [bool(np.isfinite(o).all()) for o in outputs],
    "max_abs_diff": [float(np.abs(o - first).max()) if o.shape == first.shape else None for o in outputs],
    "max_abs": float(np.abs(first).max()),
}))
