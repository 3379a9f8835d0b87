// Unit tests of the preprocessing pieces: reference geometry (sizes, crop offsets), config
// loading (HF and open_clip), buffers, EXIF orientation, random resized crop, IDX/NPY arrays,
// the fast JPEG path. Pixel parity with Pillow is in test_vision_parity.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/io.h"
#include "vision/arrays.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {
const fs::path kData = fs::path(CLIP_SOURCE_DIR) / "tests" / "data" / "vision";
const fs::path kShared = CLIP_SHARED_DATA;
}  // namespace

TEST(VisionGeometry, ReferenceSizesAndOffsets) {
  PreprocessConfig cfg;
  auto p = plan_resize(451, 300, cfg);  // reference-facts: 451x300 -> 336x224
  EXPECT_EQ(p.resized_width, 336);
  EXPECT_EQ(p.resized_height, 224);
  EXPECT_EQ(p.crop.x, 56);
  p = plan_resize(640, 427, cfg);  // 640x427 -> 335x224
  EXPECT_EQ(p.resized_width, 335);
  EXPECT_EQ(p.crop.x, 56);  // round(55.5) = 56 (half to even)
  p = plan_resize(301, 224, cfg);  // no resize; crop offset round(38.5) = 38, not 39
  EXPECT_EQ(p.resized_width, 301);
  EXPECT_EQ(p.crop.x, 38);
  EXPECT_EQ(p.crop.width, 224);
  p = plan_resize(1, 300, cfg);
  EXPECT_EQ(p.resized_width, 224);
  EXPECT_EQ(p.resized_height, 67200);
  cfg.resize_mode = ResizeMode::LongestPad;
  p = plan_resize(640, 427, cfg);
  EXPECT_EQ(p.resized_width, 224);
  EXPECT_EQ(p.resized_height, 149);  // round(427 / (640/224))
  EXPECT_EQ(p.pad_top, 37);
  EXPECT_EQ(p.crop.height, 149);
  cfg.resize_mode = ResizeMode::Squash;
  p = plan_resize(640, 427, cfg);
  EXPECT_EQ(p.resized_width, 224);
  EXPECT_EQ(p.resized_height, 224);
}

TEST(VisionGeometry, CenterCropMatchesPlan) {
  Image img = decode_image_file((kData / "tiny_rgb.png").string());
  Image c = center_crop(img, 9);  // 16x12 -> offsets round(3.5)=4, round(1.5)=2
  ASSERT_EQ(c.width, 9);
  EXPECT_EQ(std::memcmp(c.pixels.data(), &img.pixels[(2 * 16 + 4) * 3], 9 * 3), 0);
}

TEST(VisionConfig, HuggingFaceAndOpenClip) {
  auto hf = parse_preprocess_config(R"({
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": true, "do_normalize": true,
    "do_resize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0],
    "resample": 2, "size": {"shortest_edge": 336}})", "hf.json");
  EXPECT_EQ(hf.image_size, 336);
  EXPECT_EQ(hf.interpolation, Interpolation::Bilinear);
  EXPECT_EQ(hf.resize_mode, ResizeMode::ShortestCrop);
  EXPECT_FLOAT_EQ(hf.std[1], 0.5f);
  auto hf_old = parse_preprocess_config(R"({"crop_size": 224, "size": 224, "resample": 3})", "old.json");
  EXPECT_EQ(hf_old.image_size, 224);
  EXPECT_EQ(hf_old.interpolation, Interpolation::Bicubic);
  EXPECT_FLOAT_EQ(hf_old.mean[0], 0.48145466f);
  auto oc = parse_preprocess_config(R"({
    "model_cfg": {"embed_dim": 512, "vision_cfg": {"image_size": 256, "patch_size": 16}},
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                       "resize_mode": "squash", "fill_color": 3}})", "open_clip_config.json");
  EXPECT_EQ(oc.image_size, 256);
  EXPECT_EQ(oc.resize_mode, ResizeMode::Squash);
  EXPECT_EQ(oc.interpolation, Interpolation::Bilinear);
  EXPECT_EQ(oc.fill, 3);
  // From a folder.
  const fs::path dir = fs::path(CLIP_BINARY_DIR) / "vision_cfg_test";
  fs::create_directories(dir);
  write_file_atomic((dir / "open_clip_config.json").string(),
                    std::string(R"({"preprocess_cfg": {"resize_mode": "longest"}})"));
  EXPECT_EQ(load_preprocess_config(dir.string()).resize_mode, ResizeMode::LongestPad);
  try {
    parse_preprocess_config(R"({"image_std": [0, 1, 1]})", "bad_std.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("std"), std::string::npos);
  }
}

TEST(VisionBuffers, RgbBufferEqualsDecodedImage) {
  const Image img = decode_image_file((kData / "tiny_rgb.png").string());
  PreprocessConfig cfg;
  cfg.image_size = 10;
  std::vector<float> a(300), b(300);
  preprocess_image(img, cfg, a.data());
  preprocess_rgb(img.pixels.data(), img.width, img.height, cfg, b.data());
  EXPECT_EQ(a, b);
  // Normalisation is ((v / 255) - mean) / std per channel, CHW.
  const Image rgb = preprocess_to_rgb8(img, cfg);
  EXPECT_FLOAT_EQ(a[0], (rgb.pixels[0] / 255.0f - cfg.mean[0]) / cfg.std[0]);
  EXPECT_FLOAT_EQ(a[100 + 5], (rgb.pixels[5 * 3 + 1] / 255.0f - cfg.mean[1]) / cfg.std[1]);
}

TEST(VisionExif, OrientationOffByDefaultAppliedOnRequest) {
  const std::string f = (kData / "tiny_orient6.jpg").string();
  const Image stored = decode_image_file(f);
  EXPECT_EQ(stored.width, 16);
  EXPECT_EQ(stored.height, 12);
  DecodeOptions opt;
  opt.exif_orient = true;
  const Image turned = decode_image_file(f, opt);
  ASSERT_EQ(turned.width, 12);
  ASSERT_EQ(turned.height, 16);
  // Orientation 6: rotate 90 degrees clockwise; output (x, y) = stored (y, H - 1 - x).
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 12; ++x)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(turned.pixels[(size_t(y) * 12 + x) * 3 + c], stored.pixels[(size_t(11 - x) * 16 + y) * 3 + c]);
  // All eight orientations are permutations that preserve the pixel multiset and sizes.
  for (int o = 1; o <= 8; ++o) {
    const Image t = apply_exif_orientation(stored, o);
    EXPECT_EQ(size_t(t.width) * t.height, size_t(16 * 12));
    EXPECT_EQ(o >= 5 ? t.width : t.height, 12);
  }
}

TEST(VisionAugment, RandomResizedCropIsSeededAndInBounds) {
  const Image img = decode_image_file((kData / "tiny_rgb.png").string());
  PreprocessConfig cfg;
  cfg.image_size = 8;
  std::vector<float> a(192), b(192), c(192);
  std::mt19937_64 r1(123), r2(123), r3(124);
  random_resized_crop(img, cfg, r1, a.data());
  random_resized_crop(img, cfg, r2, b.data());
  EXPECT_EQ(a, b);
  bool any_diff = false;
  for (int i = 0; i < 5 && !any_diff; ++i) {
    random_resized_crop(img, cfg, r3, c.data());
    any_diff = c != a;
  }
  EXPECT_TRUE(any_diff);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const auto p = random_resized_crop_params(640, 427, rng, {0.5, 1.0});
    ASSERT_GE(p.top, 0);
    ASSERT_GE(p.left, 0);
    ASSERT_LE(p.left + p.width, 640);
    ASSERT_LE(p.top + p.height, 427);
    const double area = double(p.width) * p.height / (640.0 * 427.0);
    ASSERT_GT(area, 0.45);
    const double ratio = double(p.width) / p.height;
    ASSERT_GT(ratio, 0.74);
    ASSERT_LT(ratio, 1.35);
  }
  EXPECT_THROW(random_resized_crop_params(10, 10, rng, {0.0, 1.0}), Error);
}

TEST(VisionArrays, MnistFashionMnistAndNpy) {
  const auto mnist = read_idx_images((kShared / "mnist" / "t10k-images-idx3-ubyte.gz").string(), 100);
  ASSERT_EQ(mnist.size(), 100u);
  EXPECT_EQ(mnist[0].width, 28);
  EXPECT_EQ(mnist[0].mode, "L");
  const auto labels = read_idx_labels((kShared / "mnist" / "t10k-labels-idx1-ubyte.gz").string());
  ASSERT_EQ(labels.size(), 10000u);
  EXPECT_EQ(labels[0], 7);  // the first MNIST test digit is a 7
  const auto fashion = read_idx_labels((kShared / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").string());
  EXPECT_EQ(fashion[0], 9);  // ... and the first Fashion-MNIST test item an ankle boot
  PreprocessConfig cfg;
  std::vector<float> out(3 * 224 * 224);
  preprocess_image(mnist[0], cfg, out.data());  // 28 -> 224 upscale of an "L" image
  EXPECT_FLOAT_EQ(out[0], (0.0f - cfg.mean[0]) / cfg.std[0]);
  const auto faces = read_npy_images((kShared / "sample_photos" / "skimage" / "lfw_subset.npy").string());
  ASSERT_EQ(faces.size(), 200u);
  EXPECT_EQ(faces[0].width, 25);
  EXPECT_THROW(read_idx_images((kData / "tiny_rgb.png").string()), Error);
  EXPECT_THROW(read_npy_images((kData / "tiny_rgb.png").string()), Error);
}

TEST(VisionFastPath, ScaledJpegDecodeKeepsShortSide) {
  // Large JPEG from the goldens is not committed; use a sample photo (640x427): draft 200 -> 1/2.
  const std::string f = (kShared / "sample_photos" / "sklearn" / "china.jpg").string();
  DecodeOptions opt;
  opt.jpeg_draft_min_side = 200;
  const Image half = decode_image_file(f, opt);
  EXPECT_EQ(half.width, 320);
  EXPECT_EQ(half.height, 214);
  opt.jpeg_draft_min_side = 224;  // 1/2 would give 214 < 224: full size
  EXPECT_EQ(decode_image_file(f, opt).width, 640);
  // Non-JPEG inputs ignore the option.
  EXPECT_EQ(decode_image_file((kData / "tiny_rgb.png").string(), opt).width, 16);
}
