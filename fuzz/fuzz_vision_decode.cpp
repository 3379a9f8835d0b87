// libFuzzer target over every image decoder and the preprocessing of what they return: any
// input must either decode to a consistent image or raise clip::Error, never crash or hang.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "vision/image.h"
#include "vision/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clip::DecodeOptions opt;
  opt.max_pixels = 1 << 22;  // keep single inputs cheap
  opt.exif_orient = size > 0 && (data[size - 1] & 1);
  opt.jpeg_draft_min_side = size > 1 && (data[size - 2] & 1) ? 8 : 0;
  try {
    clip::Image img = clip::decode_image_memory(data, size, "fuzz", opt);
    if (img.pixels.size() != size_t(img.width) * img.height * img.channels * img.bytes_per_sample()) __builtin_trap();
    clip::PreprocessConfig cfg;
    cfg.image_size = 8;
    cfg.resize_mode = static_cast<clip::ResizeMode>(size % 3);
    std::vector<float> out(3 * 8 * 8);
    clip::preprocess_image(img, cfg, out.data());
  } catch (const clip::Error&) {
  }
  return 0;
}
