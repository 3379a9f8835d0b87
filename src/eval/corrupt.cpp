#include "eval/corrupt.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "data/datasets.h"
#include "eval/linear_probe.h"

namespace clip::eval {

using data::fnv1a64;

const std::vector<std::string>& corruption_names() {
  static const std::vector<std::string> names = {"gaussian_noise", "gaussian_blur", "jpeg",
                                                 "contrast", "grayscale", "pixelate"};
  return names;
}

const char* corruption_name(Corruption c) { return corruption_names()[size_t(c)].c_str(); }

Corruption parse_corruption(const std::string& name) {
  const auto& n = corruption_names();
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] == name) return Corruption(i);
  if (name == "noise") return Corruption::GaussianNoise;
  if (name == "blur") return Corruption::GaussianBlur;
  std::string all;
  for (auto& s : n) all += (all.empty() ? "" : ", ") + s;
  throw Error("unknown corruption \"" + name + "\" (one of: " + all + ")");
}

uint64_t sample_seed(uint64_t seed, const std::string& id) {
  Rng mix(seed ^ fnv1a64(id));
  return mix.next_u64();
}

namespace {

uint8_t to_u8(double v) { return uint8_t(std::clamp(std::lround(v), 0L, 255L)); }

void check_severity(int s) {
  if (s < 1 || s > 5) throw Error("corruption severity must be 1..5, got " + std::to_string(s));
}

clip::Image gaussian_noise(clip::Image im, double sigma, uint64_t seed) {
  Rng rng(seed);
  auto& px = im.pixels;
  for (size_t i = 0; i < px.size(); i += 2) {
    // Box-Muller: two normals per two uniforms.
    const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double n0 = r * std::cos(2 * M_PI * u2), n1 = r * std::sin(2 * M_PI * u2);
    px[i] = to_u8(px[i] + 255.0 * sigma * n0);
    if (i + 1 < px.size()) px[i + 1] = to_u8(px[i + 1] + 255.0 * sigma * n1);
  }
  return im;
}

int reflect(int i, int n) {  // mirror without repeating the edge (scipy "mirror")
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

clip::Image gaussian_blur(const clip::Image& im, double sigma) {
  const int radius = std::max(1, int(std::ceil(3.0 * sigma)));
  std::vector<double> k(static_cast<size_t>(2 * radius + 1));
  double sum = 0;
  for (int i = -radius; i <= radius; ++i) sum += (k[size_t(i + radius)] = std::exp(-0.5 * i * i / (sigma * sigma)));
  for (auto& v : k) v /= sum;
  const int W = im.width, H = im.height, C = 3;
  std::vector<double> tmp(size_t(W) * H * C);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int i = -radius; i <= radius; ++i)
          s += k[size_t(i + radius)] * im.pixels[(size_t(y) * W + reflect(x + i, W)) * C + c];
        tmp[(size_t(y) * W + x) * C + c] = s;
      }
  clip::Image out = im;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int i = -radius; i <= radius; ++i) s += k[size_t(i + radius)] * tmp[(size_t(reflect(y + i, H)) * W + x) * C + c];
        out.pixels[(size_t(y) * W + x) * C + c] = to_u8(s);
      }
  return out;
}

clip::Image contrast(clip::Image im, double c) {
  // ImageNet-C takes the mean over the whole image (all channels together).
  double m = 0;
  for (auto v : im.pixels) m += v;
  m /= double(im.pixels.size());
  for (auto& v : im.pixels) v = to_u8((v - m) * c + m);
  return im;
}

clip::Image grayscale(clip::Image im, double amount) {
  for (size_t i = 0; i + 2 < im.pixels.size(); i += 3) {
    const int ri = im.pixels[i], gi = im.pixels[i + 1], bi = im.pixels[i + 2];
    // ITU-R 601-2 luma in Pillow's convert("L") fixed point, so severity 5 is exactly "L".
    const double l = double((ri * 19595 + gi * 38470 + bi * 7471 + 0x8000) >> 16);
    const double r = ri, g = gi, b = bi;
    im.pixels[i] = to_u8(r + amount * (l - r));
    im.pixels[i + 1] = to_u8(g + amount * (l - g));
    im.pixels[i + 2] = to_u8(b + amount * (l - b));
  }
  return im;
}

clip::Image pixelate(const clip::Image& im, double factor) {
  const int W = im.width, H = im.height;
  const int w = std::max(1, int(std::lround(W * factor))), h = std::max(1, int(std::lround(H * factor)));
  std::vector<uint8_t> small(size_t(w) * h * 3);
  for (int oy = 0; oy < h; ++oy) {
    const int y0 = int(int64_t(oy) * H / h), y1 = std::max(y0 + 1, int(int64_t(oy + 1) * H / h));
    for (int ox = 0; ox < w; ++ox) {
      const int x0 = int(int64_t(ox) * W / w), x1 = std::max(x0 + 1, int(int64_t(ox + 1) * W / w));
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int y = y0; y < y1; ++y)
          for (int x = x0; x < x1; ++x) s += im.pixels[(size_t(y) * W + x) * 3 + c];
        small[(size_t(oy) * w + ox) * 3 + c] = to_u8(s / double((y1 - y0) * (x1 - x0)));
      }
    }
  }
  clip::Image out = im;
  for (int y = 0; y < H; ++y) {
    const int sy = std::min(h - 1, int(int64_t(y) * h / H));
    for (int x = 0; x < W; ++x) {
      const int sx = std::min(w - 1, int(int64_t(x) * w / W));
      std::memcpy(&out.pixels[(size_t(y) * W + x) * 3], &small[(size_t(sy) * w + sx) * 3], 3);
    }
  }
  return out;
}

const int kJpegQuality[5] = {25, 18, 15, 10, 7};

clip::Image as_rgb(const clip::Image& img) {
  if (img.empty()) throw Error("corruption: empty image");
  clip::Image rgb = img.mode == "RGB" ? img : clip::convert_to_rgb(img);
  return rgb;
}

}  // namespace

clip::Image corrupt_image(const clip::Image& img, Corruption c, int severity, uint64_t seed) {
  check_severity(severity);
  const int s = severity - 1;
  clip::Image rgb = as_rgb(img);
  switch (c) {
    case Corruption::GaussianNoise: {
      const double sig[5] = {0.08, 0.12, 0.18, 0.26, 0.38};
      return gaussian_noise(std::move(rgb), sig[s], seed);
    }
    case Corruption::GaussianBlur: {
      // ImageNet-C's sigmas at 224 px, scaled with the image, but never below CIFAR-10-C's
      // (which are for 32 px images), so small images are blurred as CIFAR-10-C does.
      const double imagenet[5] = {1, 2, 3, 4, 6}, cifar[5] = {0.4, 0.6, 0.7, 0.8, 1.0};
      const double scale = std::min(rgb.width, rgb.height) / 224.0;
      return gaussian_blur(rgb, std::max(cifar[s], imagenet[s] * scale));
    }
    case Corruption::Jpeg: {
      auto bytes = encode_jpeg_rgb(rgb, kJpegQuality[s]);
      return as_rgb(clip::decode_image_memory(bytes.data(), bytes.size(), "jpeg corruption"));
    }
    case Corruption::Contrast: {
      const double f[5] = {0.4, 0.3, 0.2, 0.1, 0.05};
      return contrast(std::move(rgb), f[s]);
    }
    case Corruption::Grayscale: {
      const double f[5] = {0.2, 0.4, 0.6, 0.8, 1.0};
      return grayscale(std::move(rgb), f[s]);
    }
    case Corruption::Pixelate: {
      const double f[5] = {0.6, 0.5, 0.4, 0.3, 0.25};
      return pixelate(rgb, f[s]);
    }
  }
  throw Error("corruption: unknown kind");
}

std::vector<uint8_t> corrupt_to_file(const clip::Image& img, Corruption c, int severity, uint64_t seed,
                                     std::string& extension) {
  check_severity(severity);
  if (c == Corruption::Jpeg) {
    extension = ".jpg";
    return encode_jpeg_rgb(as_rgb(img), kJpegQuality[severity - 1]);
  }
  extension = ".png";
  return encode_png_rgb(corrupt_image(img, c, severity, seed));
}

// ---- encoders ----

namespace {
struct JpegErr {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};
void jpeg_error_exit(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jump, 1);
}
void png_write_cb(png_structp png, png_bytep data, png_size_t len) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + len);
}
void png_error_cb(png_structp png, png_const_charp msg) {
  std::snprintf(static_cast<char*>(png_get_error_ptr(png)), 200, "%s", msg);
  png_longjmp(png, 1);
}
}  // namespace

std::vector<uint8_t> encode_jpeg_rgb(const clip::Image& rgb, int quality) {
  if (rgb.mode != "RGB" || rgb.channels != 3) throw Error("JPEG encode: expects an RGB image");
  jpeg_compress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buf);
    throw Error(std::string("JPEG encode: ") + err.msg);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = JDIMENSION(rgb.width);
  cinfo.image_height = JDIMENSION(rgb.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb.pixels.data() + size_t(cinfo.next_scanline) * rgb.width * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&cinfo);
  std::free(buf);
  return out;
}

std::vector<uint8_t> encode_png_rgb(const clip::Image& rgb) {
  if (rgb.mode != "RGB" || rgb.channels != 3) throw Error("PNG encode: expects an RGB image");
  char msg[200] = "unknown error";
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, msg, png_error_cb, nullptr);
  if (!png) throw Error("PNG encode: out of memory");
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error(std::string("PNG encode: ") + msg);
  }
  png_set_write_fn(png, &out, png_write_cb, nullptr);
  png_set_IHDR(png, info, png_uint_32(rgb.width), png_uint_32(rgb.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < rgb.height; ++y)
    png_write_row(png, const_cast<png_bytep>(rgb.pixels.data() + size_t(y) * rgb.width * 3));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace clip::eval
