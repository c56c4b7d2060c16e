"""Low-level reading of a ``.kilo`` file: the safetensors header parsed and bounded before any data is read.

Scene files are untrusted input: nothing is unpickled, and the header's length, JSON, dtypes, shapes, byte
offsets and ``kilonerf`` metadata are checked against the limits and the actual file size first.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from renderer.safe_json import parse_json
from renderer.scene_checks import (
    _DTYPES,
    _OPTIONAL_META,
    _REQUIRED_META,
    _TORCH_DTYPES,
    CAMERA_TENSOR,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_CAMERAS,
    MAX_HEADER_BYTES,
    MAX_NETWORKS,
    METADATA_KEY,
    WEIGHT_KEYS,
    SceneFormatError,
    _check_box,
    _check_camera_intrinsics,
    _check_grids,
    _check_settings,
    _error,
    _is_int,
    check_step,
    weight_shapes,
)


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
    meta = parse_json(md[METADATA_KEY], name, error=SceneFormatError, what=f'__metadata__["{METADATA_KEY}"]')
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
    check_step(name, bbox_min, bbox_max, out["step_size"])
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


def _read_file(name: str, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a .kilo file's header before reading its data; return the typed metadata and the
    tensors, as numpy arrays over one buffer of the file's bytes (read once, never copied: memory stays
    at the file's size)."""
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
        header = parse_json(raw_header, name, error=SceneFormatError, what="safetensors header",
                            max_bytes=MAX_HEADER_BYTES)  # fmt: skip
        if not isinstance(header, dict):
            raise _error(name, "safetensors header must be a JSON object")
        data_len = size - 8 - header_len
        entries = _parse_tensor_entries(name, header, data_len)
        meta = _parse_kilonerf_metadata(name, header)
        _check_tensor_layout(name, entries, meta)
        # Everything the header claims is now bounded by the limits and by the actual file size.
        data = bytearray(data_len)
        if f.readinto(data) != data_len or f.read(1):
            raise _error(name, "file changed size while being read")
    return meta, _views(data, entries)


def _views(data: bytearray, entries: dict[str, _TensorInfo]) -> dict[str, np.ndarray]:
    """Each checked tensor entry as an array over ``data`` (copied only if its offset is misaligned)."""
    out = {}
    for key, e in entries.items():
        dtype = _DTYPES[e.dtype][0]
        count = (e.end - e.begin) // dtype.itemsize
        a = np.frombuffer(data, dtype=dtype, count=count, offset=e.begin).reshape(e.shape)
        out[key] = a if a.flags.aligned else a.copy()
    return out
