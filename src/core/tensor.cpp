#include "core/tensor.h"

#include <cstdlib>
#include <sstream>

namespace clip {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
      u = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t absu = u & 0x7fffffff;
  if (absu >= 0x7f800000) return uint16_t(sign | 0x7c00 | (absu > 0x7f800000 ? 0x200 : 0));
  if (absu >= 0x477ff000) return uint16_t(sign | 0x7c00);  // overflow to inf
  if (absu < 0x38800000) {  // subnormal or zero in f16
    if (absu < 0x33000000) return uint16_t(sign);
    uint32_t mant = (absu & 0x7fffff) | 0x800000;
    int shift = 126 - int(absu >> 23);  // 14 + (113 - e)
    uint32_t r = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = absu - 0x38000000;  // rebias exponent
  uint32_t rem = r & 0x1fff;
  r >>= 13;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return uint16_t(sign | r);
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  size_t bytes = t.nbytes();
  // 64-byte alignment suits AVX-512 loads and the BLAS.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!p) throw Error("out of memory allocating tensor " + t.shape_str());
  t.owner = std::shared_ptr<void>(p, std::free);
  t.data = p;
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.data, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, std::vector<int64_t> shape, DType dtype, std::shared_ptr<void> owner) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  t.data = data;
  t.owner = std::move(owner);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Tensor Tensor::to_f32() const {
  Tensor out = empty(shape, DType::F32);
  float* o = out.f32();
  int64_t n = numel();
  switch (dtype) {
    case DType::F32: std::memcpy(o, data, nbytes()); break;
    case DType::F16: { auto* s = ptr<uint16_t>(); for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(s[i]); break; }
    case DType::BF16: { auto* s = ptr<uint16_t>(); for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(s[i]); break; }
    case DType::F64: { auto* s = ptr<double>(); for (int64_t i = 0; i < n; ++i) o[i] = float(s[i]); break; }
    default: throw Error(std::string("cannot convert a ") + dtype_name(dtype) + " tensor to F32");
  }
  return out;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

void Tensor::check_dtype(DType t) const {
  if (dtype != t)
    throw Error(std::string("tensor has dtype ") + dtype_name(dtype) + ", expected " + dtype_name(t));
}

}  // namespace clip
