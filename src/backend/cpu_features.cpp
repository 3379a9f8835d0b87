#include "backend/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CLIP_X86 1
#endif

#if defined(CLIP_HAVE_ONEDNN)
#include <dnnl.h>
#endif

namespace clip {
namespace {

#if CLIP_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if CLIP_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;
  __get_cpuid(1, &a, &b, &c, &d);
  f.sse41 = c & bit_SSE4_1;
  const bool osxsave = c & bit_OSXSAVE, avx = c & bit_AVX;
  f.fma = c & bit_FMA;
  // What the operating system saves on a context switch: YMM (bits 1-2), ZMM (5-7).
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
  f.fma = f.fma && avx && os_ymm;
  if (max_leaf >= 7) {
    __get_cpuid_count(7, 0, &a, &b, &c, &d);
    f.avx2 = (b & bit_AVX2) && avx && os_ymm;
    f.avx512f = (b & bit_AVX512F) && os_zmm;
    f.avx512dq = (b & bit_AVX512DQ) && os_zmm;
    f.avx512bw = (b & bit_AVX512BW) && os_zmm;
    f.avx512vl = (b & bit_AVX512VL) && os_zmm;
    f.avx512_vnni = (c & (1u << 11)) && os_zmm;
    f.avx512_fp16 = (d & (1u << 23)) && os_zmm;
    f.amx_bf16 = (d & (1u << 22)) && os_amx;
    f.amx_tile = (d & (1u << 24)) && os_amx;
    f.amx_int8 = (d & (1u << 25)) && os_amx;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = (a1 & (1u << 5)) && os_zmm;
  }
  unsigned ext = __get_cpuid_max(0x80000000u, nullptr);
  if (ext >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    std::string s = brand;
    const size_t first = s.find_first_not_of(' '), last = s.find_last_not_of(' ');
    f.brand = first == std::string::npos ? "" : s.substr(first, last - first + 1);
  }
#endif
  return f;
}

struct IsaName {
  Isa isa;
  const char* name;
};
constexpr IsaName kIsaNames[] = {{Isa::SSE41, "sse41"},           {Isa::AVX2, "avx2"},
                                 {Isa::AVX512, "avx512"},         {Isa::AVX512_VNNI, "avx512_vnni"},
                                 {Isa::AVX512_BF16, "avx512_bf16"}, {Isa::AMX, "amx"}};

// The cap from CLIP_MAX_ISA; has_cap false when unset or "native"; error set for a bad value.
struct Cap {
  bool has_cap = false;
  Isa isa = Isa::AMX;
  std::string error;
};
Cap read_cap() {
  const char* v = std::getenv("CLIP_MAX_ISA");
  if (!v || !*v || std::strcmp(v, "native") == 0) return {};
  for (const auto& n : kIsaNames)
    if (std::strcmp(v, n.name) == 0) return {true, n.isa, ""};
  return {false, Isa::AMX,
          std::string("CLIP_MAX_ISA=") + v +
              ": unknown instruction set; use sse41, avx2, avx512, avx512_vnni, avx512_bf16, amx "
              "or native"};
}
const Cap& cap() {
  static const Cap c = read_cap();
  return c;
}
Isa capped(Isa best) { return cap().has_cap && cap().isa < best ? cap().isa : best; }

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* isa_name(Isa isa) {
  for (const auto& n : kIsaNames)
    if (n.isa == isa) return n.name;
  return "?";
}

Isa cpu_best_isa() {
  const CpuFeatures& f = cpu_features();
  if (!(f.avx2 && f.fma)) return Isa::SSE41;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) return Isa::AVX2;
  if (!f.avx512_vnni) return Isa::AVX512;
  if (!f.avx512_bf16) return Isa::AVX512_VNNI;
  if (!(f.amx_tile && f.amx_bf16 && f.amx_int8)) return Isa::AVX512_BF16;
  return Isa::AMX;
}

Isa cpu_isa() {
  if (!cap().error.empty()) throw Error(cap().error);
  return capped(cpu_best_isa());
}

bool cpu_use_avx2() {
  // Never throws (kernels call it inside parallel regions): a bad cap is reported by
  // cpu_isa(), which the command line and every oneDNN entry point call first.
  static const bool use = capped(cpu_best_isa()) >= Isa::AVX2;  // AVX2 level = AVX2 + FMA
  return use;
}

void apply_isa_cap_to_onednn() {
#if defined(CLIP_HAVE_ONEDNN)
  // Called before every product: after the first call this is call_once's fast check only.
  // A bad CLIP_MAX_ISA throws out of the lambda, which leaves the flag unset (thrown again).
  static std::once_flag once;
  std::call_once(once, [] {
    const Isa isa_in_use = cpu_isa();
    if (!cap().has_cap) return;  // unset or "native": oneDNN's own default
    dnnl_cpu_isa_t isa = dnnl_cpu_isa_all;
    switch (isa_in_use) {
      case Isa::SSE41: isa = dnnl_cpu_isa_sse41; break;
      case Isa::AVX2: isa = dnnl_cpu_isa_avx2; break;
      case Isa::AVX512: isa = dnnl_cpu_isa_avx512_core; break;
      case Isa::AVX512_VNNI: isa = dnnl_cpu_isa_avx512_core_vnni; break;
      case Isa::AVX512_BF16: isa = dnnl_cpu_isa_avx512_core_bf16; break;
      case Isa::AMX: isa = dnnl_cpu_isa_avx512_core_amx; break;
    }
    if (dnnl_set_max_cpu_isa(isa) != dnnl_success)
      throw Error(std::string("CLIP_MAX_ISA=") + isa_name(cap().isa) +
                  ": oneDNN would not take the cap (it must be set before the first product)");
  });
#endif
}

std::string onednn_isa_name() {
#if defined(CLIP_HAVE_ONEDNN)
  apply_isa_cap_to_onednn();
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
#else
  return "none (OpenBLAS build)";
#endif
}

std::string cpu_report() {
  const CpuFeatures& f = cpu_features();
  static constexpr std::pair<bool CpuFeatures::*, const char*> kNames[] = {
      {&CpuFeatures::sse41, "sse4.1"},         {&CpuFeatures::avx2, "avx2"},
      {&CpuFeatures::fma, "fma"},              {&CpuFeatures::avx512f, "avx512f"},
      {&CpuFeatures::avx512bw, "avx512bw"},    {&CpuFeatures::avx512vl, "avx512vl"},
      {&CpuFeatures::avx512dq, "avx512dq"},    {&CpuFeatures::avx512_vnni, "avx512_vnni"},
      {&CpuFeatures::avx512_bf16, "avx512_bf16"}, {&CpuFeatures::avx512_fp16, "avx512_fp16"},
      {&CpuFeatures::amx_tile, "amx_tile"},    {&CpuFeatures::amx_bf16, "amx_bf16"},
      {&CpuFeatures::amx_int8, "amx_int8"}};
  std::string feats;
  for (const auto& [member, name] : kNames)
    if (f.*member) feats += (feats.empty() ? "" : " ") + std::string(name);
  const char* cap = std::getenv("CLIP_MAX_ISA");
  std::string r;
  r += "cpu:              " + (f.brand.empty() ? std::string("unknown") : f.brand) + " (" + f.vendor + ")\n";
  r += "cpu features:     " + (feats.empty() ? std::string("none detected") : feats) + "\n";
  r += "best isa:         " + std::string(isa_name(cpu_best_isa())) + "\n";
  r += "CLIP_MAX_ISA:     " + std::string(cap && *cap ? cap : "(unset: native)") + "\n";
  r += "isa in use:       " + std::string(isa_name(cpu_isa())) + "\n";
  r += "own kernels:      " + std::string(cpu_use_avx2() ? "avx2+fma" : "baseline (scalar/SSE)") + "\n";
  r += "oneDNN kernels:   " + onednn_isa_name() + "\n";
  return r;
}

}  // namespace clip
