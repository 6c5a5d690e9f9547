"""Oracle for shears' channel-pruning tests: onnx's full checker on every model, then onnxruntime
runs each pair (REFERENCE, CANDIDATE) on two seeded inputs (uniform [0, 1), the reference's static
input shape) and reports, as JSON per pair, the output shapes of both, the max |difference| over
every output and the max |output| of the reference.

usage: compare_pairs.py REFERENCE CANDIDATE [REFERENCE CANDIDATE ...]
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def run(path, inputs):
    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x}) for x in inputs]


args = sys.argv[1:]
report = []
for ref, cand in zip(args[0::2], args[1::2]):
    shape = ort.InferenceSession(ref, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    inputs = [np.random.default_rng(seed).random(shape, dtype=np.float32) for seed in (0, 1)]
    a, b = run(ref, inputs), run(cand, inputs)
    diff, top = 0.0, 0.0
    for outs_a, outs_b in zip(a, b):
        for x, y in zip(outs_a, outs_b):
            top = max(top, float(np.abs(x).max()))
            if x.shape == y.shape:
                d = float(np.abs(x - y).max())
                diff = max(diff, d if np.isfinite(d) else float("inf"))
            else:
                diff = float("inf")
    report.append({
        "reference_shapes": [list(o.shape) for o in a[0]],
        "candidate_shapes": [list(o.shape) for o in b[0]],
        "max_abs_diff": diff,
        "max_abs": top,
    })
print(json.dumps(report))
