// Photometric augmentations (see augment.h): torchvision's float formulas on 3 x S x S planes.
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"

namespace clip::data {

namespace {

// torchvision's _blend: (ratio * a + (1 - ratio) * b).clamp(0, 1), the scalars in float as
// torch multiplies a float tensor by a Python number.
inline float blend(float a, float b, float ratio, float rest) { return std::clamp(ratio * a + rest * b, 0.0f, 1.0f); }

// torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma, as Pillow's convert("L")).
inline float luma(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

// Reflect padding without repeating the edge (torch's "reflect"): -1 -> 1, S -> S - 2.
inline int reflect(int i, int S) {
  if (i < 0) return -i;
  if (i >= S) return 2 * (S - 1) - i;
  return i;
}

double uniform_in(Rng& rng, double lo, double hi) { return lo + (hi - lo) * rng.uniform(); }

}  // namespace

bool PhotometricOptions::any() const {
  const bool jitter = jitter_p > 0 && (brightness > 0 || contrast > 0 || saturation > 0);
  return jitter || grayscale_p > 0 || blur_p > 0 || (noise_p > 0 && noise_sigma_max > 0);
}

void PhotometricOptions::validate(int S) const {
  auto prob = [](double p, const char* name) {
    if (!(p >= 0 && p <= 1)) throw Error(std::string(name) + ": a probability in [0, 1], got " + std::to_string(p));
  };
  prob(jitter_p, "color-jitter-p");
  prob(grayscale_p, "grayscale-p");
  prob(blur_p, "blur-p");
  prob(noise_p, "noise-p");
  for (double s : {brightness, contrast, saturation})
    if (!(s >= 0 && s <= 10)) throw Error("color-jitter: strengths in [0, 10], got " + std::to_string(s));
  if (blur_p > 0) {
    if (blur_kernel < 1 || blur_kernel % 2 == 0 || blur_kernel / 2 >= S)
      throw Error("blur-kernel: an odd size whose half is below the image size " + std::to_string(S) + ", got " +
                  std::to_string(blur_kernel));
    if (!(blur_sigma[0] > 0 && blur_sigma[0] <= blur_sigma[1] && blur_sigma[1] <= 100))
      throw Error("blur-sigma: expected 0 < MIN <= MAX <= 100");
  }
  if (!(noise_sigma_max >= 0 && noise_sigma_max <= 1)) throw Error("noise-sigma: in [0, 1]");
}

void adjust_brightness(float* img, int S, float factor) {
  const size_t n = size_t(3) * S * S;
  for (size_t i = 0; i < n; ++i) img[i] = blend(img[i], 0.0f, factor, float(1.0 - double(factor)));
}

void adjust_contrast(float* img, int S, float factor) {
  const size_t P = size_t(S) * S;
  double sum = 0;
  for (size_t i = 0; i < P; ++i) sum += luma(img[i], img[P + i], img[2 * P + i]);
  const float mean = float(sum / double(P));
  const float rest = float(1.0 - double(factor));
  for (size_t i = 0; i < 3 * P; ++i) img[i] = blend(img[i], mean, factor, rest);
}

void adjust_saturation(float* img, int S, float factor) {
  const size_t P = size_t(S) * S;
  const float rest = float(1.0 - double(factor));
  for (size_t i = 0; i < P; ++i) {
    const float g = luma(img[i], img[P + i], img[2 * P + i]);
    for (int c = 0; c < 3; ++c) img[c * P + i] = blend(img[c * P + i], g, factor, rest);
  }
}

void to_grayscale(float* img, int S) {
  const size_t P = size_t(S) * S;
  for (size_t i = 0; i < P; ++i) img[i] = img[P + i] = img[2 * P + i] = luma(img[i], img[P + i], img[2 * P + i]);
}

void gaussian_blur(float* img, int S, int kernel_size, float sigma) {
  // torchvision's kernel: x = linspace(-(k-1)/2, (k-1)/2, k), exp(-x^2 / (2 sigma^2)), normalised;
  // applied separably (the 2-D kernel is the outer product; rounding differs by ~1e-7).
  const int half = kernel_size / 2;
  std::vector<float> k(static_cast<size_t>(kernel_size));
  float total = 0;
  for (int i = 0; i < kernel_size; ++i) {
    const float x = float(i - half) / sigma;
    k[size_t(i)] = std::exp(-0.5f * x * x);
    total += k[size_t(i)];
  }
  for (float& v : k) v /= total;
  std::vector<float> tmp(size_t(S) * S);
  for (int c = 0; c < 3; ++c) {
    float* plane = img + size_t(c) * S * S;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        float acc = 0;
        for (int i = 0; i < kernel_size; ++i) acc += k[size_t(i)] * plane[size_t(y) * S + reflect(x + i - half, S)];
        tmp[size_t(y) * S + x] = acc;
      }
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        float acc = 0;
        for (int i = 0; i < kernel_size; ++i) acc += k[size_t(i)] * tmp[size_t(reflect(y + i - half, S)) * S + x];
        plane[size_t(y) * S + x] = acc;
      }
  }
}

void add_gaussian_noise(float* img, int S, float sigma, Rng& rng) {
  const size_t n = size_t(3) * S * S;
  for (size_t i = 0; i < n; ++i) img[i] = std::clamp(img[i] + sigma * float(rng.normal()), 0.0f, 1.0f);
}

void apply_photometric(float* normalized_chw, int S, const float mean[3], const float std[3],
                       const PhotometricOptions& o, Rng& rng) {
  const size_t P = size_t(S) * S;
  for (int c = 0; c < 3; ++c)
    for (size_t i = 0; i < P; ++i) normalized_chw[c * P + i] = normalized_chw[c * P + i] * std[c] + mean[c];
  float* img = normalized_chw;

  // Every draw is made whether or not its transform applies, so one option's probability does
  // not shift the random choices of the others.
  const bool jitter = rng.uniform() < o.jitter_p;
  const double strengths[3] = {o.brightness, o.contrast, o.saturation};
  float factors[3];
  for (int j = 0; j < 3; ++j)
    factors[j] = float(uniform_in(rng, std::max(0.0, 1.0 - strengths[j]), 1.0 + strengths[j]));
  int order[3] = {0, 1, 2};
  for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.below(uint64_t(i) + 1)]);
  if (jitter)
    for (int j : order) {
      if (strengths[j] <= 0) continue;
      if (j == 0) adjust_brightness(img, S, factors[0]);
      if (j == 1) adjust_contrast(img, S, factors[1]);
      if (j == 2) adjust_saturation(img, S, factors[2]);
    }
  if (rng.uniform() < o.grayscale_p) to_grayscale(img, S);
  const bool blur = rng.uniform() < o.blur_p;
  const float sigma = float(uniform_in(rng, o.blur_sigma[0], o.blur_sigma[1]));
  if (blur) gaussian_blur(img, S, o.blur_kernel, sigma);
  const bool noise = rng.uniform() < o.noise_p;
  const float noise_sigma = float(uniform_in(rng, 0.0, o.noise_sigma_max));
  if (noise && noise_sigma > 0) add_gaussian_noise(img, S, noise_sigma, rng);

  for (int c = 0; c < 3; ++c)
    for (size_t i = 0; i < P; ++i) img[c * P + i] = (img[c * P + i] - mean[c]) / std[c];
}

}  // namespace clip::data
