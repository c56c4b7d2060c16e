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
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_bytes

FORMAT_NAME = "kilonerf"
FORMAT_VERSION = 1
METADATA_KEY = "kilonerf"

DENSITY_ACTIVATIONS = ("relu", "softplus", "exp")
WEIGHT_KEYS = tuple(f"l{i}.{kind}" for i in range(5) for kind in ("weight", "bias"))
CAMERA_TENSOR = "cameras.c2w"

MAX_GRID_RES = 4096
"""Largest network-grid resolution accepted per axis."""
MAX_OCCUPANCY_VOXELS = 2**31
"""Largest number of occupancy voxels (ox·oy·oz) accepted."""
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
_DTYPE_ARG = {"float16": torch.float16, "float32": torch.float32}
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
    occupancy: np.ndarray
    """bool [ox, oy, oz]: empty-space-skipping grid, True where space may be occupied."""
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

    @property
    def occupancy_fraction(self) -> float:
        """Fraction of occupancy voxels that are set, in [0, 1]."""
        occ = np.asarray(self.occupancy)
        return float(np.count_nonzero(occ)) / max(1, occ.size)


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
    if scale <= 0:
        raise _error(name, f"density_scale must be > 0, got {scale}")
    out["density_scale"] = scale
    eps = _finite(name, "ert_threshold", values["ert_threshold"])
    if not 0.0 <= eps <= 1.0:
        raise _error(name, f"ert_threshold must be in [0, 1], got {eps}")
    out["ert_threshold"] = eps
    return out


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


# ----------------------------------------------------------------------------------------------------------
# validate_scene


def validate_scene(scene: Scene, name: str = "<scene>") -> None:
    """Check every field of an in-memory scene against the .kilo v1 rules; raise SceneFormatError."""
    _check_box(name, scene.bbox_min, scene.bbox_max)
    grid, occ_res = _check_grids(name, scene.grid_res, scene.occupancy_res)
    s = _check_settings(
        name,
        {k: getattr(scene, k) for k in ("pos_freqs", "dir_freqs", "hidden", "step_size", "background")}
        | {k: getattr(scene, k) for k in ("density_activation", "density_scale", "ert_threshold")},
    )

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
        if not bool(torch.isfinite(scene.weights[k]).all()):
            raise _error(name, f"{k} contains non-finite values (NaN or Inf)")

    index = scene.network_index
    if not isinstance(index, np.ndarray) or index.dtype != np.int32:
        raise _error(name, f"network_index must be an int32 numpy array, got {_describe(index)}")
    if index.shape != grid:
        raise _error(name, f"network_index has shape {list(index.shape)}, expected grid_res {list(grid)}")
    _check_network_index(name, index, m)

    occ = scene.occupancy
    if not isinstance(occ, np.ndarray) or occ.dtype != np.bool_:
        raise _error(name, f"occupancy must be a bool numpy array, got {_describe(occ)}")
    if occ.shape != occ_res:
        raise _error(name, f"occupancy has shape {list(occ.shape)}, expected occupancy_res {list(occ_res)}")

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
        "occupancy": np.packbits(scene.occupancy.ravel(), bitorder="little"),
    }
    for k in WEIGHT_KEYS:
        tensors[k] = np.ascontiguousarray(scene.weights[k].detach().cpu().numpy())
    if scene.cameras is not None:
        tensors[CAMERA_TENSOR] = np.ascontiguousarray(scene.cameras.c2w, dtype=np.float32)
    meta = json.dumps(scene_metadata(scene), allow_nan=False, separators=(",", ":"))
    data = safetensors.numpy.save(tensors, metadata={METADATA_KEY: meta})
    atomic_write_bytes(path, data)


# ----------------------------------------------------------------------------------------------------------
# load_scene


@dataclass
class _TensorInfo:
    """One tensor entry of a safetensors header, checked against the file size."""

    dtype: str
    """Safetensors dtype code (F16, F32, I32, U8)."""
    shape: tuple[int, ...]
    """Tensor shape."""
    begin: int
    """Start byte offset within the data buffer."""
    end: int
    """End byte offset (exclusive) within the data buffer."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_json(text: bytes | str) -> Any:
    return json.loads(text, object_pairs_hook=_reject_duplicate_keys)


def _sniff_foreign(head: bytes) -> str | None:
    """Name the kind of a file that is clearly not safetensors (pickle, zip checkpoint), else None."""
    # PROTO 2..5, then FRAME (protocol 4+) or a typical first opcode of protocols 2-3
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] in b"\x95\x8c}])(cqXKJG":
        return "a Python pickle"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch checkpoint?)"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    return None


def _parse_tensor_entries(name: str, header: dict[str, Any], data_len: int) -> dict[str, _TensorInfo]:
    """Check every tensor entry's dtype, shape and offsets against the data buffer of ``data_len`` bytes."""
    entries: dict[str, _TensorInfo] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _error(name, f"tensor {key!r}: header entry must have exactly dtype, shape, data_offsets")
        dt, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dt not in _DTYPES:
            raise _error(name, f"tensor {key!r} has unsupported dtype {dt!r} (allowed: {', '.join(_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise _error(name, f"tensor {key!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _error(name, f"tensor {key!r} has invalid data_offsets {offsets!r}")
        nbytes = math.prod(shape) * _DTYPES[dt][1]
        if offsets[1] - offsets[0] != nbytes:
            raise _error(
                name,
                f"tensor {key!r}: data_offsets span {offsets[1] - offsets[0]} bytes, shape needs {nbytes}",
            )
        entries[key] = _TensorInfo(dt, tuple(shape), offsets[0], offsets[1])
    spans = sorted((e.begin, e.end, k) for k, e in entries.items() if e.end > e.begin)
    pos = 0
    for begin, end, key in spans:
        if begin != pos:
            what = "overlaps another tensor" if begin < pos else "leaves a gap before it"
            raise _error(name, f"tensor {key!r} {what} (data_offsets start {begin}, expected {pos})")
        pos = end
    for key, e in entries.items():
        if e.end > data_len:
            raise _error(
                name, f"truncated: tensor {key!r} ends at byte {e.end} of the data, the file has {data_len}"
            )
    if pos != data_len:
        raise _error(name, f"{data_len - pos} bytes of trailing data after the last tensor")
    return entries


def _parse_kilonerf_metadata(name: str, header: dict[str, Any]) -> dict[str, Any]:
    """Extract and check ``__metadata__["kilonerf"]``; return the Scene's settings, typed."""
    md = header.get("__metadata__")
    if md is None:
        raise _error(name, "no __metadata__ in the safetensors header (not a KiloNeRF .kilo scene)")
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise _error(name, "__metadata__ must map names to strings")
    if METADATA_KEY not in md:
        raise _error(name, f'__metadata__ has no "{METADATA_KEY}" entry (not a KiloNeRF .kilo scene)')
    try:
        meta = _parse_json(md[METADATA_KEY])
    except ValueError as e:
        raise _error(name, f'__metadata__["{METADATA_KEY}"] is not valid JSON: {e}') from None
    if not isinstance(meta, dict):
        raise _error(name, f'__metadata__["{METADATA_KEY}"] must be a JSON object')
    if meta.get("format") != FORMAT_NAME:
        raise _error(name, f'metadata "format" must be "{FORMAT_NAME}", got {meta.get("format")!r}')
    version = meta.get("version")
    if version != FORMAT_VERSION or not _is_int(version):
        raise _error(
            name, f"unsupported .kilo version {version!r} (this reader reads version {FORMAT_VERSION})"
        )
    for key in _REQUIRED_META:
        if key not in meta:
            raise _error(name, f"metadata is missing required key {key!r}")
    unknown = sorted(set(meta) - set(_REQUIRED_META) - set(_OPTIONAL_META))
    if unknown:
        raise _error(name, f"unknown metadata key {unknown[0]!r} (free-form data belongs in provenance)")

    bbox_min, bbox_max = _check_box(name, meta["bbox_min"], meta["bbox_max"])
    grid, occ = _check_grids(name, meta["grid_res"], meta["occupancy_res"])
    values = {k: meta[k] for k in ("pos_freqs", "dir_freqs", "hidden", "step_size", "background")}
    values["density_activation"] = meta.get("density_activation", "relu")
    values["density_scale"] = meta.get("density_scale", 1.0)
    values["ert_threshold"] = meta.get("ert_threshold", 0.01)
    out = _check_settings(name, values)
    out.update(bbox_min=bbox_min, bbox_max=bbox_max, grid_res=grid, occupancy_res=occ)

    cams = meta.get("cameras")
    if cams is not None:
        if not isinstance(cams, dict) or set(cams) != {"width", "height", "focal"}:
            raise _error(name, 'metadata "cameras" must be an object with exactly width, height, focal')
        out["cameras"] = _check_camera_intrinsics(name, cams["width"], cams["height"], cams["focal"])
    else:
        out["cameras"] = None
    prov = meta.get("provenance", {})
    if not isinstance(prov, dict):
        raise _error(name, 'metadata "provenance" must be a JSON object')
    out["provenance"] = prov
    return out


def _check_tensor_layout(name: str, entries: dict[str, _TensorInfo], meta: dict[str, Any]) -> tuple[int, str]:
    """Check names, dtypes and shapes of all tensors against the metadata; return (M, l* dtype code)."""
    expected = {"network_index", "occupancy", *WEIGHT_KEYS}
    if meta["cameras"] is not None:
        expected.add(CAMERA_TENSOR)
    for key in sorted(expected - set(entries)):
        raise _error(name, f"missing tensor {key!r}")
    for key in sorted(set(entries) - expected):
        if key == CAMERA_TENSOR:
            raise _error(name, f'tensor {key!r} present but metadata has no "cameras" object')
        raise _error(name, f"unexpected tensor {key!r}")

    def need(key: str, dtype: str, shape: tuple[int, ...]) -> None:
        e = entries[key]
        if e.dtype != dtype:
            raise _error(name, f"tensor {key!r} has dtype {e.dtype}, expected {dtype}")
        if e.shape != shape:
            raise _error(name, f"tensor {key!r} has shape {list(e.shape)}, expected {list(shape)}")

    grid, occ = meta["grid_res"], meta["occupancy_res"]
    need("network_index", "I32", grid)
    need("occupancy", "U8", (-(-(occ[0] * occ[1] * occ[2]) // 8),))
    l0 = entries["l0.weight"]
    if len(l0.shape) != 3:
        raise _error(name, f"tensor 'l0.weight' has shape {list(l0.shape)}, expected [M, in, hidden]")
    m = l0.shape[0]
    if m > MAX_NETWORKS:
        raise _error(name, f"l0.weight claims {m} networks, more than the limit {MAX_NETWORKS}")
    cells = grid[0] * grid[1] * grid[2]
    if m > cells:
        raise _error(name, f"{m} networks cannot fit in a {list(grid)} grid of {cells} cells")
    dt = l0.dtype
    if dt not in _TORCH_DTYPES:
        raise _error(name, f"tensor 'l0.weight' has dtype {dt}, expected F16 or F32")
    for key, shape in weight_shapes(m, meta["pos_freqs"], meta["dir_freqs"], meta["hidden"]).items():
        if entries[key].dtype != dt:
            raise _error(
                name, f"l* tensors must share one dtype: {key!r} is {entries[key].dtype}, l0.weight is {dt}"
            )
        need(key, dt, shape)
    if meta["cameras"] is not None:
        c = entries[CAMERA_TENSOR]
        if (
            c.dtype != "F32"
            or len(c.shape) != 3
            or c.shape[1:] != (4, 4)
            or not 1 <= c.shape[0] <= MAX_CAMERAS
        ):
            raise _error(
                name, f"tensor {CAMERA_TENSOR!r} is {c.dtype} {list(c.shape)}, expected F32 [K, 4, 4], K >= 1"
            )
    return m, dt


def _read_file(name: str, path: Path) -> tuple[dict[str, Any], bytes]:
    """Read and check a .kilo file's header before reading its data; return (typed metadata, file bytes)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _error(name, "no such file") from None
    except OSError as e:
        raise _error(name, f"cannot access: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise _error(name, "is a directory, not a .kilo scene file")
    if not stat.S_ISREG(mode):
        raise _error(name, "is not a regular file")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise _error(name, "no such file") from None
    except OSError as e:
        raise _error(name, f"cannot open: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise _error(name, "empty file (0 bytes), not a .kilo scene")
        head = f.read(8)
        foreign = _sniff_foreign(head)
        if len(head) < 8:
            raise _error(name, f"truncated: {size} bytes is too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if foreign and (header_len > size - 8 or header_len > MAX_HEADER_BYTES):
            raise _error(name, f"is {foreign}, not a .kilo (safetensors) scene; such files are never loaded")
        if header_len > size - 8:
            raise _error(
                name, f"header length {header_len} exceeds the file size {size} (truncated or not a .kilo)"
            )
        if header_len < 2 or header_len > MAX_HEADER_BYTES:
            raise _error(name, f"implausible safetensors header length {header_len}")
        raw_header = f.read(header_len)
        if len(raw_header) != header_len:
            raise _error(name, "file changed size while being read")
        if not raw_header.startswith(b"{"):
            raise _error(name, "safetensors header does not start with '{' (not a .kilo scene)")
        try:
            header = _parse_json(raw_header.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _error(name, f"safetensors header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise _error(name, "safetensors header must be a JSON object")
        data_len = size - 8 - header_len
        entries = _parse_tensor_entries(name, header, data_len)
        meta = _parse_kilonerf_metadata(name, header)
        _check_tensor_layout(name, entries, meta)
        # Everything the header claims is now bounded by the limits and by the actual file size.
        f.seek(0)
        data = f.read()
    if len(data) != size:
        raise _error(name, "file changed size while being read")
    return meta, data


def load_scene(path: str | os.PathLike[str]) -> Scene:
    """Load and fully validate a .kilo v1 file; any problem raises SceneFormatError("<path>: <problem>")."""
    import safetensors.numpy

    name = str(path)
    meta, data = _read_file(name, Path(path))
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as e:  # the header was checked; this is a last line of defence
        raise _error(name, f"safetensors could not read the tensors: {e}") from None

    occ_res = meta["occupancy_res"]
    n_vox = occ_res[0] * occ_res[1] * occ_res[2]
    packed = arrays["occupancy"]
    tail_bits = packed.size * 8 - n_vox
    if tail_bits and int(packed[-1]) >> (8 - tail_bits):
        raise _error(name, "occupancy has set padding bits after the last voxel")
    occupancy = np.unpackbits(packed, count=n_vox, bitorder="little").astype(bool).reshape(occ_res)

    cameras = None
    if meta["cameras"] is not None:
        w, h, focal = meta["cameras"]
        cameras = SceneCameras(
            width=w, height=h, focal=focal, c2w=np.ascontiguousarray(arrays[CAMERA_TENSOR])
        )

    weights = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in WEIGHT_KEYS}
    scene = Scene(
        bbox_min=meta["bbox_min"],
        bbox_max=meta["bbox_max"],
        grid_res=meta["grid_res"],
        occupancy_res=occ_res,
        network_index=np.ascontiguousarray(arrays["network_index"], dtype=np.int32),
        occupancy=occupancy,
        weights=weights,
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
    validate_scene(scene, name)
    return scene
