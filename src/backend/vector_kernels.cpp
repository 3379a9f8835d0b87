#include "backend/vector_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/simd_target.h"

namespace clip::backend {

// ---- AVX2 + FMA: callers use these where cpu_use_avx2() (chosen at run time)
CLIP_AVX2_BEGIN
namespace {
// Vector math for the float path: GCC leaves std::exp and std::erf as scalar libm calls, which
// made the activations ~10 % of a training step.
// Cephes' expf, eight lanes at a time: src/core/ops.cpp's exp8 with its last two additions
// reordered (below).
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
  // 1 + (r + y r^2): one rounding at the end (ops.cpp's (1 + r) + y r^2 rounds twice; this
  // order has max error 8e-8 relative, like libm's 6e-8, instead of 1.2e-7).
  y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0f));
  const __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// The GELU's Phi(x) = 0.5 (1 + erf(x / sqrt 2)), eight lanes: the Eigen/XLA rational erf of
// ops.cpp's erf8, evaluated in double (two halves of four lanes). In float its evaluation
// error reaches 4.4e-7 absolute; in double the approximation itself is left, 6.5e-8 (libm's
// erff: 5.4e-8). Costs ~2x the float version, for a pass that is ~1 % of a step.
inline __m256d erf4d(__m256d x) {
  x = _mm256_min_pd(_mm256_max_pd(x, _mm256_set1_pd(-4.0)), _mm256_set1_pd(4.0));
  const __m256d x2 = _mm256_mul_pd(x, x);
  __m256d p = _mm256_fmadd_pd(x2, _mm256_set1_pd(-2.72614225801306e-10), _mm256_set1_pd(2.77068142495902e-08));
  p = _mm256_fmadd_pd(x2, p, _mm256_set1_pd(-2.10102402082508e-06));
  p = _mm256_fmadd_pd(x2, p, _mm256_set1_pd(-5.69250639462346e-05));
  p = _mm256_fmadd_pd(x2, p, _mm256_set1_pd(-7.34990630326855e-04));
  p = _mm256_fmadd_pd(x2, p, _mm256_set1_pd(-2.95459980854025e-03));
  p = _mm256_fmadd_pd(x2, p, _mm256_set1_pd(-1.60960333262415e-02));
  p = _mm256_mul_pd(x, p);
  __m256d q = _mm256_fmadd_pd(x2, _mm256_set1_pd(-1.45660718464996e-05), _mm256_set1_pd(-2.13374055278905e-04));
  q = _mm256_fmadd_pd(x2, q, _mm256_set1_pd(-1.68282697438203e-03));
  q = _mm256_fmadd_pd(x2, q, _mm256_set1_pd(-7.37332916720468e-03));
  q = _mm256_fmadd_pd(x2, q, _mm256_set1_pd(-1.42647390514189e-02));
  return _mm256_div_pd(p, q);
}
inline __m256 gelu_cdf8(__m256 x) {
  auto half = [](__m128 v) {
    const __m256d xd = _mm256_mul_pd(_mm256_cvtps_pd(v), _mm256_set1_pd(0.70710678118654752));
    const __m256d e = erf4d(xd);
    return _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_add_pd(_mm256_set1_pd(1.0), e)));
  };
  return _mm256_set_m128(half(_mm256_extractf128_ps(x, 1)), half(_mm256_castps256_ps128(x)));
}

// Horizontal sum / max of the eight lanes.
inline float hsum8(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline float hmax8(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
}  // namespace

int64_t activation_forward_avx2(bool quick_gelu, float* y, const float* x, int64_t i0,
                                int64_t i1) {
  int64_t i = i0;
  const __m256 one = _mm256_set1_ps(1.f);
  if (quick_gelu) {
    for (; i + 8 <= i1; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      const __m256 e = exp8(_mm256_mul_ps(v, _mm256_set1_ps(-1.702f)));
      // x * sigmoid(1.702 x), in torch's order (the sigmoid, then the product)
      _mm256_storeu_ps(y + i, _mm256_mul_ps(v, _mm256_div_ps(one, _mm256_add_ps(one, e))));
    }
  } else {
    for (; i + 8 <= i1; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      _mm256_storeu_ps(y + i, _mm256_mul_ps(v, gelu_cdf8(v)));
    }
  }
  return i;
}
int64_t activation_backward_avx2(bool quick_gelu, float* dx, const float* dy, const float* x,
                                 int64_t i0, int64_t i1, bool accumulate) {
  int64_t i = i0;
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= i1; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 d;
    if (quick_gelu) {
      const __m256 kv = _mm256_mul_ps(v, _mm256_set1_ps(1.702f));
      const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), kv))));
      // s + 1.702 x s (1 - s)
      d = _mm256_fmadd_ps(_mm256_mul_ps(kv, s), _mm256_sub_ps(one, s), s);
    } else {
      const __m256 cdf = gelu_cdf8(v);
      const __m256 pdf = _mm256_mul_ps(
          exp8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), v), v)),
          _mm256_set1_ps(0.39894228040143268f));
      d = _mm256_fmadd_ps(v, pdf, cdf);
    }
    d = _mm256_mul_ps(_mm256_loadu_ps(dy + i), d);
    if (accumulate) d = _mm256_add_ps(_mm256_loadu_ps(dx + i), d);
    _mm256_storeu_ps(dx + i, d);
  }
  return i;
}
void softmax_row_avx2(float* row, int64_t n, int64_t L) {
  int64_t j = 0;
  __m256 vmx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (; j + 8 <= n; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(row + j));
  float mx = hmax8(vmx);
  for (; j < n; ++j) mx = std::max(mx, row[j]);
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
    _mm256_storeu_ps(row + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  float sum = hsum8(vs);
  for (; j < n; ++j) {
    // the scalar tail through the same polynomial (one lane)
    const float e = _mm256_cvtss_f32(exp8(_mm256_set1_ps(row[j] - mx)));
    row[j] = e;
    sum += e;
  }
  const float inv = 1.f / sum;
  const __m256 vinv = _mm256_set1_ps(inv);
  j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), vinv));
  for (; j < n; ++j) row[j] *= inv;
  for (j = n; j < L; ++j) row[j] = 0;
}
void softmax_backward_row_avx2(float* dS, const float* P, int64_t n, int64_t L, float scale) {
  // <dP, P> in double: in exact arithmetic the row of dS sums to zero (which makes the key
  // bias's gradient exactly zero); the closer `dot` is, the smaller the float residue (Adam
  // turns that residue into steps of the key biases).
  int64_t j = 0;
  __m256d vd0 = _mm256_setzero_pd(), vd1 = _mm256_setzero_pd();
  for (; j + 8 <= n; j += 8) {
    const __m256 a = _mm256_loadu_ps(dS + j), p = _mm256_loadu_ps(P + j);
    vd0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                          _mm256_cvtps_pd(_mm256_castps256_ps128(p)), vd0);
    vd1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                          _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)), vd1);
  }
  double acc[4];
  _mm256_storeu_pd(acc, _mm256_add_pd(vd0, vd1));
  double dotd = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  for (; j < n; ++j) dotd += double(dS[j]) * double(P[j]);
  const float dot = float(dotd);
  const __m256 vdot = _mm256_set1_ps(dot), vscale = _mm256_set1_ps(scale);
  j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(dS + j), vdot);
    _mm256_storeu_ps(dS + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(P + j), d), vscale));
  }
  for (; j < n; ++j) dS[j] = P[j] * (dS[j] - dot) * scale;
  for (j = n; j < L; ++j) dS[j] = 0;
}
// Returns where the 8-lane loop stopped. Fused multiply-adds for the m, v and final p
// updates; sqrt and division are correctly rounded.
int64_t adamw_avx2(float* p, const float* g, float* m, float* v, int64_t i, int64_t i1,
                   const AdamScalars& s) {
  const __m256 vdecay = _mm256_set1_ps(s.decay), vb1 = _mm256_set1_ps(s.beta1),
               vomb1 = _mm256_set1_ps(s.one_minus_beta1), vb2 = _mm256_set1_ps(s.beta2),
               vomb2 = _mm256_set1_ps(s.one_minus_beta2), vbc2 = _mm256_set1_ps(s.bc2_sqrt),
               veps = _mm256_set1_ps(s.eps), vstep = _mm256_set1_ps(s.step_size_neg);
  for (; i + 8 <= i1; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), vdecay);
    const __m256 mi = _mm256_fmadd_ps(vomb1, gi, _mm256_mul_ps(_mm256_loadu_ps(m + i), vb1));
    const __m256 vi = _mm256_fmadd_ps(gi, _mm256_mul_ps(vomb2, gi),
                                      _mm256_mul_ps(_mm256_loadu_ps(v + i), vb2));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc2), veps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_fmadd_ps(vstep, _mm256_div_ps(mi, denom), pi));
  }
  return i;
}
CLIP_AVX2_END

}  // namespace clip::backend
