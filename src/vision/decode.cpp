// Image decoders that reproduce what Pillow 9.4 gives after Image.open(...).load(): the same
// mode and the same pixels. JPEG through libjpeg-turbo (Pillow uses the same library with ISLOW
// IDCT and fancy upsampling, libjpeg's defaults), PNG through libpng, WebP through libwebp,
// GIF through giflib; BMP is small enough to parse here. Every failure is a clip::Error that
// names the input.
#include "vision/image.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <algorithm>

#include <gif_lib.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>

#include "core/error.h"
#include "core/io.h"
#include "vision/png_fast.h"

namespace clip {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Error(name + ": " + what);
}

void check_size(const std::string& name, const char* fmt, int64_t w, int64_t h,
                const DecodeOptions& opt) {
  if (w <= 0 || h <= 0)
    fail(name, std::string(fmt) + " image has zero size (" + std::to_string(w) + "x" +
                   std::to_string(h) + ")");
  if (opt.max_pixels > 0 && w * h > opt.max_pixels)
    fail(name, std::string(fmt) + " image of " + std::to_string(w) + "x" + std::to_string(h) +
                   " = " + std::to_string(w * h) + " pixels exceeds the limit of " +
                   std::to_string(opt.max_pixels) + " pixels (possible decompression bomb)");
}

uint16_t rd16le(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t rd32le(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// Pillow's palettes start as a grey ramp; entries a file does not define keep it.
std::vector<uint8_t> ramp_palette() {
  std::vector<uint8_t> p(768);
  for (int i = 0; i < 256; ++i) p[i * 3] = p[i * 3 + 1] = p[i * 3 + 2] = uint8_t(i);
  return p;
}

Image make_image(int w, int h, int channels, const char* mode) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = channels;
  img.mode = mode;
  img.pixels.assign(size_t(w) * h * channels * img.bytes_per_sample(), 0);
  return img;
}

// ---- EXIF orientation (TIFF structure inside APP1 / eXIf / EXIF chunk) ----
int exif_orientation_from_tiff(const uint8_t* d, size_t n) {
  if (n >= 6 && std::memcmp(d, "Exif\0\0", 6) == 0) { d += 6; n -= 6; }
  if (n < 8) return 0;
  bool le;
  if (d[0] == 'I' && d[1] == 'I') le = true;
  else if (d[0] == 'M' && d[1] == 'M') le = false;
  else return 0;
  auto u16 = [&](size_t o) -> uint32_t { return le ? (d[o] | (d[o + 1] << 8)) : ((d[o] << 8) | d[o + 1]); };
  auto u32 = [&](size_t o) -> uint32_t {
    return le ? uint32_t(d[o] | (d[o + 1] << 8) | (d[o + 2] << 16) | (uint32_t(d[o + 3]) << 24))
              : uint32_t((uint32_t(d[o]) << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]);
  };
  size_t ifd = u32(4);
  if (ifd + 2 > n) return 0;
  uint32_t count = u16(ifd);
  for (uint32_t i = 0; i < count; ++i) {
    size_t e = ifd + 2 + size_t(i) * 12;
    if (e + 12 > n) return 0;
    if (u16(e) == 0x0112) {
      uint32_t v = u16(e + 8);
      return (v >= 1 && v <= 8) ? int(v) : 0;
    }
  }
  return 0;
}

// ---- JPEG ----
struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

// Warnings are ignored as Pillow ignores them, except running out of data: Pillow reports
// "image file is truncated" there, where libjpeg would pad the image with grey.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = true;
}

// The decoding state lives in a plain struct so that longjmp skips no C++ destructor.
struct JpegJob {
  jpeg_decompress_struct cinfo;
  JpegError err;
};

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                  const DecodeOptions& opt, int* orientation) {
  JpegJob job;
  std::memset(&job, 0, sizeof job);
  Image img;
  job.cinfo.err = jpeg_std_error(&job.err.mgr);
  job.err.mgr.error_exit = jpeg_on_error;
  job.err.mgr.emit_message = jpeg_on_message;
  if (setjmp(job.err.jump)) {
    jpeg_destroy_decompress(&job.cinfo);
    fail(name, std::string("corrupt JPEG: ") + job.err.message);
  }
  jpeg_create_decompress(&job.cinfo);
  jpeg_mem_src(&job.cinfo, data, static_cast<unsigned long>(size));
  if (orientation) jpeg_save_markers(&job.cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&job.cinfo, TRUE);
  if (job.err.truncated) {
    jpeg_destroy_decompress(&job.cinfo);
    fail(name, "truncated JPEG (the header ends early)");
  }
  const int64_t w = job.cinfo.image_width, h = job.cinfo.image_height;
  if (w <= 0 || h <= 0 || (opt.max_pixels > 0 && w * h > opt.max_pixels)) {
    jpeg_destroy_decompress(&job.cinfo);
    check_size(name, "JPEG", w, h, opt);
  }
  if (orientation) {
    for (jpeg_saved_marker_ptr m = job.cinfo.marker_list; m; m = m->next)
      if (m->marker == JPEG_APP0 + 1 && (*orientation = exif_orientation_from_tiff(m->data, m->data_length)))
        break;
  }
  const char* mode;
  int channels;
  switch (job.cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: job.cinfo.out_color_space = JCS_GRAYSCALE; mode = "L"; channels = 1; break;
    case JCS_CMYK:
    case JCS_YCCK: job.cinfo.out_color_space = JCS_CMYK; mode = "CMYK"; channels = 4; break;
    default: job.cinfo.out_color_space = JCS_RGB; mode = "RGB"; channels = 3; break;
  }
  // Pillow's settings (libjpeg's defaults, spelled out): accurate integer IDCT, fancy upsampling.
  job.cinfo.dct_method = JDCT_ISLOW;
  job.cinfo.do_fancy_upsampling = TRUE;
  if (opt.jpeg_draft_min_side > 0) {
    // Largest reduction whose output keeps the short side >= the requested size.
    const int64_t short_side = std::min(w, h);
    for (int denom : {8, 4, 2}) {
      if ((short_side + denom - 1) / denom >= opt.jpeg_draft_min_side) {
        job.cinfo.scale_num = 1;
        job.cinfo.scale_denom = denom;
        break;
      }
    }
  }
  jpeg_start_decompress(&job.cinfo);
  const int ow = int(job.cinfo.output_width), oh = int(job.cinfo.output_height);
  img = make_image(ow, oh, channels, mode);
  const size_t stride = img.row_bytes();
  while (job.cinfo.output_scanline < job.cinfo.output_height) {
    JSAMPROW row = img.pixels.data() + size_t(job.cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&job.cinfo, &row, 1);
  }
  const bool truncated = job.err.truncated;
  if (!truncated) jpeg_finish_decompress(&job.cinfo);
  jpeg_destroy_decompress(&job.cinfo);
  if (truncated) fail(name, "truncated JPEG (image data ends early)");
  if (channels == 4) {
    // Pillow reads CMYK JPEGs with rawmode "CMYK;I" (Adobe's inverted convention).
    for (auto& v : img.pixels) v = uint8_t(255 - v);
  }
  return img;
}

// ---- PNG ----
struct PngReader {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}
void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "truncated PNG (file ends early)");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

struct PngJob {
  png_structp png;
  png_infop info;
  PngReader reader;
  uint8_t** rows;
};

Image decode_png(const uint8_t* data, size_t size, const std::string& name,
                 const DecodeOptions& opt, int* orientation) {
  PngJob job;
  std::memset(&job, 0, sizeof job);
  job.reader.data = data;
  job.reader.size = size;
  Image img;
  std::vector<uint8_t*> rows;
  job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job.reader, png_on_error, png_on_warning);
  if (!job.png) fail(name, "out of memory");
  job.info = png_create_info_struct(job.png);
  if (!job.info) {
    png_destroy_read_struct(&job.png, nullptr, nullptr);
    fail(name, "out of memory");
  }
  if (setjmp(png_jmpbuf(job.png))) {
    png_destroy_read_struct(&job.png, &job.info, nullptr);
    fail(name, std::string("corrupt PNG: ") + job.reader.message);
  }
  png_set_read_fn(job.png, &job.reader, png_read_mem);
  png_set_user_limits(job.png, 0x7fffffff, 0x7fffffff);
  png_set_benign_errors(job.png, 1);
  // Pillow does not verify ancillary chunks' CRCs strictly either; critical ones must match.
  png_read_info(job.png, job.info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(job.png, job.info, &w, &h, &depth, &color, &interlace, nullptr, nullptr);
  if (w == 0 || h == 0 || (opt.max_pixels > 0 && int64_t(w) * h > opt.max_pixels)) {
    png_destroy_read_struct(&job.png, &job.info, nullptr);
    check_size(name, "PNG", w, h, opt);
  }
  if (orientation) {
    png_bytep exif = nullptr;
    png_uint_32 exif_len = 0;
    if (png_get_eXIf_1(job.png, job.info, &exif_len, &exif) && exif)
      *orientation = exif_orientation_from_tiff(exif, exif_len);
  }
  // Pillow's modes (PngImagePlugin._MODES): 1-bit grey "1", 2/4/8-bit grey "L" (scaled),
  // 16-bit grey "I", palette "P", grey+alpha "LA" (16-bit: "RGBA"), RGB, RGBA; 16-bit colour
  // samples keep their high byte.
  const char* mode = "RGB";
  int channels = 3;
  bool la16 = false;
  switch (color) {
    case PNG_COLOR_TYPE_GRAY:
      if (depth == 16) { mode = "I"; channels = 1; png_set_swap(job.png); }
      else { mode = depth == 1 ? "1" : "L"; channels = 1; if (depth < 8) png_set_expand_gray_1_2_4_to_8(job.png); }
      break;
    case PNG_COLOR_TYPE_PALETTE:
      mode = "P"; channels = 1;
      if (depth < 8) png_set_packing(job.png);
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      if (depth == 16) { la16 = true; mode = "RGBA"; channels = 2; png_set_strip_16(job.png); }
      else { mode = "LA"; channels = 2; }
      break;
    case PNG_COLOR_TYPE_RGB: if (depth == 16) png_set_strip_16(job.png); break;
    case PNG_COLOR_TYPE_RGB_ALPHA: mode = "RGBA"; channels = 4; if (depth == 16) png_set_strip_16(job.png); break;
    default: png_destroy_read_struct(&job.png, &job.info, nullptr); fail(name, "unsupported PNG colour type");
  }
  if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(job.png);
  png_read_update_info(job.png, job.info);
  img = make_image(int(w), int(h), channels, mode);
  if (std::string(mode) == "I") {
    // Read as 16-bit, widen to int32 below.
    img.pixels.assign(size_t(w) * h * 2, 0);
  }
  const size_t stride = std::string(mode) == "I" ? size_t(w) * 2 : img.row_bytes();
  if (png_get_rowbytes(job.png, job.info) != stride) {
    png_destroy_read_struct(&job.png, &job.info, nullptr);
    fail(name, "unexpected PNG row layout");
  }
  rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = img.pixels.data() + size_t(y) * stride;
  job.rows = rows.data();
  if (color == PNG_COLOR_TYPE_PALETTE) {
    img.palette = ramp_palette();
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(job.png, job.info, &plte, &n))
      for (int i = 0; i < n && i < 256; ++i) {
        img.palette[i * 3] = plte[i].red;
        img.palette[i * 3 + 1] = plte[i].green;
        img.palette[i * 3 + 2] = plte[i].blue;
      }
  }
  png_read_image(job.png, job.rows);
  png_destroy_read_struct(&job.png, &job.info, nullptr);
  if (std::string(mode) == "I") {
    std::vector<uint8_t> wide(size_t(w) * h * 4);
    for (size_t i = 0; i < size_t(w) * h; ++i) {
      uint16_t v;
      std::memcpy(&v, img.pixels.data() + i * 2, 2);
      int32_t x = v;
      std::memcpy(wide.data() + i * 4, &x, 4);
    }
    img.pixels = std::move(wide);
  }
  if (la16) {
    // Pillow's "LA;16B" unpacker: grey to R, G and B, alpha to A.
    std::vector<uint8_t> rgba(size_t(w) * h * 4);
    for (size_t i = 0; i < size_t(w) * h; ++i) {
      rgba[i * 4] = rgba[i * 4 + 1] = rgba[i * 4 + 2] = img.pixels[i * 2];
      rgba[i * 4 + 3] = img.pixels[i * 2 + 1];
    }
    img.pixels = std::move(rgba);
    img.channels = 4;
  }
  return img;
}

// ---- WebP ----
Image decode_webp(const uint8_t* data, size_t size, const std::string& name,
                  const DecodeOptions& opt, int* orientation) {
  WebPBitstreamFeatures f;
  VP8StatusCode st = WebPGetFeatures(data, size, &f);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) fail(name, "truncated WebP");
  if (st != VP8_STATUS_OK) fail(name, "corrupt WebP (status " + std::to_string(int(st)) + ")");
  if (f.has_animation) {
    // Pillow decodes animated WebP through WebPAnimDecoder; the still-image API cannot.
    fail(name, "animated WebP is not supported");
  }
  check_size(name, "WebP", f.width, f.height, opt);
  // Pillow's WebPAnimDecoder path decodes to RGBA and reports RGB when there is no alpha.
  Image img = make_image(f.width, f.height, f.has_alpha ? 4 : 3, f.has_alpha ? "RGBA" : "RGB");
  uint8_t* out = f.has_alpha
                     ? WebPDecodeRGBAInto(data, size, img.pixels.data(), img.pixels.size(), int(img.row_bytes()))
                     : WebPDecodeRGBInto(data, size, img.pixels.data(), img.pixels.size(), int(img.row_bytes()));
  if (!out) fail(name, "corrupt or truncated WebP");
  (void)orientation;  // EXIF in WebP lives in the RIFF container; found below.
  if (orientation && size > 12) {
    size_t pos = 12;
    while (pos + 8 <= size) {
      uint32_t len = rd32le(data + pos + 4);
      if (std::memcmp(data + pos, "EXIF", 4) == 0 && pos + 8 + len <= size) {
        *orientation = exif_orientation_from_tiff(data + pos + 8, len);
        break;
      }
      if (len > size - pos - 8) break;
      pos += 8 + len + (len & 1);
    }
  }
  return img;
}

// ---- BMP (Pillow's BmpImagePlugin: uncompressed 1/4/8/16/24/32 bits, bit fields) ----
Image decode_bmp(const uint8_t* d, size_t n, const std::string& name, const DecodeOptions& opt) {
  if (n < 14 + 12) fail(name, "truncated BMP header");
  const uint32_t data_offset = rd32le(d + 10);
  const uint32_t header_size = rd32le(d + 14);
  if (header_size < 12 || 14 + size_t(header_size) > n) fail(name, "truncated or corrupt BMP header");
  int64_t w, h;
  int bits, compression = 0;
  uint32_t colors = 0;
  const uint8_t* hd = d + 14;
  if (header_size == 12) {
    w = rd16le(hd + 4);
    h = int16_t(rd16le(hd + 6));
    bits = rd16le(hd + 10);
  } else {
    if (header_size < 40) fail(name, "unsupported BMP header size " + std::to_string(header_size));
    w = int32_t(rd32le(hd + 4));
    h = int32_t(rd32le(hd + 8));
    bits = rd16le(hd + 14);
    compression = int(rd32le(hd + 16));
    colors = rd32le(hd + 32);
  }
  const bool top_down = h < 0;
  if (top_down) h = -h;
  if (w < 0) fail(name, "corrupt BMP (negative width)");
  check_size(name, "BMP", w, h, opt);
  uint32_t masks[4] = {0, 0, 0, 0};
  if (compression == 3 || compression == 6) {  // BI_BITFIELDS / BI_ALPHABITFIELDS
    size_t mpos = header_size >= 52 ? 14 + 40 : 14 + header_size;
    if (mpos + 16 > n) fail(name, "truncated BMP bit masks");
    for (int i = 0; i < 4; ++i) masks[i] = rd32le(d + mpos + 4 * i);
    if (header_size < 56 && compression == 3) masks[3] = 0;
    if (header_size == 40 && compression == 3 && bits == 32) masks[3] = 0;
  } else if (compression != 0) {
    fail(name, "unsupported BMP compression " + std::to_string(compression) + " (only uncompressed and bit fields)");
  }
  Image img;
  const char* mode = "RGB";
  int channels = 3;
  bool paletted = bits <= 8;
  if (paletted) {
    if (bits != 1 && bits != 4 && bits != 8) fail(name, "unsupported BMP bit depth " + std::to_string(bits));
    if (colors == 0 || colors > (1u << bits)) colors = 1u << bits;
    const int entry = header_size == 12 ? 3 : 4;
    const size_t ppos = 14 + header_size;
    if (ppos + size_t(colors) * entry > n) fail(name, "truncated BMP palette");
    std::vector<uint8_t> pal = ramp_palette();
    for (uint32_t i = 0; i < colors; ++i) {
      pal[i * 3] = d[ppos + i * entry + 2];
      pal[i * 3 + 1] = d[ppos + i * entry + 1];
      pal[i * 3 + 2] = d[ppos + i * entry];
    }
    // Pillow drops an identity grey palette: 8-bit becomes "L" (resized with bicubic, not nearest).
    bool grey = bits == 8;
    for (uint32_t i = 0; grey && i < colors; ++i)
      grey = pal[i * 3] == i && pal[i * 3 + 1] == i && pal[i * 3 + 2] == i;
    // ... and a black-and-white 2-colour palette becomes mode "1" (pixels 0 or 255).
    const bool bilevel = colors == 2 && pal[0] == 0 && pal[1] == 0 && pal[2] == 0 && pal[3] == 255 &&
                         pal[4] == 255 && pal[5] == 255;
    mode = grey ? "L" : bilevel ? "1" : "P";
    channels = 1;
    img = make_image(int(w), int(h), 1, mode);
    if (!grey && !bilevel) img.palette = pal;
  } else if (bits == 16 || bits == 24 || bits == 32) {
    if (bits == 32 && (compression == 3 || compression == 6) && masks[3] != 0) { mode = "RGBA"; channels = 4; }
    img = make_image(int(w), int(h), channels, mode);
  } else {
    fail(name, "unsupported BMP bit depth " + std::to_string(bits));
  }
  const size_t src_stride = ((size_t(w) * bits + 31) / 32) * 4;
  if (data_offset > n || size_t(h) * src_stride > n - data_offset) fail(name, "truncated BMP pixel data");
  auto shift_of = [](uint32_t m) { int s = 0; if (!m) return 0; while (!(m & 1)) { m >>= 1; ++s; } return s; };
  auto width_of = [](uint32_t m) { int c = 0; while (m) { c += m & 1; m >>= 1; } return c; };
  if (bits == 16 && compression == 0) { masks[0] = 0x7c00; masks[1] = 0x3e0; masks[2] = 0x1f; }
  if ((bits == 16 || bits == 32) && compression != 0) {
    for (int c = 0; c < (channels == 4 ? 4 : 3); ++c) {
      int wd = width_of(masks[c]);
      if (wd == 0 || wd > 8 || (masks[c] >> shift_of(masks[c])) != (1u << wd) - 1)
        fail(name, "unsupported BMP bit masks");
    }
  }
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* src = d + data_offset + size_t(top_down ? y : h - 1 - y) * src_stride;
    uint8_t* dst = img.pixels.data() + size_t(y) * img.row_bytes();
    for (int64_t x = 0; x < w; ++x) {
      if (paletted) {
        int v;
        if (bits == 8) v = src[x];
        else if (bits == 4) v = (src[x / 2] >> (x & 1 ? 0 : 4)) & 15;
        else v = (src[x / 8] >> (7 - (x & 7))) & 1;
        dst[x] = uint8_t(mode[0] == '1' ? (v ? 255 : 0) : v);
      } else if (bits == 24 || (bits == 32 && compression == 0)) {
        const uint8_t* p = src + x * (bits / 8);
        dst[x * 3] = p[2];
        dst[x * 3 + 1] = p[1];
        dst[x * 3 + 2] = p[0];
      } else {
        const uint32_t v = bits == 16 ? rd16le(src + x * 2) : rd32le(src + x * 4);
        for (int c = 0; c < channels; ++c) {
          const int wd = width_of(masks[c]);
          const uint32_t f = (v & masks[c]) >> shift_of(masks[c]);
          // Pillow's unpackers: 8-bit fields as is, 5/6-bit fields scaled by 255/max, truncated.
          dst[x * channels + c] = uint8_t(wd == 8 ? f : f * 255 / ((1u << wd) - 1));
        }
      }
    }
  }
  return img;
}

// ---- GIF (first frame, as Pillow 9.4's GifImagePlugin loads it) ----
struct GifMem {
  const uint8_t* data;
  size_t size;
  size_t pos;
};
int gif_read_mem(GifFileType* gif, GifByteType* out, int n) {
  auto* m = static_cast<GifMem*>(gif->UserData);
  size_t k = std::min(size_t(n), m->size - m->pos);
  std::memcpy(out, m->data + m->pos, k);
  m->pos += k;
  return int(k);
}

// giflib returns NULL for codes it does not know.
std::string gif_error(int code) {
  const char* s = GifErrorString(code);
  return s ? s : "error " + std::to_string(code);
}

struct GifCloser {
  GifFileType* gif;
  ~GifCloser() { if (gif) { int e; DGifCloseFile(gif, &e); } }
};

// Pillow keeps a palette only when it is not the identity grey ramp (then the mode is "L").
bool gif_palette_needed(const ColorMapObject* map) {
  for (int i = 0; i < map->ColorCount; ++i) {
    const GifColorType& c = map->Colors[i];
    if (!(c.Red == i && c.Green == i && c.Blue == i)) return true;
  }
  return false;
}

Image decode_gif(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  GifMem mem{data, size, 0};
  int err = 0;
  GifCloser g{DGifOpen(&mem, gif_read_mem, &err)};
  if (!g.gif) fail(name, std::string("corrupt GIF: ") + gif_error(err));
  GifFileType* gif = g.gif;
  int64_t W = gif->SWidth, H = gif->SHeight;
  int transparency = -1;
  const ColorMapObject* global = gif->SColorMap;
  bool global_needed = global && gif_palette_needed(global);
  for (;;) {
    GifRecordType rec;
    if (DGifGetRecordType(gif, &rec) == GIF_ERROR)
      fail(name, std::string("corrupt or truncated GIF: ") + gif_error(gif->Error));
    if (rec == TERMINATE_RECORD_TYPE) fail(name, "GIF has no image");
    if (rec == EXTENSION_RECORD_TYPE) {
      int code;
      GifByteType* ext;
      if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR)
        fail(name, std::string("corrupt or truncated GIF: ") + gif_error(gif->Error));
      bool first = true;
      while (ext) {
        if (first && code == GRAPHICS_EXT_FUNC_CODE && ext[0] >= 4 && (ext[1] & 1)) transparency = ext[4];
        first = false;
        if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR)
          fail(name, std::string("corrupt or truncated GIF: ") + gif_error(gif->Error));
      }
      continue;
    }
    if (rec != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif) == GIF_ERROR)
      fail(name, std::string("corrupt or truncated GIF: ") + gif_error(gif->Error));
    const GifImageDesc& desc = gif->Image;
    const int64_t x0 = desc.Left, y0 = desc.Top, fw = desc.Width, fh = desc.Height;
    // A frame reaching past the logical screen enlarges the image (Pillow does the same).
    W = std::max(W, x0 + fw);
    H = std::max(H, y0 + fh);
    check_size(name, "GIF", W, H, opt);
    const ColorMapObject* local = desc.ColorMap;
    bool has_palette;
    const ColorMapObject* used = nullptr;
    if (local) { has_palette = gif_palette_needed(local); used = has_palette ? local : nullptr; }
    else { has_palette = global_needed; used = has_palette ? global : nullptr; }
    Image img = make_image(int(W), int(H), 1, has_palette ? "P" : "L");
    if (transparency >= 0) std::fill(img.pixels.begin(), img.pixels.end(), uint8_t(transparency));
    if (has_palette) {
      img.palette = ramp_palette();
      for (int i = 0; i < used->ColorCount && i < 256; ++i) {
        img.palette[i * 3] = used->Colors[i].Red;
        img.palette[i * 3 + 1] = used->Colors[i].Green;
        img.palette[i * 3 + 2] = used->Colors[i].Blue;
      }
    }
    std::vector<GifPixelType> line(size_t(std::max<int64_t>(fw, 1)));
    auto put_row = [&](int64_t y) {
      if (DGifGetLine(gif, line.data(), int(fw)) == GIF_ERROR)
        fail(name, std::string("corrupt or truncated GIF: ") + gif_error(gif->Error));
      if (y0 + y >= H) return;
      std::memcpy(img.pixels.data() + size_t(y0 + y) * W + x0, line.data(), size_t(fw));
    };
    if (fw > 0 && fh > 0) {
      if (desc.Interlace) {
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        for (int pass = 0; pass < 4; ++pass)
          for (int64_t y = start[pass]; y < fh; y += step[pass]) put_row(y);
      } else {
        for (int64_t y = 0; y < fh; ++y) put_row(y);
      }
    }
    return img;
  }
}

}  // namespace

ImageFormat detect_image_format(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::Png;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return ImageFormat::Webp;
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return ImageFormat::Bmp;
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) return ImageFormat::Gif;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg: return "JPEG";
    case ImageFormat::Png: return "PNG";
    case ImageFormat::Webp: return "WebP";
    case ImageFormat::Bmp: return "BMP";
    case ImageFormat::Gif: return "GIF";
    default: return "unknown";
  }
}

Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                          const DecodeOptions& opt) {
  if (size == 0) fail(name, "empty file, not an image");
  int orientation = 0;
  int* want = opt.exif_orient ? &orientation : nullptr;
  Image img;
  switch (detect_image_format(data, size)) {
    case ImageFormat::Jpeg: img = decode_jpeg(data, size, name, opt, want); break;
    case ImageFormat::Png: {
      const uint8_t* exif = nullptr;
      size_t exif_len = 0;
      if (decode_png_fast(data, size, opt.max_pixels, img, want ? &exif : nullptr, &exif_len)) {
        if (exif) orientation = exif_orientation_from_tiff(exif, exif_len);
      } else {
        img = decode_png(data, size, name, opt, want);
      }
      break;
    }
    case ImageFormat::Webp: img = decode_webp(data, size, name, opt, want); break;
    case ImageFormat::Bmp: img = decode_bmp(data, size, name, opt); break;
    case ImageFormat::Gif: img = decode_gif(data, size, name, opt); break;
    default:
      fail(name, "unknown image format (not JPEG, PNG, WebP, BMP or GIF)");
  }
  if (orientation > 1) img = apply_exif_orientation(img, orientation);
  return img;
}

Image decode_image_file(const std::string& path, const DecodeOptions& opt) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image_memory(bytes.data(), bytes.size(), path, opt);
}

Image image_from_buffer(const uint8_t* data, int width, int height, const std::string& mode) {
  int channels = mode == "L" ? 1 : mode == "LA" ? 2 : mode == "RGB" ? 3 : mode == "RGBA" ? 4 : 0;
  if (channels == 0) throw Error("image_from_buffer: unsupported mode '" + mode + "'");
  if (width <= 0 || height <= 0)
    throw Error("image_from_buffer: zero-size image (" + std::to_string(width) + "x" + std::to_string(height) + ")");
  Image img;
  img.width = width;
  img.height = height;
  img.channels = channels;
  img.mode = mode;
  img.pixels.assign(data, data + size_t(width) * height * channels);
  return img;
}

Image apply_exif_orientation(const Image& img, int orientation) {
  if (orientation <= 1 || orientation > 8) return img;
  // Orientation -> (transpose, flip x, flip y) of the stored image, as exif_transpose maps it:
  // 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 270 (clockwise 90), 7 transverse, 8 rotate 90.
  const bool swap = orientation >= 5;
  const int W = swap ? img.height : img.width, H = swap ? img.width : img.height;
  Image out = img;
  out.width = W;
  out.height = H;
  const size_t px = size_t(img.channels) * img.bytes_per_sample();
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      int sx, sy;
      switch (orientation) {
        case 2: sx = img.width - 1 - x; sy = y; break;
        case 3: sx = img.width - 1 - x; sy = img.height - 1 - y; break;
        case 4: sx = x; sy = img.height - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = img.height - 1 - x; break;
        case 7: sx = img.width - 1 - y; sy = img.height - 1 - x; break;
        default: sx = img.width - 1 - y; sy = x; break;  // 8
      }
      std::memcpy(out.pixels.data() + (size_t(y) * W + x) * px,
                  img.pixels.data() + (size_t(sy) * img.width + sx) * px, px);
    }
  return out;
}

}  // namespace clip
