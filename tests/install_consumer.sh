#!/bin/bash
# The library as another project sees it: `cmake --install` into a fresh prefix; every public
# header compiles on its own against that prefix alone; examples/consumer builds with
# find_package(clip) against it and embeds an image and a text, giving the cosine `clip
# similarity` gives (within 1e-6: printed with 6 decimals).
#   tests/install_consumer.sh BUILD_DIR SOURCE_DIR MODEL IMAGE
set -euo pipefail
build=$1 src=$2 model=$3 image=$4
text="a photo of a cat"
work=$build/test_tmp/install_consumer_$$
trap 'rm -rf "$work"' EXIT
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
for h in "$work"/prefix/include/clip/*.h; do
  line="#include <clip/$(basename "$h")>"
  case $h in
    *_c.h) echo "$line" | gcc -std=c99 -Wall -Werror -x c -fsyntax-only -I "$work/prefix/include" - ;;
    *) echo "$line" | g++ -std=c++20 -Wall -Werror -x c++ -fsyntax-only -I "$work/prefix/include" - ;;
  esac
  echo "compiles alone: ${h#$work/prefix/}"
done
cmake -S "$src/examples/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
# The installed library finds the installed vocabulary (PREFIX/share/clip) by its own location.
got=$(env -u CLIP_VOCAB "$work/build/consumer" "$model" "$image" "$text")
echo "consumer: $got"
want=$("$build/clip" similarity -m "$model" "$image" --text "$text" --json)
echo "clip similarity: $want"
python3 - "$got" "$want" <<'PY'
import json, sys
got = float(sys.argv[1].split("cosine ")[1])
want = json.loads(sys.argv[2])["scores"][0]["score"]
assert abs(got - want) <= 1e-6, (got, want)
print(f"cosine {got:.6f} == {want:.6f}")
PY
# (ldd's output captured first: `ldd | grep -q` under pipefail fails when grep stops reading early)
libs=$(ldd "$work/build/consumer")
grep -q "$work/prefix/lib/libclip.so" <<<"$libs" || { echo "consumer does not use the installed libclip.so:"; echo "$libs"; exit 1; }
echo "ok"
