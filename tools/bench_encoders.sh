#!/usr/bin/env bash
# ViT-B/32 encoders, clip vs PyTorch, in one go on the same weights and inputs, and the ratios
# (docs/benchmarks/model.md). Run on a quiet machine:
#   tools/bench_encoders.sh [build-dir]        (default: build)
# Environment: THREADS (default 2), CLIP_BENCH_MODEL (default /tmp/clip_bench_vitb32; written
# by tools/reference_model.py when missing), MIN_TIME (seconds per case, default 3), ROUNDS
# (alternating clip / PyTorch rounds, default 3).
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
# ROUNDS alternating rounds (clip, matmul peak, PyTorch), so that both sides see the same
# spells of load from whatever else runs on the host; the ratios are computed per round and
# summarised as the median over rounds and as best time vs best time.
rounds="${ROUNDS:-3}"
for r in $(seq "$rounds"); do
  echo "== round $r/$rounds: clip ($threads threads)"
  OMP_NUM_THREADS="$threads" CLIP_BENCH_MODEL="$model" "$build/bench/bench_model_encoders" \
    --benchmark_min_time="$min_time" --benchmark_out="$out/clip_$r.json" --benchmark_out_format=json
  echo "== round $r/$rounds: matmul peak (largest of the backends on a 2048^3 product)"
  OMP_NUM_THREADS="$threads" "$build/bench/bench_model_matmul" --benchmark_filter='/2048/2048/2048' \
    --benchmark_min_time=1 --benchmark_out="$out/peak_$r.json" --benchmark_out_format=json
  echo "== round $r/$rounds: PyTorch ($threads threads, OMP_WAIT_POLICY=PASSIVE)"
  OMP_WAIT_POLICY=PASSIVE "$py" "$here/tools/bench_torch.py" --model "$model" --threads "$threads" \
    --min-time "$min_time" | tee "$out/torch_$r.jsonl"
done
echo "== peak RSS (bench_model_encoders --rss-probe: load + 1 image + 1 text)"
OMP_NUM_THREADS="$threads" CLIP_BENCH_MODEL="$model" "$build/bench/bench_model_encoders" --rss-probe 1
echo "== ratios (throughput, clip / torch)"
"$py" - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
floors = {("image", 1): 1.5, ("image", 32): 1.3, ("text", 1): 3.0, ("text", 32): 3.0}
per_round = []  # {case: (clip ms/item, torch ms/item)}, gflops {batch: value}, peak
for r in range(1, rounds + 1):
    clip = json.load(open(f"{out}/clip_{r}.json"))
    torch = [json.loads(l) for l in open(f"{out}/torch_{r}.jsonl") if l.strip()]
    peak = max(b["GFLOP/s"] for b in json.load(open(f"{out}/peak_{r}.json"))["benchmarks"])
    ours, gflops = {}, {}
    for b in clip["benchmarks"]:
        if b.get("error_occurred"):
            print("clip benchmark failed:", b["name"], b.get("error_message")); continue
        what = "image" if "Images" in b["name"] else "text"
        batch = int(b["name"].split("/")[1])
        assert b["time_unit"] == "ms"
        ours[(what, batch)] = b["real_time"] / batch  # ms per item
        if "GFLOP/s" in b:
            gflops[batch] = (b["GFLOP/s"], b.get("effective GFLOP/s", b["GFLOP/s"]))
    cases = {}
    for t in torch:
        k = (t["what"], t["batch"])
        if k in ours:
            cases[k] = (ours[k], t["ms_per_item"])
    per_round.append((cases, gflops, peak))
print(f"{'case':<10}{'round':>6}{'clip ms/item':>14}{'torch ms/item':>15}{'speed-up':>10}")
for k in floors:
    for i, (cases, _, _) in enumerate(per_round, 1):
        if k in cases:
            c, p = cases[k]
            print(f"{k[0]+' b'+str(k[1]):<10}{i:>6}{c:>14.2f}{p:>15.2f}{p/c:>9.2f}x")
print()
print(f"{'case':<10}{'median of the rounds':>22}{'best vs best':>14}{'floor':>7}")
for k, floor in floors.items():
    rs = [cases[k] for cases, _, _ in per_round if k in cases]
    if not rs: continue
    med = statistics.median(p / c for c, p in rs)
    best = min(p for _, p in rs) / min(c for c, _ in rs)
    print(f"{k[0]+' b'+str(k[1]):<10}{med:>21.2f}x{best:>13.2f}x{floor:>6.1f}x")
for b in (1, 32):
    vals = [(g[b], peak) for _, g, peak in per_round if b in g]
    if vals:
        print(f"image b{b}: " + ", ".join(f"{g:.1f} GFLOP/s = {100 * g / pk:.0f}% of {pk:.1f} (effective {e:.1f})"
                                        for (g, e), pk in vals)
              + " (per round: the products clip's image encoder executes vs the measured 2048^3 matmul"
              " peak; effective: the full model's count, as PyTorch computes it, per second)")
PY
