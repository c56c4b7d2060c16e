"""The native kernels' parameter structs, shared by the CUDA and the native CPU backends: ``kn::RenderParams``
and ``kn::CameraParams`` of ``renderer/cuda/common.cuh`` as numpy structured dtypes, and the functions that
fill them from a scene and a frame's resolved options (``renderer.frame.FrameParams``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from renderer.frame import FrameParams
from renderer.networks import DENSITY_ACTIVATIONS as ACTIVATION_NAMES

RENDER_PARAMS_DTYPE = np.dtype(
    [
        ("bbox_min", "<f4", 3),
        ("bbox_max", "<f4", 3),
        ("cell_size", "<f4", 3),
        ("grid_res", "<i4", 3),
        ("occ_res", "<i4", 3),
        ("step", "<f4"),
        ("ert_threshold", "<f4"),
        ("ert", "<i4"),
        ("ess", "<i4"),
        ("pos_freqs", "<i4"),
        ("dir_freqs", "<i4"),
        ("density_activation", "<i4"),
        ("density_scale", "<f4"),
        ("background", "<f4", 3),
        ("samples_per_pass", "<i4"),
        ("num_networks", "<i4"),
        ("weight_stride", "<i4"),
        ("hidden", "<i4"),
    ]
)
"""Layout of ``kn::RenderParams`` (all fields 4 bytes: no padding)."""

CAMERA_PARAMS_DTYPE = np.dtype(
    [("c2w", "<f8", 12), ("focal", "<f8"), ("cx", "<f8"), ("cy", "<f8"), ("width", "<i4"), ("height", "<i4")]
)
"""Layout of ``kn::CameraParams``."""

DENSITY_ACTIVATIONS = {name: code for code, name in enumerate(ACTIVATION_NAMES)}
"""``kn::DensityActivation`` codes: kRelu = 0, kSoftplus = 1, kExp = 2 (``networks.DENSITY_ACTIVATIONS``)."""


def render_params(
    scene: Any, fp: FrameParams, weight_stride: int, max_samples_per_pass: int | None = None
) -> np.void:
    """The ``kn::RenderParams`` of a frame.

    Args:
        scene: anything with ``bbox_min``, ``bbox_max`` (float32-representable), ``grid_res``,
            ``occupancy_res``, ``pos_freqs``, ``dir_freqs``, ``hidden``, ``density_activation``,
            ``density_scale`` and ``num_networks``.
        fp: the frame's options resolved against the scene (``renderer.frame.resolve_options``).
        weight_stride: elements per packed network.
        max_samples_per_pass: a kernel's limit on K (None: none).
    """
    if scene.density_activation not in DENSITY_ACTIVATIONS:
        raise ValueError(f"unknown density activation {scene.density_activation!r}")
    p = np.zeros((), dtype=RENDER_PARAMS_DTYPE)
    p["bbox_min"] = scene.bbox_min
    p["bbox_max"] = scene.bbox_max
    # cell size as the torch renderer computes it: float64 (max − min) / res, then float32
    p["cell_size"] = [(hi - lo) / r for lo, hi, r in zip(scene.bbox_min, scene.bbox_max, scene.grid_res)]
    p["grid_res"] = scene.grid_res
    p["occ_res"] = scene.occupancy_res
    p["step"] = fp.step
    p["ert_threshold"] = 0.0 if fp.ert_threshold is None else fp.ert_threshold
    p["ert"] = int(fp.ert_threshold is not None)
    p["ess"] = int(fp.ess)
    p["pos_freqs"] = scene.pos_freqs
    p["dir_freqs"] = scene.dir_freqs
    p["density_activation"] = DENSITY_ACTIVATIONS[scene.density_activation]
    p["density_scale"] = scene.density_scale
    p["background"] = fp.background
    k = fp.samples_per_pass
    p["samples_per_pass"] = k if max_samples_per_pass is None else min(k, max_samples_per_pass)
    p["num_networks"] = scene.num_networks
    p["weight_stride"] = weight_stride
    p["hidden"] = scene.hidden
    return p[()]  # type: ignore[return-value]


def camera_params(camera: Any) -> np.void:
    """The ``kn::CameraParams`` struct of a ``renderer.camera.Camera``."""
    p = np.zeros((), dtype=CAMERA_PARAMS_DTYPE)
    p["c2w"] = np.asarray(camera.c2w, dtype=np.float64)[:3, :4].reshape(-1)
    cx, cy = camera.principal_point
    p["focal"] = float(camera.focal)
    p["cx"] = cx
    p["cy"] = cy
    p["width"] = int(camera.width)
    p["height"] = int(camera.height)
    return p[()]  # type: ignore[return-value]
