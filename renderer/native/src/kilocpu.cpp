// The native CPU renderer's baseline translation unit: the thread pool, the frame workspace, the choice
// of instruction set, and the C functions Python calls through ctypes (renderer/native/library.py).
// The kernels themselves are in isa_*.cpp (one compilation of render_impl.h per instruction set).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kilocpu.h"

using kc::i64;

namespace {

// A fixed set of workers that sleep on a condition variable between parallel loops (they never spin, so
// they do not compete with torch's OpenMP threads). One parallel loop runs at a time; the calling thread
// takes part as worker 0.
class Pool {
   public:
    ~Pool() { stop(); }

    void resize(int threads) {
        std::lock_guard<std::mutex> run(run_mu_);
        stop();
        threads_ = std::max(1, threads);
        stopping_ = false;
        for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { loop(w); });
    }

    int threads() const { return threads_; }

    void run(i64 n, i64 grain, kc_task_fn fn, void* ctx) {
        grain = std::max<i64>(1, grain);
        std::lock_guard<std::mutex> run(run_mu_);
        if (threads_ == 1 || n <= grain) {
            for (i64 b = 0; b < n; b += grain) fn(ctx, b, std::min(n, b + grain), 0);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mu_);
            fn_ = fn, ctx_ = ctx, n_ = n, grain_ = grain;
            next_.store(0);
            busy_ = threads_ - 1;
            ++generation_;
        }
        wake_.notify_all();
        work(0);
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [this] { return busy_ == 0; });
    }

   private:
    void work(int worker) {
        for (;;) {
            const i64 b = next_.fetch_add(grain_);
            if (b >= n_) return;
            fn_(ctx_, b, std::min(n_, b + grain_), worker);
        }
    }

    void loop(int worker) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mu_);
                wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
                if (stopping_) return;
                seen = generation_;
            }
            work(worker);
            std::lock_guard<std::mutex> lock(mu_);
            if (--busy_ == 0) done_.notify_one();
        }
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
        threads_ = 1;
    }

    std::mutex run_mu_, mu_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    int threads_ = 1;
    bool stopping_ = false;
    uint64_t generation_ = 0;
    int busy_ = 0;
    kc_task_fn fn_ = nullptr;
    void* ctx_ = nullptr;
    i64 n_ = 0, grain_ = 1;
    std::atomic<i64> next_{0};
};

Pool& pool() {
    static Pool p;
    return p;
}

bool cpu_has(int isa) {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (isa == kc::kAvx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (isa == kc::kAvx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    return isa == kc::kGeneric;
}

const kc::KernelTable* table(int isa) {
    const kc::KernelTable* t = isa == kc::kAvx512 ? &kc_table_avx512 : isa == kc::kAvx2 ? &kc_table_avx2
                                                                                           : &kc_table_generic;
    return (t->isa == isa && cpu_has(isa)) ? t : nullptr;
}

}  // namespace

#ifndef KC_SOURCE_DIGEST
#define KC_SOURCE_DIGEST "unknown"
#endif

extern "C" {

// The digest of the sources this library was built from (renderer/native/build.py reads it from the file).
KC_EXPORT extern const char kc_source_digest[] = "KILOCPU_SOURCE_DIGEST=" KC_SOURCE_DIGEST;

void kc_parallel_for(i64 n, i64 grain, kc_task_fn fn, void* ctx) { pool().run(n, grain, fn, ctx); }
KC_EXPORT int kc_threads() { return pool().threads(); }

void* kc_workspace_get(kc::Workspace* ws, int slot, i64 bytes) {
    if (slot < 0 || slot >= kc::kWorkspaceSlots || bytes < 0) return nullptr;
    if (ws->ptr[slot] && ws->bytes[slot] >= bytes) return ws->ptr[slot];
    free(ws->ptr[slot]);
    const i64 size = (std::max<i64>(bytes, 64) + 63) & ~(i64)63;
    ws->ptr[slot] = aligned_alloc(64, (size_t)size);
    ws->bytes[slot] = ws->ptr[slot] ? size : 0;
    return ws->ptr[slot];
}

void kc_workspace_free(kc::Workspace* ws) {
    for (int i = 0; i < kc::kWorkspaceSlots; ++i) {
        free(ws->ptr[i]);
        ws->ptr[i] = nullptr;
        ws->bytes[i] = 0;
    }
}

KC_EXPORT kc::Workspace* kc_workspace_new() { return static_cast<kc::Workspace*>(calloc(1, sizeof(kc::Workspace))); }
KC_EXPORT void kc_workspace_delete(kc::Workspace* ws) {
    if (!ws) return;
    kc_workspace_free(ws);
    free(ws);
}

// 1 when this build and this CPU can run the instruction set (0 generic, 1 AVX2, 2 AVX-512).
KC_EXPORT int kc_isa_available(int isa) { return table(isa) != nullptr ? 1 : 0; }

KC_EXPORT void kc_set_threads(int threads) { pool().resize(threads); }

KC_EXPORT int kc_abi_sizes(int* out) {
    out[0] = (int)sizeof(kn::RenderParams), out[1] = (int)sizeof(kn::CameraParams);
    out[2] = (int)sizeof(kc::CpuScene), out[3] = (int)sizeof(kc::CpuFrame), out[4] = (int)sizeof(kc::FrameIO);
    out[5] = (int)sizeof(kc::WeightOffsets);
    return 6;
}

KC_EXPORT int kc_render_frame(int isa, const kn::RenderParams* P, const kc::CpuScene* S, const kc::CpuFrame* F,
                    kc::FrameIO* io) {
    const kc::KernelTable* t = table(isa);
    return t ? t->render_frame(P, S, F, io) : -3;
}

KC_EXPORT int kc_rays_for_pixels(int isa, const kn::CameraParams* cam, i64 first, i64 count, float* o, float* d) {
    const kc::KernelTable* t = table(isa);
    if (!t) return -3;
    t->rays_for_pixels(cam, first, count, o, d);
    return 0;
}

KC_EXPORT int kc_clip_to_box(int isa, const kn::RenderParams* P, i64 n, const float* o, const float* d, float* t0,
                   i64* n_steps) {
    const kc::KernelTable* t = table(isa);
    if (!t) return -3;
    t->clip_to_box(P, n, o, d, t0, n_steps);
    return 0;
}

KC_EXPORT int kc_march_pass(int isa, const kn::RenderParams* P, const kc::CpuScene* S, i64 n_live, const int32_t* live,
                  const float* o, const float* d, const float* t0, const i64* n_steps, i64* k, int K, i64* slot_k,
                  int32_t* slot_net, int32_t* count) {
    const kc::KernelTable* t = table(isa);
    if (!t) return -3;
    t->march_pass(P, S, n_live, live, o, d, t0, n_steps, k, K, kc::PassSlots{slot_k, slot_net, count});
    return 0;
}

KC_EXPORT int kc_evaluate_points(int isa, const kn::RenderParams* P, const kc::CpuScene* S, i64 n, const float* x,
                                 const float* d, const int32_t* net, float* sigma, float* rgb, kc::Workspace* ws) {
    const kc::KernelTable* t = table(isa);
    return t ? t->evaluate_points(P, S, n, x, d, net, sigma, rgb, ws) : -3;
}

KC_EXPORT int kc_unpack_network(int isa, const kn::RenderParams* P, const kc::CpuScene* S, int net, float* out) {
    const kc::KernelTable* t = table(isa);
    return t ? t->unpack_network(P, S, net, out) : -3;
}

KC_EXPORT int kc_composite_pass(int isa, const kn::RenderParams* P, int has_ert, i64 n_live, const int32_t* live, int K,
                      const float* t0, const i64* slot_k, const int32_t* slot_net, const int32_t* count,
                      const float* sigma, const float* rgb, float* trans, float* color, float* depth, float* best_w,
                      int32_t* best_net, uint8_t* stopped) {
    const kc::KernelTable* t = table(isa);
    if (!t) return -3;
    t->composite_pass(P, has_ert, n_live, live, K, t0, slot_k, slot_net, count, sigma, rgb, trans, color, depth,
                      best_w, best_net, stopped);
    return 0;
}

KC_EXPORT int kc_write_pixels(int isa, const kn::RenderParams* P, int output, i64 n, const float* color, const float* trans,
                    const float* depth, const int32_t* best_net, float* rgb) {
    const kc::KernelTable* t = table(isa);
    if (!t) return -3;
    t->write_pixels(P, output, n, color, trans, depth, best_net, rgb);
    return 0;
}

// Lattice samples t = t0 + (k + 1/2)·step, t < t1, of n rays whose points fall in a set voxel of a bool
// grid over a box; writes their flat indices r·s + k in ascending order to out (room for n·s) and returns how
// many. Every float operation is the one of its torch twin, in its order (trainer.teachers.lattice,
// lattice_samples_in_mask), so both keep the same samples.
KC_EXPORT i64 kc_lattice_samples_in_mask(i64 n, const float* o, const float* d, const float* t0, const float* t1,
                                         float step, i64 s, const uint8_t* mask, const i64* dims, const float* box,
                                         i64* out) {
    const float ext[3] = {box[3] - box[0], box[4] - box[1], box[5] - box[2]};
    const float fdim[3] = {(float)dims[0], (float)dims[1], (float)dims[2]};
    i64 count = 0;
    for (i64 r = 0; r < n; ++r) {
        const float* ro = o + 3 * r;
        const float* rd = d + 3 * r;
        for (i64 k = 0; k < s; ++k) {
            const float t = t0[r] + ((float)k + 0.5f) * step;
            if (!(t < t1[r])) break;  // t does not decrease with k
            i64 flat = 0;
            bool inside = true;
            for (int a = 0; a < 3 && inside; ++a) {
                const float f = (ro[a] + t * rd[a] - box[a]) / ext[a] * fdim[a];
                inside = f >= 0.0f && f <= fdim[a];
                if (inside) flat = flat * dims[a] + std::min((i64)floorf(f), dims[a] - 1);
            }
            if (inside && mask[flat]) out[count++] = r * s + k;
        }
    }
    return count;
}

}  // extern "C"
