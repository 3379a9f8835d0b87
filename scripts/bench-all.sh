#!/usr/bin/env bash
# Runs every benchmark of docs/BENCHMARKS.md in one go, each beside its reference (PyTorch,
# Pillow, the Python tokenizer, scikit-learn), and leaves the outputs in build/bench-results/.
# Run it on a quiet machine: every figure is a ratio measured within the same run.
#   scripts/bench-all.sh [tokenizer|images|vit|resnet|probe|train ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
out=build/bench-results
mkdir -p "$out"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target clip bench_text_tokenizer bench_vision_preprocess bench_model_encoders \
  bench_model_matmul bench_model_resnet bench_train_step
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(tokenizer images vit resnet probe train)
for w in "${what[@]}"; do
  echo "===== $w ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$out/$w.txt"
  case "$w" in
    tokenizer)
      taskset -c 1 build/bench/bench_text_tokenizer --benchmark_min_time=2 2>&1 | tee -a "$out/$w.txt"
      taskset -c 1 "$py" tools/tokenizer_reference.py time \
        ../shared/data/flickr8k_subset1000/flickr8k_all_captions.txt 2>&1 | tee -a "$out/$w.txt" ;;
    images)
      [ -d build/large_jpeg ] || "$py" tools/image_reference.py large build/large_jpeg
      CLIP_BENCH_LARGE_DIR=build/large_jpeg build/bench/bench_vision_preprocess 2>&1 | tee -a "$out/$w.txt"
      "$py" tools/image_reference.py bench --threads 1 2 --reps 5 --large build/large_jpeg 2>&1 | tee -a "$out/$w.txt" ;;
    vit)
      MIN_TIME=${MIN_TIME:-3} tools/bench_encoders.sh build 2>&1 | tee -a "$out/$w.txt" ;;
    resnet)
      [ -f build/resnet-bench/rn50.safetensors ] || \
        "$py" tools/reference_resnet.py --preset rn50 --no-golden --text-width 64 --out build/resnet-bench
      OMP_WAIT_POLICY=PASSIVE "$py" tools/bench_torch_resnet.py --weights build/resnet-bench/rn50.safetensors \
        --cpp-bench build/bench/bench_model_resnet --threads 2 --batches 1,32 --min-time 3 2>&1 | tee -a "$out/$w.txt" ;;
    probe)
      tools/bench_linear_probe.sh build 0.316 3 2>&1 | tee -a "$out/$w.txt" ;;
    train)
      # One training step (forward, loss, backward, clipping, AdamW), PyTorch and ours, one
      # process per configuration (peak RSS); prints the table of docs/BENCHMARKS.md.
      # TRAIN_CONFIGS=tiny6,tiny64,cifar128 skips ViT-B/32 (~4.5 GB, minutes).
      OMP_WAIT_POLICY=PASSIVE "$py" tools/bench_torch_train.py --configs "${TRAIN_CONFIGS:-tiny6,tiny64,cifar128,vitb32}" \
        --cpp-bench build/bench/bench_train_step --threads 2 2>&1 | tee -a "$out/$w.txt" ;;
    *) echo "unknown benchmark $w" >&2; exit 2 ;;
  esac
done
