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

import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    fixtures = os.environ.get("SHEARS_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--shears", default=os.environ.get(
        "SHEARS_BIN", os.path.join(ROOT, "target", "release", "shears")))
    parser.add_argument("--model", default=os.path.join(fixtures, "models", "yolov5n_op12.onnx"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        sys.exit("one core: nothing to compare")
    settings = [1, cores]
    coco = os.path.join(fixtures, "coco")
    with tempfile.TemporaryDirectory() as scratch:
        def command(threads):
            return [args.shears, "-q", "val", args.model,
                    "--data", os.path.join(coco, "coco128.yaml"),
                    "--data-root", os.path.join(coco, "coco128"), "--backend", "tract",
                    "--threads", str(threads), "--iou", "0.65",
                    "--json", os.path.join(scratch, f"{threads}.json")]

        for _ in range(args.warmup):
            for threads in settings:
                timing.run(command(threads))
        samples = {threads: [] for threads in settings}
        for _ in range(args.runs):
            for threads in settings:
                samples[threads].append(timing.run(command(threads))[0])
        coco_ap = {}
        for threads in settings:
            with open(os.path.join(scratch, f"{threads}.json")) as f:
                coco_ap[threads] = json.load(f)["models"][0]["coco"]["stats"][0]
    with open("/proc/loadavg") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")
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
