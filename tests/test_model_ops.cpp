// The compute-core kernels against straightforward double-precision references.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/matmul.h"
#include "core/ops.h"
#include "core/threads.h"

namespace clip {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

TEST(MatmulTest, SgemmAllTransposesMatchNaive) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (auto [M, N, K] : {std::tuple{1, 1, 1}, {7, 13, 5}, {50, 300, 64}, {130, 257, 96}}) {
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          auto A = random_vector(size_t(M) * K, 1), B = random_vector(size_t(K) * N, 2);
          auto C = random_vector(size_t(M) * N, 3);
          std::vector<double> want(C.size());
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              double s = 0;
              for (int k = 0; k < K; ++k)
                s += double(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
              want[i * N + j] = 0.5 * s + 2.0 * C[i * N + j];
            }
          sgemm(ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 2.f, C.data(), N);
          EXPECT_LT(max_abs_diff(C, want), 1e-4) << M << "x" << N << "x" << K << " ta=" << ta
                                                 << " tb=" << tb << " threads=" << threads;
        }
    }
  }
  set_num_threads(0);
}

// A product capped to one thread gives the same numbers as the naive sum, and leaves the
// caller's thread setting as it was (no hidden global change, issue 15).
TEST(MatmulTest, ThreadCapIsLocalToTheCall) {
  set_num_threads(2);
  const int M = 64, N = 96, K = 80;
  auto A = random_vector(size_t(M) * K, 7), B = random_vector(size_t(K) * N, 8);
  std::vector<float> capped(size_t(M) * N), full(size_t(M) * N);
  sgemm(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, capped.data(), N, /*threads=*/1);
  EXPECT_EQ(num_threads(), 2);
  EXPECT_EQ(omp_get_max_threads(), 2);
  sgemm(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, full.data(), N);
  for (size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(capped[i], full[i], 1e-4f);
  set_num_threads(0);
}

TEST(MatmulTest, LinearAddsBiasAndHonoursStrides) {
  const int M = 9, N = 70, K = 33, ldx = 40, ldy = 80;
  auto x = random_vector(size_t(M) * ldx, 4), W = random_vector(size_t(N) * K, 5);
  auto b = random_vector(N, 6);
  std::vector<float> y(size_t(M) * ldy, 123.f);
  linear_forward(y.data(), x.data(), W.data(), b.data(), M, N, K, ldx, ldy);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double s = b[j];
      for (int k = 0; k < K; ++k) s += double(x[i * ldx + k]) * W[j * K + k];
      EXPECT_NEAR(y[i * ldy + j], s, 1e-4);
    }
    for (int j = N; j < ldy; ++j) EXPECT_EQ(y[i * ldy + j], 123.f) << "wrote past the row";
  }
}

TEST(OpsTest, ExpAndErfApproximationsAreAccurate) {
  double worst_exp = 0, worst_erf = 0;
  for (float x = -87.f; x <= 88.f; x += 0.01093f) {
    const double want = std::exp(double(x));
    worst_exp = std::max(worst_exp, std::abs(exp_approx(x) - want) / want);
  }
  for (float x = -6.f; x <= 6.f; x += 0.000731f)
    worst_erf = std::max(worst_erf, std::abs(double(erf_approx(x)) - std::erf(double(x))));
  EXPECT_LT(worst_exp, 3e-7);  // ~2.5 ulp
  EXPECT_LT(worst_erf, 5e-7);
  EXPECT_EQ(exp_approx(-1000.f) < 1e-37f, true);
  EXPECT_TRUE(std::isfinite(exp_approx(1000.f)));
  // The vector path at the clamp: QuickGELU of very negative inputs is 0 (or -0), never NaN.
  std::vector<float> big = {-1e4f, -200.f, -60.f, 60.f, 200.f, 1e4f, 0.f, -0.f, 1.f};
  std::vector<float> qg(big.size());
  quick_gelu_forward(qg.data(), big.data(), int64_t(big.size()));
  for (size_t i = 0; i < big.size(); ++i) {
    EXPECT_TRUE(std::isfinite(qg[i])) << big[i];
    if (big[i] < -50) EXPECT_NEAR(qg[i], 0.f, 1e-30f) << big[i];
    if (big[i] > 50) EXPECT_EQ(qg[i], big[i]) << big[i];
  }
}

TEST(OpsTest, LayerNormMatchesDefinitionAndSavesStatistics) {
  const int N = 37, C = 200;
  auto x = random_vector(size_t(N) * C, 7, 3.f), w = random_vector(C, 8), b = random_vector(C, 9);
  for (auto& v : x) v += 5.f;  // an offset mean, where one-pass variance would lose digits
  std::vector<float> y(x.size()), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  std::vector<double> want(y.size());
  for (int i = 0; i < N; ++i) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[i * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[i * C + c] - m) * (x[i * C + c] - m);
    v /= C;
    const double r = 1.0 / std::sqrt(v + 1e-5);
    for (int c = 0; c < C; ++c) want[i * C + c] = (x[i * C + c] - m) * r * w[c] + b[c];
    EXPECT_NEAR(mean[i], m, 1e-5);
    EXPECT_NEAR(rstd[i], r, 1e-5 * r);
  }
  EXPECT_LT(max_abs_diff(y, want), 2e-5);
  // In place gives the same.
  layernorm_forward(x.data(), nullptr, nullptr, x.data(), w.data(), b.data(), N, C, 1e-5f);
  EXPECT_EQ(x, y);
}

TEST(OpsTest, ActivationsMatchDefinitions) {
  auto x = random_vector(100000, 10, 4.f);
  x[0] = -100.f;
  x[1] = 100.f;
  std::vector<float> q(x.size()), g(x.size());
  quick_gelu_forward(q.data(), x.data(), int64_t(x.size()));
  gelu_forward(g.data(), x.data(), int64_t(x.size()));
  double wq = 0, wg = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    wq = std::max(wq, std::abs(q[i] - v / (1.0 + std::exp(-1.702 * v))));
    wg = std::max(wg, std::abs(g[i] - 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))));
  }
  EXPECT_LT(wq, 5e-6);
  EXPECT_LT(wg, 5e-6);
  EXPECT_NEAR(q[0], 0.f, 1e-30f);  // torch: exactly 0 (sigmoid underflows); ours ~-4e-37
  EXPECT_EQ(q[1], 100.f);
}

TEST(OpsTest, SoftmaxRowsSumToOne) {
  const int rows = 5, cols = 77, ld = 80;
  auto x = random_vector(size_t(rows) * ld, 11, 10.f);
  auto orig = x;
  softmax_forward(x.data(), rows, cols, ld);
  for (int i = 0; i < rows; ++i) {
    double mx = -1e30, s = 0;
    for (int j = 0; j < cols; ++j) mx = std::max(mx, double(orig[i * ld + j]));
    for (int j = 0; j < cols; ++j) s += std::exp(orig[i * ld + j] - mx);
    for (int j = 0; j < cols; ++j)
      EXPECT_NEAR(x[i * ld + j], std::exp(orig[i * ld + j] - mx) / s, 1e-6);
    for (int j = cols; j < ld; ++j) EXPECT_EQ(x[i * ld + j], orig[i * ld + j]);
  }
}

// Reference attention in double precision, straight from the definition.
std::vector<double> naive_attention(const std::vector<float>& qkv, int B, int T, int C, int NH,
                                    bool causal) {
  const int hs = C / NH;
  std::vector<double> out(size_t(B) * T * C);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < T; ++i) {
        std::vector<double> s(T, -std::numeric_limits<double>::infinity());
        double mx = -1e300;
        for (int j = 0; j < (causal ? i + 1 : T); ++j) {
          double d = 0;
          for (int c = 0; c < hs; ++c)
            d += double(qkv[(b * T + i) * 3 * C + h * hs + c]) * qkv[(b * T + j) * 3 * C + C + h * hs + c];
          s[j] = d / std::sqrt(double(hs));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int j = 0; j < T; ++j) z += (s[j] = std::exp(s[j] - mx));
        for (int c = 0; c < hs; ++c) {
          double o = 0;
          for (int j = 0; j < T; ++j) o += s[j] / z * qkv[(b * T + j) * 3 * C + 2 * C + h * hs + c];
          out[(b * T + i) * C + h * hs + c] = o;
        }
      }
  return out;
}

TEST(OpsTest, AttentionMatchesDefinitionWithAndWithoutCausalMask) {
  const int B = 3, T = 11, C = 48, NH = 3;
  auto qkv = random_vector(size_t(B) * T * 3 * C, 12);
  for (bool causal : {false, true}) {
    std::vector<float> out(size_t(B) * T * C), att(size_t(B) * NH * T * T);
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, causal);
    EXPECT_LT(max_abs_diff(out, naive_attention(qkv, B, T, C, NH, causal)), 1e-5) << causal;
    // Saved probabilities: rows sum to 1, zero above the diagonal under the mask.
    for (int r = 0; r < B * NH * T; ++r) {
      double s = 0;
      for (int j = 0; j < T; ++j) s += att[size_t(r) * T + j];
      EXPECT_NEAR(s, 1.0, 1e-5);
      if (causal)
        for (int j = r % T + 1; j < T; ++j) EXPECT_EQ(att[size_t(r) * T + j], 0.f);
    }
    // Without a saved buffer (per-thread scratch) the result is identical.
    std::vector<float> out2(out.size());
    attention_forward(out2.data(), nullptr, qkv.data(), B, T, C, NH, causal);
    EXPECT_EQ(out, out2);
  }
  std::vector<float> out(size_t(B) * T * C);
  EXPECT_THROW(attention_forward(out.data(), nullptr, qkv.data(), B, T, C, 5, false), Error);
}

TEST(OpsTest, PooledAttentionEqualsTheFullAttentionRow) {
  const int B = 3, T = 11, C = 48, NH = 3;
  auto qkv = random_vector(size_t(B) * T * 3 * C, 15);
  const std::vector<int64_t> positions = {0, 10, 4};  // first, last and a middle row
  // The pooled rows' queries, as the last block computes them apart from the other rows.
  std::vector<float> q(size_t(B) * C);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) q[size_t(b) * C + c] = qkv[(size_t(b) * T + positions[b]) * 3 * C + c];
  for (bool causal : {false, true}) {
    std::vector<float> out(size_t(B) * C), full(size_t(B) * T * C);
    attention_pooled_forward(out.data(), q.data(), qkv.data(), positions.data(), B, T, C, NH,
                             causal);
    attention_forward(full.data(), nullptr, qkv.data(), B, T, C, NH, causal);
    const auto want = naive_attention(qkv, B, T, C, NH, causal);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) {
        const size_t row = size_t(b) * T + size_t(positions[b]);
        EXPECT_NEAR(out[size_t(b) * C + c], want[row * C + c], 1e-5) << causal << " " << b;
        EXPECT_NEAR(out[size_t(b) * C + c], full[row * C + c], 1e-6) << causal << " " << b;
      }
  }
  std::vector<float> out(size_t(B) * C);
  const std::vector<int64_t> outside = {0, 11, 4};
  EXPECT_THROW(attention_pooled_forward(out.data(), q.data(), qkv.data(), outside.data(), B, T,
                                        C, NH, false),
               Error);
  EXPECT_THROW(attention_pooled_forward(out.data(), q.data(), qkv.data(), positions.data(), B, T,
                                        C, 5, false),
               Error);
}

TEST(OpsTest, EmbeddingAddsPositionsAndRejectsBadIds) {
  const int vocab = 10, C = 4, ctx = 6, T = 3, B = 2;
  auto table = random_vector(size_t(vocab) * C, 13), pos = random_vector(size_t(ctx) * C, 14);
  std::vector<int32_t> ids = {1, 9, 0, 7, 7, 7, 2, 3, 4, 99, 99, 99};  // beyond T is not read
  std::vector<float> out(size_t(B) * T * C);
  embedding_forward(out.data(), ids.data(), ctx, table.data(), vocab, pos.data(), B, T, C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c)
        EXPECT_EQ(out[(b * T + t) * C + c], table[ids[b * ctx + t] * C + c] + pos[t * C + c]);
  ids[7] = 10;
  EXPECT_THROW(embedding_forward(out.data(), ids.data(), ctx, table.data(), vocab, pos.data(), B, T, C), Error);
  ids[7] = -1;
  EXPECT_THROW(embedding_forward(out.data(), ids.data(), ctx, table.data(), vocab, pos.data(), B, T, C), Error);
}

TEST(OpsTest, PatchUnfoldingIsAConvolution) {
  // A kernel = stride = P convolution computed directly vs im2col + product.
  const int B = 2, Cin = 3, S = 12, P = 4, G = S / P, W = 5;
  auto px = random_vector(size_t(B) * Cin * S * S, 15), w = random_vector(size_t(W) * Cin * P * P, 16);
  std::vector<float> cols(size_t(B) * G * G * Cin * P * P), y(size_t(B) * G * G * W);
  im2col_patches(cols.data(), px.data(), B, Cin, S, P);
  sgemm(false, true, B * G * G, W, Cin * P * P, 1.f, cols.data(), Cin * P * P, w.data(), Cin * P * P, 0.f, y.data(), W);
  for (int b = 0; b < B; ++b)
    for (int gy = 0; gy < G; ++gy)
      for (int gx = 0; gx < G; ++gx)
        for (int o = 0; o < W; ++o) {
          double s = 0;
          for (int c = 0; c < Cin; ++c)
            for (int dy = 0; dy < P; ++dy)
              for (int dx = 0; dx < P; ++dx)
                s += double(px[((b * Cin + c) * S + gy * P + dy) * S + gx * P + dx]) *
                     w[((o * Cin + c) * P + dy) * P + dx];
          EXPECT_NEAR(y[((b * G + gy) * G + gx) * W + o], s, 1e-4);
        }
}

TEST(OpsTest, L2NormalizeRowsAndResidualAdd) {
  std::vector<float> x = {3, 4, 0, 0, 0, 0, 1, 1, 1};
  l2_normalize_rows(x.data(), 3, 3);
  EXPECT_FLOAT_EQ(x[0], 0.6f);
  EXPECT_FLOAT_EQ(x[1], 0.8f);
  EXPECT_EQ(x[3], 0.f);  // a zero row stays zero, no NaN
  EXPECT_FLOAT_EQ(x[6], 1.f / std::sqrt(3.f));
  std::vector<float> a = {1, 2, 3}, b = {10, 20, 30};
  residual_add(a.data(), b.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{11, 22, 33}));
}

}  // namespace
}  // namespace clip
