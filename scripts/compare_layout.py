"""Compares two ONNX models in everything but their weight values (initializers named `model.*`),
producer fields, doc string and onnxsim's own metadata; prints the first differences and exits 1
when there are any.

usage: python scripts/compare_layout.py OURS.onnx THEIRS.onnx
"""
import sys

import onnx


def normalized(path):
    model = onnx.load(path)
    model.producer_name = model.producer_version = model.doc_string = ""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("onnxsim")]
    del model.metadata_props[:]
    for key, value in kept:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    for tensor in model.graph.initializer:
        if tensor.name.startswith("model."):
            tensor.ClearField("raw_data")
    return model


def main():
    ours, theirs = normalized(sys.argv[1]), normalized(sys.argv[2])
    a, b = ours.graph, theirs.graph
    differences = []
    for field in ("node", "initializer", "value_info", "input", "output"):
        xs, ys = getattr(a, field), getattr(b, field)
        if len(xs) != len(ys):
            differences.append(f"{field} count {len(xs)} != {len(ys)}")
        for i, (x, y) in enumerate(zip(xs, ys)):
            if x != y:
                differences.append(f"{field} #{i} {x.name!r} != {y.name!r}")
                break
    if ours.metadata_props != theirs.metadata_props:
        differences.append("metadata differs")
    if not differences and ours != theirs:
        differences.append("other model fields differ")
    for line in differences:
        print(f"{sys.argv[1]}: {line}")
    if differences:
        sys.exit(1)
    print(f"{sys.argv[1]}: {len(a.node)} nodes, {len(a.initializer)} initializers: same layout")


if __name__ == "__main__":
    main()
