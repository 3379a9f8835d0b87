// Block-quantized products (backend/block_quant.h: q4_0 / q8_0 weights x per-row uint8 inputs).
// The kernel's arithmetic is checked against the same product in float64 from independent
// pieces: the weights dequantized by ggml's block formats (core/gguf.h `dequantize`, itself
// checked against PyPI's gguf in test_app_gguf) and the inputs dequantized from
// quantize_row_u8. Only the summation order differs (block sums are exact int32; the f32
// sum over blocks and the final scaling round): tolerance 2e-5 of the sum of |terms|.
// Shapes cover row/column tails of the 4x4 tiles, K not a multiple of 64 or of 32 (padding),
// strides, bias and accumulation. scripts/test.sh runs this under the avx512/avx2/sse41 caps,
// so the portable kernel is checked on the same cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "backend/block_quant.h"
#include "backend/matmul.h"
#include "core/gguf.h"

namespace {

using clip::BlockFormat;

std::vector<float> gaussian(int64_t n, uint32_t seed, float sd = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// W as the blocks hold it: ggml's quantizer and dequantizer on the zero-padded rows.
std::vector<double> dequantized_weights(BlockFormat f, const std::vector<float>& w, int64_t n, int64_t k) {
  const int64_t k32 = (k + 31) / 32 * 32;
  std::vector<double> out(size_t(n * k));
  std::vector<float> row(static_cast<size_t>(k32)), back(static_cast<size_t>(k32));
  std::vector<uint8_t> blocks(size_t(k32 / 32 * 34));
  for (int64_t r = 0; r < n; ++r) {
    std::fill(row.begin(), row.end(), 0.f);
    std::copy(w.begin() + r * k, w.begin() + (r + 1) * k, row.begin());
    if (f == BlockFormat::Q4_0) {
      clip::quantize_q4_0(row.data(), k32, blocks.data());
      clip::dequantize(clip::GgmlType::Q4_0, blocks.data(), k32, back.data());
    } else {
      clip::quantize_q8_0(row.data(), k32, blocks.data());
      clip::dequantize(clip::GgmlType::Q8_0, blocks.data(), k32, back.data());
    }
    for (int64_t c = 0; c < k; ++c) out[size_t(r * k + c)] = back[size_t(c)];
  }
  return out;
}

void check_product(BlockFormat f, int64_t M, int64_t N, int64_t K, bool with_bias, bool accumulate, int64_t pad) {
  SCOPED_TRACE(std::string(clip::block_format_name(f)) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
               " K=" + std::to_string(K) + (with_bias ? " bias" : "") + (accumulate ? " accumulate" : "") +
               " pad=" + std::to_string(pad));
  const int64_t ldx = K + pad, ldy = N + pad;
  const std::vector<float> w = gaussian(N * K, 1 + uint32_t(N * K), 0.05f);
  std::vector<float> x = gaussian(M * ldx, 2 + uint32_t(M * K));
  for (int64_t i = 0; i < M; ++i) x[size_t(i * ldx)] += 3.f;  // skewed rows: nonzero zero points
  const std::vector<float> bias = gaussian(N, 3);
  const std::vector<float> start = gaussian(M * ldy, 4);
  auto blocks = clip::block_weight_from_f32(f, w.data(), N, K);
  std::vector<float> y = start;
  clip::block_linear(*blocks, y.data(), x.data(), with_bias ? bias.data() : nullptr, M, ldx, ldy, accumulate);
  // The same through a PackedWeight (int4 precision, or the blocks themselves).
  if (f == BlockFormat::Q4_0) {
    const clip::PackedWeight pw(w.data(), N, K, true, clip::Precision::INT4);
    ASSERT_EQ(pw.precision(), clip::Precision::INT4);
    std::vector<float> y2 = start;
    clip::linear_forward(y2.data(), x.data(), pw, with_bias ? bias.data() : nullptr, M, ldx, ldy, accumulate);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y2[i]) << i;
  }
  const std::vector<double> wd = dequantized_weights(f, w, N, K);
  std::vector<uint8_t> u(static_cast<size_t>(K));
  double worst = 0;
  for (int64_t m = 0; m < M; ++m) {
    float scale;
    int32_t zero;
    clip::quantize_row_u8(x.data() + m * ldx, K, u.data(), scale, zero);
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0, magnitude = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double t = double(scale) * (double(u[size_t(k)]) - zero) * wd[size_t(n * K + k)];
        sum += t;
        magnitude += std::abs(t);
      }
      if (with_bias) sum += bias[size_t(n)];
      if (accumulate) sum += start[size_t(m * ldy + n)];
      const double err = std::abs(double(y[size_t(m * ldy + n)]) - sum) / (magnitude + 1e-30);
      worst = std::max(worst, err);
      ASSERT_LE(err, 2e-5) << "y[" << m << ", " << n << "] = " << y[size_t(m * ldy + n)] << ", expected " << sum;
    }
    // The row stride's gap is left alone.
    for (int64_t n = N; n < ldy; ++n) ASSERT_EQ(y[size_t(m * ldy + n)], start[size_t(m * ldy + n)]);
  }
  std::printf("%s M=%lld N=%lld K=%lld: worst relative error %.2e (kernel %s)\n", clip::block_format_name(f),
              (long long)M, (long long)N, (long long)K, worst, clip::block_kernel_name());
}

TEST(BlockQuant, ProductsEqualTheDequantizedProductInFloat64) {
  for (BlockFormat f : {BlockFormat::Q4_0, BlockFormat::Q8_0}) {
    check_product(f, 1, 1, 32, false, false, 0);
    check_product(f, 7, 13, 96, true, false, 0);     // K an odd number of blocks
    check_product(f, 9, 70, 256, true, true, 3);     // tails, strides, accumulate
    check_product(f, 300, 130, 768, true, false, 0);  // several row panels and column slices
    check_product(f, 5, 9, 588, false, true, 0);     // K = 3 x 14 x 14: padded to whole blocks
  }
}

TEST(BlockQuant, ExtremeValuesDoNotSaturate) {
  // The largest int8 products: inputs quantized to 255 against q8_0 bytes of -128 (a GGUF file
  // may hold them; ggml's quantizer writes -127..127) and q4_0's -8. Two adjacent products,
  // 2 * 255 * -128 = -65280, do not fit int16 (an AVX2 vpmaddubsw of the raw bytes would
  // clamp them to -32768): every kernel must give the exact sums.
  const int64_t n = 3, k = 64;
  const std::vector<float> x(size_t(k), 1.f);  // all 255 (scale 1/255, zero point 0)
  for (BlockFormat f : {BlockFormat::Q8_0, BlockFormat::Q4_0}) {
    SCOPED_TRACE(clip::block_format_name(f));
    const int64_t block_bytes = f == BlockFormat::Q8_0 ? 34 : 18;
    std::vector<uint8_t> ggml(size_t(n * k / 32 * block_bytes));
    for (int64_t b = 0; b < n * k / 32; ++b) {
      uint8_t* p = ggml.data() + b * block_bytes;
      p[0] = 0x00;  // f16 1.0: the scale
      p[1] = 0x3C;
      const int64_t row = b / (k / 32);  // row 0: the most negative values, 1: the most positive, 2: mixed
      for (int64_t j = 2; j < block_bytes; ++j) {
        const bool low = row == 0 || (row == 2 && j % 2 == 0);
        p[j] = f == BlockFormat::Q8_0 ? uint8_t(low ? 0x80 : 0x7F) : uint8_t(low ? 0x00 : 0xFF);
      }
    }
    auto w = clip::block_weight_from_ggml(f, ggml.data(), n, k, "test");
    std::vector<float> y(static_cast<size_t>(n));
    clip::block_linear(*w, y.data(), x.data(), nullptr, 1, k, n, false);
    const double lo = f == BlockFormat::Q8_0 ? -128 : -8, hi = f == BlockFormat::Q8_0 ? 127 : 7;
    EXPECT_NEAR(y[0], lo * double(k), 1e-4 * double(k)) << clip::block_kernel_name();
    EXPECT_NEAR(y[1], hi * double(k), 1e-4 * double(k)) << clip::block_kernel_name();
    EXPECT_NEAR(y[2], (lo + hi) / 2 * double(k), 1e-4 * double(k)) << clip::block_kernel_name();
  }
}

TEST(BlockQuant, WeightsAreGgmlsBlocks) {
  // From a GGUF file's bytes and from f32 through ggml's quantizer: the same weight.
  const int64_t n = 5, k = 96;
  const std::vector<float> w = gaussian(n * k, 11, 0.1f);
  std::vector<uint8_t> ggml(size_t(n * k / 32 * 18));
  for (int64_t r = 0; r < n; ++r) clip::quantize_q4_0(w.data() + r * k, k, ggml.data() + r * (k / 32) * 18);
  auto a = clip::block_weight_from_ggml(BlockFormat::Q4_0, ggml.data(), n, k, "test");
  auto b = clip::block_weight_from_f32(BlockFormat::Q4_0, w.data(), n, k);
  EXPECT_EQ(a->groups, 4);  // 3 blocks, padded to pairs
  EXPECT_EQ(a->data, b->data);
  EXPECT_EQ(a->scale, b->scale);
  EXPECT_EQ(a->row_sum, b->row_sum);
  // 4-bit values and an f32 scale per block (blocks padded to pairs) and a row sum: about 5
  // bits per weight, 1/6.4 of f32 where K is a multiple of 64 (here 3 blocks take 4: 1/4.6).
  EXPECT_EQ(a->bytes(), n * (4 * 16 + 4 * 4 + 4));
  EXPECT_THROW(clip::block_weight_from_ggml(BlockFormat::Q8_0, ggml.data(), n, 40, "test.gguf"), clip::Error);
}

TEST(BlockQuant, Int4ProductIsCloseToF32) {
  // Not a bound of the method, a guard against a kernel that is exact to its own reference but
  // wrong: 4-bit weights with 32-value blocks keep the product within 15 % relative (RMS).
  const int64_t M = 16, N = 64, K = 512;
  const std::vector<float> w = gaussian(N * K, 21, 0.05f), x = gaussian(M * K, 22);
  std::vector<float> exact(size_t(M * N)), q(size_t(M * N));
  clip::linear_forward(exact.data(), x.data(), w.data(), nullptr, M, N, K);
  const clip::PackedWeight pw(w.data(), N, K, true, clip::Precision::INT4);
  clip::linear_forward(q.data(), x.data(), pw, nullptr, M);
  double num = 0, den = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    num += (q[i] - exact[i]) * (q[i] - exact[i]);
    den += exact[i] * exact[i];
  }
  std::printf("int4 product: relative RMS error %.4f\n", std::sqrt(num / den));
  EXPECT_LT(std::sqrt(num / den), 0.15);
  EXPECT_GT(std::sqrt(num / den), 1e-4) << "int4 gave the f32 numbers: not quantized?";
}

}  // namespace
