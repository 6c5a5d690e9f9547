"""Times the whole `shears val MODEL --data coco128.yaml --backend ort --iou 0.65` command against
the official YOLOv5 v7.0 val.py (benches/peer_valpy.py: `--iou-thres 0.65 --save-json --device
cpu`, onnxruntime inference, pycocotools at the end) on the same ONNX model and dataset in one
invocation. Reports median wall times, the ratio, and both sides' mAP50-95 (val.py-internal and
pycocotools) as a check that they did the same work.

usage: python benches/val_vs_valpy.py [--runs N] [--warmup W] [--shears BIN] [--valpy-python PY]
                                      [--model ONNX] [--dataset coco128|coco_extra_train]

shears: a release build (cargo build --release); --shears, else $SHEARS_BIN, else
target/release/shears. `--backend ort` loads libonnxruntime from .venv (the oracle venv) in the
repository root or from $ORT_DYLIB_PATH.

val.py needs its own venv (torch is large; the CPU wheel is enough), by default target/bench-venv
(--valpy-python, else $VALPY_PYTHON):
    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install torch==2.5.1 torchvision==0.20.1 \
        --index-url https://download.pytorch.org/whl/cpu
    target/bench-venv/bin/pip install yolov5==7.0.14 'numpy<2.4' 'setuptools<70' \
        pycocotools==2.0.11 onnxruntime==1.31.1
(numpy 2.4 removed np.trapz, which val.py calls; yolov5 7.0.14 imports pkg_resources, gone from
setuptools >= 70.) val.py runs in target/bench/valpy/ on a copy of the dataset's image list with
symlinks to the fixture images and labels, so that its label cache is written there and not into
the fixtures; the warm-up run creates that cache, the timed runs use it.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from timing import FIXTURES, ROOT, SHEARS, measure

SCRATCH = ROOT / "target" / "bench" / "valpy"


def valpy_dataset(dataset):
    """A scratch dataset root for val.py (its own image list, symlinked images and labels) and
    the data YAML pointing at it (absolute path, as yolov5 needs)."""
    source = FIXTURES / "coco" / dataset
    root = SCRATCH / dataset
    (root / "coco").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "coco" / "val2017.txt", root / "coco" / "val2017.txt")
    for sub in ["images", "labels"]:
        if not (root / sub).exists():
            (root / sub).symlink_to(source / sub)
    yaml = SCRATCH / f"{dataset}.yaml"
    lines = (FIXTURES / "coco" / f"{dataset}.yaml").read_text().splitlines()
    yaml.write_text("\n".join(f"path: {root}" if line.startswith("path:") else line for line in lines) + "\n")
    return yaml


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--shears", type=Path,
                        default=SHEARS)
    parser.add_argument("--valpy-python", type=Path,
                        default=Path(os.environ.get("VALPY_PYTHON", ROOT / "target" / "bench-venv" / "bin" / "python")))
    parser.add_argument("--model", type=Path, default=FIXTURES / "models" / "yolov5n_op12.onnx")
    parser.add_argument("--dataset", default="coco128", choices=["coco128", "coco_extra_train"])
    args = parser.parse_args()
    model = args.model.resolve()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    source = FIXTURES / "coco" / args.dataset
    annotations = next((source / "annotations").glob("*.json"))
    ours_json, peer_json = SCRATCH / "shears_report.json", SCRATCH / "valpy_stats.json"
    ours_cmd = [args.shears, "-q", "val", model, "--data", FIXTURES / "coco" / f"{args.dataset}.yaml",
                "--data-root", source, "--gt", annotations, "--backend", "ort", "--iou", "0.65",
                "--json", ours_json]
    peer_cmd = [args.valpy_python, ROOT / "benches" / "peer_valpy.py", SCRATCH, annotations, peer_json,
                "--weights", model, "--data", valpy_dataset(args.dataset), "--iou-thres", "0.65",
                "--save-json", "--device", "cpu", "--project", SCRATCH / "runs", "--exist-ok"]

    load_before = os.getloadavg()
    ours = measure(ours_cmd, args.runs, args.warmup)
    peer = measure(peer_cmd, args.runs, args.warmup)
    load_after = os.getloadavg()

    report = json.loads(ours_json.read_text())["models"][0]
    peer_stats = json.loads(peer_json.read_text())["stats"]
    fmt = lambda m: f"{m[0]:.2f} [{m[1]:.2f}-{m[2]:.2f}]"
    print(f"{model.name} on {args.dataset} ({report['images']} images), NMS IoU 0.65, conf 0.001, CPU")
    print(f"{'side':<28} {'wall s':>22} {'pycocotools mAP50-95':>21}")
    print(f"{'shears val --backend ort':<28} {fmt(ours):>22} {report['coco']['stats'][0]:>21.5f}")
    print(f"{'val.py (yolov5 7.0.14)':<28} {fmt(peer):>22} {peer_stats[0]:>21.5f}")
    print(f"speed-up (val.py / shears): {peer[0] / ours[0]:.2f}x")
    print(f"load average 1/5/15 min: before {' '.join(f'{x:.2f}' for x in load_before)},"
          f" after {' '.join(f'{x:.2f}' for x in load_after)}")
    print("times: median [min-max] of", args.runs, "runs after", args.warmup, "warm-up, whole command")


if __name__ == "__main__":
    main()
