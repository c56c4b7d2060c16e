"""The CPU emulator of the CUDA kernels: ``HostEmulator`` runs the kernels' per-ray code (``common.cuh``) in
their pass structure on the host, through a host-only build of ``emulate.cu`` loaded with ctypes.

The tests use it to check the kernels' maths (struct layouts, index maths, camera rays, the MLP, whole
frames) against the torch renderer without a GPU. It shares the scene packing and the frame's parameter
struct with ``CudaBackend`` (``scene_data``) and builds its library through ``kernels``; nvcc runs when
a ``HostEmulator`` is created, never at import.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np
import torch

from renderer.cuda import kernels as K
from renderer.cuda.scene_data import RaysResult, SceneCache, finish_image, frame_render_params
from renderer.frame import RenderOptions, RenderResult, RenderStats, resolve_options
from renderer.kernel_params import camera_params

# Slots of kilo_emulate_render's int64 stats array (emulate.cu).
_RAYS_HIT, _MARCHED, _EVALUATED, _TERMINATED, _PASSES, _TOUCHED = 0, 1, 2, 3, 4, 5
_NUM_STATS = 7


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
        self.lib.kilo_flat_index.argtypes = [vp, vp]
        self.lib.kilo_flat_index.restype = i64
        self.lib.kilo_tile_segment.argtypes = [vp, vp, i32, i32, i32, vp]
        self.lib.kilo_lattice_t.argtypes = [ctypes.c_float, i32, ctypes.c_float]
        self.lib.kilo_lattice_t.restype = ctypes.c_float
        self._scenes = SceneCache()

    # -- single functions of common.cuh, as compiled ------------------------------------------------------

    def struct_sizes(self) -> tuple[int, int]:
        """``sizeof(kn::RenderParams)``, ``sizeof(kn::CameraParams)`` as compiled."""
        return int(self.lib.kilo_sizeof_render_params()), int(self.lib.kilo_sizeof_camera_params())

    def weight_layout(self, hidden: int, pos_freqs: int, dir_freqs: int) -> tuple[int, ...]:
        """``kn::weight_layout`` as compiled (13 ints)."""
        out = (ctypes.c_int * 13)()
        self.lib.kilo_weight_layout(hidden, pos_freqs, dir_freqs, out)
        return tuple(out)

    def flat_index(self, cell: tuple[int, int, int], res: tuple[int, int, int]) -> int:
        """``kn::flat_index`` (C order, 64-bit) as compiled."""
        g = (ctypes.c_int * 3)(*cell)
        r = (ctypes.c_int * 3)(*res)
        return int(self.lib.kilo_flat_index(ctypes.addressof(g), ctypes.addressof(r)))

    def tile_segment(
        self, tile_start: np.ndarray, net_offsets: np.ndarray, tile: int, b: int
    ) -> tuple[int, ...]:
        """``kn::tile_segment`` as compiled: (network, begin, end) of work tile b."""
        ts = np.ascontiguousarray(tile_start, np.int32)
        off = np.ascontiguousarray(net_offsets, np.int64)
        out = np.zeros(3, np.int64)
        self.lib.kilo_tile_segment(ts.ctypes.data, off.ctypes.data, len(ts) - 1, tile, b, out.ctypes.data)
        return tuple(int(v) for v in out)

    def lattice_t(self, t0: float, k: int, step: float) -> float:
        """``kn::lattice_t`` as compiled: t0 + (k + ½)·s in float32."""
        return float(self.lib.kilo_lattice_t(t0, k, step))

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
        data = self._scenes.get(scene_or_rs)
        x = np.ascontiguousarray(x, np.float32)
        d = np.ascontiguousarray(d, np.float32)
        n = x.shape[0]
        net = np.zeros(n, np.int32)
        sigma = np.zeros(n, np.float32)
        rgb = np.zeros((n, 3), np.float32)
        p = np.array(frame_render_params(data, resolve_options(data)))
        rc = self.lib.kilo_evaluate_points(
            p.ctypes.data, data.network_index.ctypes.data, data.weights.ctypes.data, int(data.half),
            n, x.ctypes.data, d.ctypes.data, net.ctypes.data, sigma.ctypes.data,
            rgb.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"hidden width {data.hidden} is not supported by the CUDA kernels")
        return net, sigma, rgb

    # -- whole frames -------------------------------------------------------------------------------------

    def render_rays(
        self, scene_or_rs: Any, origins: Any, dirs: Any, options: RenderOptions | None = None
    ) -> RaysResult:
        """Render ``[N, 3]`` rays in the kernels' pass structure."""
        start = time.perf_counter()
        data = self._scenes.get(scene_or_rs)
        p = np.array(frame_render_params(data, resolve_options(data, options)))
        o = np.ascontiguousarray(origins.detach().cpu().numpy(), np.float32)
        dr = np.ascontiguousarray(dirs.detach().cpu().numpy(), np.float32)
        n = o.shape[0]
        rgb = np.zeros((n, 3), np.float32)
        depth = np.zeros(n, np.float32)
        trans = np.zeros(n, np.float32)
        net = np.zeros(n, np.int32)
        stats = np.zeros(_NUM_STATS, np.int64)
        rc = self.lib.kilo_emulate_render(
            p.ctypes.data, n, o.ctypes.data, dr.ctypes.data, data.network_index.ctypes.data,
            data.occupancy_bits.ctypes.data, data.weights.ctypes.data, int(data.half), rgb.ctypes.data,
            depth.ctypes.data, trans.ctypes.data, net.ctypes.data, stats.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise ValueError(f"unsupported hidden width {data.hidden} or samples per pass")
        st = RenderStats(
            rays=n,
            rays_hit_box=int(stats[_RAYS_HIT]),
            samples_marched=int(stats[_MARCHED]),
            samples_evaluated=int(stats[_EVALUATED]),
            networks_touched=int(stats[_TOUCHED]),
            passes=int(stats[_PASSES]),
            rays_terminated_early=int(stats[_TERMINATED]),
            ms=(time.perf_counter() - start) * 1e3,
        )
        return RaysResult(
            torch.from_numpy(rgb), torch.from_numpy(depth), torch.from_numpy(net).long(),
            torch.from_numpy(trans), st,
        )  # fmt: skip

    def render(self, scene_or_rs: Any, camera: Any, options: RenderOptions | None = None) -> RenderResult:
        """``RenderResult`` of a camera (rays as the ``generate_rays`` kernel makes them)."""
        data = self._scenes.get(scene_or_rs)
        fp = resolve_options(data, options)
        o, d = self.camera_rays(camera)
        return finish_image(self.render_rays(data, o, d, options), camera, fp)
