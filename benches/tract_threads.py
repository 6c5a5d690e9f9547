"""Times the whole `shears val MODEL --data coco128.yaml --backend tract --threads T` command on one
thread and on every core, in one invocation: the two settings take turns run by run, so both see
the same changes of machine load. Reports median wall times and the speed-up, and checks that
both settings report the same COCO AP (threads must not change results).

usage: python benches/tract_threads.py [--runs N] [--warmup W] [--shears BIN] [--model ONNX]

shears: a release build (cargo build --release); --shears, else $SHEARS_BIN, else
target/release/shears. Fixtures: $SHEARS_FIXTURES, else ../shared/fixtures.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from timing import FIXTURES, SHEARS, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--shears", type=Path, default=SHEARS)
    parser.add_argument("--model", type=Path, default=FIXTURES / "models" / "yolov5n_op12.onnx")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        sys.exit("one core: nothing to compare")
    settings = [1, cores]
    coco = FIXTURES / "coco"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)

        def command(threads):
            return [args.shears, "-q", "val", args.model, "--data", coco / "coco128.yaml",
                    "--data-root", coco / "coco128", "--backend", "tract", "--threads",
                    str(threads), "--iou", "0.65", "--json", scratch / f"{threads}.json"]

        for _ in range(args.warmup):
            for threads in settings:
                run(command(threads))
        samples = {threads: [] for threads in settings}
        for _ in range(args.runs):
            for threads in settings:
                samples[threads].append(run(command(threads))[0])
        coco_ap = {}
        for threads in settings:
            report = json.loads((scratch / f"{threads}.json").read_text())
            coco_ap[threads] = report["models"][0]["coco"]["stats"][0]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    medians = {threads: statistics.median(times) for threads, times in samples.items()}
    for threads in settings:
        times = samples[threads]
        print(f"--threads {threads:<3} median {medians[threads]:7.2f} s  (min {min(times):.2f}, "
              f"max {max(times):.2f})  COCO AP {coco_ap[threads]:.5f}")
    print(f"speed-up on {cores} threads: {medians[1] / medians[cores]:.2f}x")
    if coco_ap[1] != coco_ap[cores]:
        sys.exit("the COCO AP differs between thread counts")


if __name__ == "__main__":
    main()
