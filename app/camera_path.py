"""Camera paths: keyframes (pose, vertical field of view, time), smooth interpolation between them, and
nerfstudio's ``camera_path.json`` format. Pure numpy: no GL, no imgui.

Interpolation: positions and the field of view follow a Catmull-Rom spline through the keyframes
(parameterised by keyframe time; the end tangents are one-sided), rotations are slerped between the two
keyframes of a segment along the shorter arc. The path passes through every keyframe exactly.

nerfstudio's format (what ``ns-render camera-path`` reads): ``render_width``, ``render_height``, ``fps``,
``seconds``, ``camera_type: "perspective"`` and ``camera_path``, a list of frames each with
``camera_to_world`` (16 numbers, the 4x4 row-major, OpenGL convention: the camera looks down -Z) and ``fov``
(vertical, degrees; focal = H/2 / tan(fov/2)). Its viewer also writes ``keyframes`` (``matrix``: the 4x4 as
16 column-major numbers, ``fov``, ``properties`` with ``["TIME", t]``). A file is read as untrusted input
(``renderer.safe_json``, every field checked; :class:`CameraPathError`, one line naming the file).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from renderer.camera import MAX_POSE_ABS, Camera
from renderer.safe_json import parse_json

MAX_KEYFRAMES = 10_000
MAX_FRAMES = 100_000
MAX_SIDE = 8192
MAX_PATH_BYTES = 64 * 2**20


class CameraPathError(ValueError):
    """A camera path that cannot be used (one line naming the file and the problem)."""


@dataclass(frozen=True)
class Keyframe:
    """One keyframe: where the camera is, how wide it sees, when."""

    c2w: np.ndarray
    """[4, 4] float64 camera-to-world (OpenGL convention)."""
    fov_deg: float
    """Vertical field of view in degrees."""
    time: float
    """Seconds from the start of the path."""


@dataclass
class CameraPath:
    """Keyframes in time order and how to render them."""

    keyframes: list[Keyframe]
    fps: float = 24.0
    width: int = 640
    height: int = 480

    @property
    def seconds(self) -> float:
        """Duration: the last keyframe's time."""
        return self.keyframes[-1].time if self.keyframes else 0.0

    @property
    def frame_count(self) -> int:
        """Frames rendered: one at t = 0, 1/fps, ... up to the last keyframe (at least 1)."""
        return max(1, int(math.floor(self.seconds * self.fps + 1e-6)) + 1)


# ---------------------------------------------------------------------------------------------- rotations


def quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix [3, 3] (orthonormalised first)."""
    u, _, vt = np.linalg.svd(np.asarray(r, np.float64))
    r = u @ vt
    if np.linalg.det(r) < 0:
        r = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    t = np.trace(r)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 1e-30))
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    qa = np.asarray(q)
    return qa / np.linalg.norm(qa)


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation from q0 (u = 0) to q1 (u = 1) along the shorter arc."""
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    a = math.acos(min(1.0, d))
    return (math.sin((1 - u) * a) * q0 + math.sin(u * a) * q1) / math.sin(a)


# ---------------------------------------------------------------------------------------------- interpolation


def _catmull_rom(p: list[np.ndarray], t: list[float], i: int, u: float) -> np.ndarray:
    """Cubic Hermite between p[i] and p[i+1] with Catmull-Rom tangents over the times ``t``."""
    n = len(p)
    dt = t[i + 1] - t[i]

    def tangent(k: int) -> np.ndarray:
        lo, hi = max(k - 1, 0), min(k + 1, n - 1)
        span = t[hi] - t[lo]
        return (p[hi] - p[lo]) / span if span > 0 else np.zeros_like(p[k])

    m0, m1 = tangent(i) * dt, tangent(i + 1) * dt
    h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
    h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
    return h00 * p[i] + h10 * m0 + h01 * p[i + 1] + h11 * m1


def pose_at(path: CameraPath, time: float) -> tuple[np.ndarray, float]:
    """The interpolated (c2w [4, 4], vertical fov in degrees) at ``time`` seconds (clamped to the path)."""
    ks = path.keyframes
    if not ks:
        raise CameraPathError("the camera path has no keyframes")
    if len(ks) == 1 or time <= ks[0].time:
        return ks[0].c2w.copy(), ks[0].fov_deg
    if time >= ks[-1].time:
        return ks[-1].c2w.copy(), ks[-1].fov_deg
    times = [k.time for k in ks]
    i = max(0, min(int(np.searchsorted(times, time, side="right")) - 1, len(ks) - 2))
    u = (time - times[i]) / (times[i + 1] - times[i])
    pos = _catmull_rom([k.c2w[:3, 3] for k in ks], times, i, u)
    fov = float(_catmull_rom([np.array([k.fov_deg]) for k in ks], times, i, u)[0])
    rot = matrix_from_quat(
        slerp(quat_from_matrix(ks[i].c2w[:3, :3]), quat_from_matrix(ks[i + 1].c2w[:3, :3]), u)
    )
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot, pos
    return c2w, min(179.0, max(1.0, fov))


def path_cameras(path: CameraPath, size: tuple[int, int] | None = None) -> list[Camera]:
    """One renderer camera per frame (at ``size`` or the path's own), t = i / fps."""
    w, h = size if size is not None else (path.width, path.height)
    out = []
    for i in range(path.frame_count):
        c2w, fov = pose_at(path, i / path.fps)
        out.append(Camera(width=w, height=h, focal=0.5 * h / math.tan(math.radians(fov) / 2), c2w=c2w))
    return out


def turntable_path(cameras: list[Camera], fps: float) -> CameraPath:
    """The turntable preset as a path: its cameras as keyframes one frame apart."""
    ks = [
        Keyframe(
            np.asarray(c.c2w, np.float64), math.degrees(2 * math.atan(0.5 * c.height / c.focal)), i / fps
        )
        for i, c in enumerate(cameras)
    ]
    return CameraPath(ks, fps, cameras[0].width, cameras[0].height)


# ---------------------------------------------------------------------------------------------- nerfstudio


def to_nerfstudio(path: CameraPath) -> dict[str, Any]:
    """The path in nerfstudio's ``camera_path.json`` format: every frame, plus the keyframes."""
    aspect = path.width / path.height
    frames = []
    for cam in path_cameras(path):
        fov = math.degrees(2 * math.atan(0.5 * cam.height / cam.focal))
        frames.append(
            {"camera_to_world": np.asarray(cam.c2w).reshape(-1).tolist(), "fov": fov, "aspect": aspect}
        )
    keyframes = [
        {
            "matrix": json.dumps(k.c2w.T.reshape(-1).tolist()),  # three.js: column-major
            "fov": k.fov_deg,
            "aspect": aspect,
            "properties": json.dumps([["FOV", k.fov_deg], ["NAME", f"Camera {i}"], ["TIME", k.time]]),
        }
        for i, k in enumerate(path.keyframes)
    ]
    return {
        "camera_type": "perspective",
        "render_width": path.width,
        "render_height": path.height,
        "fps": path.fps,
        "seconds": path.seconds,
        "keyframes": keyframes,
        "camera_path": frames,
    }


def _number(v: Any, what: str, name: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise CameraPathError(f"{name}: {what} must be a number in [{lo:g}, {hi:g}], got {str(v)[:40]}")
    return float(v)


def _matrix(v: Any, what: str, name: str, column_major: bool = False) -> np.ndarray:
    if isinstance(v, str):  # nerfstudio's keyframes hold the matrix as JSON text
        v = parse_json(v, name, error=CameraPathError, what=what, max_bytes=4096)
    if not isinstance(v, list) or len(v) != 16:
        raise CameraPathError(f"{name}: {what} must be 16 numbers, got {str(v)[:60]}")
    m = np.array([_number(x, what, name, -MAX_POSE_ABS, MAX_POSE_ABS) for x in v]).reshape(4, 4)
    m = m.T if column_major else m
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) or abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise CameraPathError(f"{name}: {what} is not a camera pose (bottom row [0, 0, 0, 1], invertible)")
    return m


def _keyframe_time(k: dict[str, Any], name: str, i: int) -> float | None:
    props = k.get("properties")
    if isinstance(props, str):
        props = parse_json(
            props, name, error=CameraPathError, what=f"keyframe {i} properties", max_bytes=4096
        )
    if isinstance(props, list):
        for p in props:
            if isinstance(p, list) and len(p) == 2 and p[0] == "TIME":
                return _number(p[1], f"keyframe {i} TIME", name, 0, 1e6)
    return None


def from_nerfstudio(data: Any, name: str, prefer_keyframes: bool = False) -> CameraPath:
    """A ``camera_path.json`` object → CameraPath: its ``camera_path`` frames (rendered exactly: one
    keyframe per frame, 1/fps apart), or its ``keyframes`` when it has no frames or ``prefer_keyframes``
    (the editor: the keyframes are what a person edits)."""
    if not isinstance(data, dict):
        raise CameraPathError(f"{name}: a camera path must be a JSON object")
    w = int(_number(data.get("render_width"), "render_width", name, 1, MAX_SIDE))
    h = int(_number(data.get("render_height"), "render_height", name, 1, MAX_SIDE))
    fps = _number(data.get("fps", 24), "fps", name, 0.1, 240)
    frames, keys = data.get("camera_path"), data.get("keyframes")
    out: list[Keyframe] = []
    use_keys = isinstance(keys, list) and bool(keys) and prefer_keyframes
    if isinstance(frames, list) and frames and not use_keys:
        if len(frames) > MAX_FRAMES:
            raise CameraPathError(f"{name}: more than {MAX_FRAMES} frames")
        for i, f in enumerate(frames):
            if not isinstance(f, dict):
                raise CameraPathError(f"{name}: camera_path[{i}] must be an object")
            c2w = _matrix(f.get("camera_to_world"), f"camera_path[{i}].camera_to_world", name)
            out.append(Keyframe(c2w, _number(f.get("fov"), f"camera_path[{i}].fov", name, 1, 179), i / fps))
    elif isinstance(keys, list) and keys:
        if len(keys) > MAX_KEYFRAMES:
            raise CameraPathError(f"{name}: more than {MAX_KEYFRAMES} keyframes")
        for i, k in enumerate(keys):
            if not isinstance(k, dict):
                raise CameraPathError(f"{name}: keyframes[{i}] must be an object")
            c2w = _matrix(k.get("matrix"), f"keyframes[{i}].matrix", name, column_major=True)
            t = _keyframe_time(k, name, i)
            out.append(
                Keyframe(
                    c2w, _number(k.get("fov"), f"keyframes[{i}].fov", name, 1, 179), i if t is None else t
                )
            )
    else:
        raise CameraPathError(f"{name}: no camera_path frames and no keyframes")
    if any(b.time <= a.time for a, b in zip(out, out[1:])):
        raise CameraPathError(f"{name}: keyframe times must increase")
    return CameraPath(out, fps, w, h)


def load_camera_path(path: str | Path, prefer_keyframes: bool = False) -> CameraPath:
    """Read a nerfstudio ``camera_path.json`` (CameraPathError, one line, for anything unusable)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PATH_BYTES:
            raise CameraPathError(f"{p}: larger than {MAX_PATH_BYTES} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise CameraPathError(f"{p}: cannot read ({e.strerror or e})") from None
    text = parse_json(data, str(p), error=CameraPathError, what="camera path")
    return from_nerfstudio(text, str(p), prefer_keyframes)


def save_camera_path(cp: CameraPath, path: str | Path) -> Path:
    """Write the path as nerfstudio's ``camera_path.json`` (atomic)."""
    from renderer.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(to_nerfstudio(cp), indent=1) + "\n")
    return Path(path)
