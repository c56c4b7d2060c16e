"""Camera paths: keyframes (pose, vertical field of view, time), smooth interpolation between them, and
nerfstudio's ``camera_path.json`` format. Pure numpy: no GL, no imgui.

Interpolation: positions and the field of view follow a Catmull-Rom spline through the keyframes
(parameterised by keyframe time; the end tangents are one-sided). Rotations follow the same rule on the
sphere of unit quaternions: each keyframe gets a Catmull-Rom angular velocity (the time-weighted mean of
its two segments' constant rates), and a segment is the spherical cubic Bézier (De Casteljau with slerps,
as in Shoemake's squad) whose end tangents are those velocities. So the path passes through every keyframe
exactly, and position, rotation and angular velocity are continuous there (C1); with two keyframes the
rotation is the plain slerp.

nerfstudio's format (what ``ns-render camera-path`` reads): ``render_width``, ``render_height``, ``fps``,
``seconds`` (it plays the frames at their count over ``seconds``), ``camera_type: "perspective"`` and
``camera_path``, a list of frames each with ``camera_to_world`` (16 numbers, the 4x4 row-major, OpenGL
convention: the camera looks down -Z), ``fov`` (vertical, degrees; focal = H/2 / tan(fov/2)) and ``aspect``.
Its viewer also writes ``keyframes``: ``matrix`` (16 numbers row-major; JSON text of the column-major
three.js array in its older viewer, with ``properties`` holding ``["TIME", t]``), ``fov``, ``aspect`` and
``override_transition_sec`` (seconds to the next keyframe, else ``default_transition_sec``); ``is_cycle``
returns to the first. A file is read as untrusted input (``renderer.safe_json``, every field checked;
:class:`CameraPathError`, one line naming the file).
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
    """Spherical interpolation from q0 (u = 0) to q1 (u = 1) along the shorter arc, at constant speed."""
    if float(np.dot(q0, q1)) < 0:
        q1 = -q1
    a = 2.0 * math.atan2(float(np.linalg.norm(q1 - q0)), float(np.linalg.norm(q1 + q0)))  # exact angle
    if a < 1e-9:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    return (math.sin((1 - u) * a) * q0 + math.sin(u * a) * q1) / math.sin(a)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a·b of quaternions (w, x, y, z)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_log(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis × angle in radians, the shorter way) of a unit quaternion."""
    q = q if q[0] >= 0 else -q
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-12:
        return 2.0 * q[1:]
    return 2.0 * math.atan2(s, float(q[0])) * q[1:] / s


def quat_exp(v: np.ndarray) -> np.ndarray:
    """Unit quaternion of the rotation vector ``v`` (axis × angle in radians)."""
    v = np.asarray(v, np.float64)
    a = float(np.linalg.norm(v))
    if a < 1e-12:
        q = np.array([1.0, *(0.5 * v)])
        return q / np.linalg.norm(q)
    return np.array([math.cos(a / 2), *(math.sin(a / 2) * v / a)])


def _rate(q0: np.ndarray, q1: np.ndarray, dt: float) -> np.ndarray:
    """Constant angular velocity (body frame, rad/s) that turns q0 into q1 in ``dt`` seconds."""
    return quat_log(quat_mul(q0 * np.array([1.0, -1.0, -1.0, -1.0]), q1)) / dt


# ---------------------------------------------------------------------------------------------- interpolation


def _tangents(p: list[np.ndarray], t: list[float], rate: Any) -> list[np.ndarray]:
    """Catmull-Rom tangents at the inner points of a window p[0..n-1] over times t (one-sided at the
    window's ends): the segments' rates weighted by their durations, i.e. (p[k+1] - p[k-1]) / (t[k+1] -
    t[k-1]) for positions."""
    seg = [rate(p[k], p[k + 1], t[k + 1] - t[k]) for k in range(len(p) - 1)]
    out = []
    for k in range(len(p)):
        parts = [(seg[a], t[a + 1] - t[a]) for a in (k - 1, k) if 0 <= a < len(seg)]
        out.append(sum(v * d for v, d in parts) / sum(d for _, d in parts))
    return out


def _window(times: np.ndarray, time: float) -> tuple[int, int, float]:
    """The segment holding ``time`` (index i of its first keyframe), the first keyframe of its
    Catmull-Rom window [i-1, i+2] and the fraction u in the segment."""
    n = len(times)
    i = max(0, min(int(np.searchsorted(times, time, side="right")) - 1, n - 2))
    u = (time - times[i]) / (times[i + 1] - times[i])
    return i, max(i - 1, 0), float(u)


def _pose(path: CameraPath, times: np.ndarray, time: float) -> tuple[np.ndarray, float]:
    ks = path.keyframes
    if len(ks) == 1 or time <= ks[0].time:
        return ks[0].c2w.copy(), ks[0].fov_deg
    if time >= ks[-1].time:
        return ks[-1].c2w.copy(), ks[-1].fov_deg
    i, lo, u = _window(times, time)
    win = ks[lo : min(i + 3, len(ks))]
    t = [k.time for k in win]
    j = i - lo  # the segment inside the window
    dt = t[j + 1] - t[j]
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2

    def hermite(p: list[np.ndarray]) -> np.ndarray:
        m = _tangents(p, t, lambda a, b, d: (b - a) / d)
        return h00 * p[j] + h10 * m[j] * dt + h01 * p[j + 1] + h11 * m[j + 1] * dt

    pos = hermite([k.c2w[:3, 3] for k in win])
    fov = float(hermite([np.array([k.fov_deg]) for k in win])[0])
    qs = [quat_from_matrix(win[0].c2w[:3, :3])]
    for k in win[1:]:  # each on the hemisphere of the previous one: the shorter arcs
        q = quat_from_matrix(k.c2w[:3, :3])
        qs.append(-q if float(np.dot(q, qs[-1])) < 0 else q)
    w = _tangents(qs, t, _rate)
    # spherical cubic Bézier (De Casteljau with slerps) whose end tangents are the angular velocities
    c = [qs[j], quat_mul(qs[j], quat_exp(w[j] * dt / 3)), quat_mul(qs[j + 1], quat_exp(-w[j + 1] * dt / 3))]
    c.append(qs[j + 1])
    while len(c) > 1:
        c = [slerp(a, b, u) for a, b in zip(c, c[1:])]
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = matrix_from_quat(c[0]), pos
    return c2w, min(179.0, max(1.0, fov))


def pose_at(path: CameraPath, time: float) -> tuple[np.ndarray, float]:
    """The interpolated (c2w [4, 4], vertical fov in degrees) at ``time`` seconds (clamped to the path)."""
    if not path.keyframes:
        raise CameraPathError("the camera path has no keyframes")
    return _pose(path, np.array([k.time for k in path.keyframes]), time)


def path_cameras(path: CameraPath, size: tuple[int, int] | None = None) -> list[Camera]:
    """One renderer camera per frame (at ``size`` or the path's own), t = i / fps."""
    if not path.keyframes:
        raise CameraPathError("the camera path has no keyframes")
    if path.frame_count > MAX_FRAMES:
        raise CameraPathError(f"the camera path has {path.frame_count} frames, more than {MAX_FRAMES}")
    w, h = size if size is not None else (path.width, path.height)
    times = np.array([k.time for k in path.keyframes])
    out = []
    for i in range(path.frame_count):
        c2w, fov = _pose(path, times, i / path.fps)
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
    """The path in nerfstudio's ``camera_path.json`` format: every frame (what ``ns-render camera-path``
    renders: ``seconds`` is the frame count over fps, the rate it plays them at) and the keyframes as its
    viewer writes them (row-major ``matrix``, each one's time to the next as its transition)."""
    aspect = path.width / path.height
    frames = []
    for cam in path_cameras(path):
        fov = math.degrees(2 * math.atan(0.5 * cam.height / cam.focal))
        frames.append(
            {"camera_to_world": np.asarray(cam.c2w).reshape(-1).tolist(), "fov": fov, "aspect": aspect}
        )
    ks = path.keyframes
    gaps = [b.time - a.time for a, b in zip(ks, ks[1:])] + [1.0]
    keyframes = [
        {
            "matrix": k.c2w.reshape(-1).tolist(),
            "fov": k.fov_deg,
            "aspect": aspect,
            "override_transition_enabled": True,
            "override_transition_sec": gap,
        }
        for k, gap in zip(ks, gaps)
    ]
    return {
        "camera_type": "perspective",
        "render_width": path.width,
        "render_height": path.height,
        "fps": path.fps,
        "seconds": path.frame_count / path.fps,
        "is_cycle": False,
        "default_fov": ks[0].fov_deg if ks else 50.0,
        "default_transition_sec": 1.0,
        "keyframes": keyframes,
        "camera_path": frames,
    }


def _number(v: Any, what: str, name: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise CameraPathError(f"{name}: {what} must be a number in [{lo:g}, {hi:g}], got {str(v)[:40]}")
    return float(v)


def _matrix(v: Any, what: str, name: str) -> np.ndarray:
    """16 numbers → [4, 4]: a list is row-major (``camera_to_world``, the viser viewer's ``matrix``); JSON
    text is column-major (nerfstudio's older three.js viewer wrote ``matrix`` as ``matrix.toArray()``)."""
    column_major = isinstance(v, str)
    if column_major:
        v = parse_json(v, name, error=CameraPathError, what=what, max_bytes=4096)
    if not isinstance(v, list) or len(v) != 16:
        raise CameraPathError(f"{name}: {what} must be 16 numbers, got {str(v)[:60]}")
    m = np.array([_number(x, what, name, -MAX_POSE_ABS, MAX_POSE_ABS) for x in v]).reshape(4, 4)
    m = m.T if column_major else m
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) or abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise CameraPathError(f"{name}: {what} is not a camera pose (bottom row [0, 0, 0, 1], invertible)")
    return m


def _keyframe_time(k: dict[str, Any], name: str, i: int) -> float | None:
    """The ``TIME`` of the older viewer's ``properties`` (None without one)."""
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


def _transition(data: dict[str, Any], k: dict[str, Any], name: str, i: int) -> float:
    """Seconds from keyframe ``i`` to the next: its own transition when enabled, else the default."""
    if k.get("override_transition_enabled") is True and k.get("override_transition_sec") is not None:
        return _number(
            k["override_transition_sec"], f"keyframes[{i}].override_transition_sec", name, 1e-3, 1e5
        )
    return _number(data.get("default_transition_sec", 2.0), "default_transition_sec", name, 1e-3, 1e5)


def _from_keyframes(data: dict[str, Any], keys: list[Any], name: str) -> list[Keyframe]:
    """nerfstudio's keyframes, timed by their TIME property (older viewer) or by the transitions."""
    if len(keys) > MAX_KEYFRAMES:
        raise CameraPathError(f"{name}: more than {MAX_KEYFRAMES} keyframes")
    out: list[Keyframe] = []
    t = 0.0
    for i, k in enumerate(keys):
        if not isinstance(k, dict):
            raise CameraPathError(f"{name}: keyframes[{i}] must be an object")
        c2w = _matrix(k.get("matrix"), f"keyframes[{i}].matrix", name)
        fov = _number(k.get("fov", data.get("default_fov")), f"keyframes[{i}].fov", name, 1, 179)
        own = _keyframe_time(k, name, i)
        out.append(Keyframe(c2w, fov, t if own is None else own))
        t = out[-1].time + _transition(data, k, name, i)
    if data.get("is_cycle") is True and len(out) > 1:  # back to the first view
        out.append(Keyframe(out[0].c2w, out[0].fov_deg, t))
    return out


def _from_frames(frames: list[Any], fps: float, name: str) -> list[Keyframe]:
    """nerfstudio's rendered frames, one keyframe each, 1/fps apart (rendered exactly)."""
    if len(frames) > MAX_FRAMES:
        raise CameraPathError(f"{name}: more than {MAX_FRAMES} frames")
    out = []
    for i, f in enumerate(frames):
        if not isinstance(f, dict):
            raise CameraPathError(f"{name}: camera_path[{i}] must be an object")
        c2w = _matrix(f.get("camera_to_world"), f"camera_path[{i}].camera_to_world", name)
        out.append(Keyframe(c2w, _number(f.get("fov"), f"camera_path[{i}].fov", name, 1, 179), i / fps))
    return out


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
    use_keys = isinstance(keys, list) and bool(keys) and prefer_keyframes
    if isinstance(frames, list) and frames and not use_keys:
        out = _from_frames(frames, fps, name)
    elif isinstance(keys, list) and keys:
        out = _from_keyframes(data, keys, name)
    else:
        raise CameraPathError(f"{name}: no camera_path frames and no keyframes")
    if any(b.time <= a.time for a, b in zip(out, out[1:])):
        raise CameraPathError(f"{name}: keyframe times must increase")
    path = CameraPath(out, fps, w, h)
    if path.frame_count > MAX_FRAMES:
        raise CameraPathError(f"{name}: {path.frame_count} frames to render, more than {MAX_FRAMES}")
    return path


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
