#pragma once
// Training layers of the ModifiedResNet image tower (openai/CLIP model.py): 2-D convolution,
// batch norm (training and evaluation mode), ReLU, non-overlapping average pooling and the
// attention-pooling head, each as an explicit forward that keeps what its backward needs and
// that backward (the llm.c way, like nn/layers.h).
//
// Conventions (as nn/layers.h):
//   * T is float (training) or double (finite-difference checks, the float64 comparison).
//   * Activations are NHWC: [N, H, W, C], channels innermost (as the inference path in
//     backend/conv.h). A 1x1 convolution and batch norm then see a row-major [N*H*W, C] matrix.
//   * Weights are PyTorch's, used in place: conv weight OIHW [out, in, k, k], Linear [out, in].
//   * Every backward ACCUMULATES (+=) into the gradients it produces (parameter and input
//     gradients); a gradient pointer may be null to skip that output.
//   * Results do not depend on the number of threads (reductions use fixed blocks).
#include <cstdint>

namespace clip::nn {

// ---- 2-D convolution without bias (ModifiedResNet's convolutions have none) ----
struct ConvShape {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel = 1;   // square kernel
  int64_t stride = 1;
  int64_t padding = 0;  // zero padding on every side
};
// floor((in + 2 pad - k) / stride) + 1, as torch.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}

// out [N, Ho, Wo, out_channels] = conv(in [N, H, W, in_channels], weight [out, in, k, k]).
// A 1x1 stride-1 convolution is one product; others go through im2col (columns (kh, kw, c),
// with the weight transposed to OHWI) in chunks of whole images, so the scratch stays bounded.
template <typename T>
void conv2d_forward(T* out, const T* in, const T* weight, int64_t N, int64_t H, int64_t W,
                    const ConvShape& s);
// din += d/d(in);  dweight += d/d(weight) (OIHW).
template <typename T>
void conv2d_backward(T* din, T* dweight, const T* dout, const T* in, const T* weight, int64_t N,
                     int64_t H, int64_t W, const ConvShape& s);

// The im2col scratch bound, in elements (default 2^23: 32 MB in float). A chunk is at least
// one image. Process-wide; for memory tuning and for tests (<= 0 restores the default).
void set_im2col_chunk_elements(int64_t n);
int64_t im2col_chunk_elements();

// im2col of an NHWC input for output pixels [row_begin, row_end) (row r = (n, oh, ow)),
// columns (kh, kw, c); zeros where the window leaves the image. col [rows, k*k*C].
template <typename T>
void im2col_nhwc(T* col, const T* in, int64_t H, int64_t W, int64_t C, const ConvShape& s,
                 int64_t row_begin, int64_t row_end);
// Its transpose: din[n, ih, iw, c] += every col entry that im2col read from there, for the
// images [n_begin, n_end) whose rows col holds (col row 0 = image n_begin's first pixel).
template <typename T>
void col2im_nhwc(T* din, const T* col, int64_t H, int64_t W, int64_t C, const ConvShape& s,
                 int64_t n_begin, int64_t n_end);

// ---- BatchNorm2d over the rows of x [M, C] (M = N*H*W), per channel ----
// Training mode (torch's nn.BatchNorm2d in train()): normalises with the batch mean and the
// biased batch variance, saves mean[C] and rstd[C] = 1/sqrt(var + eps), and (when
// running_mean/running_var are not null) updates the running statistics as torch does:
//   running = (1 - momentum) * running + momentum * batch_stat, with the UNBIASED variance
//   var * M / (M - 1). M must be > 1 (torch: "Expected more than 1 value per channel").
// Statistics are accumulated in double (two passes: mean, then centred squares).
template <typename T>
void batchnorm_train_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                             int64_t M, int64_t C, double eps, T* running_mean, T* running_var,
                             double momentum);
// Evaluation mode: normalises with the running statistics; writes mean = running_mean and
// rstd = 1/sqrt(running_var + eps) for the backward.
template <typename T>
void batchnorm_eval_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int64_t M, int64_t C,
                            double eps);
// batch_stats = true (training mode): mean and rstd are functions of x,
//   dx += gamma * rstd * (dy - mean_M(dy) - xhat * mean_M(dy * xhat));
// batch_stats = false (evaluation mode): dx += gamma * rstd * dy.
// Both: dgamma += sum_M(dy * xhat), dbeta += sum_M(dy), xhat = (x - mean) * rstd.
template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t M, int64_t C, bool batch_stats);

// ---- ReLU: y = max(x, 0) (in place allowed) ----
template <typename T>
void relu_forward(T* y, const T* x, int64_t n);
// dx += dy * (y > 0), from the OUTPUT y (as torch's in-place ReLU: the gradient is 0 at 0).
template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n);
// y = relu(a + b) (the bottleneck's residual sum); y may alias a or b.
template <typename T>
void add_relu_forward(T* y, const T* a, const T* b, int64_t n);

// ---- AvgPool2d(k) (kernel = stride = k, no padding, floor): out [N, H/k, W/k, C] ----
template <typename T>
void avgpool_forward(T* out, const T* in, int64_t N, int64_t H, int64_t W, int64_t C, int64_t k);
// din += dout / k^2 spread over each window (rows/columns cut off by the floor get nothing).
template <typename T>
void avgpool_backward(T* din, const T* dout, int64_t N, int64_t H, int64_t W, int64_t C,
                      int64_t k);

// ---- AttentionPool2d (model.py): x [B, HW, C] (NHWC of the last stage, spatial flattened)
//   tokens[b] = [mean_i x[b, i]; x[b, 0..HW)] + pos          [B, L = HW + 1, C]
//   q = tokens[b, 0] Wq^T + bq  [B, C];  k, v = tokens Wk^T + bk, tokens Wv^T + bv  [B, L, C]
//   per head h (head dim d = C / heads): p = softmax_j((q_h / sqrt d) . k_jh), o_h = sum_j p_j v_jh
//   out = o Wc^T + bc  [B, O]  (F.multi_head_attention_forward with the mean token as query)
template <typename T>
struct AttnPoolWeights {
  const T *pos, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *c_w, *c_b;  // pos [L, C], c_w [O, C]
};
template <typename T>
struct AttnPoolGrads {  // any may be null
  T *pos, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *c_w, *c_b;
};
// What the forward keeps (the caller allocates): tokens, k, v [B, L, C]; q, o [B, C];
// probs [B, heads, L].
template <typename T>
struct AttnPoolActs {
  T *tokens, *q, *k, *v, *probs, *o;
};
template <typename T>
void attnpool_forward(T* out, const AttnPoolActs<T>& a, const T* x, const AttnPoolWeights<T>& w,
                      int64_t B, int64_t HW, int64_t C, int64_t heads, int64_t O);
// Elements of scratch attnpool_backward needs.
inline int64_t attnpool_scratch_size(int64_t B, int64_t HW, int64_t C) {
  return 3 * B * (HW + 1) * C + 2 * B * C;
}
// dx [B, HW, C] += d/dx; parameter gradients into g.
template <typename T>
void attnpool_backward(T* dx, const AttnPoolGrads<T>& g, const T* dout, const AttnPoolActs<T>& a,
                       const AttnPoolWeights<T>& w, int64_t B, int64_t HW, int64_t C,
                       int64_t heads, int64_t O, T* scratch);

// NCHW float pixels -> NHWC T (the tower's input; pixels get no gradient).
template <typename T>
void nchw_to_nhwc(T* out, const float* in, int64_t N, int64_t C, int64_t H, int64_t W);

}  // namespace clip::nn
