// The native CPU renderer's binary interface: the structs Python fills (renderer/native/abi.py mirrors
// them with ctypes) and the kernel table each instruction-set variant exports.
//
// Each step of a frame is one named function with one contract (renderer/steps.py lists them with their
// torch twins): rays_for_pixels, clip_to_box, march_pass, evaluate_points (the networks), composite_pass,
// write_pixels; render_frame chains them. The per-sample geometry is common.cuh, shared with CUDA.
#pragma once

#include "common.cuh"

// The functions Python calls (the library is built with -fvisibility=hidden).
#define KC_EXPORT __attribute__((visibility("default")))

namespace kc {

using kn::i64;

enum Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2, kNumIsas = 3 };
enum Output { kRgb = 0, kDepth = 1, kNetwork = 2 };
enum Stat {
    kRaysHitBox = 0,
    kSamplesMarched = 1,
    kSamplesEvaluated = 2,
    kNetworksTouched = 3,
    kPasses = 4,
    kRaysTerminatedEarly = 5,
    kNumStats = 8
};

// Offsets (floats) of each block inside one network's packed weights (renderer/native/abi.py packs them).
// Encoding inputs are laid out as [sin(2^l v_c) for l, c][cos(...)][v]: l0's rows and l3's encoding rows
// are permuted to match, so the vectorised sin/cos write their outputs in place.
struct WeightOffsets {
    int w0;   // [6P+3, H]
    int b0;   // [H]
    int w1;   // [H, H]
    int b1;   // [H]
    int w2f;  // [H, H]   feature columns of l2
    int b2f;  // [H]
    int w2d;  // [H]      density column of l2
    int b2d;  // [1]
    int w3;   // [H+6D+3, H] rows: feature, sin, cos, d
    int b3;   // [H]
    int w4t;  // [3, H]   l4 transposed
    int b4;   // [3]
    int stride;
};

// The ten tensors of the scene as its file stores them (y = x @ W + b, W [in, out]; every tensor [M, ...],
// C order), float32 or IEEE half. Just before a network's samples run, its rows are unpacked (permuted,
// split, transposed, widened) into the WeightOffsets layout (mlp_impl.h: unpack_network), so a render
// holds no copy of all the weights.
enum LayerTensor { kL0W = 0, kL0B, kL1W, kL1B, kL2W, kL2B, kL3W, kL3B, kL4W, kL4B, kNumLayerTensors };
struct SourceWeights {
    const void* t[kNumLayerTensors];  // l0.weight [M, 3+6P, H], l0.bias [M, H], l1.* [M, H, H], [M, H],
                                      // l2.* [M, H, 1+H], [M, 1+H] (column 0: density), l3.weight
                                      // [M, H+3+6D, H], l3.bias [M, H], l4.* [M, H, 3], [M, 3]
    int half;                         // 1: IEEE half, 0: float32
    int pos_freqs, dir_freqs;         // the file's octaves P, D (RenderParams has those the kernels read)
};

// A scene prepared for the CPU: pointers into arrays that Python owns and keeps alive.
struct CpuScene {
    const int32_t* network_index;  // [rx*ry*rz] network per cell, -1 = none
    const uint8_t* valid[2];       // [voxels / 8] packed bits (bit i % 8 of byte i / 8): 1 where a sample may
                                   // contribute ([0]: ESS off, [1]: on)
    const uint8_t* distance[2];    // [fine blocks] empty-space distance over blocks of `fine` voxels per axis,
                                   // in those blocks (capped); 4 bytes of padding after it
    const uint8_t* block_distance[2];  // [blocks] the same over blocks of `block` voxels per axis, in blocks
    SourceWeights src;             // the scene's own tensors (no packed copy of every network)
    WeightOffsets off;             // the float32 layout each network is unpacked into before it runs
    float voxel_size[3];  // (max - min) / occ_res, float32
    int fine_res[3];      // ceil(occ_res / fine)
    int fine;             // voxels per edge of a distance-field block (renderer.distance_field.FINE_BLOCK)
    int block_res[3];     // ceil(occ_res / block)
    int block;            // voxels per block edge
    int distance_cap;
};

// Frame settings beyond kn::RenderParams (renderer.frame.FrameParams).
struct CpuFrame {
    int grow_passes;    // later passes with few live rays take more samples per ray
    int growth_cap;     // ... up to this many
    int sample_budget;  // ... while live rays * 2K stays within this
    int chunk_size;     // rays marched at once
    int output;         // Output
    int has_ert;        // ERT on (threshold in RenderParams)
};

// Buffers reused from frame to frame (grown on demand by kc_workspace_get; freed by kc_workspace_free).
constexpr int kWorkspaceSlots = 32;
struct Workspace {
    void* ptr[kWorkspaceSlots];
    i64 bytes[kWorkspaceSlots];
};

// Rays in (a camera or explicit rays), per-ray results out.
struct FrameIO {
    Workspace* workspace;            // null: buffers live for this frame only
    i64 n_rays;
    const kn::CameraParams* camera;  // when not null, rays come from the camera (n_rays = W*H)
    const float* origins;            // else [n_rays, 3]
    const float* dirs;               // [n_rays, 3] unit
    float* rgb;                      // [n_rays, 3] the picture of the asked output
    float* depth;                    // [n_rays] expected depth (0: nothing hit)
    float* trans;                    // [n_rays] T_end
    int32_t* network;                // [n_rays] dominant network (-1: none)
    uint8_t* touched;                // [num_networks] 1 where a network was evaluated; may be null
    i64 stats[kNumStats];
    i64 step_ns[kNumStats];  // wall time per step: StepTime
};

// Slots of FrameIO::step_ns.
enum StepTime { kTimeRays = 0, kTimeMarch = 1, kTimeSort = 2, kTimeEvaluate = 3, kTimeComposite = 4, kTimeWrite = 5 };

// One pass's slots: ray i of the pass owns slots [i*K, i*K + count[i]); empty slots have net -1.
struct PassSlots {
    i64* k;         // lattice index
    int32_t* net;   // network id, -1: no sample (dropped at a cell face, or not filled)
    int32_t* count; // slots used per ray
};

typedef void (*RaysFn)(const kn::CameraParams* cam, i64 first, i64 count, float* o, float* d);
typedef void (*ClipFn)(const kn::RenderParams* P, i64 n, const float* o, const float* d, float* t0, i64* n_steps);
typedef void (*WritePixelsFn)(const kn::RenderParams* P, int output, i64 n, const float* color, const float* trans,
                              const float* depth, const int32_t* best_net, float* rgb);
typedef int (*RenderFn)(const kn::RenderParams* P, const CpuScene* S, const CpuFrame* F, FrameIO* io);
typedef int (*EvaluateFn)(const kn::RenderParams* P, const CpuScene* S, i64 n, const float* x, const float* d,
                          const int32_t* net, float* sigma, float* rgb, Workspace* ws);
typedef void (*MarchFn)(const kn::RenderParams* P, const CpuScene* S, i64 n_live, const int32_t* live,
                        const float* origins, const float* dirs, const float* t0, const i64* n_steps, i64* k,
                        int K, PassSlots slots);
typedef int (*UnpackFn)(const kn::RenderParams* P, const CpuScene* S, int net, float* out);
typedef void (*CompositeFn)(const kn::RenderParams* P, int has_ert, i64 n_live, const int32_t* live, int K,
                            const float* t0, const i64* slot_k, const int32_t* slot_net, const int32_t* count,
                            const float* sigma, const float* rgb, float* trans, float* color, float* depth,
                            float* best_w, int32_t* best_net, uint8_t* stopped);

struct KernelTable {
    int isa;
    RaysFn rays_for_pixels;
    ClipFn clip_to_box;
    WritePixelsFn write_pixels;
    RenderFn render_frame;
    EvaluateFn evaluate_points;
    MarchFn march_pass;
    CompositeFn composite_pass;
    UnpackFn unpack_network;
};

}  // namespace kc

extern "C" {
// Thread pool of the baseline translation unit (kilocpu.cpp). fn(ctx, begin, end, worker) runs over
// [0, n) in pieces of at most `grain`, on the calling thread and the pool's workers; worker < threads.
typedef void (*kc_task_fn)(void* ctx, kc::i64 begin, kc::i64 end, int worker);
void kc_parallel_for(kc::i64 n, kc::i64 grain, kc_task_fn fn, void* ctx);
int kc_threads();
// A buffer of at least `bytes` bytes in slot `slot` of the workspace (contents undefined after growing;
// 64-byte aligned); null when out of memory.
void* kc_workspace_get(kc::Workspace* ws, int slot, kc::i64 bytes);
void kc_workspace_free(kc::Workspace* ws);

extern const kc::KernelTable kc_table_generic;
extern const kc::KernelTable kc_table_avx2;
extern const kc::KernelTable kc_table_avx512;
}
