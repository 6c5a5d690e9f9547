"""Times one fine-tuning step of yolov5n (teacher forward, student forward and backward, Adam
update, batch 1) of `shears finetune` against PyTorch on the CPU (benches/peer_train_step.py, the
same graph, loss family and update; so shears runs with `--feature-weight 0`, the head loss
only) in one run, both as whole commands: each runs FEW and MANY
steps, and a step costs (t(MANY) - t(FEW)) / (MANY - FEW), so that start-up (loading, building,
image decoding) cancels. Medians of --runs after --warmup, runs of the two in turns.

usage: python3 benches/finetune_step.py [--imgsz 640] [--threads 1] [--runs 3] [--warmup 1]
Needs a release build and the bench venv (benches/setup-bench-venv.sh) for torch; PyTorch runs
with OMP_WAIT_POLICY=PASSIVE (its spinning OpenMP threads otherwise swing its time by 10x on
this shared machine, docs/autodiff-choice.md).
"""
import argparse
import os
import statistics
import subprocess
import sys

from timing import FIXTURES, ROOT, SHEARS, run

TORCH = ROOT / "target" / "bench-venv" / "bin" / "python"
SCRATCH = ROOT / "target" / "bench" / "finetune-step"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--few", type=int, default=2)
    parser.add_argument("--many", type=int, default=8)
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    dense = FIXTURES / "models" / "yolov5n_op12.onnx"
    student = SCRATCH / "2of4.onnx"
    subprocess.run([SHEARS, "-q", "prune", dense, "--pattern", "2:4", "--exclude", r"^/model\.0/",
                    "--no-zstd", "-o", student], check=True, stdout=subprocess.DEVNULL)
    images = FIXTURES / "coco" / "coco_extra_train" / "images"

    def shears(steps):
        out = SCRATCH / f"out{steps}.onnx"
        return [SHEARS, "-q", "finetune", student, "--teacher", dense, "--images", images,
                "--imgsz", str(args.imgsz), "--batch", "1", "--epochs", "1", "--holdout", "0",
                "--feature-weight", "0",
                "--images-limit", str(steps), "--threads", str(args.threads), "-o", out]

    def torch(steps):
        return [TORCH, ROOT / "benches" / "peer_train_step.py", "--teacher", dense, "--student",
                student, "--imgsz", str(args.imgsz), "--batch", "1", "--threads",
                str(args.threads), "--warmup", "0", "--steps", str(steps)]

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads))
    peers = {"shears": shears, "pytorch": torch}
    times = {(p, n): [] for p in peers for n in (args.few, args.many)}
    for round_ in range(args.warmup + args.runs):
        for name, cmd in peers.items():
            for n in (args.few, args.many):
                seconds, _ = run(cmd(n), env=env)
                if round_ >= args.warmup:
                    times[(name, n)].append(seconds)
    step = {p: (statistics.median(times[(p, args.many)]) - statistics.median(times[(p, args.few)]))
            / (args.many - args.few) for p in peers}
    print(f"one step at {args.imgsz}px, batch 1, {args.threads} thread(s), medians of {args.runs}:")
    for p in peers:
        print(f"  {p:8} {step[p]:.3f} s/step")
    print(f"  shears / pytorch: {step['shears'] / step['pytorch']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
