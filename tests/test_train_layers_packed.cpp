// The training layers added for speed (docs/training.md, "Performance"): packed variable-length
// attention and token embedding (the text tower computes each text only up to its pooled
// token), the pooled-row attention of a tower's last block, the residual-branch forward, the
// overwriting (accumulate = false) backward forms, and the float (AVX2) kernels against double.
// Backwards are checked against central finite differences in double as in
// test_train_layers.cpp; the exact reformulations are checked against the plain layers.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fd_check.h"
#include "nn/layers.h"

using namespace clip::nn;
using clip::test::fd_check;
using clip::test::Input;
using clip::test::random_vec;
using clip::test::Vec;

namespace {

constexpr size_t kProbes = 60;  // finite-difference probes per input (these inputs are larger)

double max_abs_diff(const Vec& a, const Vec& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Sequences of lengths 5, 1, 3, 6 (packed: 15 rows), width 8, 2 heads.
const std::vector<int64_t> kLens = {5, 1, 3, 6};
std::vector<int64_t> offsets_of(const std::vector<int64_t>& lens) {
  std::vector<int64_t> off(lens.size() + 1, 0);
  for (size_t b = 0; b < lens.size(); ++b) off[b + 1] = off[b] + lens[b];
  return off;
}
int64_t probs_size(const std::vector<int64_t>& lens, int64_t H) {
  int64_t n = 0;
  for (int64_t l : lens) n += H * l * l;
  return n;
}

}  // namespace

TEST(TrainLayersPacked, PackedAttentionFiniteDifferences) {
  const int64_t B = int64_t(kLens.size()), D = 8, H = 2;
  const auto off = offsets_of(kLens);
  const int64_t rows = off[B];
  for (bool causal : {false, true}) {
    std::mt19937 gen(causal ? 3 : 4);
    Vec qkv = random_vec(size_t(rows * 3 * D), gen);
    Vec probs(size_t(probs_size(kLens, H)));
    auto fwd = [&]() {
      Vec out(size_t(rows * D));
      attention_forward_packed(out.data(), probs.data(), qkv.data(), off.data(), B, D, H, causal);
      return out;
    };
    fd_check(std::string("attention_packed") + (causal ? " causal" : ""), {{"qkv", &qkv}}, fwd,
             [&](const Vec& dy, std::vector<Vec>& g) {
               fwd();
               attention_backward_packed(g[0].data(), dy.data(), qkv.data(), probs.data(),
                                         off.data(), B, D, H, causal);
             }, 1e-7, kProbes);
  }
}

// Each packed sequence gives what the uniform layer gives for that sequence alone.
TEST(TrainLayersPacked, PackedAttentionEqualsPerSequenceAttention) {
  const int64_t B = int64_t(kLens.size()), D = 8, H = 2;
  const auto off = offsets_of(kLens);
  const int64_t rows = off[B];
  std::mt19937 gen(5);
  const Vec qkv = random_vec(size_t(rows * 3 * D), gen), dout = random_vec(size_t(rows * D), gen);
  Vec out(size_t(rows * D)), probs(size_t(probs_size(kLens, H))), dqkv(size_t(rows * 3 * D), 9.0);
  attention_forward_packed(out.data(), probs.data(), qkv.data(), off.data(), B, D, H, true);
  attention_backward_packed(dqkv.data(), dout.data(), qkv.data(), probs.data(), off.data(), B, D,
                            H, true, /*accumulate=*/false);  // the 9s must all be overwritten
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = kLens[static_cast<size_t>(b)], r0 = off[static_cast<size_t>(b)];
    Vec q1(qkv.begin() + r0 * 3 * D, qkv.begin() + (r0 + L) * 3 * D);
    Vec o1(size_t(L * D)), p1(size_t(H * L * L)), d1(size_t(L * 3 * D), 0.0);
    Vec do1(dout.begin() + r0 * D, dout.begin() + (r0 + L) * D);
    attention_forward(o1.data(), p1.data(), q1.data(), 1, L, D, H, true);
    attention_backward(d1.data(), do1.data(), q1.data(), p1.data(), 1, L, D, H, true);
    EXPECT_LT(max_abs_diff(o1, Vec(out.begin() + r0 * D, out.begin() + (r0 + L) * D)), 1e-14);
    EXPECT_LT(max_abs_diff(d1, Vec(dqkv.begin() + r0 * 3 * D, dqkv.begin() + (r0 + L) * 3 * D)),
              1e-14);
  }
}

TEST(TrainLayersPacked, PooledAttentionFiniteDifferences) {
  const int64_t D = 8, H = 2;
  // uniform: B = 3 sequences of L = 5, query rows 0, 4, 2 (non-causal: class-token style;
  // causal: the query sees keys up to its row); packed: kLens, query at each one's last row.
  struct Case {
    std::string name;
    bool packed, causal;
  };
  for (const Case& c : {Case{"uniform", false, false}, Case{"uniform causal", false, true},
                        Case{"packed causal", true, true}, Case{"packed", true, false}}) {
    const int64_t B = c.packed ? int64_t(kLens.size()) : 3, L = c.packed ? 6 : 5;
    const auto off = offsets_of(kLens);
    const int64_t rows = c.packed ? off[static_cast<size_t>(B)] : B * L;
    std::vector<int32_t> index;
    if (c.packed)
      for (int64_t l : kLens) index.push_back(int32_t(l - 1));
    else
      index = {0, 4, 2};
    std::mt19937 gen(11);
    Vec qkv = random_vec(size_t(rows * 3 * D), gen), q = random_vec(size_t(B * D), gen);
    Vec probs(size_t(B * H * L));
    const int64_t* o = c.packed ? off.data() : nullptr;
    auto fwd = [&]() {
      Vec out(size_t(B * D));
      attention_pooled_forward(out.data(), probs.data(), q.data(), qkv.data(), index.data(), o, B,
                               L, D, H, c.causal);
      return out;
    };
    // the q columns of qkv are not read: their gradient is zero, so probe q and k|v via qkv.
    fd_check("attention_pooled " + c.name, {{"q", &q}, {"qkv", &qkv}}, fwd,
             [&](const Vec& dy, std::vector<Vec>& g) {
               fwd();
               attention_pooled_backward(g[0].data(), g[1].data(), dy.data(), q.data(), qkv.data(),
                                         probs.data(), index.data(), o, B, L, D, H, c.causal);
             }, 1e-7, kProbes);
  }
}

// The pooled form equals the full attention read at the query row.
TEST(TrainLayersPacked, PooledAttentionEqualsFullAttentionRow) {
  const int64_t B = 3, L = 5, D = 8, H = 2;
  const std::vector<int32_t> index = {0, 4, 2};
  for (bool causal : {false, true}) {
    std::mt19937 gen(13);
    const Vec qkv = random_vec(size_t(B * L * 3 * D), gen);
    Vec full(size_t(B * L * D)), probs_full(size_t(B * H * L * L));
    attention_forward(full.data(), probs_full.data(), qkv.data(), B, L, D, H, causal);
    Vec q(size_t(B * D)), pooled(size_t(B * D)), probs(size_t(B * H * L));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) q[size_t(b * D + d)] = qkv[size_t((b * L + index[static_cast<size_t>(b)]) * 3 * D + d)];
    attention_pooled_forward(pooled.data(), probs.data(), q.data(), qkv.data(), index.data(),
                             nullptr, B, L, D, H, causal);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d)
        EXPECT_NEAR(pooled[size_t(b * D + d)], full[size_t((b * L + index[static_cast<size_t>(b)]) * D + d)], 1e-14);
  }
}

TEST(TrainLayersPacked, PackedTokenEmbeddingFiniteDifferences) {
  const int64_t B = int64_t(kLens.size()), D = 6, V = 7, Lmax = 6;
  const auto off = offsets_of(kLens);
  std::vector<int32_t> ids;
  for (int64_t r = 0; r < off[static_cast<size_t>(B)]; ++r) ids.push_back(int32_t((r * 5) % V));  // repeats
  std::mt19937 gen(17);
  Vec tok = random_vec(size_t(V * D), gen), pos = random_vec(size_t(Lmax * D), gen);
  const size_t xsize = size_t(off[static_cast<size_t>(B)] * D);
  auto fwd = [&]() {
    Vec x(xsize);
    token_embed_forward_packed(x.data(), ids.data(), tok.data(), pos.data(), off.data(), B, D);
    return x;
  };
  fd_check("token_embed_packed", {{"tok", &tok}, {"pos", &pos}}, fwd,
           [&](const Vec& dy, std::vector<Vec>& g) {
             token_embed_backward_packed(g[0].data(), g[1].data(), dy.data(), ids.data(),
                                         off.data(), B, D);
           }, 1e-7, kProbes);
}

TEST(TrainLayersPacked, ResidualLinearAndOverwritingBackwards) {
  const int64_t M = 7, N = 5, K = 4;
  std::mt19937 gen(19);
  Vec x = random_vec(size_t(M * K), gen), W = random_vec(size_t(N * K), gen),
      b = random_vec(static_cast<size_t>(N), gen), res = random_vec(size_t(M * N), gen);
  fd_check("linear_forward_residual", {{"x", &x}, {"W", &W}, {"b", &b}, {"residual", &res}},
           [&]() {
             Vec y(size_t(M * N));
             linear_forward_residual(y.data(), res.data(), x.data(), W.data(), b.data(), M, N, K);
             return y;
           },
           [&](const Vec& dy, std::vector<Vec>& g) {
             linear_backward(g[0].data(), g[1].data(), g[2].data(), dy.data(), x.data(), W.data(),
                             M, N, K);
             for (size_t i = 0; i < dy.size(); ++i) g[3][i] += dy[i];
           }, 1e-7, kProbes);
  // y may alias the residual
  Vec y1(size_t(M * N)), y2 = res;
  linear_forward_residual(y1.data(), res.data(), x.data(), W.data(), b.data(), M, N, K);
  linear_forward_residual(y2.data(), y2.data(), x.data(), W.data(), b.data(), M, N, K);
  EXPECT_EQ(y1, y2);

  // accumulate = false gives exactly the accumulated result minus the start value's role.
  const Vec dy = random_vec(size_t(M * N), gen);
  Vec dx_acc(size_t(M * K), 0.0), dx_over(size_t(M * K), 123.0), dW1(size_t(N * K), 0.0),
      dW2(size_t(N * K), 0.0);
  linear_backward<double>(dx_acc.data(), dW1.data(), nullptr, dy.data(), x.data(), W.data(), M, N, K);
  linear_backward<double>(dx_over.data(), dW2.data(), nullptr, dy.data(), x.data(), W.data(), M, N,
                          K, /*accumulate_dx=*/false);
  EXPECT_EQ(dx_acc, dx_over);
  EXPECT_EQ(dW1, dW2);
  for (Act act : {Act::QuickGELU, Act::GELU}) {
    const Vec h = random_vec(37, gen), d = random_vec(37, gen);
    Vec a1(37, 0.0), a2(37, -5.0), inplace = d;
    activation_backward(act, a1.data(), d.data(), h.data(), 37);
    activation_backward(act, a2.data(), d.data(), h.data(), 37, /*accumulate=*/false);
    activation_backward(act, inplace.data(), inplace.data(), h.data(), 37, false);
    EXPECT_EQ(a1, a2);
    EXPECT_EQ(a1, inplace);
  }
  Vec db(static_cast<size_t>(N), 1.0);
  bias_backward(db.data(), dy.data(), M, N, N);
  for (int64_t j = 0; j < N; ++j) {
    double s = 1.0;
    for (int64_t i = 0; i < M; ++i) s += dy[size_t(i * N + j)];
    EXPECT_NEAR(db[static_cast<size_t>(j)], s, 1e-14);
  }
}

// The float kernels (AVX2 exp/erf, vectorised softmax and LayerNorm, sgemm attention) against
// the same layers in double, on sizes that exercise the eight-lane bodies and the tails.
TEST(TrainLayersPacked, FloatKernelsMatchDouble) {
  std::mt19937 gen(23);
  auto to_f = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
  // inputs representable in float, so both sides compute from the same values
  auto random_f = [&](size_t n, double scale = 1.0) {
    Vec v = random_vec(n, gen, scale);
    for (auto& x : v) x = double(float(x));
    return v;
  };
  auto rel = [](const std::vector<float>& a, const Vec& b) {
    double e = 0, n = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      e = std::max(e, std::abs(double(a[i]) - b[i]));
      n = std::max(n, std::abs(b[i]));
    }
    return e / n;
  };
  {
    const int64_t n = 1003;
    const Vec x = random_f(static_cast<size_t>(n), 3.0), dy = random_f(static_cast<size_t>(n));
    for (Act act : {Act::QuickGELU, Act::GELU}) {
      Vec y(static_cast<size_t>(n)), dx(static_cast<size_t>(n), 0.0);
      activation_forward(act, y.data(), x.data(), n);
      activation_backward(act, dx.data(), dy.data(), x.data(), n);
      std::vector<float> yf(static_cast<size_t>(n)), dxf(static_cast<size_t>(n), 0.f);
      const auto xf = to_f(x), dyf = to_f(dy);
      activation_forward(act, yf.data(), xf.data(), n);
      activation_backward(act, dxf.data(), dyf.data(), xf.data(), n);
      EXPECT_LT(rel(yf, y), 3e-7) << int(act);
      // the derivative's 1 - sigma (QuickGELU) cancels for large x: a few ulp of max|dx|
      EXPECT_LT(rel(dxf, dx), 1e-6) << int(act);
    }
  }
  {
    const int64_t B = 2, L = 13, D = 16, H = 2;  // L = 13: one eight-lane block and a tail
    const Vec qkv = random_f(size_t(B * L * 3 * D)), dout = random_f(size_t(B * L * D));
    for (bool causal : {false, true}) {
      Vec out(size_t(B * L * D)), probs(size_t(B * H * L * L)), dqkv(size_t(B * L * 3 * D), 0.0);
      attention_forward(out.data(), probs.data(), qkv.data(), B, L, D, H, causal);
      attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), B, L, D, H, causal);
      std::vector<float> outf(out.size()), probsf(probs.size()), dqkvf(dqkv.size(), 0.f);
      const auto qkvf = to_f(qkv), doutf = to_f(dout);
      attention_forward(outf.data(), probsf.data(), qkvf.data(), B, L, D, H, causal);
      attention_backward(dqkvf.data(), doutf.data(), qkvf.data(), probsf.data(), B, L, D, H, causal);
      EXPECT_LT(rel(outf, out), 1e-6);
      EXPECT_LT(rel(probsf, probs), 1e-6);
      EXPECT_LT(rel(dqkvf, dqkv), 1e-6);
    }
  }
  {
    const int64_t M = 5, C = 21;
    const Vec x = random_f(size_t(M * C), 2.0), g = random_f(static_cast<size_t>(C)),
              be = random_f(static_cast<size_t>(C)), dy = random_f(size_t(M * C));
    Vec y(size_t(M * C)), mean(static_cast<size_t>(M)), rstd(static_cast<size_t>(M)), dx(size_t(M * C), 0.0),
        dg(static_cast<size_t>(C), 0.0), db(static_cast<size_t>(C), 0.0);
    layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), g.data(), be.data(), M, C, 1e-5);
    layernorm_backward(dx.data(), dg.data(), db.data(), dy.data(), x.data(), g.data(), mean.data(),
                       rstd.data(), M, C);
    const auto xf = to_f(x), gf = to_f(g), bf = to_f(be), dyf = to_f(dy);
    std::vector<float> yf(y.size()), mf(static_cast<size_t>(M)), rf(static_cast<size_t>(M)), dxf(dx.size(), 0.f),
        dgf(static_cast<size_t>(C), 0.f), dbf(static_cast<size_t>(C), 0.f);
    layernorm_forward(yf.data(), mf.data(), rf.data(), xf.data(), gf.data(), bf.data(), M, C, 1e-5);
    layernorm_backward(dxf.data(), dgf.data(), dbf.data(), dyf.data(), xf.data(), gf.data(),
                       mf.data(), rf.data(), M, C);
    EXPECT_LT(rel(yf, y), 3e-7);
    EXPECT_LT(rel(dxf, dx), 1e-6);
    EXPECT_LT(rel(dgf, dg), 1e-6);
  }
}
