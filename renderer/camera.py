"""Pinhole cameras (OpenGL/Blender convention: looks down −Z, +Y up), rays, camera JSON, look-at and orbit."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_text
from renderer.safe_json import parse_json

MAX_IMAGE_SIDE = 1 << 15
"""Largest camera width or height accepted from a camera JSON (pixels)."""
MAX_POSE_ABS = 1e6
"""Largest |entry| of a camera JSON's ``c2w`` (rotation and translation alike)."""
MIN_FOCAL_RATIO = 1e-3
"""Smallest focal length accepted, as a multiple of the larger image side (a field of view of ~179.9°)."""
MAX_FOCAL_RATIO = 1e4
"""Largest focal length, and largest |cx| and |cy|, as a multiple of the larger image side."""
MIN_ROTATION_DET = 1e-8
"""Smallest |det| of ``c2w``'s 3×3 rotation block (below it the camera is singular)."""
MAX_CAMERA_BYTES = 1 << 20
"""Largest camera JSON document accepted (bytes)."""


class CameraFormatError(ValueError):
    """A camera JSON file or dict is malformed (one-line message naming the file and the problem)."""


@dataclass
class Camera:
    """A pinhole camera."""

    width: int
    """Image width W in pixels."""
    height: int
    """Image height H in pixels."""
    focal: float
    """Focal length in pixels."""
    c2w: np.ndarray
    """``[4, 4]`` float64 camera-to-world matrix (columns: right, up, back, position)."""
    cx: float | None = None
    """Principal point x in pixels (None → W/2)."""
    cy: float | None = None
    """Principal point y in pixels (None → H/2)."""

    def __post_init__(self) -> None:
        self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(4, 4)

    @property
    def principal_point(self) -> tuple[float, float]:
        """(cx, cy) with the defaults applied."""
        cx = self.width / 2.0 if self.cx is None else float(self.cx)
        cy = self.height / 2.0 if self.cy is None else float(self.cy)
        return cx, cy

    def to_dict(self) -> dict[str, Any]:
        """The camera JSON object: ``{"width", "height", "focal", "c2w": 4×4 lists[, "cx", "cy"]}``."""
        d: dict[str, Any] = {
            "width": int(self.width),
            "height": int(self.height),
            "focal": float(self.focal),
            "c2w": [[float(v) for v in row] for row in self.c2w],
        }
        if self.cx is not None:
            d["cx"] = float(self.cx)
        if self.cy is not None:
            d["cy"] = float(self.cy)
        return d

    @classmethod
    def from_dict(cls, d: Any, name: str = "<camera>") -> Camera:
        """Parse and check a camera JSON object; raises ``CameraFormatError`` (one line naming ``name``).

        ``d`` is the parsed object, or the JSON text itself (``str``/``bytes``, parsed by
        ``safe_json.parse_json``: bounded size, depth and numbers). Limits: width and height integers in
        1..32768; focal in [1e-3, 1e4] × max(W, H); |cx|, |cy| ≤ 1e4 × max(W, H); ``c2w`` a 4×4 array of
        finite numbers with |v| ≤ 1e6 whose rotation block has |det| ≥ 1e-8.
        """
        if isinstance(d, str | bytes | bytearray):
            d = parse_json(
                bytes(d) if isinstance(d, bytearray) else d,
                name,
                error=CameraFormatError,
                what="camera JSON",
                max_bytes=MAX_CAMERA_BYTES,
            )
        if not isinstance(d, dict):
            raise CameraFormatError(f"{name}: camera must be a JSON object, got {type(d).__name__}")
        for key in ("width", "height", "focal", "c2w"):
            if key not in d:
                raise CameraFormatError(f"{name}: missing key {key!r}")
        w, h = d["width"], d["height"]
        for key, v in (("width", w), ("height", h)):
            if not _is_int(v) or not 1 <= int(v) <= MAX_IMAGE_SIDE:
                raise CameraFormatError(
                    f"{name}: {key} must be an integer in 1..{MAX_IMAGE_SIDE}, got {_show(v)}"
                )
        w, h = int(w), int(h)
        side = max(w, h)
        focal = _finite_float(d["focal"], "focal", name)
        lo, hi = MIN_FOCAL_RATIO * side, MAX_FOCAL_RATIO * side
        if not lo <= focal <= hi:
            raise CameraFormatError(
                f"{name}: focal must be in [{lo:g}, {hi:g}] pixels ({MIN_FOCAL_RATIO:g}..{MAX_FOCAL_RATIO:g} "
                f"times the larger image side {side}), got {focal:g}"
            )
        c2w = _c2w_matrix(d["c2w"], name)
        centre: list[float | None] = []
        for key in ("cx", "cy"):
            v = d.get(key)
            if v is None:
                centre.append(None)
                continue
            c = _finite_float(v, key, name)
            if abs(c) > hi:
                raise CameraFormatError(
                    f"{name}: {key} must be within ±{hi:g} pixels ({MAX_FOCAL_RATIO:g} times the larger "
                    f"image side {side}), got {c:g}"
                )
            centre.append(c)
        return cls(width=w, height=h, focal=focal, c2w=c2w, cx=centre[0], cy=centre[1])

    def scaled(self, factor: float) -> Camera:
        """Same pose and field of view at ``factor`` times the resolution (W, H rounded, at least 1)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        w = max(1, round(self.width * factor))
        h = max(1, round(self.height * factor))
        sx = w / self.width
        sy = h / self.height
        cx, cy = self.principal_point
        return Camera(
            width=w,
            height=h,
            focal=self.focal * sx,
            c2w=self.c2w.copy(),
            cx=None if self.cx is None else cx * sx,
            cy=None if self.cy is None else cy * sy,
        )

    def with_size(self, width: int, height: int) -> Camera:
        """Same pose and horizontal field of view at ``width`` × ``height`` pixels."""
        sx = width / self.width
        sy = height / self.height
        cx, cy = self.principal_point
        return Camera(
            width=int(width),
            height=int(height),
            focal=self.focal * sx,
            c2w=self.c2w.copy(),
            cx=None if self.cx is None else cx * sx,
            cy=None if self.cy is None else cy * sy,
        )


def _show(v: Any) -> str:
    """A short repr of a rejected value for a one-line message."""
    text = (
        repr(v) if not isinstance(v, int) or abs(v) < 10**30 else f"an integer of {len(str(abs(v)))} digits"
    )
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    """A real number, not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _finite_float(v: Any, key: str, name: str) -> float:
    """``v`` as a finite float or ``CameraFormatError``."""
    if _is_number(v):
        try:
            f = float(v)
        except (OverflowError, ValueError, TypeError):
            f = math.inf
        if math.isfinite(f):
            return f
    raise CameraFormatError(f"{name}: {key} must be a finite number, got {_show(v)}")


def _c2w_matrix(value: Any, name: str) -> np.ndarray:
    """A camera JSON's ``c2w``: 4 rows of 4 finite numbers, |v| ≤ MAX_POSE_ABS, non-singular rotation."""
    bad = f"{name}: c2w must be a 4x4 array of numbers"
    if isinstance(value, np.ndarray):
        if value.shape != (4, 4) or value.dtype.kind not in "iuf":
            raise CameraFormatError(f"{bad}, got an array of {value.dtype} with shape {list(value.shape)}")
        c2w = value.astype(np.float64)
    else:
        if not isinstance(value, list | tuple) or len(value) != 4:
            got = f"{len(value)} rows" if isinstance(value, list | tuple) else type(value).__name__
            raise CameraFormatError(f"{bad}, got {got}")
        c2w = np.empty((4, 4), dtype=np.float64)
        for i, row in enumerate(value):
            if not isinstance(row, list | tuple) or len(row) != 4:
                got = f"{len(row)} entries" if isinstance(row, list | tuple) else type(row).__name__
                raise CameraFormatError(f"{bad}, got row {i} with {got}")
            for j, v in enumerate(row):
                if not _is_number(v):
                    raise CameraFormatError(f"{bad}, got {_show(v)} at row {i} column {j}")
                try:
                    c2w[i, j] = float(v)
                except (OverflowError, ValueError, TypeError):
                    c2w[i, j] = math.inf
    if not np.all(np.isfinite(c2w)):
        raise CameraFormatError(f"{name}: c2w has non-finite values")
    big = float(np.abs(c2w).max())
    if big > MAX_POSE_ABS:
        raise CameraFormatError(f"{name}: c2w entries must be within ±{MAX_POSE_ABS:g}, got {big:g}")
    if not abs(np.linalg.det(c2w[:3, :3])) >= MIN_ROTATION_DET:
        raise CameraFormatError(f"{name}: c2w rotation is singular")
    return c2w


def pixel_rays(
    c2w: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    focal: float | torch.Tensor,
    cx: float | torch.Tensor,
    cy: float | torch.Tensor,
    fy: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres, computed in ``c2w``'s dtype: the project's one pixel → ray rule.

    Camera-space direction of pixel (px, py): ((px + ½ − cx)/fx, −(py + ½ − cy)/fy, −1), rotated by c2w
    (x·R[:, 0] + y·R[:, 1] − R[:, 2]) and normalised; the origin is c2w[:3, 3]. fx = ``focal``; fy =
    ``fy``, or ``focal`` when None (square pixels).

    Args:
        c2w: ``[R, 4, 4]`` camera-to-world of each ray's camera, or one ``[4, 4]`` for every ray
            (OpenGL/Blender convention: the camera looks down −Z, +Y up).
        px, py: ``[R]`` pixel coordinates (0-based, from the top-left), any real or integer dtype.
        focal, cx, cy, fy: pinhole focal lengths and principal point in pixels: numbers, or ``[R]`` tensors
            (each ray's camera's own, in c2w's dtype and on its device).

    Returns:
        origins ``[R, 3]`` and unit directions ``[R, 3]``, in c2w's dtype and on its device.
    """
    dt = c2w.dtype
    x = ((px.to(dt) + 0.5 - cx) / focal)[:, None]
    y = (-(py.to(dt) + 0.5 - cy) / (focal if fy is None else fy))[:, None]
    rot = c2w[..., :3, :3]  # [R, 3, 3] or [3, 3]; its columns are the camera's right, up and back axes
    dirs = x * rot[..., 0] + y * rot[..., 1] - rot[..., 2]
    origins = c2w[..., :3, 3].expand(dirs.shape).contiguous()
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def pixel_grid(
    width: int, height: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel of a ``width`` × ``height`` image, row-major (index = py·W + px): px, py ``[H·W]``."""
    px = torch.arange(width, device=device).repeat(height)
    py = torch.arange(height, device=device).repeat_interleave(width)
    return px, py


def _camera_rays64(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_rays`` of every pixel in float64: origins, unit dirs ``[H·W, 3]``, row-major pixels."""
    px, py = pixel_grid(camera.width, camera.height)
    cx, cy = camera.principal_point
    c2w = torch.from_numpy(np.ascontiguousarray(camera.c2w, dtype=np.float64))
    return pixel_rays(c2w, px, py, camera.focal, cx, cy)


def camera_directions(camera: Camera) -> torch.Tensor:
    """Unit world-space ray directions, float64 ``[H·W, 3]``, row-major pixels (``pixel_rays``)."""
    return _camera_rays64(camera)[1]


def generate_rays(camera: Camera, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of every pixel (``pixel_rays`` computed in float64, returned as float32).

    Returns:
        origins ``[H·W, 3]`` (all ``c2w[:3, 3]``), unit dirs ``[H·W, 3]``, row-major (index = py·W + px).
    """
    origins, dirs = _camera_rays64(camera)
    f32 = torch.float32
    return origins.to(f32).to(device).contiguous(), dirs.to(f32).to(device)


def load_camera_json(path: str | os.PathLike[str]) -> Camera:
    """Read a camera JSON file; ``CameraFormatError`` (one line naming the file) when missing or malformed.

    At most ``MAX_CAMERA_BYTES`` are read; the text is parsed by ``safe_json.parse_json`` and checked by
    :meth:`Camera.from_dict`.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_CAMERA_BYTES + 1)
    except FileNotFoundError:
        raise CameraFormatError(f"{p}: camera file not found") from None
    except IsADirectoryError:
        raise CameraFormatError(f"{p}: is a directory, not a camera JSON file") from None
    except OSError as e:
        raise CameraFormatError(
            f"{p}: cannot read camera file ({e.strerror or e.__class__.__name__})"
        ) from None
    if len(data) > MAX_CAMERA_BYTES:
        raise CameraFormatError(f"{p}: camera file is larger than the limit of {MAX_CAMERA_BYTES} bytes")
    return Camera.from_dict(data, name=str(p))


def save_camera_json(camera: Camera, path: str | os.PathLike[str]) -> None:
    """Write ``camera.to_dict()`` as JSON, atomically."""
    atomic_write_text(path, json.dumps(camera.to_dict(), indent=2) + "\n")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-12:
        raise ValueError("zero-length vector")
    return v / n


def look_at(
    eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` float64 of a camera at ``eye`` looking at ``target`` (−Z towards it).

    The camera's +Y is ``up`` made orthogonal to the view direction; when they are parallel another
    axis stands in for ``up``.
    """
    e = np.asarray(eye, dtype=np.float64)
    forward = _unit(np.asarray(target, dtype=np.float64) - e)
    u = _unit(np.asarray(up, dtype=np.float64))
    right = np.cross(forward, u)
    if np.linalg.norm(right) < 1e-9:
        alt = np.array([0.0, 1.0, 0.0]) if abs(u[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        right = np.cross(forward, alt)
    right = _unit(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = true_up
    c2w[:3, 2] = -forward
    c2w[:3, 3] = e
    return c2w


def orbit_pose(
    target: Sequence[float],
    radius: float,
    azimuth_deg: float,
    elevation_deg: float,
    up: Sequence[float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` on a sphere of ``radius`` around ``target``, looking at it.

    With ``up`` = +Z: eye = target + r·(cos el·cos az, cos el·sin az, sin el). For another ``up`` the
    same formula is used in the frame (a, b, up) with a ⟂ up chosen deterministically and b = up × a.
    """
    u = _unit(np.asarray(up, dtype=np.float64))
    ref = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = _unit(ref - u * float(ref @ u))
    b = np.cross(u, a)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = radius * (math.cos(el) * math.cos(az) * a + math.cos(el) * math.sin(az) * b + math.sin(el) * u)
    eye = np.asarray(target, dtype=np.float64) + offset
    return look_at(tuple(float(v) for v in eye), target, up)
