"""renderer/distance_field.py: the empty-space distance against a brute-force reference and hand-computed
cases, the contributing-voxel table, and the memory of both on a large grid."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer import bit_grid
from renderer import distance_field as df
from renderer.bit_grid import BitGrid


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


def test_network_bits_cell_by_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    index = np.array([[[0, -1]], [[-1, 1]]])  # 2x1x2 cells of 2x3x2 voxels
    no_ess = BitGrid(df.network_bits(index, (4, 3, 4)), (4, 3, 4)).to_bool()
    assert int(no_ess.sum()) == 2 * 12 and bool(no_ess[:2, :, :2].all()) and not bool(no_ess[:2, :, 2:].any())
    assert bool(no_ess[2:, :, 2:].all()) and not bool(no_ess[2:, :, :2].any())
    monkeypatch.setattr(bit_grid, "SLAB_VOXELS", 1)  # slabs of one byte-aligned group of x-rows
    assert np.array_equal(df.network_bits(index, (4, 3, 4)), BitGrid.from_bool(no_ess).bits)


def test_contributing_bits_cell_by_cell() -> None:
    index = np.array([[[0, -1]], [[-1, 1]]])  # 2x1x2 cells of 2x3x2 voxels
    occ = np.zeros((4, 3, 4), dtype=bool)
    occ[0, 0, 0] = occ[0, 0, 2] = occ[3, 2, 3] = occ[2, 1, 1] = True
    grid = BitGrid.from_bool(occ)
    v = BitGrid(df.contributing_bits(index, grid), (4, 3, 4)).to_bool()
    assert np.argwhere(v).tolist() == [[0, 0, 0], [3, 2, 3]]  # [0,0,2] and [2,1,1]: cells without a network
    assert int(grid.count()) == 4  # the occupancy is not changed
    assert df.contributing_bits(index, grid, in_place=True) is grid.bits  # load_scene's form: masked in place
    assert np.argwhere(grid.to_bool()).tolist() == [[0, 0, 0], [3, 2, 3]]
    no_ess = BitGrid(df.network_bits(index, (4, 3, 4)), (4, 3, 4)).to_bool()
    assert int(no_ess.sum()) == 2 * 12 and bool(no_ess[:2, :, :2].all()) and not bool(no_ess[:2, :, 2:].any())


def test_contributing_bits_are_the_occupancy_itself_when_nothing_is_masked() -> None:
    """Every scene the trainer writes has networks wherever it has occupied voxels: no copy is made."""
    occ = np.zeros((4, 3, 4), dtype=bool)
    occ[0, 0, 0] = occ[3, 2, 3] = True
    grid = BitGrid.from_bool(occ)
    assert df.contributing_bits(np.array([[[0, -1]], [[-1, 1]]]), grid) is grid.bits


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    seed=st.integers(0, 2**16),
    fraction=st.sampled_from([0.0, 0.01, 0.05, 0.3]),
)
def test_block_field_is_the_distance_between_blocks(
    shape: tuple[int, int, int], seed: int, fraction: float
) -> None:
    """Over blocks of 2³ voxels (odd sizes padded with empty voxels) the field is the brute-force Chebyshev
    distance between blocks that hold a valid voxel; read as voxels (`voxel_distance`) it never exceeds the
    true distance from any voxel of the block to the nearest valid voxel (so no jump passes one)."""
    valid = np.random.default_rng(seed).random(shape) < fraction
    field = df.block_distance_field(BitGrid.from_bool(valid))
    b = df.FINE_BLOCK
    blocks = torch.zeros([-(-s // b) for s in shape], dtype=torch.bool)
    for x, y, z in np.argwhere(valid):
        blocks[x // b, y // b, z // b] = True
    assert torch.equal(field, brute_force_distance(blocks, df.DISTANCE_CAP))
    truth = brute_force_distance(torch.from_numpy(valid), 255)
    for x, y, z in itertools.product(*(range(n) for n in shape)):
        guaranteed = df.voxel_distance(int(field[x // b, y // b, z // b]))
        assert guaranteed <= int(truth[x, y, z]), (x, y, z)


def test_voxel_distance_by_hand() -> None:
    assert [df.voxel_distance(d) for d in range(5)] == [0, 1, 3, 5, 7]


def test_block_field_slabs_cover_the_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made slab by slab (slabs of 2 x-rows here) it equals the field made in one slab."""
    valid = np.random.default_rng(1).random((13, 6, 5)) < 0.03
    whole = df.block_distance_field(BitGrid.from_bool(valid))
    monkeypatch.setattr(bit_grid, "SLAB_VOXELS", 1)
    assert torch.equal(df.block_distance_field(BitGrid.from_bool(valid)), whole)


def test_large_grid_tables_take_a_quarter_byte_per_voxel() -> None:
    """A 512×512×256 grid (2^26 voxels, 8 MiB of bits): with ESS its voxel table is the occupancy's own bits
    (`RenderScene.valid_bits`) and its distance field 8 MiB; building it allocates only a few slabs besides
    (measured in a fresh process: its peak-RSS rise is not hidden by memory freed earlier in the session)."""
    import subprocess
    import sys

    code = (
        "import numpy as np, sys\n"
        "from pathlib import Path\n"
        "from renderer import distance_field as df\n"
        "from renderer.bit_grid import BitGrid\n"
        "def mib(k):\n"
        "    return next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith(k + ':')) / 1024\n"
        "rng = np.random.default_rng(0)\n"
        "bits = (rng.random(1 << 23) < 0.02).astype(np.uint8)\n"
        "bits <<= rng.integers(0, 8, 1 << 23, dtype=np.uint8)\n"
        "grid = BitGrid(bits, (512, 512, 256))\n"
        "try:\n"
        "    Path('/proc/self/clear_refs').write_text('5')\n"
        "except OSError:\n"
        "    print('skip'); sys.exit()\n"
        "before = mib('VmRSS')\n"
        "d = df.block_distance_field(grid)\n"
        "assert d.numel() == 1 << 23\n"
        "print(mib('VmHWM') - before)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "skip":
        pytest.skip("cannot reset the peak-RSS mark here")
    rise = float(out.stdout.strip())
    assert rise < 8 + 48, rise  # the 8 MiB field (1/8 byte per voxel) and a few slabs of 2^22 voxels
