// render_frame: the steps of frame_impl.h chained over a frame's rays, in chunks and passes with the torch
// renderer's schedule (renderer.frame.FrameParams.pass_samples). Each pass's live rays are processed in
// sub-batches (march, sort, evaluate, composite) so that a pass's buffers stay cache-sized; that changes
// nothing in the results, since every ray and every sample is independent within a pass.
#pragma once

#include <time.h>

#include "frame_impl.h"

namespace {

enum WsSlot {
    kWsO, kWsD, kWsT0, kWsN, kWsK, kWsTrans, kWsColor, kWsDepth, kWsBestW, kWsBestNet, kWsLive, kWsStopped,
    kWsSlotK, kWsSlotNet, kWsSlotCount, kWsSigma, kWsRgb, kWsSorted, kWsItemB, kWsItemE, kWsItemNet, kWsHist,
    kWsTouched, kWsCount
};
static_assert(kWsCount <= kc::kWorkspaceSlots, "workspace slots");

constexpr i64 kSubBatch = 1 << 15;

inline i64 now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (i64)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Adds the time since the last call to slot `slot` of the frame's step times.
struct StepClock {
    i64* ns;
    i64 last = now_ns();
    void lap(int slot) {
        const i64 t = now_ns();
        ns[slot] += t - last;
        last = t;
    }
};  // live rays marched, sorted, evaluated and composited together

template <typename T>
inline T* ws_get(kc::Workspace* ws, int slot, i64 n) {
    return static_cast<T*>(kc_workspace_get(ws, slot, (i64)sizeof(T) * (n > 0 ? n : 1)));
}

inline int pass_samples(const CpuFrame& F, int k0, int pass, i64 live) {
    int k = k0;
    for (int i = 0; F.grow_passes && i < pass; ++i) {
        if (k >= F.growth_cap || live * k * 2 > F.sample_budget) break;
        k *= 2;
    }
    return k;
}

struct Chunk {
    float *o, *d, *t0, *trans, *color, *depth, *best_w;
    i64 *n, *k;
    int32_t *best_net, *live;
    uint8_t* stopped;
};

struct PassBuffers {
    PassSlots slots;
    float *sigma, *rgb;
    NetworkRuns runs;
    i64* hist;
};

inline bool get_chunk(kc::Workspace* ws, i64 R, Chunk& c) {
    c.o = ws_get<float>(ws, kWsO, 3 * R), c.d = ws_get<float>(ws, kWsD, 3 * R);
    c.t0 = ws_get<float>(ws, kWsT0, R), c.trans = ws_get<float>(ws, kWsTrans, R);
    c.color = ws_get<float>(ws, kWsColor, 3 * R), c.depth = ws_get<float>(ws, kWsDepth, R);
    c.best_w = ws_get<float>(ws, kWsBestW, R), c.n = ws_get<i64>(ws, kWsN, R), c.k = ws_get<i64>(ws, kWsK, R);
    c.best_net = ws_get<int32_t>(ws, kWsBestNet, R), c.live = ws_get<int32_t>(ws, kWsLive, R);
    c.stopped = ws_get<uint8_t>(ws, kWsStopped, R);
    return c.o && c.d && c.t0 && c.trans && c.color && c.depth && c.best_w && c.n && c.k && c.best_net && c.live &&
           c.stopped;
}

inline bool get_pass(kc::Workspace* ws, const RenderParams& P, i64 cap, PassBuffers& b) {
    const int M = P.num_networks, T = kc_threads();
    const i64 ni = max_items(cap, M);
    b.slots.k = ws_get<i64>(ws, kWsSlotK, cap), b.slots.net = ws_get<int32_t>(ws, kWsSlotNet, cap);
    b.slots.count = ws_get<int32_t>(ws, kWsSlotCount, kSubBatch);
    b.sigma = ws_get<float>(ws, kWsSigma, cap), b.rgb = ws_get<float>(ws, kWsRgb, 3 * cap);
    b.runs.sorted = ws_get<i64>(ws, kWsSorted, cap), b.runs.item_begin = ws_get<i64>(ws, kWsItemB, ni);
    b.runs.item_end = ws_get<i64>(ws, kWsItemE, ni), b.runs.item_net = ws_get<int32_t>(ws, kWsItemNet, ni);
    b.hist = ws_get<i64>(ws, kWsHist, (i64)T * M);
    return b.slots.k && b.slots.net && b.slots.count && b.sigma && b.rgb && b.runs.sorted &&
           b.runs.item_begin && b.runs.item_end && b.runs.item_net && b.hist;
}

// Rays [a, a + R): generated or copied, clipped, accumulators reset; returns the number of live rays.
inline i64 start_chunk(const RenderParams& P, const kc::FrameIO& io, i64 a, i64 R, Chunk& c) {
    auto body = [&](i64 b, i64 e, int) {
        for (i64 r = b; r < e; ++r) {
            if (io.camera) {
                kn::camera_ray(*io.camera, a + r, c.o + 3 * r, c.d + 3 * r);
            } else {
                memcpy(c.o + 3 * r, io.origins + 3 * (a + r), 3 * sizeof(float));
                memcpy(c.d + 3 * r, io.dirs + 3 * (a + r), 3 * sizeof(float));
            }
            clip_ray(P, c.o + 3 * r, c.d + 3 * r, c.t0[r], c.n[r]);
            c.k[r] = 0, c.trans[r] = 1.0f, c.depth[r] = 0.0f, c.best_w[r] = 0.0f, c.best_net[r] = -1;
            c.color[3 * r] = c.color[3 * r + 1] = c.color[3 * r + 2] = 0.0f;
        }
    };
    parallel(R, 2048, body);
    i64 n_live = 0;
    for (i64 r = 0; r < R; ++r)
        if (c.n[r] > 0) c.live[n_live++] = (int32_t)r;
    return n_live;
}

// One sub-batch of a pass: rays live[0, L) march K samples, are evaluated and composited.
inline int pass_sub_batch(const RenderParams& P, const CpuScene& S, const CpuFrame& F, Chunk& c, const int32_t* live,
                          uint8_t* stopped, i64 L, int K, PassBuffers& b, uint8_t* touched, i64* stats,
                          StepClock& clock) {
    march_pass(&P, &S, L, live, c.o, c.d, c.t0, c.n, c.k, K, b.slots);
    clock.lap(kc::kTimeMarch);
    sort_by_network(b.slots.net, L * K, P.num_networks, b.hist, b.runs, touched);
    clock.lap(kc::kTimeSort);
    stats[kc::kSamplesEvaluated] += b.runs.count;
    const i64* sk = b.slots.k;
    auto sample = [&](i64 pos, float* x, float* dir) {
        const i64 slot = b.runs.sorted[pos];
        const i64 r = live[slot / K];
        kn::point_on_ray(c.o + 3 * r, c.d + 3 * r, kn::lattice_t(c.t0[r], sk[slot], P.step), x);
        dir[0] = c.d[3 * r], dir[1] = c.d[3 * r + 1], dir[2] = c.d[3 * r + 2];
    };
    if (const int rc = evaluate_runs(P, S, b.runs, sample, b.sigma, b.rgb)) return rc;
    clock.lap(kc::kTimeEvaluate);
    composite_pass(&P, F.has_ert, L, live, K, c.t0, sk, b.slots.net, b.slots.count, b.sigma, b.rgb, c.trans, c.color,
                   c.depth, c.best_w, c.best_net, stopped);
    clock.lap(kc::kTimeComposite);
    return 0;
}

// Marches one chunk to the end; returns the number of passes (or < 0 on error).
inline int march_chunk(const RenderParams& P, const CpuScene& S, const CpuFrame& F, kc::Workspace* ws, Chunk& c,
                       i64 n_live, uint8_t* touched, i64* stats, StepClock& clock) {
    const i64 cap = (n_live < kSubBatch ? n_live : kSubBatch) * P.samples_per_pass;
    PassBuffers b;
    if (!get_pass(ws, P, cap > F.sample_budget ? cap : F.sample_budget, b)) return -2;
    int passes = 0;
    while (n_live > 0) {
        const int K = pass_samples(F, P.samples_per_pass, passes, n_live);
        ++passes;
        for (i64 i0 = 0; i0 < n_live; i0 += kSubBatch) {
            const i64 L = n_live - i0 < kSubBatch ? n_live - i0 : kSubBatch;
            if (pass_sub_batch(P, S, F, c, c.live + i0, c.stopped + i0, L, K, b, touched, stats, clock) != 0)
                return -1;
        }
        i64 kept = 0;
        for (i64 i = 0; i < n_live; ++i) {
            const int32_t r = c.live[i];
            const bool exhausted = c.k[r] >= c.n[r];
            if (c.stopped[i] && !exhausted) ++stats[kc::kRaysTerminatedEarly];
            if (!exhausted && !c.stopped[i]) c.live[kept++] = r;
        }
        n_live = kept;
    }
    return passes;
}

int render_frame(const RenderParams* Pp, const CpuScene* Sp, const CpuFrame* Fp, kc::FrameIO* io) {
    const RenderParams& P = *Pp;
    const CpuFrame& F = *Fp;
    if (!pick_mlp(P.hidden)) return -1;
    kc::Workspace local = {};
    kc::Workspace* ws = io->workspace ? io->workspace : &local;
    const i64 N = io->n_rays, chunk = F.chunk_size > 0 ? F.chunk_size : (N > 0 ? N : 1);
    for (int i = 0; i < kc::kNumStats; ++i) io->stats[i] = io->step_ns[i] = 0;
    StepClock clock{io->step_ns};
    uint8_t* touched = ws_get<uint8_t>(ws, kWsTouched, P.num_networks);
    int rc = touched ? 0 : -2;
    if (touched) memset(touched, 0, (size_t)P.num_networks);
    for (i64 a = 0; a < N && rc == 0; a += chunk) {
        const i64 R = N - a < chunk ? N - a : chunk;
        Chunk c;
        if (!get_chunk(ws, R, c)) {
            rc = -2;
            break;
        }
        const i64 n_live = start_chunk(P, *io, a, R, c);
        clock.lap(kc::kTimeRays);
        io->stats[kc::kRaysHitBox] += n_live;
        const int passes = march_chunk(P, *Sp, F, ws, c, n_live, touched, io->stats, clock);
        if (passes < 0) {
            rc = passes;
            break;
        }
        if (passes > io->stats[kc::kPasses]) io->stats[kc::kPasses] = passes;
        for (i64 r = 0; r < R; ++r) {
            io->stats[kc::kSamplesMarched] += c.k[r];
            kn::pixel_value(P, c.color + 3 * r, c.trans[r], io->rgb + 3 * (a + r));
            io->depth[a + r] = kn::expected_depth(c.depth[r], c.trans[r]);
            io->trans[a + r] = c.trans[r];
            io->network[a + r] = c.best_net[r];
        }
    }
    for (int m = 0; rc == 0 && m < P.num_networks; ++m) io->stats[kc::kNetworksTouched] += touched[m];
    if (rc == 0 && io->touched) memcpy(io->touched, touched, (size_t)P.num_networks);
    if (rc == 0 && F.output != kc::kRgb)
        write_pixels(&P, F.output, N, io->rgb, io->trans, io->depth, io->network, io->rgb);
    clock.lap(kc::kTimeWrite);
    if (!io->workspace) kc_workspace_free(&local);
    return rc;
}

}  // namespace
