"""Dynamic resolution: pick a render scale that meets a target frame rate while the camera moves.

The renderer's cost is close to linear in pixels, so the controller keeps a running estimate of
milliseconds per pixel and chooses the largest scale ``s`` with ``ms_per_px · (s·W)·(s·H) ≤ budget``,
but never below the backend's floor (``min_scale`` of the still frame and ``min_pixels``, from
app/backend_profiles.py). When the camera stops, the viewer renders at full resolution (in bands, see
render_worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class DynamicResolution:
    """Frame-time model and scale choice."""

    target_fps: float = 12.0
    """Frame rate to hold while moving."""
    min_scale: float = 0.08
    """Smallest resolution scale allowed."""
    min_pixels: int = 0
    """Smallest render size allowed while moving, in pixels (the floor is the larger of the two)."""
    initial_scale: float = 0.25
    """Scale of the first moving frame, before any frame was measured."""
    smoothing: float = 0.5
    """Weight of the newest measurement in the running ms-per-pixel estimate."""
    ms_per_px: float | None = None
    """Current estimate (None until the first frame)."""

    def configure(self, profile: Any) -> None:
        """Take a backend profile's limits and forget the old backend's cost estimate."""
        self.target_fps = float(profile.target_fps)
        self.min_scale = float(profile.min_scale)
        self.min_pixels = int(profile.min_pixels)
        self.ms_per_px = None

    def observe(self, ms: float, pixels: int) -> None:
        """Record that ``pixels`` pixels took ``ms`` milliseconds."""
        if pixels <= 0 or ms <= 0:
            return
        m = ms / pixels
        self.ms_per_px = (
            m if self.ms_per_px is None else (1 - self.smoothing) * self.ms_per_px + self.smoothing * m
        )

    def floor_scale(self, width: int, height: int, max_scale: float = 1.0) -> float:
        """The smallest scale allowed for a ``width × height`` still frame (at most ``max_scale``)."""
        by_pixels = math.sqrt(self.min_pixels / max(1, width * height)) if self.min_pixels > 0 else 0.0
        return min(max_scale, max(self.min_scale, by_pixels))

    def moving_scale(self, width: int, height: int, max_scale: float = 1.0) -> float:
        """Scale in [floor, max_scale] while moving, full size ``width × height`` (1/64 steps)."""
        floor = self.floor_scale(width, height, max_scale)
        if self.ms_per_px is None:
            return max(floor, min(max_scale, self.initial_scale))
        budget_ms = 1000.0 / max(self.target_fps, 0.5)  # a typed 0 never divides
        s = math.sqrt(budget_ms / max(self.ms_per_px * width * height, 1e-9))
        s = math.floor(s * 64) / 64
        return max(floor, min(max_scale, s))

    def predicted_ms(self, pixels: int) -> float | None:
        """Predicted milliseconds for ``pixels`` pixels (None before the first frame)."""
        return None if self.ms_per_px is None else self.ms_per_px * pixels
