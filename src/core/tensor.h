#pragma once
// A small tensor: shape, dtype and contiguous storage that is either owned (a shared buffer)
// or a view into memory someone else keeps alive (an mmap'd checkpoint, an arena).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace clip {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "F16", "BF16", ...

// Half-precision conversions (IEEE binary16 and bfloat16), exact for every value.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);  // round to nearest even

struct Tensor {
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // keeps the storage alive; empty for non-owning views

  Tensor() = default;
  static Tensor empty(std::vector<int64_t> shape, DType dtype = DType::F32);
  static Tensor zeros(std::vector<int64_t> shape, DType dtype = DType::F32);
  static Tensor view(void* data, std::vector<int64_t> shape, DType dtype, std::shared_ptr<void> owner = {});

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int dim() const { return int(shape.size()); }
  int64_t size(int d) const { return shape.at(d < 0 ? d + dim() : d); }
  bool defined() const { return data != nullptr || numel() == 0; }

  float* f32() { check_dtype(DType::F32); return static_cast<float*>(data); }
  const float* f32() const { check_dtype(DType::F32); return static_cast<const float*>(data); }
  template <class T> T* ptr() { return static_cast<T*>(data); }
  template <class T> const T* ptr() const { return static_cast<const T*>(data); }

  // A copy converted to f32 (f16/bf16/f64 widened or narrowed); f32 input is copied.
  Tensor to_f32() const;
  std::string shape_str() const;  // "[3, 224, 224]"
  void check_dtype(DType t) const;
};

}  // namespace clip
