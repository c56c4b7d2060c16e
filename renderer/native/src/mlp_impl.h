// Step evaluate_points (the networks), the inner part: samples of one network in blocks of Simd::kSamples.
// Per block: the samples' cell-local coordinates (vectorised over the samples, the torch renderer's
// rounding), their positional encodings written input-major (one vector of samples per input), then
// every layer as a register-blocked product of kSamples samples x (up to) two vectors of outputs,
// accumulated in registers over the inputs. Included by frame_impl.h (anonymous namespace).
#pragma once

#include <string.h>

#include "plumbing.h"
#include "vmath.h"

namespace {

constexpr int kMaxFreqs = 32;   // renderer.scene_checks.MAX_FREQS
constexpr int kMaxHidden = 64;  // the largest hidden width with a kernel
constexpr int kExactEvery = 3;  // sin/cos computed directly every this many octaves, by doubling in between

// A layer's input: element (sample s, input j) at p[s * ss + j * sj], n inputs.
struct Input {
    const float* p;
    int ss, sj, n;
};

// out[s, 0:H] = act(bias + a[s, :] @ W[0:na] + b[s, :] @ W[na:na+nb]) for the kSamples samples (W [na+nb, H]).
template <int H, bool RELU>
inline void dense(Input a, Input b, const float* Wt, const float* bias, float* out) {
    constexpr int S = Simd::kSamples, WL = Simd::W;
    constexpr int NV = (H / WL) >= 2 ? 2 : 1;
    constexpr int CH = NV * WL;
    static_assert(H % CH == 0, "hidden width must be a multiple of the output block");
    for (int oc = 0; oc < H; oc += CH) {
        Simd::V acc[S][NV];
        for (int v = 0; v < NV; ++v) {
            const Simd::V bv = Simd::load(bias + oc + v * WL);
            for (int s = 0; s < S; ++s) acc[s][v] = bv;
        }
        const float* wr = Wt + oc;
        const Input inputs[2] = {a, b};
        for (const Input& in : inputs) {
            for (int j = 0; j < in.n; ++j, wr += H) {
                Simd::V w[NV];
                for (int v = 0; v < NV; ++v) w[v] = Simd::load(wr + v * WL);
                const float* col = in.p + j * in.sj;
                for (int s = 0; s < S; ++s) {
                    const Simd::V x = Simd::set1(col[s * in.ss]);
                    for (int v = 0; v < NV; ++v) acc[s][v] = Simd::fmadd(x, w[v], acc[s][v]);
                }
            }
        }
        for (int s = 0; s < S; ++s)
            for (int v = 0; v < NV; ++v)
                Simd::store(out + s * H + oc + v * WL, RELU ? Simd::max(acc[s][v], Simd::zero()) : acc[s][v]);
    }
}

template <int H>
inline float dot(const float* a, const float* b) {
    Simd::V acc = Simd::zero();
    for (int i = 0; i < H; i += Simd::W) acc = Simd::fmadd(Simd::load(a + i), Simd::load(b + i), acc);
    return Simd::hsum(acc);
}

// gamma_L of the 3 coordinate vectors v (one lane per sample), input-major into rows of W floats:
// row 3l + c = sin(2^l v_c), row 3L + 3l + c = cos(2^l v_c), row 6L + c = v_c (the packed weights' order).
// sin/cos come from the vector sincos every kExactEvery octaves and from the double-angle formulas in
// between (2^l v is exact; each doubling at most doubles the phase error, a few 1e-7).
inline void encode_input_major(const Simd::V v[3], int L, float* rows) {
    constexpr int W = Simd::W;
    for (int c = 0; c < 3; ++c) {
        Simd::V s = Simd::zero(), co = Simd::zero();
        for (int l = 0; l < L; ++l) {
            if (l % kExactEvery == 0) {
                v_sincos(Simd::mul(v[c], Simd::set1(ldexpf(1.0f, l))), s, co);
            } else {
                const Simd::V s2 = Simd::mul(Simd::add(s, s), co);
                co = Simd::mul(Simd::sub(co, s), Simd::add(co, s));
                s = s2;
            }
            Simd::store(rows + (3 * l + c) * W, s);
            Simd::store(rows + (3 * L + 3 * l + c) * W, co);
        }
        Simd::store(rows + (6 * L + c) * W, v[c]);
    }
}

// Cell-local coordinates of world points x[c] (one lane per sample): kn::cell_index and kn::local_coords,
// lane by lane with the same roundings.
inline void local_coords(const RenderParams& P, const Simd::V x[3], Simd::V u[3]) {
    for (int c = 0; c < 3; ++c) {
        const Simd::V lo = Simd::set1(P.bbox_min[c]);
        const Simd::V ext = Simd::set1(P.bbox_max[c] - P.bbox_min[c]);
        Simd::V f = Simd::floor(Simd::mul(Simd::div(Simd::sub(x[c], lo), ext), Simd::set1((float)P.grid_res[c])));
        f = Simd::min(Simd::max(f, Simd::zero()), Simd::set1((float)(P.grid_res[c] - 1)));  // NaN -> 0
        const Simd::V cell = Simd::set1(P.cell_size[c]);
        const Simd::V corner = Simd::add(lo, Simd::mul(f, cell));
        u[c] = Simd::sub(Simd::div(Simd::mul(Simd::set1(2.0f), Simd::sub(x[c], corner)), cell), Simd::set1(1.0f));
    }
}

inline void density_activation_array(const RenderParams& P, float* raw, int n) {
    if (P.density_activation == kn::kSoftplus) softplus_array(raw, n);
    else if (P.density_activation == kn::kExp) exp_array(raw, n);
    else
        for (int i = 0; i < n; ++i) raw[i] = raw[i] > 0.0f ? raw[i] : 0.0f;
    if (P.density_scale != 1.0f)
        for (int i = 0; i < n; ++i) raw[i] *= P.density_scale;
}

// One block: world points x and unit directions d (SoA, one lane per sample; lanes past kSamples unused)
// through network w -> sigma [kSamples], rgb [kSamples, 3].
template <int H>
inline void mlp_block(const RenderParams& P, const kc::WeightOffsets& o, const float* w, const float* x,
                      const float* d, float* sigma, float* rgb) {
    constexpr int NS = Simd::kSamples, W = Simd::W;
    alignas(64) float enc[(6 * kMaxFreqs + 3) * W], a1[NS * H], a2[NS * H], a3[NS * H];
    alignas(64) float out[2 * W + 4 * NS];
    const int P6 = 6 * P.pos_freqs + 3, D6 = 6 * P.dir_freqs + 3;
    Simd::V xv[3], uv[3], dv[3];
    for (int c = 0; c < 3; ++c) xv[c] = Simd::load(x + c * W), dv[c] = Simd::load(d + c * W);
    local_coords(P, xv, uv);
    encode_input_major(uv, P.pos_freqs, enc);
    dense<H, true>({enc, 1, W, P6}, {nullptr, 0, 0, 0}, w + o.w0, w + o.b0, a1);
    dense<H, true>({a1, H, 1, H}, {nullptr, 0, 0, 0}, w + o.w1, w + o.b1, a2);
    dense<H, false>({a2, H, 1, H}, {nullptr, 0, 0, 0}, w + o.w2f, w + o.b2f, a1);  // the feature
    const int nr = round_up(NS, W), nl = round_up(3 * NS, W);
    float* raw = out;
    float* logits = out + nr;
    for (int s = 0; s < nr; ++s) raw[s] = s < NS ? w[o.b2d] + dot<H>(a2 + s * H, w + o.w2d) : 0.0f;
    encode_input_major(dv, P.dir_freqs, enc);
    dense<H, true>({a1, H, 1, H}, {enc, 1, W, D6}, w + o.w3, w + o.b3, a3);
    for (int s = 0; s < NS; ++s)
        for (int c = 0; c < 3; ++c) logits[3 * s + c] = w[o.b4 + c] + dot<H>(a3 + s * H, w + o.w4t + c * H);
    for (int i = 3 * NS; i < nl; ++i) logits[i] = 0.0f;
    density_activation_array(P, raw, nr);
    sigmoid_array(logits, nl);
    memcpy(sigma, raw, sizeof(float) * NS);
    memcpy(rgb, logits, sizeof(float) * 3 * NS);
}

typedef void (*MlpFn)(const RenderParams&, const kc::WeightOffsets&, const float*, const float*, const float*,
                      float*, float*);

inline MlpFn pick_mlp(int hidden) {
    switch (hidden) {
        case 16: return mlp_block<16>;
        case 32: return mlp_block<32>;
        case 64: return mlp_block<64>;
        default: return nullptr;
    }
}

// Whether the kernels run this scene: a compiled hidden width, at most kMaxFreqs octaves, and no more
// octaves read than the file stores.
inline bool kernels_support(const RenderParams& P, const CpuScene& S) {
    return pick_mlp(P.hidden) && P.pos_freqs <= kMaxFreqs && P.dir_freqs <= kMaxFreqs &&
           P.pos_freqs <= S.src.pos_freqs && P.dir_freqs <= S.src.dir_freqs;
}

// n values of source tensor k from element i on, as float32 (a copy, or a widening of halves).
inline void source_row(const kc::SourceWeights& W, int k, i64 i, int n, float* dst) {
    if (W.half) Simd::widen_halves(static_cast<const uint16_t*>(W.t[k]) + i, dst, n);
    else memcpy(dst, static_cast<const float*>(W.t[k]) + i, sizeof(float) * n);
}

inline float source_at(const kc::SourceWeights& W, int k, i64 i) {
    return W.half ? half_to_float(static_cast<const uint16_t*>(W.t[k])[i]) : static_cast<const float*>(W.t[k])[i];
}

// Row of a file's encoding block (v, then sin and cos per octave: positional_encoding) that input row r of
// the kernels' order feeds: the L sines' 3L rows, the 3L cosines, then v (encode_input_major).
inline int encoding_source_row(int r, int L) {
    if (r < 3 * L) return 3 + 6 * (r / 3) + r % 3;
    if (r < 6 * L) return 6 + 6 * ((r - 3 * L) / 3) + r % 3;
    return r - 6 * L;
}

// Network `net`'s weights in the kernels' float32 layout (S.off; renderer.native.scene.pack_weights is its
// Python twin): l0's and l3's encoding rows permuted to the kernels' input order (the first P and D
// octaves), l2 split into its feature columns and its density column, l4 transposed. Padding untouched.
inline void unpack_network(const RenderParams& P, const CpuScene& S, int net, float* out) {
    const kc::SourceWeights& W = S.src;
    const kc::WeightOffsets& o = S.off;
    const int H = P.hidden, r0 = 3 + 6 * W.pos_freqs, r3 = H + 3 + 6 * W.dir_freqs;
    const i64 m = net;
    for (int r = 0; r < 3 + 6 * P.pos_freqs; ++r)
        source_row(W, kc::kL0W, (m * r0 + encoding_source_row(r, P.pos_freqs)) * H, H, out + o.w0 + r * H);
    source_row(W, kc::kL0B, m * H, H, out + o.b0);
    source_row(W, kc::kL1W, m * H * H, H * H, out + o.w1);
    source_row(W, kc::kL1B, m * H, H, out + o.b1);
    for (int j = 0; j < H; ++j) {
        const i64 row = (m * H + j) * (H + 1);
        source_row(W, kc::kL2W, row + 1, H, out + o.w2f + j * H);
        out[o.w2d + j] = source_at(W, kc::kL2W, row);
    }
    source_row(W, kc::kL2B, m * (H + 1) + 1, H, out + o.b2f);
    out[o.b2d] = source_at(W, kc::kL2B, m * (H + 1));
    source_row(W, kc::kL3W, m * r3 * H, H * H, out + o.w3);  // the feature rows
    for (int r = 0; r < 3 + 6 * P.dir_freqs; ++r)
        source_row(W, kc::kL3W, (m * r3 + H + encoding_source_row(r, P.dir_freqs)) * H, H, out + o.w3 + (H + r) * H);
    source_row(W, kc::kL3B, m * H, H, out + o.b3);
    for (int c = 0; c < 3; ++c) {
        for (int j = 0; j < H; ++j) out[o.w4t + c * H + j] = source_at(W, kc::kL4W, (m * H + j) * 3 + c);
        out[o.b4 + c] = source_at(W, kc::kL4B, m * 3 + c);
    }
}

// Network `net`'s weights for the kernels: unpacked into `wide` [stride], kept (`unpacked`) while the
// same network's items follow.
inline const float* network_weights(const RenderParams& P, const CpuScene& S, int net, float* wide, int& unpacked) {
    if (unpacked != net) unpack_network(P, S, net, wide);
    unpacked = net;
    return wide;
}

// Evaluates samples [begin, end) of one network (packed float32 weights w): sample(i, x, d) gives the
// i-th's world point and direction; results go to index dst[i] (or i).
template <typename Sample>
inline void evaluate_run(const RenderParams& P, const CpuScene& S, MlpFn mlp, const float* w, i64 begin, i64 end,
                         Sample& sample, float* sigma_out, float* rgb_out, const i64* dst) {
    constexpr int NS = Simd::kSamples, W = Simd::W;
    static_assert(NS <= W, "one vector per coordinate");
    alignas(64) float x[3 * W], d[3 * W];
    float sig[NS], col[3 * NS];
    for (i64 b = begin; b < end; b += NS) {
        const int nb = end - b < NS ? (int)(end - b) : NS;
        for (int s = 0; s < W; ++s) {  // lanes past the samples repeat the last one
            float xs[3], ds[3];
            sample(b + (s < nb ? s : nb - 1), xs, ds);
            for (int c = 0; c < 3; ++c) x[c * W + s] = xs[c], d[c * W + s] = ds[c];
            if (s >= nb) {
                for (int r = s + 1; r < W; ++r)
                    for (int c = 0; c < 3; ++c) x[c * W + r] = xs[c], d[c * W + r] = ds[c];
                break;
            }
        }
        mlp(P, S.off, w, x, d, sig, col);
        for (int s = 0; s < nb; ++s) {
            const i64 j = dst ? dst[b + s] : b + s;
            sigma_out[j] = sig[s];
            rgb_out[3 * j] = col[3 * s], rgb_out[3 * j + 1] = col[3 * s + 1], rgb_out[3 * j + 2] = col[3 * s + 2];
        }
    }
}

}  // namespace
