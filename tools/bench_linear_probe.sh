#!/usr/bin/env bash
# The linear probe's solve beside scikit-learn on the same machine and the same features:
# 50,000 x 512 float32 features of a 10-class Gaussian mixture (tools/eval_reference.py bench),
# scikit-learn's LogisticRegression(solver="lbfgs", max_iter=1000) and `clip eval linear-probe`
# at the same C; test accuracy and seconds of the fit alone (features already in memory).
#
#   tools/bench_linear_probe.sh [build-dir] [C] [repeats]
# Run it on a quiet machine; OMP_NUM_THREADS / OPENBLAS_NUM_THREADS apply to both sides.
set -euo pipefail
BUILD=${1:-build}
C=${2:-0.316}
REPEATS=${3:-3}
PY=${CLIP_PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/clip_bench_lp.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
CLIP="$BUILD/clip"
[ -x "$CLIP" ] || { echo "no $CLIP: build the clip target first" >&2; exit 1; }

"$PY" "$HERE/tools/eval_reference.py" bench --out "$OUT" --n 50000 --n-test 10000 --dim 512 --classes 10 --skip-fit
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "features: 50000 x 512 train, 10000 test, 10 classes; C = $C"
printf "%-8s %-3s %10s %10s %6s %14s\n" side "" seconds accuracy iters objective
for r in $(seq 1 "$REPEATS"); do
  "$PY" - "$OUT" "$C" <<'PYEOF' | tee -a "$OUT/sk.txt"
import sys, time, json, numpy as np
sys.path.insert(0, sys.argv[0])
from sklearn.linear_model import LogisticRegression
d, C = sys.argv[1], float(sys.argv[2])
X, y = np.load(d + "/train_x.npy"), np.load(d + "/train_y.npy").astype(int)
Xt, yt = np.load(d + "/test_x.npy"), np.load(d + "/test_y.npy").astype(int)
clf = LogisticRegression(solver="lbfgs", C=C, max_iter=1000, random_state=0)
t0 = time.perf_counter(); clf.fit(X, y); s = time.perf_counter() - t0
z = X.astype(np.float64) @ clf.coef_.T + clf.intercept_
m = z.max(1, keepdims=True); lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
obj = float(np.sum(lse - z[np.arange(len(y)), y]) + 0.5 / C * np.sum(clf.coef_ ** 2))
print(f"sklearn  -   {s:10.3f} {clf.score(Xt, yt):10.4f} {int(clf.n_iter_[0]):6d} {obj:14.4f}")
PYEOF
  "$CLIP" eval linear-probe --train-features "$OUT/train_x.npy" --train-labels "$OUT/train_y.npy" \
    --test-features "$OUT/test_x.npy" --test-labels "$OUT/test_y.npy" --C "$C" -o "$OUT/ours.json" > /dev/null
  "$PY" -c "
import json; r = json.load(open('$OUT/ours.json')); d = r['details']
print(f\"clip     -   {d['fit_seconds']:10.3f} {r['metrics']['acc1']:10.4f} {d['iterations']:6d} {d['objective']:14.4f}\")" | tee -a "$OUT/ours.txt"
done
"$PY" - "$OUT" <<'PYEOF'
import sys, statistics
d = sys.argv[1]
sk = [float(l.split()[2]) for l in open(d + "/sk.txt")]
us = [float(l.split()[2]) for l in open(d + "/ours.txt")]
print(f"median seconds: sklearn {statistics.median(sk):.3f}, clip {statistics.median(us):.3f}, "
      f"speed-up {statistics.median(sk) / statistics.median(us):.1f}x")
PYEOF
