"""Limits, constants and value checks of the ``.kilo`` v1 scene format, shared by the reader and the writer.

Every problem raises :class:`SceneFormatError` with a one-line ``"<name>: <problem>"`` message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

FORMAT_NAME = "kilonerf"
FORMAT_VERSION = 1
METADATA_KEY = "kilonerf"

DENSITY_ACTIVATIONS = ("relu", "softplus", "exp")
WEIGHT_KEYS = tuple(f"l{i}.{kind}" for i in range(5) for kind in ("weight", "bias"))
CAMERA_TENSOR = "cameras.c2w"

MAX_GRID_RES = 4096
"""Largest network-grid resolution accepted per axis."""
MAX_OCCUPANCY_VOXELS = 2**27
"""Largest number of occupancy voxels (ox·oy·oz) accepted (512³; lego's is 160×256×176). A renderer keeps
three bytes per voxel (the occupancy, the voxel table and the empty-space distance field), so this bounds
what a file may ask of its memory: about 0.42 GB at the limit."""
MAX_NETWORKS = 2**20
"""Largest number of networks M accepted."""
MAX_HIDDEN = 1024
"""Largest hidden width H accepted."""
MAX_FREQS = 32
"""Largest number of positional-encoding frequencies accepted (pos and dir)."""
MAX_HEADER_BYTES = 64 * 2**20
"""Largest safetensors JSON header accepted."""
F16_MAX = 65504.0
"""Largest finite float16 value."""
MAX_COORDINATE = 1.0e6
"""Largest |coordinate| of the box corners (world units)."""
MAX_WEIGHT = 1.0e4
"""Largest |value| of a network weight or bias accepted. Every network input is in [-1, 1] and every layer
has at most 1024 + 195 inputs, so activations stay far inside float32 (trained weights are O(1)): no file can
make a renderer produce NaN."""
MAX_DENSITY_SCALE = 1.0e4
"""Largest density_scale accepted (σ = scale · act(raw))."""
MAX_LATTICE_STEPS = 1 << 14
"""Most lattice steps a ray may take across the box: step_size ≥ box diagonal / this (lego: ~260), so a
frame costs a bounded number of steps per ray."""
MAX_CAMERAS = 2**20
"""Largest number of stored camera poses K accepted."""
MAX_IMAGE_SIDE = 2**16
"""Largest stored camera width or height accepted."""

_DTYPES: dict[str, tuple[np.dtype[Any], int]] = {
    "F16": (np.dtype("<f2"), 2),
    "F32": (np.dtype("<f4"), 4),
    "I32": (np.dtype("<i4"), 4),
    "U8": (np.dtype("u1"), 1),
}
"""Safetensors dtypes a .kilo file may use, with their numpy dtype and byte size."""

_TORCH_DTYPES = {"F16": torch.float16, "F32": torch.float32}
_REQUIRED_META = (
    "format",
    "version",
    "bbox_min",
    "bbox_max",
    "grid_res",
    "occupancy_res",
    "pos_freqs",
    "dir_freqs",
    "hidden",
    "step_size",
    "background",
)
_OPTIONAL_META = ("density_activation", "density_scale", "ert_threshold", "cameras", "provenance")


class SceneFormatError(ValueError):
    """A ``.kilo`` file (or an in-memory Scene) breaks the format; one-line message naming the file."""


def _error(name: str, problem: str) -> SceneFormatError:
    """Build a SceneFormatError ``"<name>: <problem>"`` squeezed onto one line."""
    text = f"{name}: {problem}"
    return SceneFormatError(" ".join(text.split()))


def weight_shapes(
    num_networks: int, pos_freqs: int, dir_freqs: int, hidden: int
) -> dict[str, tuple[int, ...]]:
    """Shapes of the ten ``l*`` tensors for M networks (``y = x @ W + b``)."""
    m, h = num_networks, hidden
    pos_in = 3 + 6 * pos_freqs
    dir_in = 3 + 6 * dir_freqs
    return {
        "l0.weight": (m, pos_in, h),
        "l0.bias": (m, h),
        "l1.weight": (m, h, h),
        "l1.bias": (m, h),
        "l2.weight": (m, h, 1 + h),
        "l2.bias": (m, 1 + h),
        "l3.weight": (m, h + dir_in, h),
        "l3.bias": (m, h),
        "l4.weight": (m, h, 3),
        "l4.bias": (m, 3),
    }


# ----------------------------------------------------------------------------------------------------------
# value checks shared by the loader and validate_scene


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _int_in(name: str, key: str, v: Any, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise _error(name, f"{key} must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        raise _error(name, f"{key} = {int(v)} is out of range [{lo}, {hi}]")
    return int(v)


def _finite(name: str, key: str, v: Any) -> float:
    if not _is_number(v):
        raise _error(name, f"{key} must be a number, got {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise _error(name, f"{key} must be finite, got {x}")
    return x


def _triple(name: str, key: str, v: Any) -> tuple[Any, Any, Any]:
    if not isinstance(v, list | tuple | np.ndarray) or len(v) != 3:
        raise _error(name, f"{key} must be a list of 3 values, got {v!r}")
    return (v[0], v[1], v[2])


def _check_box(name: str, bbox_min: Any, bbox_max: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lo = tuple(_finite(name, "bbox_min", x) for x in _triple(name, "bbox_min", bbox_min))
    hi = tuple(_finite(name, "bbox_max", x) for x in _triple(name, "bbox_max", bbox_max))
    if max(abs(v) for v in (*lo, *hi)) > MAX_COORDINATE:
        raise _error(name, f"box corners must be within ±{MAX_COORDINATE:g}, got {list(lo)} .. {list(hi)}")
    for axis, a, b in zip("xyz", lo, hi):
        if not a < b:
            raise _error(name, f"bbox_min must be < bbox_max on every axis, but on {axis}: {a} >= {b}")
    return lo, hi


def _check_grids(name: str, grid_res: Any, occupancy_res: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check grid_res (ints in [1, MAX_GRID_RES]) and occupancy_res (positive multiples, bounded count)."""
    g = tuple(_int_in(name, "grid_res", x, 1, MAX_GRID_RES) for x in _triple(name, "grid_res", grid_res))
    o = tuple(
        _int_in(name, "occupancy_res", x, 1, MAX_OCCUPANCY_VOXELS)
        for x in _triple(name, "occupancy_res", occupancy_res)
    )
    for axis, gi, oi in zip("xyz", g, o):
        if oi % gi:
            raise _error(name, f"occupancy_res {list(o)} is not a multiple of grid_res {list(g)} on {axis}")
    voxels = o[0] * o[1] * o[2]
    if voxels > MAX_OCCUPANCY_VOXELS:
        raise _error(
            name, f"occupancy_res {list(o)} has {voxels} voxels, more than the limit {MAX_OCCUPANCY_VOXELS}"
        )
    return g, o


def _check_settings(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check the scalar settings (freqs, hidden, step, background, activation, scale, ε); return typed."""
    out: dict[str, Any] = {
        "pos_freqs": _int_in(name, "pos_freqs", values["pos_freqs"], 0, MAX_FREQS),
        "dir_freqs": _int_in(name, "dir_freqs", values["dir_freqs"], 0, MAX_FREQS),
        "hidden": _int_in(name, "hidden", values["hidden"], 1, MAX_HIDDEN),
    }
    step = _finite(name, "step_size", values["step_size"])
    if step <= 0:
        raise _error(name, f"step_size must be > 0, got {step}")
    out["step_size"] = step
    bg = tuple(_finite(name, "background", x) for x in _triple(name, "background", values["background"]))
    if not all(0.0 <= c <= 1.0 for c in bg):
        raise _error(name, f"background channels must be in [0, 1], got {list(bg)}")
    out["background"] = bg
    act = values["density_activation"]
    if act not in DENSITY_ACTIVATIONS:
        raise _error(
            name, f"unknown density_activation {act!r} (expected one of {', '.join(DENSITY_ACTIVATIONS)})"
        )
    out["density_activation"] = act
    scale = _finite(name, "density_scale", values["density_scale"])
    if not 0 < scale <= MAX_DENSITY_SCALE:
        raise _error(name, f"density_scale must be in (0, {MAX_DENSITY_SCALE:g}], got {scale}")
    out["density_scale"] = scale
    eps = _finite(name, "ert_threshold", values["ert_threshold"])
    if not 0.0 <= eps <= 1.0:
        raise _error(name, f"ert_threshold must be in [0, 1], got {eps}")
    out["ert_threshold"] = eps
    return out


def min_step(bbox_min: Any, bbox_max: Any) -> float:
    """Smallest marching step of a box: its diagonal / ``MAX_LATTICE_STEPS``."""
    return math.dist(tuple(float(v) for v in bbox_min), tuple(float(v) for v in bbox_max)) / MAX_LATTICE_STEPS


def check_step(name: str, bbox_min: Any, bbox_max: Any, step: float) -> None:
    """``SceneFormatError`` when ``step`` is below ``min_step`` of the box."""
    low = min_step(bbox_min, bbox_max)
    if step < low:
        raise _error(
            name,
            f"step_size {step:g} is below the box diagonal / {MAX_LATTICE_STEPS} = {low:g} "
            f"(a ray would take more than {MAX_LATTICE_STEPS} lattice steps)",
        )


def _check_camera_intrinsics(name: str, width: Any, height: Any, focal: Any) -> tuple[int, int, float]:
    w = _int_in(name, "cameras.width", width, 1, MAX_IMAGE_SIDE)
    h = _int_in(name, "cameras.height", height, 1, MAX_IMAGE_SIDE)
    f = _finite(name, "cameras.focal", focal)
    if f <= 0:
        raise _error(name, f"cameras.focal must be > 0, got {f}")
    return w, h, f


def _check_network_index(name: str, index: np.ndarray, num_networks: int) -> None:
    """Values must be -1 or 0..M-1, and each of 0..M-1 used exactly once."""
    flat = index.reshape(-1)
    bad = (flat < -1) | (flat >= num_networks)
    if bad.any():
        v = int(flat[np.argmax(bad)])
        raise _error(
            name, f"network_index holds {v}, outside -1..{num_networks - 1} (M = {num_networks} networks)"
        )
    used = flat[flat >= 0]
    counts = np.bincount(used, minlength=num_networks)
    if used.size != num_networks or (counts != 1).any():
        repeated = np.flatnonzero(counts > 1)
        if repeated.size:
            raise _error(
                name, f"network_index uses network {int(repeated[0])} in {int(counts[repeated[0]])} cells"
            )
        missing = int(np.flatnonzero(counts == 0)[0])
        raise _error(name, f"network_index never uses network {missing} (each of 0..M-1 must appear once)")
