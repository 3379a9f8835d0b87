// Pixel parity with Pillow 9.4: decoding (mode and pixels), convert("RGB"), and the reference
// preprocessing (Resize + CenterCrop/pad + convert + ToTensor + Normalize) on generated images
// of every mode and format and on ../shared/data/sample_photos. The goldens are written at test
// time by tools/image_reference.py into the build folder (they are ~350 MB, too big to commit).
// Tolerance: 0 everywhere. uint8 outputs must be identical; normalised floats are produced by
// the same float32 operations as torch's, so they must be identical too.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "core/io.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {

// The full set (VisionParitySlow, Release only) and a quick subset of small generated images
// (VisionParity, also run under the sanitizers).
fs::path kGoldens;

std::vector<uint8_t> bytes_of(const fs::path& p) { return read_file(p.string()); }

class ParityBase : public ::testing::Test {
 protected:
  static void generate(const fs::path& dir, bool small) {
    kGoldens = dir;
    const fs::path script = fs::path(CLIP_SOURCE_DIR) / "tools" / "image_reference.py";
    const fs::path manifest = kGoldens / "manifest.json";
    std::error_code ec;
    // CTest runs each test case as its own process, several at once: generate under a lock.
    fs::create_directories(kGoldens.parent_path());
    clip::test::FileLock lock(kGoldens.string() + ".lock");
    if (!fs::exists(manifest) || fs::last_write_time(manifest, ec) < fs::last_write_time(script, ec)) {
      const std::string cmd = std::string(CLIP_PYTHON) + " " + script.string() + " goldens " +
                              kGoldens.string() + " --shared " + CLIP_SHARED_DATA + (small ? " --small" : "") +
                              " > " + kGoldens.string() + ".log 2>&1";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference script failed: " << cmd;
    }
    manifest_ = new nlohmann::json(nlohmann::json::parse(read_text_file(manifest.string())));
  }
  static void TearDownTestSuite() { delete manifest_; manifest_ = nullptr; }

  static Image load_case(const nlohmann::json& c) {
    if (c["source"] != "raw") {
      fs::path src = c["source"].get<std::string>();
      if (src.is_relative()) src = kGoldens / src;
      return decode_image_file(src.string());
    }
    // Modes no file carries (PA, P, I;16): the decoded bytes and palette from Pillow.
    Image img;
    img.width = c["width"];
    img.height = c["height"];
    img.mode = c["mode"];
    img.channels = img.mode == "PA" ? 2 : 1;
    img.pixels = bytes_of(kGoldens / c["decoded"].get<std::string>());
    if (c.contains("raw_palette")) img.palette = bytes_of(kGoldens / c["raw_palette"].get<std::string>());
    return img;
  }

  static PreprocessConfig config_of(const nlohmann::json& j) {
    PreprocessConfig cfg;
    cfg.image_size = j["size"];
    const std::string interp = j["interp"], mode = j["mode"];
    cfg.interpolation = interp == "bilinear" ? Interpolation::Bilinear
                        : interp == "nearest" ? Interpolation::Nearest
                                              : Interpolation::Bicubic;
    cfg.resize_mode = mode == "longest" ? ResizeMode::LongestPad
                      : mode == "squash" ? ResizeMode::Squash
                                         : ResizeMode::ShortestCrop;
    cfg.fill = j["fill"];
    return cfg;
  }

  static nlohmann::json* manifest_;
};
nlohmann::json* ParityBase::manifest_ = nullptr;

class VisionParity : public ParityBase {
 protected:
  static void SetUpTestSuite() { generate(fs::path(CLIP_BINARY_DIR) / "vision_goldens_small", true); }
  static constexpr int kMinDecoded = 50, kMinOutputs = 300, kMinTensors = 50;
};
class VisionParitySlow : public ParityBase {
 protected:
  static void SetUpTestSuite() { generate(fs::path(CLIP_BINARY_DIR) / "vision_goldens", false); }
  static constexpr int kMinDecoded = 120, kMinOutputs = 900, kMinTensors = 130;
};

int max_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
  return m;
}

}  // namespace

#define PARITY_TESTS(Fixture)                                   \
TEST_F(Fixture, DecodeGivesPillowModeAndPixels) { \
  int checked = 0; \
  for (const auto& c : (*manifest_)["cases"]) { \
    if (c["source"] == "raw") continue; \
    SCOPED_TRACE(c["name"].get<std::string>()); \
    const Image img = load_case(c); \
    EXPECT_EQ(img.mode, c["mode"].get<std::string>()); \
    ASSERT_EQ(img.width, c["width"].get<int>()); \
    ASSERT_EQ(img.height, c["height"].get<int>()); \
    const auto want = bytes_of(kGoldens / c["decoded"].get<std::string>()); \
    ASSERT_EQ(img.pixels.size(), want.size()); \
    EXPECT_EQ(max_diff(img.pixels, want), 0); \
    if (c["decrgb"].get<bool>()) { \
      const auto rgb = convert_to_rgb(img); \
      const fs::path f = img.mode == "RGB" ? kGoldens / c["decoded"].get<std::string>()         \
                                           : kGoldens / (c["name"].get<std::string>() + ".decrgb"); \
      EXPECT_EQ(max_diff(rgb.pixels, bytes_of(f)), 0);                                           \
    } \
    ++checked; \
  } \
  EXPECT_GT(checked, kMinDecoded); \
} \
 \
TEST_F(Fixture, PreprocessMatchesPillowExactly) { \
  int checked = 0, tensors = 0; \
  for (const auto& c : (*manifest_)["cases"]) { \
    const std::string name = c["name"]; \
    const Image img = load_case(c); \
    for (const auto& o : c["outputs"]) { \
      SCOPED_TRACE(name + " " + o["config"].dump()); \
      const PreprocessConfig cfg = config_of(o["config"]); \
      if (o.contains("error")) { \
        /* Pillow refuses these (it cannot resample "I;16" with a filter, nor resize to a    \
           zero side); we produce an image instead (docs/images.md). It must not crash. */  \
        EXPECT_NO_THROW(preprocess_to_rgb8(img, cfg)); \
        continue; \
      } \
      const Image rgb = preprocess_to_rgb8(img, cfg); \
      ASSERT_EQ(rgb.width, cfg.image_size); \
      ASSERT_EQ(rgb.height, cfg.image_size); \
      const auto want = bytes_of(kGoldens / o["rgb8"].get<std::string>()); \
      ASSERT_EQ(rgb.pixels.size(), want.size()); \
      EXPECT_EQ(max_diff(rgb.pixels, want), 0); \
      ++checked; \
      if (o.contains("npy")) { \
        std::vector<int64_t> shape; \
        const auto ref = read_npy_f32((kGoldens / o["npy"].get<std::string>()).string(), shape); \
        const int S = cfg.image_size; \
        ASSERT_EQ(ref.size(), size_t(3) * S * S); \
        std::vector<float> got(ref.size()); \
        preprocess_image(img, cfg, got.data()); \
        float worst = 0; \
        for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i])); \
        EXPECT_EQ(worst, 0.0f); \
        ++tensors; \
      } \
    } \
  } \
  EXPECT_GT(checked, kMinOutputs); \
  EXPECT_GT(tensors, kMinTensors); \
}

PARITY_TESTS(VisionParity)
PARITY_TESTS(VisionParitySlow)
