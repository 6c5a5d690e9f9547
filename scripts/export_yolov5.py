"""Exports a YOLOv5 model to ONNX with the official exporter of yolov5 7.0.14, as
`export.py --include onnx` does (Detect in export mode, batch 1, fixed square input), at a chosen
opset, simplified by onnxsim or not.

usage: python scripts/export_yolov5.py SOURCE OPSET SIMPLIFY(0|1) OUT.onnx [IMGSZ [sizes|scales]]

SOURCE is a checkpoint (WEIGHTS.pt) or the name of a model yaml of the yolov5 package
(`yolov5n.yaml`, `yolov5n6.yaml`, ...; models/ then models/hub/). A yaml model gets distinct
seeded random weights and BatchNorm statistics (so that the exporter merges no two equal
initializers) and COCO's class names; `sizes` gives its Resize nodes computed output sizes, as the
v7.0 release checkpoints pickle `recompute_scale_factor=True`, `scales` (the default) constant
scales. IMGSZ defaults to 640.

Needs torch, yolov5==7.0.14 and, to simplify, onnxsim: the val.py venv of
benches/val_vs_valpy.py plus `pip install onnxsim==0.8.1`.
"""
import os
import sys
from pathlib import Path

import torch
import yaml
import yolov5
import yolov5.export as export
from yolov5.models.yolo import Detect, Model


def from_yaml(name, computed_sizes):
    """The model of a yaml of the yolov5 package with random weights, fused."""
    models = Path(yolov5.__file__).parent / "models"
    path = models / name if (models / name).exists() else models / "hub" / name
    torch.manual_seed(0)
    model = Model(str(path)).float()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn_like(module.running_mean) * 0.1)
                module.running_var.copy_(torch.rand_like(module.running_var) + 0.5)
            if isinstance(module, torch.nn.Upsample) and computed_sizes:
                module.recompute_scale_factor = True
    coco = yaml.safe_load(open(models.parent / "data" / "coco.yaml"))["names"]
    model.names = dict(enumerate(coco.values()))
    return model.fuse()


def main():
    source, opset, simplify, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    imgsz = int(sys.argv[5]) if len(sys.argv) > 5 else 640
    computed_sizes = len(sys.argv) > 6 and sys.argv[6] == "sizes"
    # the checkpoint pickles `models.yolo`, which lives inside the yolov5 package
    sys.path.insert(0, os.path.dirname(yolov5.__file__))
    if source.endswith(".yaml"):
        model = from_yaml(source, computed_sizes).eval()
    else:
        model = torch.load(source, map_location="cpu", weights_only=False)["model"].float().fuse().eval()
    for module in model.modules():
        if isinstance(module, Detect):
            module.inplace, module.dynamic, module.export = False, False, True
    image = torch.zeros(1, 3, imgsz, imgsz)
    for _ in range(2):  # as export.py: dry runs build the Detect grids
        model(image)
    export.check_requirements = lambda *args, **kwargs: None  # offline: never pip install
    if tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 9):
        # torch 2.9 made the dynamo exporter the default; export.py of 7.0.14 means TorchScript's
        torchscript_export = torch.onnx.export
        torch.onnx.export = lambda *args, **kwargs: torchscript_export(*args, dynamo=False, **kwargs)
    export.export_onnx(model, image, Path(out), opset, False, simplify)


if __name__ == "__main__":
    main()
