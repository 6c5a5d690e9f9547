#!/usr/bin/env bash
# How much each channel group of the real yolov5n matters: prunes every prunable group on its own
# by AMOUNT (default 0.125, an eighth; widths still rounded to multiples of 8) with `prune --method
# channel --include`, validates those that lost channels in one `shears val` run on coco128 (ONNX
# Runtime, --iou 0.65 as the pruning guide) and prints each group's COCO AP, least harmful first.
#
# usage: benches/channel_sensitivity.sh [AMOUNT]   (after cargo build --release and
#        scripts/setup-venv.sh; about 20 s of validation per group on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHEARS_BIN:-target/release/shears}
fixtures=${SHEARS_FIXTURES:-../shared/fixtures}
amount=${1:-0.125}
out=target/bench/sensitivity
mkdir -p "$out"
dense="$fixtures/models/yolov5n_op12.onnx"
"$bin" inspect "$dense" --groups --json > "$out/groups.json"
models=("$dense")
# one line per prunable group: its id and a regular expression for its first producer's name
while read -r id pattern; do
  "$bin" -q prune "$dense" --method channel --amount "$amount" --include "$pattern" --no-zstd \
    -o "$out/group-$id.onnx" --json "$out/group-$id.prune.json" > /dev/null
  # a group too narrow to lose a multiple of 8 channels keeps its width: nothing to validate
  if ! grep -q "removed 0 channels" "$out/group-$id.prune.json"; then
    models+=("$out/group-$id.onnx")
  fi
done < <(.venv/bin/python - "$out/groups.json" <<'PY'
import json, re, sys
for group in json.load(open(sys.argv[1]))["groups"]:
    if group["status"] == "prunable":
        print(group["id"], f"^{re.escape(group['producer_names'][0])}$")
PY
)
"$bin" -q val "${models[@]}" --data "$fixtures/coco/coco128.yaml" --data-root "$fixtures/coco/coco128" \
  --backend ort --iou 0.65 --json "$out/report.json" > /dev/null
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
groups = {g["id"]: g for g in json.load(open(f"{out}/groups.json"))["groups"]}
dense, *pruned = json.load(open(f"{out}/report.json"))["models"]
base = dense["coco"]["stats"][0]
rows = []
for model in pruned:
    gid = int(model["model"].removeprefix("group-"))
    summary = json.load(open(f"{out}/{model['model']}.prune.json"))["passes"][0]["summary"]
    widths = re.search(rf"#{gid} (\d+->\d+)", summary).group(1)
    ap = model["coco"]["stats"][0] if model["coco"] else 0.0
    rows.append((ap, gid, widths, groups[gid]["producer_names"]))
print(f"dense COCO AP {base:.4f}; each group pruned alone ({len(rows)} groups lose channels):")
print(f"{'COCO AP':>8} {'drop':>7} {'group':>5} {'channels':>10}  producers")
for ap, gid, widths, producers in sorted(rows, reverse=True):
    print(f"{ap:>8.4f} {ap - base:>+7.4f} {gid:>5} {widths:>10}  {' '.join(producers)}")
PY
