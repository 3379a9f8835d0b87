#pragma once
// Decoded images and the decoders (JPEG, PNG, WebP, BMP, GIF), made to give the same pixels,
// in the same mode, as Pillow 9.4 (Debian 12's python3-pil), because the reference CLIP
// preprocessing resizes in the decoded mode before convert("RGB"). See docs/images.md.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace clip {

// An image as Pillow holds it after Image.open + load, in Pillow's mode names:
//   "L" (1 channel), "1" (1 channel, 0 or 255), "LA" (2), "RGB" (3), "RGBA" (4), "CMYK" (4, as
//   Pillow stores it: 0 = no ink), "P" (1 channel of palette indices; `palette` holds 256 RGB
//   triples), "PA" (2: index, alpha), "I" (1 channel, 32-bit signed samples: 16-bit grayscale
//   PNG), "I;16" (1 channel, 16-bit unsigned samples).
// pixels are interleaved rows without padding. For "I" each sample is an int32 and for "I;16"
// a uint16, both in host byte order (so `pixels.size() == width*height*channels*bytes_per_sample`).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  std::string mode;
  std::vector<uint8_t> palette;  // "P"/"PA": 768 bytes (R,G,B for index 0..255)

  int bytes_per_sample() const { return mode == "I" ? 4 : mode == "I;16" ? 2 : 1; }
  size_t row_bytes() const { return size_t(width) * channels * bytes_per_sample(); }
  bool empty() const { return width == 0 || height == 0; }
};

struct DecodeOptions {
  // Decompression-bomb guard: images with more pixels are refused (Pillow's
  // MAX_IMAGE_PIXELS default; Pillow warns above it and fails above twice it). <= 0: no limit.
  int64_t max_pixels = 89478485;
  // Apply the EXIF orientation tag (JPEG, PNG eXIf, WebP EXIF). Off by default: the reference
  // (Pillow's Image.open) does not apply it.
  bool exif_orient = false;
  // Fast path for large JPEGs: > 0 lets libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale as long
  // as the shorter side stays >= this. Not bit-exact with the reference (see docs/images.md).
  int jpeg_draft_min_side = 0;
};

enum class ImageFormat { Unknown, Jpeg, Png, Webp, Bmp, Gif };
// Detects the format from the leading bytes (never the file name).
ImageFormat detect_image_format(const uint8_t* data, size_t size);
const char* image_format_name(ImageFormat f);

// Decodes a file or a buffer. Throws clip::Error naming the file (or `name_for_errors`) and the
// problem for unreadable, truncated, corrupt, empty, unknown-format or too-large images.
Image decode_image_file(const std::string& path, const DecodeOptions& options = {});
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors,
                          const DecodeOptions& options = {});

// Pillow's Image.convert("RGB") for every mode above (alpha dropped, never composited;
// "I"/"I;16" clipped to 0..255, CMYK by Pillow's cmyk2rgb).
Image convert_to_rgb(const Image& img);

// Applies an EXIF orientation value (1..8) as PIL.ImageOps.exif_transpose does.
Image apply_exif_orientation(const Image& img, int orientation);

// Wraps an interleaved 8-bit buffer as an image of the given mode ("L", "LA", "RGB", "RGBA").
Image image_from_buffer(const uint8_t* data, int width, int height, const std::string& mode);

}  // namespace clip
