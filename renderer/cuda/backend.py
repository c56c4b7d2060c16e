"""The ``cuda`` backend: the torch renderer's contract (``render(scene_or_rs, camera, options) ->
RenderResult``) on the fused kernels of ``kilonerf.cu``, driven through pycuda.

This module owns the device side of a frame: ``CudaBackend`` (device, context, loaded kernels, the scene
tables on the device) and one method per step of a frame, each launching its kernels:

``rays_for_pixels`` (``generate_rays``, or the caller's rays uploaded) → ``clip_to_box`` (``init_rays``:
slab test, active list) → per pass until no ray is active: ``march_pass`` (``march_rays``, ≤ K occupied
samples per ray) → ``sort_by_network`` (``scan_network_counts`` + ``scatter_samples``) →
``evaluate_networks`` (``evaluate_networks_h{H}``) → ``composite_pass`` (``composite_front_to_back``: ERT,
compaction) → ``write_pixels`` (``write_pixels`` + ``count_touched``: float RGB, and RGBA8 straight into a
GL pixel buffer for the viewer). The host reads one counter per pass.

A frame's device buffers are a ``device_buffers.FrameBuffers`` (named fields, drawn from a pool that only
grows). The options are resolved by ``renderer.frame.resolve_options``; the scene packing, parameter
struct and final image come from ``scene_data``. pycuda is imported only when a ``CudaBackend`` is created.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from renderer.cuda import kernels as K
from renderer.cuda.device_buffers import NULL_POINTER, DeviceBuffers, FrameBuffers, SceneBuffers
from renderer.cuda.scene_data import (
    CudaSceneData,
    RaysResult,
    SceneCache,
    finish_image,
    frame_render_params,
)
from renderer.frame import FrameParams, RenderOptions, RenderResult, RenderStats, resolve_options
from renderer.kernel_params import camera_params


def _device_index(device: Any) -> int:
    """``None`` / ``"cuda"`` → 0, ``"cuda:N"`` / ``N`` / ``torch.device`` → N."""
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    d = torch.device(device)
    if d.type != "cuda":
        raise ValueError(f"the CUDA backend needs a CUDA device, not {device!r}")
    return 0 if d.index is None else int(d.index)


@dataclass
class CudaBackendConfig:
    """Tuning of the CUDA backend."""

    block: int = 256
    """Threads per block of the per-ray kernels."""
    mlp_block: int = 128
    """Threads per block of the fused MLP kernel."""
    tile: int = 512
    """Samples per MLP work tile (one network per tile; its weights are staged once per tile)."""
    max_samples_per_pass: int = 1 << 24
    """Sample slots per pass (36 bytes each); rays that do not fit wait for the next pass."""
    device_weights: str = "float32"
    """Weights on the device: ``"float32"`` (a float16 file converted once at upload, exactly: the fused MLP
    then does no per-use conversions, about half its instructions with float16 weights) or ``"source"``
    (the file's dtype: float16 halves the weights' device memory)."""


@dataclass
class _Frame:
    """One frame in flight: its parameter struct, sizes, fused MLP kernel and buffers."""

    params: np.void
    """``kn::RenderParams``."""
    rays: int
    """N."""
    width: int
    """Pixels per row (N for bare rays)."""
    height: int
    """Rows (1 for bare rays)."""
    networks: int
    """M."""
    samples_per_pass: int
    """K."""
    capacity: int
    """Sample slots per pass."""
    scene: SceneBuffers
    """The scene's tables."""
    bufs: FrameBuffers
    """The frame's buffers."""
    mlp: Any
    """``evaluate_networks_h{H}_{f32,f16}``."""
    shared: int
    """Its dynamic shared memory in bytes."""
    host_outputs: bool
    """Whether pixels, depth and T are read back to the host."""
    first_k: int = 0
    """K of the first pass (the frame's ``samples_per_pass``)."""
    grow: bool = False
    """Whether later passes may take more samples per ray (``RenderOptions.grow_passes``)."""
    active: int = 0
    """Rays active in the current pass."""
    passes: int = 0
    """Passes so far."""


class CudaBackend:
    """Render with the fused CUDA kernels; same contract as the torch backend."""

    name = "cuda"

    def __init__(self, device: Any = None, config: CudaBackendConfig | None = None) -> None:
        import pycuda.driver as cuda  # noqa: PLC0415  (lazy: optional dependency)

        self.cuda = cuda
        self.config = config or CudaBackendConfig()
        cuda.init()
        self.device = cuda.Device(_device_index(device))
        self.context = self.device.retain_primary_context()  # shared with torch's CUDA runtime
        major, minor = self.device.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.max_shared = int(
            self.device.get_attribute(cuda.device_attribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        )
        self._scenes = SceneCache(self._weight_dtype())
        self._uploaded: tuple[CudaSceneData, SceneBuffers] | None = None
        self._lock = threading.RLock()  # one frame at a time (render thread and GL thread share buffers)
        self.debug_sync = K.debug_sync_enabled()
        self.kernel_kinds = K.kernel_parameter_kinds()  # each launch's argument format, from kilonerf.cu
        self.context.push()
        try:
            self.module = K.load_module(self.arch)
            self.fn = {
                name: self._kernel(name)
                for name in ("generate_rays", "init_rays", "march_rays", "scan_network_counts",
                             "scatter_samples", "composite_front_to_back", "write_pixels", "count_touched")
            }  # fmt: skip
            self.buffers = DeviceBuffers(cuda)
            self.start_event, self.end_event = cuda.Event(), cuda.Event()
        finally:
            self.context.pop()
        self.last_gpu_ms = 0.0
        """GPU time of the last frame (CUDA events), in milliseconds."""

    # -- public API ---------------------------------------------------------------------------------------

    def prepare(self, scene_or_rs: Any) -> CudaSceneData:
        """The scene packed for the kernels (cached for the last scene object seen); ``render`` takes it."""
        with self._lock:
            return self._scenes.get(scene_or_rs)

    def render(self, scene_or_rs: Any, camera: Any, options: RenderOptions | None = None) -> RenderResult:
        """Render a camera's view → ``RenderResult`` (``image [H, W, 3]`` float32 on the CPU)."""
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            fp = resolve_options(data, options)
            rays = self._render(data, fp, camera=camera)
        return finish_image(rays, camera, fp)

    def render_rays(
        self,
        scene_or_rs: Any,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        options: RenderOptions | None = None,
    ) -> RaysResult:
        """Render ``[N, 3]`` rays (any device; copied to the GPU) → per-ray outputs on the CPU."""
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            return self._render(data, resolve_options(data, options), origins=origins, dirs=dirs)

    def render_to_pixel_buffer(
        self, scene_or_rs: Any, camera: Any, target: Any, options: RenderOptions | None = None
    ) -> RenderStats:
        """Render into ``target`` (a ``renderer.cuda.interop.CudaGLPixelBuffer``) as RGBA8, row 0 = top.

        Returns the ``RenderStats``; the GL side then calls ``target.upload(texture)``.
        """
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            fp = resolve_options(data, options)
            self.context.push()
            try:
                target.resize(camera.width, camera.height)
                with target.map() as ptr:
                    rays = self._render(data, fp, camera=camera, rgba8_ptr=ptr, host_outputs=False)
            finally:
                self.context.pop()
        return rays.stats

    def _weight_dtype(self) -> Any:
        """``prepare_cuda_scene``'s weight dtype for ``config.device_weights`` (None: the file's own)."""
        if self.config.device_weights not in ("float32", "source"):
            raise ValueError(
                f"device_weights must be 'float32' or 'source', not {self.config.device_weights!r}"
            )
        return np.float32 if self.config.device_weights == "float32" else None

    def pixel_buffer(self, ctx: Any, width: int, height: int, prefer: str = "auto") -> Any:
        """A ``CudaGLPixelBuffer`` on moderngl context ``ctx`` bound to this backend's CUDA context."""
        from renderer.cuda.interop import CudaGLPixelBuffer  # noqa: PLC0415  (imports moderngl)

        return CudaGLPixelBuffer(ctx, width, height, prefer=prefer, cuda_context=self.context)

    def invalidate(self) -> None:
        """Forget the prepared scene (call after changing a scene's weights in place, e.g. while training)."""
        with self._lock:
            self._scenes = SceneCache(self._weight_dtype())
            self._uploaded = None

    def close(self) -> None:
        """Free the device memory."""
        with self._lock:
            self.context.push()
            try:
                self.buffers.free()
                self._uploaded = None
            finally:
                self.context.pop()

    # -- a frame ------------------------------------------------------------------------------------------

    def _render(
        self,
        data: CudaSceneData,
        fp: FrameParams,
        camera: Any = None,
        origins: torch.Tensor | None = None,
        dirs: torch.Tensor | None = None,
        rgba8_ptr: int | None = None,
        host_outputs: bool = True,
    ) -> RaysResult:
        """One frame of a camera's pixels, or of the caller's rays (``origins`` / ``dirs``)."""
        start = time.perf_counter()
        if camera is not None:
            width, height = int(camera.width), int(camera.height)
        else:
            assert origins is not None and dirs is not None
            width, height = int(origins.shape[0]), 1
        self.context.push()
        try:
            f = self._begin_frame(data, fp, width, height, host_outputs)
            self.start_event.record()
            self.rays_for_pixels(f, camera, origins, dirs)
            self.clip_to_box(f)
            while f.active > 0:
                self.grow_pass(f)
                f.passes += 1
                self.march_pass(f)
                stored = self.sort_by_network(f)
                self.evaluate_networks(f, stored)
                self.composite_pass(f)
            self.write_pixels(f, rgba8_ptr)
            return self._read_back(f, start)
        finally:
            self.context.pop()

    def _begin_frame(
        self, data: CudaSceneData, fp: FrameParams, width: int, height: int, host_outputs: bool
    ) -> _Frame:
        """Sizes, parameter struct, MLP kernel and buffers of a frame of ``width × height`` rays."""
        n = width * height
        if n >= K.INT32_MAX:
            raise ValueError(f"{n} rays is more than the kernels' int32 ray ids allow")
        params = frame_render_params(data, fp)
        kpp = int(params["samples_per_pass"])
        m = data.num_networks
        cap = K.sample_capacity(n, kpp, self.config.max_samples_per_pass)
        mlp, smem = self._mlp_function(data)
        return _Frame(
            params=params, rays=n, width=width, height=height, networks=m, samples_per_pass=kpp,
            capacity=cap, scene=self._scene_buffers(data), mlp=mlp, shared=smem, host_outputs=host_outputs,
            bufs=FrameBuffers.allocate(self.buffers, n, cap, m, host_outputs), first_k=kpp,
            grow=fp.grow_passes,
        )  # fmt: skip

    def _grid(self, items: int) -> tuple[int, int]:
        """Grid of a grid-stride launch over ``items`` with the per-ray block size."""
        return (K.blocks_for(items, self.config.block), 1)

    def _read_pass_counters(self, f: _Frame) -> None:
        """The one host sync of a pass: rays still active → ``f.active``."""
        counters = np.zeros(K.NUM_COUNTERS, np.uint64)
        self.cuda.memcpy_dtoh(counters, f.bufs.pass_counters)
        f.active = int(counters[K.PASS_ACTIVE_NEXT])

    # -- the steps of a frame, one launch site each --------------------------------------------------------

    def rays_for_pixels(
        self, f: _Frame, camera: Any, origins: torch.Tensor | None, dirs: torch.Tensor | None
    ) -> None:
        """Rays of a camera's pixels (``generate_rays``), or the caller's ``[N, 3]`` rays uploaded."""
        b = f.bufs
        if camera is not None:
            self.fn["generate_rays"](
                camera_params(camera), b.origins, b.dirs, block=(self.config.block, 1, 1),
                grid=self._grid(f.rays),
            )  # fmt: skip
            return
        assert origins is not None and dirs is not None
        self.cuda.memcpy_htod(b.origins, np.ascontiguousarray(origins.detach().cpu().numpy(), np.float32))
        self.cuda.memcpy_htod(b.dirs, np.ascontiguousarray(dirs.detach().cpu().numpy(), np.float32))

    def clip_to_box(self, f: _Frame) -> None:
        """``init_rays``: slab test, accumulators reset, rays with a lattice sample on the active list."""
        b, cuda = f.bufs, self.cuda
        cuda.memset_d8(b.frame_counters, 0, 8 * K.NUM_COUNTERS)
        cuda.memset_d8(b.pass_counters, 0, 8 * K.NUM_COUNTERS)
        cuda.memset_d8(b.net_touched, 0, max(1, f.networks))
        self.fn["init_rays"](
            f.params, np.int64(f.rays), b.origins, b.dirs, b.t0, b.t1, b.k_next, b.trans, b.color, b.depth,
            b.best_w, b.best_net, b.active, b.frame_counters, b.pass_counters,
            block=(self.config.block, 1, 1), grid=self._grid(f.rays),
        )  # fmt: skip
        self._read_pass_counters(f)

    def grow_pass(self, f: _Frame) -> None:
        """K of the next pass (``kernels.pass_samples_per_ray``): more samples per ray as rays retire."""
        k = K.pass_samples_per_ray(f.first_k, f.passes, f.active, f.capacity, f.grow)
        if k != f.samples_per_pass:
            f.samples_per_pass = k
            f.params = f.params.copy()
            f.params["samples_per_pass"] = k

    def march_pass(self, f: _Frame) -> None:
        """``march_rays``: ≤ K contributing samples per active ray, with a histogram per network."""
        b, s = f.bufs, f.scene
        self.cuda.memset_d8(b.pass_counters, 0, 8 * K.NUM_COUNTERS)
        self.cuda.memset_d32(b.net_counts, 0, max(1, f.networks))
        self.fn["march_rays"](
            f.params, b.active, np.int64(f.active), b.origins, b.dirs, b.t0, b.t1, b.k_next,
            s.network_index, s.occupancy, np.int64(f.capacity), b.sample_t, b.sample_ray, b.sample_net,
            b.ray_base, b.ray_count, b.ray_exhausted, b.net_counts, b.net_touched, b.frame_counters,
            b.pass_counters, block=(self.config.block, 1, 1), grid=self._grid(f.active),
        )  # fmt: skip

    def sort_by_network(self, f: _Frame) -> int:
        """Counting sort of the pass's samples by network (``scan_network_counts`` + ``scatter_samples``).

        Returns:
            An upper bound on the samples stored this pass (sizes the next launches).
        """
        b = f.bufs
        self.fn["scan_network_counts"](
            np.int32(f.networks), b.net_counts, b.net_offsets, b.tile_start, b.net_cursor,
            np.int32(self.config.tile), np.int64(f.capacity), b.pass_counters,
            block=(1024, 1, 1), grid=(1, 1),
        )  # fmt: skip
        stored_max = min(f.active * f.samples_per_pass, f.capacity)
        self.fn["scatter_samples"](
            b.sample_net, b.net_offsets, b.net_cursor, b.sorted, b.pass_counters,
            block=(self.config.block, 1, 1), grid=self._grid(stored_max),
        )  # fmt: skip
        return stored_max

    def evaluate_networks(self, f: _Frame, stored_max: int) -> None:
        """``evaluate_networks_h{H}``: σ and rgb of every stored sample, one network per work tile."""
        b, cfg = f.bufs, self.config
        f.mlp(
            f.params, f.scene.weights, b.sorted, b.sample_t, b.sample_ray, b.origins, b.dirs, b.net_offsets,
            b.tile_start, np.int32(cfg.tile), b.pass_counters, b.sigma, b.rgb,
            block=(cfg.mlp_block, 1, 1), grid=(K.tile_blocks(stored_max, f.networks, cfg.tile), 1),
            shared=f.shared,
        )  # fmt: skip

    def composite_pass(self, f: _Frame) -> None:
        """``composite_front_to_back`` (ERT, compaction); the rays still active become the next pass's."""
        b = f.bufs
        self.fn["composite_front_to_back"](
            f.params, b.active, np.int64(f.active), b.ray_base, b.ray_count, b.ray_exhausted, b.sample_t,
            b.sample_net, b.sigma, b.rgb, b.trans, b.color, b.depth, b.best_w, b.best_net, b.active_next,
            b.frame_counters, b.pass_counters, block=(self.config.block, 1, 1), grid=self._grid(f.active),
        )  # fmt: skip
        self._read_pass_counters(f)
        b.active, b.active_next = b.active_next, b.active

    def write_pixels(self, f: _Frame, rgba8_ptr: int | None) -> None:
        """``write_pixels`` (C + T·background, expected depth, T; RGBA8 into ``rgba8_ptr`` when given) and
        ``count_touched``."""
        b, blk = f.bufs, (self.config.block, 1, 1)
        rgba = NULL_POINTER if rgba8_ptr is None else np.uintp(rgba8_ptr)
        self.fn["write_pixels"](
            f.params, np.int64(f.rays), np.int32(f.width), np.int32(f.height), b.trans, b.color, b.depth,
            b.out_rgb, b.out_depth, b.out_trans, rgba, np.int32(0), block=blk, grid=self._grid(f.rays),
        )  # fmt: skip
        self.cuda.memset_d8(b.touched_count, 0, 8)
        self.fn["count_touched"](
            np.int32(f.networks), b.net_touched, b.touched_count, block=blk, grid=self._grid(f.networks)
        )

    # -- internals ----------------------------------------------------------------------------------------

    def _read_back(self, f: _Frame, start: float) -> RaysResult:
        """Wait for the frame, read its counters (and per-ray outputs when asked) → ``RaysResult``."""
        cuda, b, n = self.cuda, f.bufs, f.rays
        self.end_event.record()
        self.end_event.synchronize()
        self.last_gpu_ms = float(self.end_event.time_since(self.start_event))
        frame = np.zeros(K.NUM_COUNTERS, np.uint64)
        touched = np.zeros(1, np.uint64)
        cuda.memcpy_dtoh(frame, b.frame_counters)
        cuda.memcpy_dtoh(touched, b.touched_count)
        mask = np.zeros(max(1, f.networks), np.uint8)  # a few KB: the union over a frame's bands
        cuda.memcpy_dtoh(mask, b.net_touched)
        rgb, depth = np.zeros((n, 3), np.float32), np.zeros(n, np.float32)
        trans, net = np.ones(n, np.float32), np.full(n, -1, np.int32)
        if f.host_outputs:
            cuda.memcpy_dtoh(rgb, b.out_rgb)
            cuda.memcpy_dtoh(depth, b.out_depth)
            cuda.memcpy_dtoh(trans, b.out_trans)
            cuda.memcpy_dtoh(net, b.best_net)
        stats = RenderStats(
            rays=n,
            rays_hit_box=int(frame[K.FRAME_RAYS_HIT]),
            samples_marched=int(frame[K.FRAME_MARCHED]),
            samples_evaluated=int(frame[K.FRAME_EVALUATED]),
            networks_touched=int(touched[0]),
            passes=f.passes,
            rays_terminated_early=int(frame[K.FRAME_TERMINATED]),
            ms=(time.perf_counter() - start) * 1e3,
        )
        return RaysResult(
            torch.from_numpy(rgb), torch.from_numpy(depth), torch.from_numpy(net).long(),
            torch.from_numpy(trans), stats, torch.from_numpy(mask[: f.networks]).to(torch.bool),
        )  # fmt: skip

    def _scene_buffers(self, data: CudaSceneData) -> SceneBuffers:
        """The scene's tables on the device, uploaded once per prepared scene."""
        if self._uploaded is not None and self._uploaded[0] is data:
            return self._uploaded[1]
        bufs = SceneBuffers.upload(self.cuda, data)
        self._uploaded = (data, bufs)
        return bufs

    def _kernel(self, name: str) -> Any:
        """A kernel of the module; in debug mode (``$KILONERF_CUDA_DEBUG=1``) each launch is synchronised."""
        fn = K.PreparedKernel(self.module.get_function(name), name, self.kernel_kinds[name])
        return K.SyncedKernel(fn, name, lambda: self.cuda.Context.synchronize()) if self.debug_sync else fn

    def _mlp_function(self, data: CudaSceneData) -> tuple[Any, int]:
        """The fused MLP kernel of the scene's width and dtype, and its dynamic shared memory."""
        name = K.evaluate_kernel_name(data.hidden, data.half)
        fn = self.fn.get(name)
        if fn is None:
            fn = self.fn[name] = self._kernel(name)
        smem = K.evaluate_shared_bytes(
            data.hidden, data.weight_stride, data.weights.itemsize, self.config.mlp_block
        )
        if smem > self.max_shared:
            raise ValueError(
                f"hidden width {data.hidden} needs {smem} B of shared memory; the GPU has {self.max_shared}"
            )
        if smem > 48 * 1024:
            fn.set_attribute(self.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
        return fn, smem
