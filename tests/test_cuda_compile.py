"""Every CUDA source compiles with nvcc for sm_80 and sm_90 (warnings are errors); runs without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from renderer.cuda import kernels

NVCC = kernels.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH or under CUDA_HOME")

# Kernels the backend launches (renderer/cuda/backend.py) and must find in the binary.
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


def test_sources_are_found() -> None:
    names = {p.name for p in kernels.cuda_sources()}
    assert {"kilonerf.cu", "emulate.cu"} <= names


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", kernels.cuda_sources(), ids=lambda p: p.name)
def test_cu_compiles(source: Path, arch: str, tmp_path: Path) -> None:
    assert NVCC is not None
    out = tmp_path / f"{source.stem}.cubin"
    kernels.run_nvcc(kernels.nvcc_command(NVCC, source, out, arch), source)
    blob = out.read_bytes()
    assert blob[:4] == b"\x7fELF", "nvcc did not produce a cubin"
    if source.name == "kilonerf.cu":
        missing = [k for k in EXPECTED_KERNELS if k.encode() not in blob]
        assert not missing, f"kernels missing from the {arch} cubin: {missing}"


@needs_nvcc
def test_compile_errors_are_reported(tmp_path: Path) -> None:
    """A warning (unused variable) fails the build, and the error names the file."""
    assert NVCC is not None
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }\n')
    with pytest.raises(kernels.NvccError, match="bad.cu"):
        kernels.run_nvcc(kernels.nvcc_command(NVCC, bad, tmp_path / "bad.cubin", "sm_80"), bad)
