// Plumbing shared by the kernel headers: names, aligned buffers (no std containers: these headers are
// compiled once per instruction set) and a parallel loop over the baseline unit's thread pool.
#pragma once

#include <stdlib.h>

#include "kilocpu.h"

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

}  // namespace
