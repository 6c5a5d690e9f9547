"""Times `shears cocoeval --gt ANN --dt PRED` against pycocotools and faster-coco-eval
(benches/peer_cocoeval.py: load + evaluate + accumulate + summarize, each peer its own process)
on the same files in one invocation, reports medians and ratios, and checks that the 12 stats of
all three agree (max abs difference).

usage: python benches/cocoeval_vs_python.py [--runs N] [--warmup W] [--shears BIN] [--skip-synth]

Inputs: the fixture oracles (val.py predictions of yolov5n_op12 on coco128 and coco_extra_train
with their annotation JSONs; .json.gz are gunzipped into target/bench/) and a synthetic set of
5000 images / about 36k detections generated deterministically (seed 0) into
target/bench/synth_coco/. Needs a release build (cargo build --release; the binary is taken from
--shears, else $SHEARS_BIN, else target/release/shears) and the oracle venv
(scripts/setup-venv.sh); run it with .venv/bin/python.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

from timing import FIXTURES, ROOT, SHEARS, measure

import numpy as np

SCRATCH = ROOT / "target" / "bench"
PEER = ROOT / "benches" / "peer_cocoeval.py"
PEERS = ["pycocotools", "faster-coco-eval"]
# The 80 COCO category ids (1..90 with gaps), as in instances_val2017.json.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def fixture_pairs():
    """(name, gt, dt) for the yolov5n_op12 val.py predictions of both fixture datasets."""
    pairs = []
    for ds in ["coco128", "coco_extra_train"]:
        gt = next((FIXTURES / "coco" / ds / "annotations").glob("*.json"))
        oracle = FIXTURES / "oracles" / ds
        dt = oracle / "yolov5n_onnx_op12_predictions.json"
        if not dt.exists():
            packed = dt.with_name(dt.name + ".gz")
            dt = SCRATCH / ds / dt.name
            if not dt.exists():
                dt.parent.mkdir(parents=True, exist_ok=True)
                with gzip.open(packed, "rb") as src, open(dt.with_suffix(".tmp"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                dt.with_suffix(".tmp").rename(dt)
        pairs.append((ds, gt, dt))
    return pairs


def synth_box(rng, width, height):
    """One ground-truth box [x, y, w, h] with a COCO-like size mix (about 40% small, 35% medium,
    25% large by area; thresholds 32^2 and 96^2)."""
    kind = rng.choice(3, p=[0.40, 0.35, 0.25])
    side = [rng.uniform(6, 32), rng.uniform(32, 96), rng.uniform(96, 400)][kind]
    aspect = np.exp(rng.normal(0.0, 0.5))
    w = min(side * np.sqrt(aspect), width - 1.0)
    h = min(side / np.sqrt(aspect), height - 1.0)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return [x, y, w, h]


def synthesize(out_dir, n_images=5000, seed=0):
    """Writes gt.json (COCO instances) and dt.json (COCO results) into out_dir; same files for the
    same seed. Ground truth: 1-12 boxes per image, 1% crowd; detections: 85% of the non-crowd boxes
    found (jittered, 5% with a wrong class) plus 0-4 false positives per image; val.py rounding."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, n_images + 1):
        width, height = [(640, 480), (480, 640), (640, 427), (500, 375), (612, 612)][rng.integers(5)]
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"})
        for _ in range(rng.integers(1, 13)):
            x, y, w, h = synth_box(rng, width, height)
            crowd = int(rng.random() < 0.01)
            category = int(COCO_IDS[rng.integers(len(COCO_IDS))])
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": category,
                "bbox": [round(v, 2) for v in (x, y, w, h)],
                "area": round(w * h * rng.uniform(0.5, 0.9), 2), "iscrowd": crowd,
                "segmentation": [[round(v, 2) for v in (x, y, x + w, y, x + w, y + h, x, y + h)]],
            })
            if crowd or rng.random() >= 0.85:
                continue
            jitter = rng.normal(0.0, 0.08, 4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
            if rng.random() < 0.05:
                category = int(COCO_IDS[rng.integers(len(COCO_IDS))])
            score = rng.beta(5, 2)
            dets.append({"image_id": image_id, "category_id": category,
                         "bbox": [round(v, 3) for v in box], "score": round(score, 5)})
        for _ in range(rng.integers(0, 5)):
            box = synth_box(rng, width, height)
            dets.append({"image_id": image_id, "category_id": int(COCO_IDS[rng.integers(len(COCO_IDS))]),
                         "bbox": [round(v, 3) for v in box], "score": round(rng.beta(1.2, 4), 5)})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "none"} for c in COCO_IDS]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in [("gt.json", {"images": images, "annotations": anns, "categories": categories}),
                      ("dt.json", dets)]:
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.rename(out_dir / name)
    return len(anns), len(dets)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--shears", type=Path,
                        default=SHEARS)
    parser.add_argument("--skip-synth", action="store_true", help="only the fixture oracles")
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    pairs = fixture_pairs()
    if not args.skip_synth:
        synth = SCRATCH / "synth_coco"
        if not (synth / "dt.json").exists():
            n_gt, n_dt = synthesize(synth)
            print(f"synthetic set: 5000 images, {n_gt} ground-truth boxes, {n_dt} detections -> {synth}")
        pairs.append(("synthetic 5000 img", synth / "gt.json", synth / "dt.json"))

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = f"{'set':<20} {'dets':>6} {'shears s':>22}"
    for peer in PEERS:
        header += f" {peer + ' s':>22} {'ratio':>7}"
    print(header + f" {'max |d stats|':>14}")
    for name, gt, dt in pairs:
        n_dets = len(json.loads(dt.read_text()))
        outs = {side: SCRATCH / f"stats_{side}.json" for side in ["shears"] + PEERS}
        timings = {"shears": measure([args.shears, "cocoeval", "--gt", gt, "--dt", dt, "--json", outs["shears"]],
                                     args.runs, args.warmup)}
        for peer in PEERS:
            timings[peer] = measure([sys.executable, PEER, peer, gt, dt, outs[peer]], args.runs, args.warmup)
        stats = {side: np.array(json.loads(path.read_text())["stats"]) for side, path in outs.items()}
        diff = max(float(np.max(np.abs(stats["shears"] - stats[peer]))) for peer in PEERS)
        diff = max(diff, float(np.max(np.abs(stats[PEERS[0]] - stats[PEERS[1]]))))
        fmt = lambda m: f"{m[0]:.3f} [{m[1]:.3f}-{m[2]:.3f}]"
        line = f"{name:<20} {n_dets:>6} {fmt(timings['shears']):>22}"
        for peer in PEERS:
            line += f" {fmt(timings[peer]):>22} {timings[peer][0] / timings['shears'][0]:>6.1f}x"
        print(line + f" {diff:>14.2e}", flush=True)
        if diff > 1e-9:
            sys.exit(f"{name}: the 12 stats disagree by {diff:.3e}: {stats}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("times: median [min-max] of", args.runs, "runs after", args.warmup,
          "warm-up, whole process (load + evaluate + accumulate + summarize); ratio = peer / shears")


if __name__ == "__main__":
    main()
