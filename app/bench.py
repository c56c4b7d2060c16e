"""Viewer benchmark: frame rate and render size while the camera keeps moving (dynamic resolution on), the
time to the refined full-size frame once it stops, UI frame times and stalls, the per-frame breakdown
(render in the worker thread; upload, overlay drawing and UI on the UI thread) and peak RAM.

Speed is reported beside the machine's 2048² float32 matmul rate measured in the same run
(:func:`matmul_gflops`), never compared with a fixed threshold.

:func:`run_export_bench` (``run_viewer.py --bench-export``) times the window's turntable export against the
headless command's for the same frames, in the same run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STALL_MS = 100.0
"""A UI frame longer than this counts as a stall (the window visibly stops responding)."""


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
    backend: str = ""
    refine_s: float | None = None
    """Seconds from the camera's last motion to the complete full-size frame on screen (None: not seen)."""
    refine_size: tuple[int, int] = (0, 0)
    refine_render_ms: float = 0.0
    """Render time of the refined frame (its bands together) in the worker."""
    refine_frame_ms: list[float] = field(default_factory=list)
    """UI frame times while the still frame refined."""
    peak_ram_mb: dict[str, float] = field(default_factory=dict)
    """Peak resident memory (VmHWM) of the viewer process and of its render processes, MiB."""

    @property
    def fps(self) -> float:
        """Rendered frames shown per second."""
        return self.shown_frames / self.seconds if self.seconds else 0.0

    @property
    def max_ui_ms(self) -> float:
        """Longest UI frame (what a user feels as a stall)."""
        return max(self.frame_ms + self.refine_frame_ms, default=0.0)

    @property
    def stalls(self) -> int:
        """UI frames longer than STALL_MS, moving and refining."""
        return _stalls(self.frame_ms + self.refine_frame_ms)

    def median_size(self) -> tuple[int, int]:
        """Median render width and height while moving (0, 0 without frames)."""
        if not self.resolutions:
            return 0, 0
        return int(np.median([r[0] for r in self.resolutions])), int(
            np.median([r[1] for r in self.resolutions])
        )

    def report(self) -> str:
        """A short table of the figures."""

        def stat(xs: list[float]) -> str:
            if not xs:
                return "n/a"
            a = np.asarray(xs)
            return f"mean {a.mean():7.1f}  p95 {np.percentile(a, 95):7.1f}  max {a.max():7.1f}"

        w, h = self.median_size()
        lo = min(self.resolutions, key=lambda r: r[0] * r[1], default=(0, 0))
        refine = "not reached" if self.refine_s is None else f"{self.refine_s:.2f} s"
        ram = ", ".join(f"{k} {v:.0f} MiB" for k, v in self.peak_ram_mb.items()) or "n/a"
        lines = [
            f"[{self.label}{', ' + self.backend if self.backend else ''}] {self.seconds:.1f} s: "
            f"{self.fps:.1f} rendered FPS ({self.shown_frames} frames), "
            f"{self.ui_frames / max(self.seconds, 1e-9):.0f} UI Hz, render size {w}x{h} median "
            f"(smallest {lo[0]}x{lo[1]})",
            f"  refined {self.refine_size[0]}x{self.refine_size[1]} still frame on screen {refine} after the "
            f"camera stopped (rendered in {self.refine_render_ms:.0f} ms)",
            f"  UI stalls > {STALL_MS:.0f} ms: {_stalls(self.frame_ms)} moving, "
            f"{_stalls(self.refine_frame_ms)} refining (longest UI frame "
            f"{max(self.frame_ms, default=0):.0f} / {max(self.refine_frame_ms, default=0):.0f} ms)",
            f"  peak RAM: {ram}",
            f"  render (worker) ms  {stat(self.render_ms)}",
            f"  upload ms           {stat(self.upload_ms)}",
            f"  overlays+quad ms    {stat(self.draw_ms)}",
            f"  UI (ImGui) ms       {stat(self.ui_ms)}",
            f"  whole UI frame ms   {stat(self.frame_ms)}",
        ]
        return "\n".join(lines)


def _stalls(frame_ms: list[float]) -> int:
    return sum(ms > STALL_MS for ms in frame_ms)


def _orbit(viewer: Any, seconds: float, deg_per_s: float, out: BenchResult | None) -> float:
    """Orbit for ``seconds`` with the main loop's pacing, recording into ``out``; returns when the camera
    last moved."""
    px_per_deg = 1.0 / viewer.camera.settings.rotate_deg_per_px
    t0 = last = time.perf_counter()
    seen = viewer.frame
    while (now := time.perf_counter()) - t0 < seconds:
        viewer.camera.orbit_rotate(deg_per_s * px_per_deg * (now - last), 0.0)
        last = now
        viewer.step()
        viewer.pace(now)
        if out is None:
            continue
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
    if out is not None:
        out.seconds = time.perf_counter() - t0
    return last


def measure_refine(viewer: Any, stopped: float, out: BenchResult, timeout: float = 20.0) -> None:
    """Run the main loop (steps and pacing) until the full-size frame of the still view is on screen."""
    end = stopped + timeout
    while (now := time.perf_counter()) < end:
        viewer.step()
        out.refine_frame_ms.append(viewer.timing.frame_ms)
        if viewer.full_frame_shown():
            out.refine_s = time.perf_counter() - stopped
            out.refine_size = viewer.frame.size
            out.refine_render_ms = viewer.frame.ms
            return
        viewer.pace(now)


def run_bench(
    viewer: Any,
    seconds: float = 8.0,
    deg_per_s: float = 30.0,
    label: str = "camera moving",
    warmup: float = 1.0,
    refine_timeout: float = 20.0,
) -> BenchResult:
    """Orbit the camera at ``deg_per_s`` for ``seconds`` (measured after ``warmup`` seconds of the same
    motion), then stop and time the refine of the still frame (skipped when ``refine_timeout`` is 0)."""
    viewer.settings.render.dynamic_res = True
    out = BenchResult(label=label, backend=viewer.settings.render.backend)
    _orbit(viewer, warmup, deg_per_s, None)
    stopped = _orbit(viewer, seconds, deg_per_s, out)
    if refine_timeout > 0:
        measure_refine(viewer, stopped, out, refine_timeout)
    out.peak_ram_mb = peak_ram_mb(getattr(viewer.worker.backend, "pids", []))
    return out


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory (``VmHWM``) of process ``pid``, MiB (None where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_ram_mb(child_pids: list[int]) -> dict[str, float]:
    """Peak RAM of this process and of ``child_pids`` (render processes, summed), MiB."""
    out: dict[str, float] = {}
    me = vm_hwm_mb()
    if me is not None:
        out["viewer process"] = me
    kids = [m for m in (vm_hwm_mb(p) for p in child_pids) if m is not None]
    if kids:
        out[f"{len(kids)} render process{'es' if len(kids) > 1 else ''}"] = sum(kids)
        out["total"] = sum(out.values())
    return out


def matmul_gflops(n: int = 2048, seconds: float = 1.0, threads: int = 0) -> float:
    """GFLOP/s of an ``n × n`` float32 matmul with torch on ``threads`` threads (0: every core): the best of
    the repetitions that fit in ``seconds`` after a warm-up, the machine's speed right now."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end or best == float("inf"):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return 2.0 * n**3 / best / 1e9


@dataclass
class ExportBench:
    """The same turntable exported from the window and by the headless command."""

    backend: str
    frames: int
    size: tuple[int, int]
    gui_s: float
    """From the Export panel's Turntable button to the video written (render and encode)."""
    headless_s: float
    """Render and encode, as the headless command reports it."""
    headless_process_s: float
    """The whole headless command: start-up and scene load included."""
    same_frames: bool

    def report(self) -> str:
        """Two lines: both times and whether the videos hold the same frames."""
        w, h = self.size
        return (
            f"[turntable export, {self.backend}] {self.frames} frames at {w}x{h}: window {self.gui_s:.1f} s, "
            f"headless {self.headless_s:.1f} s ({self.headless_process_s:.1f} s with start-up, scene load)\n"
            f"  decoded videos {'identical' if self.same_frames else 'DIFFER'}"
        )


def _gui_turntable_s(viewer: Any, args: Any, size: tuple[int, int], out: Path) -> float:
    """Export the turntable from the window (the Export panel's settings and button, the main loop
    running) and return its duration."""
    e = viewer.settings.export
    e.frames, e.fps, (e.video_width, e.video_height) = args.frames, round(args.fps or 30), size
    e.elevation, e.radius, e.video_path = args.elevation, args.radius, str(out)
    viewer.camera.settings.fov_y_deg = 40.0  # the headless turntable's field of view
    viewer.wait_full_frame(timeout=120)  # the still frame refined: nothing else renders meanwhile
    t0 = time.perf_counter()
    viewer.turntable()
    task = viewer.export
    while task is not None and not task.finished:
        now = time.perf_counter()
        viewer.step()
        viewer.pace(now)
    if task is None or task.error:
        raise RuntimeError(f"the window's export failed: {task.message if task else 'not started'}")
    return time.perf_counter() - t0


def _headless_turntable_s(viewer: Any, args: Any, size: tuple[int, int], out: Path) -> tuple[float, float]:
    """Run ``run_viewer.py --headless --turntable`` as a user would (a fresh process, the backend the window
    uses); (render and encode seconds it reports, the whole command's seconds)."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "run_viewer.py"), "--scene", str(args.scene), "--headless"]
    cmd += [
        "--backend",
        viewer.settings.render.backend,
        "--turntable",
        str(out),
        "--frames",
        str(args.frames),
    ]
    cmd += ["--fps", str(round(args.fps or 30)), "--size", f"{size[0]}x{size[1]}"]
    cmd += ["--elevation", str(args.elevation), "--radius", str(args.radius)]
    cmd += ["--no-ess"] * bool(args.no_ess) + ["--no-ert"] * bool(args.no_ert)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    total = time.perf_counter() - t0
    m = re.search(r"([0-9.]+) s\)\s*$", res.stdout)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"the headless export failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return float(m.group(1)), total


def run_export_bench(viewer: Any, args: Any, size: tuple[int, int]) -> ExportBench:
    """Time the turntable of ``args`` (frames, fps, elevation, radius, ESS/ERT) at ``size`` exported from
    the window and by the headless command, one after the other in this run, and compare their frames."""
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory(prefix="kilonerf-export-bench-") as d:
        gui, headless = Path(d) / "window.mp4", Path(d) / "headless.mp4"
        gui_s = _gui_turntable_s(viewer, args, size, gui)
        headless_s, process_s = _headless_turntable_s(viewer, args, size, headless)
        same = bool(np.array_equal(iio.imread(gui), iio.imread(headless)))
    return ExportBench(viewer.settings.render.backend, args.frames, size, gui_s, headless_s, process_s, same)
