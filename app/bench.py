"""Viewer benchmark: frame rate while the camera keeps moving (dynamic resolution on), UI frame times,
and the per-frame breakdown (render in the worker thread; upload, overlay drawing and UI on the UI thread).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class BenchResult:
    """Measured figures of one benchmark run."""

    seconds: float = 0.0
    ui_frames: int = 0
    shown_frames: int = 0
    """Complete rendered frames displayed."""
    render_ms: list[float] = field(default_factory=list)
    upload_ms: list[float] = field(default_factory=list)
    ui_ms: list[float] = field(default_factory=list)
    draw_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)
    resolutions: list[tuple[int, int]] = field(default_factory=list)
    label: str = "camera moving"

    @property
    def fps(self) -> float:
        """Rendered frames shown per second."""
        return self.shown_frames / self.seconds if self.seconds else 0.0

    @property
    def max_ui_ms(self) -> float:
        """Longest UI frame (what a user feels as a stall)."""
        return max(self.frame_ms) if self.frame_ms else 0.0

    def report(self) -> str:
        """A short table of the figures."""

        def stat(xs: list[float]) -> str:
            if not xs:
                return "n/a"
            a = np.asarray(xs)
            return f"mean {a.mean():7.1f}  p95 {np.percentile(a, 95):7.1f}  max {a.max():7.1f}"

        res = "n/a"
        if self.resolutions:
            ws = np.array([r[0] for r in self.resolutions])
            hs = np.array([r[1] for r in self.resolutions])
            res = f"{int(np.median(ws))}x{int(np.median(hs))} median"
        lines = [
            f"[{self.label}] {self.seconds:.1f} s: {self.fps:.1f} rendered FPS ({self.shown_frames} frames), "
            f"{self.ui_frames / max(self.seconds, 1e-9):.0f} UI Hz, render resolution {res}",
            f"  render (worker) ms  {stat(self.render_ms)}",
            f"  upload ms           {stat(self.upload_ms)}",
            f"  overlays+quad ms    {stat(self.draw_ms)}",
            f"  UI (ImGui) ms       {stat(self.ui_ms)}",
            f"  whole UI frame ms   {stat(self.frame_ms)}",
        ]
        return "\n".join(lines)


def run_bench(
    viewer: Any,
    seconds: float = 8.0,
    deg_per_s: float = 30.0,
    label: str = "camera moving",
    warmup: float = 1.0,
) -> BenchResult:
    """Orbit the camera at ``deg_per_s`` for ``seconds`` and measure (after ``warmup`` seconds)."""
    r = viewer.settings.render
    r.dynamic_res = True
    px_per_deg = 1.0 / viewer.camera.settings.rotate_deg_per_px
    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        t = time.perf_counter()
        viewer.step()
        viewer.pace(t)
        viewer.camera.orbit_rotate(deg_per_s * px_per_deg * (time.perf_counter() - t), 0.0)
    out = BenchResult(label=label)
    t0 = time.perf_counter()
    last = t0
    seen = None
    while (now := time.perf_counter()) - t0 < seconds:
        viewer.camera.orbit_rotate(deg_per_s * px_per_deg * (now - last), 0.0)
        last = now
        viewer.step()
        viewer.pace(now)  # the main loop's pacing
        tm = viewer.timing
        out.ui_frames += 1
        out.upload_ms.append(tm.upload_ms)
        out.ui_ms.append(tm.ui_ms)
        out.draw_ms.append(tm.draw_ms)
        out.frame_ms.append(tm.frame_ms)
        f = viewer.frame
        if f is not None and f.complete and f is not seen:
            seen = f
            out.shown_frames += 1
            out.render_ms.append(f.ms)
            out.resolutions.append(f.size)
    out.seconds = time.perf_counter() - t0
    return out
