#!/usr/bin/env bash
# The main job: install dependencies, build `clip`, and run it end to end with the default model
# that ships in models/cifar10-rn-small (a small CLIP trained from scratch by `clip train` with
# recipes/cifar10/train.sh on CIFAR-10's 50,000 32x32 training images and captions made from
# their ten class names): say what the model is and what it was trained on, classify a real
# photo that a Debian package installs (scikit-image's chelsea.png, a cat) and the first test
# image of every CIFAR-10 class zero-shot (fixed choices, whatever the model makes of them),
# score captions, write embeddings, and measure zero-shot accuracy on the CIFAR-10 test set
# with CLIP's 18 templates.
#
# Another model (e.g. the real OpenAI weights, see README: openai/clip-vit-base-patch32):
#   MODEL=path/to/clip-vit-base-patch32 ./scripts/main-job.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target clip example_zeroshot

PHOTO=${PHOTO:-/usr/lib/python3/dist-packages/skimage/data/chelsea.png}
SHARED=${SHARED:-../shared/data}
MODEL=${MODEL:-models/cifar10-rn-small}
CIFAR_CLASSES="airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
TEMPLATES=recipes/cifar10/cifar10_eval_templates.txt
mkdir -p build/demo

if [ -f "$MODEL/README.md" ]; then
  echo "== the model (from $MODEL/README.md)"
  sed -n '/^## In short/,/^## /p' "$MODEL/README.md" | sed '$d'
fi
echo "== clip info"
./build/clip info --model "$MODEL"
echo "== clip zeroshot: $PHOTO, then the first test image of each CIFAR-10 class (CLIP's 18 templates)"
first_of_each=()
for c in ${CIFAR_CLASSES//,/ }; do first_of_each+=("$SHARED/cifar10_jpeg/test/$c/0000.jpg"); done
./build/clip zeroshot --model "$MODEL" --labels "$CIFAR_CLASSES" --templates-file "$TEMPLATES" -k 3 \
  "$PHOTO" "${first_of_each[@]}"
SKIMAGE=$(dirname "$PHOTO")
if [ -f "$SKIMAGE/astronaut.png" ] && [ -f "$SKIMAGE/coffee.png" ]; then
  echo "== clip zeroshot: two photos of none of its ten classes (a person, a cup of coffee): it knows no"
  echo "   other words for images, so it still answers with one of the ten; compare the probabilities"
  ./build/clip zeroshot --model "$MODEL" --labels "$CIFAR_CLASSES" --templates-file "$TEMPLATES" -k 3 \
    "$SKIMAGE/astronaut.png" "$SKIMAGE/coffee.png"
fi
echo "== clip similarity"
./build/clip similarity --model "$MODEL" --images "$PHOTO" \
  --text "a picture of a cat" --text "a picture of a ship" --text "a picture of a truck"
echo "== clip embed"
./build/clip embed --model "$MODEL" --images "$PHOTO" --text "a photo of a cat" -o build/demo/embeddings.npy
/usr/bin/python3 -c "import numpy as np; e=np.load('build/demo/embeddings.npy'); print('embeddings', e.shape, 'norms', np.linalg.norm(e, axis=1).round(4))"
cat build/demo/embeddings.tsv
if [ -d "$SHARED/cifar10_jpeg/test" ]; then
  echo "== clip eval zeroshot: CIFAR-10 test set (10,000 images)"
  ./build/clip eval zeroshot --model "$MODEL" --dataset "$SHARED/cifar10_jpeg/test" --dataset-name cifar10 \
    --templates "$TEMPLATES" --output build/demo/results
fi
echo "== main job done"
