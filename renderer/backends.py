"""Backend selection: the torch renderer (any device) or the CUDA kernels (``renderer.cuda``)."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

import torch

from renderer.camera import Camera
from renderer.render import RenderOptions, RenderResult, RenderScene, prepare_scene, render_image

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cuda")


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


_announced = False


def get_backend(name: str = "auto", device: str | torch.device | None = None) -> Backend:
    """A backend by name.

    "torch": the torch renderer on ``device`` (default CPU). "cuda": ``renderer.cuda.backend.CudaBackend``;
    raises ``BackendError`` when CUDA or pycuda is unavailable. "auto": CUDA when it works, else torch
    (on ``device``), logged once.
    """
    global _announced
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")
    if name == "torch":
        return TorchBackend(device)
    if device is not None and torch.device(device).type == "cpu" and name == "auto":
        return TorchBackend("cpu")
    ok, why = cuda_backend_status()
    if ok:
        try:
            cls = getattr(importlib.import_module("renderer.cuda.backend"), "CudaBackend")  # noqa: B009
            backend: Backend = cls() if device is None else cls(device=device)
            return backend
        except Exception as e:
            ok, why = False, f"CUDA backend failed to start ({e.__class__.__name__}: {e})"
    if name == "cuda":
        raise BackendError(f"CUDA backend unavailable: {why}")
    if not _announced:
        log.info("CUDA backend unavailable (%s); using the torch renderer", why)
        _announced = True
    return TorchBackend(device)
