#include "train/layers.h"

#include <cblas.h>

#include "core/matmul.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace clip::train {

namespace {
inline CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }
// Threads only pay off above some work: tiny layers (the test models) run serially, which
// also keeps them fast when the machine is busy.
inline bool parallel_worth_it(int64_t work) { return work >= (int64_t(1) << 17); }
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // The core's backend (oneDNN's sgemm on the shared OpenMP pool): OpenBLAS's own threads
  // spin against the OpenMP threads of the elementwise passes (15 % of a step in sched_yield).
  clip::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), blasint(M), blasint(N), blasint(K), alpha, A,
              blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
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
void linear_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, int64_t M,
                     int64_t N, int64_t K) {
  if (dx) gemm<T>(false, false, M, K, N, T(1), dy, N, W, K, T(1), dx, K);
  if (dW) gemm<T>(true, false, N, K, M, T(1), dy, N, x, K, T(1), dW, K);
  if (db) {
#pragma omp parallel for if (parallel_worth_it(M * N))
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t i = 0; i < M; ++i) s += dy[i * N + j];
      db[j] += T(s);
    }
  }
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
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += xi[c];
    const double m = s / double(C);
    double v = 0;
    for (int64_t c = 0; c < C; ++c) v += (xi[c] - m) * (xi[c] - m);
    const double r = 1.0 / std::sqrt(v / double(C) + eps);
    T* yi = y + i * C;
    for (int64_t c = 0; c < C; ++c) yi[c] = T((xi[c] - m) * r) * gamma[c] + beta[c];
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
      double sum_dn = 0, sum_dn_n = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double n = (xi[c] - m) * r;
        const double dn = double(dyi[c]) * gamma[c];
        sum_dn += dn;
        sum_dn_n += dn * n;
      }
      sum_dn /= double(C);
      sum_dn_n /= double(C);
      T* dxi = dx + i * C;
      for (int64_t c = 0; c < C; ++c) {
        const double n = (xi[c] - m) * r;
        const double dn = double(dyi[c]) * gamma[c];
        dxi[c] += T(r * (dn - sum_dn - n * sum_dn_n));
      }
    }
  }
  if (dgamma || dbeta) {
#pragma omp parallel for if (parallel_worth_it(M * C))
    for (int64_t c = 0; c < C; ++c) {
      double g = 0, b = 0;
      for (int64_t i = 0; i < M; ++i) {
        const double dyv = dy[i * C + c];
        g += dyv * ((x[i * C + c] - double(mean[i])) * double(rstd[i]));
        b += dyv;
      }
      if (dgamma) dgamma[c] += T(g);
      if (dbeta) dbeta[c] += T(b);
    }
  }
}

// ---------------------------------------------------------------- activations

template <typename T>
void activation_forward(Act act, T* y, const T* x, int64_t n) {
  if (act == Act::QuickGELU) {
#pragma omp parallel for if (parallel_worth_it(n))
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * (T(1) / (T(1) + std::exp(-(T(1.702) * x[i]))));
  } else {
#pragma omp parallel for if (parallel_worth_it(n))
    for (int64_t i = 0; i < n; ++i)
      y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
  }
}

template <typename T>
void activation_backward(Act act, T* dx, const T* dy, const T* x, int64_t n) {
  if (act == Act::QuickGELU) {
#pragma omp parallel for if (parallel_worth_it(n))
    for (int64_t i = 0; i < n; ++i) {
      const T s = T(1) / (T(1) + std::exp(-(T(1.702) * x[i])));
      dx[i] += dy[i] * (s + T(1.702) * x[i] * s * (T(1) - s));
    }
  } else {
    const T k = T(M_2_SQRTPI * M_SQRT1_2 * 0.5);  // 1 / sqrt(2 pi)
#pragma omp parallel for if (parallel_worth_it(n))
    for (int64_t i = 0; i < n; ++i) {
      const T cdf = T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
      const T pdf = std::exp(T(-0.5) * x[i] * x[i]) * k;
      dx[i] += dy[i] * (cdf + x[i] * pdf);
    }
  }
}

// ---------------------------------------------------------------- attention

template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, int64_t B, int64_t L, int64_t D,
                       int64_t H, bool causal) {
  const int64_t hd = D / H;
  const T sqrt_hd = std::sqrt(T(hd));
#pragma omp parallel if (parallel_worth_it(B * H * L * L * hd))
  {
    std::vector<T> q(size_t(L * hd));
#pragma omp for
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* base = qkv + b * L * 3 * D + h * hd;
      // nn.MultiheadAttention divides q by sqrt(head_dim) before q @ k^T.
      for (int64_t i = 0; i < L; ++i)
        for (int64_t d = 0; d < hd; ++d) q[i * hd + d] = base[i * 3 * D + d] / sqrt_hd;
      T* P = probs + bh * L * L;
      for (int64_t i = 0; i < L; ++i) {
        const int64_t jn = causal ? i + 1 : L;
        T* Pi = P + i * L;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < jn; ++j) {
          const T* k = base + j * 3 * D + D;
          T s = 0;
          for (int64_t d = 0; d < hd; ++d) s += q[i * hd + d] * k[d];
          Pi[j] = s;
          mx = std::max(mx, s);
        }
        T sum = 0;
        for (int64_t j = 0; j < jn; ++j) {
          Pi[j] = std::exp(Pi[j] - mx);
          sum += Pi[j];
        }
        const T inv = T(1) / sum;
        for (int64_t j = 0; j < jn; ++j) Pi[j] *= inv;
        for (int64_t j = jn; j < L; ++j) Pi[j] = 0;
        T* o = out + (b * L + i) * D + h * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = 0;
        for (int64_t j = 0; j < jn; ++j) {
          const T* v = base + j * 3 * D + 2 * D;
          const T p = Pi[j];
          for (int64_t d = 0; d < hd; ++d) o[d] += p * v[d];
        }
      }
    }
  }
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* probs, int64_t B,
                        int64_t L, int64_t D, int64_t H, bool causal) {
  const int64_t hd = D / H;
  const T inv_sqrt_hd = T(1) / std::sqrt(T(hd));
#pragma omp parallel if (parallel_worth_it(B * H * L * L * hd))
  {
    std::vector<T> dS(size_t(L * L));
#pragma omp for
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* base = qkv + b * L * 3 * D + h * hd;
      T* dbase = dqkv + b * L * 3 * D + h * hd;
      const T* P = probs + bh * L * L;
      for (int64_t i = 0; i < L; ++i) {
        const int64_t jn = causal ? i + 1 : L;
        const T* dO = dout + (b * L + i) * D + h * hd;
        const T* Pi = P + i * L;
        T* dSi = dS.data() + i * L;
        // dP = dO v^T; dv += P^T dO
        T dot = 0;
        for (int64_t j = 0; j < jn; ++j) {
          const T* v = base + j * 3 * D + 2 * D;
          T* dv = dbase + j * 3 * D + 2 * D;
          T s = 0;
          for (int64_t d = 0; d < hd; ++d) {
            s += dO[d] * v[d];
            dv[d] += Pi[j] * dO[d];
          }
          dSi[j] = s;
          dot += s * Pi[j];
        }
        // softmax backward, then the 1/sqrt(hd) of the scores
        for (int64_t j = 0; j < jn; ++j) dSi[j] = Pi[j] * (dSi[j] - dot) * inv_sqrt_hd;
        // dq += dS k; dk += dS^T q
        const T* q = base + i * 3 * D;
        T* dq = dbase + i * 3 * D;
        for (int64_t j = 0; j < jn; ++j) {
          const T* k = base + j * 3 * D + D;
          T* dk = dbase + j * 3 * D + D;
          const T g = dSi[j];
          for (int64_t d = 0; d < hd; ++d) {
            dq[d] += g * k[d];
            dk[d] += g * q[d];
          }
        }
      }
    }
  }
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
  if (dpos) {
#pragma omp parallel for if (parallel_worth_it(B * L * D))
    for (int64_t t = 0; t < L; ++t)
      for (int64_t d = 0; d < D; ++d) {
        T s = 0;
        for (int64_t b = 0; b < B; ++b) s += dx[(b * L + t) * D + d];
        dpos[t * D + d] += s;
      }
  }
  if (dcls) {
    for (int64_t d = 0; d < D; ++d) {
      T s = 0;
      for (int64_t b = 0; b < B; ++b) s += dx[(b * L) * D + d];
      dcls[d] += s;
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
  if (dtok) {
    // Rows may share an id: parallel over columns keeps the scatter race-free.
#pragma omp parallel for if (parallel_worth_it(B * L * D))
    for (int64_t d = 0; d < D; ++d)
      for (int64_t r = 0; r < B * L; ++r) dtok[int64_t(ids[r]) * D + d] += dx[r * D + d];
  }
  if (dpos) {
#pragma omp parallel for if (parallel_worth_it(B * L * D))
    for (int64_t l = 0; l < L; ++l)
      for (int64_t d = 0; d < D; ++d) {
        T s = 0;
        for (int64_t b = 0; b < B; ++b) s += dx[(b * L + l) * D + d];
        dpos[l * D + d] += s;
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
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                   int64_t);                                                      \
  template void project_forward<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);           \
  template void project_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                    int64_t);                                                     \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, \
                                     double);                                                     \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                      const T*, int64_t, int64_t);                                \
  template void activation_forward<T>(Act, T*, const T*, int64_t);                               \
  template void activation_backward<T>(Act, T*, const T*, const T*, int64_t);                    \
  template void attention_forward<T>(T*, T*, const T*, int64_t, int64_t, int64_t, int64_t,       \
                                     bool);                                                       \
  template void attention_backward<T>(T*, const T*, const T*, const T*, int64_t, int64_t,        \
                                      int64_t, int64_t, bool);                                    \
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

}  // namespace clip::train
