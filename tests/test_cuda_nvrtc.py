"""The kernels compiled at run time by NVRTC from NVIDIA's pip wheels (no toolkit, no GPU needed to compile):
cubins for sm_80 and sm_90 with warnings as errors, PTX, error and warning reporting, the on-disk cache
(keyed by sources and architecture, atomic, corrupt entries recompiled), and the compiler choice that lets
``cuda_available()`` work without nvcc."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from renderer.cuda import kernels, nvrtc

HAVE_NVRTC, WHY_NOT = nvrtc.nvrtc_available()
needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason=WHY_NOT)

EXPECTED_KERNELS = [
    "generate_rays",
    "init_rays",
    "march_rays",
    "scan_network_counts",
    "scatter_samples",
    "composite_front_to_back",
    "write_pixels",
    "count_touched",
] + [kernels.evaluate_kernel_name(h, half) for h in kernels.HIDDEN_WIDTHS for half in (False, True)]


def test_nvrtc_installed_in_ci() -> None:
    """CI installs the wheels (Makefile's venv); there the compile tests below must run, not skip."""
    if not os.environ.get("CI"):
        pytest.skip("not CI")
    assert HAVE_NVRTC, WHY_NOT


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_to_cubin_with_warnings_as_errors(arch: str) -> None:
    blob = nvrtc.compile_source(nvrtc.KERNEL_SOURCE, arch, strict=True)
    assert blob[:4] == b"\x7fELF", "NVRTC did not produce a cubin"
    missing = [k for k in EXPECTED_KERNELS if k.encode() not in blob]
    assert not missing, f"kernels missing from the {arch} cubin: {missing}"


@needs_nvrtc
def test_ptx_warning_and_error_reporting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "good.cu"
    good.write_text('#include "common.cuh"\nextern "C" __global__ void k(float* x) { x[0] = INFINITY; }\n')
    ptx = nvrtc.compile_source(good, "compute_90", strict=True).decode()
    assert ".entry k(" in ptx and ".target sm_90" in ptx
    warn = tmp_path / "warn.cu"
    warn.write_text('extern "C" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }\n')
    with pytest.raises(nvrtc.NvrtcError, match=r"warn\.cu: warnings are errors: .*unused"):
        nvrtc.compile_source(warn, "sm_80", strict=True)
    with caplog.at_level("WARNING", logger="renderer.cuda.nvrtc"):
        assert nvrtc.compile_source(warn, "sm_80")[:4] == b"\x7fELF"  # a user's run: a log line only
    assert any("unused" in r.getMessage() for r in caplog.records)
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = 1.0f }\n')
    with pytest.raises(nvrtc.NvrtcError, match=r"bad\.cu: NVRTC failed: .*error"):
        nvrtc.compile_source(bad, "sm_80")
    with pytest.raises(nvrtc.NvrtcError, match="cannot compile for sm_10"):
        nvrtc.compile_source(good, "sm_10")
    with pytest.raises(nvrtc.NvrtcError, match="bad CUDA architecture"):
        nvrtc.compile_source(good, "gfx90a")


@needs_nvrtc
def test_cache_reuses_sound_entries_and_recompiles_corrupt_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_compile(source: Path, arch: str, *, strict: bool = False) -> bytes:
        calls.append(arch)
        return b"\x7fELF" + arch.encode() * 100

    monkeypatch.setattr(nvrtc, "compile_source", fake_compile)
    first = nvrtc.build_cubin("sm_90", tmp_path)
    assert first.startswith(b"\x7fELFsm_90") and calls == ["sm_90"]
    assert nvrtc.build_cubin("sm_90", tmp_path) == first and calls == ["sm_90"]  # from the cache
    assert nvrtc.build_cubin("sm_80", tmp_path) != first and calls == ["sm_90", "sm_80"]  # keyed by arch
    (entry,) = tmp_path.glob("kilonerf-nvrtc-sm_90-*.cubin")
    assert not list(tmp_path.glob("*.tmp")), "atomic writes leave no temp file"
    raw = bytearray(entry.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the payload
    entry.write_bytes(bytes(raw))
    assert nvrtc.read_entry(entry) is None
    assert nvrtc.build_cubin("sm_90", tmp_path) == first and calls[-1] == "sm_90" and len(calls) == 3
    entry.write_bytes(entry.read_bytes()[:20])  # torn write
    assert nvrtc.build_cubin("sm_90", tmp_path) == first and len(calls) == 4
    assert nvrtc.read_entry(entry) == first


@needs_nvrtc
def test_cache_key_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kilonerf.cu").write_text("// a\n")
    monkeypatch.setattr(nvrtc, "SOURCE_DIR", src)
    k1 = nvrtc.cache_key(src / "kilonerf.cu", "sm_90")
    assert k1 != nvrtc.cache_key(src / "kilonerf.cu", "sm_80")
    (src / "common.cuh").write_text("// b\n")
    assert nvrtc.cache_key(src / "kilonerf.cu", "sm_90") != k1


def test_compiler_choice_without_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "find_nvcc", lambda: None)
    monkeypatch.setenv("KILONERF_CUDA_COMPILER", "auto")
    compiler, why = kernels.kernel_compiler()
    assert compiler == ("nvrtc" if HAVE_NVRTC else None)
    if not HAVE_NVRTC:
        assert "no CUDA kernel compiler" in why
    monkeypatch.setenv("KILONERF_CUDA_COMPILER", "nvcc")
    assert kernels.kernel_compiler() == (
        None,
        "no CUDA kernel compiler: nvcc not found (put it on PATH "
        "or set CUDA_HOME); pip install '.[cuda]' (see docs/cuda.md)",
    )
    monkeypatch.setenv("KILONERF_CUDA_COMPILER", "clang")
    compiler, why = kernels.kernel_compiler()
    assert compiler is None and "must be one of" in why
    monkeypatch.setenv("KILONERF_NVRTC", "/nonexistent/libnvrtc.so")
    monkeypatch.setenv("KILONERF_CUDA_COMPILER", "nvrtc")
    compiler, why = kernels.kernel_compiler()
    assert compiler is None and "NVRTC not found" in why
    with pytest.raises(kernels.NvccError, match="NVRTC not found"):
        kernels.kernel_binary("sm_90")


@needs_nvrtc
def test_cuda_available_needs_no_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU answering (a stand-in driver) and no nvcc, NVRTC is enough."""
    import renderer.cuda as rc

    class _Device:
        count = staticmethod(lambda: 1)

        def __init__(self, index: int) -> None:
            pass

        def compute_capability(self) -> tuple[int, int]:
            return 9, 0

    pkg = types.ModuleType("pycuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None)
    drv = types.ModuleType("pycuda.driver")
    drv.init = lambda: None  # type: ignore[attr-defined]
    drv.Device = _Device  # type: ignore[attr-defined]
    pkg.driver = drv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setattr(kernels, "find_nvcc", lambda: None)
    monkeypatch.delenv("KILONERF_CUDA_COMPILER", raising=False)
    rc.cuda_available.cache_clear()
    try:
        assert rc.cuda_available() == (True, "")
        monkeypatch.setenv("KILONERF_CUDA_COMPILER", "nvcc")
        rc.cuda_available.cache_clear()
        ok, why = rc.cuda_available()
        assert not ok and "nvcc not found" in why
    finally:
        rc.cuda_available.cache_clear()


def test_importing_loads_no_nvrtc_and_no_pycuda() -> None:
    code = (
        "import sys, renderer.cuda, renderer.cuda.nvrtc, renderer.cuda.kernels, renderer.cuda.backend; "
        "renderer.cuda.kernels.kernel_compiler(); "
        "maps = open('/proc/self/maps').read(); "
        "assert 'libnvrtc' not in maps, 'NVRTC loaded at import'; "
        "assert not any(m.startswith('pycuda') for m in sys.modules), 'pycuda imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_transfer_mode_is_one_line() -> None:
    import renderer.cuda as rc

    mode, why = rc.transfer_mode()
    assert mode in ("interop", "host copy") and why and "\n" not in why

    class _Pbo:
        mode, reason = "host", "GL runs on Mesa"

    assert rc.transfer_mode(_Pbo()) == ("host copy", "GL runs on Mesa")
    _Pbo.mode = "interop"
    assert rc.transfer_mode(_Pbo())[0] == "interop"
