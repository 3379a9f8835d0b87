#pragma once
// Images stored as raw arrays rather than image files: IDX (MNIST, Fashion-MNIST; optionally
// gzip-compressed) and NumPy .npy. Each image becomes an "L" (or "RGB") clip::Image, which
// preprocess_image treats as Pillow treats Image.fromarray(...) of the same array.
#include <cstdint>
#include <string>
#include <vector>

#include "image.h"  // relative: also installed under include/clip/vision/

namespace clip {

// Reads an IDX file of unsigned bytes with 3 dimensions [N, H, W] (images, mode "L") or
// 4 dimensions [N, H, W, 3] (mode "RGB"). ".gz" content (detected from the bytes) is inflated.
// `limit` > 0 reads only the first `limit` images. Throws clip::Error naming the file.
std::vector<Image> read_idx_images(const std::string& path, int64_t limit = 0);
// Reads an IDX label file (1 dimension of unsigned bytes).
std::vector<uint8_t> read_idx_labels(const std::string& path);

// Reads a .npy of shape [N, H, W], [N, H, W, 3], [H, W] or [H, W, 3] into images. dtype uint8
// is taken as is; float32/float64 are taken as 0..1 intensities and become round(v * 255),
// clamped (skimage's convention, e.g. lfw_subset.npy).
std::vector<Image> read_npy_images(const std::string& path, int64_t limit = 0);

// Inflates gzip (or zlib) data; returns the input unchanged if it is not compressed.
std::vector<uint8_t> maybe_gunzip(const std::vector<uint8_t>& data, const std::string& name);

}  // namespace clip
