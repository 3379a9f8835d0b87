#pragma once
// GGUF (llama.cpp's / ggml's model file, version 2 and 3): read and write. Used for clip.cpp's
// CLIP files (model/gguf_clip.h maps their names and keys onto ours). Reading validates every
// offset, count and size against the file and names the file in every error; quantized
// tensors (q8_0, q4_0, q4_1, q5_0, q5_1) are dequantized by the block formats ggml defines.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/io.h"
#include "core/tensor.h"

namespace clip {

enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, BF16 = 30 };
const char* ggml_type_name(GgmlType t);         // "f32", "q4_0", ...
bool parse_ggml_type(const std::string& name, GgmlType& out);
int64_t ggml_block_elements(GgmlType t);        // 1 for f32/f16/bf16, 32 for the quantized ones
int64_t ggml_block_bytes(GgmlType t);

// A metadata value: a scalar, a string, or an array of them.
struct GgufValue {
  enum Kind { UInt, Int, Float, Bool, String, Array } kind = UInt;
  uint32_t type = 0;  // the GGUF value type it was stored as
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<GgufValue> items;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch/numpy order (ggml's ne reversed)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  static GgufFile open(const std::string& path);
  static GgufFile parse(std::shared_ptr<MappedFile> map);

  const std::string& path() const { return map_->path(); }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufValue* find(const std::string& key) const;
  // Typed metadata; throw clip::Error naming the file and key when absent or of another kind.
  uint64_t get_uint(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  // The tensor's values as F32 (f16/bf16 widened, quantized blocks dequantized); F16 tensors
  // can also be had as stored (to_stored: F32 or F16 kept, the rest dequantized to F32).
  Tensor to_f32(const GgufTensorInfo& t) const;
  Tensor to_stored(const GgufTensorInfo& t) const;
  // The tensor's bytes as stored (t.nbytes of them; validated against the file when opened).
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return map_->data() + t.offset; }

 private:
  std::shared_ptr<MappedFile> map_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

// Writing: metadata in insertion order, then tensors (quantized from F32 where `type` asks).
class GgufWriter {
 public:
  void add(const std::string& key, GgufValue value);
  void add_uint32(const std::string& key, uint32_t v);
  void add_float32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_floats(const std::string& key, const std::vector<float>& v);
  // `values` is F32 (or F16 when type is F16 and the values are already rounded); the row
  // length must be a multiple of 32 for the quantized types.
  void add_tensor(const std::string& name, const Tensor& values, GgmlType type);
  // Written to `path` atomically; alignment 32.
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> kv_;
  struct Item {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    std::vector<uint8_t> bytes;
  };
  std::vector<Item> tensors_;
};

// ggml's reference quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref), for `n` values
// (a multiple of 32) into `out` (n / 32 blocks).
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void quantize_q4_0(const float* x, int64_t n, uint8_t* out);
void dequantize(GgmlType t, const uint8_t* blocks, int64_t n, float* out);

}  // namespace clip
