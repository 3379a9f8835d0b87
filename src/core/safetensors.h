#pragma once
// The safetensors format (https://github.com/huggingface/safetensors):
//   [8 bytes: N, u64 little-endian][N bytes: JSON header][data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" string->string object.
//
// Reading maps the file (no copy) and validates the whole header before anything is used:
// length bounds, JSON, dtypes, shapes x dtype size == byte range, ranges inside the data
// section and not overlapping. Every problem is a clip::Error naming the file, the tensor
// and what is wrong, so hostile input never reaches the encoders.
//
// Writing follows the reference writer (byte for byte): tensors ordered by dtype (wide first) then name,
// so every tensor is aligned to its element size when the data section is; the header is
// padded with spaces to a multiple of 8 bytes; the file is written atomically.
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/io.h"
#include "core/tensor.h"

namespace clip {

// The largest header accepted (same bound as the reference implementation: 100 MB).
inline constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets within the data section, end exclusive
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<SafetensorsTensorInfo> tensors;  // sorted by data offset
  std::map<std::string, std::string> metadata;
  uint64_t header_size = 0;  // N, the JSON length
  uint64_t data_offset = 0;  // 8 + N: where the data section starts in the file
  uint64_t data_size = 0;    // bytes after the header
  const SafetensorsTensorInfo* find(std::string_view name) const;  // nullptr if absent
};

// Parses and validates a whole safetensors image held in memory (the file's bytes).
// `label` (usually the path) starts every error message.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& label);

// Parses a dtype spelling ("F32", "BF16", ...); returns false for anything else.
bool parse_dtype_name(std::string_view name, DType& out);

// A validated, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  // Safetensors bytes already in memory (MappedFile::from_bytes).
  static SafetensorsFile from_mapping(std::shared_ptr<MappedFile> mapping);

  const std::string& path() const { return map_->path(); }
  size_t file_size() const { return map_->size(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const SafetensorsTensorInfo* find(std::string_view name) const { return header_.find(name); }
  const std::shared_ptr<MappedFile>& mapping() const { return map_; }

  // The tensor's bytes inside the mapping (may be unaligned in files from other writers).
  const uint8_t* bytes(const SafetensorsTensorInfo& t) const;
  // The tensor as F32: a zero-copy view into the mapping (kept alive by the view) when it is
  // stored as F32 and 4-byte aligned; otherwise an owned converted copy (F16, BF16, F64).
  // Throws for integer/bool dtypes.
  Tensor to_f32(const SafetensorsTensorInfo& t) const;
  // Converts the tensor to F32 into `dst` (numel floats), whatever its alignment.
  void copy_f32(const SafetensorsTensorInfo& t, float* dst) const;
  // Tells the kernel the tensor's pages are no longer needed (after they were converted into a
  // copy), so they leave the resident set; reading them again just faults them back in.
  void release_pages(const SafetensorsTensorInfo& t) const;

 private:
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
};

// Tensors to write: name -> tensor of any dtype (contiguous).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The complete file image (header + data), as the writer lays it out.
std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
// The same, releasing each tensor's storage once it is copied (a file image made from tensors
// built for it, e.g. a GGUF file's dequantized ones: the peak is about one image, not two).
// The pages of the tensors named in `given_back` are given back once copied (core/io.h
// discard_whole_pages): they read as zeros in the image (values its reader never reads).
std::vector<uint8_t> serialize_safetensors(NamedTensors&& tensors,
                                           const std::map<std::string, std::string>& metadata = {},
                                           const std::set<std::string>& given_back = {});
// Writes `tensors` to `path` atomically (the old file survives any failure).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace clip
