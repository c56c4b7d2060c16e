"""Shared fixtures: where the real data lives, and GPU detection for the `gpu` marker."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# torch's OpenMP workers spin-wait by default: on a shared 2-core machine that makes renders 5-10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# viewers opened by tests remember their settings in a temporary file, never in the user's config folder
os.environ["KILONERF_STUDIO_SETTINGS"] = os.path.join(
    tempfile.mkdtemp(prefix="kilonerf-test-settings-"), "settings.json"
)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("KILONERF_DATA", ROOT.parent / "shared" / "data"))
BLENDER_LEGO = DATA_ROOT / "nerf_synthetic" / "lego"
NSVF_LEGO = DATA_ROOT / "nsvf_subset" / "lego"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset not found at {path} (see README: Data); set KILONERF_DATA to its parent folder")
    return path


@pytest.fixture(scope="session")
def blender_lego() -> Path:
    """Path to the Blender-layout lego scene (skips when absent)."""
    return _need(BLENDER_LEGO)


@pytest.fixture(scope="session")
def nsvf_lego() -> Path:
    """Path to the NSVF-layout lego subset (skips when absent)."""
    return _need(NSVF_LEGO)


def gpu_available() -> tuple[bool, str]:
    """Whether a CUDA GPU and pycuda are usable here, and why not."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU on this machine"
    except Exception as e:  # pragma: no cover
        return False, f"torch unavailable: {e}"
    try:
        import pycuda  # noqa: F401
    except Exception:
        return False, "pycuda is not installed (pip install .[cuda])"
    return True, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ok, why = gpu_available()
    if ok:
        return
    if os.environ.get("KILONERF_REQUIRE_GPU") and any("gpu" in item.keywords for item in items):
        # scripts/gpu_check.sh: on the GPU machine a skipped GPU test is a failed check
        pytest.exit(f"KILONERF_REQUIRE_GPU is set but the gpu tests cannot run: {why}", returncode=3)
    skip = pytest.mark.skip(reason=f"gpu test: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
