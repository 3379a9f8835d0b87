#!/usr/bin/env bash
# The Python module's encode_image beside the C++ API's encode_image_files on the same 512
# files, alternating twice in one run (docs/BENCHMARKS.md). CLIP_BENCH_MODEL as bench_api_encode.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${CLIP_BENCH_MODEL:-/tmp/clip_bench_vitb32/openai/model.safetensors}"
for run in 1 2; do
  build/bench/bench_api_encode --benchmark_format=console 2>/dev/null | sed -n 's/.*items_per_second=\(.*\)/C++ API: \1 images\/s/p'
  PYTHONPATH=build/python /usr/bin/python3 - "$model" <<'PY'
import os, sys, time
import clipcpp
d = os.path.join(os.environ.get("SHARED", "../shared/data"), "cifar10_jpeg/test/ship")
paths = sorted(os.path.join(d, f) for f in os.listdir(d))[:512]
m = clipcpp.load(sys.argv[1])
m.encode_image(paths, batch_size=64)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 5:
    m.encode_image(paths, batch_size=64)
    n += len(paths)
print("Python:  %.1f images/s" % (n / (time.perf_counter() - t0)))
PY
done
