#include "core/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/matmul.h"
#include "core/simd_target.h"

namespace clip {

namespace {
// Parallelise only work worth a fork/join (a few microseconds) and never nest.
inline bool worth_parallel(int64_t work) { return work >= 32768 && !omp_in_parallel(); }

inline float exp_inline(float x) {
  // Cephes expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n by bits.
  // Clamped to [-87.3, 88] so 2^n stays a finite normal number (exp(88) = 1.65e38).
  x = x < -87.33654f ? -87.33654f : (x > 88.0f ? 88.0f : x);
  float fx = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float r2 = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  int32_t n = int32_t(fx) + 127;
  uint32_t bits = uint32_t(n) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

inline float erf_inline(float x) {
  // Rational approximation used by Eigen and XLA for float erf (odd numerator of degree 13
  // over an even denominator of degree 8); erf is +-1 to float precision beyond |x| = 4.
  x = x < -4.f ? -4.f : (x > 4.f ? 4.f : x);
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

}  // namespace

// ---- AVX2 + FMA kernels, used where cpu_use_avx2() (chosen at run time)
CLIP_AVX2_BEGIN
namespace {
// The same Cephes exp as exp_inline, eight lanes at a time (GCC does not vectorise the scalar
// version: floor and the float->int conversion stay scalar).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.0f));
  const __m256 fx = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

inline __m256 erf8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.f)), _mm256_set1_ps(4.f));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_fmadd_ps(x2, _mm256_set1_ps(-2.72614225801306e-10f), _mm256_set1_ps(2.77068142495902e-08f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.10102402082508e-06f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-5.69250639462346e-05f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-7.34990630326855e-04f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.95459980854025e-03f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-1.60960333262415e-02f));
  p = _mm256_mul_ps(x, p);
  __m256 q = _mm256_fmadd_ps(x2, _mm256_set1_ps(-1.45660718464996e-05f), _mm256_set1_ps(-2.13374055278905e-04f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.68282697438203e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-7.37332916720468e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.42647390514189e-02f));
  return _mm256_div_ps(p, q);
}

// The vector parts of the passes below; each returns where its 8-lane loop stopped (the
// caller finishes the tail with the scalar form).
int64_t quick_gelu_avx2(float* out, const float* inp, int64_t i, int64_t end) {
  for (; i + 8 <= end; i += 8) {
    const __m256 x = _mm256_loadu_ps(inp + i);
    const __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
    _mm256_storeu_ps(out + i, _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e)));
  }
  return i;
}
int64_t gelu_avx2(float* out, const float* inp, int64_t i, int64_t end) {
  for (; i + 8 <= end; i += 8) {
    const __m256 x = _mm256_loadu_ps(inp + i);
    const __m256 half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
    const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(half_x, e, half_x));
  }
  return i;
}
// x[j] = exp(x[j] - m) over whole groups of eight; *sum = the lanes' sums added in lane order.
int64_t softmax_exp_avx2(float* x, int64_t n, float m, float* sum) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    _mm256_storeu_ps(x + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vs);
  float s = 0.f;
  for (float l : lanes) s += l;
  *sum = s;
  return j;
}
}  // namespace
CLIP_AVX2_END

float exp_approx(float x) { return exp_inline(x); }
float erf_approx(float x) { return erf_inline(x); }

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int64_t N, int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (worth_parallel(N * C))
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * C;
    float* y = out + i * C;
    // Two passes (mean, then centred variance) like PyTorch's CPU kernel: no cancellation.
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += x[c];
    const float m = s / float(C);
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) {
      const float d = x[c] - m;
      v += d * d;
    }
    const float r = 1.f / std::sqrt(v / float(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * r * weight[c] + bias[c];
    if (mean) mean[i] = m;
    if (rstd) rstd[i] = r;
  }
}

// Elementwise over [0, n) in chunks: vec(out, inp, i, end) does what it can in eight lanes
// (AVX2, where the CPU runs it) and returns where it stopped; scalar(x) does the rest.
template <class Vec, class Scalar>
inline void elementwise(float* out, const float* inp, int64_t n, Vec vec, Scalar scalar) {
  constexpr int64_t kChunk = 4096;  // whole chunks per thread, multiples of 8
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const bool avx2 = cpu_use_avx2();
#pragma omp parallel for schedule(static) if (worth_parallel(n))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    int64_t i = avx2 ? vec(out, inp, begin, end) : begin;
    for (; i < end; ++i) out[i] = scalar(inp[i]);
  }
}

void quick_gelu_forward(float* out, const float* inp, int64_t n) {
  elementwise(out, inp, n, quick_gelu_avx2,
              [](float x) { return x / (1.f + exp_inline(-1.702f * x)); });
}

void gelu_forward(float* out, const float* inp, int64_t n) {
  elementwise(out, inp, n, gelu_avx2,
              [](float x) { return 0.5f * x * (1.f + erf_inline(x * 0.70710678118654752f)); });
}

void activation_forward(Activation act, float* out, const float* inp, int64_t n) {
  if (act == Activation::QuickGELU)
    quick_gelu_forward(out, inp, n);
  else
    gelu_forward(out, inp, n);
}

namespace {
inline void softmax_row(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;  // std::fmax is a libm call
  float s = 0.f;
  int64_t j = cpu_use_avx2() ? softmax_exp_avx2(x, n, m, &s) : 0;
  for (; j < n; ++j) {
    const float e = exp_inline(x[j] - m);
    x[j] = e;
    s += e;
  }
  const float inv = 1.f / s;
  for (int64_t k = 0; k < n; ++k) x[k] *= inv;
}
}  // namespace

void softmax_forward(float* x, int64_t rows, int64_t cols, int64_t ld) {
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols))
  for (int64_t i = 0; i < rows; ++i) softmax_row(x + i * ld, cols);
}

namespace {
int64_t head_size(int64_t C, int64_t NH) {
  if (NH <= 0 || C % NH != 0)
    throw Error("attention: width " + std::to_string(C) + " is not divisible by " +
                std::to_string(NH) + " heads");
  return C / NH;
}
}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T,
                       int64_t C, int64_t NH, bool causal) {
  const int64_t hs = head_size(C, NH);
  const float scale = 1.f / std::sqrt(float(hs));
  const int64_t C3 = 3 * C;
  // One (batch, head) pair per task; the products run serially on each thread. Without a
  // caller's att buffer each thread keeps one [T, T] score matrix (inference needs no more).
#pragma omp parallel if (B * NH > 1 && !omp_in_parallel())
  {
    std::vector<float> local;
    if (!att) local.resize(size_t(T * T));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        const float* q = qkv + b * T * C3 + h * hs;
        const float* k = q + C;
        const float* v = q + 2 * C;
        float* a = att ? att + (b * NH + h) * T * T : local.data();
        float* o = out + b * T * C + h * hs;
        // scores = scale * q k^T ([T, T]); under the causal mask row i needs only j <= i:
        // the masked upper triangle takes no part in the softmax and is zeroed for P v.
        sgemm(false, true, T, T, hs, scale, q, C3, k, C3, 0.f, a, T);
        for (int64_t i = 0; i < T; ++i) {
          const int64_t valid = causal ? i + 1 : T;
          softmax_row(a + i * T, valid);
          if (valid < T) std::memset(a + i * T + valid, 0, sizeof(float) * size_t(T - valid));
        }
        // out_h = P v_h ([T, hs]) written into its head's columns of out.
        sgemm(false, false, T, hs, T, 1.f, a, T, v, C3, 0.f, o, C);
      }
    }
  }
}

void attention_pooled_forward(float* out, const float* q, const float* qkv,
                              const int64_t* positions, int64_t B, int64_t T, int64_t C,
                              int64_t NH, bool causal) {
  const int64_t hs = head_size(C, NH);
  const float scale = 1.f / std::sqrt(float(hs));
  const int64_t C3 = 3 * C;
  for (int64_t b = 0; b < B; ++b)  // checked here: an exception may not leave the parallel region
    if (positions[b] < 0 || positions[b] >= T)
      throw Error("attention: pooled position " + std::to_string(positions[b]) +
                  " is outside the sequence of " + std::to_string(T));
  // B * NH dot-product rows of at most T keys: plain loops, as a 1-row product through the
  // matmul backend would spend more on the call than on the arithmetic.
#pragma omp parallel if (worth_parallel(B * T * C))
  {
    std::vector<float> scores(static_cast<size_t>(T));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t pos = positions[b];
        const int64_t keys = causal ? pos + 1 : T;
        const float* qh = q + b * C + h * hs;
        const float* k = qkv + b * T * C3 + C + h * hs;
        const float* v = k + C;
        for (int64_t j = 0; j < keys; ++j) {
          const float* kj = k + j * C3;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < hs; ++c) dot += qh[c] * kj[c];
          scores[size_t(j)] = scale * dot;
        }
        softmax_row(scores.data(), keys);
        float* o = out + b * C + h * hs;
        std::fill(o, o + hs, 0.f);
        for (int64_t j = 0; j < keys; ++j) {
          const float p = scores[size_t(j)];
          const float* vj = v + j * C3;
#pragma omp simd
          for (int64_t c = 0; c < hs; ++c) o[c] += p * vj[c];
        }
      }
    }
  }
}

void embedding_forward(float* out, const int32_t* ids, int64_t ids_stride,
                       const float* token_table, int64_t vocab, const float* pos_table,
                       int64_t B, int64_t T, int64_t C) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids[b * ids_stride + t];
      if (id < 0 || id >= vocab)
        throw Error("token id " + std::to_string(id) + " at row " + std::to_string(b) +
                    ", position " + std::to_string(t) + " is outside the vocabulary of " +
                    std::to_string(vocab));
      const float* e = token_table + int64_t(id) * C;
      const float* p = pos_table + t * C;
      float* y = out + (b * T + t) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y[c] = e[c] + p[c];
    }
}

void im2col_patches(float* out, const float* pixels, int64_t B, int64_t channels, int64_t S,
                    int64_t P) {
  const int64_t G = S / P;
  const int64_t patch_len = channels * P * P;
#pragma omp parallel for collapse(2) schedule(static) if (worth_parallel(B * channels * S * S))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t gy = 0; gy < G; ++gy)
      for (int64_t gx = 0; gx < G; ++gx) {
        float* dst = out + ((b * G + gy) * G + gx) * patch_len;
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t dy = 0; dy < P; ++dy) {
            const float* src = pixels + ((b * channels + c) * S + gy * P + dy) * S + gx * P;
            std::memcpy(dst + (c * P + dy) * P, src, sizeof(float) * size_t(P));
          }
      }
}

void residual_add(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void l2_normalize_rows(float* x, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    float* r = x + i * cols;
    double s = 0.0;
    for (int64_t j = 0; j < cols; ++j) s += double(r[j]) * r[j];
    if (s == 0.0) continue;
    const float inv = float(1.0 / std::sqrt(s));
    for (int64_t j = 0; j < cols; ++j) r[j] *= inv;
  }
}

}  // namespace clip
