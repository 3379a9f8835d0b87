#include "backend/block_quant.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "backend/cpu_features.h"
#include "backend/simd_target.h"
#include "core/error.h"
#include "core/gguf.h"
#include "core/tensor.h"

#include <immintrin.h>

namespace clip {

const char* block_format_name(BlockFormat f) { return f == BlockFormat::Q4_0 ? "q4_0" : "q8_0"; }

namespace {
constexpr int64_t kBlock = 32;
int64_t ggml_bytes(BlockFormat f) { return f == BlockFormat::Q4_0 ? 18 : 34; }
int64_t stored_bytes(BlockFormat f) { return f == BlockFormat::Q4_0 ? 16 : 32; }
int64_t padded_groups(int64_t k) { return ((k + kBlock - 1) / kBlock + 1) / 2 * 2; }

// Round to nearest (halves away from zero) without libm, so the loops vectorise.
inline float round_half_away(float v) { return float(int32_t(v + (v >= 0.f ? 0.5f : -0.5f))); }
}  // namespace

std::shared_ptr<BlockWeight> block_weight_from_ggml(BlockFormat format, const uint8_t* rows, int64_t n, int64_t k,
                                                    const char* what) {
  if (n <= 0 || k <= 0 || k % kBlock != 0)
    throw Error(std::string(what) + ": a " + block_format_name(format) + " weight needs rows of a multiple of 32 values, got [" +
                std::to_string(n) + ", " + std::to_string(k) + "]");
  auto w = std::make_shared<BlockWeight>();
  w->format = format;
  w->n = n;
  w->k = k;
  w->groups = padded_groups(k);
  const int64_t G = w->groups, stored = stored_bytes(format), in_bytes = ggml_bytes(format);
  const int64_t blocks = k / kBlock;
  w->scale.assign(size_t(n * G), 0.f);
  // Padding blocks hold the value 0: q4_0's 8 (1000b in both nibbles), q8_0's 0.
  w->data.assign(size_t(n * G * stored), format == BlockFormat::Q4_0 ? 0x88 : 0x00);
  w->row_sum.assign(size_t(n), 0.f);
#pragma omp parallel for if (n * k > 65536 && !omp_in_parallel())
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* src = rows + r * blocks * in_bytes;
    double sum = 0;
    for (int64_t g = 0; g < blocks; ++g, src += in_bytes) {
      uint16_t h;
      std::memcpy(&h, src, 2);
      const float d = f16_to_f32(h);
      w->scale[size_t(r * G + g)] = d;
      uint8_t* dst = w->data.data() + (r * G + g) * stored;
      std::memcpy(dst, src + 2, size_t(stored));
      int32_t q = 0;
      if (format == BlockFormat::Q4_0)
        for (int j = 0; j < 16; ++j) q += (dst[j] & 0x0F) + (dst[j] >> 4) - 16;
      else
        for (int j = 0; j < 32; ++j) q += int8_t(dst[j]);
      sum += double(d) * q;
    }
    w->row_sum[size_t(r)] = float(sum);
  }
  return w;
}

std::shared_ptr<BlockWeight> block_weight_from_f32(BlockFormat format, const float* w, int64_t n, int64_t k) {
  const int64_t k32 = (k + kBlock - 1) / kBlock * kBlock, blocks = k32 / kBlock, in_bytes = ggml_bytes(format);
  std::vector<uint8_t> ggml(size_t(n * blocks * in_bytes));
#pragma omp parallel if (n * k > 65536 && !omp_in_parallel())
  {
    std::vector<float> row(size_t(k32), 0.f);
#pragma omp for
    for (int64_t r = 0; r < n; ++r) {
      std::copy(w + r * k, w + (r + 1) * k, row.begin());
      uint8_t* out = ggml.data() + r * blocks * in_bytes;
      if (format == BlockFormat::Q4_0)
        quantize_q4_0(row.data(), k32, out);
      else
        quantize_q8_0(row.data(), k32, out);
    }
  }
  auto b = block_weight_from_ggml(format, ggml.data(), n, k32, "weight");
  b->k = k;
  return b;
}

void quantize_row_u8(const float* r, int64_t k, uint8_t* q, float& scale_out, int32_t& zero_out) {
  float lo = 0.f, hi = 0.f;
  for (int64_t j = 0; j < k; ++j) {
    lo = std::min(lo, r[j]);
    hi = std::max(hi, r[j]);
  }
  const float scale = hi > lo ? (hi - lo) / 255.f : 1.f;
  const float inv = 1.f / scale;
  const int32_t zp = int32_t(std::min(255.f, std::max(0.f, round_half_away(-lo * inv))));
  // v >= -zp/inv by construction, so v * inv + zp + 0.5 >= 0: truncation rounds.
  const float offset = float(zp) + 0.5f;
  for (int64_t j = 0; j < k; ++j) q[j] = uint8_t(int32_t(std::min(255.f, std::max(0.f, r[j] * inv + offset))));
  scale_out = scale;
  zero_out = zp;
}

namespace {

// The activations of one product, quantized: [M, groups * 32] bytes, in the order the kernel
// reads the weights (see unpack_q4 below), with per-row scale and zero point.
struct QuantizedRows {
  const uint8_t* u;
  const float* scale;
  const int32_t* zero;
  int64_t stride;  // groups * 32
};

// y[m, n] from the block sums `acc` (sum_g d[n, g] sum_{k in g} u q).
inline float finish(const BlockWeight& w, const QuantizedRows& x, int64_t m, int64_t n, float acc) {
  return x.scale[m] * (acc - float(x.zero[m]) * w.row_sum[size_t(n)]);
}

inline void store(float* y, float v, const float* bias, int64_t n, bool accumulate) {
  if (bias) v += bias[n];
  if (accumulate)
    *y += v;
  else
    *y = v;
}

// ---- portable kernel: one output at a time, block sums in int32 ----
void portable_tile(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                   float* y, int64_t ldy, const float* bias, bool accumulate) {
  const int64_t G = w.groups, sb = stored_bytes(w.format);
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* u = x.u + m * x.stride;
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        const uint8_t* q = w.data.data() + (n * G + g) * sb;
        int32_t s = 0;
        if (w.format == BlockFormat::Q4_0) {
          const uint8_t* ug = u + g * 32;
          for (int j = 0; j < 16; ++j) s += ug[j] * ((q[j] & 0x0F) - 8) + ug[j + 16] * ((q[j] >> 4) - 8);
        } else {
          const uint8_t* ug = u + g * 32;
          for (int j = 0; j < 32; ++j) s += ug[j] * int8_t(q[j]);
        }
        acc += w.scale[size_t(n * G + g)] * float(s);
      }
      store(y + m * ldy + n, finish(w, x, m, n, acc), bias, n, accumulate);
    }
  }
}

// ---- AVX512-VNNI kernel ----
// One instruction (vpdpbusd: u8 x s8, four products summed into each int32 lane) covers two
// blocks. q8_0: 64 stored bytes, lanes 0-7 block 2p, 8-15 block 2p+1. q4_0: the 32 stored bytes
// of the pair give [low nibbles of both blocks | high nibbles of both], i.e. values
// [0..15 of 2p, 0..15 of 2p+1, 16..31 of 2p, 16..31 of 2p+1]: the activations are stored in
// that order (permuted at quantization), and lanes 0-3, 8-11 belong to block 2p, 4-7, 12-15 to 2p+1.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")
// GCC 12's AVX-512 intrinsics fill unused lanes from _mm512_undefined_*(), which it then
// reports as uninitialized (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

template <BlockFormat F>
inline __m512i load_weights(const uint8_t* q) {
  if constexpr (F == BlockFormat::Q8_0) {
    return _mm512_loadu_si512(q);
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_and_si256(b, mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
    return _mm512_sub_epi8(_mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1), _mm512_set1_epi8(8));
  }
}

template <BlockFormat F>
inline __m512 load_scales(const float* d) {
  // Two block scales spread over the lanes of their blocks.
  const __m512 two = _mm512_zextps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(d))));
  const __m512i idx = F == BlockFormat::Q8_0 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                                             : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  return _mm512_permutexvar_ps(idx, two);
}

// MR rows x NR columns of y, all K.
template <BlockFormat F, int MR, int NR>
void vnni_tile(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t n0, float* y, int64_t ldy,
               const float* bias, bool accumulate) {
  const int64_t pairs = w.groups / 2, G = w.groups;
  constexpr int64_t pair_bytes = F == BlockFormat::Q4_0 ? 32 : 64;
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
  const uint8_t* wq[NR];
  const float* ws[NR];
  for (int c = 0; c < NR; ++c) {
    wq[c] = w.data.data() + (n0 + c) * G * (pair_bytes / 2);
    ws[c] = w.scale.data() + (n0 + c) * G;
  }
  const uint8_t* xu[MR];
  for (int r = 0; r < MR; ++r) xu[r] = x.u + (m0 + r) * x.stride;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = _mm512_loadu_si512(xu[r] + p * 64);
    for (int c = 0; c < NR; ++c) {
      const __m512i wv = load_weights<F>(wq[c] + p * pair_bytes);
      const __m512 sv = load_scales<F>(ws[c] + 2 * p);
      for (int r = 0; r < MR; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), xv[r], wv);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sv, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c)
      store(y + (m0 + r) * ldy + n0 + c, finish(w, x, m0 + r, n0 + c, _mm512_reduce_add_ps(acc[r][c])), bias, n0 + c,
            accumulate);
}

template <BlockFormat F, int MR>
void vnni_rows(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t n0, int64_t n1, float* y,
               int64_t ldy, const float* bias, bool accumulate) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) vnni_tile<F, MR, 4>(w, x, m0, n, y, ldy, bias, accumulate);
  for (; n < n1; ++n) vnni_tile<F, MR, 1>(w, x, m0, n, y, ldy, bias, accumulate);
}

template <BlockFormat F>
void vnni_block(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                float* y, int64_t ldy, const float* bias, bool accumulate) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) vnni_rows<F, 4>(w, x, m, n0, n1, y, ldy, bias, accumulate);
  for (; m < m1; ++m) vnni_rows<F, 1>(w, x, m, n0, n1, y, ldy, bias, accumulate);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

// ---- AVX2 kernel (CPUs with AVX2 + FMA and no AVX512-VNNI) ----
// One block of 32 values per step, the activations in their natural order. q4_0: the 16 stored
// bytes unpacked to [low nibbles | high nibbles] = values 0..15 | 16..31, minus 8; vpmaddubsw
// (u8 x s8, adjacent products summed in int16: |sum| <= 2 * 255 * 8, never saturates), then
// vpmaddwd with ones: eight int32 partial sums of the block. q8_0: vpmaddubsw could saturate
// (2 * 255 * 128 > 32767), so both sides are widened to int16 and multiplied by vpmaddwd
// (exact in int32). Then, per block, one conversion and one FMA with the block's scale.
CLIP_AVX2_BEGIN

inline float avx2_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// MR rows x NR columns of y, all K.
template <BlockFormat F, int MR, int NR>
void avx2_tile(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t n0, float* y, int64_t ldy,
               const float* bias, bool accumulate) {
  const int64_t G = w.groups;
  constexpr int64_t sb = F == BlockFormat::Q4_0 ? 16 : 32;
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
  const uint8_t* wq[NR];
  const float* ws[NR];
  for (int c = 0; c < NR; ++c) {
    wq[c] = w.data.data() + (n0 + c) * G * sb;
    ws[c] = w.scale.data() + (n0 + c) * G;
  }
  const uint8_t* xu[MR];
  for (int r = 0; r < MR; ++r) xu[r] = x.u + (m0 + r) * x.stride;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < G; ++g) {
    // q4_0: the 32 bytes as loaded; q8_0: widened to int16 once for all columns (lo, hi halves).
    __m256i xv[MR], xlo[MR], xhi[MR];
    for (int r = 0; r < MR; ++r) {
      xv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xu[r] + g * 32));
      if constexpr (F == BlockFormat::Q8_0) {
        xlo[r] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(xv[r]));
        xhi[r] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(xv[r], 1));
      }
    }
    for (int c = 0; c < NR; ++c) {
      const __m256 d = _mm256_set1_ps(ws[c][g]);
      if constexpr (F == BlockFormat::Q4_0) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wq[c] + g * sb));
        const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0F));
        const __m256i wv = _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
        for (int r = 0; r < MR; ++r) {
          const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(xv[r], wv), ones);
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[r][c]);
        }
      } else {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq[c] + g * sb));
        const __m256i wlo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b));
        const __m256i whi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1));
        for (int r = 0; r < MR; ++r) {
          const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(xlo[r], wlo), _mm256_madd_epi16(xhi[r], whi));
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c)
      store(y + (m0 + r) * ldy + n0 + c, finish(w, x, m0 + r, n0 + c, avx2_sum(acc[r][c])), bias, n0 + c,
            accumulate);
}

// 4 rows x 2 columns (8 accumulators, 4 activation registers, the weight decoded once for
// four rows: measured 10-20 % faster than 2 x 4 on ViT-B/32 int4; for the q8_0 text weights
// 2 x 2, 4 x 1 and 2 x 3 were 5-20 % slower), then the row tail.
template <BlockFormat F>
void avx2_block(const BlockWeight& w, const QuantizedRows& x, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                float* y, int64_t ldy, const float* bias, bool accumulate) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) avx2_tile<F, 4, 2>(w, x, m, n, y, ldy, bias, accumulate);
    for (; n < n1; ++n) avx2_tile<F, 4, 1>(w, x, m, n, y, ldy, bias, accumulate);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) avx2_tile<F, 1, 4>(w, x, m, n, y, ldy, bias, accumulate);
    for (; n < n1; ++n) avx2_tile<F, 1, 1>(w, x, m, n, y, ldy, bias, accumulate);
  }
}

CLIP_AVX2_END

enum class BlockKernel { Vnni, Avx2, Portable };
BlockKernel block_kernel() {
  if (cpu_isa() >= Isa::AVX512_VNNI) return BlockKernel::Vnni;
  return cpu_use_avx2() ? BlockKernel::Avx2 : BlockKernel::Portable;
}

}  // namespace

const char* block_kernel_name() {
  switch (block_kernel()) {
    case BlockKernel::Vnni: return "avx512_vnni";
    case BlockKernel::Avx2: return "avx2";
    default: return "portable";
  }
}

void block_linear(const BlockWeight& w, float* y, const float* x, const float* bias, int64_t M, int64_t ldx,
                  int64_t ldy, bool accumulate) {
  if (M <= 0) return;
  const int64_t K = w.k, N = w.n, stride = w.groups * kBlock;
  const BlockKernel kernel = block_kernel();
  const bool permuted = kernel == BlockKernel::Vnni && w.format == BlockFormat::Q4_0;
  // This thread's buffers (each OpenMP worker has its own, empty, thread_local), grown only.
  thread_local std::vector<uint8_t> u_buffer;
  thread_local std::vector<float> scale_buffer;
  thread_local std::vector<int32_t> zero_buffer;
  if (int64_t(u_buffer.size()) < M * stride) u_buffer.resize(size_t(M * stride));
  if (int64_t(scale_buffer.size()) < M) scale_buffer.resize(size_t(M));
  if (int64_t(zero_buffer.size()) < M) zero_buffer.resize(size_t(M));
  uint8_t* u = u_buffer.data();
  float* scale = scale_buffer.data();
  int32_t* zero = zero_buffer.data();
  const bool outer_parallel = !omp_in_parallel();
#pragma omp parallel for if (outer_parallel && M > 1 && M * K > 16384)
  for (int64_t i = 0; i < M; ++i) {
    uint8_t* row = u + i * stride;
    quantize_row_u8(x + i * ldx, K, row, scale[i], zero[i]);
    // The padding meets zero weights: any value does; the zero point keeps it "0".
    std::fill(row + K, row + stride, uint8_t(zero[i]));
    if (permuted)  // swap the middle quarters of every 64 values (see the kernel)
      for (int64_t p = 0; p < stride; p += 64) {
        uint8_t tmp[16];
        std::memcpy(tmp, row + p + 16, 16);
        std::memcpy(row + p + 16, row + p + 32, 16);
        std::memcpy(row + p + 32, tmp, 16);
      }
  }
  const QuantizedRows xq{u, scale, zero, stride};
  // Columns in slices of 64 (a slice's weights stay in cache while every row passes), rows
  // in panels of 256 (so both threads have work at batch 1).
  constexpr int64_t kCols = 64, kRows = 256;
  const int64_t col_slices = (N + kCols - 1) / kCols, row_panels = (M + kRows - 1) / kRows;
#pragma omp parallel for schedule(dynamic) collapse(2) if (outer_parallel && M * N * K > (int64_t(1) << 20))
  for (int64_t ms = 0; ms < row_panels; ++ms)
    for (int64_t cs = 0; cs < col_slices; ++cs) {
      const int64_t m0 = ms * kRows, m1 = std::min(M, m0 + kRows);
      const int64_t n0 = cs * kCols, n1 = std::min(N, n0 + kCols);
      const bool q4 = w.format == BlockFormat::Q4_0;
      if (kernel == BlockKernel::Vnni)
        (q4 ? vnni_block<BlockFormat::Q4_0> : vnni_block<BlockFormat::Q8_0>)(w, xq, m0, m1, n0, n1, y, ldy, bias,
                                                                              accumulate);
      else if (kernel == BlockKernel::Avx2)
        (q4 ? avx2_block<BlockFormat::Q4_0> : avx2_block<BlockFormat::Q8_0>)(w, xq, m0, m1, n0, n1, y, ldy, bias,
                                                                              accumulate);
      else
        portable_tile(w, xq, m0, m1, n0, n1, y, ldy, bias, accumulate);
    }
}

}  // namespace clip
