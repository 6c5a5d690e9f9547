"""Oracle for shears' tests: onnx's full checker on every model, then onnxruntime runs each on the
same seeded input (uniform [0, 1), the model's input shape with batch 1 and 640 for its symbolic
dimensions, rounded to fp16 for a FLOAT16 input) and reports, as JSON, each
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
    # a symbolic dimension (a dynamic export) runs as batch 1 at 640
    shape = [d if isinstance(d, int) else (1 if axis == 0 else 640) for axis, d in enumerate(inp.shape)]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    if inp.type == "tensor(float16)":
        x = x.astype(np.float16)
    outputs.append(session.run(None, {inp.name: x})[0].astype(np.float32))
first = outputs[0]
print(json.dumps({
    "shapes": [list(o.shape) for o in outputs],
    "finite": [bool(np.isfinite(o).all()) for o in outputs],
    "max_abs_diff": [float(np.abs(o - first).max()) if o.shape == first.shape else None for o in outputs],
    "max_abs": float(np.abs(first).max()),
}))
