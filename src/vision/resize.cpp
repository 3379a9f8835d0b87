// Pillow 9.4's resampling, reproduced exactly. The arithmetic follows libImaging/Resample.c:
//  - coefficients in double: support = filter support * max(scale, 1); for output pixel xx,
//    center = (xx + 0.5) * scale, taps x in [int(center - support + 0.5), int(center + support
//    + 0.5)) clipped to the image, weight filter((x - center + 0.5) / max(scale, 1)),
//    normalised to sum 1;
//  - for 8-bit images the weights become int32 with 22 fractional bits (rounded half away from
//    zero), each output accumulates from 1 << 21 and is clipped to 0..255 after >> 22;
//  - the horizontal pass runs first (only when the width changes) into an 8-bit buffer, then
//    the vertical pass (only when the height changes).
// Integer sums do not depend on their order, so the vertical pass is written row-at-a-time
// (vectorisable) rather than Pillow's pixel-at-a-time; the results are identical.
#include "vision/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "backend/resample.h"
#include "core/error.h"

namespace clip {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;   // per output pixel: first tap, number of taps
  std::vector<double> kk;    // out_size * ksize weights
  std::vector<int32_t> fixed;  // the same in Pillow's fixed point
};

Coefficients precompute_coeffs(int in_size, float in0, float in1, int out_size, Interpolation interp) {
  double (*filter)(double) = interp == Interpolation::Bilinear ? bilinear_filter : bicubic_filter;
  const double filter_support = interp == Interpolation::Bilinear ? 1.0 : 2.0;
  double scale = double(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_support * filterscale;
  Coefficients c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.kk.assign(size_t(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &c.kk[size_t(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double w = filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.bounds[size_t(xx) * 2] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  c.fixed.resize(c.kk.size());
  for (size_t i = 0; i < c.kk.size(); ++i) {
    const double v = c.kk[i];
    c.fixed[i] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass on rows [row0, row1) of src, output columns [col0, col0+ncols).
template <int C>
void horizontal_pass_scalar_row(const uint8_t* in, const Coefficients& c, int col0, int ncols, uint8_t* out) {
  for (int i = 0; i < ncols; ++i) {
    const int xx = col0 + i;
    const int xmin = c.bounds[size_t(xx) * 2], xmax = c.bounds[size_t(xx) * 2 + 1];
    const int32_t* k = &c.fixed[size_t(xx) * c.ksize];
    const uint8_t* p = in + size_t(xmin) * C;
    int32_t s[C];
    for (int ch = 0; ch < C; ++ch) s[ch] = 1 << (kPrecisionBits - 1);
    for (int x = 0; x < xmax; ++x)
      for (int ch = 0; ch < C; ++ch) s[ch] += int32_t(p[x * C + ch]) * k[x];
    for (int ch = 0; ch < C; ++ch) out[i * C + ch] = clip8(s[ch]);
  }
}

template <int C>
void horizontal_pass(const uint8_t* src, int width, int row0, int row1, const Coefficients& c,
                     int col0, int ncols, uint8_t* dst, int height) {
  constexpr bool paired = C >= 3 && backend::kHasPairedResample;
  backend::PairedTapWeights pw;
  if constexpr (paired) pw = backend::pair_tap_weights(c.fixed.data(), c.bounds.data(), c.ksize, col0, ncols);
  for (int y = row0; y < row1; ++y) {
    const uint8_t* in = src + size_t(y) * width * C;
    uint8_t* out = dst + size_t(y - row0) * ncols * C;
    if constexpr (paired) {
      // The kernel's 8-byte loads may read up to 8 - C bytes past a row's last pixel: use it
      // only where the rows below hold that many bytes (not on the last rows of very narrow
      // images).
      if (size_t(height - 1 - y) * size_t(width) * C >= size_t(8 - C)) {
        backend::resample_row_paired<C>(in, c.bounds.data(), pw, col0, ncols, kPrecisionBits, out);
        continue;
      }
    }
    horizontal_pass_scalar_row<C>(in, c, col0, ncols, out);
  }
}

// Vertical pass: output rows [row0, row0+nrows) from `src` whose first row is source row `src_row0`.
void vertical_pass(const uint8_t* src, int src_row0, size_t row_len, const Coefficients& c,
                   int row0, int nrows, uint8_t* dst) {
  std::vector<int32_t> acc(row_len);
  for (int i = 0; i < nrows; ++i) {
    const int yy = row0 + i;
    const int ymin = c.bounds[size_t(yy) * 2], ymax = c.bounds[size_t(yy) * 2 + 1];
    const int32_t* k = &c.fixed[size_t(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    int32_t* a = acc.data();
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* in = src + size_t(ymin + y - src_row0) * row_len;
      const int32_t w = k[y];
      for (size_t j = 0; j < row_len; ++j) a[j] += int32_t(in[j]) * w;
    }
    uint8_t* out = dst + size_t(i) * row_len;
    for (size_t j = 0; j < row_len; ++j) out[j] = clip8(a[j]);
  }
}

// Pillow's ImagingScaleAffine source positions: a running double sum, truncated (COORD).
std::vector<int> nearest_positions(int in_size, int out_size) {
  const double a = double(float(in_size)) / out_size;
  std::vector<int> pos(static_cast<size_t>(out_size));
  double o = a * 0.5;
  for (int i = 0; i < out_size; ++i) {
    int v = o < 0.0 ? -1 : int(o);
    pos[size_t(i)] = std::clamp(v, 0, in_size - 1);
    o += a;
  }
  return pos;
}

// Pillow's generic affine transform (used for "I;16"): each position computed afresh.
std::vector<int> nearest_positions_generic(int in_size, int out_size) {
  const double a = double(float(in_size)) / out_size;
  std::vector<int> pos(static_cast<size_t>(out_size));
  for (int i = 0; i < out_size; ++i) {
    double o = a * (i + 0.5) + 0.0 * 0.5 + 0.0;
    int v = o < 0.0 ? -1 : int(o);
    pos[size_t(i)] = std::clamp(v, 0, in_size - 1);
  }
  return pos;
}

void nearest_window(const uint8_t* src, int width, int height, size_t pixel_bytes, int out_w,
                    int out_h, const PixelRect& win, uint8_t* dst, bool generic) {
  auto xs = generic ? nearest_positions_generic(width, out_w) : nearest_positions(width, out_w);
  auto ys = generic ? nearest_positions_generic(height, out_h) : nearest_positions(height, out_h);
  for (int i = 0; i < win.height; ++i) {
    const uint8_t* in = src + size_t(ys[size_t(win.y + i)]) * width * pixel_bytes;
    uint8_t* out = dst + size_t(i) * win.width * pixel_bytes;
    for (int j = 0; j < win.width; ++j)
      std::memcpy(out + j * pixel_bytes, in + size_t(xs[size_t(win.x + j)]) * pixel_bytes, pixel_bytes);
  }
}

void copy_window(const uint8_t* src, int width, size_t pixel_bytes, const PixelRect& win, uint8_t* dst) {
  for (int i = 0; i < win.height; ++i)
    std::memcpy(dst + size_t(i) * win.width * pixel_bytes,
                src + (size_t(win.y + i) * width + win.x) * pixel_bytes, size_t(win.width) * pixel_bytes);
}

void check_window(int out_w, int out_h, const PixelRect& win) {
  if (out_w <= 0 || out_h <= 0) throw Error("resize: output size must be positive");
  if (win.x < 0 || win.y < 0 || win.width <= 0 || win.height <= 0 || win.x + win.width > out_w ||
      win.y + win.height > out_h)
    throw Error("resize: window outside the output image");
}

// Rows of the source that the vertical pass reads for output rows [row0, row0+nrows).
std::pair<int, int> source_rows(const Coefficients& c, int row0, int nrows) {
  int lo = c.bounds[size_t(row0) * 2];
  int hi = lo;
  for (int i = row0; i < row0 + nrows; ++i) {
    lo = std::min(lo, c.bounds[size_t(i) * 2]);
    hi = std::max(hi, c.bounds[size_t(i) * 2] + c.bounds[size_t(i) * 2 + 1]);
  }
  return {lo, hi};
}

// Resample of 32-bit signed samples ("I" mode): double sums, ROUND_UP between passes.
void resize_int32_window(const int32_t* src, int width, int height, int out_w, int out_h,
                         Interpolation interp, const PixelRect& win, int32_t* dst) {
  const bool need_h = out_w != width, need_v = out_h != height;
  auto round_up = [](double f) { return int32_t(f >= 0.0 ? f + 0.5F : f - 0.5F); };
  Coefficients ch = precompute_coeffs(width, 0.f, float(width), out_w, interp);
  Coefficients cv = precompute_coeffs(height, 0.f, float(height), out_h, interp);
  int r0 = win.y, r1 = win.y + win.height;
  if (need_v) std::tie(r0, r1) = source_rows(cv, win.y, win.height);
  std::vector<int32_t> tmp(size_t(r1 - r0) * win.width);
  for (int y = r0; y < r1; ++y)
    for (int i = 0; i < win.width; ++i) {
      const int xx = win.x + i;
      int32_t v;
      if (need_h) {
        const int xmin = ch.bounds[size_t(xx) * 2], xmax = ch.bounds[size_t(xx) * 2 + 1];
        const double* k = &ch.kk[size_t(xx) * ch.ksize];
        double s = 0.0;
        for (int x = 0; x < xmax; ++x) s += src[size_t(y) * width + xmin + x] * k[x];
        v = round_up(s);
      } else {
        v = src[size_t(y) * width + xx];
      }
      tmp[size_t(y - r0) * win.width + i] = v;
    }
  for (int j = 0; j < win.height; ++j) {
    const int yy = win.y + j;
    for (int i = 0; i < win.width; ++i) {
      int32_t v;
      if (need_v) {
        const int ymin = cv.bounds[size_t(yy) * 2], ymax = cv.bounds[size_t(yy) * 2 + 1];
        const double* k = &cv.kk[size_t(yy) * cv.ksize];
        double s = 0.0;
        for (int y = 0; y < ymax; ++y) s += tmp[size_t(ymin + y - r0) * win.width + i] * k[y];
        v = round_up(s);
      } else {
        v = tmp[size_t(yy - r0) * win.width + i];
      }
      dst[size_t(j) * win.width + i] = v;
    }
  }
}

#define MULDIV255(a, b, tmp) (tmp = (a) * (b) + 128, ((((tmp) >> 8) + (tmp)) >> 8))

inline uint8_t clip_u8(int v) { return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v); }

}  // namespace

void resize_uint8_window(const uint8_t* src, int width, int height, int channels, int out_w,
                         int out_h, Interpolation interp, const PixelRect& win, uint8_t* dst) {
  if (width <= 0 || height <= 0) throw Error("resize: empty input image");
  if (channels < 1 || channels > 4) throw Error("resize: 1 to 4 channels supported");
  check_window(out_w, out_h, win);
  if (out_w == width && out_h == height) {
    copy_window(src, width, size_t(channels), win, dst);
    return;
  }
  if (interp == Interpolation::Nearest) {
    nearest_window(src, width, height, size_t(channels), out_w, out_h, win, dst, false);
    return;
  }
  const bool need_h = out_w != width, need_v = out_h != height;
  const Coefficients ch = precompute_coeffs(width, 0.f, float(width), out_w, interp);
  const Coefficients cv = precompute_coeffs(height, 0.f, float(height), out_h, interp);
  // Source rows the vertical pass will read (all of the window's rows when it is skipped).
  int r0 = win.y, r1 = win.y + win.height;
  if (need_v) std::tie(r0, r1) = source_rows(cv, win.y, win.height);
  const size_t row_len = size_t(win.width) * channels;
  thread_local std::vector<uint8_t> tmp;  // reused: avoids page faults on every image
  if (tmp.capacity() > (size_t(64) << 20)) std::vector<uint8_t>().swap(tmp);  // but not huge ones
  const uint8_t* mid;  // rows r0..r1 of the horizontally resized image, window columns only
  if (need_h) {
    if (need_v && tmp.size() < size_t(r1 - r0) * row_len) tmp.resize(size_t(r1 - r0) * row_len);
    uint8_t* target = need_v ? tmp.data() : dst;
    switch (channels) {
      case 1: horizontal_pass<1>(src, width, r0, r1, ch, win.x, win.width, target, height); break;
      case 2: horizontal_pass<2>(src, width, r0, r1, ch, win.x, win.width, target, height); break;
      case 3: horizontal_pass<3>(src, width, r0, r1, ch, win.x, win.width, target, height); break;
      default: horizontal_pass<4>(src, width, r0, r1, ch, win.x, win.width, target, height); break;
    }
    if (!need_v) return;
    mid = tmp.data();
  } else {
    // Width unchanged: the vertical pass reads the source columns of the window directly.
    if (tmp.size() < size_t(r1 - r0) * row_len) tmp.resize(size_t(r1 - r0) * row_len);
    for (int y = r0; y < r1; ++y)
      std::memcpy(tmp.data() + size_t(y - r0) * row_len, src + (size_t(y) * width + win.x) * channels, row_len);
    mid = tmp.data();
  }
  vertical_pass(mid, r0, row_len, cv, win.y, win.height, dst);
}

void resize_uint8(const uint8_t* src, int width, int height, int channels, uint8_t* dst, int out_w,
                  int out_h, Interpolation interp) {
  resize_uint8_window(src, width, height, channels, out_w, out_h, interp, PixelRect{0, 0, out_w, out_h}, dst);
}

Image resize_image_window(const Image& img, int out_w, int out_h, Interpolation interp,
                          const PixelRect& win) {
  if (img.empty()) throw Error("resize: empty image");
  check_window(out_w, out_h, win);
  Image out;
  out.width = win.width;
  out.height = win.height;
  out.channels = img.channels;
  out.mode = img.mode;
  out.palette = img.palette;
  const size_t px = size_t(img.channels) * img.bytes_per_sample();
  out.pixels.resize(size_t(win.width) * win.height * px);
  if (out_w == img.width && out_h == img.height) {
    copy_window(img.pixels.data(), img.width, px, win, out.pixels.data());
    return out;
  }
  // Pillow resizes palette and bilevel images with NEAREST whatever was asked.
  if (img.mode == "P" || img.mode == "1") interp = Interpolation::Nearest;
  if (interp == Interpolation::Nearest) {
    nearest_window(img.pixels.data(), img.width, img.height, px, out_w, out_h, win,
                   out.pixels.data(), img.mode == "I;16");
    return out;
  }
  if (img.mode == "I" || img.mode == "I;16") {
    // Pillow cannot resample "I;16" with a filter (it raises); we resample it as "I" (the same
    // values), which is what a 16-bit greyscale PNG decodes to in Pillow anyway.
    std::vector<int32_t> src(size_t(img.width) * img.height);
    if (img.mode == "I") {
      std::memcpy(src.data(), img.pixels.data(), src.size() * 4);
    } else {
      for (size_t i = 0; i < src.size(); ++i) {
        uint16_t v;
        std::memcpy(&v, img.pixels.data() + i * 2, 2);
        src[i] = v;
      }
    }
    std::vector<int32_t> res(size_t(win.width) * win.height);
    resize_int32_window(src.data(), img.width, img.height, out_w, out_h, interp, win, res.data());
    out.mode = "I";
    out.pixels.resize(res.size() * 4);
    std::memcpy(out.pixels.data(), res.data(), res.size() * 4);
    return out;
  }
  if (img.mode == "RGBA" || img.mode == "LA") {
    // Pillow converts to premultiplied RGBa / La, resizes, and converts back.
    const int C = img.channels;
    const size_t n = size_t(img.width) * img.height;
    thread_local std::vector<uint8_t> pre;
    if (pre.capacity() > (size_t(64) << 20)) std::vector<uint8_t>().swap(pre);
    if (pre.size() < n * C) pre.resize(n * C);
    unsigned tmp;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = &img.pixels[i * C];
      const unsigned a = p[C - 1];
      for (int c = 0; c < C - 1; ++c) pre[i * C + c] = uint8_t(MULDIV255(p[c], a, tmp));
      pre[i * C + C - 1] = uint8_t(a);
    }
    resize_uint8_window(pre.data(), img.width, img.height, C, out_w, out_h, interp, win, out.pixels.data());
    const size_t m = size_t(win.width) * win.height;
    for (size_t i = 0; i < m; ++i) {
      uint8_t* p = &out.pixels[i * C];
      const int a = p[C - 1];
      if (C == 4) {  // rgba2rgbA: alpha 0 or 255 leaves the colour as is
        if (a != 255 && a != 0)
          for (int c = 0; c < 3; ++c) p[c] = clip_u8((255 * p[c]) / a);
      } else {  // lA2la: the same rule for the grey band
        if (a != 255 && a != 0) p[0] = clip_u8((255 * p[0]) / a);
      }
    }
    return out;
  }
  resize_uint8_window(img.pixels.data(), img.width, img.height, img.channels, out_w, out_h, interp,
                      win, out.pixels.data());
  if (img.mode == "PA") {
    // Pillow's ImagingResample does not copy the palette (its nearest and copy paths do), so a
    // filtered "PA" image comes back with the default grey-ramp palette.
    out.palette.resize(768);
    for (int i = 0; i < 256; ++i) out.palette[size_t(i) * 3] = out.palette[size_t(i) * 3 + 1] = out.palette[size_t(i) * 3 + 2] = uint8_t(i);
  }
  return out;
}

Image resize_image(const Image& img, int out_w, int out_h, Interpolation interp) {
  return resize_image_window(img, out_w, out_h, interp, PixelRect{0, 0, out_w, out_h});
}

}  // namespace clip
