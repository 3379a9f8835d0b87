#pragma once
// Training layers: for every operation of the ViT and text towers an explicit forward that
// keeps what its backward needs, next to that backward (the llm.c way: plain row-major
// buffers planned by the caller, no autograd).
//
// Conventions (all layers):
//   * T is float (training) or double (finite-difference checks, the float64 comparison).
//   * Row-major. "M" is the number of rows (batch * tokens), widths are the last dimension.
//   * Every backward ACCUMULATES (+=) into the gradients it produces, both parameter
//     gradients and input gradients; a gradient pointer may be null to skip that output.
//     The caller zeroes gradient buffers before the first contribution. Some backwards also
//     take accumulate = false, which overwrites their input gradient instead (for scratch
//     buffers: no zeroing pass); parameter gradients always accumulate.
//   * Layouts are PyTorch's: a Linear weight is [out, in]; conv1.weight is [D, 3, p, p].
#include <cstdint>

namespace clip::nn {

// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, through the backend seam
// (clip::sgemm / clip::dgemm, backend/matmul.h).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// ---- fully connected: y[M,N] (+)= x[M,K] @ W[N,K]^T + b[N] ----
// accumulate_output: y += ... (used for residual connections: y holds the residual already).
template <typename T>
void linear_forward(T* y, const T* x, const T* W, const T* b, int64_t M, int64_t N, int64_t K,
                    bool accumulate_output = false);
// y[M,N] = residual[M,N] + x[M,K] @ W[N,K]^T + b[N] (b may be null; y may alias residual):
// a residual branch's output projection without copying the residual into y first.
template <typename T>
void linear_forward_residual(T* y, const T* residual, const T* x, const T* W, const T* b,
                             int64_t M, int64_t N, int64_t K);
// dx += dy @ W;  dW += dy^T @ x;  db += column sums of dy.
// accumulate_dx = false overwrites dx instead (saves zeroing it first); dW/db always add.
template <typename T>
void linear_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, int64_t M,
                     int64_t N, int64_t K, bool accumulate_dx = true);

// ---- projection as OpenAI stores it: y[M,N] = x[M,K] @ P[K,N] (visual.proj, text_projection)
template <typename T>
void project_forward(T* y, const T* x, const T* P, int64_t M, int64_t N, int64_t K);
// dx += dy @ P^T;  dP += x^T @ dy.
template <typename T>
void project_backward(T* dx, T* dP, const T* dy, const T* x, const T* P, int64_t M, int64_t N,
                      int64_t K);

// ---- LayerNorm over the last dimension C (biased variance, eps inside the sqrt) ----
// Saves mean[M] and rstd[M] = 1/sqrt(var + eps). Statistics are accumulated in double.
template <typename T>
void layernorm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                       int64_t M, int64_t C, double eps);
template <typename T>
void layernorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t M, int64_t C);

// ---- MLP activations (elementwise over n values) ----
enum class Act { QuickGELU, GELU };  // x*sigmoid(1.702x) | 0.5x(1+erf(x/sqrt 2)) (torch's exact GELU)
template <typename T>
void activation_forward(Act act, T* y, const T* x, int64_t n);
// dx += dy * act'(x); accumulate = false overwrites dx.
template <typename T>
void activation_backward(Act act, T* dx, const T* dy, const T* x, int64_t n,
                         bool accumulate = true);

// ---- multi-head self-attention core (nn.MultiheadAttention between in_proj and out_proj) ----
// qkv [B, L, 3D]: each row is q | k | v, head h owning columns [h*hd, (h+1)*hd) of each part
// (hd = D / H). out [B, L, D] (heads concatenated). probs [B, H, L, L]: the softmax, saved.
// causal: position i attends to j <= i only (the text tower's additive -inf mask).
template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, int64_t B, int64_t L, int64_t D,
                       int64_t H, bool causal);
// dqkv += d/dqkv (accumulate = false: dqkv = d/dqkv, every element written).
// Both passes are per-(batch, head) matrix products (clip::sgemm on the calling thread of a
// parallel loop over b, h for float; serial dgemm for double) plus a vectorised softmax.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* probs,
                        int64_t B, int64_t L, int64_t D, int64_t H, bool causal,
                        bool accumulate = true);

// The same core for sequences of different lengths packed back to back (the text tower:
// each text only up to its pooled token): sequence b is rows offsets[b] .. offsets[b+1]-1
// of qkv [offsets[B], 3D] and out [offsets[B], D]; probs holds, for b = 0, 1, ..., its
// [H, n_b, n_b] probabilities back to back (sum of H n_b^2 values).
template <typename T>
void attention_forward_packed(T* out, T* probs, const T* qkv, const int64_t* offsets, int64_t B,
                              int64_t D, int64_t H, bool causal);
template <typename T>
void attention_backward_packed(T* dqkv, const T* dout, const T* qkv, const T* probs,
                               const int64_t* offsets, int64_t B, int64_t D, int64_t H,
                               bool causal, bool accumulate = true);

// The same core when only one query row per sequence is needed (the last block of a tower,
// whose output is read at the pooled token only): for sequence b the query is q[b] (the q of
// its row index[b], unscaled, [B, D]); keys and values are qkv's k and v columns of all the
// sequence's rows (q columns are not read); sequences are uniform ([B, L, 3D], offsets null)
// or packed (offsets as above, L ignored). With causal, only keys 0 .. index[b] are used.
// out [B, D]; probs [B, H, Lmax] (Lmax = L, or the longest packed sequence).
template <typename T>
void attention_pooled_forward(T* out, T* probs, const T* q, const T* qkv, const int32_t* index,
                              const int64_t* offsets, int64_t B, int64_t L, int64_t D, int64_t H,
                              bool causal);
// dq [B, D] and the k, v columns of dqkv (+)= their gradients (accumulate = false overwrites
// both, all rows; dqkv's q columns are not touched).
template <typename T>
void attention_pooled_backward(T* dq, T* dqkv, const T* dout, const T* q, const T* qkv,
                               const T* probs, const int32_t* index, const int64_t* offsets,
                               int64_t B, int64_t L, int64_t D, int64_t H, bool causal,
                               bool accumulate = true);

// db[N] += column sums of dy [M, N] (row stride ld), summed in double in row order whatever
// the thread count (linear_backward's bias gradient).
template <typename T>
void bias_backward(T* db, const T* dy, int64_t M, int64_t N, int64_t ld);

// ---- ViT patch embedding: conv1 with kernel = stride = p, no bias ----
// im2col: pixels [B, 3, S, S] -> patches [B * G*G, 3*p*p] (column order c, kh, kw: the
// flattening of conv1.weight [D, 3, p, p]); then linear_forward without bias gives the
// patch tokens. The pixels get no gradient.
template <typename T>
void patchify(T* patches, const float* pixels, int64_t B, int64_t image_size, int64_t patch);

// ViT token assembly: x[b, 0] = cls + pos[0]; x[b, 1+i] = patch_tokens[b, i] + pos[1+i].
// patch_tokens [B, G2, D], x [B, G2+1, D], pos [G2+1, D].
template <typename T>
void vit_embed_forward(T* x, const T* patch_tokens, const T* cls, const T* pos, int64_t B,
                       int64_t G2, int64_t D);
template <typename T>
void vit_embed_backward(T* dpatch_tokens, T* dcls, T* dpos, const T* dx, int64_t B, int64_t G2,
                        int64_t D);

// Text token assembly: x[b, l] = tok[ids[b, l]] + pos[l]. ids must be in [0, vocab).
template <typename T>
void token_embed_forward(T* x, const int32_t* ids, const T* tok, const T* pos, int64_t B,
                         int64_t L, int64_t D);
template <typename T>
void token_embed_backward(T* dtok, T* dpos, const T* dx, const int32_t* ids, int64_t B,
                          int64_t L, int64_t D);

// The same for packed sequences (see attention_forward_packed): ids [offsets[B]] packed,
// x[r] = tok[ids[r]] + pos[r - offsets[b]] for the rows r of sequence b.
template <typename T>
void token_embed_forward_packed(T* x, const int32_t* ids, const T* tok, const T* pos,
                                const int64_t* offsets, int64_t B, int64_t D);
template <typename T>
void token_embed_backward_packed(T* dtok, T* dpos, const T* dx, const int32_t* ids,
                                 const int64_t* offsets, int64_t B, int64_t D);

// Row gather: y[b] = x[b, index[b]] (x [B, L, D], y [B, D]): the class token (index 0) or the
// end-of-text token (argmax of the ids).
template <typename T>
void gather_rows_forward(T* y, const T* x, const int32_t* index, int64_t B, int64_t L, int64_t D);
template <typename T>
void gather_rows_backward(T* dx, const T* dy, const int32_t* index, int64_t B, int64_t L,
                          int64_t D);

// ---- L2 normalisation of rows: y = x / ||x|| (no epsilon, as model.py's x / x.norm()) ----
// Saves norm[M].
template <typename T>
void l2norm_forward(T* y, T* norm, const T* x, int64_t M, int64_t C);
// dx += (dy - y * <y, dy>) / ||x||.
template <typename T>
void l2norm_backward(T* dx, const T* dy, const T* y, const T* norm, int64_t M, int64_t C);

// a += b (n values): residual gradients, gradient accumulation.
template <typename T>
void add_inplace(T* a, const T* b, int64_t n);

}  // namespace clip::nn
