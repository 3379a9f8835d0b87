// libFuzzer target for the PyTorch checkpoint reader (zip via libarchive + the restricted
// unpickler): any byte string must either give tensors whose bytes were all written (touched
// under ASan) or be rejected with a clip::Error; never crash, hang, allocate without bound or
// call anything the pickle names. Seeds: small torch.save and TorchScript files (fuzz/seeds/).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t* copy = new uint8_t[size ? size : 1];
  if (size) std::memcpy(copy, data, size);
  try {
    uint32_t sum = 0;
    for (const auto& [name, t] : clip::read_torch_checkpoint(copy, size, "fuzz-input")) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      sum += uint32_t(name.size());
    }
    asm volatile("" : : "r"(sum));
  } catch (const clip::Error&) {
  }
  delete[] copy;
  return 0;
}
