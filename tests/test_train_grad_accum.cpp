// Gradient accumulation with cached features gives the single-big-batch gradient; freezing a
// tower; the optimizer pieces (schedule, clipping, clamp) and reproducible seeding.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "nn/clip_network.h"
#include "train_fixtures.h"
#include "train/grad_accum.h"
#include "train/optimizer.h"
#include "train/trainer.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;
using clip::test::make_train_batch;
using clip::test::tiny_vit_clip_config;
using clip::test::TrainBatch;

namespace {


template <typename T>
void expect_grads_close(const ClipNetwork<T>& a, const ClipNetwork<T>& b, double rtol,
                        const char* what) {
  for (const auto& e : a.parameters()) {
    double scale = 0, diff = 0;
    for (size_t i = 0; i < e.numel; ++i) {
      scale = std::max(scale, std::abs(double(b.grads()[e.offset + i])));
      diff = std::max(diff, std::abs(double(a.grads()[e.offset + i]) - b.grads()[e.offset + i]));
    }
    EXPECT_LE(diff, rtol * scale) << what << ": " << e.name;
    EXPECT_GT(scale, 0.0) << what << ": " << e.name;
  }
}

}  // namespace

template <typename T>
void check_accumulation(double rtol) {
  const ModelConfig c = tiny_vit_clip_config();
  const TrainBatch batch = make_train_batch(c, 7, 1);
  ClipNetwork<T> whole(c), micro(c);
  whole.init_openai(5);
  micro.init_openai(5);
  const double l1 = contrastive_gradients(whole, batch.pixels.data(), batch.ids.data(), batch.N).loss;
  for (int64_t mb : {1, 2, 3, 6}) {  // 3 -> 3+3+1: uneven last micro-batch
    GradientOptions o;
    o.micro_batch = mb;
    const double l2 =
        contrastive_gradients(micro, batch.pixels.data(), batch.ids.data(), batch.N, o).loss;
    EXPECT_NEAR(l1, l2, rtol * l1) << "micro-batch " << mb;
    expect_grads_close(micro, whole, rtol, mb == 1 ? "micro 1" : mb == 2 ? "micro 2"
                                           : mb == 3 ? "micro 3" : "micro 6");
    // The micro-batched activations are planned for the micro-batch only.
    EXPECT_LT(micro.activation_bytes(), whole.activation_bytes());
  }
}

TEST(TrainGradAccum, MicroBatchesGiveTheWholeBatchGradientFloat) { check_accumulation<float>(1e-5); }
TEST(TrainGradAccum, MicroBatchesGiveTheWholeBatchGradientDouble) { check_accumulation<double>(1e-12); }

TEST(TrainGradAccum, FrozenTowerGetsNoGradientAndNoUpdate) {
  const ModelConfig c = tiny_vit_clip_config();
  const TrainBatch batch = make_train_batch(c, 4, 2);
  ClipNetwork<float> full(c), locked(c);
  full.init_openai(9);
  locked.init_openai(9);
  contrastive_gradients(full, batch.pixels.data(), batch.ids.data(), batch.N);
  GradientOptions o;
  o.train_image = false;
  o.micro_batch = 3;
  contrastive_gradients(locked, batch.pixels.data(), batch.ids.data(), batch.N, o);
  const auto [vb, ve] = locked.tower_range(Tower::Image);
  for (size_t i = vb; i < ve; ++i) ASSERT_EQ(locked.grads()[i], 0.0f);
  const auto [tb, te] = locked.tower_range(Tower::Text);
  for (size_t i = tb; i < te; ++i)
    ASSERT_NEAR(locked.grads()[i], full.grads()[i], 1e-5 * (1 + std::abs(full.grads()[i])));
  EXPECT_NEAR(locked.logit_scale_grad(), full.logit_scale_grad(), 1e-5 * std::abs(full.logit_scale_grad()));

  // Locked-image tuning through the trainer: the image tower does not move.
  TrainConfig tc;
  tc.adamw.lr = 1e-3;
  tc.total_steps = 2;
  tc.freeze_image = true;
  const std::vector<float> before(locked.params(), locked.params() + locked.num_params());
  Trainer<float> trainer(locked, tc);
  trainer.step(batch.pixels.data(), batch.ids.data(), batch.N);
  for (size_t i = vb; i < ve; ++i) ASSERT_EQ(locked.params()[i], before[i]);
  size_t moved = 0;
  for (size_t i = tb; i < te; ++i) moved += locked.params()[i] != before[i];
  EXPECT_GT(moved, (te - tb) / 2);
  EXPECT_NE(locked.logit_scale(), before.back());
}

TEST(TrainOptimizer, CosineScheduleAsOpenClip) {
  // warmup 2, 5 steps: base * [1/2, 2/2, cos phase 0, 1/3, 2/3]
  const double base = 1e-3;
  EXPECT_DOUBLE_EQ(cosine_lr(base, 2, 5, 0), 0.5e-3);
  EXPECT_DOUBLE_EQ(cosine_lr(base, 2, 5, 1), 1e-3);
  EXPECT_DOUBLE_EQ(cosine_lr(base, 2, 5, 2), 1e-3);
  EXPECT_NEAR(cosine_lr(base, 2, 5, 3), 0.75e-3, 1e-18);
  EXPECT_NEAR(cosine_lr(base, 2, 5, 4), 0.25e-3, 1e-18);
  EXPECT_NEAR(cosine_lr(base, 0, 4, 2), 0.5e-3, 1e-18);
}

TEST(TrainOptimizer, GlobalNormClipping) {
  std::vector<float> g = {3, 4, 0, 12};  // norm 13
  const double n = clip_grad_norm(g.data(), {{0, 2}, {3, 4}}, 6.5);
  EXPECT_DOUBLE_EQ(n, 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_FLOAT_EQ(g[0], float(3 * coef));
  EXPECT_FLOAT_EQ(g[3], float(12 * coef));
  EXPECT_EQ(g[2], 0.0f);
  std::vector<float> h = {3, 4};
  EXPECT_DOUBLE_EQ(clip_grad_norm(h.data(), {{0, 2}}, 10.0), 5.0);  // under the limit: unchanged
  EXPECT_EQ(h[0], 3.0f);
}

TEST(TrainOptimizer, LogitScaleClampedToLn100AndZero) {
  const ModelConfig c = tiny_vit_clip_config();
  for (float start : {5.0f, -0.5f}) {
    ClipNetwork<float> m(c);
    m.init_openai(1);
    m.logit_scale_ref() = start;
    m.zero_grad();
    AdamW<float> opt(m, AdamWConfig{});
    opt.step(0.0);  // lr 0: only the clamp acts
    EXPECT_FLOAT_EQ(m.logit_scale(), start > 0 ? float(std::log(100.0)) : 0.0f);
  }
  ClipNetwork<float> m(c);
  EXPECT_FLOAT_EQ(m.logit_scale(), float(std::log(1 / 0.07)));  // CLIP's initial temperature
}

TEST(TrainOptimizer, AdamWFirstStepByHand) {
  // One element through torch.optim.AdamW's formulas, decayed and not.
  const ModelConfig c = tiny_vit_clip_config();
  ClipNetwork<double> m(c);
  m.init_openai(3);
  m.zero_grad();
  const ParamEntry& w = m.entry("visual.proj");            // decayed
  const ParamEntry& e = m.entry("token_embedding.weight");  // not decayed
  ASSERT_TRUE(w.weight_decay);
  ASSERT_FALSE(e.weight_decay);
  const double pw = m.params()[w.offset], pe = m.params()[e.offset];
  m.grads()[w.offset] = 0.3;
  m.grads()[e.offset] = -0.02;
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  AdamW<double> opt(m, cfg);
  const double lr = 0.01;
  opt.step(lr);
  auto expected = [&](double p, double g, double wd) {
    p *= 1 - lr * wd;
    const double mm = (1 - cfg.beta1) * g, vv = (1 - cfg.beta2) * g * g;
    const double denom = std::sqrt(vv) / std::sqrt(1 - cfg.beta2) + cfg.eps;
    return p - lr / (1 - cfg.beta1) * mm / denom;
  };
  EXPECT_NEAR(m.params()[w.offset], expected(pw, 0.3, 0.1), 1e-15);
  EXPECT_NEAR(m.params()[e.offset], expected(pe, -0.02, 0.0), 1e-15);
}

TEST(TrainSeeding, SameSeedSameModelAndSameTraining) {
  const ModelConfig c = tiny_vit_clip_config();
  const TrainBatch batch = make_train_batch(c, 4, 3);
  ClipNetwork<float> a(c), b(c), other(c);
  a.init_openai(123);
  b.init_openai(123);
  other.init_openai(124);
  ASSERT_EQ(std::vector<float>(a.params(), a.params() + a.num_params()),
            std::vector<float>(b.params(), b.params() + b.num_params()));
  EXPECT_NE(std::vector<float>(a.params(), a.params() + a.num_params()),
            std::vector<float>(other.params(), other.params() + other.num_params()));
  TrainConfig tc;
  tc.adamw.lr = 1e-3;
  tc.total_steps = 3;
  tc.warmup_steps = 1;
  tc.max_grad_norm = 1.0;
  Trainer<float> ta(a, tc), tb(b, tc);
  for (int s = 0; s < 3; ++s) {
    const auto sa = ta.step(batch.pixels.data(), batch.ids.data(), batch.N);
    const auto sb = tb.step(batch.pixels.data(), batch.ids.data(), batch.N);
    EXPECT_EQ(sa.loss, sb.loss);
  }
  EXPECT_EQ(std::vector<float>(a.params(), a.params() + a.num_params()),
            std::vector<float>(b.params(), b.params() + b.num_params()));
}

TEST(TrainModel, TrainingReducesTheLoss) {
  const ModelConfig c = tiny_vit_clip_config();
  const TrainBatch batch = make_train_batch(c, 8, 4);
  ClipNetwork<float> m(c);
  m.init_openai(7);
  TrainConfig tc;
  tc.adamw.lr = 2e-3;
  tc.warmup_steps = 2;
  tc.total_steps = 20;
  tc.max_grad_norm = 1.0;
  tc.micro_batch = 3;
  Trainer<float> t(m, tc);
  double first = 0, last = 0;
  for (int s = 0; s < 20; ++s) {
    const auto st = t.step(batch.pixels.data(), batch.ids.data(), batch.N);
    if (s == 0) first = st.loss;
    last = st.loss;
  }
  EXPECT_LT(last, 0.5 * first);
}

TEST(TrainModel, BadInputsAreErrors) {
  const ModelConfig c = tiny_vit_clip_config();
  ClipNetwork<float> m(c);
  std::vector<int32_t> ids(size_t(c.text.context_length), 0);
  ids[0] = c.text.vocab_size;  // out of range
  std::vector<float> f(size_t(c.embed_dim));
  EXPECT_THROW(m.forward_text(ids.data(), 1, f.data()), clip::Error);
  EXPECT_THROW(m.backward_image(f.data()), clip::Error);  // no forward yet
  ModelConfig bad = c;
  bad.vision.patch_size = 5;  // 16 is not a multiple of 5
  EXPECT_THROW(ClipNetwork<float>{bad}, clip::Error);
  EXPECT_THROW(m.entry("no.such.parameter"), clip::Error);
}

TEST(TrainGradAccum, ActivationRecomputationGivesIdenticalGradients) {
  const ModelConfig c = tiny_vit_clip_config();
  const TrainBatch batch = make_train_batch(c, 5, 6);
  ClipNetwork<float> plain(c), recomputed(c);
  plain.init_openai(8);
  recomputed.init_openai(8);
  recomputed.set_recompute(true);
  GradientOptions o;
  o.micro_batch = 2;
  const double l1 = contrastive_gradients(plain, batch.pixels.data(), batch.ids.data(), batch.N, o).loss;
  const double l2 = contrastive_gradients(recomputed, batch.pixels.data(), batch.ids.data(), batch.N, o).loss;
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(std::vector<float>(plain.grads(), plain.grads() + plain.num_params()),
            std::vector<float>(recomputed.grads(), recomputed.grads() + recomputed.num_params()));
  EXPECT_LT(recomputed.activation_bytes(), plain.activation_bytes());
  // Switching it off again re-plans and still agrees.
  recomputed.set_recompute(false);
  contrastive_gradients(recomputed, batch.pixels.data(), batch.ids.data(), batch.N, o);
  EXPECT_EQ(std::vector<float>(plain.grads(), plain.grads() + plain.num_params()),
            std::vector<float>(recomputed.grads(), recomputed.grads() + recomputed.num_params()));
}
