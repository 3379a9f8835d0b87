// Dataset feature extraction: every image decoded and preprocessed (in worker threads) reaches
// the encoder in order, batches of any size give the same features, and the .npy cache is
// reused (the encoder is not called again) and keyed by model, dataset and preprocessing.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/datasets.h"
#include "core/error.h"
#include "core/io.h"
#include "eval/corrupt.h"
#include "eval/features.h"

using namespace clip::eval;
using namespace clip::data;
namespace fs = std::filesystem;

namespace {

Dataset make_set(const std::string& root, int n) {
  fs::remove_all(root);
  for (int i = 0; i < n; ++i) {
    clip::Image im;
    im.width = 10 + i;  // different sizes: resize and crop differ per image
    im.height = 8;
    im.channels = 3;
    im.mode = "RGB";
    im.pixels.assign(size_t(im.width) * im.height * 3, uint8_t(20 * i));
    const std::string dir = root + "/c" + std::to_string(i % 2);
    fs::create_directories(dir);
    auto png = encode_png_rgb(im);
    clip::write_file_atomic(dir + "/" + std::to_string(i) + ".png", png.data(), png.size());
  }
  return open_class_folders(root);
}

// Encoder: the mean of each channel of each image (a function of the pixels alone).
struct MeanEncoder {
  int S, calls = 0;
  void operator()(const float* px, int b, float* out) {
    ++calls;
    for (int i = 0; i < b; ++i)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int k = 0; k < S * S; ++k) s += px[(size_t(i) * 3 + c) * S * S + k];
        out[i * 3 + c] = float(s / (S * S));
      }
  }
};

}  // namespace

TEST(EvalFeatures, BatchingOrderAndCache) {
  const std::string root = std::string(CLIP_BINARY_DIR) + "/eval_tmp/features_set";
  const std::string cache = std::string(CLIP_BINARY_DIR) + "/eval_tmp/features_cache";
  fs::remove_all(cache);
  Dataset d = make_set(root, 7);
  clip::PreprocessConfig cfg;
  cfg.image_size = 16;
  MeanEncoder enc{16};
  FeatureOptions fo;
  fo.batch_size = 3;
  fo.progress = false;
  fo.model_key = "fake";
  auto encode = [&](const float* px, int b, float* out) { enc(px, b, out); };
  auto a = image_features(d, cfg, 3, encode, fo);
  EXPECT_EQ(enc.calls, 3);  // 7 images in batches of 3
  fo.batch_size = 64;
  auto b = image_features(d, cfg, 3, encode, fo);
  EXPECT_EQ(a, b);
  // Sample i is image i: its channel means rise with its grey level (20 * index).
  for (size_t i = 1; i < d.size(); ++i) {
    const int gi = std::stoi(fs::path(d.samples[i].path).stem().string());
    const int g0 = std::stoi(fs::path(d.samples[i - 1].path).stem().string());
    if (gi > g0) {
      EXPECT_GT(a[i * 3], a[(i - 1) * 3]);
    }
  }
  // With a cache: the first call writes it, the second reads it without encoding.
  fo.cache_dir = cache;
  enc.calls = 0;
  auto c1 = image_features(d, cfg, 3, encode, fo);
  EXPECT_EQ(enc.calls, 1);
  auto c2 = image_features(d, cfg, 3, encode, fo);
  EXPECT_EQ(enc.calls, 1);
  EXPECT_EQ(c1, a);
  EXPECT_EQ(c2, a);
  // Another model key or preprocessing is another cache entry.
  const std::string k1 = feature_cache_key("fake", d, cfg, 3);
  EXPECT_NE(k1, feature_cache_key("other", d, cfg, 3));
  clip::PreprocessConfig cfg2 = cfg;
  cfg2.image_size = 17;
  EXPECT_NE(k1, feature_cache_key("fake", d, cfg2, 3));
  EXPECT_TRUE(fs::exists(cache + "/features-" + k1 + ".npy"));
}

TEST(EvalFeatures, BadImageNamesTheFile) {
  const std::string root = std::string(CLIP_BINARY_DIR) + "/eval_tmp/features_bad";
  Dataset d = make_set(root, 2);
  clip::write_file_atomic(d.samples[1].path, std::string("not a png"));
  clip::PreprocessConfig cfg;
  cfg.image_size = 16;
  MeanEncoder enc{16};
  FeatureOptions fo;
  fo.progress = false;
  try {
    image_features(d, cfg, 3, [&](const float* px, int b, float* out) { enc(px, b, out); }, fo);
    FAIL() << "no error";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find(d.samples[1].path), std::string::npos) << e.what();
  }
}
