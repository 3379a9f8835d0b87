// Bad input never crashes: truncated, corrupted, empty, zero-size, unknown and too-large images
// of every format give a clip::Error that names the input. Runs under ASan/UBSan as well.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/io.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {

const fs::path kData = fs::path(CLIP_SOURCE_DIR) / "tests" / "data" / "vision";

std::vector<std::string> sample_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kData)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Decodes, and if that works also preprocesses (a decoded image must always be usable).
// Returns "" on success or the error message.
std::string try_decode(const std::vector<uint8_t>& b, const std::string& name, const DecodeOptions& opt = {}) {
  try {
    Image img = decode_image_memory(b.data(), b.size(), name, opt);
    EXPECT_GT(img.width, 0);
    EXPECT_GT(img.height, 0);
    EXPECT_EQ(img.pixels.size(), size_t(img.width) * img.height * img.channels * img.bytes_per_sample());
    PreprocessConfig cfg;
    cfg.image_size = 16;
    std::vector<float> out(3 * 16 * 16);
    preprocess_image(img, cfg, out.data());
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }

}  // namespace

TEST(VisionErrors, SamplesDecode) {
  const auto files = sample_files();
  ASSERT_GE(files.size(), 10u);
  for (const auto& f : files) EXPECT_EQ(try_decode(read_file(f), f), "") << f;
}

TEST(VisionErrors, TruncatedFilesFailWithTheirName) {
  for (const auto& f : sample_files()) {
    const auto full = read_file(f);
    const std::string name = "truncated/" + fs::path(f).filename().string();
    // Every prefix: none may crash; each failure names the input.
    int failures = 0;
    for (size_t n = 0; n < full.size(); ++n) {
      std::vector<uint8_t> part(full.begin(), full.begin() + long(n));
      const std::string err = try_decode(part, name);
      if (!err.empty()) {
        ++failures;
        EXPECT_EQ(err.rfind(name + ": ", 0), 0u) << err;
      }
    }
    EXPECT_GT(failures, int(full.size()) / 2) << f;
    // Cut in the middle of the pixel data: always an error (Pillow: "image file is truncated").
    std::vector<uint8_t> half(full.begin(), full.begin() + long(full.size() * 2 / 3));
    EXPECT_NE(try_decode(half, name), "") << f;
  }
}

TEST(VisionErrors, CorruptBytesNeverCrash) {
  std::mt19937 rng(42);
  for (const auto& f : sample_files()) {
    const auto full = read_file(f);
    for (int trial = 0; trial < 300; ++trial) {
      auto b = full;
      const int flips = 1 + int(rng() % 8);
      for (int i = 0; i < flips; ++i) b[rng() % b.size()] ^= uint8_t(1 + rng() % 255);
      const std::string err = try_decode(b, "corrupt.bin");
      if (!err.empty()) {
        EXPECT_EQ(err.rfind("corrupt.bin: ", 0), 0u) << err;
      }
    }
  }
}

TEST(VisionErrors, EmptyAndUnknown) {
  EXPECT_NE(try_decode({}, "empty.png").find("empty.png: empty file"), std::string::npos);
  const std::string text = "hello, this is not an image";
  const std::string err = try_decode(std::vector<uint8_t>(text.begin(), text.end()), "notes.jpg");
  EXPECT_NE(err.find("notes.jpg: unknown image format"), std::string::npos) << err;
  // The format comes from the bytes, not the name: a PNG called .jpg decodes as PNG.
  EXPECT_EQ(try_decode(read_file((kData / "tiny_rgb.png").string()), "really_a_png.jpg"), "");
  EXPECT_THROW(decode_image_file((kData / "does_not_exist.png").string()), Error);
}

TEST(VisionErrors, ZeroSizeImages) {
  // BMP with width 0.
  auto bmp = read_file((kData / "tiny_rgb.bmp").string());
  bmp[18] = bmp[19] = bmp[20] = bmp[21] = 0;
  EXPECT_NE(try_decode(bmp, "zero.bmp").find("zero size"), std::string::npos) << try_decode(bmp, "zero.bmp");
  // GIF with a 0x0 screen and frame.
  auto gif = read_file((kData / "tiny_p.gif").string());
  gif[6] = gif[7] = gif[8] = gif[9] = 0;
  for (size_t i = 13 + (3u << ((gif[10] & 7) + 1)); i + 9 < gif.size(); ++i)
    if (gif[i] == 0x2C) { for (int k = 5; k < 9; ++k) gif[i + k] = 0; break; }
  EXPECT_NE(try_decode(gif, "zero.gif"), "");
}

TEST(VisionErrors, PixelLimitGuardsBeforeAllocating) {
  DecodeOptions small;
  small.max_pixels = 100;  // the samples are 16 x 12 = 192 pixels
  for (const auto& f : sample_files()) {
    const std::string err = try_decode(read_file(f), f, small);
    EXPECT_NE(err.find("exceeds the limit of 100 pixels"), std::string::npos) << f << ": " << err;
  }
  // A PNG header claiming 100000 x 100000 pixels: refused at the default limit, no allocation.
  auto png = read_file((kData / "tiny_rgb.png").string());
  auto w = be32(100000);
  std::copy(w.begin(), w.end(), png.begin() + 16);
  std::copy(w.begin(), w.end(), png.begin() + 20);
  // Fix the IHDR CRC so that the size check, not the CRC check, rejects it.
  uint32_t crc = 0xffffffffu;
  for (size_t i = 12; i < 12 + 4 + 13; ++i) {
    crc ^= png[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  auto c = be32(~crc);
  std::copy(c.begin(), c.end(), png.begin() + 29);
  const std::string err = try_decode(png, "bomb.png");
  EXPECT_NE(err.find("bomb.png: PNG image of 100000x100000"), std::string::npos) << err;
  EXPECT_NE(err.find("decompression bomb"), std::string::npos) << err;
}

TEST(VisionErrors, BadPreprocessArguments) {
  Image empty;
  std::vector<float> out(3 * 224 * 224);
  EXPECT_THROW(preprocess_image(empty, PreprocessConfig{}, out.data()), Error);
  PreprocessConfig bad;
  bad.image_size = 0;
  const Image img = decode_image_file((kData / "tiny_rgb.png").string());
  EXPECT_THROW(preprocess_image(img, bad, out.data()), Error);
  EXPECT_THROW(load_preprocess_config((kData / "no_such_dir").string()), Error);
  EXPECT_THROW(parse_preprocess_config("{not json", "x.json"), Error);
  EXPECT_THROW(parse_preprocess_config(R"({"preprocess_cfg": {"resize_mode": "zoom"}})", "x.json"), Error);
}
