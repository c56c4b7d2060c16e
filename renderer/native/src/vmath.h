// Vectorised exp, log, sin/cos (Cephes-style: range reduction, then minimax polynomials; a few ulp on the
// ranges the renderer feeds them) over arrays of floats. The portable variant calls libm per element.
#pragma once

#include "simd.h"

namespace {

#if defined(KC_ISA_AVX2) || defined(KC_ISA_AVX512)
typedef Simd::V V;
typedef Simd::VI VI;

// e^x, x clamped to [-87.3, 88.37] (results stay normal floats).
inline V v_exp(V x) {
    x = Simd::min(Simd::max(x, Simd::set1(-87.3f)), Simd::set1(88.37626f));
    const V fx = Simd::round(Simd::mul(x, Simd::set1(1.44269504088896341f)));
    x = Simd::fmadd(fx, Simd::set1(-0.693359375f), x);
    x = Simd::fmadd(fx, Simd::set1(2.12194440e-4f), x);
    V y = Simd::set1(1.9875691500e-4f);
    y = Simd::fmadd(y, x, Simd::set1(1.3981999507e-3f));
    y = Simd::fmadd(y, x, Simd::set1(8.3334519073e-3f));
    y = Simd::fmadd(y, x, Simd::set1(4.1665795894e-2f));
    y = Simd::fmadd(y, x, Simd::set1(1.6666665459e-1f));
    y = Simd::fmadd(y, x, Simd::set1(5.0000001201e-1f));
    y = Simd::fmadd(y, Simd::mul(x, x), Simd::add(x, Simd::set1(1.0f)));
    const VI e = Simd::shl23(Simd::iadd(Simd::to_int(fx), Simd::iset1(127)));
    return Simd::mul(y, Simd::from_bits(e));
}

// Natural log of x > 0 (normal floats).
inline V v_log(V x) {
    VI b = Simd::bits(x);
    VI e = Simd::isub(Simd::shr23(b), Simd::iset1(126));
    V m = Simd::from_bits(Simd::ior(Simd::iand(b, Simd::iset1(0x807fffff)), Simd::iset1(0x3f000000)));  // [0.5, 1)
    V ef = Simd::to_float(e);
    const Simd::M small = Simd::lt(m, Simd::set1(0.707106781186547524f));
    ef = Simd::select(small, Simd::sub(ef, Simd::set1(1.0f)), ef);
    m = Simd::select(small, Simd::sub(Simd::add(m, m), Simd::set1(1.0f)), Simd::sub(m, Simd::set1(1.0f)));
    const V z = Simd::mul(m, m);
    V y = Simd::set1(7.0376836292e-2f);
    y = Simd::fmadd(y, m, Simd::set1(-1.1514610310e-1f));
    y = Simd::fmadd(y, m, Simd::set1(1.1676998740e-1f));
    y = Simd::fmadd(y, m, Simd::set1(-1.2420140846e-1f));
    y = Simd::fmadd(y, m, Simd::set1(1.4249322787e-1f));
    y = Simd::fmadd(y, m, Simd::set1(-1.6668057665e-1f));
    y = Simd::fmadd(y, m, Simd::set1(2.0000714765e-1f));
    y = Simd::fmadd(y, m, Simd::set1(-2.4999993993e-1f));
    y = Simd::fmadd(y, m, Simd::set1(3.3333331174e-1f));
    y = Simd::mul(Simd::mul(y, m), z);
    y = Simd::fmadd(ef, Simd::set1(-2.12194440e-4f), y);
    y = Simd::fmadd(z, Simd::set1(-0.5f), y);
    V r = Simd::add(m, y);
    return Simd::fmadd(ef, Simd::set1(0.693359375f), r);
}

// sin and cos of |x| < ~1e4 (Cody-Waite reduction by pi/2 with FMA, quadrant from the rounded multiple).
inline void v_sincos(V x, V& s, V& c) {
    const V j = Simd::round(Simd::mul(x, Simd::set1(0.636619772367581343f)));
    V r = Simd::fmadd(j, Simd::set1(-1.57079637050628662109375f), x);
    r = Simd::fmadd(j, Simd::set1(4.371138828673793e-8f), r);
    r = Simd::fmadd(j, Simd::set1(1.7151245100058819e-15f), r);
    const V z = Simd::mul(r, r);
    V ps = Simd::set1(-1.9515295891e-4f);
    ps = Simd::fmadd(ps, z, Simd::set1(8.3321608736e-3f));
    ps = Simd::fmadd(ps, z, Simd::set1(-1.6666654611e-1f));
    const V sr = Simd::fmadd(Simd::mul(ps, z), r, r);
    V pc = Simd::set1(2.443315711809948e-5f);
    pc = Simd::fmadd(pc, z, Simd::set1(-1.388731625493765e-3f));
    pc = Simd::fmadd(pc, z, Simd::set1(4.166664568298827e-2f));
    const V cr = Simd::fmadd(Simd::mul(pc, Simd::mul(z, z)), Simd::set1(1.0f),
                             Simd::fmadd(z, Simd::set1(-0.5f), Simd::set1(1.0f)));
    const VI q = Simd::to_int(j);
    const Simd::M odd = Simd::ieq(Simd::iand(q, Simd::iset1(1)), Simd::iset1(1));
    const VI sin_sign = Simd::shl30(Simd::iand(q, Simd::iset1(2)));                      // q = 2, 3: -
    const VI cos_sign = Simd::shl30(Simd::iand(Simd::iadd(q, Simd::iset1(1)), Simd::iset1(2)));  // q = 1, 2: -
    s = Simd::vxor(Simd::select(odd, cr, sr), sin_sign);
    c = Simd::vxor(Simd::select(odd, sr, cr), cos_sign);
}

// out[i] = sin / cos of x[i] for i < n; n a multiple of W (callers pad).
inline void sincos_array(const float* x, float* out_sin, float* out_cos, int n) {
    for (int i = 0; i < n; i += Simd::W) {
        V s, c;
        v_sincos(Simd::load(x + i), s, c);
        Simd::store(out_sin + i, s);
        Simd::store(out_cos + i, c);
    }
}

inline void exp_array(float* x, int n) {
    for (int i = 0; i < n; i += Simd::W) Simd::store(x + i, v_exp(Simd::load(x + i)));
}

// softplus(x) = x > 20 ? x : log1p(e^x), as torch.nn.functional.softplus; log1p(y) = log(u) - ((u-1)-y)/u.
inline void softplus_array(float* x, int n) {
    for (int i = 0; i < n; i += Simd::W) {
        const V a = Simd::load(x + i);
        const V y = v_exp(a);
        const V u = Simd::add(Simd::set1(1.0f), y);
        const V l = Simd::sub(v_log(u), Simd::div(Simd::sub(Simd::sub(u, Simd::set1(1.0f)), y), u));
        Simd::store(x + i, Simd::select(Simd::gt(a, Simd::set1(20.0f)), a, l));
    }
}

// 1 / (1 + e^-x)
inline void sigmoid_array(float* x, int n) {
    for (int i = 0; i < n; i += Simd::W) {
        const V e = v_exp(Simd::sub(Simd::zero(), Simd::load(x + i)));
        Simd::store(x + i, Simd::div(Simd::set1(1.0f), Simd::add(Simd::set1(1.0f), e)));
    }
}

// 1 - e^(-s * step)
inline void alpha_array(const float* sigma, float step, float* out, int n) {
    for (int i = 0; i < n; i += Simd::W) {
        const V e = v_exp(Simd::mul(Simd::sub(Simd::zero(), Simd::load(sigma + i)), Simd::set1(step)));
        Simd::store(out + i, Simd::sub(Simd::set1(1.0f), e));
    }
}
#else
inline void v_sincos(Simd::V x, Simd::V& s, Simd::V& c) {
    for (int i = 0; i < Simd::W; ++i) s.v[i] = sinf(x.v[i]), c.v[i] = cosf(x.v[i]);
}

inline void sincos_array(const float* x, float* out_sin, float* out_cos, int n) {
    for (int i = 0; i < n; ++i) {
        out_sin[i] = sinf(x[i]);
        out_cos[i] = cosf(x[i]);
    }
}
inline void exp_array(float* x, int n) {
    for (int i = 0; i < n; ++i) x[i] = expf(x[i]);
}
inline void softplus_array(float* x, int n) {
    for (int i = 0; i < n; ++i) x[i] = kn::density_activation(x[i], kn::kSoftplus);
}
inline void sigmoid_array(float* x, int n) {
    for (int i = 0; i < n; ++i) x[i] = kn::sigmoid(x[i]);
}
inline void alpha_array(const float* sigma, float step, float* out, int n) {
    for (int i = 0; i < n; ++i) out[i] = 1.0f - expf(-(sigma[i] * step));
}
#endif

}  // namespace
