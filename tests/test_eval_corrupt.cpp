// Corruptions: reproducible for a seed, stronger with severity, each doing what it says
// (grayscale -> R=G=B, contrast -> smaller spread, pixelate -> constant blocks, blur -> keeps
// the mean of a smooth image), and the PNG/JPEG outputs decode back through the vision module.
#include <gtest/gtest.h>

#include <cmath>

#include "data/datasets.h"
#include "core/error.h"
#include "eval/corrupt.h"

using namespace clip::eval;
using namespace clip::data;

static clip::Image pattern(int w, int h) {
  clip::Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.mode = "RGB";
  im.pixels.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.pixels[(size_t(y) * w + x) * 3];
      p[0] = uint8_t((x * 255) / (w - 1));
      p[1] = uint8_t((y * 255) / (h - 1));
      p[2] = uint8_t(((x * 7 + y * 13) % 23) * 11);  // texture that no block size aligns with
    }
  return im;
}

static double mean_abs_diff(const clip::Image& a, const clip::Image& b) {
  double s = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
  return s / double(a.pixels.size());
}

TEST(EvalCorrupt, SeverityAndReproducibility) {
  const auto img = pattern(48, 40);
  for (auto& name : corruption_names()) {
    SCOPED_TRACE(name);
    const Corruption c = parse_corruption(name);
    double prev = -1, first = 0;
    // Monotone for the corruptions whose strength grows smoothly; JPEG quality steps can tie,
    // so only its ends are compared; pixelate's pixel error saturates on a fine texture (its
    // block structure is checked in EachDoesWhatItSays).
    const bool monotone = c != Corruption::Pixelate && c != Corruption::Jpeg;
    for (int s = 1; s <= 5; ++s) {
      auto a = corrupt_image(img, c, s, 42);
      auto b = corrupt_image(img, c, s, 42);
      ASSERT_EQ(a.width, img.width);
      ASSERT_EQ(a.height, img.height);
      EXPECT_EQ(a.pixels, b.pixels);  // same seed, same pixels
      const double d = mean_abs_diff(img, a);
      EXPECT_GT(d, 0.5) << "severity " << s;
      if (monotone) {
        EXPECT_GT(d, prev) << "severity " << s;
      }
      if (s == 1) first = d;
      if (s == 5 && c == Corruption::Jpeg) {
        EXPECT_GT(d, first);
      }
      prev = d;
    }
  }
  auto n1 = corrupt_image(img, Corruption::GaussianNoise, 3, 1), n2 = corrupt_image(img, Corruption::GaussianNoise, 3, 2);
  EXPECT_NE(n1.pixels, n2.pixels);
  EXPECT_NE(sample_seed(0, "a/1.png"), sample_seed(0, "a/2.png"));
  EXPECT_THROW(corrupt_image(img, Corruption::Contrast, 6, 0), clip::Error);
  EXPECT_THROW(parse_corruption("fog"), clip::Error);
}

TEST(EvalCorrupt, EachDoesWhatItSays) {
  const auto img = pattern(64, 64);
  auto g = corrupt_image(img, Corruption::Grayscale, 5, 0);
  for (size_t i = 0; i < g.pixels.size(); i += 3) {
    EXPECT_EQ(g.pixels[i], g.pixels[i + 1]);
    EXPECT_EQ(g.pixels[i], g.pixels[i + 2]);
  }
  auto spread = [](const clip::Image& im) {
    double m = 0, v = 0;
    for (auto p : im.pixels) m += p;
    m /= double(im.pixels.size());
    for (auto p : im.pixels) v += (p - m) * (p - m);
    return std::sqrt(v / double(im.pixels.size()));
  };
  auto c = corrupt_image(img, Corruption::Contrast, 1, 0);
  EXPECT_NEAR(spread(c) / spread(img), 0.4, 0.02);
  auto p = corrupt_image(img, Corruption::Pixelate, 5, 0);  // 64 * 0.25 = 16 blocks of 4 px
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x)
      EXPECT_EQ(p.pixels[(size_t(y) * 64 + x) * 3], p.pixels[(size_t(y / 4 * 4) * 64 + x / 4 * 4) * 3]);
  auto b = corrupt_image(img, Corruption::GaussianBlur, 5, 0);
  double ma = 0, mb = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i) { ma += img.pixels[i]; mb += b.pixels[i]; }
  EXPECT_NEAR(ma / mb, 1.0, 0.02);
}

TEST(EvalCorrupt, FilesDecodeBack) {
  const auto img = pattern(40, 30);
  std::string ext;
  auto png = corrupt_to_file(img, Corruption::GaussianNoise, 2, 7, ext);
  EXPECT_EQ(ext, ".png");
  auto back = clip::decode_image_memory(png.data(), png.size(), "noise.png");
  EXPECT_EQ(back.pixels, corrupt_image(img, Corruption::GaussianNoise, 2, 7).pixels);  // lossless
  auto jpg = corrupt_to_file(img, Corruption::Jpeg, 5, 0, ext);
  EXPECT_EQ(ext, ".jpg");
  auto dj = clip::decode_image_memory(jpg.data(), jpg.size(), "q7.jpg");
  EXPECT_EQ(dj.width, 40);
  EXPECT_EQ(dj.pixels, corrupt_image(img, Corruption::Jpeg, 5, 0).pixels);
}
