#!/usr/bin/env bash
# Indexing throughput of `clip index` beside `clip embed` on the same files (one run, same
# machine), and re-indexing an unchanged 10,000-image folder. docs/BENCHMARKS.md.
#
#   bench/search_index.sh [MODEL] [N]
#     MODEL  default: /tmp/clip_bench_vitb32/openai/model.safetensors (ViT-B/32, random weights;
#            tools/reference_model.py write --config ViT-B-32 --schemes openai --out /tmp/clip_bench_vitb32)
#     N      images for the throughput comparison (default 640, CIFAR-10 test JPEGs)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-/tmp/clip_bench_vitb32/openai/model.safetensors}"
n="${2:-640}"
shared="${SHARED:-../shared/data}"
work=build/bench_search/index
rm -rf "$work" && mkdir -p "$work/photos"
per=$(( (n + 9) / 10 ))
for cls in "$shared"/cifar10_jpeg/test/*/; do
  c=$(basename "$cls"); mkdir -p "$work/photos/$c"
  files=("$cls"*.jpg)
  cp "${files[@]:0:$per}" "$work/photos/$c/"
done
count=$(find "$work/photos" -type f | wc -l)
now() { date +%s.%N; }
echo "CPU: $(build/clip info --system | sed -n 's/^cpu: *//p'); threads: $(nproc); model: $model; $count images"
t0=$(now); build/clip embed -m "$model" "$work/photos" -o "$work/embed.npy" 2>/dev/null; t1=$(now)
build/clip index -m "$model" --db "$work/index.db" "$work/photos" 2>/dev/null; t2=$(now)
python3 - "$t0" "$t1" "$t2" "$count" <<'PY'
import sys
t0, t1, t2, n = map(float, sys.argv[1:])
e, i = t1 - t0, t2 - t1
print(f"clip embed: {e:.2f} s ({n / e:.1f} images/s)   clip index: {i:.2f} s ({n / i:.1f} images/s)   index/embed throughput: {e / i:.3f}")
PY
# Re-indexing an unchanged folder of 10,000 images (the CIFAR-10 test set): only stat() and
# lookups, no file is read. The first (full) run uses the small shipped model to be quick.
big="$shared/cifar10_jpeg/test"
rm -f "$work/big.db"
t0=$(now); build/clip index -m models/cifar10-vit-tiny --db "$work/big.db" "$big" 2>/dev/null; t1=$(now)
build/clip index --db "$work/big.db" "$big" --json 2>/dev/null > "$work/again.json"; t2=$(now)
python3 - "$t0" "$t1" "$t2" "$work/again.json" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
again = json.load(open(sys.argv[4]))
print(f"10,000 images: first index {t1 - t0:.1f} s (small model); unchanged re-index {t2 - t1:.2f} s "
      f"({again['unchanged']} unchanged, {again['added']} added)")
PY
