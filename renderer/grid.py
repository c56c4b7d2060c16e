"""Indexing of the uniform network grid and the occupancy grid over the scene box."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Vec3 = Sequence[float] | torch.Tensor


def _as_vec(v: Vec3, like: torch.Tensor) -> torch.Tensor:
    """``[3]`` tensor with ``like``'s dtype and device."""
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(3)


def cell_index(
    x: torch.Tensor, bbox_min: Vec3, bbox_max: Vec3, res: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """Cell of each point: clamp(floor((x − min) / (max − min) · res), 0, res − 1).

    Args:
        x: ``[N, 3]`` world points.
        bbox_min, bbox_max: the box, 3 floats each.
        res: 3 ints, cells per axis.

    Returns:
        ``[N, 3]`` int64 cell indices (points outside the box are clamped onto the border cells).
    """
    lo = _as_vec(bbox_min, x)
    hi = _as_vec(bbox_max, x)
    r = torch.as_tensor(res, device=x.device).reshape(3).to(torch.int64)
    g = torch.floor((x - lo) / (hi - lo) * r.to(x.dtype)).to(torch.int64)
    return torch.minimum(torch.clamp(g, min=0), r - 1)


def local_coords(x: torch.Tensor, cell: torch.Tensor, bbox_min: Vec3, cell_size: Vec3) -> torch.Tensor:
    """Position inside the cell: u = 2·(x − (min + g·c)) / c − 1, in [−1, 1] for points inside the cell.

    Args:
        x: ``[N, 3]`` world points.
        cell: ``[N, 3]`` int64 cell indices g.
        bbox_min: 3 floats.
        cell_size: 3 floats c = (max − min) / res.

    Returns:
        ``[N, 3]`` local coordinates, same dtype as ``x``.
    """
    lo = _as_vec(bbox_min, x)
    c = _as_vec(cell_size, x)
    return 2.0 * (x - (lo + cell.to(x.dtype) * c)) / c - 1.0


def flat_index(cell: torch.Tensor, res: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """C-order flat index of ``[N, 3]`` int64 cells in a grid of ``res`` = (rx, ry, rz): (ix·ry + iy)·rz + iz.

    Returns:
        ``[N]`` int64.
    """
    r = [int(v) for v in res]
    return (cell[:, 0] * r[1] + cell[:, 1]) * r[2] + cell[:, 2]
