// libFuzzer: the strict base64 decoder of `clip serve` requests (core/base64.h). Any input either
// decodes or is refused; what decodes re-encodes to a string that decodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base64.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto bytes = clip::base64_decode(in)) {
    if (clip::base64_decode(clip::base64_encode(*bytes)) != *bytes) __builtin_trap();
  }
  const std::string round = clip::base64_encode(in);
  if (clip::base64_decode(round) != std::string(in)) __builtin_trap();
  return 0;
}
