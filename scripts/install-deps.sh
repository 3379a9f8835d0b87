#!/usr/bin/env bash
# Installs every build, runtime and test dependency of clip from Debian (and ftfy from PyPI
# for the tokenizer reference). Idempotent: packages already present are skipped by apt.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libopenblas0-pthread libdnnl-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev zlib1g-dev libtiff-dev libdeflate-dev
  nlohmann-json3-dev libcli11-dev libutf8proc-dev libarchive-dev
  libsqlite3-dev libfaiss-dev libcpp-httplib-dev libssl-dev libopenmpi-dev openmpi-bin
  chromium pybind11-dev python3-dev python3-pytest python3-venv
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  python3 python3-pip python3-numpy python3-torch python3-torchvision python3-pil python3-regex python3-skimage
  python3-sklearn dataset-fashion-mnist
)
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# ftfy is not packaged by Debian 12; the tokenizer's Python reference uses the real one.
if ! /usr/bin/python3 -c "import ftfy" 2>/dev/null; then
  /usr/bin/python3 -m pip install -q --break-system-packages ftfy || \
    echo "install-deps: warning: could not install ftfy (tokenizer reference tests will be skipped)"
fi
# safetensors (the reference reader/writer) is not packaged by Debian 12; the weights tests
# cross-check our reader and writer against it and skip those checks without it.
if ! /usr/bin/python3 -c "import safetensors" 2>/dev/null; then
  /usr/bin/python3 -m pip install -q --break-system-packages safetensors || \
    echo "install-deps: warning: could not install safetensors (reference cross-checks will be skipped)"
fi
# gguf (llama.cpp's GGUF writer, PyPI) makes the clip.cpp-style test files (tools/gguf_checkpoints.py).
if ! /usr/bin/python3 -c "import gguf" 2>/dev/null; then
  /usr/bin/python3 -m pip install -q --break-system-packages gguf || \
    echo "install-deps: warning: could not install gguf (the GGUF tests will fail)"
fi
echo "install-deps: ok"
