#pragma once
// 2-D convolution, average pooling and batch-norm folding for convolutional encoders
// (the ModifiedResNet). Activations are NHWC ([batch, height, width, channels], channels
// innermost): a 1x1 convolution is then one matrix product over all pixels of the batch with
// no copy, and a kxk convolution gathers contiguous channel runs (im2col) into row chunks
// that stay in cache while the product and the epilogue (bias, residual, ReLU) run on them.
//
// Two backends (ConvBackend below): oneDNN's convolution primitive, and im2col + OpenBLAS.
// Threading: everything runs on the OpenMP pool. oneDNN is built on it; the im2col path runs
// one OpenMP parallel region per call whose threads call single-threaded OpenBLAS on their own
// row (or column) block, OpenBLAS's own pool being switched off for the duration (see
// BlasSingleThreadScope), so two pools never spin against each other.
//
// The forward keeps everything a backward needs to sit beside it later: the unfolded
// weights can be kept by the caller (fold_batch_norm returns a new ConvWeights), and
// im2col_nhwc is exposed (its transpose, col2im, is what the input gradient needs).
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/matmul.h"

namespace clip::conv {

struct Conv2dShape {
  int in_channels = 0;
  int out_channels = 0;
  int kernel = 1;   // square kernel
  int stride = 1;
  int padding = 0;  // zero padding on every side
};

// Output size along one dimension: floor((in + 2*pad - kernel) / stride) + 1.
inline int conv_out_size(int in, int kernel, int stride, int padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}

// How a convolution is computed. Both give the same result to float rounding.
//   Im2colGemm: im2col row chunks + single-threaded OpenBLAS per OpenMP thread.
//   OneDNN:     oneDNN's convolution primitive on the NHWC tensors (direct JIT kernels),
//               bias, residual sum and ReLU fused as post-ops; only when built with oneDNN.
//   Auto:       by measurement (docs/benchmarks/resnet.md): oneDNN for 1x1 convolutions and
//               for kxk ones with few input channels (the stem, layer1-2), where OpenBLAS's
//               products are narrow; im2col + OpenBLAS for wide kxk ones.
enum class ConvBackend { Auto, Im2colGemm, OneDNN };
// Process-wide choice; the initial value comes from $CLIP_CONV_BACKEND (auto|gemm|onednn).
void set_conv_backend(ConvBackend backend);
ConvBackend conv_backend();
bool have_onednn();

struct ConvPrimitiveCache;  // per-weights oneDNN primitives and reordered weights

// Convolution weights in the forward's layout: weight [out, kh, kw, in] (OHWI, one GEMM row
// per output channel, matching the NHWC im2col column order) and a bias [out].
struct ConvWeights {
  Conv2dShape shape;
  std::vector<float> weight;  // OHWI
  std::vector<float> bias;    // [out]; zeros when the convolution has none
  // Backend state for these weights (filled on first use per input size); a copy of
  // ConvWeights must not share it, so the constructors below each make a fresh one.
  std::shared_ptr<ConvPrimitiveCache> cache;
  // Set by prepare_conv_products for int8 / int4: the im2col products run on this
  // preparation of `weight` ([out, kh kw in] rows; the low-precision paths of
  // backend/matmul.h), the epilogue in f32. Used only while it prepares this object's
  // `weight` (a copy of the struct falls back to f32).
  std::shared_ptr<const PackedWeight> prepared;
};

// Prepares `w`'s products in `precision` (F32 and BF16: nothing, the f32 backends as before;
// bf16 through im2col measured slower than them).
void prepare_conv_products(ConvWeights& w, Precision precision);

// PyTorch's OIHW weight [out, in, k, k] (and optional bias) into ConvWeights.
ConvWeights make_conv_weights(const Conv2dShape& shape, const float* weight_oihw,
                              const float* bias = nullptr);

// Inference batch norm y = gamma * (x - mean) / sqrt(var + eps) + beta folded into the
// preceding convolution: W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var+eps),
// computed in double so folding adds no rounding beyond the final float store.
ConvWeights fold_batch_norm(const ConvWeights& conv, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, float eps = 1e-5f);

// out[n, ho, wo, out] = act(conv(in) + bias + residual), act = ReLU when `relu`.
// `residual` (same shape as out) may be null, or equal to `out` to accumulate in place.
// `in` must not overlap `out`.
void conv2d_nhwc(const ConvWeights& w, const float* in, int batch, int height, int width,
                 float* out, bool relu, const float* residual = nullptr);

// Rows [row_begin, row_end) of the im2col matrix of an NHWC input: row r is output pixel r
// (n, oh, ow in order), columns are (kh, kw, c) with zeros where the window leaves the image.
void im2col_nhwc(const float* in, int height, int width, int channels, int kernel, int stride,
                 int padding, int64_t row_begin, int64_t row_end, float* col);

// Layout conversions for the batch of images at the boundaries.
void nchw_to_nhwc(const float* in, int batch, int channels, int height, int width, float* out);
void nhwc_to_nchw(const float* in, int batch, int height, int width, int channels, float* out);

// C[M, N] = A[M, K] * op(B) (+ C when accumulate), row-major; op(B) = B^T when b_transposed
// (B stored [N, K], PyTorch's Linear layout), else B stored [K, N]. Split over the OpenMP
// threads by rows (or by columns when M is small), single-threaded OpenBLAS in each.
void parallel_sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                    int64_t ldb, bool b_transposed, float* C, int64_t ldc, bool accumulate = false);

// Switches OpenBLAS's own threading off while alive (restores the previous count); used
// around regions whose OpenMP threads each call OpenBLAS.
class BlasSingleThreadScope {
 public:
  BlasSingleThreadScope();
  ~BlasSingleThreadScope();
  BlasSingleThreadScope(const BlasSingleThreadScope&) = delete;
  BlasSingleThreadScope& operator=(const BlasSingleThreadScope&) = delete;

 private:
  int previous_ = 1;
};

}  // namespace clip::conv
