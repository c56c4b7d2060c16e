"""The ``.kilo`` v1 scene file: a safetensors file holding a KiloNeRF scene (see docs/scene-format.md).

Scene files are untrusted input. :func:`load_scene` never unpickles anything: it parses the safetensors
header itself (length, JSON, dtypes, shapes, byte offsets, the ``kilonerf`` metadata) and refuses absurd
sizes *before* reading any tensor data, then reads the tensors with ``safetensors`` and checks every value.
Every problem raises :class:`SceneFormatError` with a one-line ``"<path>: <problem>"`` message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_bytes
from renderer.bit_grid import BitGrid
from renderer.distance_field import contributing_bits
from renderer.scene_checks import (  # re-exported: every name stays importable from renderer.scene
    CAMERA_TENSOR,
    DENSITY_ACTIVATIONS,
    F16_MAX,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_CAMERAS,
    MAX_COORDINATE,
    MAX_DENSITY_SCALE,
    MAX_FREQS,
    MAX_GRID_RES,
    MAX_HEADER_BYTES,
    MAX_HIDDEN,
    MAX_IMAGE_SIDE,
    MAX_LATTICE_STEPS,
    MAX_NETWORKS,
    MAX_OCCUPANCY_VOXELS,
    MAX_WEIGHT,
    METADATA_KEY,
    WEIGHT_KEYS,
    SceneFormatError,
    _check_box,
    _check_camera_intrinsics,
    _check_grids,
    _check_network_index,
    _check_settings,
    _error,
    check_step,
    min_step,
    weight_shapes,
)
from renderer.scene_file import _read_file

__all__ = [
    "CAMERA_TENSOR",
    "DENSITY_ACTIVATIONS",
    "F16_MAX",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_CAMERAS",
    "MAX_FREQS",
    "MAX_GRID_RES",
    "MAX_HEADER_BYTES",
    "MAX_HIDDEN",
    "MAX_IMAGE_SIDE",
    "MAX_NETWORKS",
    "MAX_COORDINATE",
    "MAX_DENSITY_SCALE",
    "MAX_LATTICE_STEPS",
    "MAX_OCCUPANCY_VOXELS",
    "MAX_WEIGHT",
    "min_step",
    "METADATA_KEY",
    "WEIGHT_KEYS",
    "Scene",
    "SceneCameras",
    "SceneFormatError",
    "load_scene",
    "load_scene_summary",
    "save_scene",
    "scene_metadata",
    "validate_scene",
    "weight_shapes",
]

_DTYPE_ARG = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class SceneCameras:
    """The training views stored with a scene (all share one intrinsic)."""

    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""
    focal: float
    """Focal length in pixels."""
    c2w: np.ndarray
    """Camera-to-world matrices, OpenGL convention, float32 [K, 4, 4]."""


@dataclass
class Scene:
    """A KiloNeRF scene: a grid of tiny MLPs inside a box, an occupancy grid, and rendering settings."""

    bbox_min: tuple[float, float, float]
    """Scene box minimum corner, world units."""
    bbox_max: tuple[float, float, float]
    """Scene box maximum corner, world units (> bbox_min on every axis)."""
    grid_res: tuple[int, int, int]
    """Network grid resolution (rx, ry, rz)."""
    occupancy_res: tuple[int, int, int]
    """Occupancy grid resolution (ox, oy, oz), each a positive multiple of grid_res."""
    network_index: np.ndarray
    """int32 [rx, ry, rz]: network id of each cell, -1 where the cell has no network."""
    occupancy: BitGrid
    """[ox, oy, oz] empty-space-skipping grid, set where space may be occupied, kept as packed bits (one
    bit per voxel, `renderer.bit_grid`); a bool numpy array given here is packed on construction."""
    weights: dict[str, torch.Tensor]
    """``l0.weight`` … ``l4.bias``: CPU tensors, all float16 or all float32, shapes as in weight_shapes()."""
    pos_freqs: int = 10
    """Frequencies L of the position encoding (input width 3 + 6·L)."""
    dir_freqs: int = 4
    """Frequencies of the direction encoding (input width 3 + 6·L)."""
    hidden: int = 32
    """Hidden width H of every network."""
    step_size: float = 0.01
    """Ray-marching step along the unit ray direction, world units."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour composited behind the scene, each channel in [0, 1]."""
    density_activation: str = "relu"
    """Activation applied to raw density: relu, softplus or exp."""
    density_scale: float = 1.0
    """Factor applied to the activated density (> 0)."""
    ert_threshold: float = 0.01
    """Early-ray-termination transmittance threshold ε."""
    cameras: SceneCameras | None = None
    """Training views stored with the scene, or None."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON object: dataset, preset, steps per stage, times, metrics."""

    @property
    def num_networks(self) -> int:
        """Number of networks M."""
        w = self.weights.get("l0.weight")
        if w is not None:
            return int(w.shape[0])
        return int(np.count_nonzero(np.asarray(self.network_index) >= 0))

    @property
    def cell_size(self) -> np.ndarray:
        """Size of one network cell, float64 [3] = (bbox_max - bbox_min) / grid_res."""
        lo = np.asarray(self.bbox_min, dtype=np.float64)
        hi = np.asarray(self.bbox_max, dtype=np.float64)
        return (hi - lo) / np.asarray(self.grid_res, dtype=np.float64)

    def __post_init__(self) -> None:
        """Pack an occupancy given as a bool array (what the trainer and tests build)."""
        if isinstance(self.occupancy, np.ndarray) and self.occupancy.dtype == np.bool_:
            self.occupancy = BitGrid.from_bool(self.occupancy)

    @property
    def occupancy_fraction(self) -> float:
        """Fraction of occupancy voxels that are set, in [0, 1]."""
        return float(self.occupancy.count()) / max(1, self.occupancy.size)


# ----------------------------------------------------------------------------------------------------------
# validate_scene


def _finite_and_largest(w: torch.Tensor, elements: int = 1 << 16) -> tuple[bool, float]:
    """Whether ``[M, ...]`` ``w`` is all finite, and its largest magnitude (0 when empty), read a few
    networks at a time (temporaries of at most about ``elements`` values, not copies of the tensor)."""
    if w.numel() == 0:
        return True, 0.0
    big = 0.0
    for part in w.reshape(w.shape[0], -1).split(max(1, elements // max(1, w[0].numel()))):
        if not bool(torch.isfinite(part).all()):
            return False, math.inf
        big = max(big, float(part.abs().max()))
    return True, big


def validate_scene(scene: Scene, name: str = "<scene>") -> None:
    """Check every field of an in-memory scene against the .kilo v1 rules; raise SceneFormatError."""
    lo, hi = _check_box(name, scene.bbox_min, scene.bbox_max)
    grid, occ_res = _check_grids(name, scene.grid_res, scene.occupancy_res)
    s = _check_settings(
        name,
        {k: getattr(scene, k) for k in ("pos_freqs", "dir_freqs", "hidden", "step_size", "background")}
        | {k: getattr(scene, k) for k in ("density_activation", "density_scale", "ert_threshold")},
    )
    check_step(name, lo, hi, s["step_size"])

    if not isinstance(scene.weights, dict):
        raise _error(name, "weights must be a dict of tensors")
    missing = [k for k in WEIGHT_KEYS if k not in scene.weights]
    if missing:
        raise _error(name, f"missing weight tensor {missing[0]}")
    extra = sorted(set(scene.weights) - set(WEIGHT_KEYS))
    if extra:
        raise _error(name, f"unexpected weight tensor {extra[0]}")
    for k in WEIGHT_KEYS:
        if not isinstance(scene.weights[k], torch.Tensor):
            raise _error(name, f"{k} must be a torch.Tensor, got {type(scene.weights[k]).__name__}")
    dtypes = {scene.weights[k].dtype for k in WEIGHT_KEYS}
    if len(dtypes) != 1:
        raise _error(name, f"all l* tensors must share one dtype, found {sorted(str(d) for d in dtypes)}")
    dtype = dtypes.pop()
    if dtype not in (torch.float16, torch.float32):
        raise _error(name, f"l* tensors must be float16 or float32, got {dtype}")
    l0 = scene.weights["l0.weight"]
    m = int(l0.shape[0]) if l0.dim() > 0 else -1
    if not 0 <= m <= MAX_NETWORKS:
        raise _error(
            name, f"l0.weight must have shape [M, ...] with M <= {MAX_NETWORKS}, got {list(l0.shape)}"
        )
    for k, shape in weight_shapes(m, s["pos_freqs"], s["dir_freqs"], s["hidden"]).items():
        got = tuple(scene.weights[k].shape)
        if got != shape:
            raise _error(name, f"{k} has shape {list(got)}, expected {list(shape)}")
    for k in WEIGHT_KEYS:
        finite, big = _finite_and_largest(scene.weights[k])
        if not finite:
            raise _error(name, f"{k} contains non-finite values (NaN or Inf)")
        if big > MAX_WEIGHT:
            raise _error(name, f"{k} has a value of magnitude {big:g}, more than the limit {MAX_WEIGHT:g}")

    index = scene.network_index
    if not isinstance(index, np.ndarray) or index.dtype != np.int32:
        raise _error(name, f"network_index must be an int32 numpy array, got {_describe(index)}")
    if index.shape != grid:
        raise _error(name, f"network_index has shape {list(index.shape)}, expected grid_res {list(grid)}")
    _check_network_index(name, index, m)

    occ = scene.occupancy
    if not isinstance(occ, BitGrid):
        raise _error(name, f"occupancy must be a BitGrid or a bool numpy array, got {_describe(occ)}")
    if tuple(occ.shape) != occ_res:
        raise _error(name, f"occupancy has shape {list(occ.shape)}, expected occupancy_res {list(occ_res)}")
    bits = occ.bits
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.shape != ((occ.size + 7) // 8,):
        raise _error(name, f"occupancy bits must be uint8 [{(occ.size + 7) // 8}], got {_describe(bits)}")
    if not occ.padding_clear():
        raise _error(name, "occupancy has set padding bits after the last voxel")

    cams = scene.cameras
    if cams is not None:
        if not isinstance(cams, SceneCameras):
            raise _error(name, f"cameras must be a SceneCameras or None, got {type(cams).__name__}")
        _check_camera_intrinsics(name, cams.width, cams.height, cams.focal)
        c2w = cams.c2w
        if not isinstance(c2w, np.ndarray) or c2w.dtype != np.float32:
            raise _error(name, f"cameras.c2w must be a float32 numpy array, got {_describe(c2w)}")
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or not 1 <= c2w.shape[0] <= MAX_CAMERAS:
            raise _error(name, f"cameras.c2w has shape {list(c2w.shape)}, expected [K, 4, 4] with K >= 1")
        if not np.isfinite(c2w).all():
            raise _error(name, "cameras.c2w contains non-finite values")

    if not isinstance(scene.provenance, dict):
        raise _error(name, f"provenance must be a dict, got {type(scene.provenance).__name__}")
    try:
        json.dumps(scene.provenance, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _error(name, f"provenance is not plain JSON: {e}") from None


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array"
    return type(a).__name__


# ----------------------------------------------------------------------------------------------------------
# save_scene


def scene_metadata(scene: Scene) -> dict[str, Any]:
    """The JSON object stored in ``__metadata__["kilonerf"]`` for ``scene`` (not validated)."""
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "bbox_min": [float(x) for x in scene.bbox_min],
        "bbox_max": [float(x) for x in scene.bbox_max],
        "grid_res": [int(x) for x in scene.grid_res],
        "occupancy_res": [int(x) for x in scene.occupancy_res],
        "pos_freqs": int(scene.pos_freqs),
        "dir_freqs": int(scene.dir_freqs),
        "hidden": int(scene.hidden),
        "step_size": float(scene.step_size),
        "background": [float(x) for x in scene.background],
        "density_activation": str(scene.density_activation),
        "density_scale": float(scene.density_scale),
        "ert_threshold": float(scene.ert_threshold),
    }
    if scene.cameras is not None:
        meta["cameras"] = {
            "width": int(scene.cameras.width),
            "height": int(scene.cameras.height),
            "focal": float(scene.cameras.focal),
        }
    if scene.provenance:
        meta["provenance"] = scene.provenance
    return meta


def save_scene(scene: Scene, path: str | os.PathLike[str], dtype: str | None = None) -> None:
    """Validate ``scene`` and write it atomically to ``path`` as .kilo v1.

    ``dtype`` "float16" or "float32" converts the ``l*`` tensors first (None keeps theirs). Converting to
    float16 fails with SceneFormatError when a weight does not fit (it would become Inf).
    """
    import safetensors.numpy

    name = str(path)
    if dtype is not None:
        if dtype not in _DTYPE_ARG:
            raise _error(name, f"dtype must be 'float16', 'float32' or None, got {dtype!r}")
        if dtype == "float16":
            for k, v in scene.weights.items():
                if isinstance(v, torch.Tensor) and bool((v.detach().float().abs() > F16_MAX).any()):
                    raise _error(name, f"{k} has values beyond ±{F16_MAX:g}, which float16 cannot hold")
        weights = {
            k: v.detach().to(_DTYPE_ARG[dtype]) if isinstance(v, torch.Tensor) else v
            for k, v in scene.weights.items()
        }
        scene = dataclasses.replace(scene, weights=weights)
    validate_scene(scene, name)
    tensors: dict[str, np.ndarray] = {
        "network_index": np.ascontiguousarray(scene.network_index, dtype=np.int32),
        "occupancy": np.ascontiguousarray(scene.occupancy.bits),
    }
    for k in WEIGHT_KEYS:
        tensors[k] = np.ascontiguousarray(scene.weights[k].detach().cpu().numpy())
    if scene.cameras is not None:
        tensors[CAMERA_TENSOR] = np.ascontiguousarray(scene.cameras.c2w, dtype=np.float32)
    meta = json.dumps(scene_metadata(scene), allow_nan=False, separators=(",", ":"))
    data = safetensors.numpy.save(tensors, metadata={METADATA_KEY: meta})
    atomic_write_bytes(path, data)


def _scene_from(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Scene:
    """A Scene of checked metadata and tensors, its occupancy kept packed (not validated yet)."""
    occupancy = BitGrid(np.ascontiguousarray(arrays["occupancy"]), tuple(meta["occupancy_res"]))
    cameras = None
    if meta["cameras"] is not None:
        w, h, focal = meta["cameras"]
        cameras = SceneCameras(
            width=w, height=h, focal=focal, c2w=np.ascontiguousarray(arrays[CAMERA_TENSOR])
        )
    return Scene(
        bbox_min=meta["bbox_min"],
        bbox_max=meta["bbox_max"],
        grid_res=meta["grid_res"],
        occupancy_res=meta["occupancy_res"],
        network_index=np.ascontiguousarray(arrays["network_index"], dtype=np.int32),
        occupancy=occupancy,
        weights={k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in WEIGHT_KEYS},
        pos_freqs=meta["pos_freqs"],
        dir_freqs=meta["dir_freqs"],
        hidden=meta["hidden"],
        step_size=meta["step_size"],
        background=meta["background"],
        density_activation=meta["density_activation"],
        density_scale=meta["density_scale"],
        ert_threshold=meta["ert_threshold"],
        cameras=cameras,
        provenance=meta["provenance"],
    )


def load_scene(path: str | os.PathLike[str]) -> Scene:
    """Load and fully validate a .kilo v1 file; any problem raises SceneFormatError("<path>: <problem>").

    The occupancy stays packed (`BitGrid`): the scene takes about the file's size in memory. Voxels set in
    cells without a network, which can never hold a sample, are cleared in place (so that the renderer's
    voxel table is the occupancy itself: `renderer.distance_field.contributing_bits`)."""
    name = str(path)
    meta, arrays = _read_file(name, Path(path))
    scene = _scene_from(meta, arrays)
    validate_scene(scene, name)
    contributing_bits(scene.network_index, scene.occupancy, in_place=True)
    return scene


def load_scene_summary(path: str | os.PathLike[str]) -> tuple[Scene, int]:
    """``load_scene`` and the number of occupied voxels, counted on the packed bits."""
    scene = load_scene(path)
    return scene, scene.occupancy.count()
