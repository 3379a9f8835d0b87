#!/usr/bin/env bash
# The test command (README, CI): Release build + all tests, an ASan/UBSan build + tests,
# and each libFuzzer target run briefly. Set CLIP_TEST_QUICK=1 to run only the Release part
# (the Release suite runs under each instruction-set cap of CLIP_TEST_ISA_CAPS as well).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

# Idempotent: installs only what is missing (apt-get on a fresh Debian 12 machine).
bash scripts/install-deps.sh

echo "== Release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

# The same suite with the kernel paths of older CPUs (CLIP_MAX_ISA caps our kernels and
# oneDNN's; src/backend/cpu_features.h), so a change that breaks exactness or a tolerance on one
# CPU is seen on any machine. The run above used this machine's best.
system="$(build/clip info --system)"
echo "== CPU: $(sed -n 's/^cpu: *//p' <<<"$system"); best: $(sed -n 's/^best isa: *//p' <<<"$system")"
for cap in ${CLIP_TEST_ISA_CAPS:-avx512 avx2 sse41}; do
  echo "== Release tests with CLIP_MAX_ISA=$cap ($(CLIP_MAX_ISA=$cap build/clip info --system | sed -n 's/^oneDNN kernels: *//p') oneDNN kernels)"
  # Not repeated here: the data-parallel tests (*Mpi*: process coordination), the install of the
  # CMake package (Install.*) and the shipped models' accuracy over whole test sets
  # (ShippedModel.*: 75 s of the ~110 s a pass took; the kernels' exactness and tolerances
  # under each cap are what the parity, layer and kernel tests check).
  CLIP_MAX_ISA=$cap ctest --test-dir build --output-on-failure -j "$JOBS" -E 'Mpi|Install|ShippedModel'
done

if [ "${CLIP_TEST_QUICK:-0}" = "1" ]; then exit 0; fi

echo "== ASan/UBSan build and tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCLIP_SANITIZE=ON -DCLIP_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="-O1" >/dev/null
cmake --build build-asan -j "$JOBS"
# Full-size models are slow without optimisation: tests named *Slow* run only in Release.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" -E Slow

echo "== libFuzzer targets (${FUZZ_SECONDS}s each)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLIP_FUZZ=ON >/dev/null
fuzz_targets=$(ls fuzz/fuzz_*.cpp | xargs -n1 basename | sed 's/\.cpp$//')
cmake --build build-fuzz -j "$JOBS" --target $fuzz_targets
for f in build-fuzz/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus="build-fuzz/corpus/$name"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$name" ] && seeds=("fuzz/seeds/$name")
  echo "-- $name"
  "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=0 \
    "$corpus" "${seeds[@]}" 2>&1 | tail -n 3
done
echo "== all tests passed"
