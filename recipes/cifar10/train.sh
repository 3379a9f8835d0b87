#!/usr/bin/env bash
# The CIFAR-10 recipe: a small CLIP trained from scratch on CIFAR-10 train (50,000 images) with
# captions made from the class names and 48 varied templates (train_templates.txt), none of
# which is one of CLIP's 18 CIFAR-10 templates that the model is evaluated with
# (cifar10_eval_templates.txt). Its tokenizer vocabulary is trained first by
# `clip tokenizer train` on the training captions plus the Flickr8k captions (text only).
#
#   recipes/cifar10/train.sh [RUN_DIR]        default RUN_DIR: build/recipes/cifar10/run
#
# Recipes (RECIPE=FILE, a `clip train --config` JSON naming its model and every setting):
#   rn-small.json  (default; issue 20) the shipped model models/cifar10-rn-small: ModifiedResNet
#                  width 32, 30 epochs, crops, flips, colour jitter, grayscale, blur and noise;
#                  ~37 min on 2 cores
#   vit-tiny.json  (issue 5) models/cifar10-vit-tiny: ViT, 6 epochs, crops and flips; ~14 min
# Then: recipes/cifar10/evaluate.sh RUN_DIR/model. To ship a model: copy RUN_DIR/model to
# models/NAME/ with RUN_DIR's metrics.jsonl, curves.svg, config.json and the log under training/.
# Environment: CLIP (binary; default build/clip), SHARED (default ../shared/data), WORK (scratch
# for the extracted images; default build/recipes/cifar10/work), THREADS (default: all cores),
# RECIPE (above), MODEL (overrides the recipe's architecture: a name from
# `clip info --model-configs` or a JSON file; src/model/model_configs/), SEED (overrides the
# recipe's seed).
# The run is resumable: run the same command again after an interruption.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
run="${1:-$repo/build/recipes/cifar10/run}"
clip="${CLIP:-$repo/build/clip}"
shared="${SHARED:-$repo/../shared/data}"
work="${WORK:-$repo/build/recipes/cifar10/work}"
mkdir -p "$work" "$run"

if [ ! -d "$work/cifar10/train" ]; then
  echo "== extracting CIFAR-10 train"
  mkdir -p "$work/cifar10" && tar xzf "$shared/cifar10_jpeg/train.tar.gz" -C "$work/cifar10"
fi

if [ ! -f "$run/vocab/bpe_vocab.txt.gz" ]; then
  echo "== tokenizer vocabulary (clip tokenizer train)"
  # Every training caption (10 classes x 48 templates), repeated so that class words and
  # template words outweigh the general English of the Flickr8k captions, then those captions.
  classes=(airplane automobile bird cat deer dog frog horse ship truck)
  : > "$work/captions.txt"
  for _ in $(seq 20); do
    while IFS= read -r t; do
      for c in "${classes[@]}"; do echo "${t//\{\}/$c}" >> "$work/captions.txt"; done
    done < "$here/train_templates.txt"
  done
  "$clip" tokenizer train "$work/captions.txt" "$shared/flickr8k_subset1000/flickr8k_all_captions.txt" \
    --vocab-size 2048 -o "$run/vocab"
fi

echo "== clip train"
start=$(date +%s)
overrides=()
if [ -n "${MODEL:-}" ]; then overrides+=(--model-config "$MODEL"); fi
if [ -n "${SEED:-}" ]; then overrides+=(--seed "$SEED"); fi
"$clip" train --config "${RECIPE:-$here/rn-small.json}" "${overrides[@]}" \
  --train-data "$work/cifar10/train" --templates "$here/train_templates.txt" \
  --vocab "$run/vocab/bpe_vocab.txt.gz" \
  --zeroshot-data "$shared/cifar10_jpeg/test" --zeroshot-templates "$here/cifar10_eval_templates.txt" \
  --threads "${THREADS:-0}" --output "$run" --resume latest
echo "clip train finished in $(( $(date +%s) - start )) s (this invocation)"
