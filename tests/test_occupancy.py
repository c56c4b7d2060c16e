"""Occupancy extraction: network grid layout, the 3x3x3 rule on analytic densities, numbering, boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.occupancy import (
    OccupancyConfig,
    estimate_bbox,
    extract_occupancy,
    network_grid_for_bbox,
    network_index_from_occupancy,
    occupancy_grid_for_bbox,
)

LEGO_MIN = (-0.67, -1.2, -0.37)
LEGO_MAX = (0.67, 1.2, 1.03)


def sphere_density(centre: tuple[float, float, float], radius: float, value: float = 100.0):
    c = torch.tensor(centre)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.where((x - c).norm(dim=-1) < radius, value, 0.0)

    return fn


def test_lego_network_grid_is_9x16x10_with_cubic_cells():
    res, lo, hi = network_grid_for_bbox(LEGO_MIN, LEGO_MAX, longest=16)
    assert res == (9, 16, 10)
    cell = (hi - lo) / np.array(res)
    np.testing.assert_allclose(cell, 2.4 / 16, rtol=1e-12)  # cubic, side = longest extent / 16
    # grown symmetrically: same centre, contains the original box, y unchanged
    np.testing.assert_allclose((lo + hi) / 2, (np.array(LEGO_MIN) + np.array(LEGO_MAX)) / 2, atol=1e-12)
    assert np.all(lo <= np.array(LEGO_MIN)) and np.all(hi >= np.array(LEGO_MAX))
    np.testing.assert_allclose(
        lo, [-0.675, -1.2, -0.42], atol=1e-12
    )  # 9 cells x 0.15 = 1.35; 10 x 0.15 = 1.5
    grid, occ_res, _, _ = occupancy_grid_for_bbox(LEGO_MIN, LEGO_MAX, OccupancyConfig())
    assert grid == (9, 16, 10) and occ_res == (144, 256, 160)


def test_network_grid_exact_fit_and_other_longest_axis():
    res, lo, hi = network_grid_for_bbox((0, 0, 0), (4.0, 1.0, 2.0), longest=8)
    assert res == (8, 2, 4)
    np.testing.assert_allclose(lo, 0.0, atol=1e-12)
    np.testing.assert_allclose(hi, [4, 1, 2], atol=1e-12)
    with pytest.raises(ValueError):
        network_grid_for_bbox((0, 0, 0), (1, 0, 1))


def reference_occupancy(fn, lo, hi, res, threshold, k):
    """Straightforward per-sub-sample loop of the documented rule."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    vox = (hi - lo) / np.asarray(res)
    idx = np.stack(np.meshgrid(*[np.arange(r) for r in res], indexing="ij"), -1).reshape(-1, 3)
    occ = np.zeros(len(idx), bool)
    for a in range(k):
        for b in range(k):
            for c in range(k):
                p = lo + (idx + (np.array([a, b, c]) + 0.5) / k) * vox
                occ |= fn(torch.tensor(p, dtype=torch.float32)).numpy() > threshold
    return occ.reshape(res)


def test_sphere_occupancy_inside_outside_and_boundary_rule():
    lo, hi, res = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), (20, 20, 20)
    r = 0.55
    fn = sphere_density((0.0, 0.0, 0.0), r)
    occ = extract_occupancy(fn, lo, hi, res, threshold=10.0, subsamples=3)
    assert occ.shape == res and occ.dtype == bool
    centres = (np.stack(np.meshgrid(*[np.arange(n) for n in res], indexing="ij"), -1) + 0.5) * 0.1 - 1.0
    dist = np.linalg.norm(centres, axis=-1)
    half_diag = 0.05 * np.sqrt(3)
    assert occ[dist < r - half_diag].all()  # wholly inside
    assert not occ[dist > r + half_diag].any()  # wholly outside
    # the 3x3x3 rule exactly, boundary voxels included
    np.testing.assert_array_equal(occ, reference_occupancy(fn, lo, hi, res, 10.0, 3))
    # a voxel whose centre misses the density but one corner sub-sample hits it counts as occupied:
    # a tiny sphere around the first sub-sample of voxel (15, 15, 10) (x, y in [0.5, 0.6], z in [0, 0.1])
    fn_small = sphere_density((0.5 + 0.1 / 6, 0.5 + 0.1 / 6, 0.0 + 0.1 / 6), 0.01)
    occ_small = extract_occupancy(fn_small, lo, hi, res, threshold=10.0, subsamples=3)
    assert occ_small.sum() == 1 and occ_small[15, 15, 10]
    occ_one = extract_occupancy(fn_small, lo, hi, res, threshold=10.0, subsamples=1)
    assert not occ_one.any()  # the voxel centre alone misses it


def test_threshold_is_strict_and_chunking_does_not_change_result():
    lo, hi, res = (0.0, 0.0, 0.0), (1.0, 2.0, 1.0), (6, 12, 6)
    fn = sphere_density((0.5, 1.0, 0.5), 0.4, value=10.0)
    assert not extract_occupancy(fn, lo, hi, res, threshold=10.0).any()  # density must exceed the threshold
    fn = sphere_density((0.5, 1.0, 0.5), 0.4, value=11.0)
    big = extract_occupancy(fn, lo, hi, res, threshold=10.0, chunk=1 << 20)
    tiny = extract_occupancy(fn, lo, hi, res, threshold=10.0, chunk=100)  # smaller than one slab
    mid = extract_occupancy(fn, lo, hi, res, threshold=10.0, chunk=6 * 12 * 27 * 2)
    assert big.any()
    np.testing.assert_array_equal(big, tiny)
    np.testing.assert_array_equal(big, mid)


def test_network_index_numbering():
    occ = np.zeros((4, 6, 2), bool)
    occ[3, 0, 1] = True  # cell (1, 0, 0)
    occ[0, 5, 0] = True  # cell (0, 2, 0)
    occ[1, 1, 0] = occ[0, 0, 1] = True  # cell (0, 0, 0), two voxels
    idx = network_index_from_occupancy(occ, (2, 3, 1))
    assert idx.dtype == np.int32 and idx.shape == (2, 3, 1)
    expected = np.full((2, 3, 1), -1, np.int32)
    expected[0, 0, 0], expected[0, 2, 0], expected[1, 0, 0] = 0, 1, 2  # C order of the cells
    np.testing.assert_array_equal(idx, expected)
    with pytest.raises(ValueError):
        network_index_from_occupancy(occ, (3, 3, 1))


def test_estimate_bbox_of_an_analytic_box():
    a = torch.tensor([-0.3, 0.1, -0.5])
    b = torch.tensor([0.4, 0.6, 0.2])

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.where(((x > a) & (x < b)).all(dim=-1), 50.0, 0.0)

    lo, hi = estimate_bbox(fn, (-1, -1, -1), (1, 1, 1), threshold=10.0, margin=0.0, resolution=40)
    vox = 2.0 / 40
    np.testing.assert_allclose(lo, a.numpy(), atol=vox + 1e-6)
    np.testing.assert_allclose(hi, b.numpy(), atol=vox + 1e-6)
    assert np.all(lo <= a.numpy() + 1e-6) and np.all(hi >= b.numpy() - 1e-6)  # never cuts the object
    lo2, hi2 = estimate_bbox(fn, (-1, -1, -1), (1, 1, 1), threshold=10.0, margin=0.1, resolution=40)
    np.testing.assert_allclose(hi2 - lo2, (hi - lo) * 1.2, rtol=1e-9)
    with pytest.raises(ValueError):
        estimate_bbox(lambda x: torch.zeros(x.shape[0]), (-1, -1, -1), (1, 1, 1))
