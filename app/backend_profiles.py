"""How the viewer drives each renderer backend: where it runs, the frame rate and render sizes it aims for
while the camera moves, the refine band length and its CPU threads (data, one row per backend).

The backends differ by orders of magnitude on a CPU-only machine (2 cores: the torch renderer ~75 ms for a
~100×64 frame, the native ``cpu`` renderer ~35 ms for 320×200), so the limits of the dynamic resolution are
per backend rather than one set tuned for the slowest. No glfw or imgui here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendProfile:
    """Viewer settings for one backend."""

    in_process: bool
    """Render on the viewer's render thread (False: in a child process, app/render_process.py)."""
    target_fps: float
    """Default frame rate to hold while the camera moves (the panel's target FPS)."""
    min_scale: float
    """Smallest resolution scale while moving, relative to the still frame."""
    min_pixels: int
    """Smallest render size while moving, in pixels (e.g. 320·200), whatever the window size."""
    band_ms: float
    """Length of one band of the full-resolution refine: how long a new moving frame may wait."""
    publish_bands: bool
    """Show the refine band by band (a slow backend: progress), or only once complete (a fast one: every
    shown band costs the UI thread an upload and a redraw, CPU taken from the refine itself)."""
    moving_threads: int
    """CPU threads of a moving frame (0: every core)."""
    still_threads: int
    """CPU threads of the refine of a still frame (0: every core)."""
    thread_pool: str = ""
    """Which pool the thread counts set: "native" (renderer.native), "torch" (in-process torch), "" none."""


PROFILES: dict[str, BackendProfile] = {
    # one torch thread per render process: tiny matmuls drown in thread hand-offs (5-8x slower on two)
    "torch": BackendProfile(
        in_process=False,
        target_fps=12.0,
        min_scale=0.08,
        min_pixels=0,
        band_ms=80.0,
        publish_bands=True,
        moving_threads=1,
        still_threads=1,
        thread_pool="torch",
    ),
    # the native kernels release the GIL and scale to both cores even for 96×72 frames (4 ms on 2 threads
    # against 7 on 1, alone; measured beside the UI thread too, docs/viewer.md)
    "cpu": BackendProfile(
        in_process=True,
        target_fps=20.0,
        min_scale=0.0,
        min_pixels=320 * 200,
        band_ms=120.0,
        publish_bands=False,
        moving_threads=0,
        still_threads=0,
        thread_pool="native",
    ),
    "cuda": BackendProfile(
        in_process=True,
        target_fps=60.0,
        min_scale=0.25,
        min_pixels=320 * 200,
        band_ms=40.0,
        publish_bands=False,
        moving_threads=0,
        still_threads=0,
    ),
}
"""Profiles by backend name; unknown names get the torch row (the most cautious)."""


def profile_for(backend: Any) -> BackendProfile:
    """The profile of ``backend`` (by its ``name``)."""
    return PROFILES.get(str(getattr(backend, "name", "")), PROFILES["torch"])


def resolve_threads(threads: int) -> int:
    """A thread count of a profile: 0 → every core of this machine."""
    return threads if threads > 0 else max(1, os.cpu_count() or 1)


def set_render_threads(backend: Any, threads: int) -> None:
    """Use ``threads`` CPU threads (0: every core) for ``backend``'s next frames, in this process.

    Backends in child processes (``threads_fixed``) keep the count they were started with. Changing the
    native pool restarts its workers, so it is only touched when the count changes.
    """
    if getattr(backend, "threads_fixed", False):
        return
    n = resolve_threads(threads)
    pool = profile_for(backend).thread_pool
    if pool == "native":
        from renderer.native import library

        if library.threads() != n:
            library.set_threads(n)
    elif pool == "torch":
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
