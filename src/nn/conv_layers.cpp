#include "nn/conv_layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/layers.h"

namespace clip::nn {

namespace {

// Threads only pay off above some work (as nn/layers.cpp): tiny layers run serially.
inline bool parallel_worth_it(int64_t work) { return work >= (int64_t(1) << 17); }

// Per-thread scratch, grown on demand and kept (im2col chunks, transposed weights).
template <typename T>
T* scratch(int slot, size_t n) {
  static thread_local std::vector<T> bufs[3];
  auto& b = bufs[slot];
  if (b.size() < n) {
    b.clear();
    b.shrink_to_fit();
    b.resize(n);
  }
  return b.data();
}

// im2col chunks hold at most this many elements (whole images; at least one image).
int64_t g_col_chunk_elements = int64_t(1) << 23;

bool is_pointwise(const ConvShape& s) { return s.kernel == 1 && s.stride == 1 && s.padding == 0; }

// OIHW [O, I, k, k] <-> OHWI [O, k, k, I].
template <typename T>
void oihw_to_ohwi(T* dst, const T* src, int64_t O, int64_t I, int64_t K) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t kk = 0; kk < K * K; ++kk) dst[(o * K * K + kk) * I + i] = src[(o * I + i) * K * K + kk];
}
template <typename T>
void add_ohwi_to_oihw(T* dst, const T* src, int64_t O, int64_t I, int64_t K) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t kk = 0; kk < K * K; ++kk) dst[(o * I + i) * K * K + kk] += src[(o * K * K + kk) * I + i];
}

// Column reductions of an [M, C] matrix in fixed row blocks (so the result does not depend
// on the thread count): out[c] = sum_r f(r, c), accumulated in double.
constexpr int64_t kRowBlock = 256;
template <typename F>
void column_sums(int64_t M, int64_t C, double* out, const F& f) {
  const int64_t nb = (M + kRowBlock - 1) / kRowBlock;
  std::vector<double> part(size_t(nb * C), 0.0);
#pragma omp parallel for schedule(static) if (parallel_worth_it(M * C))
  for (int64_t b = 0; b < nb; ++b) {
    double* p = part.data() + b * C;
    const int64_t r1 = std::min(M, (b + 1) * kRowBlock);
    for (int64_t r = b * kRowBlock; r < r1; ++r)
      for (int64_t c = 0; c < C; ++c) p[c] += f(r, c);
  }
  for (int64_t c = 0; c < C; ++c) out[c] = 0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t c = 0; c < C; ++c) out[c] += part[size_t(b * C + c)];
}

}  // namespace

// ---------------------------------------------------------------- convolution

void set_im2col_chunk_elements(int64_t n) { g_col_chunk_elements = n > 0 ? n : int64_t(1) << 23; }
int64_t im2col_chunk_elements() { return g_col_chunk_elements; }

template <typename T>
void im2col_nhwc(T* col, const T* in, int64_t H, int64_t W, int64_t C, const ConvShape& s,
                 int64_t row_begin, int64_t row_end) {
  const int64_t K = s.kernel, Ho = conv_out_size(H, K, s.stride, s.padding),
                Wo = conv_out_size(W, K, s.stride, s.padding), P = Ho * Wo, KK = K * K * C;
#pragma omp parallel for schedule(static) if (parallel_worth_it((row_end - row_begin) * KK))
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / P, oh = (r % P) / Wo, ow = r % Wo;
    T* dst = col + (r - row_begin) * KK;
    for (int64_t kh = 0; kh < K; ++kh) {
      const int64_t ih = oh * s.stride - s.padding + kh;
      for (int64_t kw = 0; kw < K; ++kw) {
        const int64_t iw = ow * s.stride - s.padding + kw;
        T* d = dst + (kh * K + kw) * C;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
          std::fill_n(d, C, T(0));
        } else {
          std::copy_n(in + ((n * H + ih) * W + iw) * C, C, d);
        }
      }
    }
  }
}

template <typename T>
void col2im_nhwc(T* din, const T* col, int64_t H, int64_t W, int64_t C, const ConvShape& s,
                 int64_t n_begin, int64_t n_end) {
  // Gather form (each input pixel sums what it fed), so threads never write the same place.
  const int64_t K = s.kernel, st = s.stride, pad = s.padding;
  const int64_t Ho = conv_out_size(H, K, st, pad), Wo = conv_out_size(W, K, st, pad);
  const int64_t P = Ho * Wo, KK = K * K * C;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth_it((n_end - n_begin) * H * W * K * K * C))
  for (int64_t n = n_begin; n < n_end; ++n)
    for (int64_t ih = 0; ih < H; ++ih)
      for (int64_t iw = 0; iw < W; ++iw) {
        T* d = din + ((n * H + ih) * W + iw) * C;
        for (int64_t kh = 0; kh < K; ++kh) {
          const int64_t th = ih + pad - kh;
          if (th < 0 || th % st != 0 || th / st >= Ho) continue;
          const int64_t oh = th / st;
          for (int64_t kw = 0; kw < K; ++kw) {
            const int64_t tw = iw + pad - kw;
            if (tw < 0 || tw % st != 0 || tw / st >= Wo) continue;
            const int64_t ow = tw / st;
            const T* src = col + ((n - n_begin) * P + oh * Wo + ow) * KK + (kh * K + kw) * C;
            for (int64_t c = 0; c < C; ++c) d[c] += src[c];
          }
        }
      }
}

template <typename T>
void conv2d_forward(T* out, const T* in, const T* weight, int64_t N, int64_t H, int64_t W,
                    const ConvShape& s) {
  const int64_t Cin = s.in_channels, Cout = s.out_channels, K = s.kernel;
  if (is_pointwise(s)) {
    gemm<T>(false, true, N * H * W, Cout, Cin, T(1), in, Cin, weight, Cin, T(0), out, Cout);
    return;
  }
  const int64_t Ho = conv_out_size(H, K, s.stride, s.padding), Wo = conv_out_size(W, K, s.stride, s.padding);
  if (Ho <= 0 || Wo <= 0) throw Error("conv2d: the input is smaller than the kernel");
  const int64_t P = Ho * Wo, KK = K * K * Cin;
  T* wt = scratch<T>(0, size_t(Cout * KK));
  oihw_to_ohwi(wt, weight, Cout, Cin, K);
  const int64_t per_chunk = std::max<int64_t>(1, g_col_chunk_elements / (P * KK));
  T* col = scratch<T>(1, size_t(std::min(N, per_chunk) * P * KK));
  for (int64_t n0 = 0; n0 < N; n0 += per_chunk) {
    const int64_t n1 = std::min(N, n0 + per_chunk), rows = (n1 - n0) * P;
    im2col_nhwc(col, in, H, W, Cin, s, n0 * P, n1 * P);
    gemm<T>(false, true, rows, Cout, KK, T(1), col, KK, wt, KK, T(0), out + n0 * P * Cout, Cout);
  }
}

template <typename T>
void conv2d_backward(T* din, T* dweight, const T* dout, const T* in, const T* weight, int64_t N,
                     int64_t H, int64_t W, const ConvShape& s) {
  const int64_t Cin = s.in_channels, Cout = s.out_channels, K = s.kernel;
  if (is_pointwise(s)) {
    const int64_t M = N * H * W;
    if (din) gemm<T>(false, false, M, Cin, Cout, T(1), dout, Cout, weight, Cin, T(1), din, Cin);
    if (dweight) gemm<T>(true, false, Cout, Cin, M, T(1), dout, Cout, in, Cin, T(1), dweight, Cin);
    return;
  }
  const int64_t Ho = conv_out_size(H, K, s.stride, s.padding), Wo = conv_out_size(W, K, s.stride, s.padding);
  const int64_t P = Ho * Wo, KK = K * K * Cin;
  T* wt = nullptr;
  if (din) {
    wt = scratch<T>(0, size_t(Cout * KK));
    oihw_to_ohwi(wt, weight, Cout, Cin, K);
  }
  T* dwt = nullptr;
  if (dweight) {
    dwt = scratch<T>(2, size_t(Cout * KK));
    std::fill_n(dwt, Cout * KK, T(0));
  }
  const int64_t per_chunk = std::max<int64_t>(1, g_col_chunk_elements / (P * KK));
  T* col = scratch<T>(1, size_t(std::min(N, per_chunk) * P * KK));
  for (int64_t n0 = 0; n0 < N; n0 += per_chunk) {
    const int64_t n1 = std::min(N, n0 + per_chunk), rows = (n1 - n0) * P;
    const T* dy = dout + n0 * P * Cout;
    if (dweight) {
      im2col_nhwc(col, in, H, W, Cin, s, n0 * P, n1 * P);
      gemm<T>(true, false, Cout, KK, rows, T(1), dy, Cout, col, KK, T(1), dwt, KK);
    }
    if (din) {
      gemm<T>(false, false, rows, KK, Cout, T(1), dy, Cout, wt, KK, T(0), col, KK);
      col2im_nhwc(din, col, H, W, Cin, s, n0, n1);
    }
  }
  if (dweight) add_ohwi_to_oihw(dweight, dwt, Cout, Cin, K);
}

// ---------------------------------------------------------------- batch norm

template <typename T>
void batchnorm_train_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                             int64_t M, int64_t C, double eps, T* running_mean, T* running_var,
                             double momentum) {
  if (M <= 1)
    throw Error("batch norm: expected more than 1 value per channel when training (got " +
                std::to_string(M) + ")");
  std::vector<double> m(static_cast<size_t>(C)), v(static_cast<size_t>(C));
  column_sums(M, C, m.data(), [&](int64_t r, int64_t c) { return double(x[r * C + c]); });
  for (auto& a : m) a /= double(M);
  column_sums(M, C, v.data(), [&](int64_t r, int64_t c) {
    const double d = double(x[r * C + c]) - m[size_t(c)];
    return d * d;
  });
  // y = (x - mean) * (rstd * gamma) + beta: subtracting the mean first keeps float precision
  // when a channel's mean is large next to its spread.
  std::vector<T> mu(static_cast<size_t>(C)), scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double var = v[size_t(c)] / double(M);
    const double r = 1.0 / std::sqrt(var + eps);
    mean[c] = T(m[size_t(c)]);
    rstd[c] = T(r);
    const double a = r * double(gamma[c]);
    mu[size_t(c)] = T(m[size_t(c)]);
    scale[size_t(c)] = T(a);
    shift[size_t(c)] = beta[c];
    if (running_mean)
      running_mean[c] = T((1.0 - momentum) * double(running_mean[c]) + momentum * m[size_t(c)]);
    if (running_var)
      running_var[c] = T((1.0 - momentum) * double(running_var[c]) +
                         momentum * var * double(M) / double(M - 1));
  }
#pragma omp parallel for schedule(static) if (parallel_worth_it(M * C))
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = (x[r * C + c] - mu[size_t(c)]) * scale[size_t(c)] + shift[size_t(c)];
}

template <typename T>
void batchnorm_eval_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int64_t M, int64_t C,
                            double eps) {
  std::vector<T> mu(static_cast<size_t>(C)), scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double r = 1.0 / std::sqrt(double(running_var[c]) + eps);
    mean[c] = running_mean[c];
    rstd[c] = T(r);
    const double a = r * double(gamma[c]);
    mu[size_t(c)] = running_mean[c];
    scale[size_t(c)] = T(a);
    shift[size_t(c)] = beta[c];
  }
#pragma omp parallel for schedule(static) if (parallel_worth_it(M * C))
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = (x[r * C + c] - mu[size_t(c)]) * scale[size_t(c)] + shift[size_t(c)];
}

template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t M, int64_t C, bool batch_stats) {
  std::vector<double> sdy(static_cast<size_t>(C)), sdyx(static_cast<size_t>(C));
  column_sums(M, C, sdy.data(), [&](int64_t r, int64_t c) { return double(dy[r * C + c]); });
  column_sums(M, C, sdyx.data(), [&](int64_t r, int64_t c) {
    return double(dy[r * C + c]) * ((double(x[r * C + c]) - double(mean[c])) * double(rstd[c]));
  });
  for (int64_t c = 0; c < C; ++c) {
    if (dgamma) dgamma[c] += T(sdyx[size_t(c)]);
    if (dbeta) dbeta[c] += T(sdy[size_t(c)]);
  }
  if (!dx) return;
  // dx = a * ((dy - mean_M(dy)) - (x - mean) * kr), kr = rstd * mean_M(dy * xhat) per channel:
  // dy's channel mean is subtracted from dy itself before any scaling, so the cancellation
  // (batch norm removes the mean and the xhat component of dy) loses as little as it can.
  std::vector<T> ka(static_cast<size_t>(C)), kmdy(static_cast<size_t>(C)), kr(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double r = rstd[c];
    ka[size_t(c)] = T(double(gamma[c]) * r);
    kmdy[size_t(c)] = batch_stats ? T(sdy[size_t(c)] / double(M)) : T(0);
    kr[size_t(c)] = batch_stats ? T(r * sdyx[size_t(c)] / double(M)) : T(0);
  }
#pragma omp parallel for schedule(static) if (parallel_worth_it(M * C))
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c)
      dx[r * C + c] += ka[size_t(c)] * ((dy[r * C + c] - kmdy[size_t(c)]) -
                                        (x[r * C + c] - mean[c]) * kr[size_t(c)]);
}

// ---------------------------------------------------------------- ReLU

template <typename T>
void relu_forward(T* y, const T* x, int64_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth_it(n))
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth_it(n))
  for (int64_t i = 0; i < n; ++i) dx[i] += y[i] > T(0) ? dy[i] : T(0);
}

template <typename T>
void add_relu_forward(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth_it(n))
  for (int64_t i = 0; i < n; ++i) {
    const T s = a[i] + b[i];
    y[i] = s > T(0) ? s : T(0);
  }
}

// ---------------------------------------------------------------- average pooling

template <typename T>
void avgpool_forward(T* out, const T* in, int64_t N, int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t Ho = H / k, Wo = W / k;
  const T divisor = T(k * k);
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth_it(N * H * W * C))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        T* o = out + ((n * Ho + oh) * Wo + ow) * C;
        std::fill_n(o, C, T(0));
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < k; ++j) {
            const T* src = in + ((n * H + oh * k + i) * W + ow * k + j) * C;
            for (int64_t c = 0; c < C; ++c) o[c] += src[c];
          }
        // Sum then divide, as PyTorch's avg_pool2d (the same as * 1/k^2 for ModifiedResNet's
        // k = 2, not for every k).
        for (int64_t c = 0; c < C; ++c) o[c] /= divisor;
      }
}

template <typename T>
void avgpool_backward(T* din, const T* dout, int64_t N, int64_t H, int64_t W, int64_t C,
                      int64_t k) {
  const int64_t Ho = H / k, Wo = W / k;
  const T inv = T(1) / T(k * k);
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth_it(N * H * W * C))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const T* g = dout + ((n * Ho + oh) * Wo + ow) * C;
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < k; ++j) {
            T* d = din + ((n * H + oh * k + i) * W + ow * k + j) * C;
            for (int64_t c = 0; c < C; ++c) d[c] += g[c] * inv;
          }
      }
}

// ---------------------------------------------------------------- attention pooling

template <typename T>
void attnpool_forward(T* out, const AttnPoolActs<T>& a, const T* x, const AttnPoolWeights<T>& w,
                      int64_t B, int64_t HW, int64_t C, int64_t heads, int64_t O) {
  const int64_t L = HW + 1, hd = C / heads;
  // Tokens: the spatial mean first, then the spatial features; plus the positional embedding.
  for (int64_t b = 0; b < B; ++b) {
    const T* xb = x + b * HW * C;
    T* tb = a.tokens + b * L * C;
    std::vector<double> mean(size_t(C), 0.0);
    for (int64_t i = 0; i < HW; ++i)
      for (int64_t c = 0; c < C; ++c) mean[size_t(c)] += xb[i * C + c];
    for (int64_t c = 0; c < C; ++c) tb[c] = T(mean[size_t(c)] / double(HW)) + w.pos[c];
    for (int64_t i = 0; i < HW; ++i)
      for (int64_t c = 0; c < C; ++c) tb[(1 + i) * C + c] = xb[i * C + c] + w.pos[(1 + i) * C + c];
  }
  // q from the mean token only (strided rows of tokens); k, v from every token.
  for (int64_t b = 0; b < B; ++b) std::copy_n(w.q_b, C, a.q + b * C);
  gemm<T>(false, true, B, C, C, T(1), a.tokens, L * C, w.q_w, C, T(1), a.q, C);
  linear_forward<T>(a.k, a.tokens, w.k_w, w.k_b, B * L, C, C);
  linear_forward<T>(a.v, a.tokens, w.v_w, w.v_b, B * L, C, C);
  const T sqrt_hd = std::sqrt(T(hd));
#pragma omp parallel for schedule(static) if (parallel_worth_it(B * L * C))
  for (int64_t bh = 0; bh < B * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    const T* q = a.q + b * C + h * hd;
    T* p = a.probs + bh * L;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < L; ++j) {
      const T* k = a.k + (b * L + j) * C + h * hd;
      T s = 0;
      for (int64_t d = 0; d < hd; ++d) s += (q[d] / sqrt_hd) * k[d];
      p[j] = s;
      mx = std::max(mx, s);
    }
    T sum = 0;
    for (int64_t j = 0; j < L; ++j) {
      p[j] = std::exp(p[j] - mx);
      sum += p[j];
    }
    for (int64_t j = 0; j < L; ++j) p[j] /= sum;
    T* o = a.o + b * C + h * hd;
    std::fill_n(o, hd, T(0));
    for (int64_t j = 0; j < L; ++j) {
      const T* v = a.v + (b * L + j) * C + h * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] += p[j] * v[d];
    }
  }
  linear_forward<T>(out, a.o, w.c_w, w.c_b, B, O, C);
}

template <typename T>
void attnpool_backward(T* dx, const AttnPoolGrads<T>& g, const T* dout, const AttnPoolActs<T>& a,
                       const AttnPoolWeights<T>& w, int64_t B, int64_t HW, int64_t C,
                       int64_t heads, int64_t O, T* scratch) {
  const int64_t L = HW + 1, hd = C / heads;
  T* dtok = scratch;
  T* dk = dtok + B * L * C;
  T* dv = dk + B * L * C;
  T* dq = dv + B * L * C;
  T* dO = dq + B * C;
  std::fill_n(scratch, attnpool_scratch_size(B, HW, C), T(0));
  linear_backward<T>(dO, g.c_w, g.c_b, dout, a.o, w.c_w, B, O, C);
  const T sqrt_hd = std::sqrt(T(hd));
#pragma omp parallel for schedule(static) if (parallel_worth_it(B * L * C))
  for (int64_t bh = 0; bh < B * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    const T* p = a.probs + bh * L;
    const T* go = dO + b * C + h * hd;
    const T* q = a.q + b * C + h * hd;
    std::vector<T> dp(static_cast<size_t>(L));
    T s = 0;
    for (int64_t j = 0; j < L; ++j) {
      const T* v = a.v + (b * L + j) * C + h * hd;
      T* gv = dv + (b * L + j) * C + h * hd;
      T acc = 0;
      for (int64_t d = 0; d < hd; ++d) {
        acc += go[d] * v[d];
        gv[d] += p[j] * go[d];
      }
      dp[size_t(j)] = acc;
      s += p[j] * acc;
    }
    T* gq = dq + b * C + h * hd;
    for (int64_t j = 0; j < L; ++j) {
      const T ds = p[j] * (dp[size_t(j)] - s) / sqrt_hd;
      const T* k = a.k + (b * L + j) * C + h * hd;
      T* gk = dk + (b * L + j) * C + h * hd;
      for (int64_t d = 0; d < hd; ++d) {
        gq[d] += ds * k[d];
        gk[d] += ds * q[d];
      }
    }
  }
  // q = tokens[:, 0] Wq^T + bq (rows strided by L*C).
  gemm<T>(false, false, B, C, C, T(1), dq, C, w.q_w, C, T(1), dtok, L * C);
  if (g.q_w) gemm<T>(true, false, C, C, B, T(1), dq, C, a.tokens, L * C, T(1), g.q_w, C);
  if (g.q_b)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += dq[b * C + c];
      g.q_b[c] += T(s);
    }
  linear_backward<T>(dtok, g.k_w, g.k_b, dk, a.tokens, w.k_w, B * L, C, C);
  linear_backward<T>(dtok, g.v_w, g.v_b, dv, a.tokens, w.v_w, B * L, C, C);
  if (g.pos)
    for (int64_t j = 0; j < L; ++j)
      for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b) s += dtok[(b * L + j) * C + c];
        g.pos[j * C + c] += T(s);
      }
  if (dx)
    for (int64_t b = 0; b < B; ++b) {
      const T* t = dtok + b * L * C;
      T* d = dx + b * HW * C;
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c) d[i * C + c] += t[(1 + i) * C + c] + t[c] / T(HW);
    }
}

template <typename T>
void nchw_to_nhwc(T* out, const float* in, int64_t N, int64_t C, int64_t H, int64_t W) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth_it(N * C * H * W))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c)
          out[((n * H + h) * W + w) * C + c] = T(in[((n * C + c) * H + h) * W + w]);
}

#define CLIP_INSTANTIATE(T)                                                                        \
  template void conv2d_forward<T>(T*, const T*, const T*, int64_t, int64_t, int64_t,              \
                                  const ConvShape&);                                              \
  template void conv2d_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,        \
                                   int64_t, const ConvShape&);                                    \
  template void im2col_nhwc<T>(T*, const T*, int64_t, int64_t, int64_t, const ConvShape&,         \
                               int64_t, int64_t);                                                 \
  template void col2im_nhwc<T>(T*, const T*, int64_t, int64_t, int64_t, const ConvShape&,         \
                               int64_t, int64_t);                                                 \
  template void batchnorm_train_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t,     \
                                           int64_t, double, T*, T*, double);                      \
  template void batchnorm_eval_forward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                          const T*, int64_t, int64_t, double);                    \
  template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,         \
                                      const T*, int64_t, int64_t, bool);                          \
  template void relu_forward<T>(T*, const T*, int64_t);                                           \
  template void relu_backward<T>(T*, const T*, const T*, int64_t);                                \
  template void add_relu_forward<T>(T*, const T*, const T*, int64_t);                             \
  template void avgpool_forward<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t);    \
  template void avgpool_backward<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t);   \
  template void attnpool_forward<T>(T*, const AttnPoolActs<T>&, const T*,                         \
                                    const AttnPoolWeights<T>&, int64_t, int64_t, int64_t,         \
                                    int64_t, int64_t);                                            \
  template void attnpool_backward<T>(T*, const AttnPoolGrads<T>&, const T*,                       \
                                     const AttnPoolActs<T>&, const AttnPoolWeights<T>&, int64_t,  \
                                     int64_t, int64_t, int64_t, int64_t, T*);                     \
  template void nchw_to_nhwc<T>(T*, const float*, int64_t, int64_t, int64_t, int64_t);

CLIP_INSTANTIATE(float)
CLIP_INSTANTIATE(double)
#undef CLIP_INSTANTIATE

}  // namespace clip::nn
