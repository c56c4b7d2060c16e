"""Building and launching the CUDA kernels: the compiler choice (NVRTC in ``nvrtc.py``, else nvcc), nvcc
discovery, the nvcc cubin (and emulator library) cache, the kernels' packed weights (``kn::WeightLayout``),
counter slots, launch geometry, and the debug mode that synchronises after every launch.

The parameter structs (``kn::RenderParams`` / ``kn::CameraParams``) live in ``renderer.kernel_params``,
shared with the native CPU backend. This module imports nothing else of ``renderer.cuda``; nothing here
compiles or touches a GPU at import time, and pycuda is imported only by ``load_module``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
"""Folder of the ``.cu`` / ``.cuh`` sources."""
KERNEL_SOURCE = SOURCE_DIR / "kilonerf.cu"
"""The renderer's kernels."""
EMULATOR_SOURCE = SOURCE_DIR / "emulate.cu"
"""The CPU emulator of the kernels (host-only shared library, for tests without a GPU)."""
HIDDEN_WIDTHS = (16, 32, 64)
"""Hidden widths with a compiled ``evaluate_networks_h{H}_{f32,f16}`` kernel."""
MAX_SAMPLES_PER_PASS = 32
"""Largest K the marching kernel supports (kn::kMaxSamplesPerPass)."""
MAX_GRID_X = 2**31 - 1
"""CUDA's limit on gridDim.x."""
INT32_MAX = 2**31 - 1

# Frame and pass counter slots (enum FrameCounter / PassCounter in kilonerf.cu).
FRAME_RAYS_HIT, FRAME_MARCHED, FRAME_EVALUATED, FRAME_TERMINATED = 0, 1, 2, 3
PASS_REQUESTED, PASS_STORED, PASS_TILES, PASS_ACTIVE_NEXT = 0, 1, 2, 3
NUM_COUNTERS = 8


class NvccError(RuntimeError):
    """nvcc is missing or failed; the message names the source file."""


# ---------------------------------------------------------------------------------------------------------
# nvcc and the cubin cache


def find_nvcc() -> str | None:
    """Path of nvcc: ``$PATH``, then ``$CUDA_HOME``/``$CUDA_PATH``/``bin``, then ``/usr/local/cuda/bin``."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


def cuda_sources() -> list[Path]:
    """Every ``.cu`` file of the CUDA renderer, sorted."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def nvcc_command(
    nvcc: str, source: Path, output: Path, arch: str, fmt: str = "cubin", *, strict: bool = True
) -> list[str]:
    """nvcc command line compiling ``source`` for ``arch`` (e.g. ``"sm_90"``) into ``fmt`` (cubin/ptx/fatbin).

    ``strict`` (CI and development): warnings are errors; a user's run (``build_cubin``) keeps them as
    warnings. The headers of this folder are on the include path. No fast math: the index maths must
    round exactly as the torch renderer does.
    """
    if fmt not in ("cubin", "ptx", "fatbin"):
        raise ValueError(f"unknown nvcc output format {fmt!r}")
    return [
        nvcc,
        f"-{fmt}",
        f"-arch={arch}",
        "-std=c++17",
        "-O3",
        "-lineinfo",
        *(["-Werror=all-warnings"] if strict else []),
        f"-I{SOURCE_DIR}",
        "-o",
        str(output),
        str(source),
    ]


def emulator_command(nvcc: str, output: Path) -> list[str]:
    """nvcc command line building the CPU emulator as a shared library (no device code is run)."""
    return [nvcc, "-shared", "-std=c++17", "-O2", "-Xcompiler", "-fPIC", "-Xcompiler", "-O2",
            f"-I{SOURCE_DIR}", "-o", str(output), str(EMULATOR_SOURCE)]  # fmt: skip


def cache_dir() -> Path:
    """Where built cubins live: ``$KILONERF_CUDA_CACHE`` or ``~/.cache/kilonerf/cuda``."""
    env = os.environ.get("KILONERF_CUDA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kilonerf" / "cuda"


def _sources_digest(command: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(SOURCE_DIR.glob("*.cu*")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update("\0".join(command[1:]).encode())
    return h.hexdigest()[:20]


def run_nvcc(command: list[str], source: Path, timeout: float = 600.0) -> None:
    """Run an nvcc command; ``NvccError`` with nvcc's first error lines on failure."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise NvccError(f"{source}: nvcc not found at {command[0]}") from None
    except subprocess.TimeoutExpired:
        raise NvccError(f"{source}: nvcc took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise NvccError(f"{source}: nvcc failed: " + " | ".join(lines[:8]))


def build_cached(command_for: Any, suffix: str, source: Path) -> Path:
    """Build (once) the artefact that ``command_for(output_path)`` makes; cached by sources and flags."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise NvccError(f"{source}: nvcc not found (put it on PATH or set CUDA_HOME)")
    probe = command_for(nvcc, Path("OUT"))
    out = cache_dir() / f"{source.stem}-{_sources_digest(probe)}{suffix}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        log.info("compiling %s (once; cached in %s)", source.name, out.parent)
        run_nvcc(command_for(nvcc, Path(tmp)), source)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build_cubin(arch: str) -> Path:
    """The renderer's kernels compiled for ``arch`` (e.g. ``"sm_90"``), from the cache when up to date."""

    def command(nvcc: str, out: Path) -> list[str]:
        return nvcc_command(nvcc, KERNEL_SOURCE, out, arch, strict=False)

    return build_cached(command, ".cubin", KERNEL_SOURCE)


def build_emulator() -> Path:
    """The CPU emulator shared library, from the cache when up to date."""
    return build_cached(emulator_command, ".so", EMULATOR_SOURCE)


COMPILERS = ("auto", "nvrtc", "nvcc")
"""``$KILONERF_CUDA_COMPILER`` values: NVRTC when it is installed, else nvcc; or force one."""


def kernel_compiler() -> tuple[str | None, str]:
    """Which compiler builds the kernels here: ("nvrtc" | "nvcc", "") or (None, a one-line reason).

    ``auto`` (the default) takes NVRTC (NVIDIA's pip wheels, no toolkit needed), else nvcc. Loads nothing.
    """
    from renderer.cuda.nvrtc import nvrtc_available  # noqa: PLC0415

    want = os.environ.get("KILONERF_CUDA_COMPILER", "auto").strip().lower() or "auto"
    if want not in COMPILERS:
        return None, f"KILONERF_CUDA_COMPILER must be one of {COMPILERS}, not {want!r}"
    rtc_ok, rtc_why = nvrtc_available()
    if want in ("auto", "nvrtc") and rtc_ok:
        return "nvrtc", ""
    if want in ("auto", "nvcc") and find_nvcc() is not None:
        return "nvcc", ""
    nvcc_why = "nvcc not found (put it on PATH or set CUDA_HOME)"
    why = {"nvrtc": rtc_why, "nvcc": nvcc_why}.get(want, f"{rtc_why}; {nvcc_why}")
    return None, f"no CUDA kernel compiler: {why}; pip install '.[cuda]' (see docs/cuda.md)"


def kernel_binary(arch: str) -> bytes:
    """The kernels' cubin for ``arch`` from the compiler ``kernel_compiler`` picks (cached on disk)."""
    compiler, why = kernel_compiler()
    if compiler == "nvrtc":
        from renderer.cuda.nvrtc import build_cubin as nvrtc_cubin  # noqa: PLC0415

        return nvrtc_cubin(arch, cache_dir())
    if compiler == "nvcc":
        return build_cubin(arch).read_bytes()
    raise NvccError(why)


class KernelLaunchError(RuntimeError):
    """A kernel launch or the work it queued failed (debug mode); the message names the kernel."""


def debug_sync_enabled() -> bool:
    """``$KILONERF_CUDA_DEBUG=1``: synchronise after every launch, so that a fault names its kernel."""
    return os.environ.get("KILONERF_CUDA_DEBUG", "").strip() not in ("", "0")


class SyncedKernel:
    """A kernel whose every launch is followed by a device synchronisation (debug mode): an error raised
    by the launch or by the kernel's own execution comes out as ``KernelLaunchError`` naming the kernel.
    Other attributes (``set_attribute``, ``prepare``) are the wrapped function's."""

    def __init__(self, fn: Any, name: str, synchronize: Any) -> None:
        self.fn, self.name, self.synchronize = fn, name, synchronize

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.fn(*args, **kwargs)
            self.synchronize()
        except Exception as e:
            raise KernelLaunchError(f"CUDA kernel {self.name} failed: {e.__class__.__name__}: {e}") from e

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.fn, attr)


# ---------------------------------------------------------------------------------------------------------
# Prepared launches: each kernel's argument format is read once from its signature in kilonerf.cu


def kernel_parameter_kinds(source: str | None = None) -> dict[str, list[str]]:
    """Parameter kinds of every ``extern "C"`` kernel of ``kilonerf.cu`` (``ptr``, ``i64``, ``i32``,
    ``RenderParams``, ``CameraParams``), the fused MLP kernels under each of their instantiated names.

    Raises:
        ValueError: a parameter of a kind a launch cannot pack (a new kind needs a line here)."""
    import re  # noqa: PLC0415

    text = (KERNEL_SOURCE.read_text() if source is None else source).replace("\\\n", "\n")
    found: dict[str, str] = {}
    pattern = r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\((.*?)\)\s*\{'
    for m in re.finditer(pattern, text, re.S):
        if not m.group(1).startswith("__"):  # the MLP macro's body, named below
            found[m.group(1)] = m.group(2)
    macro = re.search(r"evaluate_networks_h##H##_##SUFFIX\((.*?)\)\s*\{", text, re.S)
    if macro is not None:
        for h in HIDDEN_WIDTHS:
            for half in (False, True):
                found[evaluate_kernel_name(h, half)] = macro.group(1)
    return {name: [_parameter_kind(name, p.strip()) for p in ps.split(",")] for name, ps in found.items()}


def _parameter_kind(kernel: str, param: str) -> str:
    if "*" in param:
        return "ptr"
    for prefix, kind in (("kn::RenderParams", "RenderParams"), ("kn::CameraParams", "CameraParams"),
                         ("i64", "i64"), ("int", "i32")):  # fmt: skip
        if param.startswith(prefix):
            return kind
    raise ValueError(f"{KERNEL_SOURCE.name}: kernel {kernel} has a parameter of unknown kind: {param}")


def launch_format(kinds: list[str]) -> str:
    """pycuda's ``Function.prepare`` format of a kernel's parameters: the native-alignment ``struct``
    codes pycuda's own unprepared call builds (``P`` pointer, ``q`` int64, ``i`` int32, ``Ns`` a struct by
    value)."""
    from renderer.kernel_params import CAMERA_PARAMS_DTYPE, RENDER_PARAMS_DTYPE  # noqa: PLC0415

    codes = {"ptr": "P", "i64": "q", "i32": "i", "RenderParams": f"{RENDER_PARAMS_DTYPE.itemsize}s",
             "CameraParams": f"{CAMERA_PARAMS_DTYPE.itemsize}s"}  # fmt: skip
    return "".join(codes[k] for k in kinds)


class PreparedKernel:
    """A kernel launched through pycuda's prepared calls: the argument format is fixed once
    (``launch_format``), so a launch packs its arguments without pycuda's per-argument type dispatch.
    Called like a pycuda function: ``k(*args, block=..., grid=..., shared=0)``; structs by value are
    passed as their numpy records. Other attributes (``set_attribute``) are the wrapped function's."""

    def __init__(self, fn: Any, name: str, kinds: list[str]) -> None:
        self.fn, self.name = fn, name
        self.structs = tuple(i for i, k in enumerate(kinds) if k in ("RenderParams", "CameraParams"))
        self.arity = len(kinds)
        fn.prepare(launch_format(kinds))

    def __call__(
        self, *args: Any, block: tuple[int, int, int], grid: tuple[int, int], shared: int = 0
    ) -> None:
        if len(args) != self.arity:
            raise TypeError(f"CUDA kernel {self.name} takes {self.arity} arguments, got {len(args)}")
        if self.structs:
            args = tuple(a.tobytes() if i in self.structs else a for i, a in enumerate(args))
        self.fn.prepared_call(grid, block, *args, shared_size=shared)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.fn, attr)


def load_module(arch: str) -> Any:
    """Load the kernels' cubin into the current pycuda context (imports pycuda)."""
    import pycuda.driver as cuda  # noqa: PLC0415  (lazy: optional dependency)

    return cuda.module_from_buffer(kernel_binary(arch))


# ---------------------------------------------------------------------------------------------------------
# Launch geometry


def blocks_for(n: int, block: int, max_blocks: int = 65536) -> int:
    """Blocks of a grid-stride launch over ``n`` items: ceil(n / block) capped at ``max_blocks`` (≥ 1)."""
    if block <= 0 or block > 1024:
        raise ValueError(f"block size must be in 1..1024, got {block}")
    if n < 0:
        raise ValueError(f"item count must be >= 0, got {n}")
    return max(1, min(-(-n // block), max_blocks, MAX_GRID_X))


def tile_blocks(samples: int, num_networks: int, tile: int) -> int:
    """Upper bound on the work tiles of one pass: sum_m ceil(c_m / tile) ≤ ceil(S / tile) + min(M, S).

    One block per tile (blocks past the real count exit at once); ``ValueError`` past gridDim.x.
    """
    if tile <= 0:
        raise ValueError(f"tile must be > 0, got {tile}")
    n = -(-samples // tile) + min(num_networks, samples)
    if n > MAX_GRID_X:
        raise ValueError(f"{n} tiles exceed CUDA's grid limit; lower max_samples_per_pass")
    return max(1, n)


def sample_capacity(n_rays: int, samples_per_pass: int, max_samples: int) -> int:
    """Sample slots of one pass: min(rays · K, max_samples), at least K so that a pass always makes
    progress; a Python int (no 32-bit overflow)."""
    k = int(samples_per_pass)
    return max(k, min(int(n_rays) * k, int(max_samples)))


def pass_samples_per_ray(k0: int, pass_index: int, active: int, capacity: int, grow: bool) -> int:
    """K of pass ``pass_index`` (0-based): the frame's K doubles once per earlier pass, up to
    ``MAX_SAMPLES_PER_PASS``, while ``active`` rays × 2K still fit the pass's ``capacity`` slots. As rays
    retire (ERT, leaving the box) the slots the frame was sized for go to the rays still marching, so the
    last passes of a frame take more samples each and the frame needs fewer passes (each a host sync).
    The GPU twin of ``renderer.frame.FrameParams.pass_samples`` (whose budget is a CPU's)."""
    k = int(k0)
    for _ in range(pass_index if grow else 0):
        if k >= MAX_SAMPLES_PER_PASS or active * k * 2 > capacity:
            break
        k *= 2
    return k


def evaluate_shared_bytes(hidden: int, stride: int, weight_bytes: int, block: int) -> int:
    """Dynamic shared memory of evaluate_networks: packed weights + one H-float column per thread."""
    return stride * weight_bytes + hidden * block * 4


def evaluate_kernel_name(hidden: int, half: bool) -> str:
    """Name of the fused MLP kernel for hidden width H and F16 / F32 weights."""
    if hidden not in HIDDEN_WIDTHS:
        raise ValueError(f"the CUDA renderer supports hidden widths {HIDDEN_WIDTHS}, not {hidden}")
    return f"evaluate_networks_h{hidden}_{'f16' if half else 'f32'}"


# ---------------------------------------------------------------------------------------------------------
# Binary interface: packed weights


@dataclass(frozen=True)
class WeightLayout:
    """Element offsets of each tensor inside one network's packed weights (``kn::WeightLayout``)."""

    w0: int
    """l0.weight ``[3+6P, H]``."""
    b0: int
    """l0.bias ``[H]``."""
    w1: int
    """l1.weight ``[H, H]``."""
    b1: int
    """l1.bias ``[H]``."""
    w2f: int
    """l2.weight columns 1..H (feature) ``[H, H]``."""
    w2d: int
    """l2.weight column 0 (density) ``[H]``."""
    b2f: int
    """l2.bias 1..H ``[H]``."""
    b2d: int
    """l2.bias 0 ``[1]``."""
    w3: int
    """l3.weight ``[H+3+6D, H]``."""
    b3: int
    """l3.bias ``[H]``."""
    w4: int
    """l4.weight padded to ``[H, 4]``."""
    b4: int
    """l4.bias padded to ``[4]``."""
    stride: int
    """Elements per network (a multiple of 8: 16-byte aligned rows for F16 and F32)."""


def _round8(n: int) -> int:
    return (n + 7) & ~7


def weight_layout(hidden: int, pos_freqs: int, dir_freqs: int) -> WeightLayout:
    """The packed layout for hidden width H and P / D encoding octaves (same as ``kn::weight_layout``)."""
    h = hidden
    sizes = [(3 + 6 * pos_freqs) * h, h, h * h, h, h * h, h, h, 1, (h + 3 + 6 * dir_freqs) * h, h, h * 4, 4]
    offsets = []
    o = 0
    for s in sizes:
        offsets.append(o)
        o += _round8(s)
    names = [f.name for f in fields(WeightLayout)]
    return WeightLayout(**dict(zip(names, [*offsets, o], strict=True)))


def _as_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        t = t.numpy()
    return np.asarray(t)


def pack_weights(
    weights: Mapping[str, Any], hidden: int, pos_freqs: int, dir_freqs: int, dtype: Any = np.float32
) -> np.ndarray:
    """Pack the ten ``l*`` tensors (``y = x @ W + b``, W ``[M, in, out]``) into ``[M, stride]`` rows.

    Args:
        weights: scene keys ``l0.weight`` … ``l4.bias`` (torch tensors or arrays).
        dtype: ``np.float32`` or ``np.float16`` (F16 values are kept bit for bit when the input is F16).

    Returns:
        C-contiguous ``[M, stride]`` array of ``dtype``; padding is zero.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"packed weights must be float32 or float16, not {dt}")
    w = {k: _as_numpy(v) for k, v in weights.items()}
    m = w["l0.weight"].shape[0]
    L = weight_layout(hidden, pos_freqs, dir_freqs)
    h = hidden
    out = np.zeros((m, L.stride), dtype=dt)

    def put(offset: int, a: np.ndarray) -> None:
        flat = a.reshape(m, -1)
        out[:, offset : offset + flat.shape[1]] = flat.astype(dt)

    l2w, l2b = w["l2.weight"], w["l2.bias"]
    put(L.w0, w["l0.weight"])
    put(L.b0, w["l0.bias"])
    put(L.w1, w["l1.weight"])
    put(L.b1, w["l1.bias"])
    put(L.w2f, l2w[:, :, 1:])
    put(L.w2d, l2w[:, :, 0])
    put(L.b2f, l2b[:, 1:])
    put(L.b2d, l2b[:, :1])
    put(L.w3, w["l3.weight"])
    put(L.b3, w["l3.bias"])
    w4 = np.zeros((m, h, 4), dtype=w["l4.weight"].dtype)
    w4[:, :, :3] = w["l4.weight"]
    b4 = np.zeros((m, 4), dtype=w["l4.bias"].dtype)
    b4[:, :3] = w["l4.bias"]
    put(L.w4, w4)
    put(L.b4, b4)
    return np.ascontiguousarray(out)


def unpack_weights(packed: np.ndarray, hidden: int, pos_freqs: int, dir_freqs: int) -> dict[str, np.ndarray]:
    """Inverse of ``pack_weights``: the ten scene tensors (in the packed dtype)."""
    m = packed.shape[0]
    L = weight_layout(hidden, pos_freqs, dir_freqs)
    h, p_in, d_in = hidden, 3 + 6 * pos_freqs, hidden + 3 + 6 * dir_freqs

    def get(offset: int, *shape: int) -> np.ndarray:
        n = int(np.prod(shape))
        return packed[:, offset : offset + n].reshape(m, *shape)

    l2w = np.concatenate((get(L.w2d, h, 1), get(L.w2f, h, h)), axis=2)
    l2b = np.concatenate((get(L.b2d, 1), get(L.b2f, h)), axis=1)
    return {
        "l0.weight": get(L.w0, p_in, h),
        "l0.bias": get(L.b0, h),
        "l1.weight": get(L.w1, h, h),
        "l1.bias": get(L.b1, h),
        "l2.weight": l2w,
        "l2.bias": l2b,
        "l3.weight": get(L.w3, d_in, h),
        "l3.bias": get(L.b3, h),
        "l4.weight": get(L.w4, h, 4)[:, :, :3],
        "l4.bias": get(L.b4, 4)[:, :3],
    }


def layout_tuple(layout: WeightLayout) -> tuple[int, ...]:
    """The layout's offsets in ``kn::WeightLayout`` field order."""
    return tuple(getattr(layout, f.name) for f in fields(layout))
