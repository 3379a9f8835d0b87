#pragma once
// The kernels of the CLIP encoders, as forward functions on plain float buffers (llm.c style):
// no allocation, no tensor objects, row-major layouts given in each comment. Each comment
// also says what a backward pass would need saved, so one can be written beside it later.
// Kernels parallelise with OpenMP when the work is large enough and they are not already
// inside a parallel region; all use the thread count set by clip::set_num_threads.
#include <cstdint>

#include "model/config.h"

namespace clip {

// out[N, C] = (inp - mean) * rstd * weight + bias over each row, in f32 (eps e.g. 1e-5).
// mean/rstd [N] receive the per-row statistics when non-null (a backward pass needs them
// and inp). out may alias inp.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int64_t N, int64_t C, float eps);

// out = x * sigmoid(1.702 x), elementwise. Backward needs inp. out may alias inp.
void quick_gelu_forward(float* out, const float* inp, int64_t n);
// out = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's exact nn.GELU). Backward needs inp.
void gelu_forward(float* out, const float* inp, int64_t n);
void activation_forward(Activation act, float* out, const float* inp, int64_t n);

// In place, over each row of x[rows, cols] with row stride ld: x = softmax(x).
// Backward needs the output.
void softmax_forward(float* x, int64_t rows, int64_t cols, int64_t ld);

// Multi-head self-attention core, as in torch.nn.MultiheadAttention after in_proj:
//   qkv[B, T, 3C] holds per token [q | k | v], head h at columns h*hs .. (h+1)*hs of each
//   (hs = C / NH); out[B, T, C] = concat_h softmax(q_h k_h^T / sqrt(hs) + mask) v_h,
//   mask = -inf above the diagonal when causal.
// att[B, NH, T, T], when non-null, receives the attention probabilities (zeros where
// masked), which a backward pass needs together with qkv; null uses per-thread scratch.
void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T,
                       int64_t C, int64_t NH, bool causal);

// The same attention for one query row per sequence (the row that is pooled after the last
// block): q[B, C] holds the query of row positions[b] of sequence b (as in_proj gives it,
// unscaled); its keys and values are the k | v columns of qkv[B, T, 3C] (the q columns are
// not read): keys 0 .. positions[b] when causal, all T otherwise. out[B, C] receives
// concat_h softmax(q_h k_h^T / sqrt(hs)) v_h, with attention_forward's softmax. Backward
// would need the probabilities (recomputable from q and qkv).
void attention_pooled_forward(float* out, const float* q, const float* qkv,
                              const int64_t* positions, int64_t B, int64_t T, int64_t C,
                              int64_t NH, bool causal);

// out[B, T, C] = token_table[ids[b, t]] + pos_table[t] for t < T. ids has row stride
// ids_stride (the context length; T may be shorter). Throws clip::Error on an id outside
// [0, vocab). Backward: scatter-add into the tables by ids.
void embedding_forward(float* out, const int32_t* ids, int64_t ids_stride,
                       const float* token_table, int64_t vocab, const float* pos_table,
                       int64_t B, int64_t T, int64_t C);

// Unfolds non-overlapping P x P patches (a convolution with kernel = stride = P) so the
// convolution becomes one product with the weight viewed as [width, channels*P*P]:
//   pixels[B, channels, S, S] -> out[B, G*G, channels*P*P], G = S / P, patches in row-major
//   grid order, each patch flattened as (channel, dy, dx) like the conv weight.
void im2col_patches(float* out, const float* pixels, int64_t B, int64_t channels, int64_t S,
                    int64_t P);

// x[N, C] += y[N, C] (a residual connection; backward passes the gradient to both).
void residual_add(float* x, const float* y, int64_t n);

// Each row of x[rows, cols] divided by its L2 norm (rows of zeros stay zero).
void l2_normalize_rows(float* x, int64_t rows, int64_t cols);

// exp(x) to about 1 ulp on [-87, 88] (clamped outside), written so loops vectorise.
float exp_approx(float x);
// erf(x) to a few ulp (rational approximation; +-1 outside [-4, 4]), vectorisable.
float erf_approx(float x);

}  // namespace clip
