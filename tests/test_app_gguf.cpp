// clip.cpp's GGUF files: read (core/gguf + model/gguf_clip) against files written by PyPI's
// `gguf` package (llama.cpp's writer) in clip.cpp's converter layout (tools/gguf_checkpoints.py),
// and written by `clip convert`:
//   * every block format decodes exactly as gguf-py decodes it (q8_0, q4_0, q4_1, q5_0, q5_1);
//   * features against the f32 safetensors of the same weights: cosine >= 0.99999 (f32 file:
//     its patch embedding is f16, as clip.cpp stores it), >= 0.9999 (f16), >= 0.999 (q8_0);
//     on ViT-B/32 (GgufSlow) >= 0.999 for q8_0 and >= 0.99 for `clip convert`'s q4_0 (issue 17's
//     bounds; its text blocks are q8_0); q4_0 / q8_0 weights run on the block kernels as stored;
//   * `clip convert` writes the same tensor names, types and shapes and the same metadata keys
//     as the Python writer, and bit-identical q8_0 / q4_0 blocks (ggml's reference quantizers);
//     its output loads back;
//   * damaged files are clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"
#include "core/io.h"
#include "model/checkpoint_writer.h"
#include "model/clip_model.h"
#include "model/config.h"
#include "model/weights.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const std::string& files() {
  static const std::string dir = [] {
    const std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/gguf_checkpoints";
    const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/gguf_checkpoints.py --out " + d +
                            " > " + d + ".log 2>&1";
    return clip::test::generate_once(d + "/gguf/model-q5_1.attn_q.npy", cmd) ? d : std::string();
  }();
  return dir;
}

class Gguf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (files().empty())
      GTEST_FAIL() << "tools/gguf_checkpoints.py failed (needs python3-torch and PyPI gguf, scripts/install-deps.sh; see "
                   << CLIP_BINARY_DIR << "/test_tmp/gguf_checkpoints.log)";
  }
};

// Image and text features of a model on fixed random pixels and token ids.
std::vector<float> features(const std::string& path, const clip::LoadOptions& options = {}) {
  clip::ClipModel m(clip::load_checkpoint(path, options));
  const int S = m.image_size(), D = m.embed_dim(), B = 3, ctx = m.config().text.context_length;
  std::mt19937 rng(5);
  std::normal_distribution<float> g;
  std::vector<float> px(size_t(B) * 3 * S * S);
  for (auto& x : px) x = g(rng);
  std::vector<int32_t> ids(size_t(B) * ctx, 0);
  for (int b = 0; b < B; ++b) {
    ids[size_t(b) * ctx] = 49406;
    for (int t = 1; t < 4 + 2 * b; ++t) ids[size_t(b) * ctx + t] = 300 + 97 * t + b;
    ids[size_t(b) * ctx + 4 + 2 * b] = 49407;
  }
  std::vector<float> out(size_t(2 * B) * D);
  m.encode_images(px.data(), B, out.data());
  m.encode_texts(ids.data(), B, ctx, out.data() + size_t(B) * D);
  return out;
}

// The smallest cosine over the rows of two feature matrices of `rows` rows.
double min_cosine(const std::vector<float>& a, const std::vector<float>& b, int rows) {
  return clip::test::min_row_cosine(a.data(), b.data(), a.size(), a.size() / size_t(rows));
}

TEST_F(Gguf, BlockFormatsDecodeAsGgufPyDecodesThem) {
  for (const char* q : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}) {
    const clip::GgufFile f = clip::GgufFile::open(files() + "/gguf/model-" + q + ".gguf");
    const clip::GgufTensorInfo* info = nullptr;
    for (const auto& t : f.tensors())
      if (t.name == "t.blk.0.attn_q.weight") info = &t;
    ASSERT_TRUE(info) << q;
    EXPECT_EQ(clip::ggml_type_name(info->type), std::string(q));
    std::vector<int64_t> shape;
    const std::vector<float> want = clip::read_npy_f32(files() + "/gguf/model-" + q + ".attn_q.npy", shape);
    const clip::Tensor got = f.to_f32(*info);
    ASSERT_EQ(got.shape, shape) << q;
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got.f32()[i], want[i]) << q << " element " << i;
  }
}

TEST_F(Gguf, FeaturesStayWithinTheBoundsOfEachType) {
  const std::vector<float> ref = features(files() + "/hf");
  // Issue 17's bounds for f32, f16 and 8-bit. This tiny model's random weights suffer more from
  // 4- and 5-bit blocks in every weight (these files, as clip.cpp's quantizer writes them) than a
  // trained model's (measured 0.972 q4_0, 0.975 q4_1, 0.9885 q5_0, 0.990 q5_1): 0.97 guards
  // against regressions here; the issue's 0.99 for 4-bit is checked on ViT-B/32 with `clip
  // convert`'s q4_0 (GgufSlow.VitB32Within...).
  const std::map<std::string, double> bound = {{"f32", 0.99999}, {"f16", 0.9999}, {"q8_0", 0.999},
                                               {"q4_0", 0.97},   {"q4_1", 0.97},   {"q5_0", 0.98}, {"q5_1", 0.98}};
  for (const auto& [type, min] : bound) {
    const double c = min_cosine(features(files() + "/gguf/model-" + type + ".gguf"), ref, 6);
    std::printf("GGUF %s: min feature cosine to f32 safetensors %.7f\n", type.c_str(), c);
    EXPECT_GE(c, min) << type;
  }
  const clip::LoadedCheckpoint ck = clip::load_checkpoint(files() + "/gguf/model-f16.gguf");
  EXPECT_EQ(ck.scheme, clip::NamingScheme::HuggingFace);
  EXPECT_NEAR(std::exp(ck.get("logit_scale").f32()[0]), 100.0, 1e-3);  // GGUF has none: CLIP's trained value
}

// q4_0 and q8_0 weights of the transformer blocks run on the block kernels as stored (4 or 8
// bits a weight, uint8 inputs), not widened to f32: every block linear layer is found in
// blocks, and the features differ (by the inputs' 8-bit rounding only: cosine >= 0.999) from
// those of the same dequantized weights run in f32 (the file converted to f32 safetensors).
// Other block types (q4_1, q5_x) run as q8_0 blocks.
TEST_F(Gguf, QuantizedBlocksRunAsStored) {
  const std::string out = std::string(CLIP_BINARY_DIR) + "/test_tmp/gguf_blocks_" + std::to_string(::getpid());
  fs::create_directories(out);
  for (const std::string type : {"q4_0", "q8_0"}) {
    const std::string path = files() + "/gguf/model-" + type + ".gguf";
    const clip::LoadedCheckpoint ck = clip::load_checkpoint(path);
    const int layers = ck.config.vision.layers + ck.config.text.layers;
    EXPECT_EQ(ck.block_weights.size(), size_t(4 * layers)) << type;  // in_proj, out_proj, c_fc, c_proj
    for (const auto& [name, b] : ck.block_weights) {
      EXPECT_STREQ(clip::block_format_name(b.format), type.c_str()) << name;
      EXPECT_EQ(ck.get(name).shape, (std::vector<int64_t>{b.rows, b.cols})) << name;
    }
    const std::string f32 = out + "/" + type + "-as-f32.safetensors";
    clip::test::CliRun r = clip::test::run_clip("convert " + path + " " + f32 + " --type f32", out);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<float> blocks = features(path), widened = features(f32);
    double max_diff = 0;
    for (size_t i = 0; i < blocks.size(); ++i) max_diff = std::max(max_diff, double(std::abs(blocks[i] - widened[i])));
    const double c = min_cosine(blocks, widened, 6);
    std::printf("GGUF %s on block kernels vs the same weights in f32: min cosine %.7f, max |diff| %.2e\n",
                type.c_str(), c, max_diff);
    EXPECT_GE(c, 0.999) << type;
    EXPECT_GT(max_diff, 0.0) << type << ": the same numbers as f32 products: not run on the blocks?";
  }
  // q4_1, q5_0, q5_1 (no kernel of their own): re-quantized to q8_0 blocks at load.
  for (const char* type : {"q4_1", "q5_0", "q5_1"}) {
    const clip::LoadedCheckpoint ck = clip::load_checkpoint(files() + "/gguf/model-" + type + ".gguf");
    EXPECT_EQ(ck.block_weights.size(), size_t(4 * (ck.config.vision.layers + ck.config.text.layers))) << type;
    for (const auto& [name, b] : ck.block_weights) EXPECT_EQ(b.format, clip::BlockFormat::Q8_0) << type << " " << name;
  }
  fs::remove_all(out);
}

// An inference load (LoadOptions::blocks_without_f32, what clip::Model and the commands use)
// does not dequantize the block-stored weights at all: they read as zeros, every other tensor
// as in a full load, and the features are bit-identical to a full load's (the network never
// reads those f32 values).
TEST_F(Gguf, InferenceLoadLeavesBlockWeightsUndequantized) {
  for (const std::string type : {"q4_0", "q8_0"}) {
    SCOPED_TRACE(type);
    const std::string path = files() + "/gguf/model-" + type + ".gguf";
    clip::LoadOptions lean;
    lean.blocks_without_f32 = true;
    const clip::LoadedCheckpoint full = clip::load_checkpoint(path), light = clip::load_checkpoint(path, lean);
    ASSERT_FALSE(light.block_weights.empty());
    ASSERT_EQ(light.tensors.size(), full.tensors.size());
    for (const auto& [name, t] : full.tensors) {
      const clip::Tensor& u = light.get(name, t.shape);
      ASSERT_EQ(u.dtype, t.dtype) << name;
      const bool in_blocks = light.block_weights.count(name) != 0;
      const auto* a = static_cast<const uint8_t*>(t.data);
      const auto* b = static_cast<const uint8_t*>(u.data);
      if (in_blocks) {
        EXPECT_TRUE(std::all_of(b, b + u.nbytes(), [](uint8_t x) { return x == 0; })) << name;
        EXPECT_FALSE(std::all_of(a, a + t.nbytes(), [](uint8_t x) { return x == 0; })) << name;
      } else {
        EXPECT_EQ(std::memcmp(a, b, t.nbytes()), 0) << name;
      }
    }
    EXPECT_EQ(features(path, lean), features(path));
  }
}

TEST_F(Gguf, ConvertWritesWhatClipCppsConverterWrites) {
  const std::string out = std::string(CLIP_BINARY_DIR) + "/test_tmp/gguf_convert_" + std::to_string(::getpid());
  fs::create_directories(out);
  for (const char* type : {"f32", "f16", "q8_0", "q4_0"}) {
    const std::string ours = out + "/model-" + type + ".gguf";
    const std::string theirs = files() + "/gguf/model-" + type + ".gguf";
    clip::test::CliRun r = clip::test::run_clip("convert " + files() + "/hf " + ours + " --type " + type, out);
    ASSERT_EQ(r.status, 0) << r.err;
    const clip::GgufFile a = clip::GgufFile::open(ours), b = clip::GgufFile::open(theirs);
    for (const auto& [key, v] : b.metadata()) EXPECT_TRUE(a.find(key)) << type << ": key " << key;
    EXPECT_EQ(a.get_strings("tokenizer.ggml.tokens"), b.get_strings("tokenizer.ggml.tokens"));
    EXPECT_EQ(a.get_uint("general.file_type"), b.get_uint("general.file_type")) << type;
    ASSERT_EQ(a.tensors().size(), b.tensors().size()) << type;
    std::map<std::string, const clip::GgufTensorInfo*> by_name;
    for (const auto& t : b.tensors()) by_name[t.name] = &t;
    const std::string abytes = clip::read_text_file(ours), bbytes = clip::read_text_file(theirs);
    for (const auto& t : a.tensors()) {
      ASSERT_TRUE(by_name.count(t.name)) << type << ": " << t.name;
      const clip::GgufTensorInfo& u = *by_name[t.name];
      EXPECT_EQ(t.shape, u.shape) << t.name;
      // One deliberate difference: q4_0 keeps all but the image tower's blocks in q8_0.
      const bool image_block = t.name.rfind("v.blk.", 0) == 0;
      if (std::string(type) == "q4_0" && !image_block && u.type == clip::GgmlType::Q4_0)
        EXPECT_EQ(t.type, clip::GgmlType::Q8_0) << t.name;
      else
        EXPECT_EQ(t.type, u.type) << type << ": " << t.name;
      if (t.type == u.type && t.nbytes == u.nbytes) {
        EXPECT_EQ(std::memcmp(abytes.data() + t.offset, bbytes.data() + u.offset, t.nbytes), 0) << type << ": " << t.name;
      }
    }
    // And it loads back as the model (q4_0: at least as close to the f32 weights as the
    // all-4-bit file).
    if (std::string(type) == "q4_0") {
      const std::vector<float> ref = features(files() + "/hf");
      const double c_ours = min_cosine(features(ours), ref, 6), c_theirs = min_cosine(features(theirs), ref, 6);
      std::printf("q4_0 written by clip convert: min cosine to f32 %.6f (all weights in q4_0: %.6f)\n", c_ours, c_theirs);
      EXPECT_GT(c_ours, c_theirs);
    } else {
      EXPECT_GE(min_cosine(features(ours), features(theirs), 6), 0.999999) << type;
    }
  }
  clip::test::CliRun r = clip::test::run_clip("convert " + files() + "/hf " + out + "/x.gguf --type q5_0", out);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("f32, f16, q8_0 or q4_0"), std::string::npos) << r.err;
  r = clip::test::run_clip("convert " + files() + "/gguf/model-q8_0.gguf " + out + "/back.safetensors --type f32", out);
  EXPECT_EQ(r.status, 0) << r.err;
  // A ModifiedResNet has no place in clip.cpp's layout: an error naming the output, no file.
  clip::ModelConfig rn = clip::named_model_config("cifar10-rn-tiny");
  rn.text.vocab_size = 49408;  // OpenAI's vocabulary, so that the tokenizer is not what fails
  rn.text.context_length = 77;
  clip::write_model_directory(out + "/rn", clip::random_canonical_tensors(rn, 3), rn, clip::NamingScheme::OpenCLIP);
  r = clip::test::run_clip("convert " + out + "/rn " + out + "/rn.gguf", out);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(out + "/rn.gguf: clip.cpp's GGUF holds ViT towers only"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out + "/rn.gguf"));
  fs::remove_all(out);
}

// ViT-B/32 (the reference model, random weights) through `clip convert` to q8_0 and q4_0: image
// and text features on the reference inputs against the f32 model's.
TEST(GgufSlow, VitB32WithinIssueBoundsAtQ8AndQ4) {
  const std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/gguf_vitb32/ref";
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                          "/tools/reference_model.py write --config ViT-B-32 --schemes hf --goldens --image-batch 2 --out " +
                          d + " > " + d + ".log 2>&1";
  ASSERT_TRUE(clip::test::generate_once(d + "/golden/text_features.npy", cmd)) << "failed: " << cmd;
  std::vector<int64_t> ps, is;
  const std::vector<float> pixels = clip::read_npy_f32(d + "/golden/pixels.npy", ps);
  const std::vector<float> ids_f = clip::read_npy_f32(d + "/golden/text_ids.npy", is);
  std::vector<int32_t> ids(ids_f.begin(), ids_f.end());
  auto run = [&](const std::string& path) {
    clip::ClipModel m(clip::load_checkpoint(path));
    const int D = m.embed_dim();
    std::vector<float> out(size_t(ps[0] + is[0]) * D);
    m.encode_images(pixels.data(), int(ps[0]), out.data());
    m.encode_texts(ids.data(), int(is[0]), int(is[1]), out.data() + size_t(ps[0]) * D);
    return out;
  };
  const std::vector<float> ref = run(d + "/hf");
  const std::string scratch = std::string(CLIP_BINARY_DIR) + "/test_tmp/gguf_vitb32/out_" + std::to_string(::getpid());
  fs::create_directories(scratch);
  // Issue 17's bounds: q8_0 the int8 one (0.999), q4_0 the int4 one (0.99; `clip convert` keeps
  // the text tower's blocks in q8_0: every 2-D weight in 4 bits, as clip.cpp's quantizer writes
  // them, gave 0.954 here).
  for (const auto& [type, min] : std::map<std::string, double>{{"q8_0", 0.999}, {"q4_0", 0.99}}) {
    const std::string out = scratch + "/vitb32-" + type + ".gguf";
    clip::test::CliRun r = clip::test::run_clip("convert " + d + "/hf " + out + " --type " + type, scratch);
    ASSERT_EQ(r.status, 0) << r.err;
    const double c = min_cosine(run(out), ref, int(ps[0] + is[0]));
    std::printf("ViT-B/32 GGUF %s (%.1f MB): min feature cosine to f32 %.6f\n", type.c_str(),
                double(fs::file_size(out)) / 1e6, c);
    EXPECT_GE(c, min) << type;
  }
  fs::remove_all(scratch);
}

TEST_F(Gguf, DamagedFilesAreClearErrors) {
  const std::string whole = clip::read_text_file(files() + "/gguf/model-q4_0.gguf");
  for (size_t cut : {size_t(3), size_t(30), size_t(5000), whole.size() / 2, whole.size() - 10}) {
    auto map = clip::MappedFile::from_bytes(std::vector<uint8_t>(whole.begin(), whole.begin() + long(cut)), "cut.gguf");
    try {
      (void)clip::GgufFile::parse(map);
      FAIL() << "parsed a file cut at " << cut;
    } catch (const clip::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
