"""The ``cuda`` backend: the torch renderer's contract (``render(scene_or_rs, camera, options) ->
RenderResult``) on the fused kernels of ``kilonerf.cu``, driven through pycuda.

A frame: rays (generated on the device) → ``init_rays`` (slab test, active list) → passes of
``march_rays`` (≤ K occupied samples per ray) → counting sort by network → ``evaluate_networks_h{H}``
→ ``composite_front_to_back`` (ERT, compaction) until no ray is active → ``write_pixels`` (float RGB,
and RGBA8 straight into a GL pixel buffer for the viewer). The host reads one counter per pass.

``HostEmulator`` runs the same per-ray code (``common.cuh``) on the CPU through a host-only build of
``emulate.cu``; the tests use it to check the kernels' maths against the torch renderer without a GPU.
pycuda is imported only when a ``CudaBackend`` is created.
"""

from __future__ import annotations

import ctypes
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
    from renderer.render import RenderResult, network_colors, shade_depth  # noqa: PLC0415

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
        network=net.reshape(h, w),
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
# CPU emulator


class HostEmulator:
    """The kernels' per-ray code run serially on the CPU (``emulate.cu`` built with nvcc as host code)."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(str(K.build_emulator()))
        self.lib.kilo_sizeof_render_params.restype = ctypes.c_int
        self.lib.kilo_sizeof_camera_params.restype = ctypes.c_int
        vp, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        self.lib.kilo_weight_layout.argtypes = [i32, i32, i32, vp]
        self.lib.kilo_camera_rays.argtypes = [vp, vp, vp]
        self.lib.kilo_evaluate_points.argtypes = [vp, vp, vp, i32, i64, vp, vp, vp, vp, vp]
        self.lib.kilo_evaluate_points.restype = i32
        self.lib.kilo_emulate_render.argtypes = [vp, i64, vp, vp, vp, vp, vp, i32, vp, vp, vp, vp, vp]
        self.lib.kilo_emulate_render.restype = i32
        self._scenes = _SceneCache()

    def struct_sizes(self) -> tuple[int, int]:
        """``sizeof(kn::RenderParams)``, ``sizeof(kn::CameraParams)`` as compiled."""
        return int(self.lib.kilo_sizeof_render_params()), int(self.lib.kilo_sizeof_camera_params())

    def weight_layout(self, hidden: int, pos_freqs: int, dir_freqs: int) -> tuple[int, ...]:
        """``kn::weight_layout`` as compiled (13 ints)."""
        out = (ctypes.c_int * 13)()
        self.lib.kilo_weight_layout(hidden, pos_freqs, dir_freqs, out)
        return tuple(out)

    def camera_rays(self, camera: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``generate_rays`` kernel maths: origins, dirs ``[H·W, 3]`` float32."""
        n = camera.width * camera.height
        o = np.zeros((n, 3), np.float32)
        d = np.zeros((n, 3), np.float32)
        cam = np.array(camera_params(camera))
        self.lib.kilo_camera_rays(cam.ctypes.data, o.ctypes.data, d.ctypes.data)
        return torch.from_numpy(o), torch.from_numpy(d)

    def evaluate_points(self, scene_or_rs: Any, x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
        """Network id ``[N]``, σ ``[N]``, rgb ``[N, 3]`` at points x ``[N, 3]``, unit dirs ``[N, 3]``."""
        from renderer.render import RenderOptions  # noqa: PLC0415

        data = self._scenes.get(scene_or_rs)
        x = np.ascontiguousarray(x, np.float32)
        d = np.ascontiguousarray(d, np.float32)
        n = x.shape[0]
        net = np.zeros(n, np.int32)
        sigma = np.zeros(n, np.float32)
        rgb = np.zeros((n, 3), np.float32)
        p = np.array(render_params(data, RenderOptions()))
        rc = self.lib.kilo_evaluate_points(
            p.ctypes.data, data.network_index.ctypes.data, data.weights.ctypes.data, int(data.half),
            n, x.ctypes.data, d.ctypes.data, net.ctypes.data, sigma.ctypes.data,
            rgb.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"hidden width {data.hidden} is not supported by the CUDA kernels")
        return net, sigma, rgb

    def render_rays(
        self, scene_or_rs: Any, origins: torch.Tensor, dirs: torch.Tensor, options: Any = None
    ) -> RaysResult:
        """Render ``[N, 3]`` rays in the kernels' pass structure."""
        from renderer.render import RenderStats  # noqa: PLC0415

        opts = _options(options)
        start = time.perf_counter()
        data = self._scenes.get(scene_or_rs)
        o = np.ascontiguousarray(origins.detach().cpu().numpy(), np.float32)
        dr = np.ascontiguousarray(dirs.detach().cpu().numpy(), np.float32)
        n = o.shape[0]
        rgb = np.zeros((n, 3), np.float32)
        depth = np.zeros(n, np.float32)
        trans = np.zeros(n, np.float32)
        net = np.zeros(n, np.int32)
        stats = np.zeros(7, np.int64)
        p = np.array(render_params(data, opts))
        rc = self.lib.kilo_emulate_render(
            p.ctypes.data, n, o.ctypes.data, dr.ctypes.data, data.network_index.ctypes.data,
            data.occupancy_bits.ctypes.data, data.weights.ctypes.data, int(data.half), rgb.ctypes.data,
            depth.ctypes.data, trans.ctypes.data, net.ctypes.data, stats.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"unsupported hidden width {data.hidden} or samples per pass")
        st = RenderStats(
            rays=n,
            rays_hit_box=int(stats[0]),
            samples_marched=int(stats[1]),
            samples_evaluated=int(stats[2]),
            networks_touched=int(stats[5]),
            passes=int(stats[4]),
            rays_terminated_early=int(stats[3]),
            ms=(time.perf_counter() - start) * 1e3,
        )
        return RaysResult(
            torch.from_numpy(rgb),
            torch.from_numpy(depth),
            torch.from_numpy(net).long(),
            torch.from_numpy(trans),
            st,
        )

    def render(self, scene_or_rs: Any, camera: Any, options: Any = None) -> Any:
        """``RenderResult`` of a camera (rays as the ``generate_rays`` kernel makes them)."""
        opts = _options(options)
        data = self._scenes.get(scene_or_rs)
        o, d = self.camera_rays(camera)
        return finish_image(self.render_rays(data, o, d, opts), camera, opts, _background(data, opts))
