// KiloNeRF rendering rule (docs/scene-format.md, issue 2) as __host__ __device__ functions.
//
// Every per-ray and per-sample step of the CUDA renderer lives here, so the GPU kernels (kilonerf.cu)
// and the CPU emulator used by the tests without a GPU (emulate.cu) run the very same code. The native
// CPU renderer (renderer/native/src) includes this header with a plain C++ compiler and runs the same
// geometry (camera rays, slab test, lattice, grid indices, local coordinates, activations); the parts
// that need CUDA types (half weights, the per-thread MLP) are compiled only by nvcc / NVRTC.
//
// Float rounding: positions, lattice times and grid indices use explicitly rounded operations
// (no FMA contraction), in the same order as the torch renderer, so a sample lands in the same
// occupancy voxel and network cell on both renderers. Network maths may contract to FMA freely.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KN_CUDA 1
#include <cuda_fp16.h>
#endif
#if !defined(__CUDACC_RTC__)
#include <math.h>
#include <stdint.h>
#else
// NVRTC (renderer/cuda/nvrtc.py) has no host C library: the two things this header takes from it.
typedef unsigned char uint8_t;
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#endif

#if defined(__CUDA_ARCH__)
#define KN_MUL(a, b) __fmul_rn((a), (b))
#define KN_ADD(a, b) __fadd_rn((a), (b))
#define KN_SUB(a, b) __fsub_rn((a), (b))
#define KN_DIV(a, b) __fdiv_rn((a), (b))
#else
#define KN_MUL(a, b) ((a) * (b))
#define KN_ADD(a, b) ((a) + (b))
#define KN_SUB(a, b) ((a) - (b))
#define KN_DIV(a, b) ((a) / (b))
#endif

#if defined(KN_CUDA)
#define KN_HD __host__ __device__ __forceinline__
#else
// Plain C++ (the native CPU renderer): internal linkage, so that each instruction-set variant of the
// native kernel keeps its own copy (an inline function shared between them could run AVX code on a CPU
// without AVX).
#define KN_HD static inline
#endif
// min / max of two floats. fminf / fmaxf on the device; on the host a comparison (one minss / maxss instead
// of a call into libm, whose NaN rule x86 lacks). The two differ only for NaN operands, which the callers
// never pass (a ray's slab distances with d = 0 are handled apart).
#if defined(KN_CUDA)
#define KN_FMIN(a, b) fminf((a), (b))
#define KN_FMAX(a, b) fmaxf((a), (b))
#else
#define KN_FMIN(a, b) ((a) < (b) ? (a) : (b))
#define KN_FMAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#if defined(KN_CUDA)
#define KN_UNROLL _Pragma("unroll")
#else
#define KN_UNROLL
#endif

namespace kn {

typedef long long i64;

// Largest samples_per_pass (K) a kernel supports: the marcher keeps K samples in registers.
constexpr int kMaxSamplesPerPass = 32;

enum DensityActivation { kRelu = 0, kSoftplus = 1, kExp = 2 };

// Scene and option constants for one frame; mirrored by numpy dtype RENDER_PARAMS_DTYPE in kernels.py.
// All fields are 4 bytes wide, so the C and numpy layouts agree without padding.
struct RenderParams {
    float bbox_min[3];
    float bbox_max[3];
    float cell_size[3];   // (bbox_max - bbox_min) / grid_res, computed in float64 then rounded
    int grid_res[3];
    int occ_res[3];
    float step;           // s: lattice spacing along the unit direction
    float ert_threshold;  // epsilon
    int ert;              // 1: retire a ray as soon as T < epsilon
    int ess;              // 1: skip samples whose occupancy voxel is empty
    int pos_freqs;
    int dir_freqs;
    int density_activation;
    float density_scale;
    float background[3];
    int samples_per_pass;  // K
    int num_networks;      // M
    int weight_stride;     // elements per packed network
    int hidden;            // H
};

// Offsets (in elements) of each tensor inside one network's packed weights; every block starts on a
// multiple of 8 elements so rows can be read as float4 / 4 x half. Mirrored by kernels.weight_layout.
struct WeightLayout {
    int w0, b0, w1, b1, w2f, w2d, b2f, b2d, w3, b3, w4, b4, stride;
};

KN_HD int round_up8(int n) { return (n + 7) & ~7; }

KN_HD WeightLayout weight_layout(int H, int pos_freqs, int dir_freqs) {
    const int in0 = 3 + 6 * pos_freqs;
    const int in3 = H + 3 + 6 * dir_freqs;
    WeightLayout L;
    int o = 0;
    L.w0 = o;  o += round_up8(in0 * H);
    L.b0 = o;  o += round_up8(H);
    L.w1 = o;  o += round_up8(H * H);
    L.b1 = o;  o += round_up8(H);
    L.w2f = o; o += round_up8(H * H);
    L.w2d = o; o += round_up8(H);
    L.b2f = o; o += round_up8(H);
    L.b2d = o; o += round_up8(1);
    L.w3 = o;  o += round_up8(in3 * H);
    L.b3 = o;  o += round_up8(H);
    L.w4 = o;  o += round_up8(H * 4);
    L.b4 = o;  o += round_up8(4);
    L.stride = o;
    return L;
}

// ---------------------------------------------------------------------------------------------
// Geometry: slab test, lattice, grid indices (all in explicitly rounded float32).

// Slab test of o + t d against the box: per axis t = (min - o)/d and (max - o)/d (an axis with d = 0 is an
// unbounded slab when o lies inside it, empty otherwise); t0 = max(0, t_enter), t1 = t_exit.
KN_HD void intersect_aabb(const RenderParams& P, const float o[3], const float d[3], float& t0, float& t1) {
    float t_enter = -INFINITY, t_exit = INFINITY;
KN_UNROLL
    for (int c = 0; c < 3; ++c) {
        float lo, hi;
        if (d[c] == 0.0f) {
            const bool inside = o[c] >= P.bbox_min[c] && o[c] <= P.bbox_max[c];
            lo = inside ? -INFINITY : INFINITY;
            hi = inside ? INFINITY : -INFINITY;
        } else {
            const float ta = KN_DIV(KN_SUB(P.bbox_min[c], o[c]), d[c]);
            const float tb = KN_DIV(KN_SUB(P.bbox_max[c], o[c]), d[c]);
            lo = KN_FMIN(ta, tb);
            hi = KN_FMAX(ta, tb);
        }
        t_enter = KN_FMAX(t_enter, lo);
        t_exit = KN_FMIN(t_exit, hi);
    }
    t0 = KN_FMAX(t_enter, 0.0f);
    t1 = t_exit;
}

// t_k = t0 + (k + 1/2) s.
KN_HD float lattice_t(float t0, i64 k, float step) { return KN_ADD(t0, KN_MUL((float)k + 0.5f, step)); }

// A ray takes part when its lattice has at least one sample: t1 finite and t_0 < t1.
KN_HD bool ray_has_samples(float t0, float t1, float step) {
    return t1 > t0 && t1 < INFINITY && lattice_t(t0, 0, step) < t1;
}

// x = o + t d.
KN_HD void point_on_ray(const float o[3], const float d[3], float t, float x[3]) {
KN_UNROLL
    for (int c = 0; c < 3; ++c) x[c] = KN_ADD(o[c], KN_MUL(t, d[c]));
}

// clamp(floor((x - min) / (max - min) * res), 0, res - 1) per axis.
KN_HD void cell_index(const RenderParams& P, const float x[3], const int res[3], int g[3]) {
KN_UNROLL
    for (int c = 0; c < 3; ++c) {
        const float extent = KN_SUB(P.bbox_max[c], P.bbox_min[c]);
        const float f = floorf(KN_MUL(KN_DIV(KN_SUB(x[c], P.bbox_min[c]), extent), (float)res[c]));
        int i = (f != f) ? 0 : (f < 0.0f ? 0 : (f > (float)(res[c] - 1) ? res[c] - 1 : (int)f));
        g[c] = i;
    }
}

// C-order flat index of cell g in a grid of shape res (64-bit).
KN_HD i64 flat_index(const int g[3], const int res[3]) {
    return ((i64)g[0] * res[1] + g[1]) * (i64)res[2] + g[2];
}

// u = 2 (x - (min + g c)) / c - 1 with c = (max - min) / grid_res.
KN_HD void local_coords(const RenderParams& P, const float x[3], const int g[3], float u[3]) {
KN_UNROLL
    for (int c = 0; c < 3; ++c) {
        const float cell = P.cell_size[c];
        const float corner = KN_ADD(P.bbox_min[c], KN_MUL((float)g[c], cell));
        u[c] = KN_SUB(KN_DIV(KN_MUL(2.0f, KN_SUB(x[c], corner)), cell), 1.0f);
    }
}

KN_HD bool occupancy_bit(const uint8_t* bits, i64 flat) { return (bits[flat >> 3] >> (flat & 7)) & 1; }

// ---------------------------------------------------------------------------------------------
// march_rays, one ray, one pass: walk the lattice from index k, keep up to K samples whose cell has a
// network and (ESS) whose occupancy voxel is set. Returns the number kept; advances k; sets exhausted
// when the lattice has no sample left (t_k >= t1). `marched` counts lattice points visited.
KN_HD int march_ray_pass(const RenderParams& P, const float o[3], const float d[3], float t0, float t1, int& k,
                         const int* __restrict__ network_index, const uint8_t* __restrict__ occupancy,
                         float* out_t, int* out_net, i64& marched, bool& exhausted) {
    int n = 0;
    exhausted = false;
    const int K = P.samples_per_pass;
    while (n < K) {
        const float t = lattice_t(t0, k, P.step);
        if (!(t < t1)) {
            exhausted = true;
            break;
        }
        ++k;
        ++marched;
        float x[3];
        point_on_ray(o, d, t, x);
        int g[3];
        cell_index(P, x, P.grid_res, g);
        const int net = network_index[flat_index(g, P.grid_res)];
        if (net < 0) continue;
        if (P.ess) {
            int v[3];
            cell_index(P, x, P.occ_res, v);
            if (!occupancy_bit(occupancy, flat_index(v, P.occ_res))) continue;
        }
        out_t[n] = t;
        out_net[n] = net;
        ++n;
    }
    if (!exhausted && !(lattice_t(t0, k, P.step) < t1)) exhausted = true;
    return n;
}

// ---------------------------------------------------------------------------------------------
// Work tiles of the counting sort: network m owns tiles [tile_start[m], tile_start[m+1]) and samples
// [net_offsets[m], net_offsets[m+1]) of the sorted order. Tile b (< tile_start[M]) belongs to the largest m
// with tile_start[m] <= b (networks without samples own no tile) and covers samples [begin, end).
KN_HD void tile_segment(const int* tile_start, const i64* net_offsets, int num_networks, int tile, int b, int& m,
                        i64& begin, i64& end) {
    int lo = 0, hi = num_networks;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (tile_start[mid] <= b) lo = mid;
        else hi = mid;
    }
    m = lo;
    begin = net_offsets[m] + (i64)(b - tile_start[m]) * tile;
    const i64 stop = net_offsets[m + 1];
    end = begin + tile < stop ? begin + tile : stop;
}

// ---------------------------------------------------------------------------------------------
// Activations (torch.nn.functional.softplus's threshold of 20; sigmoid 1 / (1 + e^-x)).

KN_HD float density_activation(float raw, int act) {
    if (act == kSoftplus) return raw > 20.0f ? raw : log1pf(expf(raw));  // torch.nn.functional.softplus
    if (act == kExp) return expf(raw);
    return KN_FMAX(raw, 0.0f);
}

KN_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

#if defined(KN_CUDA)
// ---------------------------------------------------------------------------------------------
// evaluate_networks, one sample: encoding and all five layers in registers.

template <typename WT>
struct Load4;

template <>
struct Load4<float> {
    static KN_HD float4 load(const float* p) { return *reinterpret_cast<const float4*>(p); }
    static KN_HD float load1(const float* p) { return *p; }
};

template <>
struct Load4<__half> {
    static KN_HD float4 load(const __half* p) {
        const __half2* q = reinterpret_cast<const __half2*>(p);
        const float2 a = __half22float2(q[0]);
        const float2 b = __half22float2(q[1]);
        return make_float4(a.x, a.y, b.x, b.y);
    }
    static KN_HD float load1(const __half* p) { return __half2float(*p); }
};

// acc[0..N) += x * row[0..N) (row 8-element aligned, N a multiple of 4).
template <int N, typename WT>
KN_HD void accumulate_row(float* acc, float x, const WT* row) {
#pragma unroll
    for (int o = 0; o < N; o += 4) {
        const float4 w = Load4<WT>::load(row + o);
        acc[o] += x * w.x;
        acc[o + 1] += x * w.y;
        acc[o + 2] += x * w.z;
        acc[o + 3] += x * w.w;
    }
}

template <int N, typename WT>
KN_HD void load_bias(float* acc, const WT* b) {
#pragma unroll
    for (int o = 0; o < N; o += 4) {
        const float4 w = Load4<WT>::load(b + o);
        acc[o] = w.x;
        acc[o + 1] = w.y;
        acc[o + 2] = w.z;
        acc[o + 3] = w.w;
    }
}

// gamma_L(v) fed straight into a layer: acc += sum_i gamma_L(v)_i * W[row0 + i]  (W rows of width N).
template <int N, typename WT>
KN_HD void accumulate_encoding(float* acc, const float v[3], int num_freqs, const WT* W) {
#pragma unroll
    for (int c = 0; c < 3; ++c) accumulate_row<N, WT>(acc, v[c], W + c * N);
    float scale = 1.0f;
    for (int l = 0; l < num_freqs; ++l) {
        const WT* Wl = W + (3 + 6 * l) * N;
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            float s, co;
            const float a = v[c] * scale;  // exact: scale is a power of two
            s = sinf(a);
            co = cosf(a);
            accumulate_row<N, WT>(acc, s, Wl + c * N);
            accumulate_row<N, WT>(acc, co, Wl + (3 + c) * N);
        }
        scale *= 2.0f;
    }
}

// One network (packed weights w, layout L) at local point u [3] with unit direction d [3].
// The current layer's input activations live in `act` (element j at act[j * act_stride]: a per-thread
// column of shared memory on the device, a local array on the host); the outputs accumulate in
// registers. This keeps the register count at ~H and the code size small for every H.
template <int H, typename WT>
KN_HD void evaluate_network(const WT* __restrict__ w, const WeightLayout& L, const RenderParams& P,
                            const float u[3], const float d[3], float* act, int act_stride, float& sigma,
                            float rgb[3]) {
    float a[H];
    // layer 0: gamma_P(u) -> H, relu
    load_bias<H, WT>(a, w + L.b0);
    accumulate_encoding<H, WT>(a, u, P.pos_freqs, w + L.w0);
#pragma unroll
    for (int o = 0; o < H; ++o) act[o * act_stride] = fmaxf(a[o], 0.0f);
    // layer 1: H -> H, relu
    load_bias<H, WT>(a, w + L.b1);
#pragma unroll 2
    for (int j = 0; j < H; ++j) accumulate_row<H, WT>(a, act[j * act_stride], w + L.w1 + j * H);
#pragma unroll
    for (int o = 0; o < H; ++o) act[o * act_stride] = fmaxf(a[o], 0.0f);
    // layer 2: H -> 1 + H (the density column is kept apart from the feature)
    float raw = Load4<WT>::load1(w + L.b2d);
    load_bias<H, WT>(a, w + L.b2f);
#pragma unroll 2
    for (int j = 0; j < H; ++j) {
        const float x = act[j * act_stride];
        raw += x * Load4<WT>::load1(w + L.w2d + j);
        accumulate_row<H, WT>(a, x, w + L.w2f + j * H);
    }
    sigma = P.density_scale * density_activation(raw, P.density_activation);
#pragma unroll
    for (int o = 0; o < H; ++o) act[o * act_stride] = a[o];
    // layer 3: concat(feature, gamma_D(d)) -> H, relu
    load_bias<H, WT>(a, w + L.b3);
#pragma unroll 2
    for (int j = 0; j < H; ++j) accumulate_row<H, WT>(a, act[j * act_stride], w + L.w3 + j * H);
    accumulate_encoding<H, WT>(a, d, P.dir_freqs, w + L.w3 + H * H);
#pragma unroll
    for (int o = 0; o < H; ++o) act[o * act_stride] = fmaxf(a[o], 0.0f);
    // layer 4: H -> 3 (padded to 4), sigmoid
    float c[4];
    load_bias<4, WT>(c, w + L.b4);
#pragma unroll 4
    for (int j = 0; j < H; ++j) accumulate_row<4, WT>(c, act[j * act_stride], w + L.w4 + j * 4);
    rgb[0] = sigmoid(c[0]);
    rgb[1] = sigmoid(c[1]);
    rgb[2] = sigmoid(c[2]);
}

// Network evaluation of sample t on ray (o, d): recompute x exactly as the marcher did.
template <int H, typename WT>
KN_HD void evaluate_sample(const WT* __restrict__ w, const WeightLayout& L, const RenderParams& P,
                           const float o[3], const float d[3], float t, float* act, int act_stride,
                           float& sigma, float rgb[3]) {
    float x[3], u[3];
    int g[3];
    point_on_ray(o, d, t, x);
    cell_index(P, x, P.grid_res, g);
    local_coords(P, x, g, u);
    evaluate_network<H, WT>(w, L, P, u, d, act, act_stride, sigma, rgb);
}

#endif  // KN_CUDA

// ---------------------------------------------------------------------------------------------
// composite_front_to_back, one ray, one pass: alpha = 1 - exp(-sigma s), w = T alpha, C += w rgb, D += w t,
// T *= 1 - alpha; the dominant network is the first sample with the largest w. With ERT the ray stops as
// soon as T < epsilon (returns true).
KN_HD bool composite_ray_pass(const RenderParams& P, int n, const float* t, const float* sigma, const float* rgb,
                              const int* net, float& T, float C[3], float& D, float& best_w, int& best_net) {
    for (int j = 0; j < n; ++j) {
        const float alpha = 1.0f - expf(-(sigma[j] * P.step));
        const float wgt = T * alpha;
        C[0] += wgt * rgb[3 * j];
        C[1] += wgt * rgb[3 * j + 1];
        C[2] += wgt * rgb[3 * j + 2];
        D += wgt * t[j];
        if (wgt > best_w) {
            best_w = wgt;
            best_net = net[j];
        }
        T = T * (1.0f - alpha);
        if (P.ert && T < P.ert_threshold) return true;
    }
    return false;
}

// Expected depth sum(w t) / sum(w) with sum(w) = 1 - T_end (0 when nothing was hit).
KN_HD float expected_depth(float D, float T) {
    const float wsum = 1.0f - T;
    return wsum > 0.0f ? D / KN_FMAX(wsum, 1e-12f) : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Camera rays: direction ((px + 0.5 - cx)/f, -(py + 0.5 - cy)/f, -1) rotated by c2w, normalised.
// Computed in float64 (the camera's precision), then rounded to float32.
struct CameraParams {
    double c2w[12];  // rows 0..2 of the 4x4 camera-to-world matrix
    double focal, cx, cy;
    int width, height;
};

KN_HD void camera_ray(const CameraParams& cam, i64 pixel, float o[3], float d[3]) {
    const i64 px = pixel % cam.width, py = pixel / cam.width;
    const double x = ((double)px + 0.5 - cam.cx) / cam.focal;
    const double y = -((double)py + 0.5 - cam.cy) / cam.focal;
    const double z = -1.0;
    double w[3];
KN_UNROLL
    for (int r = 0; r < 3; ++r) w[r] = cam.c2w[4 * r] * x + cam.c2w[4 * r + 1] * y + cam.c2w[4 * r + 2] * z;
    // w / |w| through one reciprocal: at most one float64 ulp from the division, invisible after the
    // rounding to float32
    const double inv_n = 1.0 / sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
KN_UNROLL
    for (int r = 0; r < 3; ++r) {
        d[r] = (float)(w[r] * inv_n);
        o[r] = (float)cam.c2w[4 * r + 3];
    }
}

// Final pixel value C + T_end * background.
KN_HD void pixel_value(const RenderParams& P, const float C[3], float T, float out[3]) {
KN_UNROLL
    for (int c = 0; c < 3; ++c) out[c] = C[c] + T * P.background[c];
}

KN_HD uint8_t to_unorm8(float v) {
    v = v != v ? 0.0f : KN_FMIN(KN_FMAX(v, 0.0f), 1.0f);
    return (uint8_t)(v * 255.0f + 0.5f);
}

}  // namespace kn
