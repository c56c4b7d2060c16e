"""Pinhole cameras (OpenGL/Blender convention: looks down −Z, +Y up), rays, camera JSON, look-at and orbit."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_text


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
        """Parse and check a camera JSON object; raises ``CameraFormatError`` naming ``name``."""
        if not isinstance(d, dict):
            raise CameraFormatError(f"{name}: camera must be a JSON object, got {type(d).__name__}")
        for key in ("width", "height", "focal", "c2w"):
            if key not in d:
                raise CameraFormatError(f"{name}: missing key {key!r}")
        w, h = d["width"], d["height"]
        for key, v in (("width", w), ("height", h)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > 1 << 15:
                raise CameraFormatError(f"{name}: {key} must be an integer in 1..32768, got {v!r}")
        focal = _finite_float(d["focal"], "focal", name)
        if focal <= 0:
            raise CameraFormatError(f"{name}: focal must be > 0, got {focal}")
        try:
            c2w = np.asarray(d["c2w"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise CameraFormatError(f"{name}: c2w must be a 4x4 array of numbers ({e})") from None
        if c2w.shape != (4, 4):
            raise CameraFormatError(f"{name}: c2w must be 4x4, got shape {list(c2w.shape)}")
        if not np.all(np.isfinite(c2w)):
            raise CameraFormatError(f"{name}: c2w has non-finite values")
        if abs(np.linalg.det(c2w[:3, :3])) < 1e-8:
            raise CameraFormatError(f"{name}: c2w rotation is singular")
        cx = _finite_float(d["cx"], "cx", name) if d.get("cx") is not None else None
        cy = _finite_float(d["cy"], "cy", name) if d.get("cy") is not None else None
        return cls(width=w, height=h, focal=focal, c2w=c2w, cx=cx, cy=cy)

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


def _finite_float(v: Any, key: str, name: str) -> float:
    """``v`` as a finite float or ``CameraFormatError``."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise CameraFormatError(f"{name}: {key} must be a finite number, got {v!r}")
    return float(v)


def pixel_rays(
    c2w: torch.Tensor, px: torch.Tensor, py: torch.Tensor, focal: float, cx: float, cy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres, computed in ``c2w``'s dtype: the project's one pixel → ray rule.

    Camera-space direction of pixel (px, py): ((px + ½ − cx)/f, −(py + ½ − cy)/f, −1), rotated by c2w
    (x·R[:, 0] + y·R[:, 1] − R[:, 2]) and normalised; the origin is c2w[:3, 3].

    Args:
        c2w: ``[R, 4, 4]`` camera-to-world of each ray's camera, or one ``[4, 4]`` for every ray
            (OpenGL/Blender convention: the camera looks down −Z, +Y up).
        px, py: ``[R]`` pixel coordinates (0-based, from the top-left), any real or integer dtype.
        focal, cx, cy: pinhole focal length and principal point in pixels.

    Returns:
        origins ``[R, 3]`` and unit directions ``[R, 3]``, in c2w's dtype and on its device.
    """
    dt = c2w.dtype
    x = ((px.to(dt) + 0.5 - cx) / focal)[:, None]
    y = (-(py.to(dt) + 0.5 - cy) / focal)[:, None]
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
    """Read a camera JSON file; ``CameraFormatError`` (naming the file) when missing or malformed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CameraFormatError(f"{p}: camera file not found") from None
    except IsADirectoryError:
        raise CameraFormatError(f"{p}: is a directory, not a camera JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CameraFormatError(f"{p}: cannot read camera file ({e.__class__.__name__}: {e})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CameraFormatError(f"{p}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return Camera.from_dict(d, name=str(p))


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
