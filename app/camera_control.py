"""Orbit and fly camera controllers: input deltas in, a camera-to-world matrix out (no glfw here).

One state serves both modes: the eye position, yaw and pitch about the world up axis (+Z), and the
distance to the orbit target, which sits ``distance`` in front of the eye. Orbit mode rotates the eye
about that target, pans both, and zooms by scaling the distance; fly mode moves the eye (the target
follows). Key motion is ``speed · dt`` so it does not depend on the frame rate; mouse motion is per pixel.

Conventions (``c2w`` as in renderer/camera.py, OpenGL style): the camera looks down its −Z axis,
+Y is screen-up, +X screen-right. ``forward = (cos p cos y, cos p sin y, sin p)`` for yaw y, pitch p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

UP = np.array([0.0, 0.0, 1.0])


@dataclass
class ControlSettings:
    """Sensitivities and speeds of the camera controllers."""

    rotate_deg_per_px: float = 0.3
    """Orbit: degrees of azimuth/elevation per pixel of left drag."""
    look_deg_per_px: float = 0.15
    """Fly: degrees of yaw/pitch per pixel of mouse look."""
    zoom_per_notch: float = 0.9
    """Orbit: distance factor per wheel notch (scroll up zooms in)."""
    fly_speed: float = 1.0
    """Fly: world units per second."""
    fast_factor: float = 4.0
    """Fly: speed factor while Shift is held."""
    fov_y_deg: float = 40.0
    """Vertical field of view in degrees."""
    min_distance: float = 0.05
    """Orbit: closest distance to the target."""


@dataclass
class CameraController:
    """Viewer camera state shared by orbit and fly modes."""

    eye: np.ndarray = field(default_factory=lambda: np.array([0.0, -4.0, 1.0]))
    """Camera position [3]."""
    yaw: float = math.pi / 2
    """Radians about +Z; 0 looks along +X."""
    pitch: float = 0.0
    """Radians above the horizon, within ±89°."""
    distance: float = 4.0
    """Distance from the eye to the orbit target."""
    mode: str = "orbit"
    """"orbit" or "fly"."""
    settings: ControlSettings = field(default_factory=ControlSettings)
    """Speeds and field of view."""
    exact_c2w: np.ndarray | None = None
    """A pose set verbatim (training view, pasted JSON), used until the camera moves."""

    # ---- derived frames ------------------------------------------------------------------------------
    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction [3]."""
        cp = math.cos(self.pitch)
        return np.array([cp * math.cos(self.yaw), cp * math.sin(self.yaw), math.sin(self.pitch)])

    @property
    def right(self) -> np.ndarray:
        """Unit screen-right direction [3] (horizontal)."""
        return np.array([math.sin(self.yaw), -math.cos(self.yaw), 0.0])

    @property
    def up(self) -> np.ndarray:
        """Unit screen-up direction [3]."""
        return np.cross(self.right, self.forward)

    @property
    def target(self) -> np.ndarray:
        """Orbit centre [3], ``distance`` in front of the eye."""
        return self.eye + self.distance * self.forward

    def c2w(self) -> np.ndarray:
        """Camera-to-world [4, 4] float64 (columns right, up, −forward, eye)."""
        if self.exact_c2w is not None:
            return self.exact_c2w.copy()
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = self.right, self.up, -self.forward, self.eye
        return m

    def focal(self, height: int) -> float:
        """Focal length in pixels for an image ``height`` pixels tall."""
        return 0.5 * height / math.tan(math.radians(self.settings.fov_y_deg) / 2)

    # ---- setting the pose ----------------------------------------------------------------------------
    def look_at(self, eye: np.ndarray, target: np.ndarray) -> None:
        """Put the eye at ``eye`` [3] looking at ``target`` [3] (which becomes the orbit centre)."""
        d = np.asarray(target, float) - np.asarray(eye, float)
        dist = float(np.linalg.norm(d))
        if dist < 1e-9:
            raise ValueError("eye and target coincide")
        self.eye = np.asarray(eye, float).copy()
        self.distance = dist
        self._set_forward(d / dist)
        self.exact_c2w = None

    def set_c2w(self, c2w: np.ndarray, pivot: np.ndarray | None = None) -> None:
        """Jump to ``c2w`` [4, 4] exactly; orbit target: the view-axis point nearest ``pivot``."""
        c2w = np.asarray(c2w, dtype=np.float64)
        self.eye = c2w[:3, 3].copy()
        f = -c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
        self._set_forward(f)
        if pivot is not None:
            self.distance = max(
                float(np.dot(np.asarray(pivot, float) - self.eye, f)), self.settings.min_distance
            )
        self.exact_c2w = c2w.copy()

    def _set_forward(self, f: np.ndarray) -> None:
        self.yaw = math.atan2(f[1], f[0])
        self.pitch = _clamp_pitch(math.asin(max(-1.0, min(1.0, float(f[2])))))

    def _moved(self) -> None:
        self.exact_c2w = None

    # ---- orbit mode ----------------------------------------------------------------------------------
    def orbit_rotate(self, dx_px: float, dy_px: float) -> None:
        """Left drag by (dx, dy) pixels: turn the scene like grabbing it (drag right → the camera circles
        to the left; drag down → the camera rises and looks down more)."""
        target = self.target
        k = math.radians(self.settings.rotate_deg_per_px)
        self.yaw -= dx_px * k
        self.pitch = _clamp_pitch(self.pitch - dy_px * k)
        self.eye = target - self.distance * self.forward
        self._moved()

    def pan(self, dx_px: float, dy_px: float, viewport_h: int) -> None:
        """Right/middle drag: move eye and target so the target plane follows the cursor."""
        per_px = self.distance / self.focal(viewport_h)
        self.eye = self.eye - self.right * dx_px * per_px + self.up * dy_px * per_px
        self._moved()

    def zoom(self, notches: float) -> None:
        """Wheel: scale the distance to the target by ``zoom_per_notch ** notches`` (positive zooms in)."""
        target = self.target
        self.distance = max(self.distance * self.settings.zoom_per_notch**notches, self.settings.min_distance)
        self.eye = target - self.distance * self.forward
        self._moved()

    # ---- fly mode ------------------------------------------------------------------------------------
    def look(self, dx_px: float, dy_px: float) -> None:
        """Mouse look: yaw/pitch the view about the eye (mouse right → look right, mouse down → look down)."""
        k = math.radians(self.settings.look_deg_per_px)
        self.yaw -= dx_px * k
        self.pitch = _clamp_pitch(self.pitch - dy_px * k)
        self._moved()

    def fly(self, move: tuple[float, float, float], dt: float, fast: bool = False) -> None:
        """Move by ``move`` = (right, up, forward) in {-1, 0, 1} for ``dt`` seconds (up is world +Z)."""
        if not any(move) or dt <= 0:
            return
        speed = self.settings.fly_speed * (self.settings.fast_factor if fast else 1.0)
        fwd = self.forward
        delta = move[0] * self.right + move[1] * UP + move[2] * fwd
        n = float(np.linalg.norm(delta))
        if n > 0:
            self.eye = self.eye + delta / n * speed * dt
            self._moved()


def _clamp_pitch(p: float) -> float:
    lim = math.radians(89.0)
    return max(-lim, min(lim, p))
