#pragma once
// The SIMD kernel of Pillow's exact 8-bit resampling (vision/resize.cpp holds the algorithm:
// coefficients, passes, scalar rows). One output row of the horizontal pass for 3- or 4-band
// pixels, two taps per step with SSE4.1's pmaddwd, which the build's x86-64-v2 baseline
// guarantees (no run-time choice needed). Exact: each 22-bit fixed-point weight k is split as
// k = hi * 2^11 + lo (lo in 0..2047), so pixel * hi and pixel * lo are exact 16x16-bit
// products, and (sum(pixel * hi) << 11) + sum(pixel * lo) is Pillow's sum(pixel * k).
#include <cstdint>
#include <vector>

namespace clip::backend {

#if defined(__SSE4_1__)
inline constexpr bool kHasPairedResample = true;
#else
inline constexpr bool kHasPairedResample = false;
#endif

// The weights of output columns [col0, col0 + ncols) rearranged for the kernel: per column,
// `pairs` int32 words holding the int16 hi (or lo) parts of taps 2j and 2j + 1.
struct PairedTapWeights {
  int pairs = 0;
  std::vector<int32_t> hi, lo;
};

// `fixed`: per output column `ksize` fixed-point weights; `bounds`: per output column its first
// tap and number of taps (Pillow's xmin, xmax).
PairedTapWeights pair_tap_weights(const int32_t* fixed, const int* bounds, int ksize, int col0, int ncols);

// One row: out[i * C + ch] for i < ncols, rounded from 1 << (precision_bits - 1), shifted right
// by precision_bits and clamped to 0..255 as Pillow does. Reads up to 8 - C bytes past the last
// tap of a column (cancelled by zero weights): the caller keeps that many bytes readable after
// the row. C is 3 or 4. Only where kHasPairedResample.
template <int C>
void resample_row_paired(const uint8_t* in, const int* bounds, const PairedTapWeights& w, int col0, int ncols,
                         int precision_bits, uint8_t* out);

}  // namespace clip::backend
