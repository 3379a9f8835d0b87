#include "core/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace clip {

namespace {

struct TypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_elements, block_bytes;
};
constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "f32", 1, 4},    {GgmlType::F16, "f16", 1, 2},    {GgmlType::BF16, "bf16", 1, 2},
    {GgmlType::Q4_0, "q4_0", 32, 18}, {GgmlType::Q4_1, "q4_1", 32, 20}, {GgmlType::Q5_0, "q5_0", 32, 22},
    {GgmlType::Q5_1, "q5_1", 32, 24}, {GgmlType::Q8_0, "q8_0", 32, 34}};

const TypeInfo* type_info(uint32_t t) {
  for (const auto& i : kTypes)
    if (uint32_t(i.type) == t) return &i;
  return nullptr;
}

// GGUF value types.
enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32T, BOOL, STRING, ARRAY, U64, I64, F64 };

class Reader {
 public:
  Reader(const uint8_t* d, size_t n, std::string label) : d_(d), n_(n), label_(std::move(label)) {}
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(label_ + ": " + why + " (GGUF, at byte " + std::to_string(pos_) + ")");
  }
  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_) fail("truncated file");
    const uint8_t* p = d_ + pos_;
    pos_ += k;
    return p;
  }
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  std::string str() {
    const uint64_t len = get<uint64_t>();
    if (len > (uint64_t(1) << 24)) fail("string of " + std::to_string(len) + " bytes");
    const uint8_t* p = take(len);
    return std::string(reinterpret_cast<const char*>(p), size_t(len));
  }
  GgufValue value(uint32_t type, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case U8: v.kind = GgufValue::UInt; v.u = get<uint8_t>(); break;
      case U16: v.kind = GgufValue::UInt; v.u = get<uint16_t>(); break;
      case U32: v.kind = GgufValue::UInt; v.u = get<uint32_t>(); break;
      case U64: v.kind = GgufValue::UInt; v.u = get<uint64_t>(); break;
      case I8: v.kind = GgufValue::Int; v.i = get<int8_t>(); break;
      case I16: v.kind = GgufValue::Int; v.i = get<int16_t>(); break;
      case I32: v.kind = GgufValue::Int; v.i = get<int32_t>(); break;
      case I64: v.kind = GgufValue::Int; v.i = get<int64_t>(); break;
      case F32T: v.kind = GgufValue::Float; v.f = get<float>(); break;
      case F64: v.kind = GgufValue::Float; v.f = get<double>(); break;
      case BOOL: v.kind = GgufValue::Bool; v.b = get<uint8_t>() != 0; break;
      case STRING: v.kind = GgufValue::String; v.s = str(); break;
      case ARRAY: {
        if (depth > 2) fail("arrays nested too deeply");
        v.kind = GgufValue::Array;
        const uint32_t et = get<uint32_t>();
        const uint64_t count = get<uint64_t>();
        if (count > n_ - pos_) fail("array of " + std::to_string(count) + " items is longer than the file");
        v.items.reserve(size_t(count));
        for (uint64_t k = 0; k < count; ++k) v.items.push_back(value(et, depth + 1));
        break;
      }
      default: fail("unknown metadata value type " + std::to_string(type));
    }
    return v;
  }
  uint64_t pos() const { return pos_; }

 private:
  const uint8_t* d_;
  size_t n_;
  uint64_t pos_ = 0;
  std::string label_;
};

uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const TypeInfo* i = type_info(uint32_t(t));
  return i ? i->name : "?";
}
bool parse_ggml_type(const std::string& name, GgmlType& out) {
  for (const auto& i : kTypes)
    if (name == i.name) {
      out = i.type;
      return true;
    }
  return false;
}
int64_t ggml_block_elements(GgmlType t) { return type_info(uint32_t(t))->block_elements; }
int64_t ggml_block_bytes(GgmlType t) { return type_info(uint32_t(t))->block_bytes; }

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

GgufFile GgufFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

GgufFile GgufFile::parse(std::shared_ptr<MappedFile> map) {
  GgufFile g;
  g.map_ = std::move(map);
  Reader r(g.map_->data(), g.map_->size(), g.map_->path());
  if (g.map_->size() < 4 || std::memcmp(g.map_->data(), "GGUF", 4) != 0) r.fail("not a GGUF file (no GGUF magic)");
  r.take(4);
  g.version_ = r.get<uint32_t>();
  if (g.version_ != 2 && g.version_ != 3) r.fail("unsupported GGUF version " + std::to_string(g.version_));
  const uint64_t n_tensors = r.get<uint64_t>(), n_kv = r.get<uint64_t>();
  if (n_tensors > (1u << 20) || n_kv > (1u << 20)) r.fail("implausible tensor or key count");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.str();
    const uint32_t type = r.get<uint32_t>();
    GgufValue v = r.value(type, 0);
    if (!g.kv_.emplace(key, std::move(v)).second) r.fail("key " + key + " appears twice");
  }
  struct Raw {
    GgufTensorInfo info;
    uint64_t rel = 0;
  };
  std::vector<Raw> raw;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    Raw t;
    t.info.name = r.str();
    const uint32_t dims = r.get<uint32_t>();
    if (dims == 0 || dims > 4) r.fail("tensor " + t.info.name + " has " + std::to_string(dims) + " dimensions");
    std::vector<int64_t> ne(dims);
    int64_t numel = 1;
    for (auto& e : ne) {
      const uint64_t v = r.get<uint64_t>();
      if (v == 0 || v > (uint64_t(1) << 40) || uint64_t(numel) > (uint64_t(1) << 40) / v)
        r.fail("tensor " + t.info.name + " has an implausible shape");
      e = int64_t(v);
      numel *= e;
    }
    t.info.shape.assign(ne.rbegin(), ne.rend());
    const uint32_t type = r.get<uint32_t>();
    const TypeInfo* ti = type_info(type);
    if (!ti) r.fail("tensor " + t.info.name + " has ggml type " + std::to_string(type) + ", which is not supported (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0)");
    t.info.type = ti->type;
    if (ne[0] % ti->block_elements != 0) r.fail("tensor " + t.info.name + ": row length is not a multiple of its block size");
    t.info.nbytes = uint64_t(numel / ti->block_elements * ti->block_bytes);
    t.rel = r.get<uint64_t>();
    raw.push_back(std::move(t));
  }
  uint64_t alignment = 32;
  if (const GgufValue* a = g.find("general.alignment")) {
    if (a->kind != GgufValue::UInt || a->u == 0 || a->u > 4096 || (a->u & (a->u - 1))) r.fail("bad general.alignment");
    alignment = a->u;
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (auto& t : raw) {
    if (t.rel > g.map_->size() || data_start > g.map_->size() - t.rel ||
        t.info.nbytes > g.map_->size() - data_start - t.rel)
      throw Error(g.map_->path() + ": tensor " + t.info.name + " lies beyond the end of the file (GGUF)");
    t.info.offset = data_start + t.rel;
    g.tensors_.push_back(std::move(t.info));
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(path() + ": GGUF key " + key + " is missing");
  if (v->kind == GgufValue::UInt) return v->u;
  if (v->kind == GgufValue::Int && v->i >= 0) return uint64_t(v->i);
  throw Error(path() + ": GGUF key " + key + " is not an unsigned integer");
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(path() + ": GGUF key " + key + " is missing");
  if (v->kind != GgufValue::Float) throw Error(path() + ": GGUF key " + key + " is not a number");
  return v->f;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  if (v->kind != GgufValue::Bool) throw Error(path() + ": GGUF key " + key + " is not a boolean");
  return v->b;
}

std::vector<std::string> GgufFile::get_strings(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(path() + ": GGUF key " + key + " is missing");
  if (v->kind != GgufValue::Array) throw Error(path() + ": GGUF key " + key + " is not an array");
  std::vector<std::string> out;
  for (const auto& x : v->items) {
    if (x.kind != GgufValue::String) throw Error(path() + ": GGUF key " + key + " is not an array of strings");
    out.push_back(x.s);
  }
  return out;
}

void dequantize(GgmlType t, const uint8_t* b, int64_t n, float* y) {
  const int64_t blocks = n / 32;
  switch (t) {
    case GgmlType::Q8_0:
      for (int64_t k = 0; k < blocks; ++k, b += 34) {
        const float d = f16_to_f32(load_u16(b));
        for (int j = 0; j < 32; ++j) y[k * 32 + j] = float(int8_t(b[2 + j])) * d;
      }
      break;
    case GgmlType::Q4_0:
      for (int64_t k = 0; k < blocks; ++k, b += 18) {
        const float d = f16_to_f32(load_u16(b));
        for (int j = 0; j < 16; ++j) {
          y[k * 32 + j] = float(int(b[2 + j] & 0x0F) - 8) * d;
          y[k * 32 + j + 16] = float(int(b[2 + j] >> 4) - 8) * d;
        }
      }
      break;
    case GgmlType::Q4_1:
      for (int64_t k = 0; k < blocks; ++k, b += 20) {
        const float d = f16_to_f32(load_u16(b)), m = f16_to_f32(load_u16(b + 2));
        for (int j = 0; j < 16; ++j) {
          y[k * 32 + j] = float(b[4 + j] & 0x0F) * d + m;
          y[k * 32 + j + 16] = float(b[4 + j] >> 4) * d + m;
        }
      }
      break;
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool with_min = t == GgmlType::Q5_1;
      const int64_t bb = with_min ? 24 : 22;
      for (int64_t k = 0; k < blocks; ++k, b += bb) {
        const float d = f16_to_f32(load_u16(b)), m = with_min ? f16_to_f32(load_u16(b + 2)) : 0.f;
        const uint8_t* h = b + (with_min ? 4 : 2);
        const uint32_t qh = uint32_t(h[0]) | (uint32_t(h[1]) << 8) | (uint32_t(h[2]) << 16) | (uint32_t(h[3]) << 24);
        const uint8_t* qs = h + 4;
        for (int j = 0; j < 16; ++j) {
          const int hi0 = int(((qh >> j) << 4) & 0x10), hi1 = int((qh >> (j + 12)) & 0x10);
          const int q0 = int(qs[j] & 0x0F) | hi0, q1 = int(qs[j] >> 4) | hi1;
          if (with_min) {
            y[k * 32 + j] = float(q0) * d + m;
            y[k * 32 + j + 16] = float(q1) * d + m;
          } else {
            y[k * 32 + j] = float(q0 - 16) * d;
            y[k * 32 + j + 16] = float(q1 - 16) * d;
          }
        }
      }
      break;
    }
    case GgmlType::F32: std::memcpy(y, b, size_t(n) * 4); break;
    case GgmlType::F16:
      for (int64_t k = 0; k < n; ++k) y[k] = f16_to_f32(load_u16(b + 2 * k));
      break;
    case GgmlType::BF16:
      for (int64_t k = 0; k < n; ++k) y[k] = bf16_to_f32(load_u16(b + 2 * k));
      break;
  }
}

Tensor GgufFile::to_f32(const GgufTensorInfo& t) const {
  Tensor out = Tensor::empty(t.shape, DType::F32);
  dequantize(t.type, map_->data() + t.offset, t.numel(), out.f32());
  return out;
}

Tensor GgufFile::to_stored(const GgufTensorInfo& t) const {
  if (t.type != GgmlType::F16) return to_f32(t);
  Tensor out = Tensor::empty(t.shape, DType::F16);
  std::memcpy(out.data, map_->data() + t.offset, t.nbytes);
  return out;
}

// ---- quantizers: ggml's reference formulas (ggml-quants.c), in float ----

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t k = 0; k < n / 32; ++k, x += 32, out += 34) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int j = 0; j < 32; ++j) out[2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
  }
}

void quantize_q4_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t k = 0; k < n / 32; ++k, x += 32, out += 18) {
    float amax = 0, max = 0;  // the value of largest magnitude, with its sign
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = uint8_t(std::min(15, int(int8_t(x[j] * id + 8.5f))));
      const uint8_t q1 = uint8_t(std::min(15, int(int8_t(x[j + 16] * id + 8.5f))));
      out[2 + j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

// ---- writer ----

namespace {
GgufValue value_of(GgufValue::Kind kind, uint32_t type) {
  GgufValue v;
  v.kind = kind;
  v.type = type;
  return v;
}
GgufValue u32_value(uint32_t x) {
  GgufValue v = value_of(GgufValue::UInt, U32);
  v.u = x;
  return v;
}
GgufValue f32_value(float x) {
  GgufValue v = value_of(GgufValue::Float, F32T);
  v.f = x;
  return v;
}
GgufValue string_value(const std::string& x) {
  GgufValue v = value_of(GgufValue::String, STRING);
  v.s = x;
  return v;
}
}  // namespace

void GgufWriter::add(const std::string& key, GgufValue value) { kv_.emplace_back(key, std::move(value)); }
void GgufWriter::add_uint32(const std::string& key, uint32_t v) { add(key, u32_value(v)); }
void GgufWriter::add_float32(const std::string& key, float v) { add(key, f32_value(v)); }
void GgufWriter::add_bool(const std::string& key, bool v) {
  GgufValue x = value_of(GgufValue::Bool, BOOL);
  x.b = v;
  add(key, x);
}
void GgufWriter::add_string(const std::string& key, const std::string& v) { add(key, string_value(v)); }
void GgufWriter::add_strings(const std::string& key, const std::vector<std::string>& v) {
  GgufValue x = value_of(GgufValue::Array, ARRAY);
  for (const auto& s : v) x.items.push_back(string_value(s));
  add(key, x);
}
void GgufWriter::add_floats(const std::string& key, const std::vector<float>& v) {
  GgufValue x = value_of(GgufValue::Array, ARRAY);
  for (float f : v) x.items.push_back(f32_value(f));
  add(key, x);
}

void GgufWriter::add_tensor(const std::string& name, const Tensor& values, GgmlType type) {
  Item it;
  it.name = name;
  it.shape = values.shape;
  it.type = type;
  const int64_t n = values.numel();
  const int64_t row = values.shape.empty() ? 1 : values.shape.back();
  if (ggml_block_elements(type) > 1 && row % 32 != 0)
    throw Error("gguf: tensor " + name + ": rows of " + std::to_string(row) + " values cannot be " + ggml_type_name(type) +
                " blocks of 32");
  const Tensor f = values.dtype == DType::F32 ? values : values.to_f32();
  const float* x = f.f32();
  it.bytes.resize(size_t(n / ggml_block_elements(type) * ggml_block_bytes(type)));
  switch (type) {
    case GgmlType::F32: std::memcpy(it.bytes.data(), x, size_t(n) * 4); break;
    case GgmlType::F16:
      for (int64_t k = 0; k < n; ++k) {
        const uint16_t h = f32_to_f16(x[k]);
        std::memcpy(it.bytes.data() + 2 * k, &h, 2);
      }
      break;
    case GgmlType::Q8_0: quantize_q8_0(x, n, it.bytes.data()); break;
    case GgmlType::Q4_0: quantize_q4_0(x, n, it.bytes.data()); break;
    default: throw Error(std::string("gguf: writing ") + ggml_type_name(type) + " is not supported (f32, f16, q8_0, q4_0)");
  }
  tensors_.push_back(std::move(it));
}

namespace {
void put_bytes(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <class T>
void put(std::string& out, T v) {
  put_bytes(out, &v, sizeof v);
}
void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
void put_value(std::string& out, const GgufValue& v) {
  switch (v.kind) {
    case GgufValue::UInt: put<uint32_t>(out, uint32_t(v.u)); break;  // written as U32
    case GgufValue::Int: put<int32_t>(out, int32_t(v.i)); break;
    case GgufValue::Float: put<float>(out, float(v.f)); break;
    case GgufValue::Bool: put<uint8_t>(out, v.b ? 1 : 0); break;
    case GgufValue::String: put_str(out, v.s); break;
    case GgufValue::Array:
      put<uint32_t>(out, v.items.empty() ? STRING : v.items[0].type);
      put<uint64_t>(out, v.items.size());
      for (const auto& x : v.items) put_value(out, x);
      break;
  }
}
}  // namespace

void GgufWriter::write(const std::string& path) const {
  std::string out = "GGUF";
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, kv_.size());
  for (const auto& [key, v] : kv_) {
    put_str(out, key);
    put<uint32_t>(out, v.type);
    put_value(out, v);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_str(out, t.name);
    put<uint32_t>(out, uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<uint64_t>(out, uint64_t(*it));
    put<uint32_t>(out, uint32_t(t.type));
    put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset += (t.bytes.size() + 31) / 32 * 32;
  }
  out.resize((out.size() + 31) / 32 * 32, '\0');
  for (const auto& t : tensors_) {
    out += std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
    out.resize((out.size() + 31) / 32 * 32, '\0');
  }
  write_file_atomic(path, out);
}

}  // namespace clip
