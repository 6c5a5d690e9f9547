"""Times `shears prune` (load + per-layer magnitude pruning at 0.3 + write) against the Python
peer (benches/peer_prune.py) on the same models in one invocation, and reports medians, the
speed ratio and each side's peak resident memory (ru_maxrss of the child process).

usage: python benches/prune_vs_python.py [--runs N] [--warmup W] [--large]

Needs a release build (cargo build --release; $SHEARS_BIN overrides target/release/shears) and the oracle venv (scripts/setup-venv.sh); run
it with .venv/bin/python. --large also generates a yolov5x-sized model with `shears synth`
(86.7M parameters, about 350 MB) into target/bench/.
"""
import argparse
import os
import subprocess
import sys

from timing import FIXTURES, ROOT, SHEARS, measure

SCRATCH = ROOT / "target" / "bench"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--large", action="store_true")
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    models = [FIXTURES / "models" / "yolov5n_op12.onnx"]
    if args.large:
        large = SCRATCH / "yolov5x_synth.onnx"
        if not large.exists():
            subprocess.run([SHEARS, "synth", "yolov5x", "--seed", "0", "-o", large], check=True)
        models.append(large)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'model':<24} {'MB':>7} {'shears s':>20} {'python s':>20} {'speed-up':>9} {'shears peak':>12} {'python peak':>12}")
    for model in models:
        size = model.stat().st_size
        ours = measure([SHEARS, "-q", "prune", model, "-o", SCRATCH / "shears_out.onnx", "--amount", "0.3", "--no-zstd"], args.runs, args.warmup)
        peer = measure([sys.executable, ROOT / "benches" / "peer_prune.py", model, SCRATCH / "python_out.onnx", "0.3"], args.runs, args.warmup)
        fmt = lambda m: f"{m[0]:.3f} [{m[1]:.3f}-{m[2]:.3f}]"
        print(
            f"{model.name:<24} {size / 1e6:>7.1f} {fmt(ours):>20} {fmt(peer):>20} {peer[0] / ours[0]:>8.1f}x "
            f"{ours[3] / size:>11.2f}x {peer[3] / size:>11.2f}x"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("times: median [min-max] of", args.runs, "runs after", args.warmup, "warm-up; peak = max RSS / model file size")


if __name__ == "__main__":
    main()
