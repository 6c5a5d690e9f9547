"""Exports a YOLOv5 checkpoint to ONNX with the official exporter of yolov5 7.0.14, as
`export.py --include onnx` does (Detect in export mode, batch 1, fixed 640 input), at a chosen
opset, simplified by onnxsim or not.

usage: python scripts/export_yolov5.py WEIGHTS.pt OPSET SIMPLIFY(0|1) OUT.onnx

Needs torch, yolov5==7.0.14 and, to simplify, onnxsim: the val.py venv of
benches/val_vs_valpy.py plus `pip install onnxsim==0.8.1`.
"""
import os
import sys
from pathlib import Path

import torch
import yolov5
import yolov5.export as export
from yolov5.models.yolo import Detect


def main():
    weights, opset, simplify, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    # the checkpoint pickles `models.yolo`, which lives inside the yolov5 package
    sys.path.insert(0, os.path.dirname(yolov5.__file__))
    model = torch.load(weights, map_location="cpu", weights_only=False)["model"].float().fuse().eval()
    for module in model.modules():
        if isinstance(module, Detect):
            module.inplace, module.dynamic, module.export = False, False, True
    image = torch.zeros(1, 3, 640, 640)
    for _ in range(2):  # as export.py: dry runs build the Detect grids
        model(image)
    export.check_requirements = lambda *args, **kwargs: None  # offline: never pip install
    export.export_onnx(model, image, Path(out), opset, False, simplify)


if __name__ == "__main__":
    main()
