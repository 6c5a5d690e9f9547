"""The Python peers of `shears cocoeval`: what a user would write with pycocotools or faster-coco-eval.

usage: peer_cocoeval.py pycocotools|faster-coco-eval GT DT STATS_OUT

Loads the annotation JSON and the results JSON, runs bbox evaluate + accumulate + summarize, and
writes the 12 stats as JSON (`{"stats": [...]}`) to STATS_OUT. The summary goes to stdout.
"""
import json
import sys

lib, gt_path, dt_path, out_path = sys.argv[1:5]
if lib == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
elif lib == "faster-coco-eval":
    from faster_coco_eval import COCO
    from faster_coco_eval import COCOeval_faster as COCOeval
else:
    sys.exit(f"unknown peer {lib!r}")

gt = COCO(gt_path)
dt = gt.loadRes(dt_path)
evaluator = COCOeval(gt, dt, "bbox")
evaluator.evaluate()
evaluator.accumulate()
evaluator.summarize()
with open(out_path, "w") as f:
    json.dump({"stats": [float(s) for s in evaluator.stats]}, f)
