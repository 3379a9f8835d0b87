// The matrix products and row operations against straightforward double-precision references
// (the networks' layers: test_train_layers*.cpp).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "backend/matmul.h"
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

TEST(OpsTest, L2NormalizeRows) {
  std::vector<float> x = {3, 4, 0, 0, 0, 0, 1, 1, 1};
  l2_normalize_rows(x.data(), 3, 3);
  EXPECT_FLOAT_EQ(x[0], 0.6f);
  EXPECT_FLOAT_EQ(x[1], 0.8f);
  EXPECT_EQ(x[3], 0.f);  // a zero row stays zero, no NaN
  EXPECT_FLOAT_EQ(x[6], 1.f / std::sqrt(3.f));
}

}  // namespace
}  // namespace clip
