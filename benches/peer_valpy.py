"""The Python peer of `shears val`: the official YOLOv5 v7.0 val.py (pip yolov5==7.0.14) on an
offline machine, as in the fixture recipe (fixtures/tools/run_val.py, README "Problems met").

usage: peer_valpy.py WORKDIR ANNOTATIONS STATS_OUT [val.py options...]

val.py reads the COCO annotations from the hard-coded ../datasets/coco/annotations/
instances_val2017.json, so ANNOTATIONS is copied there below WORKDIR and val.py runs in
WORKDIR/work. Then val.py's own parse_opt + run, with two deviations from `python val.py`:
network look-ups (Hugging Face hub, pip auto-install, font download) are disabled, and
plots=False (shears draws no plots, and the plots need the font download). The 12 pycocotools
stats are written to STATS_OUT as JSON (`{"stats": [...]}`).

Needs a venv with yolov5==7.0.14, torch (CPU is enough), onnxruntime and pycocotools; see
benches/val_vs_valpy.py for how to create it.
"""
import json
import os
import shutil
import sys
from pathlib import Path

workdir, annotations, stats_out = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]).resolve()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pycocotools.cocoeval  # noqa: E402
import yolov5.models.common  # noqa: E402
import yolov5.utils.downloads  # noqa: E402
import yolov5.utils.general  # noqa: E402
import yolov5.utils.plots  # noqa: E402
import yolov5.val as val  # noqa: E402


def offline(*_args, **_kwargs):
    """Stands in for the functions that would reach the network."""
    return None


yolov5.utils.downloads.attempt_download_from_hub = offline
yolov5.models.common.attempt_download_from_hub = offline
for module in (yolov5.utils.general, yolov5.models.common, val, yolov5.utils.plots):
    module.check_requirements = offline
yolov5.utils.general.check_font = offline
yolov5.utils.plots.check_font = offline

summarize = pycocotools.cocoeval.COCOeval.summarize


def summarize_and_record(evaluator):
    summarize(evaluator)
    stats_out.write_text(json.dumps({"stats": [float(s) for s in evaluator.stats]}))


pycocotools.cocoeval.COCOeval.summarize = summarize_and_record

target = workdir / "datasets" / "coco" / "annotations" / "instances_val2017.json"
target.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(annotations, target)
(workdir / "work").mkdir(exist_ok=True)
os.chdir(workdir / "work")
sys.argv = ["val.py"] + sys.argv[4:]
val.run(**vars(val.parse_opt()), plots=False)
