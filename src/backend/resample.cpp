// SSE4.1 row kernel of Pillow's exact resampling (see resample.h).
#include "backend/resample.h"

#include <cstring>

#if defined(__SSE4_1__)
#include <smmintrin.h>
#include <tmmintrin.h>
#endif

namespace clip::backend {

PairedTapWeights pair_tap_weights(const int32_t* fixed, const int* bounds, int ksize, int col0, int ncols) {
  PairedTapWeights w;
  w.pairs = (ksize + 1) / 2;
  w.hi.assign(size_t(ncols) * w.pairs, 0);
  w.lo.assign(size_t(ncols) * w.pairs, 0);
  for (int i = 0; i < ncols; ++i) {
    const int xx = col0 + i;
    const int xmax = bounds[size_t(xx) * 2 + 1];
    const int32_t* k = &fixed[size_t(xx) * ksize];
    for (int j = 0; j < w.pairs; ++j) {
      const int32_t k0 = 2 * j < xmax ? k[2 * j] : 0, k1 = 2 * j + 1 < xmax ? k[2 * j + 1] : 0;
      const uint32_t h0 = uint16_t(int16_t(k0 >> 11)), h1 = uint16_t(int16_t(k1 >> 11));
      const uint32_t l0 = uint32_t(k0 & 2047), l1 = uint32_t(k1 & 2047);
      w.hi[size_t(i) * w.pairs + j] = int32_t(h0 | (h1 << 16));
      w.lo[size_t(i) * w.pairs + j] = int32_t(l0 | (l1 << 16));
    }
  }
  return w;
}

template <int C>
void resample_row_paired(const uint8_t* in, const int* bounds, const PairedTapWeights& w, int col0, int ncols,
                         int precision_bits, uint8_t* out) {
  static_assert(C == 3 || C == 4, "3 or 4 bands");
#if defined(__SSE4_1__)
  const __m128i init = _mm_set1_epi32(1 << (precision_bits - 1));
  const __m128i shuf = C == 4 ? _mm_setr_epi8(0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1)
                              : _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  for (int i = 0; i < ncols; ++i) {
    const int xx = col0 + i;
    const int xmin = bounds[size_t(xx) * 2], xmax = bounds[size_t(xx) * 2 + 1];
    const int32_t* hi = &w.hi[size_t(i) * w.pairs];
    const int32_t* lo = &w.lo[size_t(i) * w.pairs];
    const uint8_t* p = in + size_t(xmin) * C;
    __m128i sh = _mm_setzero_si128(), sl = _mm_setzero_si128();
    int j = 0;
    for (int x = 0; x < xmax; x += 2, ++j) {
      const __m128i px = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + x * C)), shuf);
      sh = _mm_add_epi32(sh, _mm_madd_epi16(px, _mm_set1_epi32(hi[j])));
      sl = _mm_add_epi32(sl, _mm_madd_epi16(px, _mm_set1_epi32(lo[j])));
    }
    __m128i s0 = _mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(sh, 11), sl), init);
    s0 = _mm_sra_epi32(s0, _mm_cvtsi32_si128(precision_bits));
    s0 = _mm_packs_epi32(s0, s0);   // clamps to int16 (values stay far inside)
    s0 = _mm_packus_epi16(s0, s0);  // clamps to 0..255
    const int32_t v = _mm_cvtsi128_si32(s0);
    std::memcpy(out + i * C, &v, C);
  }
#else
  (void)in, (void)bounds, (void)w, (void)col0, (void)ncols, (void)precision_bits, (void)out;
#endif
}

template void resample_row_paired<3>(const uint8_t*, const int*, const PairedTapWeights&, int, int, int, uint8_t*);
template void resample_row_paired<4>(const uint8_t*, const int*, const PairedTapWeights&, int, int, int, uint8_t*);

}  // namespace clip::backend
