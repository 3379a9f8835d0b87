// Code between CLIP_AVX2_BEGIN and CLIP_AVX2_END is compiled for AVX2 + FMA whatever the
// build's baseline (-march=x86-64-v2 by default), and must only run where cpu_use_avx2()
// (backend/cpu_features.h) says so: the caller checks and falls back to the baseline code.
// Include every header before CLIP_AVX2_BEGIN: a function declared inside the region gets
// the AVX2 target, and a header's inline function compiled that way could be picked by the
// linker for callers that run on any CPU.
#pragma once

#include <immintrin.h>

#if defined(__clang__)
#define CLIP_AVX2_BEGIN \
  _Pragma("clang attribute push (__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define CLIP_AVX2_END _Pragma("clang attribute pop")
#else
#define CLIP_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define CLIP_AVX2_END _Pragma("GCC pop_options")
#endif
