"""Which backend the viewer renders with: picking one (``--backend``, the render panel's combo), where it
runs (the render thread, or a child process for the torch renderer) and the profile that drives it
(app/backend_profiles.py: target FPS, render-size floor, refine bands, threads). No imgui here.
"""

from __future__ import annotations

from typing import Any

from app.backend_profiles import BackendProfile, profile_for
from app.dynres import DynamicResolution
from app.render_worker import RenderWorker, prepare_for_backend
from app.settings import ViewerSettings


def wrap_backend(backend: Any, settings: ViewerSettings, render_process: bool = True) -> Any:
    """``backend`` as the viewer runs it: a backend whose profile is not ``in_process`` (the torch
    renderer: thousands of small GIL-holding tensor operations per frame) moves to a pool of child
    processes, unless ``render_process`` is False; the others render on the worker thread."""
    p = profile_for(backend)
    if p.in_process or not render_process or getattr(backend, "threads_fixed", False):
        return backend
    from app.render_process import ProcessPoolBackend

    return ProcessPoolBackend(
        str(getattr(backend, "device", "cpu")), threads=p.moving_threads, processes=settings.render.processes
    )


class BackendMixin:
    """Backend choice of :class:`app.viewer.Viewer` (which provides the attributes declared here)."""

    settings: ViewerSettings
    worker: RenderWorker
    dynres: DynamicResolution
    profile: BackendProfile
    scene: Any
    scene_version: int
    render_process: bool
    _submitted: Any
    _pixel_buffer: Any
    _pbo_failed: bool

    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        """Show a message (Viewer)."""
        raise NotImplementedError

    def apply_profile(self, backend: Any) -> None:
        """Drive ``backend`` with its profile: the panel's backend name and target FPS, the dynamic
        resolution's limits (its cost estimate starts again: backends differ up to 20x per pixel)."""
        self.profile = profile_for(backend)
        self.settings.render.backend = str(getattr(backend, "name", "torch"))
        self.settings.render.target_fps = self.profile.target_fps
        self.dynres.configure(self.profile)

    def switch_backend(self, name: str, announce: bool = True) -> None:
        """Render with backend ``name`` (one of renderer.backends.BACKENDS) from now on; a backend that
        cannot run here is reported and the current one stays. ``announce``: say so in the message log."""
        from renderer.backends import get_backend

        try:
            backend = wrap_backend(get_backend(name), self.settings, self.render_process)
            prepared = prepare_for_backend(backend, self.scene)
        except Exception as e:
            self.notify(f"backend {name} unavailable: {e}".splitlines()[0], "error")
            return
        old = self.worker.backend
        self.worker.set_backend(backend, prepared)
        if old is not backend and hasattr(old, "close"):
            old.close()
        self.release_pixel_buffer()
        self._submitted = None
        self.apply_profile(backend)
        self.scene_version += 1
        if announce:
            self.notify(f"rendering with the {self.settings.render.backend} backend")

    def fall_back_from_gpu(self, error: str) -> bool:
        """After a failed CUDA render (a GPU fault, a kernel error): render with the torch renderer from now
        on, saying so in one line; True when it did (False: the backend is not the CUDA one)."""
        if getattr(self.worker.backend, "name", "") != "cuda":
            return False
        self.release_pixel_buffer()
        self._pbo_failed = True  # no more pixel-buffer renders through the failed context
        self.switch_backend("torch", announce=False)
        self.notify(f"CUDA renderer failed ({error}); rendering with the torch renderer", "error")
        return True

    def release_pixel_buffer(self) -> None:
        """Free the CUDA backend's GL pixel buffer (a new one is made for the next frame)."""
        if self._pixel_buffer is not None:
            self._pixel_buffer.release()
            self._pixel_buffer.buffer.release()
            self._pixel_buffer = None
        self._pbo_failed = False
