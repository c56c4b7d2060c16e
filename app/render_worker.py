"""Background rendering: a thread that renders the newest requested frame so the UI never waits for it.

Backends that render in this process (the native ``cpu`` renderer, whose frame is one ctypes call that
releases the GIL and runs on its own thread pool) are called right here; the torch renderer is called
through a child process (app/render_process.py), and the thread only waits for its answer.

The UI thread :meth:`RenderWorker.submit`\\ s a :class:`FrameRequest` (camera, options) whenever the view
changes; only the newest pending request is kept. Large frames are rendered in bands of rows (each band
is the same camera with its principal point shifted, so the pixels are exactly those of a full render),
published after every band (or once complete, ``FrameRequest.publish_bands``), and abandoned as soon as a
newer request arrives — that keeps a full resolution refine from blocking the next moving frame.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from app.backend_profiles import set_render_threads
from app.presenter import image_to_numpy

MAX_STATS = ("networks_touched", "passes")


class Backend(Protocol):
    """The renderer backend interface (renderer/backends.py)."""

    name: str

    def render(self, scene_or_rs: Any, camera: Any, options: Any) -> Any:
        """Render one camera; returns a RenderResult (image [H, W, 3], depth, stats)."""
        ...


@dataclass
class FrameRequest:
    """What to render."""

    camera: Any
    """renderer.camera.Camera at the render resolution."""
    options: Any
    """renderer.render.RenderOptions."""
    serial: int = 0
    """Increasing request number (set by the worker)."""
    band_ms: float = 0.0
    """Render in bands of about this many ms (0: one piece)."""
    scene_version: int = 0
    """Scene generation the request was made for."""
    publish_bands: bool = True
    """Publish each band as it is done (a slow refine shows progress); False: bands only let a newer
    request cut the refine short, and the frame is published once, complete (a fast backend's refine
    then costs the UI thread one upload, not one per band)."""
    threads: int | None = None
    """CPU threads for this frame (None: leave as is, 0: every core), set through
    ``app.backend_profiles.set_render_threads`` on the worker thread: the native pool for the ``cpu``
    backend, torch's for an in-process torch backend."""


@dataclass
class FrameResult:
    """A finished (or partially refined) frame."""

    image: np.ndarray | None
    """[H, W, 3] float32 (None when the frame went straight into a GL pixel buffer)."""
    depth: np.ndarray | None
    """[H, W] expected ray distance, when the renderer gave it."""
    stats: dict[str, float]
    """Summed renderer stats of the rendered rows."""
    ms: float
    """Wall time spent rendering so far."""
    request: FrameRequest
    complete: bool
    """False while bands remain."""
    rows_done: int = 0

    @functools.cached_property
    def depth_range(self) -> tuple[float, float] | None:
        """(nearest, farthest) expected ray distance over the rendered pixels that hit something: what the
        depth view's grey spans (near = white, far = dark grey), for its legend; None when nothing was hit."""
        if self.depth is None:
            return None
        d = self.depth[: self.rows_done or None]
        hit = d[d > 0]
        return (float(hit.min()), float(hit.max())) if hit.size else None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame."""
        return int(self.request.camera.width), int(self.request.camera.height)


def combine_stats(parts: list[dict[str, float]], touched: np.ndarray | None = None) -> dict[str, float]:
    """The frame's stats from its bands' (in row order): counts are summed; ``passes`` is the most of any
    band (as a one-call render reports the most of any ray chunk); ``networks_touched`` is the size of the
    union ``touched`` of the bands' masks when every band gave one (``networks_exact`` = 1), else the
    most of any band (``networks_exact`` = 0, shown as such); ``bands`` counts them."""
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            if not isinstance(v, int | float):
                continue
            out[k] = max(out.get(k, 0), v) if k in MAX_STATS else out.get(k, 0) + v
    if touched is not None:
        out["networks_touched"] = float(np.count_nonzero(touched))
    out["networks_exact"] = float(touched is not None or len(parts) <= 1)
    out["bands"] = float(len(parts))
    return out


def reshade_depth_rows(image: np.ndarray, depth: np.ndarray, rows: int) -> None:
    """Shade the depth view of rows [0, rows) over their common depth range, in place: each band of a
    refined frame was shaded over its own range by the renderer (``renderer.pixels.shade_depth``, used here
    too), which showed as stripes; the finished frame is then the one-call render's picture."""
    import torch

    from renderer.pixels import shade_depth

    d = torch.from_numpy(np.ascontiguousarray(depth[:rows]).reshape(-1))
    hit = d > 0
    grey = shade_depth(d, hit, torch.zeros(3)).numpy().reshape(rows, -1, 3)
    mask = hit.numpy().reshape(rows, -1)
    image[:rows][mask] = grey[mask]


def union_touched(acc: np.ndarray | None, res: Any, first: bool) -> np.ndarray | None:
    """The union of the networks evaluated so far and ``res.touched`` ([num_networks] bool); None once a
    band has no mask (a backend that does not say)."""
    mask = getattr(res, "touched", None)
    if mask is None or (acc is None and not first):
        return None
    m = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask, bool)
    if acc is None:
        return m.copy()
    return acc | m if acc.shape == m.shape else None


def stats_to_dict(stats: Any) -> dict[str, float]:
    """RenderStats (or a dict) → plain dict of numbers."""
    if stats is None:
        return {}
    if hasattr(stats, "to_dict"):
        stats = stats.to_dict()
    elif not isinstance(stats, dict):
        stats = dict(vars(stats))
    return {k: v for k, v in stats.items() if isinstance(v, int | float)}


def band_camera(camera: Any, y0: int, y1: int) -> Any:
    """The rows [y0, y1) of ``camera``'s image as a camera of its own: same focal and pose, cy shifted."""
    cx, cy = camera.principal_point
    return replace(camera, height=y1 - y0, cx=cx, cy=cy - y0)


def prepare_for_backend(backend: Backend, scene: Any) -> Any:
    """What ``backend.render`` should get for ``scene``: the backend's own prepared form when it has one,
    the torch renderer's RenderScene for the torch backend, else the Scene itself."""
    prepare = getattr(backend, "prepare", None)
    if callable(prepare):
        return prepare(scene)
    if getattr(backend, "name", "") == "torch":
        from renderer.render import prepare_scene

        return prepare_scene(scene, getattr(backend, "device", "cpu"))
    return scene


@dataclass
class WorkerTiming:
    """Per-frame timing, for the stats panel and the benchmark."""

    frames: int = 0
    last_ms: float = 0.0
    ms_per_px: float = 0.0
    """Render cost of the last band or frame."""
    history: list[float] = field(default_factory=list)


class RenderWorker:
    """Daemon threads rendering the newest request with ``backend`` on the current scene.

    With ``threads`` > 1 (a backend that renders calls in parallel, e.g. a pool of render processes),
    consecutive moving frames render at the same time; a result older than one already shown is dropped.
    """

    def __init__(self, backend: Backend, on_publish: Any = None, threads: int = 1) -> None:
        self.backend = backend
        self.on_publish = on_publish
        """Called (from the worker thread) after each published frame, e.g. to wake the UI loop."""
        self._scene: Any = None
        self._scene_version = 0
        self._cv = threading.Condition()
        self._pending: FrameRequest | None = None
        self._latest: FrameResult | None = None
        self._serial = 0
        self._stop = False
        self.error: str | None = None
        """Last render error (one line), shown in the UI."""
        self._busy = 0
        self._serial_lock = threading.Lock()
        self._taken = 0
        """Serial of the newest request a thread has started."""
        self._published = 0
        """Serial of the newest request with a published frame."""
        self.timing = WorkerTiming()
        self._threads = [
            threading.Thread(target=self._run, name=f"render-worker-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    @property
    def busy(self) -> bool:
        """Whether a frame is being rendered."""
        return self._busy > 0

    @property
    def scene(self) -> Any:
        """The scene frames are rendered with (the backend's prepared form)."""
        return self._scene

    @property
    def last_serial(self) -> int:
        """Serial of the newest request submitted."""
        return self._serial

    # ---- UI thread side ------------------------------------------------------------------------------
    def set_scene(self, prepared: Any) -> int:
        """Render with ``prepared`` (a Scene or the backend's prepared form); returns the scene version."""
        with self._cv:
            self._scene = prepared
            self._scene_version += 1
            self._cv.notify_all()
            return self._scene_version

    def set_backend(self, backend: Backend, prepared: Any) -> None:
        """Swap backend and scene together."""
        with self._cv:
            self.backend = backend
            self._scene = prepared
            self._scene_version += 1
            self._cv.notify_all()

    def submit(self, request: FrameRequest) -> int:
        """Queue ``request`` (replacing any older pending one); returns its serial."""
        with self._cv:
            self._serial += 1
            request.serial = self._serial
            request.scene_version = self._scene_version
            self._pending = request
            self._cv.notify_all()
            return request.serial

    def poll(self) -> FrameResult | None:
        """The newest published frame since the last poll, or None."""
        with self._cv:
            r, self._latest = self._latest, None
            return r

    def idle(self) -> bool:
        """No pending request and nothing rendering."""
        with self._cv:
            return self._pending is None and self._busy == 0

    def wait_idle(self, timeout: float) -> bool:
        """Block until idle (tests, export); True if it became idle."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.idle():
                return True
            time.sleep(0.005)
        return self.idle()

    def stop(self) -> None:
        """End the thread (after the band in progress)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    # ---- worker side ---------------------------------------------------------------------------------
    def _publish(self, result: FrameResult) -> bool:
        """Make ``result`` the newest frame for :meth:`poll`; False when a newer request's frame is already
        out (parallel threads), and then nothing is published."""
        with self._cv:
            serial = result.request.serial
            if serial < self._published:
                return False
            if self._latest is None or result.complete or not self._latest.complete:
                self._latest = result
                self._published = serial
        if self.on_publish is not None:
            self.on_publish()
        return True

    def _newer_pending(self, serial: int) -> bool:
        with self._cv:
            return (
                self._stop
                or self._taken > serial
                or (self._pending is not None and self._pending.serial > serial)
            )

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (self._pending is None or self._scene is None):
                    self._cv.wait()
                if self._stop:
                    return
                req, self._pending = self._pending, None
                assert req is not None
                scene, backend = self._scene, self.backend
                self._busy += 1
                self._taken = max(self._taken, req.serial)
            try:
                if getattr(backend, "parallel_safe", False):
                    self._render(req, scene, backend)
                else:  # one render at a time for backends that are not known to be thread-safe
                    with self._serial_lock:
                        self._render(req, scene, backend)
                self.error = None
            except Exception as e:  # a render failure must not kill the viewer
                self.error = f"render failed: {type(e).__name__}: {e}".splitlines()[0]
                traceback.print_exc()
            finally:
                with self._cv:
                    self._busy -= 1

    def _render(self, req: FrameRequest, scene: Any, backend: Backend) -> None:
        if req.threads is not None:
            set_render_threads(backend, req.threads)
        cam = req.camera
        w, h = int(cam.width), int(cam.height)
        t0 = time.perf_counter()
        per_row = self.timing.ms_per_px * w
        rows = h if req.band_ms <= 0 or per_row <= 0 else max(8, min(h, int(req.band_ms / per_row)))
        image = np.zeros((h, w, 3), np.float32)
        depth: np.ndarray | None = None
        parts: list[dict[str, float]] = []
        touched: np.ndarray | None = None
        y = 0
        while y < h:
            y1 = min(h, y + rows)
            c = cam if (y == 0 and y1 == h) else band_camera(cam, y, y1)
            res = backend.render(scene, c, req.options)
            image[y:y1] = image_to_numpy(res.image)
            d = getattr(res, "depth", None)
            if d is not None:
                if depth is None:
                    depth = np.zeros((h, w), np.float32)
                depth[y:y1] = d.detach().cpu().numpy() if hasattr(d, "detach") else np.asarray(d)
            parts.append(stats_to_dict(getattr(res, "stats", None)))
            touched = union_touched(touched, res, first=len(parts) == 1)
            if (
                getattr(req.options, "output", "rgb") == "depth"
                and depth is not None
                and not (y == 0 and y1 == h)
            ):
                reshade_depth_rows(image, depth, y1)
            y = y1
            ms = (time.perf_counter() - t0) * 1000
            self.timing.ms_per_px = ms / (w * y)
            done = y >= h
            if (done or req.publish_bands) and not self._publish(
                FrameResult(image, depth, combine_stats(parts, touched), ms, req, done, y)
            ):
                return
            if not done and self._newer_pending(req.serial):
                return
            if not done and req.publish_bands:  # later bands go to a fresh buffer: the published one stays
                image = image.copy()
                depth = depth.copy() if depth is not None else None
        self.timing.frames += 1
        self.timing.last_ms = (time.perf_counter() - t0) * 1000
        self.timing.history.append(self.timing.last_ms)
        del self.timing.history[:-240]
