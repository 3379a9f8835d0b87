// IDX and .npy image arrays (see arrays.h).
#include "vision/arrays.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <zlib.h>

#include "core/error.h"
#include "core/io.h"

namespace clip {

std::vector<uint8_t> maybe_gunzip(const std::vector<uint8_t>& data, const std::string& name) {
  if (data.size() < 2 || data[0] != 0x1f || data[1] != 0x8b) return data;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error(name + ": cannot start gzip decoder");
  std::vector<uint8_t> out(std::max<size_t>(data.size() * 4, 1 << 16));
  zs.next_in = const_cast<Bytef*>(data.data());
  zs.avail_in = uInt(data.size());
  int rc;
  do {
    if (zs.total_out == out.size()) out.resize(out.size() * 2);
    zs.next_out = out.data() + zs.total_out;
    zs.avail_out = uInt(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
  } while (rc == Z_OK);
  const size_t n = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) throw Error(name + ": corrupt or truncated gzip data");
  out.resize(n);
  return out;
}

namespace {

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

struct IdxArray {
  std::vector<uint8_t> bytes;
  std::vector<uint32_t> dims;
  size_t offset = 0;
};

IdxArray read_idx(const std::string& path) {
  IdxArray a;
  a.bytes = maybe_gunzip(read_file(path), path);
  const auto& b = a.bytes;
  if (b.size() < 4 || b[0] != 0 || b[1] != 0) throw Error(path + ": not an IDX file (bad magic)");
  if (b[2] != 0x08) throw Error(path + ": IDX data type " + std::to_string(b[2]) + " is not unsigned byte");
  const int nd = b[3];
  if (nd < 1 || nd > 4) throw Error(path + ": IDX with " + std::to_string(nd) + " dimensions");
  if (b.size() < 4 + size_t(nd) * 4) throw Error(path + ": truncated IDX header");
  size_t total = 1;
  for (int i = 0; i < nd; ++i) {
    a.dims.push_back(be32(&b[4 + size_t(i) * 4]));
    total *= a.dims.back();
    if (total > (size_t(1) << 40)) throw Error(path + ": IDX dimensions too large");
  }
  a.offset = 4 + size_t(nd) * 4;
  if (b.size() - a.offset < total) throw Error(path + ": truncated IDX data (" + std::to_string(b.size() - a.offset) +
                                               " bytes, header says " + std::to_string(total) + ")");
  return a;
}

std::vector<Image> slice_images(const uint8_t* data, int64_t n, int h, int w, int c, int64_t limit,
                                const std::string& path) {
  if (h <= 0 || w <= 0) throw Error(path + ": zero-size images");
  if (limit > 0) n = std::min(n, limit);
  std::vector<Image> out(size_t(std::max<int64_t>(n, 0)));
  const size_t per = size_t(h) * w * c;
  for (int64_t i = 0; i < n; ++i) {
    Image& img = out[size_t(i)];
    img.width = w;
    img.height = h;
    img.channels = c;
    img.mode = c == 3 ? "RGB" : "L";
    img.pixels.assign(data + size_t(i) * per, data + size_t(i + 1) * per);
  }
  return out;
}

}  // namespace

std::vector<Image> read_idx_images(const std::string& path, int64_t limit) {
  IdxArray a = read_idx(path);
  if (a.dims.size() == 3) return slice_images(a.bytes.data() + a.offset, a.dims[0], int(a.dims[1]), int(a.dims[2]), 1, limit, path);
  if (a.dims.size() == 4 && a.dims[3] == 3)
    return slice_images(a.bytes.data() + a.offset, a.dims[0], int(a.dims[1]), int(a.dims[2]), 3, limit, path);
  throw Error(path + ": IDX images must be [N, H, W] or [N, H, W, 3]");
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  IdxArray a = read_idx(path);
  if (a.dims.size() != 1) throw Error(path + ": IDX labels must have one dimension");
  return std::vector<uint8_t>(a.bytes.begin() + long(a.offset), a.bytes.begin() + long(a.offset + a.dims[0]));
}

std::vector<Image> read_npy_images(const std::string& path, int64_t limit) {
  const std::vector<uint8_t> b = read_file(path);
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  size_t hl, off;
  if (b[6] == 1) { hl = b[8] | (size_t(b[9]) << 8); off = 10; }
  else {
    if (b.size() < 12) throw Error(path + ": truncated .npy header");
    hl = b[8] | (size_t(b[9]) << 8) | (size_t(b[10]) << 16) | (size_t(b[11]) << 24);
    off = 12;
  }
  if (hl > b.size() - off) throw Error(path + ": truncated .npy header");
  const std::string h(reinterpret_cast<const char*>(b.data() + off), hl);
  int elem;
  char kind;
  if (h.find("'|u1'") != std::string::npos) { elem = 1; kind = 'u'; }
  else if (h.find("'<f4'") != std::string::npos) { elem = 4; kind = 'f'; }
  else if (h.find("'<f8'") != std::string::npos) { elem = 8; kind = 'd'; }
  else throw Error(path + ": .npy dtype must be uint8, float32 or float64 (little-endian)");
  if (h.find("'fortran_order': True") != std::string::npos) throw Error(path + ": Fortran-order .npy is not supported");
  const size_t lp = h.find('(', h.find("'shape'")), rp = h.find(')', lp);
  if (lp == std::string::npos || rp == std::string::npos) throw Error(path + ": .npy header has no shape");
  std::vector<int64_t> shape;
  for (size_t pos = lp + 1; pos < rp;) {
    while (pos < rp && (h[pos] == ' ' || h[pos] == ',')) ++pos;
    if (pos >= rp) break;
    size_t end = pos;
    while (end < rp && std::isdigit(static_cast<unsigned char>(h[end]))) ++end;
    if (end == pos) throw Error(path + ": bad .npy shape");
    shape.push_back(std::stoll(h.substr(pos, end - pos)));
    pos = end;
  }
  const bool rgb = !shape.empty() && shape.back() == 3 && (shape.size() == 4 || shape.size() == 3);
  int64_t n, hh, ww;
  if (shape.size() == 4 && rgb) { n = shape[0]; hh = shape[1]; ww = shape[2]; }
  else if (shape.size() == 3 && !rgb) { n = shape[0]; hh = shape[1]; ww = shape[2]; }
  else if (shape.size() == 3 && rgb) { n = 1; hh = shape[0]; ww = shape[1]; }
  else if (shape.size() == 2) { n = 1; hh = shape[0]; ww = shape[1]; }
  else throw Error(path + ": .npy images must be [N,H,W], [N,H,W,3], [H,W] or [H,W,3]");
  const int c = rgb ? 3 : 1;
  if (hh <= 0 || ww <= 0 || hh > (1 << 20) || ww > (1 << 20)) throw Error(path + ": bad image size in .npy shape");
  const size_t count = size_t(n) * hh * ww * c;
  const size_t data_off = off + hl;
  if ((b.size() - data_off) / elem < count) throw Error(path + ": .npy data shorter than its shape");
  std::vector<uint8_t> u8(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = b.data() + data_off + i * elem;
    if (kind == 'u') { u8[i] = *p; continue; }
    double v;
    if (kind == 'f') { float f; std::memcpy(&f, p, 4); v = f; }
    else std::memcpy(&v, p, 8);
    v = std::nearbyint(v * 255.0);
    u8[i] = uint8_t(std::isnan(v) ? 0 : v < 0 ? 0 : v > 255 ? 255 : v);
  }
  return slice_images(u8.data(), n, int(hh), int(ww), c, limit, path);
}

}  // namespace clip
