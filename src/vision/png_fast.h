#pragma once
// Fast path for non-interlaced PNGs (see png_fast.cpp); false means "use libpng".
#include <cstddef>
#include <cstdint>

#include "vision/image.h"

namespace clip {
bool decode_png_fast(const uint8_t* data, size_t size, int64_t max_pixels, Image& img,
                     const uint8_t** exif, size_t* exif_len);
}  // namespace clip
