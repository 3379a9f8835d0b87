#pragma once
// Reproducible corrupted copies of an image set, in the spirit of CIFAR-10-C / ImageNet-C
// (Hendrycks & Dietterich, 2019): six corruptions at five severities. Parameters follow
// ImageNet-C where it has the corruption (noise, blur, JPEG, contrast, pixelate), with blur
// scaled to the image size; grayscale (not in ImageNet-C) blends towards ITU-R 601 luma.
//
//   gaussian_noise  sigma (of 0..1 intensities) 0.08 0.12 0.18 0.26 0.38
//   gaussian_blur   sigma 1 2 3 4 6 px at a 224 px shorter side (scaled with the image),
//                   at least CIFAR-10-C's 0.4 0.6 0.7 0.8 1.0
//   jpeg            quality 25 18 15 10 7 (the output file is that JPEG)
//   contrast        (x - mean) * c + mean, c = 0.4 0.3 0.2 0.1 0.05
//   grayscale       blend to luma by 0.2 0.4 0.6 0.8 1.0
//   pixelate        box-downscale by 0.6 0.5 0.4 0.3 0.25, nearest upscale
//
// The noise comes from splitmix64 seeded by (seed, sample id), so an image's corruption is the
// same on every run, platform and thread count.
#include <cstdint>
#include <string>
#include <vector>

#include "vision/image.h"

namespace clip::eval {

enum class Corruption { GaussianNoise, GaussianBlur, Jpeg, Contrast, Grayscale, Pixelate };

const std::vector<std::string>& corruption_names();
Corruption parse_corruption(const std::string& name);  // throws clip::Error listing the names
const char* corruption_name(Corruption c);

// `img` in any mode (converted to RGB first); severity 1..5. The JPEG corruption encodes at the
// severity's quality and decodes back through the vision module.
clip::Image corrupt_image(const clip::Image& img, Corruption c, int severity, uint64_t seed);

// The corrupted image as file bytes: a PNG (lossless, so the corruption is exactly what is
// stored), except `jpeg`, whose output is the JPEG at the severity's quality. `extension`
// receives ".png" or ".jpg".
std::vector<uint8_t> corrupt_to_file(const clip::Image& img, Corruption c, int severity, uint64_t seed,
                                     std::string& extension);

// 8-bit RGB encoders (libpng / libjpeg-turbo, 4:2:0 as Pillow's default).
std::vector<uint8_t> encode_png_rgb(const clip::Image& rgb);
std::vector<uint8_t> encode_jpeg_rgb(const clip::Image& rgb, int quality);

// A seed per sample: mixes the run's seed with the sample's id (its relative path).
uint64_t sample_seed(uint64_t seed, const std::string& id);

}  // namespace clip::eval
