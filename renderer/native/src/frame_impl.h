// The steps of a frame on the CPU, written once over the SIMD traits of simd.h and compiled once per
// instruction set (isa_*.cpp). Included inside no namespace: everything here is in an anonymous namespace
// (internal linkage), so that the variants never share a symbol.
//
// A frame: rays for pixels -> clip to the box -> passes of { march <= K contributing samples per live ray
// (ESS, jumping with the distance field) -> counting sort by network -> evaluate every network's samples in
// register-blocked tiles -> composite front to back with ERT, retire } -> write pixels. The pass schedule,
// the sample rule and the compositing arithmetic are those of the torch renderer (renderer/render.py), so
// both give the same samples, the same stats and pixels equal to rounding.
#pragma once

#include <stdlib.h>
#include <string.h>

#include "kilocpu.h"
#include "vmath.h"

namespace {

using kn::i64;
using kn::RenderParams;
using kc::CpuFrame;
using kc::CpuScene;
using kc::PassSlots;

// ---------------------------------------------------------------------------------------------------------
// Plumbing: aligned buffers (no std containers: this header is compiled once per instruction set), and a
// parallel loop over the baseline unit's thread pool.

template <typename T>
struct Buffer {
    T* p = nullptr;
    explicit Buffer(i64 n) {
        const size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(T) + 63) & ~(size_t)63;
        p = static_cast<T*>(aligned_alloc(64, bytes));
    }
    ~Buffer() { free(p); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    T& operator[](i64 i) { return p[i]; }
    bool ok() const { return p != nullptr; }
};

template <typename F>
void parallel(i64 n, i64 grain, F& f) {
    if (n <= 0) return;
    kc_parallel_for(
        n, grain, [](void* ctx, i64 b, i64 e, int w) { (*static_cast<F*>(ctx))(b, e, w); }, &f);
}

inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------------------
// Step: clip_to_box. t0 = max(0, t_enter) and the number of lattice samples t_k = t0 + (k + 1/2) s < t1,
// exactly as renderer.march.lattice_count computes it (a float64 estimate, then two float32 corrections).

inline i64 lattice_count(float t0, float t1, float step) {
    if (!(t1 > t0) || !(t1 < INFINITY)) return 0;
    const double span = (double)(t1 - t0);
    double est = ceil(span / (double)step - 0.5);
    i64 n = est > 0.0 ? (i64)est : 0;
    for (int it = 0; it < 2; ++it) {
        if (kn::lattice_t(t0, n, step) < t1) ++n;
        if (n > 0 && !(kn::lattice_t(t0, n - 1, step) < t1)) --n;
    }
    return n;
}

inline void clip_ray(const RenderParams& P, const float* o, const float* d, float& t0, i64& n) {
    float t1;
    kn::intersect_aabb(P, o, d, t0, t1);
    n = lattice_count(t0, t1, P.step);
}

// ---------------------------------------------------------------------------------------------------------
// Step: march_pass. The next <= K lattice samples of one ray whose occupancy voxel may contribute
// (S.valid[ess]); a ray >= 2 voxels from any such voxel jumps to the first lattice step at the exit of the
// empty cube around it. The network comes from the cell rule; a sample whose cell has none is kept with
// net = -1 (its slot stays empty), as the torch renderer drops it after marching.

struct RayMarch {
    float o[3], d[3], t0;
    float face[3];  // min - o (+ voxel where d <= 0): the cube's exit face is face + (g +- r) * voxel
    float inv[3];   // 1 / d, or 0 for an axis the ray does not move along
    i64 n;
};

inline void ray_march_setup(const CpuScene& S, const float* o, const float* d, float t0, i64 n,
                            const RenderParams& P, RayMarch& r) {
    for (int c = 0; c < 3; ++c) {
        r.o[c] = o[c];
        r.d[c] = d[c];
        const bool moves = fabsf(d[c]) >= 1e-30f;
        r.inv[c] = moves ? 1.0f / d[c] : 0.0f;
        r.face[c] = P.bbox_min[c] - o[c] + (d[c] > 0.0f ? 0.0f : S.voxel_size[c]);
    }
    r.t0 = t0;
    r.n = n;
}

// First lattice index at or after the exit of the cube of voxels within dist - 1 of voxel g.
inline i64 jump_target(const RayMarch& r, const CpuScene& S, const RenderParams& P, const int g[3], int dist,
                       i64 k, float margin) {
    float te = INFINITY;
    for (int c = 0; c < 3; ++c) {
        if (r.inv[c] == 0.0f) continue;
        const float side = r.d[c] > 0.0f ? (float)(g[c] + dist) : (float)(g[c] - dist);
        const float t = (side * S.voxel_size[c] + r.face[c]) * r.inv[c];
        te = t < te ? t : te;
    }
    const double kj = ceil(((double)te - margin - r.t0) / (double)P.step - 0.5);
    if (!(kj < (double)r.n)) return r.n;
    const i64 kk = (i64)kj;
    return kk > k ? kk : k + 1;
}

#if !defined(KC_ISA_GENERIC)
// Tests the W lattice steps k, k+1, ... (below n) at once against the voxel table and takes the valid ones
// in order (the same points and voxel indices as the scalar rule, vector lane by lane). Needs k + W < 2^24
// (lattice indices exact in float32).
inline int march_window(const CpuScene& S, const RenderParams& P, const RayMarch& r, const uint8_t* valid, i64& k,
                        int K, int cnt, i64* out_k, int32_t* out_net) {
    constexpr int W = Simd::W;
    alignas(64) float lane[W], xs[3][W];
    alignas(64) int32_t flat[W];
    for (int i = 0; i < W; ++i) lane[i] = (float)i;
    const Simd::V t = Simd::add(Simd::set1(r.t0), Simd::mul(Simd::add(Simd::add(Simd::set1((float)k), Simd::load(lane)),
                                                                      Simd::set1(0.5f)), Simd::set1(P.step)));
    Simd::VI idx = Simd::iset1(0);
    for (int c = 0; c < 3; ++c) {
        const Simd::V x = Simd::add(Simd::set1(r.o[c]), Simd::mul(t, Simd::set1(r.d[c])));
        Simd::store(xs[c], x);
        const Simd::V lo = Simd::set1(P.bbox_min[c]), ext = Simd::set1(P.bbox_max[c] - P.bbox_min[c]);
        Simd::V g = Simd::floor(Simd::mul(Simd::div(Simd::sub(x, lo), ext), Simd::set1((float)P.occ_res[c])));
        g = Simd::min(Simd::max(g, Simd::zero()), Simd::set1((float)(P.occ_res[c] - 1)));  // NaN -> 0
        idx = Simd::iadd(Simd::imul(idx, Simd::iset1(P.occ_res[c])), Simd::trunc_int(g));
    }
    Simd::istore(flat, idx);
    const int lanes = r.n - k < W ? (int)(r.n - k) : W;
    for (int i = 0; i < lanes; ++i) {
        if (!valid[flat[i]]) continue;
        const float x[3] = {xs[0][i], xs[1][i], xs[2][i]};
        int g[3];
        kn::cell_index(P, x, P.grid_res, g);
        out_k[cnt] = k + i;
        out_net[cnt] = S.network_index[kn::flat_index(g, P.grid_res)];
        if (++cnt == K) {
            k += i + 1;
            return cnt;
        }
    }
    k += lanes;
    return cnt;
}
#endif

// One step of one ray's march: from lattice index k, jump over empty space or test a window (or one lattice
// step); returns false once the ray has K samples or no lattice left.
struct MarchState {
    RayMarch r;
    i64 k;
    int cnt;
    i64* out_k;
    int32_t* out_net;
};

inline bool march_step(const CpuScene& S, const RenderParams& P, const uint8_t* valid, const uint8_t* dist, float margin,
                       int K, MarchState& m) {
    if (m.k >= m.r.n || m.cnt >= K) return false;
    float x[3];
    kn::point_on_ray(m.r.o, m.r.d, kn::lattice_t(m.r.t0, m.k, P.step), x);
    int g[3];
    kn::cell_index(P, x, P.occ_res, g);
    const i64 flat = kn::flat_index(g, P.occ_res);
    const int dv = dist[flat];
    if (dv >= 2) {
        m.k = jump_target(m.r, S, P, g, dv, m.k, margin);
        return true;
    }
#if !defined(KC_ISA_GENERIC)
    if (m.k + Simd::W < (1 << 24)) {
        m.cnt = march_window(S, P, m.r, valid, m.k, K, m.cnt, m.out_k, m.out_net);
        return true;
    }
#endif
    if (valid[flat]) {
        int c[3];
        kn::cell_index(P, x, P.grid_res, c);
        m.out_k[m.cnt] = m.k;
        m.out_net[m.cnt] = S.network_index[kn::flat_index(c, P.grid_res)];
        ++m.cnt;
    }
    ++m.k;
    return true;
}

constexpr int kMarchGroup = 8;  // rays stepped round-robin, so that their (latency-bound) steps overlap

void march_pass(const RenderParams* Pp, const CpuScene* Sp, i64 n_live, const int32_t* live, const float* origins,
                const float* dirs, const float* t0, const i64* n_steps, i64* k, int K, PassSlots slots) {
    const RenderParams& P = *Pp;
    const CpuScene& S = *Sp;
    const int ess = P.ess ? 1 : 0;
    const float margin = 0.01f * fminf(S.voxel_size[0], fminf(S.voxel_size[1], S.voxel_size[2]));
    auto body = [&](i64 b, i64 e, int) {
        for (i64 g0 = b; g0 < e; g0 += kMarchGroup) {
            const int G = e - g0 < kMarchGroup ? (int)(e - g0) : kMarchGroup;
            MarchState st[kMarchGroup];
            int order[kMarchGroup], active = G;
            for (int j = 0; j < G; ++j) {
                const i64 i = g0 + j, r = live[i];
                ray_march_setup(S, origins + 3 * r, dirs + 3 * r, t0[r], n_steps[r], P, st[j].r);
                st[j].k = k[r], st[j].cnt = 0, st[j].out_k = slots.k + i * K, st[j].out_net = slots.net + i * K;
                order[j] = j;
            }
            while (active > 0) {
                for (int a = 0; a < active;) {
                    if (march_step(S, P, S.valid[ess], S.distance[ess], margin, K, st[order[a]])) ++a;
                    else order[a] = order[--active];
                }
            }
            for (int j = 0; j < G; ++j) {
                const i64 i = g0 + j;
                k[live[i]] = st[j].k;
                for (int q = st[j].cnt; q < K; ++q) slots.net[i * K + q] = -1;
                slots.count[i] = st[j].cnt;
            }
        }
    };
    parallel(n_live, 64, body);
}

// ---------------------------------------------------------------------------------------------------------
// Step: evaluate_points (the networks). Samples of one network in blocks of Simd::kSamples: positional
// encoding, then every layer as a register-blocked product of kSamples samples x (up to) 2 vectors of
// outputs, accumulated in registers over the inputs.

struct MlpScratch {
    float* in0;   // [kSamples, ld0]: sin | cos | u
    float* a1;    // [kSamples, H]
    float* a2;    // [kSamples, H]
    float* in3;   // [kSamples, ld3]: feature | sin | cos | d
    float* a3;    // [kSamples, H]
    float* args;  // encoding arguments
    float* s;     // their sines
    float* c;     // their cosines
    float* out;   // raw density [kSamples] | rgb logits [3 kSamples], padded
    int32_t* lane_coord;  // encoding argument lane i: coordinate i % 3 ...
    float* lane_scale;    // ... times 2^(i / 3) (0 past 3L)
    int ld0, ld3;
};

// Row length for an encoding of L octaves at column col: 6L + 3 inputs, plus the last vector's spill.
inline int encoding_ld(int col, int L) {
    const int n = 3 * L, spill = n + round_up(n, Simd::W) + Simd::W;
    return round_up(col + (spill > 2 * n + 3 ? spill : 2 * n + 3), 16);
}

inline int encoding_floats(const RenderParams& P) {
    const int L = P.pos_freqs > P.dir_freqs ? P.pos_freqs : P.dir_freqs;
    return round_up(Simd::kSamples * 3 * L + 1, Simd::W) + 2 * Simd::W;
}

inline int scratch_floats(const RenderParams& P) {
    const int S = Simd::kSamples, H = P.hidden, W = Simd::W;
    const int ld0 = encoding_ld(0, P.pos_freqs), ld3 = encoding_ld(H, P.dir_freqs);
    const int enc = encoding_floats(P);
    return S * (ld0 + ld3 + 3 * H) + 5 * enc + round_up(4 * S, W) + 64;
}

inline MlpScratch make_scratch(float* base, const RenderParams& P) {
    const int S = Simd::kSamples, H = P.hidden, W = Simd::W;
    MlpScratch m;
    m.ld0 = encoding_ld(0, P.pos_freqs);
    m.ld3 = encoding_ld(H, P.dir_freqs);
    const int enc = encoding_floats(P);
    float* p = base;
    m.in0 = p, p += S * m.ld0;
    m.a1 = p, p += S * H;
    m.a2 = p, p += S * H;
    m.in3 = p, p += S * m.ld3;
    m.a3 = p, p += S * H;
    m.args = p, p += enc;
    m.s = p, p += enc;
    m.c = p, p += enc;
    m.lane_coord = reinterpret_cast<int32_t*>(p), p += enc;
    m.lane_scale = p, p += enc;
    m.out = p;
    const int L = P.pos_freqs > P.dir_freqs ? P.pos_freqs : P.dir_freqs;
    for (int i = 0; i < round_up(3 * L, W); ++i)
        m.lane_coord[i] = i % 3, m.lane_scale[i] = i < 3 * L ? ldexpf(1.0f, i / 3) : 0.0f;
    return m;
}

// out[s, 0:H] = act(bias + in[s, 0:nin] @ W[nin, H]) for the kSamples rows.
template <int H, bool RELU>
inline void dense(const float* in, int ld_in, int nin, const float* Wt, const float* bias, float* out, int ld_out) {
    constexpr int S = Simd::kSamples, WL = Simd::W;
    constexpr int NV = (H / WL) >= 2 ? 2 : 1;
    constexpr int CH = NV * WL;
    static_assert(H % CH == 0, "hidden width must be a multiple of the output block");
    for (int oc = 0; oc < H; oc += CH) {
        Simd::V acc[S][NV];
        for (int v = 0; v < NV; ++v) {
            const Simd::V b = Simd::load(bias + oc + v * WL);
            for (int s = 0; s < S; ++s) acc[s][v] = b;
        }
        const float* wr = Wt + oc;
        for (int j = 0; j < nin; ++j, wr += H) {
            Simd::V w[NV];
            for (int v = 0; v < NV; ++v) w[v] = Simd::load(wr + v * WL);
            for (int s = 0; s < S; ++s) {
                const Simd::V x = Simd::set1(in[s * ld_in + j]);
                for (int v = 0; v < NV; ++v) acc[s][v] = Simd::fmadd(x, w[v], acc[s][v]);
            }
        }
        for (int s = 0; s < S; ++s)
            for (int v = 0; v < NV; ++v)
                Simd::store(out + s * ld_out + oc + v * WL, RELU ? Simd::max(acc[s][v], Simd::zero()) : acc[s][v]);
    }
}

template <int H>
inline float dot(const float* a, const float* b) {
    Simd::V acc = Simd::zero();
    for (int i = 0; i < H; i += Simd::W) acc = Simd::fmadd(Simd::load(a + i), Simd::load(b + i), acc);
    return Simd::hsum(acc);
}

// gamma_L of kSamples 3-vectors v into rows of `dst` at column `col`: sin block (3L), cos block (3L), v.
#if defined(KC_ISA_GENERIC)
inline void encode_rows(const float (*v)[4], int L, MlpScratch& m, float* dst, int ld, int col) {
    const int S = Simd::kSamples, n = 3 * L, padded = round_up(S * n, Simd::W);
    for (int s = 0; s < S; ++s) {
        float scale = 1.0f;
        for (int l = 0; l < L; ++l, scale *= 2.0f)
            for (int c = 0; c < 3; ++c) m.args[s * n + 3 * l + c] = v[s][c] * scale;  // exact: power of two
    }
    for (int i = S * n; i < padded; ++i) m.args[i] = 0.0f;
    sincos_array(m.args, m.s, m.c, padded);
    for (int s = 0; s < S; ++s) {
        float* row = dst + s * ld + col;
        memcpy(row, m.s + s * n, sizeof(float) * n);
        memcpy(row + n, m.c + s * n, sizeof(float) * n);
        row[2 * n] = v[s][0], row[2 * n + 1] = v[s][1], row[2 * n + 2] = v[s][2];
    }
}
#else
// Vector j of the arguments holds lanes i = W j + lane: v[i % 3] * 2^(i / 3) (exact: a power of two), made
// by one permute and one multiply. Sines go to row[0, 3L), then cosines to row[3L, 6L) over the sines'
// spill, then v over the cosines' spill (rows are padded to hold the last spill).
inline void encode_rows(const float (*v)[4], int L, MlpScratch& m, float* dst, int ld, int col) {
    constexpr int W = Simd::W;
    const int n = 3 * L, nv = (n + W - 1) / W;
    const int32_t* idx = m.lane_coord;
    const float* scale = m.lane_scale;
    for (int s = 0; s < Simd::kSamples; ++s) {
        float* row = dst + s * ld + col;
        const Simd::V vv = Simd::load(v[s]);  // lanes 0..2 (3 is padding; W >= 4)
        for (int j = 0; j < nv; ++j) {
            Simd::V sn, cs;
            v_sincos(Simd::mul(Simd::permute(vv, Simd::iload(idx + W * j)), Simd::load(scale + W * j)), sn, cs);
            Simd::store(row + W * j, sn);
            Simd::store(m.c + W * j, cs);
        }
        for (int j = 0; j < nv; ++j) Simd::store(row + n + W * j, Simd::load(m.c + W * j));
        row[2 * n] = v[s][0], row[2 * n + 1] = v[s][1], row[2 * n + 2] = v[s][2];
    }
}
#endif

inline void density_activation_array(const RenderParams& P, float* raw, int n) {
    if (P.density_activation == kn::kSoftplus) softplus_array(raw, n);
    else if (P.density_activation == kn::kExp) exp_array(raw, n);
    else
        for (int i = 0; i < n; ++i) raw[i] = raw[i] > 0.0f ? raw[i] : 0.0f;
    if (P.density_scale != 1.0f)
        for (int i = 0; i < n; ++i) raw[i] *= P.density_scale;
}

// kSamples samples of network w: local coordinates u, unit directions d -> sigma [kSamples], rgb [kSamples, 3].
template <int H>
inline void mlp_block(const RenderParams& P, const CpuScene& S, const float* w, const float (*u)[4],
                      const float (*d)[4], MlpScratch& m, float* sigma, float* rgb) {
    constexpr int NS = Simd::kSamples;
    const kc::WeightOffsets& o = S.off;
    const int P3 = 3 * P.pos_freqs, D3 = 3 * P.dir_freqs;
    encode_rows(u, P.pos_freqs, m, m.in0, m.ld0, 0);
    dense<H, true>(m.in0, m.ld0, 2 * P3 + 3, w + o.w0, w + o.b0, m.a1, H);
    dense<H, true>(m.a1, H, H, w + o.w1, w + o.b1, m.a2, H);
    dense<H, false>(m.a2, H, H, w + o.w2f, w + o.b2f, m.in3, m.ld3);
    float* raw = m.out;
    float* logits = m.out + round_up(NS, Simd::W);
    for (int s = 0; s < NS; ++s) raw[s] = w[o.b2d] + dot<H>(m.a2 + s * H, w + o.w2d);
    encode_rows(d, P.dir_freqs, m, m.in3, m.ld3, H);
    dense<H, true>(m.in3, m.ld3, H + 2 * D3 + 3, w + o.w3, w + o.b3, m.a3, H);
    for (int s = 0; s < NS; ++s)
        for (int c = 0; c < 3; ++c) logits[3 * s + c] = w[o.b4 + c] + dot<H>(m.a3 + s * H, w + o.w4t + c * H);
    const int nr = round_up(NS, Simd::W), nl = round_up(3 * NS, Simd::W);
    for (int i = NS; i < nr; ++i) raw[i] = 0.0f;
    for (int i = 3 * NS; i < nl; ++i) logits[i] = 0.0f;
    density_activation_array(P, raw, nr);
    sigmoid_array(logits, nl);
    memcpy(sigma, raw, sizeof(float) * NS);
    memcpy(rgb, logits, sizeof(float) * 3 * NS);
}

typedef void (*MlpFn)(const RenderParams&, const CpuScene&, const float*, const float (*)[4], const float (*)[4],
                      MlpScratch&, float*, float*);

inline MlpFn pick_mlp(int hidden) {
    switch (hidden) {
        case 16: return mlp_block<16>;
        case 32: return mlp_block<32>;
        case 64: return mlp_block<64>;
        default: return nullptr;
    }
}

// Local coordinates u [kSamples][4] of world points x [kSamples][4] in their network cells (kn::cell_index
// and kn::local_coords, the torch renderer's rounding; vectorised over the samples where the ISA allows).
#if defined(KC_ISA_GENERIC)
inline void local_coords_block(const RenderParams& P, const float (*x)[4], float (*u)[4]) {
    for (int s = 0; s < Simd::kSamples; ++s) {
        int g[3];
        kn::cell_index(P, x[s], P.grid_res, g);
        kn::local_coords(P, x[s], g, u[s]);
    }
}
#else
inline void local_coords_block(const RenderParams& P, const float (*x)[4], float (*u)[4]) {
    constexpr int NS = Simd::kSamples;
    static_assert(NS <= Simd::W, "one vector per coordinate");
    alignas(64) float col[Simd::W];
    for (int c = 0; c < 3; ++c) {
        for (int s = 0; s < Simd::W; ++s) col[s] = x[s < NS ? s : NS - 1][c];
        const Simd::V xv = Simd::load(col);
        const Simd::V lo = Simd::set1(P.bbox_min[c]);
        const Simd::V ext = Simd::set1(P.bbox_max[c] - P.bbox_min[c]);
        Simd::V f = Simd::floor(Simd::mul(Simd::div(Simd::sub(xv, lo), ext), Simd::set1((float)P.grid_res[c])));
        f = Simd::min(Simd::max(f, Simd::zero()), Simd::set1((float)(P.grid_res[c] - 1)));  // NaN -> 0
        const Simd::V cell = Simd::set1(P.cell_size[c]);
        const Simd::V corner = Simd::add(lo, Simd::mul(f, cell));
        const Simd::V uv = Simd::sub(Simd::div(Simd::mul(Simd::set1(2.0f), Simd::sub(xv, corner)), cell),
                                     Simd::set1(1.0f));
        Simd::store(col, uv);
        for (int s = 0; s < NS; ++s) u[s][c] = col[s];
    }
}
#endif

// Evaluates samples [begin, end) of network `net`: sample(i, x, d) gives the i-th's world point and
// direction; results go to index dst[i] (or i).
template <typename Sample>
inline void evaluate_run(const RenderParams& P, const CpuScene& S, MlpFn mlp, int net, i64 begin, i64 end,
                         Sample& sample, MlpScratch& m, float* sigma_out, float* rgb_out, const i64* dst) {
    constexpr int NS = Simd::kSamples;
    const float* w = S.weights + (i64)net * S.off.stride;
    alignas(64) float x[NS][4], u[NS][4], d[NS][4];
    float sig[NS], col[3 * NS];
    for (int s = 0; s < NS; ++s) x[s][3] = u[s][3] = d[s][3] = 0.0f;
    for (i64 b = begin; b < end; b += NS) {
        const int nb = end - b < NS ? (int)(end - b) : NS;
        for (int s = 0; s < NS; ++s) sample(b + (s < nb ? s : nb - 1), x[s], d[s]);  // padding repeats the last
        local_coords_block(P, x, u);
        mlp(P, S, w, u, d, m, sig, col);
        for (int s = 0; s < nb; ++s) {
            const i64 j = dst ? dst[b + s] : b + s;
            sigma_out[j] = sig[s];
            rgb_out[3 * j] = col[3 * s], rgb_out[3 * j + 1] = col[3 * s + 1], rgb_out[3 * j + 2] = col[3 * s + 2];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Step: composite_pass. One ray's slots of a pass, in order, with the torch renderer's arithmetic
// (renderer.composite.transmittance_pass): T before slot j = float(prod_{i<j} (1 - alpha_i), accumulated in
// float64) * T_in; a sample contributes w = T alpha while T >= eps; the ray's T after the pass is T before
// the first slot where T < eps (or after all slots). Colour and depth are summed in sample order.

struct RayAccum {
    float* trans;
    float* color;
    float* depth;
    float* best_w;
    int32_t* best_net;
};

inline bool composite_ray(const RenderParams& P, bool has_ert, int K, float t0, const i64* sk, const int32_t* snet,
                          const float* rgb, const float* alpha, RayAccum a) {
    const float t_in = *a.trans;
    const float eps = P.ert_threshold;
    double prod = 1.0;
    float prod_f = 1.0f, t_out = 0.0f, c_add[3] = {0.0f, 0.0f, 0.0f};
    bool stopped = false;
    for (int j = 0; j < K; ++j) {
        const float tb = prod_f * t_in;
        if (has_ert && !stopped && tb < eps) stopped = true, t_out = tb;
        if (snet[j] < 0) continue;  // an empty slot: 1 - alpha = 1
        const float w = (!has_ert || tb >= eps) ? tb * alpha[j] : 0.0f;
        for (int c = 0; c < 3; ++c) c_add[c] += w * rgb[3 * j + c];
        *a.depth += w * kn::lattice_t(t0, sk[j], P.step);
        if (w > *a.best_w) *a.best_w = w, *a.best_net = snet[j];
        prod *= (double)(1.0f - alpha[j]);
        prod_f = (float)prod;
    }
    if (!stopped) t_out = prod_f * t_in;
    for (int c = 0; c < 3; ++c) a.color[c] += c_add[c];
    *a.trans = t_out;
    return has_ert && t_out < eps;
}

void composite_pass(const RenderParams* Pp, int has_ert, i64 n_live, const int32_t* live, int K, const float* t0,
                    const i64* slot_k, const int32_t* slot_net, const int32_t* count, const float* sigma,
                    const float* rgb, float* trans, float* color, float* depth, float* best_w, int32_t* best_net,
                    uint8_t* stopped) {
    const RenderParams& P = *Pp;
    const int Kp = round_up(K, Simd::W);
    auto body = [&](i64 b, i64 e, int) {
        Buffer<float> sig(Kp), alpha(Kp);
        for (i64 i = b; i < e; ++i) {
            const i64 r = live[i];
            for (int j = 0; j < Kp; ++j) sig[j] = (j < K && slot_net[i * K + j] >= 0) ? sigma[i * K + j] : 0.0f;
            alpha_array(sig.p, P.step, alpha.p, Kp);
            (void)count;
            RayAccum a{trans + r, color + 3 * r, depth + r, best_w + r, best_net + r};
            stopped[i] = composite_ray(P, has_ert != 0, K, t0[r], slot_k + i * K, slot_net + i * K, rgb + 3 * i * K,
                                       alpha.p, a) ? 1 : 0;
        }
    };
    parallel(n_live, 256, body);
}

// ---------------------------------------------------------------------------------------------------------
// Steps: rays_for_pixels, clip_to_box, write_pixels (scalar; the fused frame runs the same functions).

void rays_for_pixels(const kn::CameraParams* cam, i64 first, i64 count, float* o, float* d) {
    auto body = [&](i64 b, i64 e, int) {
        for (i64 p = b; p < e; ++p) kn::camera_ray(*cam, first + p, o + 3 * p, d + 3 * p);
    };
    parallel(count, 4096, body);
}

void clip_to_box(const RenderParams* P, i64 n, const float* o, const float* d, float* t0, i64* n_steps) {
    auto body = [&](i64 b, i64 e, int) {
        for (i64 r = b; r < e; ++r) clip_ray(*P, o + 3 * r, d + 3 * r, t0[r], n_steps[r]);
    };
    parallel(n, 4096, body);
}

// The network-id colour of renderer.pixels.network_colors (an integer hash, 0.25 + 0.75 * byte / 255).
inline void network_color(int32_t net, float out[3]) {
    const uint64_t m = 1ull << 32;
    uint64_t h = ((uint64_t)(net > 0 ? net : 0) * 2654435761ull + 12345ull) % m;
    h = ((h ^ (h >> 15)) * 2246822519ull) % m;
    const uint64_t c[3] = {(h >> 16) & 255, (h >> 8) & 255, h & 255};
    for (int i = 0; i < 3; ++i) out[i] = 0.25f + 0.75f * ((float)c[i] / 255.0f);
}

// rgb [n, 3] from the accumulators (renderer.pixels.write_pixels): colour + T background, the shaded depth
// (normalised over the rays with T < 1), or the dominant network's colour.
void write_pixels(const RenderParams* Pp, int output, i64 n, const float* color, const float* trans,
                  const float* depth, const int32_t* best_net, float* rgb) {
    const RenderParams& P = *Pp;
    float lo = INFINITY, hi = -INFINITY;
    if (output == kc::kDepth)
        for (i64 r = 0; r < n; ++r)
            if (trans[r] < 1.0f) lo = depth[r] < lo ? depth[r] : lo, hi = depth[r] > hi ? depth[r] : hi;
    const float range = (hi - lo) > 1e-6f ? (hi - lo) : 1e-6f;
    auto body = [&](i64 b, i64 e, int) {
        for (i64 r = b; r < e; ++r) {
            float* out = rgb + 3 * r;
            if (output == kc::kNetwork && best_net[r] >= 0) {
                network_color(best_net[r], out);
            } else if (output == kc::kDepth && trans[r] < 1.0f) {
                const float g = 1.0f - 0.85f * (depth[r] - lo) / range;
                out[0] = out[1] = out[2] = g;
            } else if (output == kc::kRgb) {
                kn::pixel_value(P, color + 3 * r, trans[r], out);
            } else {
                out[0] = P.background[0], out[1] = P.background[1], out[2] = P.background[2];
            }
        }
    };
    parallel(n, 4096, body);
}

// ---------------------------------------------------------------------------------------------------------
// Counting sort of samples by network, and the work items (runs of one network, <= kTile samples) that
// evaluate them.

constexpr int kTile = 96;  // a multiple of every kSamples

struct NetworkRuns {
    i64 count = 0;   // samples sorted
    i64 items = 0;   // work items
    i64* sorted;     // [count] sample index of each sorted position
    i64* item_begin; // [items] sorted range of each item
    i64* item_end;
    int32_t* item_net;
};

// Sorts the indices i < n with net[i] >= 0 by net; marks touched networks. hist: [threads * M] scratch.
inline void sort_by_network(const int32_t* net, i64 n, int M, i64* hist, NetworkRuns& out, uint8_t* touched) {
    const int T = kc_threads();
    const i64 part = (n + T - 1) / T;
    memset(hist, 0, sizeof(i64) * (size_t)T * M);
    auto count = [&](i64 b, i64 e, int) {
        for (i64 t = b; t < e; ++t)
            for (i64 i = t * part; i < n && i < (t + 1) * part; ++i)
                if (net[i] >= 0) ++hist[t * M + net[i]];
    };
    parallel(T, 1, count);
    i64 run = 0, items = 0;
    for (int m = 0; m < M; ++m) {
        const i64 begin = run;
        for (int t = 0; t < T; ++t) {
            const i64 c = hist[(i64)t * M + m];
            hist[(i64)t * M + m] = run;
            run += c;
        }
        if (run > begin) {
            touched[m] = 1;
            for (i64 b = begin; b < run; b += kTile, ++items) {
                out.item_begin[items] = b;
                out.item_end[items] = b + kTile < run ? b + kTile : run;
                out.item_net[items] = m;
            }
        }
    }
    auto scatter = [&](i64 b, i64 e, int) {
        for (i64 t = b; t < e; ++t)
            for (i64 i = t * part; i < n && i < (t + 1) * part; ++i)
                if (net[i] >= 0) out.sorted[hist[t * M + net[i]]++] = i;
    };
    parallel(T, 1, scatter);
    out.count = run;
    out.items = items;
}

inline i64 max_items(i64 n, int M) { return n / kTile + (M < n ? M : n) + 1; }

// Evaluates every run: sample(pos, x, d) gives the world point and direction of the sample at sorted
// position pos; its results go to index runs.sorted[pos].
template <typename Sample>
inline int evaluate_runs(const RenderParams& P, const CpuScene& S, const NetworkRuns& runs, Sample& sample,
                         float* scratch, float* sigma, float* rgb) {
    MlpFn mlp = pick_mlp(P.hidden);
    if (!mlp) return -1;
    const int per = scratch_floats(P);
    auto body = [&](i64 b, i64 e, int worker) {
        MlpScratch m = make_scratch(scratch + (i64)worker * per, P);
        for (i64 it = b; it < e; ++it)
            evaluate_run(P, S, mlp, runs.item_net[it], runs.item_begin[it], runs.item_end[it], sample, m, sigma,
                         rgb, runs.sorted);
    };
    parallel(runs.items, 1, body);
    return 0;
}

// Step: evaluate_points. sigma [n], rgb [n, 3] of network net[i] at world point x[i] with unit direction
// d[i] (0 where net[i] < 0). Returns -1 for an unsupported hidden width, -2 out of memory.
int evaluate_points(const RenderParams* Pp, const CpuScene* Sp, i64 n, const float* x, const float* d,
                    const int32_t* net, float* sigma, float* rgb) {
    const RenderParams& P = *Pp;
    const int M = P.num_networks, T = kc_threads();
    if (!pick_mlp(P.hidden)) return -1;
    const i64 ni = max_items(n, M);
    Buffer<i64> sorted(n), ib(ni), ie(ni), hist((i64)T * M);
    Buffer<int32_t> inet(ni);
    Buffer<uint8_t> touched(M);
    Buffer<float> scratch((i64)T * scratch_floats(P)), xs(4 * n), ds(4 * n);
    if (!sorted.ok() || !ib.ok() || !ie.ok() || !hist.ok() || !inet.ok() || !touched.ok() || !scratch.ok() ||
        !xs.ok() || !ds.ok())
        return -2;
    for (i64 i = 0; i < n; ++i) {
        if (net[i] < 0) sigma[i] = 0.0f, rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = 0.0f;
    }
    NetworkRuns runs;
    runs.sorted = sorted.p, runs.item_begin = ib.p, runs.item_end = ie.p, runs.item_net = inet.p;
    sort_by_network(net, n, M, hist.p, runs, touched.p);
    // the inputs in sorted order first: one loop of independent loads, then contiguous reads
    auto gather = [&](i64 b, i64 e, int) {
        for (i64 pos = b; pos < e; ++pos) {
            const i64 i = runs.sorted[pos];
            for (int c = 0; c < 3; ++c) xs[4 * pos + c] = x[3 * i + c], ds[4 * pos + c] = d[3 * i + c];
        }
    };
    parallel(runs.count, 4096, gather);
    auto sample = [&](i64 pos, float* xo, float* dout) {
        for (int c = 0; c < 3; ++c) xo[c] = xs[4 * pos + c], dout[c] = ds[4 * pos + c];
    };
    return evaluate_runs(P, *Sp, runs, sample, scratch.p, sigma, rgb);
}

}  // namespace
