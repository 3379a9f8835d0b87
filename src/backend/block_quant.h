#pragma once
// Weights quantized in blocks of 32 along each row, as ggml stores them (q4_0: 4-bit values
// q in 0..15 meaning (q - 8) d; q8_0: int8 values q meaning q d; one scale d per block), and
// their products with f32 activations: the `--precision int4` path, and how clip.cpp's q4_0 /
// q8_0 GGUF weights run as stored instead of widened to f32.
//
// A product y = x W^T quantizes each row of x at run time to uint8 (asymmetric: scale
// s = (max - min) / 255 over [min(0, min x), max(0, max x)], zero point z), then
//   y[m, n] = s[m] (sum_g d[n, g] sum_{k in g} u[m, k] q[n, k]  -  z[m] sum_k w[n, k])
// with the block sums in int32 (exact) and the rest in f32: the 4-bit (or 8-bit) weights are
// never widened to floats. Kernels, picked at run time (`block_kernel_name()` says which):
// AVX512-VNNI (vpdpbusd over two blocks per instruction), else AVX2 (vpmaddubsw / vpmaddwd over
// one block), else a portable loop; all three compute the same exact int32 block sums.
#include <cstdint>
#include <memory>
#include <vector>

namespace clip {

enum class BlockFormat { Q4_0, Q8_0 };
const char* block_format_name(BlockFormat f);  // "q4_0", "q8_0"

struct BlockWeight {
  BlockFormat format = BlockFormat::Q4_0;
  int64_t n = 0, k = 0;  // W is [n, k]
  int64_t groups = 0;    // blocks of 32 per row, rounded up to an even number (zero blocks pad)
  std::vector<float> scale;   // [n, groups] d, the f16 scale of the ggml block widened
  std::vector<uint8_t> data;  // q4_0: [n, groups, 16] (byte j: value j low, j + 16 high); q8_0: [n, groups, 32]
  std::vector<float> row_sum;  // [n] sum over k of the dequantized weights (the zero-point term)
  int64_t bytes() const { return int64_t(scale.size() * sizeof(float) + data.size() + row_sum.size() * sizeof(float)); }
};

// From ggml blocks: `rows` rows of ggml_row_bytes bytes each (k / 32 blocks of 18 (q4_0) or 34
// (q8_0) bytes), k a multiple of 32. Errors name `what`.
std::shared_ptr<BlockWeight> block_weight_from_ggml(BlockFormat format, const uint8_t* rows, int64_t n, int64_t k,
                                                    const char* what);
// From f32 W [n, k], quantized by ggml's reference quantizers (rows padded with zeros to a
// multiple of 32): the numbers a GGUF file of that type written by clip.cpp's converter holds.
std::shared_ptr<BlockWeight> block_weight_from_f32(BlockFormat format, const float* w, int64_t n, int64_t k);

// y[M, N] (row stride ldy) = x[M, K] (row stride ldx) W^T + bias (bias may be null); with
// accumulate, added to y. Threads over the output columns unless called inside a parallel region.
void block_linear(const BlockWeight& w, float* y, const float* x, const float* bias, int64_t M, int64_t ldx,
                  int64_t ldy, bool accumulate);

// The kernel block_linear uses on this CPU under CLIP_MAX_ISA: "avx512_vnni", "avx2" or "portable".
const char* block_kernel_name();

// One row of x as block_linear quantizes it (also the int8 path's): u[j] in 0..255 with
// x[j] ~ scale (u[j] - zero_point).
void quantize_row_u8(const float* x, int64_t k, uint8_t* u, float& scale, int32_t& zero_point);

}  // namespace clip
