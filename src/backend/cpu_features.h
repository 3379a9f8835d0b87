// What the CPU can run, and which kernel paths clip uses on it: chosen at run time, never at
// build time (the default build is portable, and the machine that runs a binary is not the
// one that built it).
//
// CLIP_MAX_ISA caps the instruction set for our own kernels and for oneDNN alike, so the suite
// can run the kernel paths of an older CPU on a newer one:
//   sse41        baseline kernels (scalar / SSE), oneDNN's SSE4.1 kernels
//   avx2         our AVX2+FMA kernels, oneDNN's AVX2 kernels
//   avx512       oneDNN's AVX-512 kernels (AVX512_CORE)
//   avx512_vnni  ... with VNNI;  avx512_bf16: ... with AVX512-BF16;  amx: ... with AMX tiles
//   native       (or unset) everything the CPU has
// A cap above what the CPU has changes nothing. oneDNN reads the cap once, before its first
// product, so the variable must be set before the process starts computing.
#pragma once

#include <string>

namespace clip {

enum class Isa { SSE41 = 0, AVX2 = 1, AVX512 = 2, AVX512_VNNI = 3, AVX512_BF16 = 4, AMX = 5 };

struct CpuFeatures {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ...
  std::string brand;   // e.g. "AMD EPYC 9R14"
  bool sse41 = false, avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
};

// Detected once (cpuid, and xgetbv for what the operating system enables).
const CpuFeatures& cpu_features();

// The best level the CPU supports, and the level in use: that capped by CLIP_MAX_ISA. Throws
// clip::Error naming the variable when its value is not one of the names above.
Isa cpu_best_isa();
Isa cpu_isa();
const char* isa_name(Isa isa);

// Our AVX2+FMA kernels (exp, erf, GELU, softmax, AdamW) are used: the CPU has AVX2 and FMA and
// the cap allows them.
bool cpu_use_avx2();

// Tells oneDNN the cap (once, before its first use: every oneDNN entry point of the core calls
// this first).
void apply_isa_cap_to_onednn();
// The ISA oneDNN dispatches to under the cap, e.g. "avx512_core".
std::string onednn_isa_name();

// One line per fact, for `clip info --system`: the CPU, its features, the cap, the paths used.
std::string cpu_report();

}  // namespace clip
