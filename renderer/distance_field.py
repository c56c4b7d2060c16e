"""The empty-space distance field of the occupancy grid: how far each block of ``FINE_BLOCK``³ voxels is from
the nearest block with a voxel that may hold a contributing sample. The marchers (torch and native) jump by
it; they read which voxels may contribute from packed bits (`contributing_bits`, `network_bits`). A loaded
scene's tables take an eighth of a byte per voxel beside its own packed occupancy (docs/scene-format.md)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from renderer.bit_grid import BitGrid, iter_slabs, slab_ranges, slab_rows, write_slab

DISTANCE_CAP = 12
"""Largest stored empty-space distance, in blocks (a stored value of CAP means "at least CAP"): 12 blocks of
2³ voxels guarantee 23 voxels of empty space."""


FINE_BLOCK = 2
"""Voxels per edge of a block of the distance field. A ray in a voxel of a block at distance D ≥ 1 is at
least ``voxel_distance(D)`` = 2D − 1 voxels from every contributing voxel (the field's one conversion to
voxels, shared by every marcher)."""


def voxel_distance(block_distance: int) -> int:
    """Chebyshev distance in voxels that a block distance D guarantees: max(0, 2D − 1) for blocks of 2³.

    A contributing voxel lies in a block ≥ D blocks away: ≥ (D − 1) whole blocks plus one voxel from any voxel
    of this block."""
    return max(0, FINE_BLOCK * block_distance - (FINE_BLOCK - 1))


CHUNK_VOXELS = 1 << 18
"""Voxels per slab of the distance transform: its temporaries stay within a few times this many bytes."""
SLAB_BLOCKS = 1 << 18
"""Blocks per slab when the field is coarsened (``coarsen_blocks``)."""


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
    return distance_transform_(dist, cap)


def distance_transform_(dist: torch.Tensor, cap: int = DISTANCE_CAP) -> torch.Tensor:
    """``empty_space_distance`` in place on ``[ox, oy, oz]`` uint8 holding 0 on valid voxels and ``cap``
    elsewhere; returns ``dist``."""
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


def _networked(network_index: np.ndarray, shape: tuple[int, int, int]) -> Callable[[int, int], np.ndarray]:
    """``cells(x0, x1)``: ``[x1 − x0, oy, oz]`` bool, whether each voxel's network cell has a network."""
    has = np.asarray(network_index) >= 0
    f = [s // h for s, h in zip(shape, has.shape)]
    return lambda x0, x1: has[np.arange(x0, x1) // f[0]].repeat(f[1], axis=1).repeat(f[2], axis=2)


def contributing_bits(network_index: np.ndarray, occupancy: BitGrid, *, in_place: bool = False) -> np.ndarray:
    """Packed bits (`BitGrid` layout) of the set voxels of ``occupancy`` whose network cell has a network:
    the marchers' voxel table with ESS on. Made slab by slab.

    When no set voxel lies in a cell without a network (every scene the trainer writes, and every loaded
    scene: `renderer.scene.load_scene` clears them in place) the occupancy's own bits are returned, not a
    copy; otherwise a masked copy, or, with ``in_place``, the occupancy's bits masked in place.

    Args:
        network_index: ``[rx, ry, rz]`` int network id per cell (−1: none).
        occupancy: ``[ox, oy, oz]``, a multiple of the cell grid on each axis.
    """
    cells = _networked(network_index, occupancy.shape)
    if bool((np.asarray(network_index) >= 0).all()) or not any(
        bool((slab & ~cells(x0, x1)).any()) for x0, x1, slab in iter_slabs(occupancy)
    ):
        return occupancy.bits
    out = occupancy.bits if in_place else np.empty_like(occupancy.bits)
    for x0, x1, slab in iter_slabs(occupancy):
        write_slab(out, occupancy.shape, x0, slab & cells(x0, x1))
    return out


def network_bits(network_index: np.ndarray, occupancy_res: tuple[int, int, int]) -> np.ndarray:
    """Packed bits (`BitGrid` layout) of the voxels whose network cell has a network: the marchers' voxel
    table with ESS off. Made slab by slab.

    Args:
        network_index: ``[rx, ry, rz]`` int network id per cell (−1: none).
        occupancy_res: ``(ox, oy, oz)``, a multiple of the cell grid on each axis.
    """
    cells = _networked(network_index, occupancy_res)
    out = np.empty((int(np.prod(occupancy_res)) + 7) // 8, dtype=np.uint8)
    for x0, x1 in slab_ranges(occupancy_res):
        write_slab(out, occupancy_res, x0, cells(x0, x1))
    return out


def block_distance_field(
    valid: BitGrid, block: int = FINE_BLOCK, cap: int = DISTANCE_CAP, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``[⌈ox/b⌉, ⌈oy/b⌉, ⌈oz/b⌉]`` uint8 ``empty_space_distance`` over blocks of ``block``³ voxels, in blocks
    (a block may contribute when any of its voxels is set in ``valid``; the grid is padded with empty voxels
    to whole blocks). The only memory besides the result (``out``, a contiguous uint8 CPU tensor of that
    many elements, when given) is a slab of the grid."""
    nb = [-(-s // block) for s in valid.shape]
    dist = torch.empty(nb, dtype=torch.uint8) if out is None else out.view(nb)
    dist.fill_(cap)
    for x0, _, slab in iter_slabs(valid, slab_rows(valid.shape, multiple=block)):
        any_set = _blocks_any(slab, block, nb[1:])
        dist[x0 // block : x0 // block + any_set.shape[0]].masked_fill_(torch.from_numpy(any_set), 0)
    return distance_transform_(dist, cap)


def _blocks_any(slab: np.ndarray, block: int, nb_yz: list[int]) -> np.ndarray:
    """``[⌈r/b⌉, by, bz]`` bool: which blocks of a ``[r, oy, oz]`` slab hold a set voxel (an OR of strided
    views per axis: a multi-axis ``any`` is several times slower)."""
    r, oy, oz = slab.shape
    rb = -(-r // block)
    shape = (rb * block, nb_yz[0] * block, nb_yz[1] * block)
    if slab.shape != shape:
        padded = np.zeros(shape, dtype=bool)
        padded[:r, :oy, :oz] = slab
        slab = padded
    for axis in range(3):
        parts = [slab[(slice(None),) * axis + (slice(i, None, block),)] for i in range(block)]
        out = parts[0].copy()
        for p in parts[1:]:
            out |= p
        slab = out
    return slab


def coarsen_blocks(field: torch.Tensor, factor: int) -> torch.Tensor:
    """``[⌈bx/f⌉, ⌈by/f⌉, ⌈bz/f⌉]`` bool: which groups of ``factor``³ blocks of a CPU distance field
    ``[bx, by, bz]`` hold a block at distance 0 (one that may contribute). Slab by slab (``_blocks_any``): no
    full-size temporary."""
    b = field.shape
    c = [-(-s // factor) for s in b]
    out = torch.zeros(c, dtype=torch.bool)
    rows = max(1, SLAB_BLOCKS // max(1, b[1] * b[2]) // factor) * factor
    for x0 in range(0, b[0], rows):
        group = _blocks_any((field[x0 : x0 + rows] == 0).numpy(), factor, c[1:])
        out[x0 // factor : x0 // factor + group.shape[0]] = torch.from_numpy(group)
    return out
