"""What the bench scripts share: the repository's paths, and timing of whole commands (wall time
and peak resident memory of each child process, medians after warm-up runs)."""
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("SHEARS_FIXTURES", ROOT.parent / "shared" / "fixtures"))
# the release build, unless $SHEARS_BIN names another
SHEARS = Path(os.environ.get("SHEARS_BIN", ROOT / "target" / "release" / "shears"))


def run(cmd, env=None):
    """Runs cmd (in `env`, default this process's) with its output discarded; returns (seconds,
    peak RSS in bytes). Exits with the command's stderr if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{stderr.decode()[-4000:]}")
    return elapsed, usage.ru_maxrss * 1024


def measure(cmd, runs, warmup):
    """(median, min, max) wall seconds of `runs` runs after `warmup` untimed ones, and the
    largest peak RSS in bytes."""
    for _ in range(warmup):
        run(cmd)
    samples = [run(cmd) for _ in range(runs)]
    times = [t for t, _ in samples]
    return statistics.median(times), min(times), max(times), max(m for _, m in samples)
