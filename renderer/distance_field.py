"""The empty-space distance field of the occupancy grid: how far (in voxels) each voxel is from the nearest
voxel that may hold a contributing sample. The marchers (torch and native) jump by it."""

from __future__ import annotations

import torch

DISTANCE_CAP = 24
"""Largest stored empty-space distance, in voxels (a stored value of CAP means "at least CAP")."""


def empty_space_distance(valid: torch.Tensor, cap: int = DISTANCE_CAP) -> torch.Tensor:
    """Chebyshev distance in voxels from each voxel to the nearest ``valid`` one, capped at ``cap``.

    Args:
        valid: ``[ox, oy, oz]`` bool.

    Returns:
        ``[ox, oy, oz]`` uint8: 0 on valid voxels, d when the nearest valid voxel is d voxels away (in the
        max-norm of index differences), ``cap`` when none is closer than ``cap``.
    """
    dist = torch.full(valid.shape, cap, dtype=torch.uint8, device=valid.device)
    dist[valid] = 0
    cur = valid.clone()
    for r in range(1, cap):
        for axis in range(3):  # Chebyshev dilation by one voxel, one axis at a time
            grown = cur.clone()
            n = cur.shape[axis]
            if n > 1:
                grown.narrow(axis, 1, n - 1).logical_or_(cur.narrow(axis, 0, n - 1))
                grown.narrow(axis, 0, n - 1).logical_or_(cur.narrow(axis, 1, n - 1))
            cur = grown
        reached = cur & (dist == cap)
        if not bool(reached.any()):  # everything reached, or nothing valid at all
            break
        dist[reached] = r
    return dist


def contributing_voxels(
    network_index: torch.Tensor, occupancy: torch.Tensor | None, occupancy_res: tuple[int, int, int]
) -> torch.Tensor:
    """``[ox, oy, oz]`` bool: voxels whose network cell has a network (and, given ``occupancy``, are set).

    Args:
        network_index: ``[rx, ry, rz]`` int network id per cell (−1: none); each cell covers
            ``occupancy_res // grid_res`` voxels per axis.
        occupancy: ``[ox, oy, oz]`` bool, or None (ESS off).
    """
    ratio = [o // g for o, g in zip(occupancy_res, network_index.shape)]
    has = network_index >= 0
    valid = has.repeat_interleave(ratio[0], 0).repeat_interleave(ratio[1], 1).repeat_interleave(ratio[2], 2)
    if occupancy is not None:
        valid = valid & occupancy
    return valid
