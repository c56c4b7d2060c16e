"""The host side of a CUDA frame, shared by ``CudaBackend`` (``backend.py``) and the CPU emulator
(``emulator.py``): a scene packed in the kernels' layout (``CudaSceneData``, ``prepare_cuda_scene``, the
one-scene ``SceneCache``), the kernels' ``kn::RenderParams`` of a frame (``frame_render_params``), and the
per-ray outputs of a frame (``RaysResult``) turned into a ``RenderResult`` (``finish_image``).

Options are resolved against the scene by ``renderer.frame.resolve_options`` and written into the
parameter struct by ``renderer.kernel_params.render_params``; nothing here imports pycuda or compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from renderer.cuda import kernels as K
from renderer.frame import FrameParams, RenderResult, RenderStats
from renderer.kernel_params import DENSITY_ACTIVATIONS, render_params
from renderer.pixels import write_pixels


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
    """``[ceil(ox·oy·oz / 8)]`` uint8, the scene's packed occupancy (``renderer.bit_grid``)."""
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
    def weight_stride(self) -> int:
        """Elements per packed network."""
        return int(self.weights.shape[1])

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
            device; the kernels accumulate in float32). A RenderScene's weights keep the scene's dtype.
    """
    if hasattr(scene_or_rs, "spec") and hasattr(scene_or_rs, "network_index_flat"):  # RenderScene
        rs = scene_or_rs
        spec = rs.spec
        index = rs.network_index_flat.detach().cpu().numpy().astype(np.int32)
        occ_bits = rs.occupancy.bits
        weights, occ_res = rs.params, tuple(rs.occupancy_res)
        step, bg, eps = rs.step_size, rs.background, rs.ert_threshold
        hidden, pf, df = spec.hidden, spec.pos_freqs, spec.dir_freqs
        act, scale = spec.density_activation, spec.density_scale
        bmin, bmax, res = spec.bbox_min, spec.bbox_max, spec.grid_res
    else:
        sc = scene_or_rs
        index = np.ascontiguousarray(sc.network_index).astype(np.int32).reshape(-1)
        occ_bits = sc.occupancy.bits
        weights, occ_res = sc.weights, tuple(sc.occupancy_res)
        step, bg, eps = sc.step_size, sc.background, sc.ert_threshold
        hidden, pf, df = sc.hidden, sc.pos_freqs, sc.dir_freqs
        act, scale = sc.density_activation, sc.density_scale
        bmin, bmax, res = sc.bbox_min, sc.bbox_max, sc.grid_res
    if act not in DENSITY_ACTIVATIONS:
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
        occupancy_bits=np.ascontiguousarray(occ_bits),
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


def frame_render_params(data: CudaSceneData, fp: FrameParams) -> np.void:
    """The kernels' ``kn::RenderParams`` of a frame (K capped at ``kernels.MAX_SAMPLES_PER_PASS``)."""
    return render_params(data, fp, data.weight_stride, max_samples_per_pass=K.MAX_SAMPLES_PER_PASS)


class SceneCache:
    """The last prepared scene, reused while the same object is rendered."""

    def __init__(self, weight_dtype: Any = None) -> None:
        self.key: Any = None
        self.data: CudaSceneData | None = None
        self.weight_dtype = weight_dtype
        """``prepare_cuda_scene``'s: None keeps the scene's dtype, ``np.float32`` converts at packing."""

    def get(self, scene_or_rs: Any) -> CudaSceneData:
        """``scene_or_rs`` packed (a ``CudaSceneData`` is returned as is)."""
        if isinstance(scene_or_rs, CudaSceneData):
            return scene_or_rs
        if self.data is None or self.key is not scene_or_rs:
            self.data = prepare_cuda_scene(scene_or_rs, self.weight_dtype)
            self.key = scene_or_rs
        return self.data


@dataclass
class RaysResult:
    """Per-ray outputs of a frame (CPU)."""

    rgb: torch.Tensor
    """``[N, 3]`` float32 C + T·background (the kernels' ``write_pixels``)."""
    depth: torch.Tensor
    """``[N]`` expected t (0 where nothing was hit)."""
    network: torch.Tensor
    """``[N]`` int64 dominant network (−1: none)."""
    trans: torch.Tensor
    """``[N]`` T_end."""
    stats: RenderStats
    """What the frame cost."""
    touched: torch.Tensor | None = None
    """``[num_networks]`` bool: the networks evaluated (None: not read back)."""


def finish_image(rays: RaysResult, camera: Any, fp: FrameParams) -> RenderResult:
    """``RenderResult`` of a camera from per-ray outputs.

    The colour view is the kernels' own C + T_end·background; the depth and network views are shaded by
    ``renderer.pixels.write_pixels``, the torch renderer's rule (depth over the rays with T_end < 1).
    """
    rgb = rays.rgb
    if fp.output != "rgb":
        rgb = write_pixels(rays.rgb, rays.trans, rays.depth, rays.network, fp.background, fp.output)
    h, w = camera.height, camera.width
    return RenderResult(
        image=rgb.reshape(h, w, 3).float(),
        depth=rays.depth.reshape(h, w).float(),
        stats=rays.stats,
        network=rays.network.reshape(h, w) if fp.output == "network" else None,
        touched=rays.touched,
    )
