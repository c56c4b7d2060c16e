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
#include "mlp_impl.h"
#include "plumbing.h"

namespace {

// ---------------------------------------------------------------------------------------------------------
// Step: clip_to_box. t0 = max(0, t_enter) and the number of lattice samples t_k = t0 + (k + 1/2) s < t1,
// exactly as renderer.march.lattice_count computes it (a float64 estimate, then two float32 corrections).

inline i64 lattice_count(float t0, float t1, float step) {
    if (!(t1 > t0) || !(t1 < INFINITY)) return 0;
    const double span = (double)(t1 - t0);
    double est = ceil(span * (1.0 / (double)step) - 0.5);  // an estimate: the float32 checks below decide
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

// Bit `flat` of a packed voxel table (renderer.bit_grid: bit i % 8 of byte i / 8).
inline bool voxel_bit(const uint8_t* bits, i64 flat) { return (bits[flat >> 3] >> (flat & 7)) & 1; }

// Block distance D of the distance field at voxel g, and what it guarantees in voxels: every contributing
// voxel is at least max(0, fine * D - (fine - 1)) voxels away (renderer.distance_field.voxel_distance).
inline int block_distance_at(const CpuScene& S, const uint8_t* dist, const int g[3]) {
    const int b[3] = {g[0] / S.fine, g[1] / S.fine, g[2] / S.fine};
    return dist[kn::flat_index(b, S.fine_res)];
}
inline int voxel_distance(const CpuScene& S, int block_dist) {
    const int v = S.fine * block_dist - (S.fine - 1);
    return v > 0 ? v : 0;
}

struct RayMarch {
    float o[3], d[3], t0;
    float face[3];        // min - o (+ voxel where d <= 0): the cube's exit face is face + (g +- r) * voxel
    float block_face[3];  // the same for blocks: min - o (+ block where d <= 0)
    float inv[3];         // 1 / d, or 0 for an axis the ray does not move along
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
        r.block_face[c] = P.bbox_min[c] - o[c] + (d[c] > 0.0f ? 0.0f : S.voxel_size[c] * (float)S.block);
    }
    r.t0 = t0;
    r.n = n;
}

// First lattice index at or after the exit of the cube of units (voxels, or blocks of voxels) within
// dist - 1 of unit g; `unit` is the edge length scale over the voxel size, `face` the ray's face offsets.
inline i64 jump_target(const RayMarch& r, const CpuScene& S, const RenderParams& P, const int g[3], int dist,
                       i64 k, float margin, float unit, const float* face) {
    float te = INFINITY;
    for (int c = 0; c < 3; ++c) {
        if (r.inv[c] == 0.0f) continue;
        const float side = r.d[c] > 0.0f ? (float)(g[c] + dist) : (float)(g[c] - dist);
        const float t = (side * (S.voxel_size[c] * unit) + face[c]) * r.inv[c];
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
        if (!voxel_bit(valid, flat[i])) continue;
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

inline bool march_step(const CpuScene& S, const RenderParams& P, const uint8_t* valid, const uint8_t* dist,
                       const uint8_t* block_dist, float margin, int K, MarchState& m) {
    if (m.k >= m.r.n || m.cnt >= K) return false;
    float x[3];
    kn::point_on_ray(m.r.o, m.r.d, kn::lattice_t(m.r.t0, m.k, P.step), x);
    int g[3];
    kn::cell_index(P, x, P.occ_res, g);
    const i64 flat = kn::flat_index(g, P.occ_res);
    const int db_fine = block_distance_at(S, dist, g);
    const int dv = voxel_distance(S, db_fine);
    if (db_fine >= S.distance_cap) {  // far from everything: whole blocks may be a longer jump
        const int b[3] = {g[0] / S.block, g[1] / S.block, g[2] / S.block};
        const int db = block_dist[kn::flat_index(b, S.block_res)];
        if ((db - 1) * S.block > dv - 1) {
            m.k = jump_target(m.r, S, P, b, db, m.k, margin, (float)S.block, m.r.block_face);
            return true;
        }
    }
    if (dv >= 2) {
        m.k = jump_target(m.r, S, P, g, dv, m.k, margin, 1.0f, m.r.face);
        return true;
    }
#if !defined(KC_ISA_GENERIC)
    if (m.k + Simd::W < (1 << 24)) {
        m.cnt = march_window(S, P, m.r, valid, m.k, K, m.cnt, m.out_k, m.out_net);
        return true;
    }
#endif
    if (voxel_bit(valid, flat)) {
        int c[3];
        kn::cell_index(P, x, P.grid_res, c);
        m.out_k[m.cnt] = m.k;
        m.out_net[m.cnt] = S.network_index[kn::flat_index(c, P.grid_res)];
        ++m.cnt;
    }
    ++m.k;
    return true;
}

constexpr int kMarchGroup = Simd::W >= 8 ? Simd::W : 8;  // rays stepped round-robin, so that their (latency-bound) steps overlap

#if !defined(KC_ISA_GENERIC)
// Jumps of up to W rays at once (one lane each) until every ray is next to voxels that may contribute
// (distance < 2) or done; st[j].k advanced in place. Lattice indices must stay below 2^24 (exact floats).
inline void jump_lanes(const CpuScene& S, const RenderParams& P, const uint8_t* dist, float margin, int K,
                       MarchState* st, int G) {
    constexpr int W = Simd::W;
    alignas(64) float kf[W], nf[W], t0[W], o[3][W], d[3][W], inv[3][W], face[3][W], pos[3][W];
    for (int j = 0; j < W; ++j) {
        const MarchState& m = st[j < G ? j : 0];
        const bool alive = j < G && m.k < m.r.n && m.cnt < K;
        kf[j] = alive ? (float)m.k : 0.0f, nf[j] = alive ? (float)m.r.n : 0.0f, t0[j] = m.r.t0;
        for (int c = 0; c < 3; ++c)
            o[c][j] = m.r.o[c], d[c][j] = m.r.d[c], inv[c][j] = m.r.inv[c], face[c][j] = m.r.face[c],
            pos[c][j] = m.r.d[c] > 0.0f ? 1.0f : -1.0f;
    }
    const Simd::V step = Simd::set1(P.step), vt0 = Simd::load(t0), n = Simd::load(nf);
    Simd::V k = Simd::load(kf);
    for (int it = 0; it < 1024; ++it) {
        const Simd::V t = Simd::add(vt0, Simd::mul(Simd::add(k, Simd::set1(0.5f)), step));
        Simd::V g[3];
        Simd::VI flat = Simd::iset1(0);  // of the voxel's distance-field block
        const Simd::V inv_fine = Simd::set1(1.0f / (float)S.fine);
        for (int c = 0; c < 3; ++c) {
            const Simd::V x = Simd::add(Simd::load(o[c]), Simd::mul(t, Simd::load(d[c])));
            const Simd::V lo = Simd::set1(P.bbox_min[c]), ext = Simd::set1(P.bbox_max[c] - P.bbox_min[c]);
            g[c] = Simd::floor(Simd::mul(Simd::div(Simd::sub(x, lo), ext), Simd::set1((float)P.occ_res[c])));
            g[c] = Simd::min(Simd::max(g[c], Simd::zero()), Simd::set1((float)(P.occ_res[c] - 1)));
            const Simd::V b = Simd::floor(Simd::mul(g[c], inv_fine));
            flat = Simd::iadd(Simd::imul(flat, Simd::iset1(S.fine_res[c])), Simd::trunc_int(b));
        }
        const Simd::V fine = Simd::set1((float)S.fine);  // voxel_distance, lane by lane
        const Simd::V dv = Simd::max(Simd::sub(Simd::mul(Simd::to_float(Simd::gather_u8(dist, flat)), fine),
                                               Simd::sub(fine, Simd::set1(1.0f))),
                                     Simd::zero());
        const Simd::M far = Simd::mand(Simd::ge(dv, Simd::set1(2.0f)), Simd::lt(k, n));
        if (!Simd::mbits(far)) break;
        Simd::V te = Simd::set1(INFINITY);
        for (int c = 0; c < 3; ++c) {
            const Simd::V side = Simd::add(g[c], Simd::mul(Simd::load(pos[c]), dv));
            const Simd::V vc = Simd::set1(S.voxel_size[c]);
            Simd::V tc = Simd::mul(Simd::add(Simd::mul(side, vc), Simd::load(face[c])), Simd::load(inv[c]));
            tc = Simd::select(Simd::eq(Simd::load(inv[c]), Simd::zero()), Simd::set1(INFINITY), tc);
            te = Simd::min(te, tc);
        }
        Simd::V kj = Simd::ceil(Simd::sub(Simd::div(Simd::sub(Simd::sub(te, Simd::set1(margin)), vt0), step),
                                          Simd::set1(0.5f)));
        kj = Simd::min(Simd::max(kj, Simd::add(k, Simd::set1(1.0f))), n);
        k = Simd::select(far, kj, k);
    }
    Simd::store(kf, k);
    for (int j = 0; j < G; ++j)
        if (st[j].k < st[j].r.n && st[j].cnt < K) st[j].k = (i64)kf[j];
}
#endif

void march_pass(const RenderParams* Pp, const CpuScene* Sp, i64 n_live, const int32_t* live, const float* origins,
                const float* dirs, const float* t0, const i64* n_steps, i64* k, int K, PassSlots slots) {
    const RenderParams& P = *Pp;
    const CpuScene& S = *Sp;
    const int ess = P.ess ? 1 : 0;
    const float margin = 0.01f * fminf(S.voxel_size[0], fminf(S.voxel_size[1], S.voxel_size[2]));
    i64 n_max = 0;
    for (i64 i = 0; i < n_live; ++i) n_max = n_steps[live[i]] > n_max ? n_steps[live[i]] : n_max;
    const bool simd_jumps = n_max < (1 << 24) - 1024;  // lattice indices exact in float32
    (void)simd_jumps;
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
#if !defined(KC_ISA_GENERIC)
                if (simd_jumps) jump_lanes(S, P, S.distance[ess], margin, K, st, G);
#endif
                for (int a = 0; a < active;) {
                    if (march_step(S, P, S.valid[ess], S.distance[ess], S.block_distance[ess], margin, K, st[order[a]]))
                        ++a;
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
                         float* sigma, float* rgb) {
    if (!kernels_support(P, S)) return -1;
    MlpFn mlp = pick_mlp(P.hidden);
    const int T = kc_threads();
    const i64 stride = S.off.stride;
    Buffer<float> wide(T * stride);  // per worker: the network it unpacked last
    Buffer<int> unpacked(T);
    if (!wide.ok() || !unpacked.ok()) return -2;
    memset(wide.p, 0, sizeof(float) * T * stride);  // padding: never read, but defined
    for (int t = 0; t < T; ++t) unpacked[t] = -1;
    auto body = [&](i64 b, i64 e, int worker) {
        for (i64 it = b; it < e; ++it) {
            const float* w = network_weights(P, S, runs.item_net[it], wide.p + worker * stride, unpacked[worker]);
            evaluate_run(P, S, mlp, w, runs.item_begin[it], runs.item_end[it], sample, sigma, rgb, runs.sorted);
        }
    };
    parallel(runs.items, 1, body);
    return 0;
}

// Step: evaluate_points. sigma [n], rgb [n, 3] of network net[i] at world point x[i] with unit direction
// d[i] (0 where net[i] < 0); buffers from `ws` (reused between calls) or, when null, for this call only.
// Returns -1 for an unsupported hidden width or octave count, -2 out of memory.
int evaluate_points(const RenderParams* Pp, const CpuScene* Sp, i64 n, const float* x, const float* d,
                    const int32_t* net, float* sigma, float* rgb, kc::Workspace* ws) {
    const RenderParams& P = *Pp;
    const int M = P.num_networks, T = kc_threads();
    if (!pick_mlp(P.hidden)) return -1;
    kc::Workspace local = {};
    kc::Workspace* w = ws ? ws : &local;
    const i64 ni = max_items(n, M);
    NetworkRuns runs;
    runs.sorted = static_cast<i64*>(kc_workspace_get(w, 0, 8 * (n + 1)));
    runs.item_begin = static_cast<i64*>(kc_workspace_get(w, 1, 8 * ni));
    runs.item_end = static_cast<i64*>(kc_workspace_get(w, 2, 8 * ni));
    runs.item_net = static_cast<int32_t*>(kc_workspace_get(w, 3, 4 * ni));
    i64* hist = static_cast<i64*>(kc_workspace_get(w, 4, 8 * (i64)T * M));
    uint8_t* touched = static_cast<uint8_t*>(kc_workspace_get(w, 5, M));
    float* xs = static_cast<float*>(kc_workspace_get(w, 6, 16 * (n + 1)));
    float* ds = static_cast<float*>(kc_workspace_get(w, 7, 16 * (n + 1)));
    float* out = static_cast<float*>(kc_workspace_get(w, 8, 16 * (n + 1)));
    int rc = -2;
    if (runs.sorted && runs.item_begin && runs.item_end && runs.item_net && hist && touched && xs && ds && out) {
        for (i64 i = 0; i < n; ++i)
            if (net[i] < 0) sigma[i] = 0.0f, rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = 0.0f;
        sort_by_network(net, n, M, hist, runs, touched);
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
        // results in sorted order (contiguous writes), then put back in one loop
        NetworkRuns in_place = runs;
        in_place.sorted = nullptr;
        rc = evaluate_runs(P, *Sp, in_place, sample, out, out + n);
        auto scatter = [&](i64 b, i64 e, int) {
            for (i64 pos = b; pos < e; ++pos) {
                const i64 i = runs.sorted[pos];
                sigma[i] = out[pos];
                for (int c = 0; c < 3; ++c) rgb[3 * i + c] = out[n + 3 * pos + c];
            }
        };
        if (rc == 0) parallel(runs.count, 4096, scatter);
    }
    if (!ws) kc_workspace_free(&local);
    return rc;
}

// Network `net`'s weights in the kernels' float32 layout, into out [S.off.stride] (what evaluate_points
// unpacks before a network's samples run; the parity test compares it with pack_weights). Returns -1 for
// an unsupported hidden width or octave count, -4 for a network out of range.
int unpack_one_network(const RenderParams* Pp, const CpuScene* Sp, int net, float* out) {
    if (!kernels_support(*Pp, *Sp)) return -1;
    if (net < 0 || net >= Pp->num_networks) return -4;
    unpack_network(*Pp, *Sp, net, out);
    return 0;
}

}  // namespace
