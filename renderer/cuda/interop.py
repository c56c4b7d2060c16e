"""CUDA-GL interop: the CUDA renderer writes RGBA8 pixels straight into a GL pixel buffer object.

A ``CudaGLPixelBuffer`` wraps a moderngl ``Buffer`` of W·H·4 bytes (row 0 = top, as
``app/presenter.py`` expects). Per frame: ``with pbo.map() as ptr`` gives a device pointer the
``write_pixels`` kernel fills; on exit the buffer is unmapped; the GL side then calls
``pbo.upload(texture)`` (``texture.write(buffer)``: PBO → texture on the GPU, no host copy).

When interop is unavailable (pycuda missing or built without GL support, a GL context from another
driver such as Mesa, no shared context, WSL), the same calls fall back to a device scratch buffer that is
copied to the host and written into the GL buffer, with one log line saying why. It takes a moderngl
context or buffer, never a window. pycuda is imported only when interop is tried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TRANSFER_MODES = ("auto", "interop", "host")
"""``prefer`` values: try interop and fall back, insist on interop, or always copy through the host."""


class InteropError(RuntimeError):
    """CUDA-GL interop was required but is unavailable, or no CUDA at all for the host path."""


@dataclass(frozen=True)
class TransferChoice:
    """How frames reach the GL buffer."""

    mode: str
    """"interop" (CUDA writes the mapped PBO) or "host" (device → host copy, then buffer upload)."""
    reason: str
    """Why interop is not used ("" when it is)."""


def probe_gl_interop() -> tuple[bool, str]:
    """Whether ``pycuda.gl`` imports here (pycuda present, libcuda loadable, built with GL support)."""
    from renderer.cuda import pycuda_importable  # noqa: PLC0415

    ok, why = pycuda_importable()
    if not ok:
        return False, why
    try:
        import pycuda.gl  # noqa: F401, PLC0415
    except Exception as e:
        return (
            False,
            f"pycuda has no GL support ({e.__class__.__name__}: {e}); rebuild it with CUDA_ENABLE_GL",
        )
    return True, ""


def select_transfer(
    prefer: str = "auto",
    probe: Callable[[], tuple[bool, str]] = probe_gl_interop,
    register: Callable[[], None] | None = None,
) -> TransferChoice:
    """Pick interop or the host fallback.

    Args:
        prefer: "auto" (interop when it works), "interop" (``InteropError`` when it does not) or "host".
        probe: reports whether pycuda.gl is usable.
        register: registers the GL buffer with CUDA (raises when the GL context cannot be shared).
    """
    if prefer not in TRANSFER_MODES:
        raise ValueError(f"prefer must be one of {TRANSFER_MODES}, got {prefer!r}")
    if prefer == "host":
        return TransferChoice("host", "host transfer requested")
    ok, why = probe()
    if ok and register is not None:
        try:
            register()
        except Exception as e:
            ok, why = False, f"cannot register the GL buffer with CUDA ({e.__class__.__name__}: {e})"
    if ok:
        return TransferChoice("interop", "")
    if prefer == "interop":
        raise InteropError(f"CUDA-GL interop unavailable: {why}")
    return TransferChoice("host", why)


def rgba8(image: Any) -> np.ndarray:
    """``[H, W, 3|4]`` float (0..1) or uint8 image (numpy or torch) → contiguous ``[H, W, 4]`` uint8."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3|4] image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.shape[2] == 3:
        a = np.concatenate((a, np.full(a.shape[:2] + (1,), 255, np.uint8)), axis=2)
    return np.ascontiguousarray(a)


class CudaGLPixelBuffer:
    """A W×H RGBA8 GL pixel buffer that CUDA kernels write into (interop) or that receives host copies."""

    def __init__(
        self,
        ctx: Any,
        width: int,
        height: int,
        *,
        prefer: str = "auto",
        buffer: Any = None,
        cuda_context: Any = None,
    ) -> None:
        """
        Args:
            ctx: a moderngl context (current on this thread).
            buffer: an existing moderngl ``Buffer`` to use (default: a new one of W·H·4 bytes).
            prefer: see ``select_transfer``.
            cuda_context: the pycuda context to register and map in (e.g. ``CudaBackend.context``); pushed
                around every CUDA call here. None: the caller keeps a CUDA context current.
        """
        self.ctx = ctx
        self.cuda_context = cuda_context
        self.width, self.height = int(width), int(height)
        self.buffer = buffer if buffer is not None else ctx.buffer(reserve=self.nbytes, dynamic=True)
        if self.buffer.size < self.nbytes:
            self.buffer.orphan(self.nbytes)
        self._registered: Any = None
        self._scratch: Any = None
        self._host: np.ndarray | None = None
        choice = select_transfer(prefer, register=self._register)
        self.mode, self.reason = choice.mode, choice.reason
        if self.mode == "host" and prefer != "host":
            log.info("CUDA-GL interop unavailable (%s); frames go device -> host -> GL buffer", self.reason)

    @property
    def nbytes(self) -> int:
        """W·H·4."""
        return self.width * self.height * 4

    @contextlib.contextmanager
    def _cuda(self) -> Iterator[None]:
        """Make ``cuda_context`` current for the block (no-op without one)."""
        if self.cuda_context is None:
            yield
            return
        self.cuda_context.push()
        try:
            yield
        finally:
            self.cuda_context.pop()

    def _register(self) -> None:
        import pycuda.gl as cudagl  # noqa: PLC0415

        flags = cudagl.graphics_map_flags.WRITE_DISCARD
        with self._cuda():
            self._registered = cudagl.RegisteredBuffer(int(self.buffer.glo), flags)

    def _unregister(self) -> None:
        if self._registered is not None:
            with contextlib.suppress(Exception), self._cuda():
                self._registered.unregister()
            self._registered = None

    def _free_scratch(self) -> None:
        if self._scratch is not None:
            with contextlib.suppress(Exception), self._cuda():
                self._scratch.free()
            self._scratch = None

    def resize(self, width: int, height: int) -> None:
        """Make room for a W×H frame (re-registers the buffer in interop mode)."""
        if (int(width), int(height)) == (self.width, self.height):
            return
        self.width, self.height = int(width), int(height)
        if self.mode == "interop":
            self._unregister()
        self.buffer.orphan(self.nbytes)
        if self.mode == "interop":
            self._register()
        self._free_scratch()
        self._host = None

    @contextlib.contextmanager
    def map(self) -> Iterator[int]:
        """Device pointer (int) to W·H·4 writable bytes, valid inside the ``with`` block.

        Interop: the GL buffer itself, mapped for CUDA and unmapped on exit. Host fallback: a device
        scratch buffer, copied to the host and into the GL buffer on exit.
        """
        if self.mode == "interop":
            with self._cuda():
                mapping = self._registered.map()
                try:
                    ptr, size = mapping.device_ptr_and_size()
                    if size < self.nbytes:
                        raise InteropError(
                            f"mapped GL buffer holds {size} bytes, the frame needs {self.nbytes}"
                        )
                    yield int(ptr)
                finally:
                    mapping.unmap()
            return
        try:
            import pycuda.driver as cuda  # noqa: PLC0415
        except Exception as e:
            raise InteropError(f"no CUDA for the device -> host path ({e.__class__.__name__}: {e})") from None
        with self._cuda():
            if self._scratch is None:
                self._scratch = cuda.mem_alloc(self.nbytes)
            if self._host is None:
                self._host = cuda.pagelocked_empty(self.nbytes, np.uint8)
            yield int(self._scratch)
            cuda.memcpy_dtoh(self._host, self._scratch)
        self.buffer.write(self._host)

    def write_host(self, image: Any) -> None:
        """Put a host image (``[H, W, 3|4]``, float 0..1 or uint8, row 0 = top) into the GL buffer."""
        a = rgba8(image)
        self.resize(a.shape[1], a.shape[0])
        self.buffer.write(a.tobytes())

    def upload(self, texture: Any) -> None:
        """Copy the buffer into a W×H RGBA8 moderngl texture on the GPU (``texture.write(buffer)``)."""
        if tuple(texture.size) != (self.width, self.height) or texture.components != 4:
            raise ValueError(
                f"texture is {texture.size} with {texture.components} components; need "
                f"({self.width}, {self.height}) RGBA8"
            )
        texture.write(self.buffer)

    def release(self) -> None:
        """Unregister from CUDA and free the scratch memory (the moderngl buffer stays the caller's)."""
        self._unregister()
        self._free_scratch()
