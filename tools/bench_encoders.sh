#!/usr/bin/env bash
# ViT-B/32 encoders, clip vs PyTorch, in one go on the same weights and inputs, and the ratios
# (docs/benchmarks/model.md). Run on a quiet machine:
#   tools/bench_encoders.sh [build-dir]        (default: build)
# Environment: THREADS (default 2), CLIP_BENCH_MODEL (default /tmp/clip_bench_vitb32; written
# by tools/reference_model.py when missing), MIN_TIME (seconds per case, default 3).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
threads="${THREADS:-2}"
model="${CLIP_BENCH_MODEL:-/tmp/clip_bench_vitb32}"
min_time="${MIN_TIME:-3}"
py=/usr/bin/python3
lengths="12,9,14,7,20,11,10,16,8,13,15,9,12,18,7,11,10,14,19,8,12,9,16,13,10,11,17,8,15,12,9,20"
if [ ! -f "$model/golden/text_features.npy" ]; then
  "$py" "$here/tools/reference_model.py" write --config ViT-B-32 --schemes openai --goldens \
    --image-batch 32 --text-lengths "$lengths" --out "$model"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== clip ($threads threads)"
OMP_NUM_THREADS="$threads" CLIP_BENCH_MODEL="$model" "$build/bench/bench_model_encoders" \
  --benchmark_min_time="$min_time" --benchmark_out="$out/clip.json" --benchmark_out_format=json
echo "== matmul peak (largest of the backends on a 2048^3 product)"
OMP_NUM_THREADS="$threads" "$build/bench/bench_model_matmul" --benchmark_filter='/2048/2048/2048' \
  --benchmark_min_time=1 --benchmark_out="$out/peak.json" --benchmark_out_format=json
echo "== PyTorch ($threads threads, OMP_WAIT_POLICY=PASSIVE)"
OMP_WAIT_POLICY=PASSIVE "$py" "$here/tools/bench_torch.py" --model "$model" --threads "$threads" \
  --min-time "$min_time" | tee "$out/torch.jsonl"
echo "== peak RSS (bench_model_encoders --rss-probe: load + 1 image + 1 text)"
OMP_NUM_THREADS="$threads" CLIP_BENCH_MODEL="$model" "$build/bench/bench_model_encoders" --rss-probe 1
echo "== ratios (throughput, clip / torch)"
"$py" - "$out/clip.json" "$out/torch.jsonl" "$out/peak.json" <<'PY'
import json, sys
clip = json.load(open(sys.argv[1]))
torch = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
peak = max(b["GFLOP/s"] for b in json.load(open(sys.argv[3]))["benchmarks"])  # counters are in GFLOP/s
ours = {}
for b in clip["benchmarks"]:
    if b.get("error_occurred"):
        print("clip benchmark failed:", b["name"], b.get("error_message")); continue
    what = "image" if "Images" in b["name"] else "text"
    batch = int(b["name"].split("/")[1])
    assert b["time_unit"] == "ms"
    ours[(what, batch)] = b["real_time"] / 1e3 / batch  # s per item
    if "GFLOP/s" in b:
        ours[("gflops", batch)] = b["GFLOP/s"]
floors = {("image", 1): 1.5, ("image", 32): 1.3, ("text", 1): 3.0, ("text", 32): 3.0}
print(f"{'case':<12}{'clip ms/item':>14}{'torch ms/item':>15}{'speed-up':>10}{'floor':>7}")
for t in torch:
    k = (t["what"], t["batch"])
    if k not in ours: continue
    c, p = ours[k] * 1e3, t["ms_per_item"]
    print(f"{t['what']+' b'+str(t['batch']):<12}{c:>14.2f}{p:>15.2f}{p/c:>9.2f}x{floors[k]:>6.1f}x")
for b in (1, 32):
    if ("gflops", b) in ours:
        g = ours[("gflops", b)]
        print(f"image b{b}: {g:.1f} GFLOP/s = {100 * g / peak:.0f}% of the measured matmul peak ({peak:.1f} GFLOP/s)")
PY
