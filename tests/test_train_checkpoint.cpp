// A trained model is written as a checkpoint the inference code loads: the loader recovers
// the configuration and the inference encoders (src/model) compute the same features as the
// training forward pass.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "model/clip_model.h"
#include "model/weights.h"
#include "train/clip_trainable.h"

using namespace clip;
using namespace clip::train;
namespace fs = std::filesystem;

namespace {

ModelConfig config(Activation act, int vision_heads, int text_heads) {
  ModelConfig c;
  c.embed_dim = 32;
  c.activation = act;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 128;
  c.vision.heads = vision_heads;
  c.vision.layers = 2;
  c.vision.mlp_dim = 512;
  c.text.context_length = 12;
  c.text.vocab_size = 60;
  c.text.width = 64;
  c.text.heads = text_heads;
  c.text.layers = 2;
  c.text.mlp_dim = 256;
  return c;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(double(b[i])));
    diff = std::max(diff, std::abs(double(a[i]) - b[i]));
  }
  EXPECT_LE(diff, 1e-5 * scale) << what;
}

void round_trip(const ModelConfig& c, bool directory) {
  TrainableClip<float> m(c);
  m.init_openai(17);
  std::mt19937 gen(1);
  std::normal_distribution<float> d(0.f, 0.05f);
  for (size_t i = 0; i + 1 < m.num_params(); ++i) m.params()[i] += d(gen);  // not logit_scale
  const fs::path out = fs::path(CLIP_BINARY_DIR) / (directory ? "train_ckpt_dir" : "train_ckpt.safetensors");
  fs::remove_all(out);
  if (directory)
    m.save_model_directory(out.string());
  else
    m.save(out.string());
  LoadedCheckpoint ck = load_checkpoint(out.string());
  EXPECT_EQ(ck.config.embed_dim, c.embed_dim);
  EXPECT_EQ(ck.config.vision.width, c.vision.width);
  EXPECT_EQ(ck.config.vision.heads, c.vision.heads);
  EXPECT_EQ(ck.config.text.heads, c.text.heads);
  EXPECT_EQ(ck.config.vision.layers, c.vision.layers);
  EXPECT_EQ(ck.config.text.context_length, c.text.context_length);
  EXPECT_EQ(ck.config.activation, c.activation);

  // Loading back into a trainable model is exact.
  TrainableClip<float> back(c);
  back.load(ck.tensors, /*ignore_unknown=*/false);
  EXPECT_EQ(std::vector<float>(back.params(), back.params() + back.num_params()),
            std::vector<float>(m.params(), m.params() + m.num_params()));

  // The inference encoders agree with the training forward pass.
  const int N = 3, S = c.vision.image_size, L = c.text.context_length;
  std::vector<float> pixels(size_t(N * 3 * S * S));
  for (auto& p : pixels) p = d(gen) * 20;
  std::vector<int32_t> ids(size_t(N * L), 0);
  for (int b = 0; b < N; ++b) {
    const int len = 3 + b * 4;
    ids[b * L] = c.text.vocab_size - 2;
    for (int l = 1; l < len - 1; ++l) ids[b * L + l] = 1 + (b * 7 + l * 3) % (c.text.vocab_size - 3);
    ids[b * L + len - 1] = c.text.vocab_size - 1;
  }
  std::vector<float> ours_i(size_t(N * c.embed_dim)), ours_t(ours_i.size()), inf_i(ours_i.size()),
      inf_t(ours_i.size());
  m.forward_image(pixels.data(), N, ours_i.data());
  m.forward_text(ids.data(), N, ours_t.data());
  ClipModel model(std::move(ck));
  model.encode_images(pixels.data(), N, inf_i.data());
  model.encode_texts(ids.data(), N, L, inf_t.data());
  expect_close(ours_i, inf_i, "image features");
  expect_close(ours_t, inf_t, "text features");
  EXPECT_FLOAT_EQ(model.logit_scale(), m.logit_scale());
}

}  // namespace

// A bare OpenAI-named file: the loader infers heads = width / 64 and QuickGELU.
TEST(TrainCheckpoint, OpenAIFileLoadsAndMatchesInference) {
  round_trip(config(Activation::QuickGELU, 2, 1), false);
}

// A model directory keeps any head count and GELU.
TEST(TrainCheckpoint, ModelDirectoryKeepsConfigAndMatchesInference) {
  round_trip(config(Activation::GELU, 4, 2), true);
}
