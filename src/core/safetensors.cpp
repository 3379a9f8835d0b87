#include "core/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <unistd.h>

#include "core/error.h"
#include "core/io.h"

namespace clip {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host would need byte swaps");

namespace {

using json = nlohmann::json;

// The header nests three levels (object -> tensor object -> shape array); anything much
// deeper is hostile, and refusing it early keeps the parser's recursion bounded.
constexpr int kMaxJsonDepth = 8;
// More dimensions than any real tensor has; bounds the size of the shape shown in errors.
constexpr size_t kMaxRank = 32;

std::string quote_name(std::string_view s) {
  // Names come from the file: show them escaped and bounded so an error stays one line.
  std::string out = "'";
  size_t n = 0;
  for (unsigned char c : s) {
    if (++n > 200) { out += "..."; break; }
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "'";
}

// A JSON value for an error message, cut short (values come from the file).
std::string short_dump(const json& v) {
  std::string s = v.dump();
  if (s.size() > 120) s = s.substr(0, 120) + "...";
  return s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer that fits in int64 (shape dims and offsets).
bool as_u63(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return out <= uint64_t(std::numeric_limits<int64_t>::max());
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    out = uint64_t(i);
    return true;
  }
  return false;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at parse time not to overflow
  return n;
}

const SafetensorsTensorInfo* SafetensorsHeader::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

bool parse_dtype_name(std::string_view name, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto& [s, t] : table)
    if (name == s) { out = t; return true; }
  return false;
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& label) {
  const std::string where = label + ": ";
  if (size == 0)
    throw Error(where + "file is empty (0 bytes); a safetensors file starts with an 8-byte header length");
  if (size < 8)
    throw Error(where + "file is " + std::to_string(size) +
                " bytes, too short for the 8-byte safetensors header length (truncated?)");
  SafetensorsHeader h;
  h.header_size = read_u64_le(data);
  if (h.header_size > kSafetensorsMaxHeaderSize)
    throw Error(where + "safetensors header length " + std::to_string(h.header_size) +
                " exceeds the limit of " + std::to_string(kSafetensorsMaxHeaderSize) +
                " bytes (not a safetensors file, or corrupt)");
  if (h.header_size > size - 8)
    throw Error(where + "safetensors header length " + std::to_string(h.header_size) +
                " runs past the end of the file (" + std::to_string(size) + " bytes; truncated?)");
  if (h.header_size < 2)
    throw Error(where + "safetensors header length " + std::to_string(h.header_size) +
                " is too small for a JSON object");
  h.data_offset = 8 + h.header_size;
  h.data_size = size - h.data_offset;

  const char* text = reinterpret_cast<const char*>(data + 8);
  if (text[0] != '{')
    throw Error(where + "safetensors header does not start with '{' (not a safetensors file?)");

  // Parse with a callback that bounds nesting and rejects duplicate tensor names (a plain
  // parse would silently keep the last one).
  std::set<std::string> seen_names;
  json root;
  try {
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
          depth >= kMaxJsonDepth)
        throw Error(where + "safetensors header nests deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels");
      if (event == json::parse_event_t::key && depth == 1) {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!seen_names.insert(key).second)
          throw Error(where + "safetensors header lists " + quote_name(key) + " twice");
      }
      return true;
    };
    root = json::parse(text, text + h.header_size, cb);
  } catch (const json::exception& e) {
    // The parser quotes what it last read, which a hostile file can make huge: keep it short.
    std::string what = e.what();
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    throw Error(where + "safetensors header is not valid JSON: " + what);
  }
  if (!root.is_object()) throw Error(where + "safetensors header is not a JSON object");

  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(where + "safetensors __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error(where + "safetensors __metadata__ value for " + quote_name(m.key()) + " is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + "tensor " + quote_name(name) + ": ";
    if (name.empty()) throw Error(where + "safetensors header has a tensor with an empty name");
    if (!v.is_object()) throw Error(tw + "header entry is not a JSON object");
    auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    if (dt == v.end()) throw Error(tw + "no \"dtype\"");
    if (sh == v.end()) throw Error(tw + "no \"shape\"");
    if (off == v.end()) throw Error(tw + "no \"data_offsets\"");

    SafetensorsTensorInfo t;
    t.name = name;
    if (!dt->is_string()) throw Error(tw + "\"dtype\" is not a string");
    const auto& dts = dt->get_ref<const std::string&>();
    if (!parse_dtype_name(dts, t.dtype))
      throw Error(tw + "unsupported dtype " + quote_name(dts) +
                  " (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");

    if (!sh->is_array()) throw Error(tw + "\"shape\" is not an array");
    if (sh->size() > kMaxRank)
      throw Error(tw + "shape has " + std::to_string(sh->size()) + " dimensions (at most " +
                  std::to_string(kMaxRank) + " are accepted)");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      uint64_t dim;
      if (!as_u63(d, dim)) throw Error(tw + "shape " + short_dump(*sh) + " has an entry that is not a non-negative integer");
      t.shape.push_back(int64_t(dim));
      if (__builtin_mul_overflow(numel, dim, &numel) || numel > uint64_t(std::numeric_limits<int64_t>::max()))
        throw Error(tw + "shape " + short_dump(*sh) + " has more elements than can be addressed");
    }
    uint64_t need;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &need))
      throw Error(tw + "shape " + short_dump(*sh) + " of " + dts + " needs more bytes than can be addressed");

    if (!off->is_array() || off->size() != 2)
      throw Error(tw + "\"data_offsets\" is not a [begin, end] pair");
    if (!as_u63((*off)[0], t.begin) || !as_u63((*off)[1], t.end))
      throw Error(tw + "data_offsets " + short_dump(*off) + " are not non-negative integers");
    if (t.begin > t.end) throw Error(tw + "data_offsets " + short_dump(*off) + " end before they begin");
    if (t.end > h.data_size)
      throw Error(tw + "data_offsets " + short_dump(*off) + " run past the end of the data (" +
                  std::to_string(h.data_size) + " bytes after the header; truncated file?)");
    if (t.end - t.begin != need)
      throw Error(tw + "data_offsets " + short_dump(*off) + " span " + std::to_string(t.end - t.begin) +
                  " bytes but shape " + shape_string(t.shape) + " of " + dts + " needs " +
                  std::to_string(need) + " bytes");
    h.tensors.push_back(std::move(t));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Empty ranges hold no bytes and overlap nothing; every other range must start at or after
  // the furthest end seen so far.
  const SafetensorsTensorInfo* furthest = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin == t.end) continue;
    if (furthest && t.begin < furthest->end)
      throw Error(where + "tensors " + quote_name(furthest->name) + " [" + std::to_string(furthest->begin) + ", " +
                  std::to_string(furthest->end) + ") and " + quote_name(t.name) + " [" + std::to_string(t.begin) +
                  ", " + std::to_string(t.end) + ") overlap in the data section");
    if (!furthest || t.end > furthest->end) furthest = &t;
  }
  return h;
}

// ---- reading ----

SafetensorsFile SafetensorsFile::from_mapping(std::shared_ptr<MappedFile> mapping) {
  SafetensorsFile f;
  f.map_ = std::move(mapping);
  f.header_ = parse_safetensors(f.map_->data(), f.map_->size(), f.map_->path());
  return f;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.map_ = MappedFile::open(path);
  const uint8_t* d = f.map_->data();
  const size_t n = f.map_->size();
  // PyTorch checkpoints are zip archives (torch.save since 1.6) or raw pickles: say what they
  // are instead of reporting a nonsense header length. Unpickling can run code, so they are
  // never loaded; they must be converted.
  // (A real header length could start with the same bytes, but then byte 8 opens the JSON.)
  const bool json_follows = n > 8 && d[8] == '{';
  if (!json_follows &&
      ((n >= 4 && std::memcmp(d, "PK\x03\x04", 4) == 0) || (n >= 2 && d[0] == 0x80 && d[1] >= 2 && d[1] <= 5)))
    throw Error(path + ": this is a PyTorch checkpoint, not safetensors: name it .pt (or .bin) to have it read "
                       "by the restricted reader, which runs nothing in it (see docs/weights.md)");
  f.header_ = parse_safetensors(d, n, path);
  return f;
}

const uint8_t* SafetensorsFile::bytes(const SafetensorsTensorInfo& t) const {
  return map_->data() + header_.data_offset + t.begin;
}

void SafetensorsFile::copy_f32(const SafetensorsTensorInfo& t, float* dst) const {
  const uint8_t* src = bytes(t);
  const size_t n = size_t(t.numel());
  // memcpy element by element: the source may be unaligned, which typed loads must not be.
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = float(d);
      }
      break;
    default:
      throw Error(path() + ": tensor " + quote_name(t.name) + " has dtype " + dtype_name(t.dtype) +
                  ", expected a floating-point dtype (F32, F16, BF16, F64)");
  }
}

void SafetensorsFile::release_pages(const SafetensorsTensorInfo& t) const {
  map_->release_pages(bytes(t), t.nbytes());
}

Tensor SafetensorsFile::to_f32(const SafetensorsTensorInfo& t) const {
  const uint8_t* src = bytes(t);
  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
    // Zero copy: the view shares ownership of the mapping. The map is read-only; consumers
    // treat weights as const.
    return Tensor::view(const_cast<uint8_t*>(src), t.shape, DType::F32, map_);
  }
  Tensor out = Tensor::empty(t.shape, DType::F32);
  copy_f32(t, out.f32());
  return out;
}

// ---- writing ----

namespace {
// The file image of `tensors`; copied(i, at, n) is called once tensors[i]'s n bytes are in it at `at`.
std::vector<uint8_t> serialize_image(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                                     const std::function<void(size_t, uint8_t*, size_t)>& copied) {
  std::vector<const std::pair<std::string, Tensor>*> order;
  std::set<std::string_view> names;
  for (const auto& nt : tensors) {
    if (nt.first.empty()) throw Error("safetensors writer: a tensor has an empty name");
    if (nt.first == "__metadata__") throw Error("safetensors writer: '__metadata__' is not a tensor name");
    if (!names.insert(nt.first).second) throw Error("safetensors writer: tensor " + quote_name(nt.first) + " given twice");
    if (!nt.second.defined()) throw Error("safetensors writer: tensor " + quote_name(nt.first) + " has no data");
    order.push_back(&nt);
  }
  // The reference writer's order: by its dtype enum, descending, then by name. Element sizes
  // never grow along that order, so every tensor stays aligned to its element size.
  auto rank = [](DType t) {
    switch (t) {
      case DType::BOOL: return 0;
      case DType::U8: return 1;
      case DType::I8: return 2;
      case DType::I16: return 3;
      case DType::F16: return 4;
      case DType::BF16: return 5;
      case DType::I32: return 6;
      case DType::F32: return 7;
      case DType::F64: return 8;
      case DType::I64: return 9;
    }
    return 0;
  };
  std::stable_sort(order.begin(), order.end(), [&](const auto* a, const auto* b) {
    int ra = rank(a->second.dtype), rb = rank(b->second.dtype);
    return ra != rb ? ra > rb : a->first < b->first;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"];
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  uint64_t offset = 0;
  for (const auto* nt : order) {
    const Tensor& t = nt->second;
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
    header[nt->first] = std::move(e);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("safetensors writer: cannot encode the header (names must be UTF-8): ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad with spaces so the data starts 8-aligned

  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto* nt : order) {
    const auto* p = static_cast<const uint8_t*>(nt->second.data);
    const size_t at = out.size(), n = nt->second.nbytes();
    out.insert(out.end(), p, p + n);  // (reserved: out never moves)
    if (copied) copied(size_t(nt - tensors.data()), out.data() + at, n);
  }
  return out;
}
}  // namespace

std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  return serialize_image(tensors, metadata, {});
}

std::vector<uint8_t> serialize_safetensors(NamedTensors&& tensors, const std::map<std::string, std::string>& metadata,
                                           const std::set<std::string>& given_back) {
  // Each tensor's storage is let go as soon as it is copied: the image grows as they shrink.
  return serialize_image(tensors, metadata, [&](size_t i, uint8_t* at, size_t n) {
    if (given_back.count(tensors[i].first)) discard_whole_pages(at, n);
    tensors[i].second = Tensor();
  });
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<uint8_t> image;
  try {
    image = serialize_safetensors(tensors, metadata);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  write_file_atomic(path, image.data(), image.size());
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  NamedTensors v(tensors.begin(), tensors.end());
  write_safetensors(path, v, metadata);
}

}  // namespace clip
