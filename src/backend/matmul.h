#pragma once
// The backend seam for matrix products. Every dense product in the encoders goes through
// these functions, so another backend (CUDA, a packed-weight CPU kernel) can be added here
// without touching the models. The CPU backend is chosen at build time (see docs/DESIGN.md,
// "Matrix products", for the measurements): oneDNN's sgemm when libdnnl is found, else
// OpenBLAS. All matrices are row-major f32.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/block_quant.h"

namespace clip {

enum class MatmulBackend { OneDNN, OpenBLAS };
MatmulBackend matmul_backend();
const char* matmul_backend_name();
// Called by set_num_threads(); not for direct use.
void matmul_backend_set_threads(int n);

// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major; op(X) = X or X^T.
// lda/ldb/ldc are the row strides of A, B, C as stored. Uses all compute threads when called
// from serial code; when called from inside an OpenMP parallel region it runs on the calling
// thread only (so per-head products can be issued in parallel).
// `threads` > 0 caps the threads of this product (1: the calling thread only); the cap lasts
// for the call and changes nothing the caller or other threads see afterwards.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc, int threads = 0);

// A Linear layer's weight W[N, K] (row-major, as PyTorch stores it), prepared once for the
// many products y = x W^T of inference. oneDNN's sgemm copies W into its kernel's panel layout
// on every call, which at few rows (50 for ViT-B/32 at batch 1, one per sequence in a pooled
// last block) costs 10-20% of the product; packed once here, the copies go away (results
// equal dnnl_sgemm's up to how the sums are split over threads). The packed layout carries
// oneDNN's split of the work over the threads running at construction, and a product run on
// another number of threads (after set_num_threads, or inside a parallel region) hangs in
// oneDNN; such products use W itself,
// so W must outlive this in every case (build after set_num_threads to get the fast path).
// Where oneDNN's packed sgemm is not available (OpenBLAS builds) only W is used.
// How a prepared weight's products run. F32: as above. BF16: W converted once to bf16 in
// oneDNN's blocked layout, x converted to bf16 per product, f32 accumulation and output (oneDNN's
// brgemm matmul: AVX512-BF16 or AMX). Needs bf16_available().
// INT8: W quantized once per output channel (symmetric int8, scale max|W[n,:]| / 127); x
// quantized per row at run time (asymmetric uint8: scale (max - min) / 255 over the row, with
// 0 exactly representable), u8 x s8 products with int32 accumulation (oneDNN's matmul: VNNI
// or AMX), then y = s_x[m] s_w[n] (acc - zp_x[m] sum_k Wq[n, k]) in f32. Needs int8_available().
// INT4: W quantized once into ggml's q4_0 blocks (32 values, one scale each), products on our
// own kernels (backend/block_quant.h: uint8 rows x 4-bit blocks, int32 block sums); runs on
// every CPU (AVX512-VNNI where there is one, else a portable loop).
enum class Precision { F32, BF16, INT8, INT4 };
const char* precision_name(Precision p);  // "fp32", "bf16", "int8", "int4"
// "fp32" (or "f32"), "bf16", "int8", "int4"; anything else: clip::Error saying what exists.
Precision parse_precision(const std::string& name);
// Whether bf16 products have hardware here (AVX512-BF16 or AMX-BF16, within CLIP_MAX_ISA) and
// oneDNN is the backend.
bool bf16_available();
// Whether int8 products have hardware here: AVX512-VNNI or AMX (without VNNI, u8 x s8 pairs
// saturate in 16 bits), within CLIP_MAX_ISA, with oneDNN.
bool int8_available();

struct Bf16Weight;  // matmul.cpp
struct Int8Weight;  // matmul.cpp

class PackedWeight {
 public:
  PackedWeight() = default;
  // pack = false keeps only the view of W (no copy), e.g. where W cannot be released.
  // precision BF16 prepares the bf16 copy instead of the packed f32 one (W is then read only
  // for products on another layout, which oneDNN has not been seen to choose).
  PackedWeight(const float* weight, int64_t N, int64_t K, bool pack = true, Precision precision = Precision::F32);
  // Weights stored block-quantized (a q4_0 or q8_0 GGUF tensor): products run on them as they
  // are, whatever precision was asked for the float weights; `weight` (f32, may be null) is
  // not read by products.
  explicit PackedWeight(std::shared_ptr<BlockWeight> blocks, const float* weight = nullptr);
  // q8_0 blocks report INT8 (8-bit weights, as int8 products have them).
  Precision precision() const {
    return bf16_ ? Precision::BF16
           : int8_ ? Precision::INT8
           : blocks_ ? (blocks_->format == BlockFormat::Q4_0 ? Precision::INT4 : Precision::INT8)
                     : Precision::F32;
  }
  const std::shared_ptr<Bf16Weight>& bf16() const { return bf16_; }
  const std::shared_ptr<Int8Weight>& int8() const { return int8_; }
  const std::shared_ptr<BlockWeight>& blocks() const { return blocks_; }
  // Whether products read a prepared copy (packed f32, bf16, int8, blocks) rather than W itself.
  bool prepared_copy() const { return packed_ || bf16_ || int8_ || blocks_; }

  int64_t out_features() const { return n_; }
  int64_t in_features() const { return k_; }
  const float* weight() const { return weight_; }  // W itself
  bool has_packed_copy() const { return packed_ != nullptr; }
  // The packed copy, or null where packing is unavailable or `threads` differs from the
  // thread count it was packed for.
  const float* packed_for(int threads) const {
    return threads == packed_threads_ ? packed_.get() : nullptr;
  }

 private:
  int64_t n_ = 0, k_ = 0;
  const float* weight_ = nullptr;
  std::shared_ptr<float> packed_;  // opaque oneDNN layout; shared so blocks stay copyable
  int packed_threads_ = 0;
  std::shared_ptr<Bf16Weight> bf16_;
  std::shared_ptr<Int8Weight> int8_;
  std::shared_ptr<BlockWeight> blocks_;
};

// y[M, N] = x[M, K] W^T + bias, or with accumulate y += x W^T + bias (a residual added in
// the same pass). bias may be null. ldx/ldy are row strides (default: K and N).
void linear_forward(float* y, const float* x, const PackedWeight& weight, const float* bias,
                    int64_t M, int64_t ldx = 0, int64_t ldy = 0, bool accumulate = false);

// A fully connected layer as PyTorch stores it: y[M, N] = x[M, K] @ W[N, K]^T + bias[N].
// bias may be null. ldx/ldy are row strides (default: K and N).
// Backward (for later): dx = dy @ W; dW += dy^T @ x; dbias += column sums of dy. Needs x.
void linear_forward(float* y, const float* x, const float* weight, const float* bias, int64_t M,
                    int64_t N, int64_t K, int64_t ldx = 0, int64_t ldy = 0);

// C = alpha op(A) op(B) + beta C in float64 (the training code's reference path; OpenBLAS).
void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
           int64_t ldc);

// The inner product of two f32 vectors, one thread (graph searches call it millions of times
// on single pairs): AVX2 + FMA where the CPU has them (cpu_use_avx2()), else a scalar loop.
float dot(const float* a, const float* b, int64_t n);

}  // namespace clip
