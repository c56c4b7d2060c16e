// SIMD traits: one struct per instruction set, with the same members, so that the kernels (frame_impl.h)
// are written once. Each translation unit defines exactly one KC_ISA_* and includes this header after
// its target pragma; everything here has internal linkage.
#pragma once

#if defined(KC_ISA_AVX2) || defined(KC_ISA_AVX512)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

namespace {

// IEEE half -> float32, exactly (every half is a float32): zero, subnormals, normals, inf and NaN.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float f;
    if (e == 0) f = ldexpf((float)m, -24);
    else if (e == 31) f = m ? NAN : INFINITY;
    else f = ldexpf((float)(m | 0x400u), (int)e - 25);
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits |= sign;
    memcpy(&f, &bits, 4);
    return f;
}

#if defined(KC_ISA_AVX512)
struct Simd {
    static constexpr int kIsa = 2;
    static constexpr int W = 16;        // float lanes
    static constexpr int kSamples = 8;  // samples per MLP block (8 x 32 outputs: 16 accumulators)
    typedef __m512 V;
    typedef __m512i VI;
    typedef __mmask16 M;
    static inline V zero() { return _mm512_setzero_ps(); }
    static inline V set1(float v) { return _mm512_set1_ps(v); }
    static inline V load(const float* p) { return _mm512_loadu_ps(p); }
    static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
    static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static inline V div(V a, V b) { return _mm512_div_ps(a, b); }
    static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static inline V max(V a, V b) { return _mm512_max_ps(a, b); }
    static inline V min(V a, V b) { return _mm512_min_ps(a, b); }
    static inline M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
    static inline M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
    static inline V select(M m, V if_true, V if_false) { return _mm512_mask_blend_ps(m, if_false, if_true); }
    static inline V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static inline V floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static inline V permute(V a, VI idx) { return _mm512_permutexvar_ps(idx, a); }
    static inline VI iload(const int32_t* p) { return _mm512_loadu_si512(p); }
    static inline void istore(int32_t* p, VI a) { _mm512_storeu_si512(p, a); }
    static inline V ceil(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC); }
    static inline M ge(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
    static inline M eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static inline M mand(M a, M b) { return (M)(a & b); }
    static inline int mbits(M m) { return (int)m; }
    static inline VI gather_u8(const uint8_t* base, VI idx) {  // 3 readable bytes past the last index
        return _mm512_and_si512(_mm512_i32gather_epi32(idx, base, 1), _mm512_set1_epi32(0xff));
    }
    static inline VI trunc_int(V a) { return _mm512_cvttps_epi32(a); }
    static inline VI imul(VI a, VI b) { return _mm512_mullo_epi32(a, b); }
    static inline VI to_int(V a) { return _mm512_cvtps_epi32(a); }  // a already integral
    static inline V to_float(VI a) { return _mm512_cvtepi32_ps(a); }
    static inline VI iset1(int v) { return _mm512_set1_epi32(v); }
    static inline VI iadd(VI a, VI b) { return _mm512_add_epi32(a, b); }
    static inline VI isub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
    static inline VI iand(VI a, VI b) { return _mm512_and_si512(a, b); }
    static inline VI ior(VI a, VI b) { return _mm512_or_si512(a, b); }
    static inline VI shl23(VI a) { return _mm512_slli_epi32(a, 23); }
    static inline VI shr23(VI a) { return _mm512_srli_epi32(a, 23); }
    static inline VI shl30(VI a) { return _mm512_slli_epi32(a, 30); }
    static inline M ieq(VI a, VI b) { return _mm512_cmpeq_epi32_mask(a, b); }
    static inline VI bits(V a) { return _mm512_castps_si512(a); }
    static inline V from_bits(VI a) { return _mm512_castsi512_ps(a); }
    static inline V vxor(V a, VI b) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), b)); }
    static inline float hsum(V a) { return _mm512_reduce_add_ps(a); }
    static inline void widen_halves(const uint16_t* src, float* dst, int n) {  // IEEE half -> float, exact
        int i = 0;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
        for (; i < n; ++i) dst[i] = half_to_float(src[i]);
    }
};
#elif defined(KC_ISA_AVX2)
struct Simd {
    static constexpr int kIsa = 1;
    static constexpr int W = 8;
    static constexpr int kSamples = 6;  // 6 samples x 16 outputs: 12 accumulators of 16 registers
    typedef __m256 V;
    typedef __m256i VI;
    typedef __m256 M;
    static inline V zero() { return _mm256_setzero_ps(); }
    static inline V set1(float v) { return _mm256_set1_ps(v); }
    static inline V load(const float* p) { return _mm256_loadu_ps(p); }
    static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
    static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static inline V div(V a, V b) { return _mm256_div_ps(a, b); }
    static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static inline V max(V a, V b) { return _mm256_max_ps(a, b); }
    static inline V min(V a, V b) { return _mm256_min_ps(a, b); }
    static inline M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
    static inline M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
    static inline V select(M m, V if_true, V if_false) { return _mm256_blendv_ps(if_false, if_true, m); }
    static inline V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static inline V floor(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static inline V permute(V a, VI idx) { return _mm256_permutevar8x32_ps(a, idx); }
    static inline VI iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static inline void istore(int32_t* p, VI a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
    static inline V ceil(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC); }
    static inline M ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
    static inline M eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
    static inline M mand(M a, M b) { return _mm256_and_ps(a, b); }
    static inline int mbits(M m) { return _mm256_movemask_ps(m); }
    static inline VI gather_u8(const uint8_t* base, VI idx) {  // 3 readable bytes past the last index
        return _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(base), idx, 1),
                                _mm256_set1_epi32(0xff));
    }
    static inline VI trunc_int(V a) { return _mm256_cvttps_epi32(a); }
    static inline VI imul(VI a, VI b) { return _mm256_mullo_epi32(a, b); }
    static inline VI to_int(V a) { return _mm256_cvtps_epi32(a); }
    static inline V to_float(VI a) { return _mm256_cvtepi32_ps(a); }
    static inline VI iset1(int v) { return _mm256_set1_epi32(v); }
    static inline VI iadd(VI a, VI b) { return _mm256_add_epi32(a, b); }
    static inline VI isub(VI a, VI b) { return _mm256_sub_epi32(a, b); }
    static inline VI iand(VI a, VI b) { return _mm256_and_si256(a, b); }
    static inline VI ior(VI a, VI b) { return _mm256_or_si256(a, b); }
    static inline VI shl23(VI a) { return _mm256_slli_epi32(a, 23); }
    static inline VI shr23(VI a) { return _mm256_srli_epi32(a, 23); }
    static inline VI shl30(VI a) { return _mm256_slli_epi32(a, 30); }
    static inline M ieq(VI a, VI b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
    static inline VI bits(V a) { return _mm256_castps_si256(a); }
    static inline V from_bits(VI a) { return _mm256_castsi256_ps(a); }
    static inline V vxor(V a, VI b) { return _mm256_xor_ps(a, _mm256_castsi256_ps(b)); }
    static inline float hsum(V a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static inline void widen_halves(const uint16_t* src, float* dst, int n) {  // IEEE half -> float (F16C)
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
        for (; i < n; ++i) dst[i] = half_to_float(src[i]);
    }
};
#elif defined(KC_ISA_GENERIC)
// Portable C++: four floats per "vector", loops the compiler may vectorise; the transcendental
// functions are libm's (see vmath.h).
struct Simd {
    static constexpr int kIsa = 0;
    static constexpr int W = 4;
    static constexpr int kSamples = 4;
    struct V {
        float v[4];
    };
    static inline V zero() { return V{{0.0f, 0.0f, 0.0f, 0.0f}}; }
    static inline V set1(float a) { return V{{a, a, a, a}}; }
    static inline V load(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
    static inline void store(float* p, V a) {
        for (int i = 0; i < 4; ++i) p[i] = a.v[i];
    }
    static inline V add(V a, V b) {
        for (int i = 0; i < 4; ++i) a.v[i] += b.v[i];
        return a;
    }
    static inline V sub(V a, V b) {
        for (int i = 0; i < 4; ++i) a.v[i] -= b.v[i];
        return a;
    }
    static inline V mul(V a, V b) {
        for (int i = 0; i < 4; ++i) a.v[i] *= b.v[i];
        return a;
    }
    static inline V div(V a, V b) {
        for (int i = 0; i < 4; ++i) a.v[i] /= b.v[i];
        return a;
    }
    static inline V floor(V a) {
        for (int i = 0; i < 4; ++i) a.v[i] = floorf(a.v[i]);
        return a;
    }
    static inline V min(V a, V b) {  // b where a is NaN, as minps
        for (int i = 0; i < 4; ++i) a.v[i] = a.v[i] < b.v[i] ? a.v[i] : b.v[i];
        return a;
    }
    static inline V fmadd(V a, V b, V c) {
        for (int i = 0; i < 4; ++i) c.v[i] = a.v[i] * b.v[i] + c.v[i];  // no fmaf: it is slow without FMA
        return c;
    }
    static inline V max(V a, V b) {  // b where a is NaN, as maxps
        for (int i = 0; i < 4; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
        return a;
    }
    static inline float hsum(V a) { return (a.v[0] + a.v[1]) + (a.v[2] + a.v[3]); }
    static inline void widen_halves(const uint16_t* src, float* dst, int n) {
        for (int i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
    }
};
#else
#error "define one of KC_ISA_AVX512, KC_ISA_AVX2, KC_ISA_GENERIC"
#endif

}  // namespace
