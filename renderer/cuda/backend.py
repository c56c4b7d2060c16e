"""The ``cuda`` backend: the torch renderer's contract (``render(scene_or_rs, camera, options) ->
RenderResult``) on the fused kernels of ``kilonerf.cu``, driven through pycuda.

A frame: rays (generated on the device) → ``init_rays`` (slab test, active list) → passes of
``march_rays`` (≤ K occupied samples per ray) → counting sort by network → ``evaluate_networks_h{H}``
→ ``composite_front_to_back`` (ERT, compaction) until no ray is active → ``write_pixels`` (float RGB,
and RGBA8 straight into a GL pixel buffer for the viewer). The host reads one counter per pass.

``kernels.HostEmulator`` runs the same per-ray code (``common.cuh``) on the CPU through a host-only build
of ``emulate.cu``; the tests use it to check the kernels' maths against the torch renderer without a GPU.
pycuda is imported only when a ``CudaBackend`` is created.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from renderer.cuda import kernels as K


@dataclass
class CudaSceneData:
    """A scene in the kernels' layout, on the host (uploaded once per backend)."""

    bbox_min: tuple[float, float, float]
    """Box minimum, float32-rounded."""
    bbox_max: tuple[float, float, float]
    """Box maximum, float32-rounded."""
    grid_res: tuple[int, int, int]
    """Network cells per axis."""
    occupancy_res: tuple[int, int, int]
    """Occupancy voxels per axis."""
    network_index: np.ndarray
    """``[rx·ry·rz]`` int32 network per cell, C order, −1 = none."""
    occupancy_bits: np.ndarray
    """``[ceil(ox·oy·oz / 8)]`` uint8, ``np.packbits(occ.ravel(), bitorder="little")``."""
    weights: np.ndarray
    """``[M, stride]`` packed weights (float32 or float16), see ``kernels.pack_weights``."""
    hidden: int
    """H."""
    pos_freqs: int
    """P."""
    dir_freqs: int
    """D."""
    density_activation: str
    """relu, softplus or exp."""
    density_scale: float
    """σ scale."""
    step_size: float
    """Scene marching step (float32-rounded)."""
    background: tuple[float, float, float]
    """Scene background."""
    ert_threshold: float
    """Scene ERT threshold."""

    @property
    def num_networks(self) -> int:
        """M."""
        return int(self.weights.shape[0])

    @property
    def half(self) -> bool:
        """Whether the packed weights are float16."""
        return self.weights.dtype == np.float16


def _f32(v: float) -> float:
    return float(np.float32(v))


def prepare_cuda_scene(scene_or_rs: Any, weight_dtype: Any = None) -> CudaSceneData:
    """Pack a ``Scene`` or a torch ``RenderScene`` for the kernels.

    Args:
        weight_dtype: ``np.float16`` / ``np.float32``; None keeps a Scene's dtype (F16 files stay F16 on the
            device; the kernels accumulate in float32). A RenderScene's weights are float32.
    """
    if hasattr(scene_or_rs, "spec") and hasattr(scene_or_rs, "network_index_flat"):  # RenderScene
        rs = scene_or_rs
        spec = rs.spec
        index = rs.network_index_flat.detach().cpu().numpy().astype(np.int32)
        occ = rs.occupancy_flat.detach().cpu().numpy().astype(bool)
        weights, occ_res = rs.params, tuple(rs.occupancy_res)
        step, bg, eps = rs.step_size, rs.background, rs.ert_threshold
        hidden, pf, df = spec.hidden, spec.pos_freqs, spec.dir_freqs
        act, scale = spec.density_activation, spec.density_scale
        bmin, bmax, res = spec.bbox_min, spec.bbox_max, spec.grid_res
    else:
        sc = scene_or_rs
        index = np.ascontiguousarray(sc.network_index).astype(np.int32).reshape(-1)
        occ = np.ascontiguousarray(sc.occupancy).astype(bool).reshape(-1)
        weights, occ_res = sc.weights, tuple(sc.occupancy_res)
        step, bg, eps = sc.step_size, sc.background, sc.ert_threshold
        hidden, pf, df = sc.hidden, sc.pos_freqs, sc.dir_freqs
        act, scale = sc.density_activation, sc.density_scale
        bmin, bmax, res = sc.bbox_min, sc.bbox_max, sc.grid_res
    if act not in K.DENSITY_ACTIVATIONS:
        raise ValueError(f"unknown density activation {act!r}")
    if weight_dtype is None:
        w0 = weights["l0.weight"]
        weight_dtype = np.float16 if str(getattr(w0, "dtype", "")).endswith("float16") else np.float32
    packed = K.pack_weights(weights, int(hidden), int(pf), int(df), weight_dtype)
    return CudaSceneData(
        bbox_min=tuple(_f32(v) for v in bmin),  # type: ignore[arg-type]
        bbox_max=tuple(_f32(v) for v in bmax),  # type: ignore[arg-type]
        grid_res=tuple(int(v) for v in res),  # type: ignore[arg-type]
        occupancy_res=tuple(int(v) for v in occ_res),  # type: ignore[arg-type]
        network_index=np.ascontiguousarray(index),
        occupancy_bits=np.packbits(occ, bitorder="little"),
        weights=packed,
        hidden=int(hidden),
        pos_freqs=int(pf),
        dir_freqs=int(df),
        density_activation=str(act),
        density_scale=float(scale),
        step_size=_f32(step),
        background=tuple(float(v) for v in bg),  # type: ignore[arg-type]
        ert_threshold=float(eps),
    )


def render_params(data: CudaSceneData, options: Any) -> np.void:
    """The ``kn::RenderParams`` struct of a frame (options as in ``renderer.render.RenderOptions``)."""
    p = np.zeros((), dtype=K.RENDER_PARAMS_DTYPE)
    p["bbox_min"] = data.bbox_min
    p["bbox_max"] = data.bbox_max
    # cell size as the torch renderer computes it: float64 (max − min) / res, then float32
    p["cell_size"] = [(hi - lo) / r for lo, hi, r in zip(data.bbox_min, data.bbox_max, data.grid_res)]
    p["grid_res"] = data.grid_res
    p["occ_res"] = data.occupancy_res
    p["step"] = _f32(data.step_size * float(options.step_multiplier))
    eps = data.ert_threshold if options.ert_threshold is None else options.ert_threshold
    p["ert_threshold"] = float(eps)
    p["ert"] = int(bool(options.ert))
    p["ess"] = int(bool(options.ess))
    p["pos_freqs"] = data.pos_freqs
    p["dir_freqs"] = data.dir_freqs
    p["density_activation"] = K.DENSITY_ACTIVATIONS[data.density_activation]
    p["density_scale"] = data.density_scale
    p["background"] = data.background if options.background is None else tuple(options.background)
    k = max(1, int(options.samples_per_pass))
    if (
        not options.ert
    ):  # nothing retires early: bigger passes, fewer host round trips (as the torch renderer)
        k = max(32, k)
    p["samples_per_pass"] = min(k, K.MAX_SAMPLES_PER_PASS)
    p["num_networks"] = data.num_networks
    p["weight_stride"] = data.weights.shape[1]
    p["hidden"] = data.hidden
    return p[()]  # type: ignore[return-value]


def camera_params(camera: Any) -> np.void:
    """The ``kn::CameraParams`` struct of a ``renderer.camera.Camera``."""
    p = np.zeros((), dtype=K.CAMERA_PARAMS_DTYPE)
    p["c2w"] = np.asarray(camera.c2w, dtype=np.float64)[:3, :4].reshape(-1)
    p["focal"] = float(camera.focal)
    p["cx"] = camera.width / 2 if camera.cx is None else float(camera.cx)
    p["cy"] = camera.height / 2 if camera.cy is None else float(camera.cy)
    p["width"] = int(camera.width)
    p["height"] = int(camera.height)
    return p[()]  # type: ignore[return-value]


@dataclass
class RaysResult:
    """Per-ray outputs of a frame (CPU)."""

    rgb: torch.Tensor
    """``[N, 3]`` float32 C + T·background."""
    depth: torch.Tensor
    """``[N]`` expected t (0 where nothing was hit)."""
    network: torch.Tensor
    """``[N]`` int64 dominant network (−1: none)."""
    trans: torch.Tensor
    """``[N]`` T_end."""
    stats: Any
    """``renderer.render.RenderStats``."""


def finish_image(rays: RaysResult, camera: Any, options: Any, background: Any) -> Any:
    """``RenderResult`` of a camera from per-ray outputs, shading depth / network views like the torch
    renderer (``renderer.render.shade_depth`` / ``network_colors``)."""
    from renderer.frame import RenderResult  # noqa: PLC0415
    from renderer.pixels import network_colors, shade_depth  # noqa: PLC0415

    rgb, net = rays.rgb, rays.network
    bg = torch.tensor(background, dtype=torch.float32)
    if options.output == "network":
        rgb = torch.where((net >= 0)[:, None], network_colors(net), bg[None, :])
    elif options.output == "depth":
        rgb = shade_depth(rays.depth, net >= 0, bg)
    h, w = camera.height, camera.width
    return RenderResult(
        image=rgb.reshape(h, w, 3).float(),
        depth=rays.depth.reshape(h, w).float(),
        stats=rays.stats,
        network=net.reshape(h, w) if options.output == "network" else None,
    )


def _check_output(options: Any) -> None:
    if options.output not in ("rgb", "depth", "network"):
        raise ValueError(f"output must be one of ('rgb', 'depth', 'network'), got {options.output!r}")


def _options(options: Any) -> Any:
    if options is None:
        from renderer.render import RenderOptions  # noqa: PLC0415

        options = RenderOptions()
    _check_output(options)
    return options


def _background(data: CudaSceneData, options: Any) -> tuple[float, float, float]:
    return data.background if options.background is None else tuple(options.background)


class _SceneCache:
    """The last prepared scene, reused while the same object is rendered."""

    def __init__(self) -> None:
        self.key: Any = None
        self.data: CudaSceneData | None = None

    def get(self, scene_or_rs: Any) -> CudaSceneData:
        if isinstance(scene_or_rs, CudaSceneData):
            return scene_or_rs
        if self.data is None or self.key is not scene_or_rs:
            self.data = prepare_cuda_scene(scene_or_rs)
            self.key = scene_or_rs
        return self.data


# ---------------------------------------------------------------------------------------------------------
# GPU backend (pycuda)


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


class _DeviceBuffers:
    """Named device allocations that only grow (reused between frames)."""

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda
        self.allocs: dict[str, tuple[Any, int]] = {}

    def get(self, name: str, nbytes: int) -> Any:
        nbytes = max(16, int(nbytes))
        have = self.allocs.get(name)
        if have is None or have[1] < nbytes:
            if have is not None:
                have[0].free()
            self.allocs[name] = (self.cuda.mem_alloc(nbytes), nbytes)
        return self.allocs[name][0]

    def free(self) -> None:
        for alloc, _ in self.allocs.values():
            alloc.free()
        self.allocs.clear()


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
        self._scenes = _SceneCache()
        self._uploaded: tuple[Any, dict[str, Any]] | None = None
        self._lock = threading.RLock()  # one frame at a time (render thread and GL thread share buffers)
        self.context.push()
        try:
            self.module = K.load_module(self.arch)
            self.fn = {
                name: self.module.get_function(name)
                for name in ("generate_rays", "init_rays", "march_rays", "scan_network_counts",
                             "scatter_samples", "composite_front_to_back", "write_pixels", "count_touched")
            }  # fmt: skip
            self.buffers = _DeviceBuffers(cuda)
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

    def render(self, scene_or_rs: Any, camera: Any, options: Any = None) -> Any:
        """Render a camera's view → ``RenderResult`` (``image [H, W, 3]`` float32 on the CPU)."""
        opts = _options(options)
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            rays = self._run(data, opts, camera=camera)
        return finish_image(rays, camera, opts, _background(data, opts))

    def render_rays(
        self, scene_or_rs: Any, origins: torch.Tensor, dirs: torch.Tensor, options: Any = None
    ) -> RaysResult:
        """Render ``[N, 3]`` rays (any device; copied to the GPU) → per-ray outputs on the CPU."""
        opts = _options(options)
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            return self._run(data, opts, origins=origins, dirs=dirs)

    def render_to_pixel_buffer(self, scene_or_rs: Any, camera: Any, target: Any, options: Any = None) -> Any:
        """Render into ``target`` (a ``renderer.cuda.interop.CudaGLPixelBuffer``) as RGBA8, row 0 = top.

        Returns the ``RenderStats``; the GL side then calls ``target.upload(texture)``.
        """
        opts = _options(options)
        with self._lock:
            data = self._scenes.get(scene_or_rs)
            self.context.push()
            try:
                target.resize(camera.width, camera.height)
                with target.map() as ptr:
                    rays = self._run(data, opts, camera=camera, rgba8_ptr=ptr, host_outputs=False)
            finally:
                self.context.pop()
        return rays.stats

    def pixel_buffer(self, ctx: Any, width: int, height: int, prefer: str = "auto") -> Any:
        """A ``CudaGLPixelBuffer`` on moderngl context ``ctx`` bound to this backend's CUDA context."""
        from renderer.cuda.interop import CudaGLPixelBuffer  # noqa: PLC0415

        return CudaGLPixelBuffer(ctx, width, height, prefer=prefer, cuda_context=self.context)

    def invalidate(self) -> None:
        """Forget the prepared scene (call after changing a scene's weights in place, e.g. while training)."""
        with self._lock:
            self._scenes = _SceneCache()
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

    # -- internals ----------------------------------------------------------------------------------------

    def _scene_buffers(self, data: CudaSceneData) -> dict[str, Any]:
        if self._uploaded is not None and self._uploaded[0] is data:
            return self._uploaded[1]
        cuda = self.cuda
        bufs = {
            "network_index": cuda.to_device(data.network_index),
            "occupancy": cuda.to_device(data.occupancy_bits),
            "weights": cuda.to_device(data.weights),
        }
        self._uploaded = (data, bufs)
        return bufs

    def _mlp_function(self, data: CudaSceneData) -> tuple[Any, int]:
        name = K.evaluate_kernel_name(data.hidden, data.half)
        fn = self.fn.get(name)
        if fn is None:
            fn = self.fn[name] = self.module.get_function(name)
        smem = K.evaluate_shared_bytes(
            data.hidden, data.weights.shape[1], data.weights.itemsize, self.config.mlp_block
        )
        if smem > self.max_shared:
            raise ValueError(
                f"hidden width {data.hidden} needs {smem} B of shared memory; the GPU has {self.max_shared}"
            )
        if smem > 48 * 1024:
            fn.set_attribute(self.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
        return fn, smem

    def _run(
        self,
        data: CudaSceneData,
        opts: Any,
        camera: Any = None,
        origins: torch.Tensor | None = None,
        dirs: torch.Tensor | None = None,
        rgba8_ptr: int | None = None,
        host_outputs: bool = True,
    ) -> RaysResult:
        from renderer.render import RenderStats  # noqa: PLC0415

        cuda, cfg = self.cuda, self.config
        i64, i32, null = np.int64, np.int32, np.uintp(0)
        start = time.perf_counter()
        self.context.push()
        try:
            scene = self._scene_buffers(data)
            mlp, smem = self._mlp_function(data)
            P = render_params(data, opts)
            kpp = int(P["samples_per_pass"])
            m = data.num_networks
            if camera is not None:
                n = int(camera.width) * int(camera.height)
                width, height = int(camera.width), int(camera.height)
            else:
                assert origins is not None and dirs is not None
                n = int(origins.shape[0])
                width, height = n, 1
            if n >= K.INT32_MAX:
                raise ValueError(f"{n} rays is more than the kernels' int32 ray ids allow")
            cap = K.sample_capacity(n, kpp, cfg.max_samples_per_pass)
            B = self.buffers.get
            o_buf, d_buf = B("origins", 12 * n), B("dirs", 12 * n)
            t0, t1, k_next = B("t0", 4 * n), B("t1", 4 * n), B("k_next", 4 * n)
            trans, color, depth = B("trans", 4 * n), B("color", 12 * n), B("depth", 4 * n)
            best_w, best_net = B("best_w", 4 * n), B("best_net", 4 * n)
            act_a, act_b = B("active_a", 4 * n), B("active_b", 4 * n)
            ray_base, ray_count, ray_exh = B("ray_base", 8 * n), B("ray_count", 4 * n), B("ray_exhausted", n)
            s_t, s_ray, s_net = B("sample_t", 4 * cap), B("sample_ray", 4 * cap), B("sample_net", 4 * cap)
            sorted_idx, sigma, rgb = B("sorted", 8 * cap), B("sigma", 4 * cap), B("rgb", 12 * cap)
            net_counts, net_cursor = B("net_counts", 4 * m), B("net_cursor", 4 * m)
            net_offsets, tile_start = B("net_offsets", 8 * (m + 1)), B("tile_start", 4 * (m + 1))
            touched = B("net_touched", m)
            frame_c, pass_c = B("frame_counters", 8 * K.NUM_COUNTERS), B("pass_counters", 8 * K.NUM_COUNTERS)
            blk = (cfg.block, 1, 1)

            self.start_event.record()
            if camera is not None:
                self.fn["generate_rays"](
                    camera_params(camera), o_buf, d_buf, block=blk, grid=(K.blocks_for(n, cfg.block), 1)
                )
            else:
                assert origins is not None and dirs is not None
                cuda.memcpy_htod(o_buf, np.ascontiguousarray(origins.detach().cpu().numpy(), np.float32))
                cuda.memcpy_htod(d_buf, np.ascontiguousarray(dirs.detach().cpu().numpy(), np.float32))
            cuda.memset_d8(frame_c, 0, 8 * K.NUM_COUNTERS)
            cuda.memset_d8(pass_c, 0, 8 * K.NUM_COUNTERS)
            cuda.memset_d8(touched, 0, max(1, m))
            self.fn["init_rays"](
                P, i64(n), o_buf, d_buf, t0, t1, k_next, trans, color, depth, best_w, best_net, act_a,
                frame_c, pass_c, block=blk, grid=(K.blocks_for(n, cfg.block), 1),
            )  # fmt: skip
            counters = np.zeros(K.NUM_COUNTERS, np.uint64)
            cuda.memcpy_dtoh(counters, pass_c)
            n_active = int(counters[K.PASS_ACTIVE_NEXT])
            passes = 0
            while n_active > 0:
                passes += 1
                cuda.memset_d8(pass_c, 0, 8 * K.NUM_COUNTERS)
                cuda.memset_d32(net_counts, 0, max(1, m))
                grid_a = (K.blocks_for(n_active, cfg.block), 1)
                self.fn["march_rays"](
                    P, act_a, i64(n_active), o_buf, d_buf, t0, t1, k_next, scene["network_index"],
                    scene["occupancy"], i64(cap), s_t, s_ray, s_net, ray_base, ray_count, ray_exh, net_counts,
                    touched, frame_c, pass_c, block=blk, grid=grid_a,
                )  # fmt: skip
                self.fn["scan_network_counts"](
                    i32(m), net_counts, net_offsets, tile_start, net_cursor, i32(cfg.tile), i64(cap), pass_c,
                    block=(1024, 1, 1), grid=(1, 1),
                )  # fmt: skip
                stored_max = min(n_active * kpp, cap)
                self.fn["scatter_samples"](
                    s_net, net_offsets, net_cursor, sorted_idx, pass_c,
                    block=blk, grid=(K.blocks_for(stored_max, cfg.block), 1),
                )  # fmt: skip
                mlp(
                    P, scene["weights"], sorted_idx, s_t, s_ray, o_buf, d_buf, net_offsets, tile_start,
                    i32(cfg.tile), pass_c, sigma, rgb, block=(cfg.mlp_block, 1, 1),
                    grid=(K.tile_blocks(stored_max, m, cfg.tile), 1), shared=smem,
                )  # fmt: skip
                self.fn["composite_front_to_back"](
                    P, act_a, i64(n_active), ray_base, ray_count, ray_exh, s_t, s_net, sigma, rgb, trans,
                    color, depth, best_w, best_net, act_b, frame_c, pass_c, block=blk, grid=grid_a,
                )  # fmt: skip
                cuda.memcpy_dtoh(counters, pass_c)  # the one host sync of the pass
                n_active = int(counters[K.PASS_ACTIVE_NEXT])
                act_a, act_b = act_b, act_a
            out_rgb = B("out_rgb", 12 * n) if host_outputs else null
            out_depth = B("out_depth", 4 * n) if host_outputs else null
            out_trans = B("out_trans", 4 * n) if host_outputs else null
            rgba = np.uintp(rgba8_ptr) if rgba8_ptr is not None else null
            self.fn["write_pixels"](
                P, i64(n), i32(width), i32(height), trans, color, depth, out_rgb, out_depth, out_trans, rgba,
                i32(0), block=blk, grid=(K.blocks_for(n, cfg.block), 1),
            )  # fmt: skip
            touched_count = np.zeros(1, np.uint64)
            frame_c_touched = B("touched_count", 8)
            cuda.memset_d8(frame_c_touched, 0, 8)
            self.fn["count_touched"](
                i32(m), touched, frame_c_touched, block=blk, grid=(K.blocks_for(m, cfg.block), 1)
            )
            self.end_event.record()
            self.end_event.synchronize()
            self.last_gpu_ms = float(self.end_event.time_since(self.start_event))
            frame = np.zeros(K.NUM_COUNTERS, np.uint64)
            cuda.memcpy_dtoh(frame, frame_c)
            cuda.memcpy_dtoh(touched_count, frame_c_touched)
            h_rgb = np.zeros((n, 3), np.float32)
            h_depth = np.zeros(n, np.float32)
            h_trans = np.ones(n, np.float32)
            h_net = np.full(n, -1, np.int32)
            if host_outputs:
                cuda.memcpy_dtoh(h_rgb, out_rgb)
                cuda.memcpy_dtoh(h_depth, out_depth)
                cuda.memcpy_dtoh(h_trans, out_trans)
                cuda.memcpy_dtoh(h_net, best_net)
        finally:
            self.context.pop()
        stats = RenderStats(
            rays=n,
            rays_hit_box=int(frame[K.FRAME_RAYS_HIT]),
            samples_marched=int(frame[K.FRAME_MARCHED]),
            samples_evaluated=int(frame[K.FRAME_EVALUATED]),
            networks_touched=int(touched_count[0]),
            passes=passes,
            rays_terminated_early=int(frame[K.FRAME_TERMINATED]),
            ms=(time.perf_counter() - start) * 1e3,
        )
        return RaysResult(
            torch.from_numpy(h_rgb), torch.from_numpy(h_depth), torch.from_numpy(h_net).long(),
            torch.from_numpy(h_trans), stats,
        )  # fmt: skip
