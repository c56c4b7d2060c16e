"""Backend selection: the CUDA kernels (``renderer.cuda``), the native CPU kernels (``renderer.native``) or
the torch renderer (any device). ``auto`` takes the first that can run here, in that order."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

import torch

from renderer.camera import Camera
from renderer.render import RenderOptions, RenderResult, RenderScene, prepare_scene, render_image

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cuda", "cpu", "torch")
"""Backend names; ``auto`` picks cuda → cpu → torch."""


class BackendError(RuntimeError):
    """A backend was asked for explicitly and cannot run here (one-line reason)."""


class Backend(Protocol):
    """What every backend offers."""

    name: str

    def render(self, scene_or_rs: Any, camera: Camera, options: RenderOptions | None = None) -> RenderResult:
        """Render one frame."""
        ...


class TorchBackend:
    """The torch renderer on a CPU or CUDA device; caches the prepared scene between frames."""

    name = "torch"

    def __init__(self, device: str | torch.device | None = None) -> None:
        """``device`` None → "cpu"."""
        self.device = torch.device(device or "cpu")
        self._scene: Any = None
        self._rs: RenderScene | None = None

    def prepare(self, scene: Any) -> RenderScene:
        """The scene on this backend's device (cached for the last scene object seen)."""
        if isinstance(scene, RenderScene):
            return scene
        if self._scene is not scene or self._rs is None:
            self._rs = prepare_scene(scene, self.device)
            self._scene = scene
        return self._rs

    def render(self, scene_or_rs: Any, camera: Camera, options: RenderOptions | None = None) -> RenderResult:
        """Render ``camera``'s view; ``RenderResult.image`` is ``[H, W, 3]`` float32 on the CPU."""
        return render_image(self.prepare(scene_or_rs), camera, options)


def set_cpu_threads(threads: int) -> None:
    """CPU threads for rendering and training: torch's intra-op pool and the native kernels' pool (which
    starts from torch's count when it loads). The trainer's ``--threads`` and the viewer's render worker
    call this; the two pools never run at once (the native one sleeps between loops, torch's is passive)."""
    n = max(1, int(threads))
    torch.set_num_threads(n)
    ok, _ = cpu_backend_status()
    if ok:
        from renderer.native import library

        library.set_threads(n)


def cpu_backend_status() -> tuple[bool, str]:
    """Whether the native CPU kernels can run here, and why not (never raises, never compiles)."""
    try:
        from renderer.native import library
    except Exception as e:
        return False, f"renderer.native cannot be imported ({e.__class__.__name__}: {e})"
    return library.status()


def cuda_backend_status() -> tuple[bool, str]:
    """Whether ``renderer.cuda`` can run here, and why not (never raises, never compiles)."""
    try:
        from renderer import cuda as cuda_pkg
    except Exception as e:
        return False, f"renderer.cuda cannot be imported ({e.__class__.__name__}: {e})"
    check = getattr(cuda_pkg, "cuda_available", None)
    if check is None:
        return False, "renderer.cuda has no cuda_available()"
    try:
        ok, why = check()
    except Exception as e:
        return False, f"CUDA check failed ({e.__class__.__name__}: {e})"
    return bool(ok), str(why)


_announced: set[str] = set()


def _announce(key: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` once per process."""
    if key not in _announced:
        log.log(level, message)
        _announced.add(key)


def _cuda(device: str | torch.device | None) -> tuple[Backend | None, str]:
    """The CUDA backend, or None and why not."""
    ok, why = cuda_backend_status()
    if not ok:
        return None, why
    try:
        cls = getattr(importlib.import_module("renderer.cuda.backend"), "CudaBackend")  # noqa: B009
        return (cls() if device is None else cls(device=device)), "ok"
    except Exception as e:
        return None, f"CUDA backend failed to start ({e.__class__.__name__}: {e})"


def _cpu() -> tuple[Backend | None, str]:
    """The native CPU backend, or None and why not."""
    ok, why = cpu_backend_status()
    if not ok:
        return None, why
    try:
        from renderer.native.backend import CpuBackend

        return CpuBackend(), "ok"
    except Exception as e:
        return None, f"native CPU backend failed to start ({e.__class__.__name__}: {e})"


def get_backend(name: str = "auto", device: str | torch.device | None = None) -> Backend:
    """A backend by name.

    "torch": the torch renderer on ``device`` (default CPU). "cuda": ``renderer.cuda.backend.CudaBackend``.
    "cpu": ``renderer.native.backend.CpuBackend``. "auto": cuda, else cpu, else torch (on ``device``; a CPU
    ``device`` skips cuda), saying once (logging) why a faster one was passed over.

    Raises:
        BackendError: an unknown name, or "cuda" / "cpu" asked for and unable to run here (one line).
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")
    if name == "torch":
        return TorchBackend(device)
    if name == "cuda":
        backend, why = _cuda(device)
        if backend is None:
            raise BackendError(f"CUDA backend unavailable: {why}")
        return backend
    if name == "cpu":
        if device is not None and torch.device(device).type != "cpu":
            raise BackendError(f"the cpu backend renders on the CPU, not {device}")
        backend, why = _cpu()
        if backend is None:
            raise BackendError(f"cpu backend unavailable: {why}")
        return backend
    cpu_only = device is not None and torch.device(device).type == "cpu"
    if not cpu_only:
        backend, why = _cuda(device)
        if backend is not None:
            return backend
        _announce("cuda", f"CUDA backend unavailable ({why})")
    if device is None or cpu_only:
        backend, why = _cpu()
        if backend is not None:
            return backend
        _announce("cpu", f"native CPU backend unavailable ({why}); using the torch renderer", logging.WARNING)
    return TorchBackend(device)
