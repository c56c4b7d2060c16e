// KiloNeRF CUDA renderer kernels. One frame = init_rays, then passes of
//   march_rays -> scan_network_counts -> scatter_samples -> evaluate_networks_* -> composite_front_to_back
// over the active rays, then write_pixels. The host reads one 8-byte counter per pass (rays still
// active); everything else stays on the device. All sample and pixel indices are 64-bit.
//
// Kernel names follow the torch renderer's functions (march.py, networks.py, composite.py).
#include "common.cuh"

using kn::i64;
typedef unsigned long long u64;

// Frame counters (u64), read by the host once per frame.
enum FrameCounter {
    kRaysHitBox = 0,
    kSamplesMarched = 1,
    kSamplesEvaluated = 2,
    kRaysTerminatedEarly = 3,
    kNumFrameCounters = 8
};

// Per-pass counters (u64), reset by the host (memset) before each pass.
enum PassCounter {
    kSamplesRequested = 0,  // samples the marcher asked slots for (may exceed the capacity)
    kSamplesStored = 1,     // min(requested, capacity), written by scan_network_counts
    kTiles = 2,             // work tiles for evaluate_networks
    kActiveNext = 3,        // rays still active after compositing
    kNumPassCounters = 8
};

__device__ __forceinline__ i64 global_thread_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_stride() { return (i64)gridDim.x * blockDim.x; }

// ---------------------------------------------------------------------------------------------
// Warp-aggregated atomics. The lanes of a warp that reach one of these together make one atomic
// instead of one each (the lowest lane adds the warp's total and broadcasts the old value); every
// lane gets what its own atomicAdd would have returned had the lanes added in lane order. The slots
// handed out are the same set as with per-lane atomics, only their order within a warp is fixed, and
// no output depends on that order (samples are composited per ray, sorted slots by network).
__device__ __forceinline__ unsigned lane_id() {
    unsigned lane;
    asm("mov.u32 %0, %%laneid;" : "=r"(lane));
    return lane;
}

// Exclusive prefix sum of `v` over the lanes of `mask` below this one, and the total (all of `mask`
// must call it).
__device__ __forceinline__ u64 warp_exclusive_sum(unsigned mask, u64 v, u64& total) {
    const unsigned lane = lane_id();
    if (mask == 0xffffffffu) {  // whole warp: a 5-step shuffle scan
        u64 x = v;
        for (unsigned d = 1; d < 32; d <<= 1) {
            const u64 y = __shfl_up_sync(mask, x, d);
            if (lane >= d) x += y;
        }
        total = __shfl_sync(mask, x, 31);
        return x - v;
    }
    u64 prefix = 0, sum = 0;  // a partial warp (the last grid-stride iteration): one shuffle per lane
    for (unsigned m = mask; m; m &= m - 1) {
        const int src = __ffs(m) - 1;
        const u64 x = __shfl_sync(mask, v, src);
        if ((unsigned)src < lane) prefix += x;
        sum += x;
    }
    total = sum;
    return prefix;
}

// `atomicAdd(counter, v)` for every calling lane, made once per warp; returns this lane's old value.
__device__ __forceinline__ u64 warp_aggregated_add(u64* counter, u64 v) {
    const unsigned mask = __activemask();
    u64 total;
    const u64 prefix = warp_exclusive_sum(mask, v, total);
    const int leader = __ffs(mask) - 1;
    u64 base = 0;
    if ((int)lane_id() == leader && total) base = atomicAdd(counter, total);
    return __shfl_sync(mask, base, leader) + prefix;
}

// `atomicAdd(&counters[key], 1u)` for every calling lane, made once per distinct key in the warp.
__device__ __forceinline__ unsigned warp_aggregated_increment(unsigned int* counters, int key) {
#if __CUDA_ARCH__ >= 700
    const unsigned peers = __match_any_sync(__activemask(), key);
    const int leader = __ffs(peers) - 1;
    const unsigned lane = lane_id();
    unsigned base = 0;
    if ((int)lane == leader) base = atomicAdd(&counters[key], (unsigned)__popc(peers));
    return __shfl_sync(peers, base, leader) + (unsigned)__popc(peers & ((1u << lane) - 1u));
#else
    return atomicAdd(&counters[key], 1u);
#endif
}

// ---------------------------------------------------------------------------------------------
extern "C" __global__ void generate_rays(kn::CameraParams cam, float* __restrict__ origins,
                                         float* __restrict__ dirs) {
    const i64 n = (i64)cam.width * cam.height;
    for (i64 p = global_thread_index(); p < n; p += grid_stride()) {
        float o[3], d[3];
        kn::camera_ray(cam, p, o, d);
        for (int c = 0; c < 3; ++c) {
            origins[3 * p + c] = o[c];
            dirs[3 * p + c] = d[c];
        }
    }
}

// Slab test for every ray; resets the ray state and lists the rays that hit the box as active.
extern "C" __global__ void init_rays(kn::RenderParams P, i64 n_rays, const float* __restrict__ origins,
                                     const float* __restrict__ dirs, float* __restrict__ t0s,
                                     float* __restrict__ t1s, int* __restrict__ k_next,
                                     float* __restrict__ trans, float* __restrict__ color,
                                     float* __restrict__ depth, float* __restrict__ best_w,
                                     int* __restrict__ best_net, int* __restrict__ active,
                                     u64* __restrict__ frame_counters, u64* __restrict__ pass_counters) {
    for (i64 r = global_thread_index(); r < n_rays; r += grid_stride()) {
        float t0, t1;
        kn::intersect_aabb(P, origins + 3 * r, dirs + 3 * r, t0, t1);
        const bool hit = kn::ray_has_samples(t0, t1, P.step);
        t0s[r] = t0;
        t1s[r] = t1;
        k_next[r] = 0;
        trans[r] = 1.0f;
        color[3 * r] = color[3 * r + 1] = color[3 * r + 2] = 0.0f;
        depth[r] = 0.0f;
        best_w[r] = 0.0f;
        best_net[r] = -1;
        const u64 slot = warp_aggregated_add(&pass_counters[kActiveNext], hit ? 1ull : 0ull);
        if (hit) active[slot] = (int)r;
        warp_aggregated_add(&frame_counters[kRaysHitBox], hit ? 1ull : 0ull);
    }
}

// ---------------------------------------------------------------------------------------------
// ESS marching: each active ray walks its lattice and keeps up to K samples; slots are claimed with
// one atomic per warp (warp_aggregated_add). A ray whose slots do not fit in the capacity is deferred (its k is not advanced
// and it emits nothing this pass). Histogram of samples per network on the side.
extern "C" __global__ void march_rays(kn::RenderParams P, const int* __restrict__ active, i64 n_active,
                                      const float* __restrict__ origins, const float* __restrict__ dirs,
                                      const float* __restrict__ t0s, const float* __restrict__ t1s,
                                      int* __restrict__ k_next, const int* __restrict__ network_index,
                                      const uint8_t* __restrict__ occupancy, i64 capacity,
                                      float* __restrict__ sample_t, int* __restrict__ sample_ray,
                                      int* __restrict__ sample_net, i64* __restrict__ ray_base,
                                      int* __restrict__ ray_count, uint8_t* __restrict__ ray_exhausted,
                                      unsigned int* __restrict__ net_counts, uint8_t* __restrict__ net_touched,
                                      u64* __restrict__ frame_counters, u64* __restrict__ pass_counters) {
    for (i64 a = global_thread_index(); a < n_active; a += grid_stride()) {
        const int r = active[a];
        float ts[kn::kMaxSamplesPerPass];
        int nets[kn::kMaxSamplesPerPass];
        int k = k_next[r];
        i64 marched = 0;
        bool exhausted = false;
        const int n = kn::march_ray_pass(P, origins + 3 * (i64)r, dirs + 3 * (i64)r, t0s[r], t1s[r], k,
                                         network_index, occupancy, ts, nets, marched, exhausted);
        const i64 claimed = (i64)warp_aggregated_add(&pass_counters[kSamplesRequested], (u64)n);
        const i64 base = n > 0 ? claimed : 0;
        const bool stored = n == 0 || base + n <= capacity;
        warp_aggregated_add(&frame_counters[kSamplesMarched], stored ? (u64)marched : 0ull);
        warp_aggregated_add(&frame_counters[kSamplesEvaluated], stored ? (u64)n : 0ull);
        if (stored) {
            for (int j = 0; j < n; ++j) {
                sample_t[base + j] = ts[j];
                sample_ray[base + j] = r;
                sample_net[base + j] = nets[j];
                warp_aggregated_increment(net_counts, nets[j]);
                net_touched[nets[j]] = 1;
            }
            k_next[r] = k;
            ray_base[a] = base;
            ray_count[a] = n;
            ray_exhausted[a] = exhausted ? 1 : 0;
        } else {  // deferred to the next pass; mark the claimed slots below the capacity as empty
            for (i64 j = base; j < capacity && j < base + n; ++j) sample_net[j] = -1;
            ray_base[a] = 0;
            ray_count[a] = 0;
            ray_exhausted[a] = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counting sort by network, step 2: exclusive scans of the per-network counts (sample offsets) and of
// the per-network tile counts (ceil(count / tile)); one block, any number of networks.
extern "C" __global__ void scan_network_counts(int num_networks, const unsigned int* __restrict__ net_counts,
                                               i64* __restrict__ net_offsets, int* __restrict__ tile_start,
                                               unsigned int* __restrict__ net_cursor, int tile,
                                               i64 capacity, u64* __restrict__ pass_counters) {
    __shared__ i64 s_count[1024];
    __shared__ int s_tiles[1024];
    __shared__ i64 carry_count;
    __shared__ int carry_tiles;
    if (threadIdx.x == 0) {
        carry_count = 0;
        carry_tiles = 0;
    }
    __syncthreads();
    for (int start = 0; start < num_networks; start += blockDim.x) {
        const int m = start + threadIdx.x;
        const unsigned int c = m < num_networks ? net_counts[m] : 0u;
        s_count[threadIdx.x] = c;
        s_tiles[threadIdx.x] = (int)((c + tile - 1) / tile);
        __syncthreads();
        for (int off = 1; off < (int)blockDim.x; off <<= 1) {  // Hillis-Steele inclusive scan
            i64 vc = 0;
            int vt = 0;
            if ((int)threadIdx.x >= off) {
                vc = s_count[threadIdx.x - off];
                vt = s_tiles[threadIdx.x - off];
            }
            __syncthreads();
            s_count[threadIdx.x] += vc;
            s_tiles[threadIdx.x] += vt;
            __syncthreads();
        }
        if (m < num_networks) {
            net_offsets[m] = carry_count + s_count[threadIdx.x] - c;
            tile_start[m] = carry_tiles + s_tiles[threadIdx.x] - (int)((c + tile - 1) / tile);
            net_cursor[m] = 0u;
        }
        __syncthreads();
        if (threadIdx.x == blockDim.x - 1) {
            carry_count += s_count[threadIdx.x];
            carry_tiles += s_tiles[threadIdx.x];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        net_offsets[num_networks] = carry_count;
        tile_start[num_networks] = carry_tiles;
        const i64 requested = (i64)pass_counters[kSamplesRequested];
        pass_counters[kSamplesStored] = (u64)(requested < capacity ? requested : capacity);
        pass_counters[kTiles] = (u64)carry_tiles;
    }
}

// Counting sort by network, step 3: place every stored sample's index in its network's segment.
// Deferred rays left holes in [0, stored) only when the capacity overflowed: those slots have net -1.
extern "C" __global__ void scatter_samples(const int* __restrict__ sample_net, const i64* __restrict__ net_offsets,
                                           unsigned int* __restrict__ net_cursor, i64* __restrict__ sorted,
                                           const u64* __restrict__ pass_counters) {
    const i64 n = (i64)pass_counters[kSamplesStored];
    for (i64 i = global_thread_index(); i < n; i += grid_stride()) {
        const int m = sample_net[i];
        if (m < 0) continue;
        const i64 pos = net_offsets[m] + (i64)warp_aggregated_increment(net_cursor, m);
        sorted[pos] = i;
    }
}

// ---------------------------------------------------------------------------------------------
// Fused tiny-MLP: one block per tile (up to `tile` samples of one network). The block stages the
// network's packed weights in dynamic shared memory; each thread evaluates whole samples (encoding and
// five layers, outputs in registers, its input activations in its own shared-memory column) and writes
// sigma / rgb at the sample's own index, which undoes the sort. Dynamic shared memory:
// weight_stride * sizeof(WT) + H * blockDim.x * 4 bytes.
template <int H, typename WT>
__device__ void evaluate_networks_impl(const kn::RenderParams& P, const WT* __restrict__ weights,
                                       const i64* __restrict__ sorted, const float* __restrict__ sample_t,
                                       const int* __restrict__ sample_ray, const float* __restrict__ origins,
                                       const float* __restrict__ dirs, const i64* __restrict__ net_offsets,
                                       const int* __restrict__ tile_start, int tile,
                                       const u64* __restrict__ pass_counters, float* __restrict__ sigma_out,
                                       float* __restrict__ rgb_out) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int b = blockIdx.x;
    if (b >= (int)pass_counters[kTiles]) return;
    int m;
    i64 seg_begin, seg_end;
    kn::tile_segment(tile_start, net_offsets, P.num_networks, tile, b, m, seg_begin, seg_end);
    const kn::WeightLayout L = kn::weight_layout(H, P.pos_freqs, P.dir_freqs);
    WT* w = reinterpret_cast<WT*>(smem_raw);
    float* act = reinterpret_cast<float*>(smem_raw + (size_t)P.weight_stride * sizeof(WT)) + threadIdx.x;
    {
        const int n16 = (int)(P.weight_stride * sizeof(WT) / 16);
        const uint4* src = reinterpret_cast<const uint4*>(weights + (i64)m * P.weight_stride);
        uint4* dst = reinterpret_cast<uint4*>(w);
        for (int i = threadIdx.x; i < n16; i += blockDim.x) dst[i] = src[i];
        __syncthreads();
    }
    for (i64 s = seg_begin + threadIdx.x; s < seg_end; s += blockDim.x) {
        const i64 i = sorted[s];
        const i64 r = sample_ray[i];
        float sigma, rgb[3];
        kn::evaluate_sample<H, WT>(w, L, P, origins + 3 * r, dirs + 3 * r, sample_t[i], act, blockDim.x, sigma,
                                   rgb);
        sigma_out[i] = sigma;
        rgb_out[3 * i] = rgb[0];
        rgb_out[3 * i + 1] = rgb[1];
        rgb_out[3 * i + 2] = rgb[2];
    }
}

#define KN_EVALUATE_NETWORKS(H, WT, SUFFIX)                                                               \
    extern "C" __global__ void __launch_bounds__(256) evaluate_networks_h##H##_##SUFFIX(                 \
        kn::RenderParams P, const WT* __restrict__ weights, const i64* __restrict__ sorted,              \
        const float* __restrict__ sample_t, const int* __restrict__ sample_ray,                          \
        const float* __restrict__ origins, const float* __restrict__ dirs,                               \
        const i64* __restrict__ net_offsets, const int* __restrict__ tile_start, int tile,               \
        const u64* __restrict__ pass_counters, float* __restrict__ sigma_out, float* __restrict__ rgb_out) { \
        evaluate_networks_impl<H, WT>(P, weights, sorted, sample_t, sample_ray, origins, dirs, net_offsets, \
                                      tile_start, tile, pass_counters, sigma_out, rgb_out);               \
    }

KN_EVALUATE_NETWORKS(16, float, f32)
KN_EVALUATE_NETWORKS(32, float, f32)
KN_EVALUATE_NETWORKS(64, float, f32)
KN_EVALUATE_NETWORKS(16, __half, f16)
KN_EVALUATE_NETWORKS(32, __half, f16)
KN_EVALUATE_NETWORKS(64, __half, f16)

// ---------------------------------------------------------------------------------------------
// Front-to-back compositing of this pass's samples per active ray (in lattice order), ERT, and
// compaction of the rays that go on into the next active list.
extern "C" __global__ void composite_front_to_back(
    kn::RenderParams P, const int* __restrict__ active, i64 n_active, const i64* __restrict__ ray_base,
    const int* __restrict__ ray_count, const uint8_t* __restrict__ ray_exhausted,
    const float* __restrict__ sample_t, const int* __restrict__ sample_net, const float* __restrict__ sigma,
    const float* __restrict__ rgb, float* __restrict__ trans, float* __restrict__ color, float* __restrict__ depth,
    float* __restrict__ best_w, int* __restrict__ best_net, int* __restrict__ active_next,
    u64* __restrict__ frame_counters, u64* __restrict__ pass_counters) {
    for (i64 a = global_thread_index(); a < n_active; a += grid_stride()) {
        const i64 r = active[a];
        const i64 base = ray_base[a];
        const int n = ray_count[a];
        float T = trans[r], D = depth[r], bw = best_w[r];
        int bn = best_net[r];
        float C[3] = {color[3 * r], color[3 * r + 1], color[3 * r + 2]};
        const bool stopped = kn::composite_ray_pass(P, n, sample_t + base, sigma + base, rgb + 3 * base,
                                                    sample_net + base, T, C, D, bw, bn);
        trans[r] = T;
        depth[r] = D;
        best_w[r] = bw;
        best_net[r] = bn;
        color[3 * r] = C[0];
        color[3 * r + 1] = C[1];
        color[3 * r + 2] = C[2];
        const bool goes_on = !stopped && !ray_exhausted[a];
        warp_aggregated_add(&frame_counters[kRaysTerminatedEarly], stopped && !ray_exhausted[a] ? 1ull : 0ull);
        const u64 slot = warp_aggregated_add(&pass_counters[kActiveNext], goes_on ? 1ull : 0ull);
        if (goes_on) active_next[slot] = (int)r;
    }
}

// pixel = C + T_end * background, as float RGB [N, 3]; optional expected depth [N], T_end [N] and
// RGBA8 (a GL pixel buffer; flip_y writes row y to row H-1-y, GL's bottom-up order). Null outputs are
// skipped.
extern "C" __global__ void write_pixels(kn::RenderParams P, i64 n_rays, int width, int height,
                                        const float* __restrict__ trans, const float* __restrict__ color,
                                        const float* __restrict__ depth, float* __restrict__ out_rgb,
                                        float* __restrict__ out_depth, float* __restrict__ out_trans,
                                        uchar4* __restrict__ out_rgba8, int flip_y) {
    for (i64 r = global_thread_index(); r < n_rays; r += grid_stride()) {
        float px[3];
        kn::pixel_value(P, color + 3 * r, trans[r], px);
        if (out_rgb) {
            out_rgb[3 * r] = px[0];
            out_rgb[3 * r + 1] = px[1];
            out_rgb[3 * r + 2] = px[2];
        }
        if (out_depth) out_depth[r] = kn::expected_depth(depth[r], trans[r]);
        if (out_trans) out_trans[r] = trans[r];
        if (out_rgba8) {
            i64 dst = r;
            if (flip_y) {
                const i64 y = r / width, x = r % width;
                dst = (i64)(height - 1 - y) * width + x;
            }
            out_rgba8[dst] = make_uchar4(kn::to_unorm8(px[0]), kn::to_unorm8(px[1]), kn::to_unorm8(px[2]), 255);
        }
    }
}

// Number of networks that received at least one sample this frame.
extern "C" __global__ void count_touched(int num_networks, const uint8_t* __restrict__ net_touched,
                                         u64* __restrict__ out) {
    unsigned int local = 0;
    for (i64 m = global_thread_index(); m < num_networks; m += grid_stride()) local += net_touched[m];
    if (local) atomicAdd(out, (u64)local);
}
