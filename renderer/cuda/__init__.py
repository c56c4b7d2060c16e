"""The CUDA renderer: fused kernels driven through pycuda, and CUDA-GL pixel-buffer interop.

Importing this package (or any module in it) never imports pycuda, compiles CUDA or touches a GPU;
``cuda_available()`` does the probing, once, when asked.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

__all__ = ["cuda_available", "pycuda_importable", "transfer_mode"]


def pycuda_importable() -> tuple[bool, str]:
    """Whether ``import pycuda.driver`` works here (it needs the package and libcuda), and why not."""
    if importlib.util.find_spec("pycuda") is None:
        return False, "pycuda is not installed (pip install '.[cuda]'; see docs/cuda.md)"
    try:
        import pycuda.driver  # noqa: F401, PLC0415
    except Exception as e:  # ImportError, or OSError when libcuda.so.1 is missing
        return False, f"pycuda does not import ({e.__class__.__name__}: {e})"
    return True, ""


@functools.cache
def cuda_available() -> tuple[bool, str]:
    """Whether the CUDA backend can run here: pycuda imports, a CUDA GPU answers, NVRTC (or nvcc) is there
    to build the kernels.

    Returns:
        (True, "") or (False, a one-line reason). Cached: the probe runs once per process.
    """
    ok, why = pycuda_importable()
    if not ok:
        return False, why
    from renderer.cuda.kernels import kernel_compiler  # noqa: PLC0415

    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "no CUDA GPU found by the driver"
        major, minor = cuda.Device(0).compute_capability()
    except Exception as e:
        return False, f"CUDA driver unusable ({e.__class__.__name__}: {e})"
    if major < 7:
        return False, f"GPU compute capability {major}.{minor} is below 7.0"
    compiler, why = kernel_compiler()
    if compiler is None:
        return False, why
    return True, ""


def transfer_mode(pixel_buffer: Any = None) -> tuple[str, str]:
    """How CUDA frames reach GL, for one line in the viewer: ("interop" | "host copy", why).

    Args:
        pixel_buffer: a ``CudaGLPixelBuffer`` (its actual choice, registration included); None: what a new
            one would try (pycuda built with GL or not), without touching a GPU or GL.
    """
    if pixel_buffer is not None:
        if pixel_buffer.mode == "interop":
            return "interop", "CUDA writes the GL pixel buffer directly (pycuda.gl)"
        return "host copy", pixel_buffer.reason
    from renderer.cuda.interop import probe_gl_interop  # noqa: PLC0415

    ok, why = probe_gl_interop()
    return ("interop", "pycuda was built with GL (CUDA_ENABLE_GL)") if ok else ("host copy", why)
