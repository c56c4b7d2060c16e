"""Sparse lattices of the grid teacher: trilinear weights, the support of a mask, and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.teachers.lattice import (
    add_tv_gradient,
    cells_to_lattice_support,
    lattice_corners,
    lattice_neighbour_rows,
    lattice_samples_in_mask,
    mask_lookup,
    sparse_trilinear,
)


def native_library_missing() -> str | None:
    """Why the native kernels cannot run here (a machine without a C++ compiler), None when they can; with
    a compiler a missing library fails the parity test instead (`make test` builds it)."""
    from renderer.native import build
    from renderer.native import library as L

    if build.compiler() is None and not L.status()[0]:  # pragma: no cover - machines without g++/clang++
        return "no C++ compiler here, so the native CPU kernels cannot be built"
    return None


LO = torch.tensor([-1.0, -2.0, 0.0])
HI = torch.tensor([1.0, 2.0, 3.0])


def dense_reference(grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of ``grid [C, X, Y, Z]`` (corners on the box) at ``x [N, 3]`` → ``[N, C]``."""
    u = ((x - LO) / (HI - LO) * 2 - 1).flip(-1).reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(grid[None], u, mode="bilinear", align_corners=True)
    return out.reshape(grid.shape[0], -1).t()


def test_corners_of_a_hand_placed_point():
    dims = (3, 5, 4)  # lattice spacing 1 on every axis
    x = torch.tensor([[-0.75, 0.5, 2.5]])  # lattice coordinates (0.25, 2.5, 2.5)
    flat, w = lattice_corners(x, LO, HI, dims)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    first = (0 * 5 + 2) * 4 + 2  # corner (0, 2, 2)
    assert int(flat[0, 0]) == first
    assert torch.isclose(w[0, 0], torch.tensor(0.75 * 0.5 * 0.5))
    last = (1 * 5 + 3) * 4 + 3  # corner (1, 3, 3)
    assert int(flat[0, 7]) == last
    assert torch.isclose(w[0, 7], torch.tensor(0.25 * 0.5 * 0.5))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_every_corner_index_and_weight_by_the_per_corner_formula(nx, ny, nz, seed):
    gen = torch.Generator().manual_seed(seed)
    x = LO - 0.2 + torch.rand(50, 3, generator=gen) * (HI - LO + 0.4)  # some outside: clamped
    flat, w = lattice_corners(x, LO, HI, (nx, ny, nz))
    dims = torch.tensor([nx, ny, nz])
    f = ((x - LO) / (HI - LO)).clamp(0, 1) * (dims - 1)
    i0 = torch.minimum(f.floor().long(), dims - 2)
    t = f - i0
    for c in range(8):
        a, b, e = c >> 2, (c >> 1) & 1, c & 1  # corner order: x major, z minor
        idx = i0 + torch.tensor([a, b, e])
        assert torch.equal(flat[:, c], (idx[:, 0] * ny + idx[:, 1]) * nz + idx[:, 2])
        wx, wy, wz = (t[:, k] if bit else 1 - t[:, k] for k, bit in enumerate((a, b, e)))
        assert torch.equal(w[:, c], wx * wy * wz)  # (w_x w_y) w_z, bit for bit
    torch.testing.assert_close(w.sum(dim=1), torch.ones(50))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_fully_active_lattice_equals_grid_sample(nx, ny, nz, seed):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(3, nx, ny, nz, generator=gen)
    x = LO + torch.rand(64, 3, generator=gen) * (HI - LO)
    slot = torch.arange(nx * ny * nz)
    flat, w = lattice_corners(x, LO, HI, (nx, ny, nz))
    got = sparse_trilinear(grid.reshape(3, -1).t().contiguous(), slot, flat, w)
    assert torch.allclose(got, dense_reference(grid, x), atol=1e-5)
    got1 = sparse_trilinear(grid[0].reshape(-1), slot, flat, w)
    assert torch.allclose(got1, dense_reference(grid[:1], x)[:, 0], atol=1e-5)


def test_inactive_points_read_zero_and_get_no_gradient():
    dims = (4, 4, 4)
    grid = torch.randn(64)
    active = torch.zeros(64, dtype=torch.bool)
    active[::2] = True
    idx = active.nonzero()[:, 0]
    slot = torch.full((64,), -1, dtype=torch.int64)
    slot[idx] = torch.arange(idx.shape[0])
    table = grid[idx].clone().requires_grad_(True)
    x = LO + torch.rand(200, 3) * (HI - LO)
    flat, w = lattice_corners(x, LO, HI, dims)
    zeroed = torch.where(active, grid, torch.zeros(()))
    expected = dense_reference(zeroed.reshape(1, 4, 4, 4), x)[:, 0]
    got = sparse_trilinear(table, slot, flat, w)
    assert torch.allclose(got, expected, atol=1e-5)
    got.sum().backward()
    assert table.grad is not None and table.grad.shape == table.shape
    # d(sum)/d(row) = the total trilinear weight the points gave that lattice point
    dense_w = torch.zeros(64).index_add_(0, flat.reshape(-1), w.reshape(-1))
    assert torch.allclose(table.grad, dense_w[idx], atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_support_holds_every_corner_of_points_in_the_mask(cells, points, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(cells, cells + 1, cells + 2, generator=gen) < 0.2
    dims = (points, points + 2, points + 1)
    support = cells_to_lattice_support(mask, dims).reshape(-1)
    x = LO + torch.rand(4000, 3, generator=gen) * (HI - LO)
    inside = mask_lookup(mask, x, LO, HI)
    flat, w = lattice_corners(x[inside], LO, HI, dims)
    assert bool(support[flat[w > 0]].all())


@pytest.mark.parametrize("channels", [0, 5])
def test_gradient_into_an_existing_grad_accumulates_in_place(channels: int) -> None:
    """With ``table.grad`` already there (in-place zero_grad) the backward adds into it: same values as the
    fresh gradient, a second use in one graph adds up, and the grad tensor is the same object."""
    dims = (5, 4, 6)
    gen = torch.Generator().manual_seed(3)
    a = 5 * 4 * 6
    shape = (a,) if channels == 0 else (a, channels)
    table = torch.randn(shape, generator=gen).requires_grad_(True)
    slot = torch.arange(a)
    x = LO + torch.rand(300, 3, generator=gen) * (HI - LO)
    flat, w = lattice_corners(x, LO, HI, dims)
    coef = torch.randn((300,) if channels == 0 else (300, channels), generator=gen)

    (sparse_trilinear(table, slot, flat, w) * coef).sum().backward()
    fresh = table.grad.clone()
    grad_obj = table.grad
    grad_obj.zero_()
    (sparse_trilinear(table, slot, flat, w) * coef).sum().backward()
    assert table.grad is grad_obj
    assert torch.allclose(table.grad, fresh, atol=1e-6)
    grad_obj.zero_()
    y = sparse_trilinear(table, slot, flat, w) * coef
    z = sparse_trilinear(table, slot, flat[:100], w[:100]) * coef[:100]
    (y.sum() + z.sum()).backward()
    table2 = table.detach().clone().requires_grad_(True)
    y2 = sparse_trilinear(table2, slot, flat, w) * coef
    z2 = sparse_trilinear(table2, slot, flat[:100], w[:100]) * coef[:100]
    (y2.sum() + z2.sum()).backward()
    assert torch.allclose(table.grad, table2.grad, atol=1e-6)


def test_neighbour_rows_of_a_hand_built_lattice():
    # 2x2x2 lattice with the points (0,0,0), (0,0,1), (0,1,0) and (1,1,1) active (flat 0, 1, 2, 7):
    # axis neighbours among them are 0-1 (z) and 0-2 (y); 7 touches none of the others
    dims = (2, 2, 2)
    active = torch.tensor([0, 1, 2, 7])
    slot = torch.full((8,), -1, dtype=torch.int64)
    slot[active] = torch.arange(4)
    pairs = lattice_neighbour_rows(active, slot, dims)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2)]


def test_neighbour_rows_never_wrap_around_an_axis():
    # along z, point (0, 0, 2) is followed in memory by (0, 1, 0): not neighbours
    dims = (1, 2, 3)
    active = torch.arange(6)
    slot = torch.arange(6)
    pairs = lattice_neighbour_rows(active, slot, dims)
    assert (2, 3) not in set(map(tuple, pairs.tolist()))
    assert pairs.shape[0] == 2 * 2 + 3  # z pairs per row of 3 (2 each, 2 rows) + y pairs (3)


def test_tv_gradient_is_the_gradient_of_the_tv_loss():
    torch.manual_seed(0)
    table = torch.randn(5, 3, requires_grad=True)
    pairs = torch.tensor([[0, 1], [1, 2], [3, 4], [0, 4]])
    loss = 0.3 * ((table[pairs[:, 0]] - table[pairs[:, 1]]) ** 2).sum() / 4
    loss.backward()
    assert table.grad is not None
    expected = table.grad.clone()
    table.grad.fill_(1.0)  # added to, not overwritten
    value = add_tv_gradient(table, pairs, 0.3)
    torch.testing.assert_close(table.grad, expected + 1.0)
    assert float(value) == pytest.approx(float(loss.detach()))


def test_tv_of_two_hand_computed_values():
    table = torch.tensor([1.0, 3.0], requires_grad=True)
    table.grad = torch.zeros(2)
    value = add_tv_gradient(table, torch.tensor([[0, 1]]), 0.5)  # 0.5 * (1 - 3)^2 = 2
    assert float(value) == pytest.approx(2.0)
    torch.testing.assert_close(table.grad, torch.tensor([-2.0, 2.0]))  # ± 2 * 0.5 * (1 - 3)


def test_samples_in_mask_of_a_hand_built_ray() -> None:
    # box [0, 4] x [0, 1] x [0, 1], mask voxels 1 and 3 of 4 along x; a ray along x at y = z = 0.5
    mask = torch.zeros(4, 1, 1, dtype=torch.bool)
    mask[1] = mask[3] = True
    lo, hi = torch.zeros(3), torch.tensor([4.0, 1.0, 1.0])
    o, d = torch.tensor([[-1.0, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    # samples at t = 1.25 + 0.5 (k + ½), x = t - 1 = 0.5 + 0.5k, while t < 5.1
    flat = lattice_samples_in_mask(
        o, d, torch.tensor([1.25]), torch.tensor([5.1]), 0.5, 10, mask, lo, hi, native=False
    )
    # voxel 1 holds x in [1, 2) (k = 1, 2), voxel 3 x in [3, 4) (k = 5, 6); k = 7 is x = 4, on the box's
    # face, so in the last voxel; k = 8 has t = 5.5 >= t1
    assert flat.tolist() == [1, 2, 5, 6, 7]
    two = lattice_samples_in_mask(o.repeat(2, 1), d.repeat(2, 1), torch.tensor([1.25, 9.0]),
                                  torch.tensor([5.1, 5.1]), 0.5, 10, mask, lo, hi, native=False)  # fmt: skip
    assert two.tolist() == [1, 2, 5, 6, 7]  # the second ray starts after it ends: no samples


NATIVE_REASON = native_library_missing()


@pytest.mark.skipif(NATIVE_REASON is not None, reason=NATIVE_REASON or "")
@settings(max_examples=40, deadline=None)
@given(
    st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    st.integers(0, 2**31 - 1),
    st.floats(0.01, 0.5),
)
def test_native_samples_in_mask_equal_the_torch_twin(
    dims: tuple[int, int, int], seed: int, step: float
) -> None:
    from renderer.march import intersect_aabb
    from renderer.native.steps import lattice_samples_in_mask as native

    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(dims, generator=g) < 0.4
    o = (torch.rand(64, 3, generator=g) * 2 - 1) * (HI - LO) + (LO + HI) / 2  # inside and outside the box
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=g), dim=-1)
    t0, t1 = intersect_aabb(o, d, LO, HI)
    t0 = t0.clamp(min=0.0)
    s = int(((t1 - t0).clamp(min=0).max() / step).ceil()) + 1
    args = (o, d, t0, t1, step, s, mask, LO, HI)
    twin = lattice_samples_in_mask(*args, native=False)
    assert torch.equal(native(*args), twin)
    assert torch.equal(lattice_samples_in_mask(*args), twin)  # the default: the kernel where it runs
