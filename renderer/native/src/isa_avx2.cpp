// The native CPU kernels compiled for AVX2 + FMA (8 lanes, 6 samples x 16 outputs per MLP block).
// Selected at run time by kilocpu.cpp when the CPU has the instructions (kc_table_avx2).
#include "kilocpu.h"
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,popcnt"))), apply_to = function)
#endif
#define KC_ISA_AVX2 1
#include "render_impl.h"

extern "C" const kc::KernelTable kc_table_avx2 = {
    Simd::kIsa, rays_for_pixels, clip_to_box, write_pixels, render_frame, evaluate_points, march_pass, composite_pass,
    unpack_one_network,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
extern "C" const kc::KernelTable kc_table_avx2 = {-1, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
#endif
