// The encoders against the PyTorch reference (tools/reference_model.py, a re-implementation of
// openai/CLIP's model.py): per-layer activations and final features.
//
// Tolerance: max |ours - torch| <= 2e-5 and cosine >= 0.99999 on features of magnitude ~1-5.
// Both sides compute in f32 but sum in different orders (blocked GEMM kernels, vectorised
// LayerNorm reductions, a polynomial exp); each f32 rounding is ~6e-8 relative, and a
// K = 3072 dot product plus 12 residual layers accumulates a few 1e-6 in practice, so 2e-5
// leaves head-room without letting a real error (a wrong bias, mask or head split shifts
// values by 1e-2 or more) pass.
//
//   ModelParity.*      the committed tiny goldens (tests/data/model/tiny), every run
//   ModelSchemes.*     the tiny model written in the three naming schemes (needs torch)
//   FullSizeSlow.*     ViT-B/32 generated into the build folder during the run (needs torch)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "core/threads.h"
#include "model/clip_model.h"
#include "model/weights.h"

namespace clip {
namespace {

namespace fs = std::filesystem;

const std::string kTinyDir = std::string(CLIP_SOURCE_DIR) + "/tests/data/model/tiny";
constexpr double kMaxAbs = 2e-5;
constexpr double kMinCosine = 0.99999;

struct Array {
  std::vector<float> data;
  std::vector<int64_t> shape;
};

Array load_golden(const std::string& dir, const std::string& name) {
  Array a;
  a.data = read_npy_f32(dir + "/golden/" + name + ".npy", a.shape);
  return a;
}

std::vector<int32_t> load_ids(const std::string& dir, int64_t& rows, int64_t& context) {
  Array a = load_golden(dir, "text_ids");
  rows = a.shape.at(0);
  context = a.shape.at(1);
  std::vector<int32_t> ids(a.data.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(a.data[i]);
  return ids;
}

// The tiny architecture, written out so the encoders are tested apart from the loader's
// shape inference (the scheme tests below go through load_checkpoint).
ModelConfig tiny_config() {
  ModelConfig c;
  c.embed_dim = 64;
  c.vision = VisionConfig{};
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 128;
  c.vision.layers = 2;
  c.vision.heads = 2;
  c.vision.mlp_dim = 512;
  c.text.context_length = 16;
  c.text.vocab_size = 256;
  c.text.width = 128;
  c.text.heads = 2;
  c.text.layers = 2;
  c.text.mlp_dim = 512;
  c.activation = Activation::QuickGELU;
  return c;
}

// A LoadedCheckpoint built by hand from an OpenAI-named safetensors file.
LoadedCheckpoint read_by_hand(const std::string& path, const ModelConfig& config) {
  auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
  LoadedCheckpoint ckpt;
  ckpt.config = config;
  ckpt.weights_path = path;
  for (const auto& t : file->tensors()) ckpt.tensors[t.name] = file->to_f32(t);
  ckpt.keepalive = file;
  return ckpt;
}

// Max abs difference and the smallest per-row cosine over rows of `cols`.
void expect_close(const float* got, const float* want, int64_t rows, int64_t cols,
                  const std::string& what, double max_abs = kMaxAbs) {
  double worst = 0, min_cos = 1;
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0, ng = 0, nw = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double g = got[r * cols + c], w = want[r * cols + c];
      worst = std::max(worst, std::abs(g - w));
      dot += g * w;
      ng += g * g;
      nw += w * w;
    }
    if (ng > 0 && nw > 0) min_cos = std::min(min_cos, dot / std::sqrt(ng * nw));
  }
  std::printf("    %-28s max |diff| %.3g, min cosine %.9f\n", what.c_str(), worst, min_cos);
  EXPECT_LE(worst, max_abs) << what;
  EXPECT_GE(min_cos, kMinCosine) << what;
  EXPECT_TRUE(std::isfinite(worst)) << what;
}

// Records every hooked activation.
struct Recorder {
  std::map<std::string, Array> seen;
  ActivationHook hook = [this](const std::string& name, const float* data,
                               const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    seen[name] = Array{std::vector<float>(data, data + n), shape};
  };
};

TEST(ModelParity, TinyImageActivationsAndFeaturesMatchReference) {
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  Array pixels = load_golden(kTinyDir, "pixels");
  const int B = int(pixels.shape[0]);
  std::vector<float> features(size_t(B) * model.embed_dim());
  Recorder rec;
  model.encode_images(pixels.data.data(), B, features.data(), &rec.hook);
  const std::vector<std::string> names = {"vision.embed", "vision.ln_pre", "vision.block.0",
                                          "vision.block.1", "vision.ln_post", "vision.output"};
  for (const auto& name : names) {
    ASSERT_TRUE(rec.seen.count(name)) << name;
    Array want = load_golden(kTinyDir, "act_" + name);
    const Array& got = rec.seen[name];
    ASSERT_EQ(got.shape, want.shape) << name;
    const int64_t cols = want.shape.back();
    expect_close(got.data.data(), want.data.data(), int64_t(want.data.size()) / cols, cols, name);
  }
  Array want = load_golden(kTinyDir, "image_features");
  expect_close(features.data(), want.data.data(), B, model.embed_dim(), "image features");
}

TEST(ModelParity, TinyTextActivationsAndFeaturesMatchReference) {
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  int64_t rows = 0, ctx = 0;
  std::vector<int32_t> ids = load_ids(kTinyDir, rows, ctx);
  ASSERT_EQ(ctx, 16);
  std::vector<float> features(size_t(rows) * model.embed_dim());
  Recorder rec;
  model.encode_texts(ids.data(), int(rows), int(ctx), features.data(), &rec.hook);
  // Each text is computed only up to its own end-of-text token (the hook shows [rows, T', d]
  // with T' the batch's longest; later positions of shorter texts read 0).
  int64_t last = 0;
  std::vector<int64_t> end(size_t(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t am = 0;
    for (int64_t t = 0; t < ctx; ++t)
      if (ids[r * ctx + t] > ids[r * ctx + am]) am = t;
    end[size_t(r)] = am;
    last = std::max(last, am);
  }
  ASSERT_LT(last + 1, ctx) << "the goldens should exercise the shortened sequence";
  ASSERT_LT(*std::min_element(end.begin(), end.end()), last) << "and texts of different lengths";
  for (const std::string name : {"text.embed", "text.block.0", "text.block.1"}) {
    ASSERT_TRUE(rec.seen.count(name)) << name;
    const Array& got = rec.seen[name];
    ASSERT_EQ(got.shape, (std::vector<int64_t>{rows, last + 1, 128})) << name;
    Array want = load_golden(kTinyDir, "act_" + name);
    for (int64_t r = 0; r < rows; ++r) {  // the positions up to each row's end token
      const int64_t n = end[size_t(r)] + 1;
      expect_close(got.data.data() + r * (last + 1) * 128, want.data.data() + r * ctx * 128,
                   n, 128, name + " row " + std::to_string(r));
      for (int64_t i = n * 128; i < (last + 1) * 128; ++i)
        ASSERT_EQ(got.data[size_t(r * (last + 1) * 128 + i)], 0.f) << name << " row " << r;
    }
  }
  for (const std::string name : {"text.ln_final", "text.output"}) {
    Array want = load_golden(kTinyDir, "act_" + name);
    ASSERT_EQ(rec.seen[name].shape, want.shape) << name;
    expect_close(rec.seen[name].data.data(), want.data.data(), want.shape[0], want.shape[1], name);
  }
  Array want = load_golden(kTinyDir, "text_features");
  expect_close(features.data(), want.data.data(), rows, model.embed_dim(), "text features");
}

TEST(ModelParity, TinyFeaturesWithAndWithoutHookAgree) {
  // Without a hook the last block computes only the pooled rows (class token, end of text);
  // with one it runs on all rows so every block can be compared. Both must give the goldens'
  // features, and each other's up to rounding (the products have different shapes).
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  Array pixels = load_golden(kTinyDir, "pixels");
  int64_t rows = 0, ctx = 0;
  std::vector<int32_t> ids = load_ids(kTinyDir, rows, ctx);
  const int B = int(pixels.shape[0]), E = model.embed_dim();
  std::vector<float> image_fast(size_t(B) * E), image_hooked(image_fast.size());
  std::vector<float> text_fast(size_t(rows) * E), text_hooked(text_fast.size());
  model.encode_images(pixels.data.data(), B, image_fast.data());
  model.encode_texts(ids.data(), int(rows), int(ctx), text_fast.data());
  Recorder rec;
  model.encode_images(pixels.data.data(), B, image_hooked.data(), &rec.hook);
  model.encode_texts(ids.data(), int(rows), int(ctx), text_hooked.data(), &rec.hook);
  Array img = load_golden(kTinyDir, "image_features"), txt = load_golden(kTinyDir, "text_features");
  expect_close(image_fast.data(), img.data.data(), B, E, "image features, pooled last block");
  expect_close(text_fast.data(), txt.data.data(), rows, E, "text features, pooled last block");
  expect_close(image_fast.data(), image_hooked.data(), B, E, "image: pooled vs hooked", 1e-5);
  expect_close(text_fast.data(), text_hooked.data(), rows, E, "text: pooled vs hooked", 1e-5);
}

TEST(ModelParity, TinyLogitScaleIsRead) {
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  Array want = load_golden(kTinyDir, "logit_scale");
  EXPECT_EQ(model.logit_scale(), want.data.at(0));
  EXPECT_NE(model.logit_scale(), float(std::log(1 / 0.07)));  // perturbed from the init
  EXPECT_FLOAT_EQ(model.logit_scale_exp(), std::exp(want.data[0]));
  // Used: logits_per_image from the reference's own features equals the reference's logits.
  Array img = load_golden(kTinyDir, "image_features"), txt = load_golden(kTinyDir, "text_features");
  Array logits = load_golden(kTinyDir, "logits_per_image");
  ASSERT_EQ(logits.shape, (std::vector<int64_t>{img.shape[0], txt.shape[0]}));
  std::vector<float> got(logits.data.size());
  model.logits_per_image(img.data.data(), int(img.shape[0]), txt.data.data(), int(txt.shape[0]),
                         got.data());
  expect_close(got.data(), logits.data.data(), logits.shape[0], logits.shape[1], "logits", 1e-5);
}

TEST(ModelParity, TinyTextIgnoresEverythingAfterEndOfText) {
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  int64_t rows = 0, ctx = 0;
  std::vector<int32_t> ids = load_ids(kTinyDir, rows, ctx);
  const int E = model.embed_dim();
  std::vector<float> batch(size_t(rows) * E), alone(static_cast<size_t>(E)), noisy(size_t(rows) * E);
  model.encode_texts(ids.data(), int(rows), int(ctx), batch.data());
  // Each row alone (a shorter computed length) gives the same features.
  for (int64_t r = 0; r < rows; ++r) {
    model.encode_texts(ids.data() + r * ctx, 1, int(ctx), alone.data());
    expect_close(alone.data(), batch.data() + r * E, 1, E, "row alone", 1e-5);
  }
  // Tokens after the end of text (here: non-zero garbage below the end-of-text id) and a
  // shorter row stride do not change the result.
  auto garbage = ids;
  for (int64_t r = 0; r < rows; ++r) {
    bool after = false;
    for (int64_t t = 0; t < ctx; ++t) {
      if (after) garbage[r * ctx + t] = int32_t(1 + (t * 37 + r) % 200);
      if (garbage[r * ctx + t] == 255) after = true;
    }
  }
  model.encode_texts(garbage.data(), int(rows), int(ctx), noisy.data());
  expect_close(noisy.data(), batch.data(), rows, E, "garbage after end of text", 0.0);
}

TEST(ModelParity, ThreadCountDoesNotChangeResultsBeyondRounding) {
  ClipModel model(read_by_hand(kTinyDir + "/openai/model.safetensors", tiny_config()));
  Array pixels = load_golden(kTinyDir, "pixels");
  std::vector<float> one(size_t(2) * 64), two(size_t(2) * 64);
  set_num_threads(1);
  model.encode_images(pixels.data.data(), 2, one.data());
  set_num_threads(2);
  model.encode_images(pixels.data.data(), 2, two.data());
  set_num_threads(0);
  expect_close(one.data(), two.data(), 2, 64, "1 vs 2 threads", 1e-5);
}

TEST(ModelParity, BadInputsAreErrors) {
  ModelConfig cfg = tiny_config();
  LoadedCheckpoint ckpt = read_by_hand(kTinyDir + "/openai/model.safetensors", cfg);
  {
    LoadedCheckpoint missing = ckpt;
    missing.tensors.erase("visual.transformer.resblocks.1.mlp.c_fc.bias");
    EXPECT_THROW(ClipModel{std::move(missing)}, Error);
  }
  {
    LoadedCheckpoint wrong = ckpt;
    wrong.config.text.width = 64;  // shapes no longer agree
    EXPECT_THROW(ClipModel{std::move(wrong)}, Error);
  }
  ClipModel model(std::move(ckpt));
  std::vector<int32_t> ids(16, 0);
  ids[0] = 254;
  ids[1] = 256;  // outside the vocabulary of 256
  std::vector<float> out(64);
  EXPECT_THROW(model.encode_texts(ids.data(), 1, 16, out.data()), Error);
  ids[1] = 255;
  EXPECT_THROW(model.encode_texts(ids.data(), 1, 17, out.data()), Error);  // > context
  EXPECT_NO_THROW(model.encode_texts(ids.data(), 1, 16, out.data()));
  EXPECT_NO_THROW(model.encode_texts(ids.data(), 0, 16, out.data()));
}

// ---- through load_checkpoint, in every naming scheme (checkpoints written by the script) ----

bool have_torch() {
  static const bool ok =
      std::system((std::string(CLIP_PYTHON) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

// Writes `config` checkpoints (all schemes, f32) and goldens into the build folder once.
std::string generate(const std::string& config, const std::string& extra = "",
                     const std::string& tag = "") {
  const std::string out = std::string(CLIP_BINARY_DIR) + "/model_parity/" + config + tag;
  const std::string stamp = out + "/golden/text_features.npy";
  if (fs::exists(stamp) && fs::exists(out + "/hf/config.json")) return out;  // from a previous run
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                          "/tools/reference_model.py write --config " + config + " --out " + out +
                          " --goldens " + extra;
  if (std::system(cmd.c_str()) != 0) throw Error("failed: " + cmd);
  return out;
}

struct Features {
  std::vector<float> image, text;
};

Features encode_golden_inputs(const std::string& model_path, const std::string& golden_dir) {
  ClipModel model(load_checkpoint(model_path));
  Array pixels = load_golden(golden_dir, "pixels");
  int64_t rows = 0, ctx = 0;
  std::vector<int32_t> ids = load_ids(golden_dir, rows, ctx);
  Features f;
  f.image.resize(size_t(pixels.shape[0]) * model.embed_dim());
  f.text.resize(size_t(rows) * model.embed_dim());
  model.encode_images(pixels.data.data(), int(pixels.shape[0]), f.image.data());
  model.encode_texts(ids.data(), int(rows), int(ctx), f.text.data());
  return f;
}

void check_all_schemes(const std::string& dir) {
  Features openai = encode_golden_inputs(dir + "/openai/model.safetensors", dir);
  Features openclip = encode_golden_inputs(dir + "/openclip", dir);
  Features hf = encode_golden_inputs(dir + "/hf", dir);
  Array img = load_golden(dir, "image_features"), txt = load_golden(dir, "text_features");
  expect_close(openai.image.data(), img.data.data(), img.shape[0], img.shape[1], "image features");
  expect_close(openai.text.data(), txt.data.data(), txt.shape[0], txt.shape[1], "text features");
  // The same numbers in the same canonical layout: bit-identical features.
  EXPECT_EQ(openai.image, openclip.image) << "open_clip scheme";
  EXPECT_EQ(openai.text, openclip.text) << "open_clip scheme";
  // Hugging Face's in_proj is concatenated from q, k, v at load (a heap copy), packed like the
  // mapped weights of the others (backend/matmul.h PackedWeight), so the products are the same.
  EXPECT_EQ(openai.image, hf.image) << "Hugging Face scheme";
  EXPECT_EQ(openai.text, hf.text) << "Hugging Face scheme";
}

TEST(ModelSchemes, TinyAllNamingSchemesGiveIdenticalFeatures) {
  if (!have_torch()) GTEST_FAIL() << CLIP_PYTHON << " has no torch";
  check_all_schemes(generate("tiny"));
}

TEST(ModelSchemes, TinyWithExactGeluMatchesReference) {
  // open_clip models trained by LAION use nn.GELU (erf), not QuickGELU; the activation comes
  // from open_clip_config.json ("quick_gelu": false) or config.json ("hidden_act": "gelu").
  if (!have_torch()) GTEST_FAIL() << CLIP_PYTHON << " has no torch";
  const std::string dir = generate("tiny", "--gelu --schemes openclip,hf", "-gelu");
  Array img = load_golden(dir, "image_features"), txt = load_golden(dir, "text_features");
  for (const std::string scheme : {"/openclip", "/hf"}) {
    ASSERT_EQ(load_checkpoint(dir + scheme).config.activation, Activation::GELU) << scheme;
    Features f = encode_golden_inputs(dir + scheme, dir);
    expect_close(f.image.data(), img.data.data(), img.shape[0], img.shape[1], "GELU image" + scheme);
    expect_close(f.text.data(), txt.data.data(), txt.shape[0], txt.shape[1], "GELU text" + scheme);
  }
}

TEST(ModelSchemes, OddSizesMatchReference) {
  // Patch 14 (as L/14), 3 heads of 64, a 3x3 grid, 3 vision layers, texts of 2..20 tokens.
  if (!have_torch()) GTEST_FAIL() << CLIP_PYTHON << " has no torch";
  const std::string dir = generate("odd", "--schemes openai,hf --image-batch 3 --text-lengths 2,20,7,11");
  Features f = encode_golden_inputs(dir + "/openai/model.safetensors", dir);
  Array img = load_golden(dir, "image_features"), txt = load_golden(dir, "text_features");
  expect_close(f.image.data(), img.data.data(), img.shape[0], img.shape[1], "odd image features");
  expect_close(f.text.data(), txt.data.data(), txt.shape[0], txt.shape[1], "odd text features");
}

TEST(ModelSchemes, TinyLoadedFromCommittedF16CheckpointMatchesGoldens) {
  // The committed file through the real loader (F16 -> F32 conversion, shape inference).
  Features f = encode_golden_inputs(kTinyDir + "/openai/model.safetensors", kTinyDir);
  Array img = load_golden(kTinyDir, "image_features"), txt = load_golden(kTinyDir, "text_features");
  expect_close(f.image.data(), img.data.data(), img.shape[0], img.shape[1], "image features");
  expect_close(f.text.data(), txt.data.data(), txt.shape[0], txt.shape[1], "text features");
}

TEST(FullSizeSlow, VitB32MatchesReferenceInEverySchemeAndLayer) {
  if (!have_torch()) GTEST_FAIL() << CLIP_PYTHON << " has no torch";
  // 3 images, texts of 7, 20 and 77 tokens (the last one fills the context).
  const std::string dir = generate("ViT-B-32", "--image-batch 3 --text-lengths 7,20,77");
  check_all_schemes(dir);
  // Per-layer activations of the image tower.
  ClipModel model(load_checkpoint(dir + "/openai/model.safetensors"));
  Array pixels = load_golden(dir, "pixels");
  std::vector<float> features(size_t(3) * 512);
  Recorder rec;
  model.encode_images(pixels.data.data(), 3, features.data(), &rec.hook);
  for (int i = 0; i < 12; ++i) {
    const std::string name = "vision.block." + std::to_string(i);
    Array want = load_golden(dir, "act_" + name);
    ASSERT_EQ(rec.seen[name].shape, want.shape) << name;
    expect_close(rec.seen[name].data.data(), want.data.data(), int64_t(want.data.size()) / 768,
                 768, name);
  }
  // With the hook the last block ran on all rows (check_all_schemes ran the pooled one).
  Array img = load_golden(dir, "image_features");
  expect_close(features.data(), img.data.data(), 3, 512, "image features, full last block");
}

}  // namespace
}  // namespace clip
