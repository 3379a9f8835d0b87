#!/usr/bin/env bash
# Issue 7's evaluation of a CLIP model trained by recipes/cifar10/train.sh: zero-shot CIFAR-10
# (the 18 CLIP templates), linear probe CIFAR-10, few-shot 1/2/4/8/16 vs zero-shot, Flickr8k
# retrieval, linear-probe transfer to MNIST and Fashion-MNIST, and a robustness table over
# CIFAR-10 corruptions. Writes CLIP_benchmark-style JSON results and a merged report.
#
#   recipes/cifar10/evaluate.sh [MODEL_DIR] [OUT_DIR]
#     MODEL_DIR  default: models/cifar10-rn-small
#     OUT_DIR    default: build/recipes/cifar10/eval
# Environment: CLIP (the binary; default build/clip), SHARED (default ../shared/data),
#              WORK (scratch; default build/recipes/cifar10/work).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
model="${1:-$repo/models/cifar10-rn-small}"
out="${2:-$repo/build/recipes/cifar10/eval}"
clip="${CLIP:-$repo/build/clip}"
shared="${SHARED:-$repo/../shared/data}"
work="${WORK:-$repo/build/recipes/cifar10/work}"
mkdir -p "$out" "$work"

cifar_test="$shared/cifar10_jpeg/test"
if [ ! -d "$work/cifar10/train" ]; then
  mkdir -p "$work/cifar10" && tar xzf "$shared/cifar10_jpeg/train.tar.gz" -C "$work/cifar10"
fi
cifar_train="$work/cifar10/train"
templates="$here/cifar10_eval_templates.txt"   # CLIP's 18 CIFAR-10 templates (not trained on)
cache="$work/features"
common=(--model "$model" --cache "$cache" --output "$out")

echo "== zero-shot CIFAR-10 (18 CLIP templates)"
"$clip" eval zeroshot "${common[@]}" --dataset "$cifar_test" --dataset-name cifar10 \
  --templates "$templates" --per-class --confusion

echo "== linear probe CIFAR-10 (50,000 train / 10,000 test)"
"$clip" eval linear-probe "${common[@]}" --train "$cifar_train" --test "$cifar_test" --dataset-name cifar10

echo "== few-shot probes CIFAR-10 (1/2/4/8/16 shots, 5 seeds)"
"$clip" eval linear-probe "${common[@]}" --train "$cifar_train" --test "$cifar_test" --dataset-name cifar10 \
  --shots 1 2 4 8 16 --seeds 5

echo "== retrieval Flickr8k (1,000 images x 5 captions)"
"$clip" eval retrieval "${common[@]}" --truncate --dataset "$shared/flickr8k_subset1000/captions.txt" \
  --root "$shared/flickr8k_subset1000/images" --dataset-name flickr8k

echo "== linear-probe transfer: MNIST, Fashion-MNIST"
"$clip" eval linear-probe "${common[@]}" --train "$shared/mnist/train10k-images-idx3-ubyte.gz" \
  --test "$shared/mnist/t10k-images-idx3-ubyte.gz" --dataset-name mnist
fmnist_train=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -f "$fmnist_train" ]; then
  "$clip" eval linear-probe "${common[@]}" --train "$fmnist_train" \
    --test "$shared/fashion_mnist/t10k-images-idx3-ubyte.gz" --dataset-name fashion_mnist
else
  echo "(Fashion-MNIST training set not installed: apt-get install dataset-fashion-mnist)"
fi

echo "== robustness: the whole CIFAR-10 test set under corruptions (severities 1, 3, 5)"
corrupted="$work/cifar10-c"
if [ ! -f "$corrupted/.done" ]; then
  rm -rf "$corrupted"
  "$clip" data corrupt --input "$cifar_test" --output "$corrupted" --corruption all --severity 1 3 5 --seed 0
  touch "$corrupted/.done"
fi
variants=()
for c in gaussian_noise gaussian_blur jpeg contrast grayscale pixelate; do
  for s in 1 3 5; do variants+=(--variant "$c-$s=$corrupted/$c/$s"); done
done
"$clip" eval robustness "${common[@]}" --dataset "$cifar_test" --dataset-name cifar10 \
  --templates "$templates" "${variants[@]}"

echo "== report"
"$clip" eval report "$out" --output "$out/report"
echo "results in $out, report in $out/report"
