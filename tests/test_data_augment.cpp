// Photometric augmentations (src/data/augment.h) against torchvision 0.14's functional
// transforms (tools/augment_reference.py), and the random chain's own properties.
//
// Tolerance 2e-6: values in [0, 1] through a few float operations; the contrast mean is summed
// in another order than torch's, and the blur is applied separably where torchvision convolves
// with the 2-D outer-product kernel, each a few float roundings (~1e-7) apart.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/augment.h"

namespace fs = std::filesystem;
using namespace clip::data;

namespace {

constexpr int kSize = 19;  // odd, so no kernel or reflection lines up with a power of two

std::vector<float> random_image(uint64_t seed) {
  clip::Rng rng(seed);
  std::vector<float> img(size_t(3) * kSize * kSize);
  // Smooth structure plus texture, with some values at exactly 0 and 1 to exercise clamping.
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        double v = 0.5 + 0.35 * std::sin(0.3 * x + 0.7 * c) * std::cos(0.2 * y) + 0.2 * (rng.uniform() - 0.5);
        img[(size_t(c) * kSize + y) * kSize + x] = float(std::clamp(v, 0.0, 1.0));
      }
  img[0] = 0.0f;
  img[5] = 1.0f;
  return img;
}

std::vector<float> read_f32(const fs::path& p, size_t n) {
  std::vector<float> v(n);
  std::ifstream f(p, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(float)));
  EXPECT_TRUE(f.good()) << "cannot read " << p;
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST(DataAugment, MatchesTorchvisionFunctional) {
  const fs::path dir = fs::path(CLIP_BINARY_DIR) / "test_tmp" / ("augment_reference." + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<float> input = random_image(7);
  {
    std::ofstream f(dir / "input.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(input.data()), std::streamsize(input.size() * sizeof(float)));
  }
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/augment_reference.py " +
                          (dir / "input.f32").string() + " " + std::to_string(kSize) + " " + (dir / "out").string() +
                          " > " + (dir / "log.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference script failed (needs python3-torchvision): " << cmd;
  std::ifstream listing(dir / "out" / "cases.txt");
  std::string line;
  int cases = 0;
  while (std::getline(listing, line)) {
    std::istringstream in(line);
    std::string name, op;
    in >> name >> op;
    SCOPED_TRACE(name);
    std::vector<float> ours = input;
    if (op == "brightness" || op == "contrast" || op == "saturation") {
      float f;
      in >> f;
      if (op == "brightness") adjust_brightness(ours.data(), kSize, f);
      if (op == "contrast") adjust_contrast(ours.data(), kSize, f);
      if (op == "saturation") adjust_saturation(ours.data(), kSize, f);
    } else if (op == "grayscale") {
      to_grayscale(ours.data(), kSize);
    } else if (op == "blur") {
      int k;
      float sigma;
      in >> k >> sigma;
      gaussian_blur(ours.data(), kSize, k, sigma);
    } else {
      FAIL() << "unknown case " << line;
    }
    const auto ref = read_f32(dir / "out" / (name + ".f32"), input.size());
    EXPECT_LE(max_abs_diff(ours, ref), 2e-6);
    EXPECT_GT(max_abs_diff(ours, input), 1e-3);  // the case changes the image
    ++cases;
  }
  EXPECT_EQ(cases, 10);
  fs::remove_all(dir);
}

TEST(DataAugment, NoiseHasTheAskedSpreadAndStaysInRange) {
  std::vector<float> img(size_t(3) * 64 * 64, 0.5f);
  clip::Rng rng(3);
  add_gaussian_noise(img.data(), 64, 0.1f, rng);
  double sum = 0, sq = 0;
  for (float v : img) {
    sum += v - 0.5;
    sq += (v - 0.5) * (v - 0.5);
  }
  const double n = double(img.size());
  EXPECT_NEAR(sum / n, 0.0, 0.005);
  EXPECT_NEAR(std::sqrt(sq / n), 0.1, 0.005);
  std::vector<float> bright(size_t(3) * 8 * 8, 0.98f);
  add_gaussian_noise(bright.data(), 8, 0.5f, rng);
  for (float v : bright) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
}

TEST(DataAugment, ChainIsSeededAndUndoesTheNormalisation) {
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std_[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  std::vector<float> normalized = random_image(11);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < kSize * kSize; ++i) {
      float& v = normalized[size_t(c) * kSize * kSize + i];
      v = (v - mean[c]) / std_[c];
    }
  PhotometricOptions off;
  EXPECT_FALSE(off.any());
  {
    std::vector<float> x = normalized;
    clip::Rng rng(1);
    apply_photometric(x.data(), kSize, mean, std_, off, rng);
    EXPECT_LE(max_abs_diff(x, normalized), 1e-6);  // only the round trip through [0, 1]
  }
  PhotometricOptions gray;
  gray.grayscale_p = 1;
  {
    std::vector<float> x = normalized;
    clip::Rng rng(1);
    apply_photometric(x.data(), kSize, mean, std_, gray, rng);
    const size_t P = size_t(kSize) * kSize;
    for (size_t i = 0; i < P; ++i) {  // equal channels in [0, 1]
      EXPECT_NEAR(x[i] * std_[0] + mean[0], x[P + i] * std_[1] + mean[1], 1e-6);
      EXPECT_NEAR(x[i] * std_[0] + mean[0], x[2 * P + i] * std_[2] + mean[2], 1e-6);
    }
  }
  PhotometricOptions all;
  all.brightness = all.contrast = all.saturation = 0.4;
  all.grayscale_p = 0.5;
  all.blur_p = 0.5;
  all.noise_p = 0.5;
  EXPECT_TRUE(all.any());
  std::vector<float> a = normalized, b = normalized, c = normalized;
  clip::Rng ra(5), rb(5), rc(6);
  apply_photometric(a.data(), kSize, mean, std_, all, ra);
  apply_photometric(b.data(), kSize, mean, std_, all, rb);
  apply_photometric(c.data(), kSize, mean, std_, all, rc);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Bad values are refused with the flag's name.
  PhotometricOptions bad;
  bad.blur_p = 0.5;
  bad.blur_kernel = 2 * kSize + 1;
  EXPECT_THROW(bad.validate(kSize), clip::Error);
  bad.blur_kernel = 5;
  bad.blur_sigma = {0.0, 1.0};
  EXPECT_THROW(bad.validate(kSize), clip::Error);
  bad.blur_sigma = {0.1, 1.0};
  EXPECT_NO_THROW(bad.validate(kSize));
  bad.grayscale_p = -0.1;
  EXPECT_THROW(bad.validate(kSize), clip::Error);
}
