"""Dynamic resolution: pick a render scale that meets a target frame rate while the camera moves.

The renderer's cost is close to linear in pixels, so the controller keeps a running estimate of
milliseconds per pixel and chooses the largest scale ``s`` with ``ms_per_px · (s·W)·(s·H) ≤ budget``.
When the camera stops, the viewer renders at full resolution (progressively, see render_worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DynamicResolution:
    """Frame-time model and scale choice."""

    target_fps: float = 12.0
    """Frame rate to hold while moving."""
    min_scale: float = 0.08
    """Smallest resolution scale allowed."""
    smoothing: float = 0.5
    """Weight of the newest measurement in the running ms-per-pixel estimate."""
    ms_per_px: float | None = None
    """Current estimate (None until the first frame)."""

    def observe(self, ms: float, pixels: int) -> None:
        """Record that ``pixels`` pixels took ``ms`` milliseconds."""
        if pixels <= 0 or ms <= 0:
            return
        m = ms / pixels
        self.ms_per_px = (
            m if self.ms_per_px is None else (1 - self.smoothing) * self.ms_per_px + self.smoothing * m
        )

    def moving_scale(self, width: int, height: int, max_scale: float = 1.0) -> float:
        """Scale in [min_scale, max_scale] while moving, full size ``width × height`` (1/64 steps)."""
        if self.ms_per_px is None:
            return max(self.min_scale, min(max_scale, 0.25))
        budget_ms = 1000.0 / self.target_fps
        s = math.sqrt(budget_ms / (self.ms_per_px * width * height))
        s = math.floor(s * 64) / 64
        return max(self.min_scale, min(max_scale, s))

    def predicted_ms(self, pixels: int) -> float | None:
        """Predicted milliseconds for ``pixels`` pixels (None before the first frame)."""
        return None if self.ms_per_px is None else self.ms_per_px * pixels
