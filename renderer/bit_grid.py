"""A 3D bool grid kept as packed bits, one bit per voxel: how the renderer holds occupancy.

Bit ``i`` of the grid (C order over ``[ox, oy, oz]``) is bit ``i % 8`` of byte ``i // 8`` (little bit order,
as ``np.packbits(..., bitorder="little")`` and the ``.kilo`` format store it). Whole-grid work runs on slabs
of x-rows, so no full one-byte-per-voxel copy is ever made (docs/scene-format.md: a file of N voxels costs
N/8 bytes in memory, not N).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SLAB_VOXELS = 1 << 18
"""Voxels per slab of whole-grid work: its temporaries stay within a few times this many bytes."""


@dataclass(frozen=True, eq=False)
class BitGrid:
    """``[ox, oy, oz]`` bool grid stored as ``ceil(ox·oy·oz / 8)`` bytes of packed bits (little bit order)."""

    bits: np.ndarray
    """uint8 ``[ceil(ox·oy·oz / 8)]``; the padding bits after the last voxel are zero."""
    shape: tuple[int, int, int]
    """``(ox, oy, oz)``."""

    @classmethod
    def from_bool(cls, grid: np.ndarray) -> BitGrid:
        """Pack a ``[ox, oy, oz]`` bool array."""
        g = np.asarray(grid)
        if g.ndim != 3:
            raise ValueError(f"a bit grid is 3-D, got shape {list(g.shape)}")
        shape = (int(g.shape[0]), int(g.shape[1]), int(g.shape[2]))
        return cls(np.packbits(g.astype(bool, copy=False).reshape(-1), bitorder="little"), shape)

    @property
    def size(self) -> int:
        """ox·oy·oz."""
        return self.shape[0] * self.shape[1] * self.shape[2]

    def count(self) -> int:
        """Number of set voxels (the padding bits are zero)."""
        b = self.bits
        return sum(int(np.bitwise_count(b[i : i + SLAB_VOXELS]).sum()) for i in range(0, b.size, SLAB_VOXELS))

    def slab(self, x0: int, x1: int) -> np.ndarray:
        """``[x1 − x0, oy, oz]`` bool: the x-rows ``x0 … x1 − 1`` unpacked (a new array)."""
        _, oy, oz = self.shape
        return unpack_range(self.bits, x0 * oy * oz, x1 * oy * oz).reshape(x1 - x0, oy, oz)

    def to_bool(self) -> np.ndarray:
        """``[ox, oy, oz]`` bool, the whole grid unpacked (one byte per voxel: for small grids and tools)."""
        return self.slab(0, self.shape[0])

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        """``np.asarray(grid)`` is the unpacked bool grid."""
        out = self.to_bool()
        return out if dtype is None else out.astype(dtype)  # type: ignore[call-overload]

    def padding_clear(self) -> bool:
        """Whether the bits after the last voxel are zero (the format requires it)."""
        tail = self.bits.size * 8 - self.size
        return not (tail and int(self.bits[-1]) >> (8 - tail))


def unpack_range(bits: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``[stop − start]`` bool: the bits ``start … stop − 1`` of packed little-order ``bits``."""
    b0, b1 = start >> 3, (stop + 7) >> 3
    out = np.unpackbits(bits[b0:b1], bitorder="little").view(np.bool_)
    return out[start - 8 * b0 : stop - 8 * b0]


def slab_rows(shape: tuple[int, int, int], voxels: int | None = None, multiple: int = 1) -> int:
    """x-rows per slab: about ``voxels`` (default ``SLAB_VOXELS``) voxels, a multiple of ``multiple`` and of
    whatever keeps every slab starting on a byte boundary of the packed bits."""
    voxels = SLAB_VOXELS if voxels is None else voxels
    _, oy, oz = shape
    row = oy * oz
    align = 8 // np.gcd(row, 8)
    unit = int(np.lcm(align, multiple))
    return max(unit, voxels // max(1, row) // unit * unit)


def slab_ranges(shape: tuple[int, int, int], rows: int | None = None) -> Iterator[tuple[int, int]]:
    """``(x0, x1)`` of consecutive byte-aligned slabs of x-rows (``rows`` each, default ``slab_rows``)."""
    step = rows or slab_rows(shape)
    for x0 in range(0, shape[0], step):
        yield x0, min(shape[0], x0 + step)


def iter_slabs(grid: BitGrid, rows: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(x0, x1, slab)`` for consecutive byte-aligned slabs of x-rows of ``grid``, unpacked one at a time."""
    for x0, x1 in slab_ranges(grid.shape, rows):
        yield x0, x1, grid.slab(x0, x1)


def write_slab(bits: np.ndarray, shape: tuple[int, int, int], x0: int, slab: np.ndarray) -> None:
    """Pack the bool ``slab`` of x-rows starting at ``x0`` (byte-aligned, ``slab_ranges``) into ``bits``."""
    packed = np.packbits(slab.reshape(-1), bitorder="little")
    b0 = x0 * shape[1] * shape[2] // 8
    bits[b0 : b0 + packed.size] = packed
