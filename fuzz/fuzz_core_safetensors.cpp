// libFuzzer target for the safetensors header parser: any byte string must either parse into
// tensors whose byte ranges lie inside the input (checked by touching every byte under ASan)
// or be rejected with a clip::Error, never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy so that ASan sees the exact extent of the input (libFuzzer's buffer is exact too,
  // but this keeps the target honest if it is driven from elsewhere).
  uint8_t* copy = new uint8_t[size ? size : 1];
  if (size) std::memcpy(copy, data, size);
  try {
    clip::SafetensorsHeader h = clip::parse_safetensors(copy, size, "fuzz-input");
    uint32_t sum = 0;
    uint64_t previous_end = 0;
    for (const auto& t : h.tensors) {
      // Validated invariants: inside the data section, sizes agree, sorted, disjoint.
      if (t.end > h.data_size || t.begin > t.end) __builtin_trap();
      if (t.nbytes() != uint64_t(t.numel()) * clip::dtype_size(t.dtype)) __builtin_trap();
      if (t.begin != t.end) {
        if (t.begin < previous_end) __builtin_trap();
        previous_end = t.end;
      }
      const uint8_t* p = copy + h.data_offset + t.begin;
      for (uint64_t i = 0; i < t.nbytes(); ++i) sum += p[i];
    }
    asm volatile("" : : "r"(sum));
  } catch (const clip::Error&) {
  }
  delete[] copy;
  return 0;
}
