#pragma once
// What the training unit tests share: a tiny ViT CLIP (2 layers per tower) and seeded
// synthetic batches of it (Gaussian pixels; [SOT] random tokens [EOT] texts, SOT / EOT the two
// largest ids, so the end of text is the argmax).
#include <cstdint>
#include <random>
#include <vector>

#include "model/config.h"

namespace clip::test {

inline ModelConfig tiny_vit_clip_config() {
  ModelConfig c;
  c.embed_dim = 16;
  c.vision.image_size = 16;
  c.vision.patch_size = 4;
  c.vision.width = 32;
  c.vision.heads = 2;
  c.vision.layers = 2;
  c.vision.mlp_dim = 128;
  c.text.context_length = 8;
  c.text.vocab_size = 50;
  c.text.width = 24;
  c.text.heads = 2;
  c.text.layers = 2;
  c.text.mlp_dim = 96;
  return c;
}

struct TrainBatch {
  std::vector<float> pixels;  // [N, 3, S, S]
  std::vector<int32_t> ids;   // [N, context_length]
  int64_t N = 0;
};

inline TrainBatch make_train_batch(const ModelConfig& c, int64_t N, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  TrainBatch b{std::vector<float>(size_t(N * 3 * c.vision.image_size * c.vision.image_size)),
               std::vector<int32_t>(size_t(N * c.text.context_length), 0), N};
  for (auto& p : b.pixels) p = d(gen);
  const int L = c.text.context_length, V = c.text.vocab_size;
  for (int64_t r = 0; r < N; ++r) {
    const int len = 2 + int(gen() % uint32_t(L - 1));
    b.ids[size_t(r * L)] = V - 2;
    for (int l = 1; l < len - 1; ++l) b.ids[size_t(r * L + l)] = 1 + int(gen() % uint32_t(V - 3));
    b.ids[size_t(r * L + len - 1)] = V - 1;
  }
  return b;
}

}  // namespace clip::test
