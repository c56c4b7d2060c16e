"""The CUDA renderer: fused kernels driven through pycuda, and CUDA-GL pixel-buffer interop.

Importing this package (or any module in it) never imports pycuda, compiles CUDA or touches a GPU;
``cuda_available()`` does the probing, once, when asked.
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["cuda_available", "pycuda_importable"]


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
    """Whether the CUDA backend can run here: pycuda imports, a CUDA GPU answers, nvcc builds the kernels.

    Returns:
        (True, "") or (False, a one-line reason). Cached: the probe runs once per process.
    """
    ok, why = pycuda_importable()
    if not ok:
        return False, why
    from renderer.cuda.kernels import find_nvcc  # noqa: PLC0415

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
    if find_nvcc() is None:
        return False, "nvcc not found (needed once to build the kernels; put it on PATH or set CUDA_HOME)"
    return True, ""
