#include "nn/layers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/cpu_features.h"
#include "backend/matmul.h"
#include "backend/vector_kernels.h"

namespace clip::nn {

namespace {
// Threads only pay off above some work: tiny layers (the test models) run serially, which
// also keeps them fast when the machine is busy.
inline bool parallel_worth_it(int64_t work) { return work >= (int64_t(1) << 17); }

}  // namespace


namespace {

// Sums in double with eight independent partial sums (vectorisable; a fixed order, so the
// result does not depend on threads). f(c) gives the c-th term.
template <typename F>
inline double sum8(int64_t n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int k = 0; k < 8; ++k) acc[k] += f(c + k);
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; c < n; ++c) s += f(c);
  return s;
}

// Column sums of rows: out[j] (+)= sum_i a[i * ld + j] (j < N), summed in double in row order.
// Parallel over blocks of 64 columns, whose accumulators stay in registers while the rows
// stream by (memory-bound: ~18 GB/s on one core); every column is summed in the same order
// whatever the thread count.
template <typename T>
void column_sums(T* out, const T* a, int64_t M, int64_t N, int64_t ld) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1 && parallel_worth_it(M * N))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kBlock, n = std::min(kBlock, N - j0);
    double acc[kBlock] = {};
    for (int64_t i = 0; i < M; ++i) {
      const T* row = a + i * ld + j0;
      for (int64_t j = 0; j < n; ++j) acc[j] += double(row[j]);
    }
    for (int64_t j = 0; j < n; ++j) out[j0 + j] += T(acc[j]);
  }
}
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // The core's backend (oneDNN's sgemm on the shared OpenMP pool): OpenBLAS's own threads
  // spin against the OpenMP threads of the elementwise passes (15 % of a step in sched_yield).
  // Small products (< 4 MFLOP, ~50 us on one core) run on the calling thread only: waking
  // the pool costs more than it saves there, and oneDNN splits such products along K with
  // threads spin-waiting on each other's partial sums, which on a shared machine (a thread
  // descheduled) burnt a quarter of the tiny configurations' time.
  const bool small = 2.0 * double(M) * double(N) * double(K) < 4e6;
  clip::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, small ? 1 : 0);
}
template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  clip::dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---------------------------------------------------------------- linear / projection

template <typename T>
void linear_forward(T* y, const T* x, const T* W, const T* b, int64_t M, int64_t N, int64_t K,
                    bool accumulate_output) {
  if (!accumulate_output) {
#pragma omp parallel for if (parallel_worth_it(M * N))
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) y[i * N + j] = b ? b[j] : T(0);
  } else if (b) {
#pragma omp parallel for if (parallel_worth_it(M * N))
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) y[i * N + j] += b[j];
  }
  gemm<T>(false, true, M, N, K, T(1), x, K, W, K, T(1), y, N);
}

template <typename T>
void linear_forward_residual(T* y, const T* residual, const T* x, const T* W, const T* b,
                             int64_t M, int64_t N, int64_t K) {
#pragma omp parallel for if (parallel_worth_it(M * N))
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) y[i * N + j] = residual[i * N + j] + (b ? b[j] : T(0));
  gemm<T>(false, true, M, N, K, T(1), x, K, W, K, T(1), y, N);
}

template <typename T>
void linear_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, int64_t M,
                     int64_t N, int64_t K, bool accumulate_dx) {
  if (dx) gemm<T>(false, false, M, K, N, T(1), dy, N, W, K, accumulate_dx ? T(1) : T(0), dx, K);
  if (dW) gemm<T>(true, false, N, K, M, T(1), dy, N, x, K, T(1), dW, K);
  if (db) column_sums(db, dy, M, N, N);
}

template <typename T>
void project_forward(T* y, const T* x, const T* P, int64_t M, int64_t N, int64_t K) {
  gemm<T>(false, false, M, N, K, T(1), x, K, P, N, T(0), y, N);
}

template <typename T>
void project_backward(T* dx, T* dP, const T* dy, const T* x, const T* P, int64_t M, int64_t N,
                      int64_t K) {
  if (dx) gemm<T>(false, true, M, K, N, T(1), dy, N, P, N, T(1), dx, K);
  if (dP) gemm<T>(true, false, K, N, M, T(1), x, K, dy, N, T(1), dP, N);
}

// ---------------------------------------------------------------- LayerNorm

template <typename T>
void layernorm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                       int64_t M, int64_t C, double eps) {
#pragma omp parallel for if (parallel_worth_it(M * C))
  for (int64_t i = 0; i < M; ++i) {
    const T* xi = x + i * C;
    const double m = sum8(C, [&](int64_t c) { return double(xi[c]); }) / double(C);
    const double v = sum8(C, [&](int64_t c) {
      const double d = double(xi[c]) - m;
      return d * d;
    });
    const double r = 1.0 / std::sqrt(v / double(C) + eps);
    T* yi = y + i * C;
    for (int64_t c = 0; c < C; ++c)
      yi[c] = T((double(xi[c]) - m) * r * double(gamma[c]) + double(beta[c]));  // one rounding
    mean[i] = T(m);
    rstd[i] = T(r);
  }
}

template <typename T>
void layernorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t M, int64_t C) {
  if (dx) {
#pragma omp parallel for if (parallel_worth_it(M * C))
    for (int64_t i = 0; i < M; ++i) {
      const T* xi = x + i * C;
      const T* dyi = dy + i * C;
      const double m = mean[i], r = rstd[i];
      const double sum_dn =
          sum8(C, [&](int64_t c) { return double(dyi[c]) * double(gamma[c]); }) / double(C);
      const double sum_dn_n = sum8(C, [&](int64_t c) {
                                return double(dyi[c]) * double(gamma[c]) * ((double(xi[c]) - m) * r);
                              }) / double(C);
      T* dxi = dx + i * C;
      for (int64_t c = 0; c < C; ++c) {
        const double n = (double(xi[c]) - m) * r;
        const double dn = double(dyi[c]) * gamma[c];
        dxi[c] = T(double(dxi[c]) + r * (dn - sum_dn - n * sum_dn_n));  // one rounding
      }
    }
  }
  if (dgamma || dbeta) {
    // Column sums over the rows, walking rows contiguously (see column_sums).
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1 && parallel_worth_it(M * C))
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kBlock, n = std::min(kBlock, C - c0);
      double g[kBlock] = {}, bsum[kBlock] = {};
      for (int64_t i = 0; i < M; ++i) {
        const T* dyi = dy + i * C + c0;
        const T* xi = x + i * C + c0;
        const double m = mean[i], r = rstd[i];
        for (int64_t c = 0; c < n; ++c) {
          const double dyv = dyi[c];
          g[c] += dyv * ((double(xi[c]) - m) * r);
          bsum[c] += dyv;
        }
      }
      for (int64_t c = 0; c < n; ++c) {
        if (dgamma) dgamma[c0 + c] += T(g[c]);
        if (dbeta) dbeta[c0 + c] += T(bsum[c]);
      }
    }
  }
}

// ---------------------------------------------------------------- activations

namespace {
// y = act(x) over [i0, i1): the scalar forms (double, tails, non-AVX2 builds).
template <typename T>
inline void act_fwd_scalar(Act act, T* y, const T* x, int64_t i0, int64_t i1) {
  if (act == Act::QuickGELU)
    for (int64_t i = i0; i < i1; ++i) y[i] = x[i] * (T(1) / (T(1) + std::exp(-(T(1.702) * x[i]))));
  else
    for (int64_t i = i0; i < i1; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
}
// dx (+)= dy * act'(x) over [i0, i1).
template <typename T>
inline void act_bwd_scalar(Act act, T* dx, const T* dy, const T* x, int64_t i0, int64_t i1,
                           bool accumulate) {
  for (int64_t i = i0; i < i1; ++i) {
    T d;
    if (act == Act::QuickGELU) {
      const T s = T(1) / (T(1) + std::exp(-(T(1.702) * x[i])));
      d = dy[i] * (s + T(1.702) * x[i] * s * (T(1) - s));
    } else {
      const T k = T(M_2_SQRTPI * M_SQRT1_2 * 0.5);  // 1 / sqrt(2 pi)
      const T cdf = T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
      const T pdf = std::exp(T(-0.5) * x[i] * x[i]) * k;
      d = dy[i] * (cdf + x[i] * pdf);
    }
    dx[i] = accumulate ? dx[i] + d : d;
  }
}

template <typename T>
void act_fwd_range(Act act, T* y, const T* x, int64_t i0, int64_t i1) {
  act_fwd_scalar(act, y, x, i0, i1);
}
template <typename T>
void act_bwd_range(Act act, T* dx, const T* dy, const T* x, int64_t i0, int64_t i1,
                   bool accumulate) {
  act_bwd_scalar(act, dx, dy, x, i0, i1, accumulate);
}

}  // namespace
namespace {
template <>
void act_fwd_range<float>(Act act, float* y, const float* x, int64_t i0, int64_t i1) {
  const int64_t done =
      cpu_use_avx2() ? backend::activation_forward_avx2(act == Act::QuickGELU, y, x, i0, i1) : i0;
  act_fwd_scalar(act, y, x, done, i1);
}
template <>
void act_bwd_range<float>(Act act, float* dx, const float* dy, const float* x, int64_t i0,
                          int64_t i1, bool accumulate) {
  const int64_t done = cpu_use_avx2() ? backend::activation_backward_avx2(
                                             act == Act::QuickGELU, dx, dy, x, i0, i1, accumulate)
                                       : i0;
  act_bwd_scalar(act, dx, dy, x, done, i1, accumulate);
}

// Splits [0, n) into per-thread ranges (multiples of 64 elements) when worth it.
template <typename F>
void for_ranges(int64_t n, F f) {
  if (!parallel_worth_it(n)) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = (n * t / nt) / 64 * 64, i1 = t + 1 == nt ? n : (n * (t + 1) / nt) / 64 * 64;
    if (i1 > i0) f(i0, i1);
  }
}
}  // namespace

template <typename T>
void activation_forward(Act act, T* y, const T* x, int64_t n) {
  for_ranges(n, [&](int64_t i0, int64_t i1) { act_fwd_range<T>(act, y, x, i0, i1); });
}

template <typename T>
void activation_backward(Act act, T* dx, const T* dy, const T* x, int64_t n, bool accumulate) {
  for_ranges(n, [&](int64_t i0, int64_t i1) { act_bwd_range<T>(act, dx, dy, x, i0, i1, accumulate); });
}

// ---------------------------------------------------------------- attention

namespace {
// In place over row[0, n): softmax; row[n, L) = 0 (the causal mask).
template <typename T>
inline void softmax_row_generic(T* row, int64_t n, int64_t L) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  for (int64_t j = n; j < L; ++j) row[j] = 0;
}
template <typename T>
inline void softmax_row(T* row, int64_t n, int64_t L) {
  softmax_row_generic(row, n, L);
}
}  // namespace
namespace {
template <>
inline void softmax_row<float>(float* row, int64_t n, int64_t L) {
  if (cpu_use_avx2())
    backend::softmax_row_avx2(row, n, L);
  else
    softmax_row_generic(row, n, L);
}

// dS = P * (dP - <dP, P>) * scale over row[0, n) (P is zero beyond n, so dS is too).
template <typename T>
inline void softmax_backward_row_generic(T* dS, const T* P, int64_t n, int64_t L, T scale) {
  double d = 0;
  for (int64_t j = 0; j < n; ++j) d += double(dS[j]) * double(P[j]);
  const T dot = T(d);
  for (int64_t j = 0; j < n; ++j) dS[j] = P[j] * (dS[j] - dot) * scale;
  for (int64_t j = n; j < L; ++j) dS[j] = 0;
}
template <typename T>
inline void softmax_backward_row(T* dS, const T* P, int64_t n, int64_t L, T scale) {
  softmax_backward_row_generic(dS, P, n, L, scale);
}
}  // namespace
namespace {
template <>
inline void softmax_backward_row<float>(float* dS, const float* P, int64_t n, int64_t L,
                                        float scale) {
  if (cpu_use_avx2())
    backend::softmax_backward_row_avx2(dS, P, n, L, scale);
  else
    softmax_backward_row_generic(dS, P, n, L, scale);
}

// Per-(batch, head) products run in parallel over (b, h), each gemm on its calling thread
// (clip::sgemm is serial inside a parallel region). The double build (tests) stays serial:
// OpenBLAS's dgemm is not meant to be entered from several OpenMP threads at once.
template <typename T>
inline bool attention_parallel(int64_t work) {
  return std::is_same_v<T, float> && parallel_worth_it(work);
}

// Where sequence b lives: rows begin(b) .. begin(b) + len(b) - 1 of the [rows, ...] buffers;
// its probabilities (full attention) at probs + prob(b, h), [len, len]. Uniform: every
// sequence has L rows (offsets null); packed: sequence b is rows offsets[b] .. offsets[b+1]-1.
struct Seqs {
  const int64_t* off = nullptr;
  int64_t L = 0, H = 0, B = 0;
  std::vector<int64_t> sq;  // packed: H * (prefix sums of len^2)
  Seqs(const int64_t* offsets, int64_t L_, int64_t B_, int64_t H_) : off(offsets), L(L_), H(H_), B(B_) {
    if (off) {
      sq.assign(size_t(B + 1), 0);
      for (int64_t b = 0; b < B; ++b) sq[size_t(b + 1)] = sq[size_t(b)] + H * len(b) * len(b);
    }
  }
  int64_t begin(int64_t b) const { return off ? off[b] : b * L; }
  int64_t len(int64_t b) const { return off ? off[b + 1] - off[b] : L; }
  int64_t prob(int64_t b, int64_t h) const {
    return off ? sq[size_t(b)] + h * len(b) * len(b) : (b * H + h) * L * L;
  }
  int64_t max_len() const {
    if (!off) return L;
    int64_t m = 0;
    for (int64_t b = 0; b < B; ++b) m = std::max(m, len(b));
    return m;
  }
  int64_t work(int64_t hd) const {  // ~ multiply-adds of the full attention
    if (!off) return B * H * L * L * hd;
    return (sq[size_t(B)]) * hd;
  }
};

// Per (b, h), with Q, K, V the [n, hd] column slices of qkv (row stride 3D):
//   S = (Q / sqrt(hd)) K^T (nn.MultiheadAttention scales q before the product), P = softmax(S)
//   (masked above the diagonal when causal), O = P V.
template <typename T>
void attention_forward_core(T* out, T* probs, const T* qkv, const Seqs& sq, int64_t D,
                            bool causal) {
  const int64_t H = sq.H, hd = D / H, ld = 3 * D, B = sq.B;
  const T sqrt_hd = std::sqrt(T(hd));
  const int64_t Lmax = sq.max_len();
#pragma omp parallel if (attention_parallel<T>(sq.work(hd)))
  {
    std::vector<T> q(size_t(Lmax * hd));
    // dynamic: packed sequences differ in cost (n^2); each (b, h) is independent of the
    // thread that runs it, so the result does not depend on the schedule
#pragma omp for schedule(dynamic, 2)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, L = sq.len(b);
      const T* Q = qkv + sq.begin(b) * ld + h * hd;
      for (int64_t i = 0; i < L; ++i)
        for (int64_t d = 0; d < hd; ++d) q[i * hd + d] = Q[i * ld + d] / sqrt_hd;
      T* P = probs + sq.prob(b, h);
      gemm<T>(false, true, L, L, hd, T(1), q.data(), hd, Q + D, ld, T(0), P, L);
      for (int64_t i = 0; i < L; ++i) softmax_row(P + i * L, causal ? i + 1 : L, L);
      gemm<T>(false, false, L, hd, L, T(1), P, L, Q + 2 * D, ld, T(0),
              out + sq.begin(b) * D + h * hd, D);
    }
  }
}

// Per (b, h): dP = dO V^T; dV (+)= P^T dO; dS = P (dP - rowsum(dP P)) / sqrt(hd);
// dQ (+)= dS K; dK (+)= dS^T Q.
template <typename T>
void attention_backward_core(T* dqkv, const T* dout, const T* qkv, const T* probs,
                             const Seqs& sq, int64_t D, bool causal, bool accumulate) {
  const int64_t H = sq.H, hd = D / H, ld = 3 * D, B = sq.B;
  const T inv_sqrt_hd = T(1) / std::sqrt(T(hd));
  const T beta = accumulate ? T(1) : T(0);
  const int64_t Lmax = sq.max_len();
#pragma omp parallel if (attention_parallel<T>(sq.work(hd)))
  {
    std::vector<T> dS(size_t(Lmax * Lmax));
#pragma omp for schedule(dynamic, 2)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, L = sq.len(b);
      const T* Q = qkv + sq.begin(b) * ld + h * hd;
      T* dQ = dqkv + sq.begin(b) * ld + h * hd;
      const T* dO = dout + sq.begin(b) * D + h * hd;
      const T* P = probs + sq.prob(b, h);
      gemm<T>(false, true, L, L, hd, T(1), dO, D, Q + 2 * D, ld, T(0), dS.data(), L);
      gemm<T>(true, false, L, hd, L, T(1), P, L, dO, D, beta, dQ + 2 * D, ld);
      for (int64_t i = 0; i < L; ++i)
        softmax_backward_row(dS.data() + i * L, P + i * L, causal ? i + 1 : L, L, inv_sqrt_hd);
      gemm<T>(false, false, L, hd, L, T(1), dS.data(), L, Q + D, ld, beta, dQ, ld);
      gemm<T>(true, false, L, hd, L, T(1), dS.data(), L, Q, ld, beta, dQ + D, ld);
    }
  }
}

// One query row per sequence (row index[b] of sequence b, its q given unscaled in q[b]):
// s = (q / sqrt(hd)) K^T over the first n keys (n = index[b] + 1 when causal, else the
// sequence's length), p = softmax(s), o = p V. probs: [B, H, Lmax] (zeros past n).
template <typename T>
void attention_pooled_forward_core(T* out, T* probs, const T* q, const T* qkv,
                                   const int32_t* index, const Seqs& sq, int64_t D,
                                   bool causal) {
  const int64_t H = sq.H, hd = D / H, ld = 3 * D, B = sq.B, Lp = sq.max_len();
  const T sqrt_hd = std::sqrt(T(hd));
#pragma omp parallel if (attention_parallel<T>(B * H * Lp * hd * 8))
  {
    std::vector<T> qs(static_cast<size_t>(hd));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* K = qkv + sq.begin(b) * ld + D + h * hd;
      for (int64_t d = 0; d < hd; ++d) qs[d] = q[b * D + h * hd + d] / sqrt_hd;
      const int64_t n = causal ? int64_t(index[b]) + 1 : sq.len(b);
      T* P = probs + bh * Lp;
      gemm<T>(false, true, 1, n, hd, T(1), qs.data(), hd, K, ld, T(0), P, Lp);
      softmax_row(P, n, Lp);
      gemm<T>(false, false, 1, hd, n, T(1), P, Lp, K + D, ld, T(0), out + b * D + h * hd, D);
    }
  }
}

template <typename T>
void attention_pooled_backward_core(T* dq, T* dqkv, const T* dout, const T* q, const T* qkv,
                                    const T* probs, const int32_t* index, const Seqs& sq,
                                    int64_t D, bool causal, bool accumulate) {
  const int64_t H = sq.H, hd = D / H, ld = 3 * D, B = sq.B, Lp = sq.max_len();
  const T inv_sqrt_hd = T(1) / std::sqrt(T(hd));
  const T beta = accumulate ? T(1) : T(0);
#pragma omp parallel if (attention_parallel<T>(B * H * Lp * hd * 8))
  {
    std::vector<T> dS(static_cast<size_t>(Lp));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, L = sq.len(b);
      const T* K = qkv + sq.begin(b) * ld + D + h * hd;
      T* dK = dqkv + sq.begin(b) * ld + D + h * hd;
      const T* dO = dout + b * D + h * hd;
      const T* P = probs + bh * Lp;
      const int64_t n = causal ? int64_t(index[b]) + 1 : L;
      // dP = dO V^T; dV = P^T dO (an outer product over all L rows: P = 0 past n)
      gemm<T>(false, true, 1, n, hd, T(1), dO, D, K + D, ld, T(0), dS.data(), Lp);
      gemm<T>(true, false, L, hd, 1, T(1), P, Lp, dO, D, beta, dK + D, ld);
      softmax_backward_row(dS.data(), P, n, L, inv_sqrt_hd);
      // dq (+)= dS K; dK (+)= dS^T q
      gemm<T>(false, false, 1, hd, n, T(1), dS.data(), Lp, K, ld, beta, dq + b * D + h * hd, D);
      gemm<T>(true, false, L, hd, 1, T(1), dS.data(), Lp, q + b * D + h * hd, D, beta, dK, ld);
    }
  }
}
}  // namespace

template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, int64_t B, int64_t L, int64_t D,
                       int64_t H, bool causal) {
  attention_forward_core(out, probs, qkv, Seqs(nullptr, L, B, H), D, causal);
}
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* probs, int64_t B,
                        int64_t L, int64_t D, int64_t H, bool causal, bool accumulate) {
  attention_backward_core(dqkv, dout, qkv, probs, Seqs(nullptr, L, B, H), D, causal, accumulate);
}
template <typename T>
void attention_forward_packed(T* out, T* probs, const T* qkv, const int64_t* offsets, int64_t B,
                              int64_t D, int64_t H, bool causal) {
  attention_forward_core(out, probs, qkv, Seqs(offsets, 0, B, H), D, causal);
}
template <typename T>
void attention_backward_packed(T* dqkv, const T* dout, const T* qkv, const T* probs,
                               const int64_t* offsets, int64_t B, int64_t D, int64_t H,
                               bool causal, bool accumulate) {
  attention_backward_core(dqkv, dout, qkv, probs, Seqs(offsets, 0, B, H), D, causal, accumulate);
}
template <typename T>
void attention_pooled_forward(T* out, T* probs, const T* q, const T* qkv, const int32_t* index,
                              const int64_t* offsets, int64_t B, int64_t L, int64_t D, int64_t H,
                              bool causal) {
  attention_pooled_forward_core(out, probs, q, qkv, index, Seqs(offsets, L, B, H), D, causal);
}
template <typename T>
void attention_pooled_backward(T* dq, T* dqkv, const T* dout, const T* q, const T* qkv,
                               const T* probs, const int32_t* index, const int64_t* offsets,
                               int64_t B, int64_t L, int64_t D, int64_t H, bool causal,
                               bool accumulate) {
  attention_pooled_backward_core(dq, dqkv, dout, q, qkv, probs, index, Seqs(offsets, L, B, H), D,
                                 causal, accumulate);
}

template <typename T>
void bias_backward(T* db, const T* dy, int64_t M, int64_t N, int64_t ld) {
  column_sums(db, dy, M, N, ld);
}

// ---------------------------------------------------------------- embeddings and gathers

template <typename T>
void patchify(T* patches, const float* pixels, int64_t B, int64_t S, int64_t p) {
  const int64_t G = S / p, cols = 3 * p * p;
#pragma omp parallel for if (parallel_worth_it(B * G * G * 3 * p * p))
  for (int64_t r = 0; r < B * G * G; ++r) {
    const int64_t b = r / (G * G), gy = (r / G) % G, gx = r % G;
    T* row = patches + r * cols;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t kh = 0; kh < p; ++kh)
        for (int64_t kw = 0; kw < p; ++kw)
          row[(c * p + kh) * p + kw] = T(pixels[((b * 3 + c) * S + gy * p + kh) * S + gx * p + kw]);
  }
}

template <typename T>
void vit_embed_forward(T* x, const T* patch_tokens, const T* cls, const T* pos, int64_t B,
                       int64_t G2, int64_t D) {
  const int64_t L = G2 + 1;
#pragma omp parallel for if (parallel_worth_it(B * L * D))
  for (int64_t r = 0; r < B * L; ++r) {
    const int64_t b = r / L, t = r % L;
    const T* src = t == 0 ? cls : patch_tokens + (b * G2 + t - 1) * D;
    for (int64_t d = 0; d < D; ++d) x[r * D + d] = src[d] + pos[t * D + d];
  }
}

template <typename T>
void vit_embed_backward(T* dpatch_tokens, T* dcls, T* dpos, const T* dx, int64_t B, int64_t G2,
                        int64_t D) {
  const int64_t L = G2 + 1;
  if (dpatch_tokens) {
#pragma omp parallel for if (parallel_worth_it(B * G2 * D))
    for (int64_t r = 0; r < B * G2; ++r) {
      const int64_t b = r / G2, t = r % G2 + 1;
      for (int64_t d = 0; d < D; ++d) dpatch_tokens[r * D + d] += dx[(b * L + t) * D + d];
    }
  }
  // Sums over the batch in double: these gradients are sums of O(1) terms that often nearly
  // cancel, where float accumulation alone would cost ~1e-7 of the terms' size.
  if (dpos) {
#pragma omp parallel for if (parallel_worth_it(B * L * D))
    for (int64_t t = 0; t < L; ++t)
      for (int64_t d = 0; d < D; ++d) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b) s += double(dx[(b * L + t) * D + d]);
        dpos[t * D + d] = T(double(dpos[t * D + d]) + s);
      }
  }
  if (dcls) {
    for (int64_t d = 0; d < D; ++d) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += double(dx[(b * L) * D + d]);
      dcls[d] = T(double(dcls[d]) + s);
    }
  }
}

template <typename T>
void token_embed_forward(T* x, const int32_t* ids, const T* tok, const T* pos, int64_t B,
                         int64_t L, int64_t D) {
#pragma omp parallel for if (parallel_worth_it(B * L * D))
  for (int64_t r = 0; r < B * L; ++r) {
    const T* e = tok + int64_t(ids[r]) * D;
    const T* p = pos + (r % L) * D;
    for (int64_t d = 0; d < D; ++d) x[r * D + d] = e[d] + p[d];
  }
}

template <typename T>
void token_embed_backward(T* dtok, T* dpos, const T* dx, const int32_t* ids, int64_t B,
                          int64_t L, int64_t D) {
  std::vector<int64_t> offsets(size_t(B + 1));
  for (int64_t b = 0; b <= B; ++b) offsets[size_t(b)] = b * L;
  token_embed_backward_packed(dtok, dpos, dx, ids, offsets.data(), B, D);
}

template <typename T>
void token_embed_forward_packed(T* x, const int32_t* ids, const T* tok, const T* pos,
                                const int64_t* offsets, int64_t B, int64_t D) {
#pragma omp parallel for if (parallel_worth_it(offsets[B] * D))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = offsets[b]; r < offsets[b + 1]; ++r) {
      const T* e = tok + int64_t(ids[r]) * D;
      const T* p = pos + (r - offsets[b]) * D;
      for (int64_t d = 0; d < D; ++d) x[r * D + d] = e[d] + p[d];
    }
}

template <typename T>
void token_embed_backward_packed(T* dtok, T* dpos, const T* dx, const int32_t* ids,
                                 const int64_t* offsets, int64_t B, int64_t D) {
  const int64_t rows = offsets[B];
  // Both gradients are sums over rows, accumulated in double (see vit_embed_backward) in row
  // order, whatever the thread count.
  if (dtok) {
    // Rows grouped by id (stable: row order within an id); then each id's rows are summed,
    // in parallel over ids (race-free).
    std::vector<int64_t> order(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) order[size_t(r)] = r;
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t x, int64_t y) { return ids[x] < ids[y]; });
    std::vector<int64_t> start;  // group boundaries in order[]
    for (int64_t k = 0; k < rows; ++k)
      if (k == 0 || ids[order[size_t(k)]] != ids[order[size_t(k - 1)]]) start.push_back(k);
    start.push_back(rows);
    const int64_t groups = int64_t(start.size()) - 1;
#pragma omp parallel if (parallel_worth_it(rows * D))
    {
      std::vector<double> acc(static_cast<size_t>(D));
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t k = start[size_t(g)]; k < start[size_t(g + 1)]; ++k) {
          const T* row = dx + order[size_t(k)] * D;
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += double(row[d]);
        }
        T* out = dtok + int64_t(ids[order[size_t(start[size_t(g)])]]) * D;
        for (int64_t d = 0; d < D; ++d) out[d] = T(double(out[d]) + acc[size_t(d)]);
      }
    }
  }
  if (dpos) {
    int64_t Lmax = 0;
    for (int64_t b = 0; b < B; ++b) Lmax = std::max(Lmax, offsets[b + 1] - offsets[b]);
#pragma omp parallel for if (parallel_worth_it(rows * D))
    for (int64_t l = 0; l < Lmax; ++l)
      for (int64_t d = 0; d < D; ++d) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b)
          if (offsets[b] + l < offsets[b + 1]) s += double(dx[(offsets[b] + l) * D + d]);
        dpos[l * D + d] = T(double(dpos[l * D + d]) + s);
      }
  }
}

template <typename T>
void gather_rows_forward(T* y, const T* x, const int32_t* index, int64_t B, int64_t L,
                         int64_t D) {
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(x + (b * L + index[b]) * D, D, y + b * D);
}

template <typename T>
void gather_rows_backward(T* dx, const T* dy, const int32_t* index, int64_t B, int64_t L,
                          int64_t D) {
  for (int64_t b = 0; b < B; ++b) {
    T* row = dx + (b * L + index[b]) * D;
    for (int64_t d = 0; d < D; ++d) row[d] += dy[b * D + d];
  }
}

// ---------------------------------------------------------------- L2 normalisation

template <typename T>
void l2norm_forward(T* y, T* norm, const T* x, int64_t M, int64_t C) {
  for (int64_t i = 0; i < M; ++i) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(x[i * C + c]) * x[i * C + c];
    const T n = T(std::sqrt(s));
    norm[i] = n;
    for (int64_t c = 0; c < C; ++c) y[i * C + c] = x[i * C + c] / n;
  }
}

template <typename T>
void l2norm_backward(T* dx, const T* dy, const T* y, const T* norm, int64_t M, int64_t C) {
  for (int64_t i = 0; i < M; ++i) {
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += double(y[i * C + c]) * dy[i * C + c];
    for (int64_t c = 0; c < C; ++c)
      dx[i * C + c] += T((dy[i * C + c] - y[i * C + c] * dot) / double(norm[i]));
  }
}

template <typename T>
void add_inplace(T* a, const T* b, int64_t n) {
#pragma omp parallel for if (parallel_worth_it(n))
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

// ---------------------------------------------------------------- instantiations

#define CLIP_TRAIN_LAYERS(T)                                                                      \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,   \
                                  bool);                                                          \
  template void linear_forward_residual<T>(T*, const T*, const T*, const T*, const T*, int64_t,  \
                                           int64_t, int64_t);                                     \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                   int64_t, bool);                                                \
  template void project_forward<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);           \
  template void project_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                    int64_t);                                                     \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, \
                                     double);                                                     \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                      const T*, int64_t, int64_t);                                \
  template void activation_forward<T>(Act, T*, const T*, int64_t);                               \
  template void activation_backward<T>(Act, T*, const T*, const T*, int64_t, bool);              \
  template void attention_forward<T>(T*, T*, const T*, int64_t, int64_t, int64_t, int64_t,       \
                                     bool);                                                       \
  template void attention_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t,        \
                                      int64_t, int64_t, bool, bool);                              \
  template void attention_forward_packed<T>(T*, T*, const T*, const int64_t*, int64_t, int64_t,  \
                                            int64_t, bool);                                       \
  template void attention_backward_packed<T>(T*, const T*, const T*, const T*, const int64_t*,   \
                                             int64_t, int64_t, int64_t, bool, bool);              \
  template void attention_pooled_forward<T>(T*, T*, const T*, const T*, const int32_t*,          \
                                            const int64_t*, int64_t, int64_t, int64_t, int64_t,   \
                                            bool);                                                \
  template void attention_pooled_backward<T>(T*, T*, const T*, const T*, const T*, const T*,     \
                                             const int32_t*, const int64_t*, int64_t, int64_t,    \
                                             int64_t, int64_t, bool, bool);                       \
  template void token_embed_forward_packed<T>(T*, const int32_t*, const T*, const T*,            \
                                              const int64_t*, int64_t, int64_t);                  \
  template void token_embed_backward_packed<T>(T*, T*, const T*, const int32_t*, const int64_t*, \
                                               int64_t, int64_t);                                 \
  template void bias_backward<T>(T*, const T*, int64_t, int64_t, int64_t);                       \
  template void patchify<T>(T*, const float*, int64_t, int64_t, int64_t);                        \
  template void vit_embed_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t,         \
                                     int64_t);                                                    \
  template void vit_embed_backward<T>(T*, T*, T*, const T*, int64_t, int64_t, int64_t);          \
  template void token_embed_forward<T>(T*, const int32_t*, const T*, const T*, int64_t,          \
                                       int64_t, int64_t);                                         \
  template void token_embed_backward<T>(T*, T*, const T*, const int32_t*, int64_t, int64_t,      \
                                        int64_t);                                                 \
  template void gather_rows_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t); \
  template void gather_rows_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t,          \
                                        int64_t);                                                 \
  template void l2norm_forward<T>(T*, T*, const T*, int64_t, int64_t);                           \
  template void l2norm_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t);          \
  template void add_inplace<T>(T*, const T*, int64_t);

CLIP_TRAIN_LAYERS(float)
CLIP_TRAIN_LAYERS(double)

}  // namespace clip::nn
