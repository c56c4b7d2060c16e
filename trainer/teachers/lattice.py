"""Voxel lattices over a box: cell lookups, binary masks, and sparse trilinear interpolation.

Two kinds of grids share a box ``[bbox_min, bbox_max]``:

- a *mask* of ``dims`` cells (voxels), looked up at the nearest cell;
- a *lattice* of ``dims`` points whose outermost points lie on the box's faces (``align_corners``), with
  values stored only at its *active* points: a table ``[A, C]`` and a slot map ``[X·Y·Z]`` from lattice
  point to table row (−1 where inactive, read as 0). A point's value is the trilinear blend of its cell's
  8 corners (:func:`lattice_corners`, :func:`sparse_trilinear`); the backward pass only touches the rows
  used, so optimisers update the active points alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def voxel_grid_dims(bbox_min: Any, bbox_max: Any, res: int) -> tuple[tuple[int, int, int], float]:
    """Lattice of about ``res³`` cubic voxels over the box: (dims per axis, voxel size)."""
    ext = np.asarray(bbox_max, dtype=np.float64) - np.asarray(bbox_min, dtype=np.float64)
    v = float((np.prod(ext) / res**3) ** (1.0 / 3.0))
    dims = tuple(max(2, int(round(e / v))) for e in ext)
    return (dims[0], dims[1], dims[2]), v


def mask_lookup(
    mask: torch.Tensor, x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """Nearest-voxel lookup of a bool grid ``[X, Y, Z]`` at ``x`` ``[N, 3]``; False outside."""
    f = _voxel_coords(mask.shape, x, bbox_min, bbox_max)
    dims = torch.tensor(mask.shape, device=x.device)
    inside = ((f >= 0) & (f <= dims.to(x.dtype))).all(dim=-1)
    return mask.reshape(-1)[_flat_voxel(mask.shape, f, dims)] & inside


def lattice_samples_in_mask(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    step: float,
    s: int,
    mask: torch.Tensor,
    bbox_min: torch.Tensor,
    bbox_max: torch.Tensor,
    *,
    native: bool = True,
) -> torch.Tensor:
    """Flat indices ``[K]`` int64 (``r·s + k``, ascending) of the lattice samples ``t = t0 + (k + ½)·step``
    with ``t < t1`` and ``k < s`` of rays ``origins``/``dirs`` ``[R, 3]`` (``t0``, ``t1`` ``[R]``) whose
    points lie in a True voxel of ``mask`` (:func:`mask_lookup`): the teacher's samples, empty space skipped.

    With ``native`` (the default), float32 CPU tensors go to the native kernel of the same contract when
    the library is built (``renderer.native.steps.lattice_samples_in_mask``: no ``[R, s]`` temporaries);
    otherwise, and with ``native=False``, this pure-torch twin runs.
    """
    if native and origins.device.type == "cpu" and origins.dtype == torch.float32 and _native_ready():
        from renderer.native.steps import lattice_samples_in_mask as kernel

        return kernel(origins, dirs, t0, t1, step, s, mask, bbox_min, bbox_max)
    t = t0[:, None] + (torch.arange(s, device=origins.device, dtype=origins.dtype) + 0.5) * step
    flat = (t < t1[:, None]).reshape(-1).nonzero()[:, 0]
    ray = flat // s
    pts = origins[ray] + t.reshape(-1)[flat, None] * dirs[ray]
    return flat[mask_lookup(mask, pts, bbox_min, bbox_max)]


def _native_ready() -> bool:
    from renderer.native.library import status

    return status()[0]


def _voxel_coords(
    mask_shape: tuple[int, ...], x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """``[N, 3]`` positions of points ``x [N, 3]`` in voxel units of a ``mask_shape`` grid over the box."""
    dims = torch.tensor(mask_shape, device=x.device, dtype=x.dtype)
    return (x - bbox_min) / (bbox_max - bbox_min) * dims


def _flat_voxel(mask_shape: tuple[int, ...], f: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """Flat C-order index ``[N]`` of the voxel holding voxel-unit positions ``f [N, 3]`` (clamped)."""
    i = torch.minimum(f.floor().long().clamp(min=0), dims - 1)
    return (i[:, 0] * mask_shape[1] + i[:, 1]) * mask_shape[2] + i[:, 2]


def mask_voxel_index(
    mask_shape: tuple[int, ...], x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """Flat index ``[N]`` of the mask voxel containing each point ``[N, 3]`` (clamped onto the border)."""
    f = _voxel_coords(mask_shape, x, bbox_min, bbox_max)
    return _flat_voxel(mask_shape, f, torch.tensor(mask_shape, device=x.device))


def voxel_centres(bbox_min: Any, bbox_max: Any, dims: tuple[int, int, int]) -> torch.Tensor:
    """Centres ``[X·Y·Z, 3]`` (C order) of the voxels of a ``dims`` grid spanning the box."""
    lo = torch.as_tensor(bbox_min, dtype=torch.float32)
    hi = torch.as_tensor(bbox_max, dtype=torch.float32)
    axes = [
        lo[a] + (torch.arange(dims[a], dtype=torch.float32) + 0.5) * (hi[a] - lo[a]) / dims[a]
        for a in range(3)
    ]
    g = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(g, dim=-1).reshape(-1, 3)


def lattice_points(bbox_min: Any, bbox_max: Any, dims: tuple[int, int, int]) -> torch.Tensor:
    """World positions ``[X·Y·Z, 3]`` (C order) of the points of a ``dims`` lattice whose outermost points lie
    on the box's faces (``align_corners``)."""
    lo = torch.as_tensor(bbox_min, dtype=torch.float64)
    hi = torch.as_tensor(bbox_max, dtype=torch.float64)
    axes = [
        lo[a] + torch.arange(dims[a], dtype=torch.float64) * (hi[a] - lo[a]) / (dims[a] - 1) for a in range(3)
    ]
    g = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(g, dim=-1).reshape(-1, 3).float()


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a bool grid ``[X, Y, Z]`` by a cube of half-side ``radius`` voxels."""
    if radius <= 0:
        return mask
    m = mask[None, None].float()
    return F.max_pool3d(m, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.int64)
"""The 8 corner offsets of a lattice cell, ``[8, 3]``."""


def lattice_corners(
    x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor, dims: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``[N, 8]`` of the lattice points around each point ``x [N, 3]`` and their trilinear
    weights ``[N, 8]`` (points outside the box are clamped onto it), corners in `_CORNERS` order.

    The indices are the cell's base index plus one constant offset per corner, and the weights the outer
    product of the per-axis pairs (1 − t, t): each corner's weight is (w_x · w_y) · w_z, the product the
    three factors give in axis order.
    """
    d = torch.tensor(dims, device=x.device)
    f = ((x - bbox_min) / (bbox_max - bbox_min)).clamp(0, 1) * (d - 1).to(x.dtype)
    i0 = torch.minimum(f.floor().long(), d - 2)
    t = f - i0.to(x.dtype)  # [N, 3] in [0, 1]
    base = (i0[:, 0] * dims[1] + i0[:, 1]) * dims[2] + i0[:, 2]
    c = _CORNERS.to(x.device)
    offsets = (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]  # [8]
    pairs = torch.stack((1 - t, t), dim=1)  # [N, 2 (corner 0 or 1), 3 (axis)]
    wxy = pairs[:, :, None, 0] * pairs[:, None, :, 1]  # [N, 2, 2]
    w = (wxy[:, :, :, None] * pairs[:, None, None, :, 2]).reshape(-1, 8)
    return base[:, None] + offsets[None], w


class _WeightedGather(torch.autograd.Function):
    """``out[n] = Σ_k w[n, k] · table[rows[n, k]]`` for a table ``[A]`` or ``[A, C]``: the forward pass is
    one ``embedding_bag``; the backward pass is one row-wise ``index_add_``.

    The gradient has the whole table's size (~45 MB for lego's feature lattice), and a fresh tensor per step
    costs more in page faults than the scatter itself. So when the table is a leaf whose ``.grad`` already
    exists (the optimiser zeroes grads in place, ``zero_grad(set_to_none=False)``, as `train_teacher` does),
    the backward pass adds straight into ``table.grad`` and hands autograd no tensor (several uses in one
    graph simply add up). Otherwise it returns a fresh gradient, as usual.
    """

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``table [A]`` or ``[A, C]``, ``rows`` and ``w [N, 8]`` → ``[N, 1]`` or ``[N, C]``."""
        ctx.save_for_backward(rows, w)
        ctx.table = table
        t2 = table[:, None] if table.dim() == 1 else table
        return F.embedding_bag(rows, t2, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        rows, w = ctx.saved_tensors
        table = ctx.table
        c = grad.shape[1]
        src = (grad[:, None, :] * w[:, :, None]).reshape(-1, c)  # [N·8, C]
        g = table.grad if table.is_leaf else None
        in_place = (
            g is not None and g.shape == table.shape and g.is_contiguous() and not torch.is_grad_enabled()
        )
        out = g if in_place else grad.new_zeros(table.shape)
        assert out is not None
        out.view(table.shape[0], c).index_add_(0, rows.reshape(-1), src)
        return (None if in_place else out), None, None


def sparse_trilinear(
    table: torch.Tensor, slot: torch.Tensor, corners: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Trilinear blend of a sparse lattice: table ``[A]`` or ``[A, C]``, slot ``[V]`` (−1 inactive), corners
    and weights ``[N, 8]`` from :func:`lattice_corners` → ``[N]`` or ``[N, C]``. Inactive corners read 0;
    the gradient reaches only the rows read."""
    s = slot[corners]  # [N, 8]
    w = weights * (s >= 0).to(weights.dtype)
    rows = s.clamp(min=0)
    t2 = table[:, None] if table.dim() == 1 else table
    if corners.shape[0] == 0:
        out = t2.new_zeros(0, t2.shape[1])
    elif table.requires_grad and torch.is_grad_enabled():
        out = _WeightedGather.apply(table, rows, w)
    else:
        out = F.embedding_bag(rows, t2, per_sample_weights=w, mode="sum")
    return out[:, 0] if table.dim() == 1 else out


def cells_to_lattice_support(mask: torch.Tensor, dims: tuple[int, int, int]) -> torch.Tensor:
    """Lattice points (``dims``, bool) that are a corner of a lattice cell overlapping a true mask voxel.

    A point inside mask voxel ``k`` of an axis with ``M`` voxels lies at lattice coordinate
    ``f ∈ [k, k+1]·(L−1)/M``; its corners are ``floor(f)`` and ``floor(f)+1``, so the voxel needs the points
    ``floor(k·(L−1)/M)`` … ``ceil((k+1)·(L−1)/M)``. Separable per axis (three small matrix products).
    """
    m = mask.float()
    for axis in range(3):
        n_cells, n_pts = mask.shape[axis], dims[axis]
        k = torch.arange(n_cells, dtype=torch.float64)
        lo = torch.floor(k * (n_pts - 1) / n_cells).long()
        hi = torch.minimum(torch.ceil((k + 1) * (n_pts - 1) / n_cells).long(), torch.tensor(n_pts - 1))
        p = torch.arange(n_pts)[:, None]
        touch = ((p >= lo[None]) & (p <= hi[None])).float().to(m.device)  # [L, M]
        m = torch.tensordot(m, touch, dims=([0], [1]))  # contracts the current first axis, appends L
    return m > 0


def lattice_neighbour_rows(
    active: torch.Tensor, slot: torch.Tensor, dims: tuple[int, int, int]
) -> torch.Tensor:
    """Table rows ``[P, 2]`` of every pair of active lattice points that are neighbours along an axis.

    ``active [A]`` holds the flat lattice index of each table row and ``slot [X·Y·Z]`` the inverse map
    (−1 where inactive); each pair appears once, ordered (lower, upper) along its axis.
    """
    x = active // (dims[1] * dims[2])
    y = (active // dims[2]) % dims[1]
    z = active % dims[2]
    rows = torch.arange(active.shape[0], device=active.device)
    pairs = []
    for coord, n, stride in ((x, dims[0], dims[1] * dims[2]), (y, dims[1], dims[2]), (z, dims[2], 1)):
        inner = coord < n - 1
        nb = slot[(active + stride).clamp(max=slot.shape[0] - 1)]
        ok = inner & (nb >= 0)
        pairs.append(torch.stack([rows[ok], nb[ok]], dim=1))
    return torch.cat(pairs)


@torch.no_grad()
def add_tv_gradient(table: torch.Tensor, pairs: torch.Tensor, weight: float) -> torch.Tensor:
    """Add the gradient of the total-variation loss ``weight · Σ_pairs |t_a − t_b|² / P`` of a table
    ``[A]`` or ``[A, C]`` over neighbour ``pairs [P, 2]`` (:func:`lattice_neighbour_rows`) straight into
    ``table.grad`` (in place, like `_WeightedGather`); returns the loss as a 0-d tensor (read without a
    device sync in the training loop)."""
    if pairs.shape[0] == 0 or weight == 0 or table.grad is None:
        return table.new_zeros(())
    t2 = table.detach().reshape(table.shape[0], -1)
    a, b = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
    diff = t2.index_select(0, a) - t2.index_select(0, b)
    scale = weight / pairs.shape[0]
    loss = scale * (diff * diff).sum()
    g = table.grad.view(table.shape[0], -1)
    diff.mul_(2.0 * scale)
    g.index_add_(0, a, diff)
    g.index_add_(0, b, diff.neg_())
    return loss
