"""The fuzz harness (benchmarks/fuzz_scene.py) on a fixed-seed sample: every mutated scene is refused with
one line or accepted and rendered without a NaN pixel, within the time and memory limits; no traceback.
The full run (10,000+ cases) is `python benchmarks/fuzz_scene.py --cases 10000`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fuzz_scene  # noqa: E402


@pytest.mark.parametrize("kind, cases", [("scene", 500), ("camera", 200), ("transforms", 200), ("ngp", 200)])
def test_fixed_seed_sample_has_no_failures(kind: str, cases: int) -> None:
    summary = fuzz_scene.run({kind: cases}, seed=1)[kind]
    assert summary.cases == cases
    assert summary.failures == [], [f"{f.kind}: {f.mutation}: {f.detail}" for f in summary.failures[:5]]
    # the sample exercises both ends: refusals and accepted files (scenes: rendered on every backend)
    assert summary.outcomes["refused"] > cases // 4 and summary.outcomes["accepted"] > cases // 50


def test_a_large_grid_renders_within_twice_the_file(tmp_path: Path) -> None:
    """A file of a few MiB may ask for ~2^24 occupancy voxels: accepted, rendered by every backend without
    NaN, and the peak RSS rise stays within 2 x the file plus the frame's and torch's own allocations
    (nothing per voxel: the old renderer kept 3.2 bytes per voxel, ~20x the file)."""
    import math
    import random

    from renderer.backends import BackendError, get_backend
    from renderer.scene import load_scene

    rng = random.Random(7)
    while True:
        what, data = fuzz_scene._large_grid(rng)
        voxels = math.prod(int(v) for v in what[len("large grid [") : -1].split(", "))
        if 2**23 <= voxels <= 2**25:
            break
    path = tmp_path / "grid.kilo"
    path.write_bytes(data)
    backends = ["torch"]
    try:
        get_backend("cpu")
        backends.append("cpu")
    except BackendError:  # no native kernel here: the torch backend alone
        pass
    check = lambda: fuzz_scene._check_scene(path, backends)  # noqa: E731
    o = fuzz_scene.run_limited(what, len(data), check, (ValueError,))
    assert o.kind == "accepted", o
    assert load_scene(path).occupancy.size == voxels
    print(f"{what}: {len(data) / 2**20:.1f} MiB file, peak RSS rise {o.peak_mb:.0f} MB")


def test_a_memory_rise_past_the_limit_is_a_failure() -> None:
    hog: list[bytearray] = []

    def allocate() -> str:
        hog.append(bytearray(b"x" * (fuzz_scene.MEMORY_SLACK_MB + 64) * 2**20))
        return "accepted"

    o = fuzz_scene.run_limited("probe", 10, allocate, (ValueError,))
    if o.kind != "memory":  # /proc/self/clear_refs not writable: the peak mark cannot be reset here
        pytest.skip(f"the peak-RSS mark cannot be reset on this machine ({o.kind}, {o.peak_mb:.0f} MB)")
    o = fuzz_scene.run_limited("probe", 2**30, allocate, (ValueError,))  # a 1 GiB file may take 2 GiB
    assert o.kind == "accepted", o


def test_a_failure_is_reported_as_such() -> None:
    def boom() -> str:
        raise KeyError("x")

    o = fuzz_scene.run_limited("probe", 10, boom, (ValueError,))
    assert o.failed and o.kind == "traceback" and "KeyError" in o.detail
    o = fuzz_scene.run_limited("probe", 10, lambda: (_ for _ in ()).throw(ValueError("a\nb")), (ValueError,))
    assert o.kind == "multi-line"
