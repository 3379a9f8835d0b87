#pragma once
// Photometric training augmentations (issue 20): colour jitter, random grayscale, Gaussian blur
// and Gaussian noise, applied by the loader to each S x S training crop after the random resized
// crop and flip. They make a model robust to what the crops and flips never show it (low
// contrast, noise, blur, missing colour); `clip data corrupt` measures that robustness.
//
// Each deterministic step is torchvision.transforms.functional's on float tensors (0.14: the
// same blend formulas, clamping, luma weights, Gaussian kernel and reflect padding), checked by
// tests/test_data_augment.cpp against torchvision itself, so a recipe written for open_clip or
// SimCLR (ColorJitter(0.4, 0.4, 0.4) with p 0.8, RandomGrayscale(0.2), GaussianBlur) means the
// same here. torchvision has no noise transform: noise is x + N(0, sigma^2), clamped to [0, 1].
#include <array>

#include "core/rng.h"

namespace clip::data {

struct PhotometricOptions {
  // ColorJitter strengths: each factor is uniform in [max(0, 1 - s), 1 + s]; 0 leaves it out.
  double brightness = 0, contrast = 0, saturation = 0;
  double jitter_p = 0.8;                      // probability of the jitter (its three in a random order)
  double grayscale_p = 0;                     // RandomGrayscale (three equal channels)
  double blur_p = 0;                          // GaussianBlur with probability blur_p ...
  int blur_kernel = 5;                        // ... this odd kernel size (at most S - 1 wide on each side)
  std::array<double, 2> blur_sigma = {0.1, 1.0};  // ... and sigma uniform in [min, max] (pixels)
  double noise_p = 0;                         // Gaussian noise with probability noise_p ...
  double noise_sigma_max = 0.1;               // ... and sigma uniform in [0, max] (of 0..1 intensities)

  bool any() const;
  // Throws clip::Error naming the option when a value is out of range (for a given image size S).
  void validate(int S) const;
};

// `img`: 3 planes (R, G, B) of S * S floats in [0, 1], changed in place.
void adjust_brightness(float* img, int S, float factor);
void adjust_contrast(float* img, int S, float factor);
void adjust_saturation(float* img, int S, float factor);
void to_grayscale(float* img, int S);
void gaussian_blur(float* img, int S, int kernel_size, float sigma);
void add_gaussian_noise(float* img, int S, float sigma, Rng& rng);

// The whole random chain on a *normalised* crop (x - mean) / std, as the loader holds it: undone
// to [0, 1], augmented with the choices drawn from `rng`, normalised again.
void apply_photometric(float* normalized_chw, int S, const float mean[3], const float std[3],
                       const PhotometricOptions& options, Rng& rng);

}  // namespace clip::data
