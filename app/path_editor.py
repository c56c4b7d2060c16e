"""The camera-path editor's state (no GL, no imgui): keyframes added from the current view, deleted,
reordered, retimed; preview playback; save and load as nerfstudio's ``camera_path.json``.
``app/panels.py`` draws it; ``app/camera_path.py`` holds the path math and the file format."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from app.camera_path import CameraPath, Keyframe, load_camera_path, pose_at, save_camera_path

MIN_GAP_S = 0.05
"""Smallest time between two keyframes (seconds)."""


@dataclass
class PathEditor:
    """Keyframes being edited, the render settings of the path, and the preview clock."""

    keyframes: list[Keyframe] = field(default_factory=list)
    fps: float = 24.0
    width: int = 640
    height: int = 480
    file: str = "exports/camera_path.json"
    video: str = "exports/camera_path.mp4"
    playing: bool = False
    t: float = 0.0
    """Preview time in seconds."""

    def path(self) -> CameraPath:
        """The path as edited."""
        return CameraPath(list(self.keyframes), self.fps, self.width, self.height)

    def add(self, c2w: np.ndarray, fov_deg: float, seconds_after: float = 1.0) -> int:
        """Append the view as a keyframe ``seconds_after`` the last one; its index."""
        t = self.keyframes[-1].time + seconds_after if self.keyframes else 0.0
        self.keyframes.append(Keyframe(np.array(c2w, np.float64), float(fov_deg), t))
        return len(self.keyframes) - 1

    def delete(self, i: int) -> None:
        """Remove keyframe ``i`` (the first one left starts at t = 0)."""
        del self.keyframes[i]
        if self.keyframes and self.keyframes[0].time != 0.0:
            shift = self.keyframes[0].time
            self.keyframes = [replace(k, time=k.time - shift) for k in self.keyframes]

    def move(self, i: int, step: int) -> None:
        """Swap keyframe ``i``'s view with its neighbour ``i + step`` (the times stay in place)."""
        j = i + step
        if not (0 <= i < len(self.keyframes) and 0 <= j < len(self.keyframes)):
            return
        a, b = self.keyframes[i], self.keyframes[j]
        self.keyframes[i] = replace(b, time=a.time)
        self.keyframes[j] = replace(a, time=b.time)

    def set_time(self, i: int, t: float) -> float:
        """Retime keyframe ``i``, kept between its neighbours (the first stays at 0); the time set."""
        if i == 0:
            return 0.0
        lo = self.keyframes[i - 1].time + MIN_GAP_S
        hi = self.keyframes[i + 1].time - MIN_GAP_S if i + 1 < len(self.keyframes) else 1e6
        t = float(min(max(t, lo), hi))
        self.keyframes[i] = replace(self.keyframes[i], time=t)
        return t

    def advance(self, dt: float) -> tuple[np.ndarray, float] | None:
        """Preview: move the clock by ``dt`` and return the pose to show (None when not playing); stops at
        the end."""
        if not self.playing or not self.keyframes:
            return None
        self.t = min(self.t + max(dt, 0.0), self.path().seconds)
        if self.t >= self.path().seconds:
            self.playing = False
        return pose_at(self.path(), self.t)

    def play(self) -> None:
        """Start the preview from the beginning."""
        self.t, self.playing = 0.0, len(self.keyframes) > 0

    def save(self) -> str:
        """Write the path to ``file``; the message to show."""
        if not self.keyframes:
            raise ValueError("the camera path has no keyframes")
        out = save_camera_path(self.path(), self.file)
        return f"saved the camera path to {out} ({len(self.keyframes)} keyframes)"

    def load(self) -> str:
        """Read ``file`` (CameraPathError, one line, when it is unusable); the message to show."""
        p = load_camera_path(self.file, prefer_keyframes=True)
        self.keyframes, self.fps, self.width, self.height = p.keyframes, p.fps, p.width, p.height
        self.t, self.playing = 0.0, False
        return f"loaded {len(p.keyframes)} keyframes from {self.file}"
