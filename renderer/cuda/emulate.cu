// CPU emulator of the CUDA renderer, built as a host-only shared library for the tests on machines
// without a GPU. It runs the same per-ray and per-sample functions as the kernels (common.cuh) in the
// same pass structure (march K samples, evaluate, composite, retire), serially. What it does not cover:
// thread indexing, the counting sort, atomics and shared-memory staging; those need a GPU.
#include <math.h>
#include <string.h>

#include <vector>

#include "common.cuh"

using kn::i64;

namespace {

template <int H, typename WT>
void evaluate_one(const kn::RenderParams& P, const void* weights, int net, const float o[3], const float d[3],
                  float t, float& sigma, float rgb[3]) {
    const kn::WeightLayout L = kn::weight_layout(H, P.pos_freqs, P.dir_freqs);
    const WT* w = static_cast<const WT*>(weights) + (i64)net * P.weight_stride;
    float act[64];
    kn::evaluate_sample<H, WT>(w, L, P, o, d, t, act, 1, sigma, rgb);
}

typedef void (*EvalFn)(const kn::RenderParams&, const void*, int, const float*, const float*, float, float&,
                       float*);

EvalFn pick_evaluator(int hidden, int f16) {
    switch (hidden) {
        case 16: return f16 ? evaluate_one<16, __half> : evaluate_one<16, float>;
        case 32: return f16 ? evaluate_one<32, __half> : evaluate_one<32, float>;
        case 64: return f16 ? evaluate_one<64, __half> : evaluate_one<64, float>;
        default: return nullptr;
    }
}

template <int H, typename WT>
void evaluate_point(const kn::RenderParams& P, const void* weights, int net, const float x[3], const int g[3],
                    const float d[3], float& sigma, float rgb[3]) {
    const kn::WeightLayout L = kn::weight_layout(H, P.pos_freqs, P.dir_freqs);
    const WT* w = static_cast<const WT*>(weights) + (i64)net * P.weight_stride;
    float u[3], act[64];
    kn::local_coords(P, x, g, u);
    kn::evaluate_network<H, WT>(w, L, P, u, d, act, 1, sigma, rgb);
}

typedef void (*PointFn)(const kn::RenderParams&, const void*, int, const float*, const int*, const float*,
                        float&, float*);

PointFn pick_point_evaluator(int hidden, int f16) {
    switch (hidden) {
        case 16: return f16 ? evaluate_point<16, __half> : evaluate_point<16, float>;
        case 32: return f16 ? evaluate_point<32, __half> : evaluate_point<32, float>;
        case 64: return f16 ? evaluate_point<64, __half> : evaluate_point<64, float>;
        default: return nullptr;
    }
}

}  // namespace

extern "C" {

int kilo_sizeof_render_params() { return (int)sizeof(kn::RenderParams); }
int kilo_sizeof_camera_params() { return (int)sizeof(kn::CameraParams); }

void kilo_weight_layout(int hidden, int pos_freqs, int dir_freqs, int* out13) {
    const kn::WeightLayout L = kn::weight_layout(hidden, pos_freqs, dir_freqs);
    memcpy(out13, &L, sizeof(L));
}

// kn::flat_index of cell g in a grid of shape res (64-bit; the test checks it past 2^31).
i64 kilo_flat_index(const int* g, const int* res) { return kn::flat_index(g, res); }

// kn::tile_segment: network and sorted-sample range [begin, end) of work tile b; out3 = (m, begin, end).
void kilo_tile_segment(const int* tile_start, const i64* net_offsets, int num_networks, int tile, int b,
                       i64* out3) {
    int m;
    kn::tile_segment(tile_start, net_offsets, num_networks, tile, b, m, out3[1], out3[2]);
    out3[0] = m;
}

// kn::lattice_t and kn::cell_index, for checks of the rounding against the torch renderer.
float kilo_lattice_t(float t0, int k, float step) { return kn::lattice_t(t0, k, step); }

// Camera rays exactly as generate_rays computes them: origins, dirs [W*H, 3].
void kilo_camera_rays(const kn::CameraParams* cam, float* origins, float* dirs) {
    const i64 n = (i64)cam->width * cam->height;
    for (i64 p = 0; p < n; ++p) kn::camera_ray(*cam, p, origins + 3 * p, dirs + 3 * p);
}

// Network of each point (-1: none), then sigma [N], rgb [N, 3] of that network at x [N, 3] with unit
// directions d [N, 3] (sigma = 0, rgb = 0 where there is no network). Returns -1 for an unsupported width.
int kilo_evaluate_points(const kn::RenderParams* P, const int* network_index, const void* weights, int f16, i64 n,
                         const float* x, const float* d, int* net_out, float* sigma, float* rgb) {
    PointFn fn = pick_point_evaluator(P->hidden, f16);
    if (!fn) return -1;
    for (i64 i = 0; i < n; ++i) {
        int g[3];
        kn::cell_index(*P, x + 3 * i, P->grid_res, g);
        const int net = network_index[kn::flat_index(g, P->grid_res)];
        net_out[i] = net;
        sigma[i] = 0.0f;
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = 0.0f;
        if (net >= 0) fn(*P, weights, net, x + 3 * i, g, d + 3 * i, sigma[i], rgb + 3 * i);
    }
    return 0;
}

// Renders n rays by the kernels' pass structure. stats (7 x i64): rays_hit_box, samples_marched,
// samples_evaluated, rays_terminated_early, passes, networks_touched, max_samples_in_a_pass.
// out_rgb [N, 3] = C + T background, out_depth [N] expected t, out_trans [N] = T_end, out_net [N] the
// dominant network (-1: none). Returns -1 for an unsupported hidden width or K.
int kilo_emulate_render(const kn::RenderParams* Pp, i64 n_rays, const float* origins, const float* dirs,
                        const int* network_index, const uint8_t* occupancy, const void* weights, int f16,
                        float* out_rgb, float* out_depth, float* out_trans, int* out_net, i64* stats) {
    const kn::RenderParams& P = *Pp;
    EvalFn fn = pick_evaluator(P.hidden, f16);
    if (!fn || P.samples_per_pass < 1 || P.samples_per_pass > kn::kMaxSamplesPerPass) return -1;
    std::vector<float> t0s(n_rays), t1s(n_rays), T(n_rays, 1.0f), D(n_rays, 0.0f), C(3 * n_rays, 0.0f);
    std::vector<float> best_w(n_rays, 0.0f);
    std::vector<int> k_next(n_rays, 0), best_net(n_rays, -1);
    std::vector<i64> active, next;
    std::vector<unsigned char> touched(P.num_networks > 0 ? P.num_networks : 1, 0);
    for (int s = 0; s < 7; ++s) stats[s] = 0;
    for (i64 r = 0; r < n_rays; ++r) {
        kn::intersect_aabb(P, origins + 3 * r, dirs + 3 * r, t0s[r], t1s[r]);
        if (kn::ray_has_samples(t0s[r], t1s[r], P.step)) {
            active.push_back(r);
            ++stats[0];
        }
    }
    float ts[kn::kMaxSamplesPerPass], sig[kn::kMaxSamplesPerPass], col[3 * kn::kMaxSamplesPerPass];
    int nets[kn::kMaxSamplesPerPass];
    while (!active.empty()) {
        ++stats[4];
        next.clear();
        i64 in_pass = 0;
        for (i64 r : active) {
            const float* o = origins + 3 * r;
            const float* d = dirs + 3 * r;
            bool exhausted = false;
            const int n = kn::march_ray_pass(P, o, d, t0s[r], t1s[r], k_next[r], network_index, occupancy, ts, nets,
                                             stats[1], exhausted);
            for (int j = 0; j < n; ++j) {
                fn(P, weights, nets[j], o, d, ts[j], sig[j], col + 3 * j);
                touched[nets[j]] = 1;
            }
            stats[2] += n;
            in_pass += n;
            if (kn::composite_ray_pass(P, n, ts, sig, col, nets, T[r], &C[3 * r], D[r], best_w[r], best_net[r])) {
                if (!exhausted) ++stats[3];
            } else if (!exhausted) {
                next.push_back(r);
            }
        }
        if (in_pass > stats[6]) stats[6] = in_pass;
        active.swap(next);
    }
    for (int m = 0; m < P.num_networks; ++m) stats[5] += touched[m];
    for (i64 r = 0; r < n_rays; ++r) {
        kn::pixel_value(P, &C[3 * r], T[r], out_rgb + 3 * r);
        if (out_depth) out_depth[r] = kn::expected_depth(D[r], T[r]);
        if (out_trans) out_trans[r] = T[r];
        if (out_net) out_net[r] = best_net[r];
    }
    return 0;
}

}  // extern "C"
