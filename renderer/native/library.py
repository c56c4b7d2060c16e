"""Loading the native CPU renderer (``_kilocpu.so``, built by ``renderer.native.build``) with ctypes: its
binary interface (the structs of ``src/kilocpu.h``), its availability and why not, the instruction sets
it can use here, and its thread count.

Loading never compiles: a missing or out-of-date library makes ``status()`` say so in one line.
"""

from __future__ import annotations

import ctypes
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from renderer.native import build

ISAS = ("generic", "avx2", "avx512")
"""Instruction-set variants in the library (``kc::Isa`` codes 0, 1, 2), slowest first."""
OUTPUT_CODES = {"rgb": 0, "depth": 1, "network": 2}
"""``kc::Output``."""
STAT_NAMES = ("rays_hit_box", "samples_marched", "samples_evaluated", "networks_touched", "passes",
              "rays_terminated_early")  # fmt: skip
"""``kc::Stat`` slots 0..5 (``renderer.frame.RenderStats`` field names)."""
STEP_TIMES = ("rays", "march", "sort", "evaluate", "composite", "write")
"""``kc::StepTime`` slots of ``FrameIO.step_ns``: wall time of each step of the last frame."""
ISA_ENV = "KILONERF_CPU_ISA"
LIBRARY_ENV = "KILONERF_CPU_LIBRARY"
"""Environment variable naming another build of the library (tests use a missing path)."""
"""Environment variable that caps the instruction set (generic, avx2 or avx512)."""

_vp, _i32, _i64, _f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_float


class WeightOffsets(ctypes.Structure):
    """``kc::WeightOffsets`` (floats into one network's packed weights)."""

    _fields_ = [
        (n, _i32)
        for n in ("w0", "b0", "w1", "b1", "w2f", "b2f", "w2d", "b2d", "w3", "b3", "w4t", "b4", "stride")
    ]


class SourceWeights(ctypes.Structure):
    """``kc::SourceWeights``: the scene's own ten tensors (float32 or half) in ``WEIGHT_KEYS`` order (the
    ``kc::LayerTensor`` enum), which the kernels unpack one network at a time."""

    _fields_ = [("t", _vp * 10), ("half", _i32), ("pos_freqs", _i32), ("dir_freqs", _i32)]


class CpuScene(ctypes.Structure):
    """``kc::CpuScene``: pointers into arrays that the Python scene keeps alive."""

    _fields_ = [
        ("network_index", _vp),
        ("valid", _vp * 2),
        ("distance", _vp * 2),
        ("block_distance", _vp * 2),
        ("src", SourceWeights),
        ("off", WeightOffsets),
        ("voxel_size", _f32 * 3),
        ("fine_res", _i32 * 3),
        ("fine", _i32),
        ("block_res", _i32 * 3),
        ("block", _i32),
        ("distance_cap", _i32),
    ]


class CpuFrame(ctypes.Structure):
    """``kc::CpuFrame``."""

    _fields_ = [(n, _i32) for n in ("grow_passes", "growth_cap", "sample_budget", "chunk_size", "output",
                                    "has_ert")]  # fmt: skip


class FrameIO(ctypes.Structure):
    """``kc::FrameIO``."""

    _fields_ = [
        ("workspace", _vp),
        ("n_rays", _i64),
        ("camera", _vp),
        ("origins", _vp),
        ("dirs", _vp),
        ("rgb", _vp),
        ("depth", _vp),
        ("trans", _vp),
        ("network", _vp),
        ("touched", _vp),
        ("stats", _i64 * 8),
        ("step_ns", _i64 * 8),
    ]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "kc_isa_available": (_i32, [_i32]),
    "kc_set_threads": (None, [_i32]),
    "kc_threads": (_i32, []),
    "kc_abi_sizes": (_i32, [_vp]),
    "kc_workspace_new": (_vp, []),
    "kc_workspace_delete": (None, [_vp]),
    "kc_render_frame": (_i32, [_i32, _vp, _vp, _vp, _vp]),
    "kc_rays_for_pixels": (_i32, [_i32, _vp, _i64, _i64, _vp, _vp]),
    "kc_clip_to_box": (_i32, [_i32, _vp, _i64, _vp, _vp, _vp, _vp]),
    "kc_march_pass": (_i32, [_i32, _vp, _vp, _i64, _vp, _vp, _vp, _vp, _vp, _vp, _i32, _vp, _vp, _vp]),
    "kc_evaluate_points": (_i32, [_i32, _vp, _vp, _i64, _vp, _vp, _vp, _vp, _vp, _vp]),
    "kc_unpack_network": (_i32, [_i32, _vp, _vp, _i32, _vp]),
    "kc_composite_pass": (_i32, [_i32, _vp, _i32, _i64, _vp, _i32, *([_vp] * 12)]),
    "kc_write_pixels": (_i32, [_i32, _vp, _i32, _i64, _vp, _vp, _vp, _vp, _vp]),
    "kc_lattice_samples_in_mask": (_i64, [_i64, _vp, _vp, _vp, _vp, _f32, _i64, _vp, _vp, _vp, _vp]),
}

BUILD_HINT = "run `python -m renderer.native.build`"
_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None


@lru_cache(maxsize=1)
def status() -> tuple[bool, str]:
    """Whether the library can be loaded here, and why not (never raises, never compiles)."""
    override = os.environ.get(LIBRARY_ENV)
    path = Path(override) if override else build.default_output()
    if not path.is_file():
        return (
            False,
            f"the native CPU renderer is not built ({path.name} missing: {BUILD_HINT})",
        )
    if not override and not build.up_to_date(path):
        return (
            False,
            f"the native CPU renderer is out of date ({path.name}: {BUILD_HINT})",
        )
    try:
        _load(path)
    except OSError as e:
        return False, f"the native CPU renderer cannot be loaded ({str(e).splitlines()[0]})"
    return True, "ok"


def _load(path: Any) -> ctypes.CDLL:
    global _loaded
    with _lock:
        if _loaded is None:
            lib = ctypes.CDLL(str(path))
            for name, (res, args) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            _loaded = lib
            _configure_threads(lib)
        return _loaded


def _configure_threads(lib: ctypes.CDLL) -> None:
    """Start with torch's intra-op thread count (set by ``--threads`` / ``torch.set_num_threads``)."""
    import torch

    lib.kc_set_threads(max(1, int(torch.get_num_threads())))


def library() -> ctypes.CDLL:
    """The loaded library; ``RuntimeError`` with ``status()``'s reason when it cannot be loaded."""
    ok, why = status()
    if not ok or _loaded is None:
        raise RuntimeError(why)
    return _loaded


def available_isas() -> list[str]:
    """Instruction sets this CPU and build can run, slowest first (``$KILONERF_CPU_ISA`` caps the list)."""
    lib = library()
    have = [name for code, name in enumerate(ISAS) if lib.kc_isa_available(code)]
    cap = os.environ.get(ISA_ENV, "").strip().lower()
    if cap in ISAS:
        have = [n for n in have if ISAS.index(n) <= ISAS.index(cap)]
    return have


def best_isa() -> str:
    """The fastest instruction set available here."""
    return available_isas()[-1]


def isa_code(isa: str | None) -> int:
    """``kc::Isa`` code of an instruction-set name (None: the best here); ``ValueError`` if unavailable."""
    name = best_isa() if isa is None else isa
    if name not in available_isas():
        raise ValueError(
            f"instruction set {name!r} is not available here (have {', '.join(available_isas())})"
        )
    return ISAS.index(name)


def set_threads(threads: int) -> None:
    """Worker threads of the native renderer (the calling thread counts as one)."""
    library().kc_set_threads(max(1, int(threads)))


def threads() -> int:
    """Current worker thread count."""
    return int(library().kc_threads())


def abi_sizes() -> tuple[int, ...]:
    """``sizeof`` of RenderParams, CameraParams, CpuScene, CpuFrame, FrameIO, WeightOffsets as compiled."""
    out = (ctypes.c_int * 8)()
    n = library().kc_abi_sizes(ctypes.addressof(out))
    return tuple(out[:n])
