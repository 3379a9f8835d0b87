#pragma once
// The SIMD kernels of the networks' elementwise and row passes (nn/layers.cpp calls them where
// cpu_use_avx2(), chosen at run time; its scalar forms do the rest and the float64 path).
// AVX2 + FMA, eight lanes: Cephes' expf and a rational erf evaluated in double (torch-like
// accuracy: exp 8e-8 relative, the GELU's Phi 6.5e-8 absolute).
#include <cstdint>

namespace clip::backend {

// y = x sigmoid(1.702 x) (quick_gelu) or x Phi(x) (torch's exact GELU) for i in [i0, i1), eight
// at a time; returns the first index left for a scalar tail. y may alias x.
int64_t activation_forward_avx2(bool quick_gelu, float* y, const float* x, int64_t i0,
                                int64_t i1);
// dx (+)= dy * act'(x) likewise (accumulate = false overwrites dx); returns the tail's start.
int64_t activation_backward_avx2(bool quick_gelu, float* dx, const float* dy, const float* x,
                                 int64_t i0, int64_t i1, bool accumulate);
// In place over row[0, n): softmax; row[n, L) = 0 (a causal mask's zeros).
void softmax_row_avx2(float* row, int64_t n, int64_t L);
// dS = P * (dS - <dS, P>) * scale over row[0, n) (the dot in double), dS[n, L) = 0.
void softmax_backward_row_avx2(float* dS, const float* P, int64_t n, int64_t L, float scale);

// One AdamW step over p[i, i1) (decoupled decay, bias corrections folded into the scalars),
// eight lanes at a time; returns the tail's start. Train/optimizer.cpp has the formula.
struct AdamScalars {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, step_size_neg;
};
int64_t adamw_avx2(float* p, const float* g, float* m, float* v, int64_t i, int64_t i1,
                   const AdamScalars& s);

}  // namespace clip::backend
