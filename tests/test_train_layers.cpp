// Finite-difference checks of every training layer's backward, in double precision.
// For a layer y = f(inputs) the scalar probe is L = sum(w * y) with fixed random weights w;
// the analytic gradients come from the layer's backward with dy = w, the numeric ones from
// central differences (h = 1e-6). In double the truncation error is O(h^2 * f''') ~ 1e-12 and
// the rounding error ~ 1e-16 / h ~ 1e-10, so 1e-7 relative (to the largest gradient entry of
// that input) is a tight bound that any wrong term in a backward formula misses by orders
// of magnitude. Each backward is also checked to ACCUMULATE (+=) into its outputs: the
// gradient buffers start at a non-zero constant that is subtracted afterwards.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fd_check.h"
#include "nn/clip_network.h"
#include "train/grad_accum.h"
#include "nn/layers.h"
#include "train/loss.h"

using namespace clip::train;
using namespace clip::nn;
using clip::test::fd_check;
using clip::test::Input;
using clip::test::random_vec;
using clip::test::Vec;


TEST(TrainLayers, Linear) {
  std::mt19937 gen(1);
  const int64_t M = 5, N = 7, K = 6;
  Vec x = random_vec(M * K, gen), W = random_vec(N * K, gen), b = random_vec(N, gen);
  fd_check("linear", {{"x", &x}, {"W", &W}, {"b", &b}},
           [&] {
             Vec y(M * N);
             linear_forward(y.data(), x.data(), W.data(), b.data(), M, N, K);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             linear_backward(g[0].data(), g[1].data(), g[2].data(), dy.data(), x.data(),
                             W.data(), M, N, K);
           });
  // accumulate_output adds to what y holds.
  Vec y0 = random_vec(M * N, gen), y1 = y0, y2(M * N);
  linear_forward(y1.data(), x.data(), W.data(), b.data(), M, N, K, true);
  linear_forward(y2.data(), x.data(), W.data(), b.data(), M, N, K);
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(y1[i], y0[i] + y2[i], 1e-12);
}

TEST(TrainLayers, Projection) {
  std::mt19937 gen(2);
  const int64_t M = 4, N = 3, K = 5;
  Vec x = random_vec(M * K, gen), P = random_vec(K * N, gen);
  fd_check("project", {{"x", &x}, {"P", &P}},
           [&] {
             Vec y(M * N);
             project_forward(y.data(), x.data(), P.data(), M, N, K);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             project_backward(g[0].data(), g[1].data(), dy.data(), x.data(), P.data(), M, N, K);
           });
}

TEST(TrainLayers, LayerNorm) {
  std::mt19937 gen(3);
  const int64_t M = 4, C = 9;
  Vec x = random_vec(M * C, gen, 2.0), gamma = random_vec(C, gen), beta = random_vec(C, gen);
  for (int64_t i = 0; i < M * C; ++i) x[i] += 0.5 * double(i % C);  // non-zero means
  Vec mean(M), rstd(M);
  fd_check("layernorm", {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}},
           [&] {
             Vec y(M * C);
             layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                               beta.data(), M, C, 1e-5);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             Vec y(M * C);
             layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                               beta.data(), M, C, 1e-5);
             layernorm_backward(g[0].data(), g[1].data(), g[2].data(), dy.data(), x.data(),
                                gamma.data(), mean.data(), rstd.data(), M, C);
           });
}

TEST(TrainLayers, Activations) {
  for (Act act : {Act::QuickGELU, Act::GELU}) {
    std::mt19937 gen(4);
    Vec x = random_vec(50, gen, 2.0);
    fd_check(act == Act::GELU ? "gelu" : "quickgelu", {{"x", &x}},
             [&] {
               Vec y(x.size());
               activation_forward(act, y.data(), x.data(), int64_t(x.size()));
               return y;
             },
             [&](const Vec& dy, std::vector<Vec>& g) {
               activation_backward(act, g[0].data(), dy.data(), x.data(), int64_t(x.size()));
             });
  }
  // Forward values against the definitions.
  double x = 0.7, y;
  activation_forward(Act::QuickGELU, &y, &x, 1);
  EXPECT_NEAR(y, x / (1 + std::exp(-1.702 * x)), 1e-15);
  activation_forward(Act::GELU, &y, &x, 1);
  EXPECT_NEAR(y, 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))), 1e-15);
}

TEST(TrainLayers, Attention) {
  for (bool causal : {false, true}) {
    std::mt19937 gen(5);
    const int64_t B = 2, L = 5, D = 6, H = 2;
    Vec qkv = random_vec(B * L * 3 * D, gen);
    Vec probs(B * H * L * L);
    fd_check(causal ? "attention (causal)" : "attention", {{"qkv", &qkv}},
             [&] {
               Vec out(B * L * D);
               attention_forward(out.data(), probs.data(), qkv.data(), B, L, D, H, causal);
               return out;
             },
             [&](const Vec& dy, std::vector<Vec>& g) {
               Vec out(B * L * D);
               attention_forward(out.data(), probs.data(), qkv.data(), B, L, D, H, causal);
               attention_backward(g[0].data(), dy.data(), qkv.data(), probs.data(), B, L, D, H,
                                  causal);
             },
             1e-7, 1000);
    // Rows of probs are distributions; the causal mask zeroes the future.
    for (int64_t r = 0; r < B * H * L; ++r) {
      double s = 0;
      for (int64_t j = 0; j < L; ++j) {
        s += probs[r * L + j];
        if (causal && j > r % L) {
          EXPECT_EQ(probs[r * L + j], 0.0);
        }
      }
      EXPECT_NEAR(s, 1.0, 1e-12);
    }
  }
}

TEST(TrainLayers, VitEmbedding) {
  std::mt19937 gen(6);
  const int64_t B = 2, G2 = 4, D = 3;
  Vec ptok = random_vec(B * G2 * D, gen), cls = random_vec(D, gen),
      pos = random_vec((G2 + 1) * D, gen);
  fd_check("vit_embed", {{"patch_tokens", &ptok}, {"cls", &cls}, {"pos", &pos}},
           [&] {
             Vec x(B * (G2 + 1) * D);
             vit_embed_forward(x.data(), ptok.data(), cls.data(), pos.data(), B, G2, D);
             return x;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             vit_embed_backward(g[0].data(), g[1].data(), g[2].data(), dy.data(), B, G2, D);
           });
}

TEST(TrainLayers, PatchifyMatchesConvolutionLayout) {
  // patches[b*G2 + gy*G + gx][(c*p + kh)*p + kw] = pixels[b][c][gy*p + kh][gx*p + kw]
  const int64_t B = 2, S = 6, p = 3, G = 2;
  std::vector<float> pixels(B * 3 * S * S);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = float(i);
  Vec patches(B * G * G * 3 * p * p);
  patchify(patches.data(), pixels.data(), B, S, p);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t gy = 0; gy < G; ++gy)
      for (int64_t gx = 0; gx < G; ++gx)
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t kh = 0; kh < p; ++kh)
            for (int64_t kw = 0; kw < p; ++kw)
              ASSERT_EQ(patches[(b * G * G + gy * G + gx) * 3 * p * p + (c * p + kh) * p + kw],
                        pixels[((b * 3 + c) * S + gy * p + kh) * S + gx * p + kw]);
}

TEST(TrainLayers, TokenEmbedding) {
  std::mt19937 gen(7);
  const int64_t B = 2, L = 4, D = 3, V = 5;
  const std::vector<int32_t> ids = {4, 1, 1, 0, 2, 4, 3, 1};  // repeated ids accumulate
  Vec tok = random_vec(V * D, gen), pos = random_vec(L * D, gen);
  fd_check("token_embed", {{"tok", &tok}, {"pos", &pos}},
           [&] {
             Vec x(B * L * D);
             token_embed_forward(x.data(), ids.data(), tok.data(), pos.data(), B, L, D);
             return x;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             token_embed_backward(g[0].data(), g[1].data(), dy.data(), ids.data(), B, L, D);
           });
}

TEST(TrainLayers, GatherRows) {
  std::mt19937 gen(8);
  const int64_t B = 3, L = 4, D = 2;
  const std::vector<int32_t> index = {3, 0, 2};
  Vec x = random_vec(B * L * D, gen);
  fd_check("gather_rows", {{"x", &x}},
           [&] {
             Vec y(B * D);
             gather_rows_forward(y.data(), x.data(), index.data(), B, L, D);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             gather_rows_backward(g[0].data(), dy.data(), index.data(), B, L, D);
           });
}

TEST(TrainLayers, L2Norm) {
  std::mt19937 gen(9);
  const int64_t M = 3, C = 5;
  Vec x = random_vec(M * C, gen), norm(M);
  fd_check("l2norm", {{"x", &x}},
           [&] {
             Vec y(M * C);
             l2norm_forward(y.data(), norm.data(), x.data(), M, C);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             Vec y(M * C);
             l2norm_forward(y.data(), norm.data(), x.data(), M, C);
             l2norm_backward(g[0].data(), dy.data(), y.data(), norm.data(), M, C);
           });
}

TEST(TrainLayers, ContrastiveLoss) {
  std::mt19937 gen(10);
  const int64_t N = 5, E = 4;
  Vec img = random_vec(N * E, gen), txt = random_vec(N * E, gen), t = {std::log(1 / 0.07)};
  fd_check("clip_loss", {{"image_features", &img}, {"text_features", &txt}, {"logit_scale", &t}},
           [&] { return Vec{clip_loss<double>(img.data(), txt.data(), N, E, t[0], nullptr,
                                              nullptr, nullptr).loss}; },
           [&](const Vec& dy, std::vector<Vec>& g) {
             // The probe is dy[0] * loss; clip_loss's gradients are for dy = 1.
             Vec gi(N * E), gt(N * E);
             double gs = 0;
             clip_loss<double>(img.data(), txt.data(), N, E, t[0], gi.data(), gt.data(), &gs);
             for (int64_t i = 0; i < N * E; ++i) {
               g[0][i] += dy[0] * gi[i];
               g[1][i] += dy[0] * gt[i];
             }
             g[2][0] += dy[0] * gs;
           });
  // The paper's definition on a hand-checkable case: orthonormal, matching pairs.
  const Vec I = {1, 0, 0, 1}, T = {2, 0, 0, 3};  // normalisation makes T = I
  const double loss = clip_loss<double>(I.data(), T.data(), 2, 2, 0.0, nullptr, nullptr,
                                        nullptr).loss;
  EXPECT_NEAR(loss, std::log(1 + std::exp(-1.0)), 1e-15);  // logits [[1,0],[0,1]], scale e^0
}

namespace {
clip::ModelConfig tiny_config(clip::Activation act) {
  clip::ModelConfig c;
  c.embed_dim = 6;
  c.activation = act;
  c.vision.image_size = 8;
  c.vision.patch_size = 4;
  c.vision.width = 8;
  c.vision.heads = 2;
  c.vision.layers = 2;
  c.vision.mlp_dim = 32;
  c.text.context_length = 5;
  c.text.vocab_size = 11;
  c.text.width = 6;
  c.text.heads = 2;
  c.text.layers = 2;
  c.text.mlp_dim = 24;
  return c;
}

void make_batch(const clip::ModelConfig& c, int64_t N, std::vector<float>& pixels,
                std::vector<int32_t>& ids, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  pixels.resize(size_t(N * 3 * c.vision.image_size * c.vision.image_size));
  for (auto& p : pixels) p = d(gen);
  const int L = c.text.context_length, V = c.text.vocab_size;
  ids.assign(size_t(N * L), 0);
  for (int64_t b = 0; b < N; ++b) {
    const int len = 2 + int(gen() % uint32_t(L - 1));  // 2..L
    ids[b * L] = V - 2;
    for (int l = 1; l < len - 1; ++l) ids[b * L + l] = 1 + int(gen() % uint32_t(V - 3));
    ids[b * L + len - 1] = V - 1;
  }
}
}  // namespace

// The whole network: every parameter tensor of a tiny CLIP gets probed through the full
// contrastive loss (both towers, pooling, projections, temperature).
TEST(TrainLayers, WholeModelFiniteDifferences) {
  for (auto act : {clip::Activation::QuickGELU, clip::Activation::GELU}) {
    const clip::ModelConfig c = tiny_config(act);
    ClipNetwork<double> model(c);
    model.init_openai(42);
    // Move LayerNorm gains and biases off their init so every path is exercised.
    std::mt19937 gen(3);
    std::normal_distribution<double> d(0.0, 0.1);
    for (size_t i = 0; i < model.num_params(); ++i) model.params()[i] += d(gen);
    const int64_t N = 4;
    std::vector<float> pixels;
    std::vector<int32_t> ids;
    make_batch(c, N, pixels, ids, 11);
    std::vector<double> img(size_t(N * c.embed_dim)), txt(img.size());
    auto loss = [&] {  // forward only
      model.forward_image(pixels.data(), N, img.data());
      model.forward_text(ids.data(), N, txt.data());
      return clip_loss<double>(img.data(), txt.data(), N, c.embed_dim, model.logit_scale(),
                               nullptr, nullptr, nullptr).loss;
    };
    contrastive_gradients(model, pixels.data(), ids.data(), N);
    const std::vector<double> grads(model.grads(), model.grads() + model.num_params());
    const double h = 1e-6;
    for (const ParamEntry& e : model.parameters()) {
      double gmax = 0;
      for (size_t i = 0; i < e.numel; ++i) gmax = std::max(gmax, std::abs(grads[e.offset + i]));
      ASSERT_GT(gmax, 0.0) << e.name << " has an all-zero gradient";
      const size_t step = std::max<size_t>(1, e.numel / 4);
      double worst = 0;
      for (size_t i = 0; i < e.numel; i += step) {
        double& p = model.params()[e.offset + i];
        const double saved = p;
        p = saved + h;
        const double lp = loss();
        p = saved - h;
        const double lm = loss();
        p = saved;
        worst = std::max(worst, std::abs((lp - lm) / (2 * h) - grads[e.offset + i]) / gmax);
      }
      EXPECT_LT(worst, 1e-6) << e.name << " (activation "
                             << (act == clip::Activation::GELU ? "GELU" : "QuickGELU") << ")";
    }
  }
}
