#!/usr/bin/env bash
# Channel pruning, really smaller and faster: generates yolov5s and yolov5m (`shears synth`,
# random weights, the real architectures), prunes each at --amount 0.3 and 0.5 with
# `--method channel`, and times dense and pruned side by side with `shears bench` on ONNX Runtime
# and tract. Prints params, MACs, file size and latency ratios against the dense model, and the
# latency ratio over the MAC ratio (1.0 = the whole theoretical gain is realised), by median
# latency and by fastest run (see `shears bench`: load on the machine inflates the first).
# yolov5s at 0.5 has yolov5n's widths and depth; a generated yolov5n runs in the same `shears bench`
# as its peer, which tells the cost of the surgery apart from the cost of the narrower widths.
#
# usage: benches/channel_speed.sh [RUNS] [WARMUP]     (after cargo build --release and
#        scripts/setup-venv.sh; SHEARS_BIN overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
runs=${1:-10}
warmup=${2:-2}
out=target/bench/channel
mkdir -p "$out"
for size in s m; do
  dense="$out/yolov5$size.onnx"
  [ -f "$dense" ] || "$bin" -q synth "yolov5$size" --seed 0 -o "$dense"
  for amount in 0.3 0.5; do
    "$bin" -q prune "$dense" --method channel --amount "$amount" --no-zstd \
      -o "$out/yolov5$size-ch$amount.onnx" --json "$out/yolov5$size-ch$amount.prune.json"
  done
  native=()
  if [ "$size" = s ]; then
    native=("$out/yolov5n.onnx")
    [ -f "${native[0]}" ] || "$bin" -q synth yolov5n --seed 0 -o "${native[0]}"
    "$bin" inspect "${native[0]}" --json > "$out/yolov5n.inspect.json"
  fi
  # ONNX Runtime on every core, tract on one, as the README's table was measured
  for backend in "ort" "tract --threads 1"; do
    # shellcheck disable=SC2086
    "$bin" -q bench "$dense" "$out/yolov5$size-ch0.3.onnx" "$out/yolov5$size-ch0.5.onnx" \
      "${native[@]}" --backend $backend --runs "$runs" --warmup "$warmup" \
      --json "$out/yolov5$size-${backend%% *}.bench.json" >/dev/null
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'model':<10} {'amount':>6} {'params':>7} {'MACs':>7} {'file':>7}"
      + "".join(f" {b + ' lat':>9} {b + '/MAC':>9} {'min/MAC':>8}" for b in ("ort", "tract")))
bench = {(size, b): json.load(open(f"{out}/yolov5{size}-{b}.bench.json"))["models"]
         for size in "sm" for b in ("ort", "tract")}
for size in "sm":
    for i, amount in enumerate(("0.3", "0.5"), start=1):
        prune = json.load(open(f"{out}/yolov5{size}-ch{amount}.prune.json"))
        before, after = prune["before"], prune["after"]
        macs = after["macs"] / before["macs"]
        row = (f"yolov5{size:<4} {amount:>6} {after['params'] / before['params']:>7.3f} {macs:>7.3f} "
               f"{after['file_bytes'] / before['file_bytes']:>7.3f}")
        for b in ("ort", "tract"):
            model = bench[size, b][i]
            row += (f" {model['latency_ratio']:>9.3f} {model['latency_ratio'] / macs:>9.2f}"
                    f" {model['min_ratio'] / macs:>8.2f}")
        print(row)
print("ratios are pruned / dense; lat = ratio of the median latencies, min = of the fastest runs")
native = json.load(open(f"{out}/yolov5n.inspect.json"))
pruned = json.load(open(f"{out}/yolov5s-ch0.5.prune.json"))["after"]
print(f"yolov5s at 0.5 ({pruned['params']:,} params, {pruned['macs']:,} MACs) against a generated "
      f"yolov5n ({native['params']:,} params, {native['macs']:,} MACs), pruned / native latency:")
for b in ("ort", "tract"):
    _, _, half, yolov5n = bench["s", b]
    print(f"  {b:<5} median {half['latency_ratio'] / yolov5n['latency_ratio']:.3f}, "
          f"fastest {half['min_ratio'] / yolov5n['min_ratio']:.3f}")
PY
