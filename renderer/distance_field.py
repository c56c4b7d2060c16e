"""The empty-space distance field of the occupancy grid: how far (in voxels) each voxel is from the nearest
voxel that may hold a contributing sample. The marchers (torch and native) jump by it."""

from __future__ import annotations

import torch

DISTANCE_CAP = 24
"""Largest stored empty-space distance, in voxels (a stored value of CAP means "at least CAP")."""


CHUNK_VOXELS = 1 << 22
"""Voxels per slab of the distance transform: its temporaries stay within a few times this many bytes."""


def empty_space_distance(
    valid: torch.Tensor, cap: int = DISTANCE_CAP, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Chebyshev distance in voxels from each voxel to the nearest ``valid`` one, capped at ``cap``.

    Separable: the max-norm distance is one 1D pass per axis, g(i) = min_j max(|i − j|, f(j)) (the passes
    commute with the cap). Each pass runs on slabs of about ``CHUNK_VOXELS`` voxels, so the memory is the
    ``[ox, oy, oz]`` uint8 result plus a few slabs, whatever the grid's size.

    Args:
        valid: ``[ox, oy, oz]`` bool.
        out: optional contiguous ``[ox, oy, oz]`` uint8 tensor to write the result into (and return).

    Returns:
        ``[ox, oy, oz]`` uint8: 0 on valid voxels, d when the nearest valid voxel is d voxels away (in the
        max-norm of index differences), ``cap`` when none is closer than ``cap``.
    """
    dist = torch.empty(valid.shape, dtype=torch.uint8, device=valid.device) if out is None else out
    dist.fill_(cap).masked_fill_(valid, 0)
    ox, oy, oz = dist.shape
    rows = max(1, CHUNK_VOXELS // max(1, oy * oz))
    for x0 in range(0, ox, rows):  # the y and z passes, on x-slabs (contiguous views: in place)
        slab = dist[x0 : x0 + rows]
        slab.copy_(_distance_pass(_distance_pass(slab, 2, cap), 1, cap))
    cols = max(1, CHUNK_VOXELS // max(1, ox * oz))
    for y0 in range(0, oy, cols):  # the x pass, on y-slabs (strided: worked on as a contiguous copy)
        slab = dist[:, y0 : y0 + cols]
        slab.copy_(_distance_pass(slab.contiguous(), 0, cap))
    return dist


def _distance_pass(f: torch.Tensor, axis: int, cap: int) -> torch.Tensor:
    """One axis of the distance transform: g(i) = min over |d| < cap of max(|d|, f(i + d)); a new tensor."""
    g = f.clone()
    n = f.shape[axis]
    for d in range(1, min(cap, n)):
        ahead, behind = g.narrow(axis, d, n - d), g.narrow(axis, 0, n - d)
        torch.minimum(ahead, f.narrow(axis, 0, n - d).clamp_min(d), out=ahead)
        torch.minimum(behind, f.narrow(axis, d, n - d).clamp_min(d), out=behind)
    return g


def contributing_voxels(
    network_index: torch.Tensor, occupancy: torch.Tensor | None, occupancy_res: tuple[int, int, int]
) -> torch.Tensor:
    """``[ox, oy, oz]`` bool: voxels whose network cell has a network (and, given ``occupancy``, are set).

    Args:
        network_index: ``[rx, ry, rz]`` int network id per cell (−1: none); each cell covers
            ``occupancy_res // grid_res`` voxels per axis.
        occupancy: ``[ox, oy, oz]`` bool, or None (ESS off).
    """
    (rx, ry, rz), (ox, oy, oz) = network_index.shape, occupancy_res
    has = (network_index >= 0).reshape(rx, 1, ry, 1, rz, 1)
    if occupancy is None:
        valid = has.expand(rx, ox // rx, ry, oy // ry, rz, oz // rz).contiguous()
    else:  # one copy of the occupancy, masked in place cell by cell through a 6-D view
        valid = occupancy.clone()
        valid.view(rx, ox // rx, ry, oy // ry, rz, oz // rz).logical_and_(has)
    return valid.reshape(ox, oy, oz)
