"""Checked fields of dataset files: limits, the one-line :class:`DatasetError`, numbers, poses, sizes, JSON.

A dataset on disk is untrusted: every loader reads its files through :func:`read_json` /
:func:`read_bounded` and turns every field it uses into a value through one of these checks, which answer
with a :class:`DatasetError` naming the file and the problem. No torch.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from renderer.camera import MAX_FOCAL_RATIO, MAX_POSE_ABS, MIN_FOCAL_RATIO
from renderer.safe_json import JsonLimitError, parse_json

# Limits on what a dataset on disk may ask of the loader (docs/DESIGN.md, "trainer/data").
#: Largest width or height of a dataset image, in pixels.
MAX_IMAGE_SIDE = 1 << 15
#: Most pixels of one dataset image (8192²; below PIL's own decompression-bomb warning).
MAX_IMAGE_PIXELS = 1 << 26
#: Most frames in one split.
MAX_FRAMES = 100_000
#: Largest transforms json (bytes).
MAX_JSON_BYTES = 64 * 2**20
#: Largest NSVF text file (intrinsics, bbox, pose), in bytes.
MAX_TEXT_BYTES = 2**20
#: Largest near / far plane and largest |coordinate| of a scene box (as for camera positions).
MAX_DISTANCE = MAX_POSE_ABS


class DatasetError(ValueError):
    """A missing or malformed dataset file; the message is one line naming the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


def check_background(background: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate a background colour: 3 finite floats in [0, 1] -> [3] float32."""
    bg = np.asarray(background, dtype=np.float32).reshape(-1)
    if bg.shape != (3,) or not np.all(np.isfinite(bg)) or bg.min() < 0.0 or bg.max() > 1.0:
        raise ValueError(f"background must be 3 floats in [0, 1], got {background!r}")
    return bg


def check_downscale(downscale: int) -> int:
    """Validate the integer downscale factor N >= 1."""
    if isinstance(downscale, bool) or not isinstance(downscale, int | np.integer) or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    return int(downscale)


def is_number(value: object) -> bool:
    """A real number (int or float, numpy's too), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _matrix_rows(values: object) -> list[list[float]] | None:
    """``values`` as rows of floats when it is a list of lists (or a flat list) of numbers, else None."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf" or values.ndim not in (1, 2):
            return None
        values = values.tolist()
    if not isinstance(values, list | tuple) or len(values) > 16:
        return None
    if all(is_number(v) for v in values):
        values = [values]
    rows: list[list[float]] = []
    for row in values:
        if not isinstance(row, list | tuple) or len(row) > 16 or not all(is_number(v) for v in row):
            return None
        try:
            rows.append([float(v) for v in row])
        except OverflowError:
            rows.append([math.inf])
    return rows


def as_c2w(values: object, source: Path, what: str = "pose") -> np.ndarray:
    """Parse a 4x4 (or 3x4, completed with [0, 0, 0, 1]) finite matrix -> [4, 4] float64.

    Entries must be numbers with |v| <= ``MAX_POSE_ABS`` (1e6), the bottom row [0, 0, 0, 1] and the
    rotation block non-singular.
    """
    rows = _matrix_rows(values)
    if rows is None:
        raise DatasetError(source, f"{what} is not a matrix of numbers")
    if len({len(r) for r in rows}) != 1:
        raise DatasetError(
            source, f"{what} must be a 4x4 matrix, got rows of lengths {[len(r) for r in rows]}"
        )
    m = np.asarray(rows, dtype=np.float64)
    if m.shape == (1, 16):
        m = m.reshape(4, 4)
    elif m.shape == (1, 12):
        m = m.reshape(3, 4)
    if m.shape == (3, 4):
        m = np.concatenate([m, np.array([[0.0, 0.0, 0.0, 1.0]])], axis=0)
    if m.shape != (4, 4):
        raise DatasetError(source, f"{what} must be a 4x4 matrix, got shape {list(m.shape)}")
    if not np.all(np.isfinite(m)):
        raise DatasetError(source, f"{what} has non-finite values")
    if np.abs(m).max() > MAX_POSE_ABS:
        big = float(np.abs(m).max())
        raise DatasetError(source, f"{what} has an entry of magnitude {big:g}, more than {MAX_POSE_ABS:g}")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DatasetError(source, f"{what} bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise DatasetError(source, f"{what} rotation is singular")
    return m


def check_options(
    root: Path, downscale: int, background: Sequence[float] | np.ndarray, limit: int | None
) -> tuple[int, np.ndarray, int | None]:
    """Validate loader options -> (downscale, background [3] float32, limit); DatasetError naming ``root``."""
    try:
        return check_downscale(downscale), check_background(background), check_limit(limit)
    except ValueError as e:
        raise DatasetError(root, str(e)) from None


def check_every(every: int) -> int:
    """Validate ``every`` (keep every k-th frame): an integer >= 1."""
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    return int(every)


def check_limit(limit: int | None) -> int | None:
    """Validate ``limit`` (first K frames): None or an integer >= 1."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    return int(limit)


def short_repr(value: object) -> str:
    """A repr of a rejected value short enough for a one-line message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def finite_float(value: object, source: Path, what: str) -> float:
    """``value`` (a number, not a bool or string) as a finite float, or a DatasetError naming ``source``."""
    if not is_number(value):
        raise DatasetError(source, f"{what} is not a number: {short_repr(value)}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        v = math.inf
    if not math.isfinite(v):
        raise DatasetError(source, f"{what} must be finite, got {short_repr(value)}")
    return v


def finite_positive(value: object, source: Path, what: str) -> float:
    """``value`` as a finite float > 0, or a DatasetError naming ``source``."""
    v = finite_float(value, source, what)
    if v <= 0:
        raise DatasetError(source, f"{what} must be a finite number > 0, got {short_repr(value)}")
    return v


def distance(value: object, source: Path, what: str) -> float:
    """A near or far plane: a number in (0, MAX_DISTANCE]."""
    v = finite_positive(value, source, what)
    if v > MAX_DISTANCE:
        raise DatasetError(source, f"{what} must be at most {MAX_DISTANCE:g}, got {v:g}")
    return v


def image_side(value: object, source: Path, what: str) -> int:
    """An image width or height: an integral number in 1..MAX_IMAGE_SIDE (``800`` or ``800.0``)."""
    v = finite_float(value, source, what)
    if v != int(v) or not 1 <= v <= MAX_IMAGE_SIDE:
        raise DatasetError(
            source, f"{what} must be an integer in 1..{MAX_IMAGE_SIDE}, got {short_repr(value)}"
        )
    return int(v)


def check_image_size(width: int, height: int, source: Path, where: str = "image") -> None:
    """DatasetError unless ``width`` x ``height`` is within MAX_IMAGE_SIDE per side and MAX_IMAGE_PIXELS."""
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise DatasetError(
            source, f"{where} is {width}x{height}; each side must be 1..{MAX_IMAGE_SIDE} pixels"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(
            source, f"{where} is {width}x{height}, more than the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def check_intrinsics(
    focal: float, cx: float | None, cy: float | None, width: int, height: int, source: Path
) -> None:
    """Focal in [MIN_FOCAL_RATIO, MAX_FOCAL_RATIO] x max(W, H) and |cx|, |cy| <= MAX_FOCAL_RATIO x max(W, H).

    The same bounds as a camera JSON's (``renderer.camera``): the ray maths stays far from overflow.
    """
    side = max(width, height)
    lo, hi = MIN_FOCAL_RATIO * side, MAX_FOCAL_RATIO * side
    if not lo <= focal <= hi:
        raise DatasetError(
            source,
            f"focal length {focal:g} pixels is outside [{lo:g}, {hi:g}] "
            f"({MIN_FOCAL_RATIO:g}..{MAX_FOCAL_RATIO:g} times the larger image side {side})",
        )
    for key, c in (("cx", cx), ("cy", cy)):
        if c is not None and abs(c) > hi:
            raise DatasetError(
                source,
                f"principal point {key} = {c:g} is outside ±{hi:g} pixels ({MAX_FOCAL_RATIO:g} times "
                f"the larger image side {side})",
            )


def check_frame_count(n: int, source: Path) -> None:
    """DatasetError when a split lists more than MAX_FRAMES frames."""
    if n > MAX_FRAMES:
        raise DatasetError(source, f"{n} frames, more than the limit of {MAX_FRAMES}")


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """At most ``max_bytes`` of a file; DatasetError when missing, unreadable or larger."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise DatasetError(path, f"{what} file not found") from None
    except IsADirectoryError:
        raise DatasetError(path, f"{what} is a folder, not a file") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read {what} ({e.strerror or e.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise DatasetError(path, f"{what} file is larger than the limit of {max_bytes} bytes")
    return data


def read_json(path: Path, what: str = "json", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file parsed by ``renderer.safe_json.parse_json`` (bounded size, depth, numbers; no duplicate
    keys); every refusal a DatasetError naming ``path``."""
    data = read_bounded(path, max_bytes, what)
    name = str(path)
    try:
        return parse_json(data, name, what=what, max_bytes=max_bytes)
    except JsonLimitError as e:
        message = str(e)
        raise DatasetError(
            path, message[len(name) + 2 :] if message.startswith(name + ": ") else message
        ) from None
