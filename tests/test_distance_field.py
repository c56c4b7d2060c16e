"""renderer/distance_field.py: the empty-space distance against a brute-force reference and hand-computed
cases, the contributing-voxel table, and the memory of both on a large grid."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer import distance_field as df


def brute_force_distance(valid: torch.Tensor, cap: int) -> torch.Tensor:
    """min over valid voxels of the max-norm index distance, capped: one voxel at a time."""
    out = torch.full(valid.shape, cap, dtype=torch.uint8)
    points = valid.nonzero().tolist()
    for idx in itertools.product(*(range(n) for n in valid.shape)):
        for p in points:
            d = max(abs(a - b) for a, b in zip(idx, p))
            out[idx] = min(int(out[idx]), d, cap)
    return out


def test_one_valid_voxel_gives_rings_of_chebyshev_distance() -> None:
    valid = torch.zeros(7, 5, 3, dtype=torch.bool)
    valid[3, 1, 0] = True
    d = df.empty_space_distance(valid, cap=24)
    assert d[3, 1, 0] == 0 and d[4, 2, 1] == 1 and d[3, 1, 2] == 2 and d[0, 4, 2] == 3 and d[6, 4, 2] == 3
    assert int(d.max()) == 3  # the farthest corner is 3 voxels away in the max-norm


def test_cap_and_empty_grid() -> None:
    valid = torch.zeros(40, 2, 2, dtype=torch.bool)
    valid[0] = True
    d = df.empty_space_distance(valid, cap=5)
    assert d[:, 0, 0].tolist() == [0, 1, 2, 3, 4] + [5] * 35
    assert bool((df.empty_space_distance(torch.zeros(3, 4, 5, dtype=torch.bool), cap=7) == 7).all())


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 6)] * 3),
    seed=st.integers(0, 2**31 - 1),
    fill=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    cap=st.integers(1, 8),
    chunk=st.sampled_from([1, 7, 1 << 22]),
)
def test_matches_brute_force(
    shape: tuple[int, int, int], seed: int, fill: float, cap: int, chunk: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(shape, generator=g) < fill
    old = df.CHUNK_VOXELS
    df.CHUNK_VOXELS = chunk  # slabs of one row up to the whole grid give the same field
    try:
        got = df.empty_space_distance(valid, cap=cap)
    finally:
        df.CHUNK_VOXELS = old
    assert torch.equal(got, brute_force_distance(valid, cap))


def test_writes_into_a_given_buffer() -> None:
    valid = torch.zeros(4, 4, 4, dtype=torch.bool)
    valid[0, 0, 0] = True
    buf = torch.full((70,), 99, dtype=torch.uint8)
    out = df.empty_space_distance(valid, cap=24, out=buf[:64].view(4, 4, 4))
    assert out.data_ptr() == buf.data_ptr() and int(buf[63]) == 3 and buf[64:].tolist() == [99] * 6


def test_contributing_voxels_cell_by_cell() -> None:
    index = torch.tensor([[[0, -1]], [[-1, 1]]])  # 2x1x2 cells of 2x3x2 voxels
    occ = torch.zeros(4, 3, 4, dtype=torch.bool)
    occ[0, 0, 0] = occ[0, 0, 2] = occ[3, 2, 3] = occ[2, 1, 1] = True
    v = df.contributing_voxels(index, occ, (4, 3, 4))
    assert v.nonzero().tolist() == [
        [0, 0, 0],
        [3, 2, 3],
    ]  # [0,0,2] and [2,1,1] lie in cells without a network
    no_ess = df.contributing_voxels(index, None, (4, 3, 4))
    assert int(no_ess.sum()) == 2 * 12 and bool(no_ess[:2, :, :2].all()) and not bool(no_ess[:2, :, 2:].any())
    assert occ.sum() == 4  # the occupancy is not changed


def test_large_grid_needs_about_one_byte_per_voxel() -> None:
    """A 256³ grid: the field is 16 MiB; building it allocates only a few slabs besides (measured in a fresh
    process, whose peak-RSS rise is not hidden by memory freed earlier in the test session)."""
    import subprocess
    import sys

    code = (
        "import torch, sys\n"
        "from pathlib import Path\n"
        "from renderer import distance_field as df\n"
        "def mib(k):\n"
        "    return next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith(k + ':')) / 1024\n"
        "valid = torch.rand(256, 256, 256, generator=torch.Generator().manual_seed(0)) < 0.01\n"
        "try:\n"
        "    Path('/proc/self/clear_refs').write_text('5')\n"
        "except OSError:\n"
        "    print('skip'); sys.exit()\n"
        "before = mib('VmRSS')\n"
        "d = df.empty_space_distance(valid)\n"
        "print(mib('VmHWM') - before)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "skip":
        pytest.skip("cannot reset the peak-RSS mark here")
    rise = float(out.stdout.strip())
    assert 16 <= rise < 16 + 48, rise
