// Pillow 9.4's Image.convert("RGB") for the modes the decoders produce (libImaging/Convert.c):
// alpha is dropped without compositing, grey is replicated, palettes are looked up, "I" and
// "I;16" are clipped to 0..255, CMYK goes through Pillow's cmyk2rgb.
#include <cstring>

#include "core/error.h"
#include "vision/image.h"

namespace clip {

Image convert_to_rgb(const Image& img) {
  Image out;
  out.width = img.width;
  out.height = img.height;
  out.channels = 3;
  out.mode = "RGB";
  const size_t n = size_t(img.width) * img.height;
  out.pixels.resize(n * 3);
  uint8_t* o = out.pixels.data();
  const uint8_t* in = img.pixels.data();
  const std::string& m = img.mode;
  if (img.pixels.size() < n * img.channels * size_t(img.bytes_per_sample()))
    throw Error("convert_to_rgb: pixel buffer smaller than " + std::to_string(img.width) + "x" +
                std::to_string(img.height) + " " + m);
  if (m == "RGB") {
    std::memcpy(o, in, n * 3);
  } else if (m == "RGBA") {
    for (size_t i = 0; i < n; ++i) { o[i * 3] = in[i * 4]; o[i * 3 + 1] = in[i * 4 + 1]; o[i * 3 + 2] = in[i * 4 + 2]; }
  } else if (m == "L" || m == "LA") {
    const int C = img.channels;
    for (size_t i = 0; i < n; ++i) o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = in[i * C];
  } else if (m == "1") {
    for (size_t i = 0; i < n; ++i) o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = in[i] ? 255 : 0;
  } else if (m == "P" || m == "PA") {
    if (img.palette.size() < 768) throw Error("convert_to_rgb: palette image without a 256-entry palette");
    const int C = img.channels;
    for (size_t i = 0; i < n; ++i) std::memcpy(o + i * 3, &img.palette[size_t(in[i * C]) * 3], 3);
  } else if (m == "I") {
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, in + i * 4, 4);
      o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = uint8_t(v <= 0 ? 0 : v >= 255 ? 255 : v);
    }
  } else if (m == "I;16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, in + i * 2, 2);
      o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = uint8_t(v >= 255 ? 255 : v);
    }
  } else if (m == "CMYK") {
    for (size_t i = 0; i < n; ++i) {
      const int nk = 255 - in[i * 4 + 3];
      for (int c = 0; c < 3; ++c) {
        int tmp = in[i * 4 + c] * nk + 128;
        int v = nk - (((tmp >> 8) + tmp) >> 8);
        o[i * 3 + c] = uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  } else {
    throw Error("convert_to_rgb: unsupported mode '" + m + "'");
  }
  return out;
}

}  // namespace clip
