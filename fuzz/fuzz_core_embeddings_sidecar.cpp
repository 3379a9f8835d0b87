// libFuzzer: the .tsv sidecar of `clip embed` (core/embeddings_file.h). Any bytes either parse
// into rows whose count matches, or throw clip::Error; never a crash, hang or other exception.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/embeddings_file.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte: the .npy's row count (so both "matches" and "differs" are reached); the
  // rest: the .tsv text.
  const int64_t expected = int64_t(data[0] % 8);
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<std::string> kinds, sources;
  try {
    clip::parse_embedding_sidecar(text, "fuzz.tsv", expected, kinds, sources);
    if (int64_t(kinds.size()) != expected || sources.size() != kinds.size()) __builtin_trap();
    for (const std::string& s : sources)
      if (clip::tsv_unescape(clip::tsv_escape(s)) != s) __builtin_trap();  // the escaping round-trips
  } catch (const clip::Error&) {
  }
  return 0;
}
