"""Compiling the kernels at run time with NVRTC (no CUDA toolkit, no nvcc, no host compiler).

NVRTC comes from NVIDIA's pip wheels (``nvidia-cuda-nvrtc``: ``nvidia/cu13/lib/libnvrtc.so.13``; the
headers ``cuda_fp16.h`` and ``nv/target`` from ``nvidia-cuda-runtime``: ``nvidia/cu13/include``), or from a
toolkit (``$CUDA_HOME/lib64``). It is called through ctypes. ``compile_source`` builds a cubin (``sm_XY``) or
PTX (``compute_XY``) of one ``.cu`` file; ``build_cubin`` caches the kernels' cubin on disk, keyed by the
sources, the options, NVRTC's version and the architecture. A cache entry carries the SHA-256 of its
payload: a torn or corrupt entry is recompiled, never loaded.

``strict=True`` (CI) turns every warning into an error; a user's run keeps warnings as log lines, so a newer
NVRTC with a new warning does not stop the viewer. Importing this module loads no library and compiles
nothing.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import logging
import os
import re
from pathlib import Path

from renderer.atomic import atomic_write

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
KERNEL_SOURCE = SOURCE_DIR / "kilonerf.cu"
CACHE_MAGIC = b"KNRTC1\n"
"""First bytes of a cache entry: magic, 32-byte SHA-256 of the payload, payload."""
BASE_OPTIONS = ("-std=c++17", "--generate-line-info")
"""No fast math: the index maths must round exactly as the torch renderer does."""
_ARCH = re.compile(r"^(sm|compute)_(\d{2,3})[af]?$")


class NvrtcError(RuntimeError):
    """NVRTC is missing or the compile failed; the message names the source file."""


# ---------------------------------------------------------------------------------------------------------
# Finding NVRTC and the headers


def _wheel_roots() -> list[Path]:
    """``site-packages/nvidia/{cu13,cu12-style}`` folders of NVIDIA's CUDA wheels on ``sys.path``."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    roots: list[Path] = []
    for loc in spec.submodule_search_locations:
        base = Path(loc)
        roots += sorted(base.glob("cu1[3-9]"), reverse=True)  # CUDA 13+: nvidia/cu13/{lib,include}
        roots += [base / "cuda_nvrtc", base / "cuda_runtime"]  # CUDA 12: one folder per wheel
    return [r for r in roots if r.is_dir()]


def _toolkit_roots() -> list[Path]:
    names = (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
    return [Path(n) for n in names if n and Path(n).is_dir()]


def find_libnvrtc() -> Path | None:
    """libnvrtc: ``$KILONERF_NVRTC``, NVIDIA's wheels, then a toolkit's ``lib64``/``lib``."""
    env = os.environ.get("KILONERF_NVRTC")
    if env:
        return Path(env) if Path(env).is_file() else None
    dirs = [r / "lib" for r in _wheel_roots()]
    dirs += [r / sub for r in _toolkit_roots() for sub in ("lib64", "lib", "targets/x86_64-linux/lib")]
    for d in dirs:
        hits = sorted(p for p in d.glob("libnvrtc.so*") if "builtins" not in p.name)
        if hits:
            return hits[-1]
    return None


def include_dirs() -> list[Path]:
    """The folder holding ``cuda_fp16.h`` (at most one): NVIDIA's wheels first, then a toolkit's."""
    cands = [r / "include" for r in _wheel_roots()] + [r / "include" for r in _toolkit_roots()]
    found = [d for d in dict.fromkeys(cands) if (d / "cuda_fp16.h").is_file()]
    return found[:1]  # one CUDA version's headers, never a mix


def nvrtc_available() -> tuple[bool, str]:
    """Whether NVRTC and the CUDA headers are here, and why not (never raises, loads nothing)."""
    if find_libnvrtc() is None:
        return False, "NVRTC not found (pip install nvidia-cuda-nvrtc, or a CUDA toolkit)"
    if not include_dirs():
        return False, "cuda_fp16.h not found (pip install nvidia-cuda-runtime, or a CUDA toolkit)"
    return True, ""


# ---------------------------------------------------------------------------------------------------------
# The library


class _Nvrtc:
    """The few NVRTC entry points we call."""

    def __init__(self, path: Path) -> None:
        try:
            self.lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise NvrtcError(f"cannot load NVRTC from {path}: {e}") from None
        self.path = path
        L = self.lib
        L.nvrtcGetErrorString.restype = ctypes.c_char_p
        L.nvrtcCreateProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        L.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        L.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        for name in ("nvrtcGetProgramLogSize", "nvrtcGetCUBINSize", "nvrtcGetPTXSize"):
            getattr(L, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        for name in ("nvrtcGetProgramLog", "nvrtcGetCUBIN", "nvrtcGetPTX"):
            getattr(L, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]

    def check(self, status: int, what: str) -> None:
        if status != 0:
            msg = self.lib.nvrtcGetErrorString(status).decode(errors="replace")
            raise NvrtcError(f"{what}: {msg}")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def supported_archs(self) -> list[int]:
        n = ctypes.c_int()
        self.check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self.check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return list(archs)

    def _get(self, prog: ctypes.c_void_p, kind: str) -> bytes:
        size = ctypes.c_size_t()
        self.check(getattr(self.lib, f"nvrtcGet{kind}Size")(prog, ctypes.byref(size)), f"nvrtcGet{kind}Size")
        buf = ctypes.create_string_buffer(size.value)
        self.check(getattr(self.lib, f"nvrtcGet{kind}")(prog, buf), f"nvrtcGet{kind}")
        return buf.raw[: size.value]

    def compile(self, source: str, name: str, options: list[str], kind: str) -> tuple[bytes | None, str]:
        """(binary or None when the compile failed, log). ``kind``: "CUBIN" or "PTX"."""
        prog = ctypes.c_void_p()
        self.check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            status = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            text = self._get(prog, "ProgramLog").rstrip(b"\0").decode(errors="replace")
            if status != 0:
                return None, text
            return self._get(prog, kind), text
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


@functools.cache
def _library(path: Path) -> _Nvrtc:
    return _Nvrtc(path)


def load_nvrtc() -> _Nvrtc:
    """The NVRTC library (loaded once); ``NvrtcError`` when absent."""
    path = find_libnvrtc()
    if path is None:
        raise NvrtcError(nvrtc_available()[1])
    return _library(path)


# ---------------------------------------------------------------------------------------------------------
# Compiling


def compile_options(arch: str, includes: list[Path] | None = None) -> list[str]:
    """NVRTC options for ``arch`` (``sm_90`` → cubin, ``compute_90`` → PTX) with our headers' folders."""
    if not _ARCH.match(arch):
        raise NvrtcError(f"bad CUDA architecture {arch!r} (expected e.g. sm_90 or compute_90)")
    incs = [SOURCE_DIR, *(include_dirs() if includes is None else includes)]
    return [f"--gpu-architecture={arch}", *BASE_OPTIONS, *(f"--include-path={d}" for d in incs)]


def _warnings(log_text: str) -> list[str]:
    return [ln.strip() for ln in log_text.splitlines() if re.search(r": warning\b", ln)]


def compile_source(source: Path, arch: str, *, strict: bool = False) -> bytes:
    """Compile one ``.cu`` file for ``arch``: a cubin for ``sm_XY``, PTX for ``compute_XY``.

    Args:
        strict: warnings are errors (CI); otherwise they are logged once.

    Raises:
        NvrtcError: NVRTC missing, the architecture unknown to it, or the compile failed (the first lines).
    """
    nv = load_nvrtc()
    m = _ARCH.match(arch)
    if m is None:
        raise NvrtcError(f"{source}: bad CUDA architecture {arch!r} (expected e.g. sm_90 or compute_90)")
    if int(m.group(2)) not in nv.supported_archs():
        major, minor = nv.version()
        raise NvrtcError(f"{source}: NVRTC {major}.{minor} ({nv.path}) cannot compile for {arch}")
    text = source.read_text()
    binary, out = nv.compile(
        text, source.name, compile_options(arch), "CUBIN" if m.group(1) == "sm" else "PTX"
    )
    if binary is None:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        raise NvrtcError(f"{source}: NVRTC failed: " + " | ".join(lines[:8]))
    warns = _warnings(out)
    if warns and strict:
        raise NvrtcError(f"{source}: warnings are errors: " + " | ".join(warns[:8]))
    for w in warns[:8]:
        log.warning("NVRTC: %s", w)
    return binary


# ---------------------------------------------------------------------------------------------------------
# The on-disk cache


def cache_key(source: Path, arch: str) -> str:
    """SHA-256 (20 hex digits) of the sources, NVRTC's version and library, the options and ``arch``."""
    nv = load_nvrtc()
    h = hashlib.sha256()
    for p in sorted(SOURCE_DIR.glob("*.cu*")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    h.update(repr((source.name, arch, nv.version(), str(nv.path), BASE_OPTIONS)).encode())
    for d in include_dirs():
        f = d / "cuda_fp16.hpp"
        h.update(f.read_bytes() if f.is_file() else str(d).encode())
    return h.hexdigest()[:20]


def read_entry(path: Path) -> bytes | None:
    """A cache entry's payload, or None when it is missing, torn or corrupt."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(CACHE_MAGIC) + 32
    if len(blob) <= head or not blob.startswith(CACHE_MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(CACHE_MAGIC) : head]:
        return None
    return payload


def write_entry(path: Path, payload: bytes) -> None:
    """Write a cache entry atomically (a temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(CACHE_MAGIC + hashlib.sha256(payload).digest() + payload)


def build_cubin(arch: str, cache: Path, source: Path = KERNEL_SOURCE) -> bytes:
    """The kernels compiled by NVRTC for ``arch`` (e.g. ``sm_90``), from ``cache`` when the entry is sound."""
    entry = cache / f"{source.stem}-nvrtc-{arch}-{cache_key(source, arch)}.cubin"
    payload = read_entry(entry)
    if payload is not None:
        return payload
    if entry.exists():
        log.warning("cache entry %s is corrupt; recompiling", entry)
    log.info("compiling %s for %s with NVRTC (once; cached in %s)", source.name, arch, cache)
    payload = compile_source(source, arch)
    write_entry(entry, payload)
    return payload
