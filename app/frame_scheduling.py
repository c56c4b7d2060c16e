"""Frame scheduling of the viewer: when to ask for a new frame, at what resolution, and taking it.

Host-image path: :meth:`FrameSchedulingMixin.schedule_render` submits a request to the render worker when
the view changed (reduced scale while moving, full resolution in bands when still) and
:meth:`FrameSchedulingMixin.take_frame` uploads the newest result. Pixel-buffer path (CUDA backend):
:meth:`FrameSchedulingMixin.render_into_pixel_buffer` renders on the GL thread straight into a PBO.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from app.backend_profiles import BackendProfile
from app.camera_control import CameraController
from app.dynres import DynamicResolution
from app.overlays import OverlayRenderer
from app.presenter import FramePresenter, resize_linear
from app.render_worker import FrameRequest, FrameResult, RenderWorker, stats_to_dict
from app.settings import ViewerSettings

STILL_DELAY_S = 0.2
"""The camera counts as still after this long without change (then the full-resolution refine starts)."""


class FrameSchedulingMixin:
    """Frame scheduling of :class:`app.viewer.Viewer` (which provides the attributes declared here)."""

    ctx: Any
    settings: ViewerSettings
    profile: BackendProfile
    """How the current backend is driven (app/backend_profiles.py)."""
    camera: CameraController
    dynres: DynamicResolution
    worker: RenderWorker
    presenter: FramePresenter
    overlays: OverlayRenderer
    frame: FrameResult | None
    scene_version: int
    _view_key: Any
    _last_change: float
    _submitted: Any
    _pixel_buffer: Any
    _transfer_said: tuple[str, str] | None
    _pbo_failed: bool
    _shown_frames: deque[float]
    _base: tuple[int, np.ndarray] | None = None
    """(refine serial, the frame shown before it at the refine's size), see ``_refine_base``."""

    # provided by Viewer
    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        """Show a message (Viewer)."""
        raise NotImplementedError

    def render_camera(self, scale: float = 1.0, size: tuple[int, int] | None = None) -> Any:
        """The camera to render (Viewer)."""
        raise NotImplementedError

    fall_back_from_gpu: Callable[[str], bool]
    """Switch from a failed CUDA renderer to torch (BackendMixin's method; declared, not stubbed, so the
    MRO reaches it)."""

    def render_options(self) -> Any:
        """RenderOptions of the render panel (Viewer)."""
        raise NotImplementedError

    def step(self, dt: float | None = None) -> None:
        """One UI frame (Viewer)."""
        raise NotImplementedError

    def note_view(self, now: float, fbw: int, fbh: int) -> tuple[Any, ...]:
        """The key of what the frame shows (pose, size, render settings, scene); a new key restarts the
        'still' clock."""
        r = self.settings.render
        key = (
            np.round(self.camera.c2w(), 9).tobytes(),
            fbw,
            fbh,
            r.key(),
            self.scene_version,
            r.res_scale,
            self.camera.settings.fov_y_deg,
        )
        if key != self._view_key:
            self._view_key, self._last_change = key, now
        return key

    def schedule_render(self, now: float, fbw: int, fbh: int) -> None:
        """Submit a render when the view changed: reduced scale while moving, full (banded) when still.

        The backend's profile gives the refine band length and the CPU threads of moving and still frames.
        """
        r, p = self.settings.render, self.profile
        key = self.note_view(now, fbw, fbh)
        moving = now - self._last_change < STILL_DELAY_S
        self.dynres.target_fps = r.target_fps
        if moving and r.dynamic_res:
            scale = r.res_scale * self.dynres.moving_scale(round(fbw * r.res_scale), round(fbh * r.res_scale))
            band, threads = 0.0, p.moving_threads
        else:
            scale, band, threads = r.res_scale, p.band_ms, p.still_threads
        want = (key, scale)
        if want == self._submitted:
            return
        self._submitted = want
        cam = self.render_camera(scale, (fbw, fbh))
        req = FrameRequest(
            cam, self.render_options(), band_ms=band, publish_bands=p.publish_bands, threads=threads
        )
        self.worker.submit(req)

    def pbo_path_active(self) -> bool:
        """Whether frames go straight from the renderer into a GL pixel buffer (the CUDA backend's
        CUDA-GL interop, or its device → host fallback), skipping the render thread and the host image."""
        b = self.worker.backend
        return (
            hasattr(b, "render_to_pixel_buffer")
            and hasattr(b, "pixel_buffer")
            and self.settings.render.view == "rgb"
        )

    def render_into_pixel_buffer(self, now: float, fbw: int, fbh: int) -> bool:
        """The PBO path: render on this (GL) thread into the pixel buffer, then PBO → texture on the GPU.

        Only when the view changed; the CUDA renderer takes milliseconds per frame, so this neither stalls
        the UI nor needs dynamic resolution. Returns whether a frame was rendered.
        """
        r = self.settings.render
        key = self.note_view(now, fbw, fbh)
        scale = r.res_scale  # no dynamic resolution: a resize would re-register the buffer with CUDA
        want = (key, scale)
        if want == self._submitted:
            return False
        self._submitted = want
        cam = self.render_camera(scale, (fbw, fbh))
        backend: Any = self.worker.backend
        t0 = time.perf_counter()
        try:
            if self._pixel_buffer is None:
                self._pixel_buffer = backend.pixel_buffer(self.ctx, cam.width, cam.height)
                self._say_transfer(self._pixel_buffer)
        except Exception as e:  # no GL interop buffer: the render thread (host images) for good
            msg = f"pixel-buffer path failed ({type(e).__name__}: {e}); using host images"
            self.notify(msg.splitlines()[0], "error")
            self._pbo_failed = True
            self._submitted = None
            return False
        try:
            stats = backend.render_to_pixel_buffer(
                self.worker._scene, cam, self._pixel_buffer, self.render_options()
            )
        except Exception as e:  # a GPU fault or kernel error: the torch renderer from now on
            self._submitted = None
            if not self.fall_back_from_gpu(f"{type(e).__name__}: {e}".splitlines()[0]):
                self.notify(f"render failed: {type(e).__name__}: {e}".splitlines()[0], "error")
                self._pbo_failed = True
            return False
        self.presenter.upload_pbo(self._pixel_buffer.buffer, cam.width, cam.height)
        ms = (time.perf_counter() - t0) * 1e3
        self.dynres.observe(ms, cam.width * cam.height)
        req = FrameRequest(cam, None)
        self.frame = FrameResult(None, None, stats_to_dict(stats), ms, req, True, cam.height)
        self._shown_frames.append(time.perf_counter())
        self.overlays.set_depth(None)
        return True

    def _say_transfer(self, pixel_buffer: Any) -> None:
        """One line on how CUDA frames reach GL: interop (device to device) or a host copy, and why."""
        if getattr(pixel_buffer, "mode", None) is None:
            return
        from renderer.cuda import transfer_mode

        mode, why = transfer_mode(pixel_buffer)
        if self._transfer_said != (mode, why):  # once, not at every resize
            self._transfer_said = (mode, why)
            self.notify(f"CUDA frames reach GL by {mode}: {why}")

    def take_frame(self) -> bool:
        """Upload the newest rendered frame, if any (a partial refine keeps the old frame below its rows)."""
        res = self.worker.poll()
        if res is None:
            return False
        image = res.image
        assert image is not None
        if not res.complete and self.frame is not None and self.frame.image is not None:
            image = image.copy()
            base = self._refine_base(res.request.serial, self.frame.image, image.shape[:2])
            image[res.rows_done :] = base[res.rows_done :]
            res = FrameResult(image, res.depth, res.stats, res.ms, res.request, False, res.rows_done)
        elif res.complete:
            self._base = None
        self.presenter.upload_image(image)
        if res.complete:
            # the cost model is that of moving frames (rendered beside the busy UI thread, with the moving
            # thread count); a refined still frame only seeds it
            if res.request.band_ms <= 0 or self.dynres.ms_per_px is None:
                self.dynres.observe(res.ms, image.shape[0] * image.shape[1])
            self._shown_frames.append(time.perf_counter())
        self.frame = res
        depth_ok = res.depth is not None and self.settings.overlays.depth_aware and res.complete
        self.overlays.set_depth(res.depth if depth_ok else None)
        return True

    def _refine_base(self, serial: int, prev: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """The frame shown when refine ``serial`` began, upscaled bilinearly to ``size`` as it was drawn
        (``resize_linear``): what its rows not yet rendered show. Made once per refine, not per band (a
        1280×800 resample costs the UI thread ~40 ms)."""
        if self._base is None or self._base[0] != serial or self._base[1].shape[:2] != size[:2]:
            self._base = (serial, resize_linear(prev, size[0], size[1]))
        return self._base[1]

    def full_frame_shown(self) -> bool:
        """Whether the shown frame is the complete, full-resolution render of the current view."""
        f = self.frame
        return (
            f is not None
            and f.complete
            and self._submitted is not None
            and self._submitted[1] == self.settings.render.res_scale
            and f.request.serial >= self.worker.last_serial
            and self.worker.idle()
        )

    def wait_full_frame(self, timeout: float = 60.0, max_steps: int | None = None) -> bool:
        """Step until a complete full-resolution frame for the current view is shown (tests, capture)."""
        end = time.monotonic() + timeout
        steps = 0
        while time.monotonic() < end and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
            if self.full_frame_shown():
                self.step()
                return True
            time.sleep(0.005)
        return False
