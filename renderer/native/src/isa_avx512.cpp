// The native CPU kernels compiled for AVX-512 (16 lanes, 8 samples x 32 outputs per MLP block).
// Selected at run time by kilocpu.cpp when the CPU has the instructions (kc_table_avx512).
#include "kilocpu.h"
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_ps(), which -Wuninitialized flags.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,bmi,bmi2,popcnt")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,bmi,bmi2,popcnt"))), apply_to = function)
#endif
#define KC_ISA_AVX512 1
#include "render_impl.h"

extern "C" const kc::KernelTable kc_table_avx512 = {
    Simd::kIsa, rays_for_pixels, clip_to_box, write_pixels, render_frame, evaluate_points, march_pass, composite_pass,
    unpack_one_network,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
extern "C" const kc::KernelTable kc_table_avx512 = {-1, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
#endif
