#!/usr/bin/env bash
# The main job: install dependencies, build `clip`, and run it end to end on a real photo that
# a Debian package installs (scikit-image's chelsea.png, a cat) with a CLIP model.
#
# Until a model trained by `clip train` ships in models/, the model is the ViT-B/32 architecture
# with seeded random weights written by the PyTorch reference script (tools/reference_model.py,
# Hugging Face layout), so the pipeline runs for real but its predictions mean nothing.
# With the real OpenAI weights (see README: openai/clip-vit-base-patch32), pass the directory:
#   MODEL=path/to/clip-vit-base-patch32 ./scripts/main-job.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target clip example_zeroshot

PHOTO=${PHOTO:-/usr/lib/python3/dist-packages/skimage/data/chelsea.png}
VOCAB_ARGS=()
if [ -z "${MODEL:-}" ]; then
  MODEL=build/demo/ViT-B-32-random/hf
  if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "== writing a ViT-B/32 checkpoint with seeded random weights (PyTorch reference)"
    /usr/bin/python3 tools/reference_model.py write --config ViT-B-32 --schemes hf \
      --out build/demo/ViT-B-32-random
  fi
  # The random model carries no tokenizer files: use OpenAI's vocabulary.
  VOCAB=${VOCAB:-../shared/data/clip_vocab/bpe_simple_vocab_16e6.txt.gz}
  if [ ! -f "$VOCAB" ]; then
    echo "main-job: no vocabulary at $VOCAB; set VOCAB=path/to/bpe_simple_vocab_16e6.txt.gz" >&2
    exit 1
  fi
  VOCAB_ARGS=(--vocab "$VOCAB")
fi

echo "== clip info"
./build/clip info --model "$MODEL"
echo "== clip zeroshot ($PHOTO)"
./build/clip zeroshot --model "$MODEL" "${VOCAB_ARGS[@]}" "$PHOTO" \
  --labels "cat,dog,rocket,cup of coffee,astronaut" --template "a photo of a {}." -k 5
echo "== clip similarity"
./build/clip similarity --model "$MODEL" "${VOCAB_ARGS[@]}" --images "$PHOTO" \
  --text "a photo of a cat" --text "a photo of a rocket"
echo "== clip embed"
./build/clip embed --model "$MODEL" "${VOCAB_ARGS[@]}" --images "$PHOTO" \
  --text "a photo of a cat" -o build/demo/embeddings.npy
/usr/bin/python3 -c "import numpy as np; e=np.load('build/demo/embeddings.npy'); print('embeddings', e.shape, 'norms', np.linalg.norm(e, axis=1).round(4))"
cat build/demo/embeddings.tsv
echo "== main job done"
