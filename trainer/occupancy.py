"""Occupancy extraction: the network grid over the scene box and the fine occupancy grid from a density.

The network grid has ``longest_axis_cells`` (16) cubic cells along the box's longest axis (lego: 9×16×10);
the box grows symmetrically to a whole number of cells. The occupancy grid is ``occupancy_factor`` (16) times
finer per axis (lego: 144×256×160). A voxel is occupied where the density exceeds a threshold (the official
code uses 10) at any of its 3×3×3 sub-samples, which sit at the centres of the voxel's 3×3×3 sub-voxels
(offsets (j + ½)/3 of the voxel side, j = 0, 1, 2). Cells without an occupied voxel get no network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from renderer.scene_checks import MAX_GRID_RES, MAX_NETWORKS, MAX_OCCUPANCY_VOXELS
from trainer.settings import setting

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""σ = f(x): world points ``[N, 3]`` → densities ``[N]`` (world units⁻¹)."""


def _icbrt(n: int) -> int:
    """The largest k with k³ <= n."""
    k = round(n ** (1 / 3))
    while k**3 > n:
        k -= 1
    while (k + 1) ** 3 <= n:
        k += 1
    return k


@dataclass
class OccupancyConfig:
    """Settings of the network grid and occupancy extraction."""

    threshold: float = setting(10.0, gt=0, le=1e6)
    """A voxel is occupied where σ exceeds this at any sub-sample (the official KiloNeRF value)."""
    subsamples: int = setting(3, ge=1, le=8)
    """Sub-samples per voxel and axis (3 → 27 per voxel)."""
    longest_axis_cells: int = setting(16, ge=1, le=MAX_GRID_RES)
    """Network cells along the longest axis of the box (cells are cubic)."""
    occupancy_factor: int = setting(16, ge=1, le=256)
    """Occupancy voxels per network cell and axis."""
    bbox_margin: float = setting(0.05, ge=0, le=10)
    """Margin added on each side of an estimated box, as a fraction of its size."""
    bbox_search_res: int = setting(128, ge=1, le=1024)
    """Voxels along the longest axis of the search box when estimating a box from the density."""
    chunk: int = setting(1 << 20, ge=1024, le=2**30, anytime=True)
    """Density queries per batch (bounds memory)."""

    def relations(self) -> list[tuple[str, str]]:
        """Grids the scene format accepts for any box: at most ``longest_axis_cells``³ networks and
        (``longest_axis_cells`` × ``occupancy_factor``)³ occupancy voxels."""
        out = []
        if self.longest_axis_cells**3 > MAX_NETWORKS:
            limit = _icbrt(MAX_NETWORKS)
            out.append(
                (
                    "longest_axis_cells",
                    f"must be <= {limit} (a cubic box would need more than "
                    f"{MAX_NETWORKS} networks), got {self.longest_axis_cells}",
                )
            )
        side = self.longest_axis_cells * self.occupancy_factor
        if side**3 > MAX_OCCUPANCY_VOXELS:
            out.append(
                (
                    "occupancy_factor",
                    f"x longest_axis_cells must be <= "
                    f"{_icbrt(MAX_OCCUPANCY_VOXELS)} (the occupancy grid of a cubic box would "
                    f"exceed {MAX_OCCUPANCY_VOXELS} voxels), got {self.occupancy_factor} x "
                    f"{self.longest_axis_cells} = {side}",
                )
            )
        return out


def network_grid_for_bbox(
    bbox_min: Sequence[float] | np.ndarray, bbox_max: Sequence[float] | np.ndarray, longest: int = 16
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """The network grid: ``longest`` cubic cells on the longest axis, the box grown symmetrically to fit.

    Each axis gets ceil(extent / c) cells with c = longest extent / ``longest``; the box is widened about its
    centre to exactly that many cells, so every cell has side c.

    Returns:
        (grid_res (rx, ry, rz), bbox_min ``[3]`` float64, bbox_max ``[3]`` float64).
    """
    lo = np.asarray(bbox_min, dtype=np.float64).reshape(3)
    hi = np.asarray(bbox_max, dtype=np.float64).reshape(3)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ValueError(f"invalid box: min {lo.tolist()} max {hi.tolist()} (need finite, min < max)")
    if longest < 1:
        raise ValueError(f"longest must be >= 1, not {longest}")
    ext = hi - lo
    cell = float(ext.max()) / longest
    res = np.maximum(1, np.ceil(ext / cell - 1e-9)).astype(np.int64)
    res[int(np.argmax(ext))] = longest
    centre = 0.5 * (lo + hi)
    half = 0.5 * res * cell
    return (int(res[0]), int(res[1]), int(res[2])), centre - half, centre + half


def _voxel_axes(lo: np.ndarray, hi: np.ndarray, res: Sequence[int]) -> list[np.ndarray]:
    return [lo[a] + (np.arange(res[a]) + 0.5) * (hi[a] - lo[a]) / res[a] for a in range(3)]


def extract_occupancy(
    density_fn: DensityFn,
    bbox_min: Sequence[float] | np.ndarray,
    bbox_max: Sequence[float] | np.ndarray,
    occupancy_res: Sequence[int],
    threshold: float = 10.0,
    subsamples: int = 3,
    chunk: int = 1 << 20,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Occupied voxels: σ > ``threshold`` at any of the ``subsamples``³ sub-voxel centres of each voxel.

    Evaluated slab by slab along x (about ``chunk`` density queries at a time) under ``torch.no_grad``, so
    memory stays bounded whatever the grid size.

    Args:
        density_fn: σ(x), ``[N, 3]`` → ``[N]``.
        bbox_min, bbox_max: the box the grid spans.
        occupancy_res: (ox, oy, oz) voxels per axis.
        progress: show a tqdm bar.

    Returns:
        ``[ox, oy, oz]`` bool.
    """
    lo = np.asarray(bbox_min, dtype=np.float64).reshape(3)
    hi = np.asarray(bbox_max, dtype=np.float64).reshape(3)
    ox, oy, oz = (int(v) for v in occupancy_res)
    vox = (hi - lo) / np.array([ox, oy, oz])
    k = int(subsamples)
    offs = (np.arange(k) + 0.5) / k  # sub-voxel centres, fractions of a voxel
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), axis=-1).reshape(-1, 3) * vox  # [k³, 3]
    sub_t = torch.as_tensor(sub, dtype=torch.float32, device=device)
    ys = torch.as_tensor(lo[1] + np.arange(oy) * vox[1], dtype=torch.float32, device=device)
    zs = torch.as_tensor(lo[2] + np.arange(oz) * vox[2], dtype=torch.float32, device=device)
    gy, gz = torch.meshgrid(ys, zs, indexing="ij")
    plane = torch.stack([torch.zeros_like(gy), gy, gz], dim=-1).reshape(-1, 3)  # voxel corners of one x slab
    per_slab = plane.shape[0] * sub_t.shape[0]
    slabs = max(1, chunk // max(1, per_slab))
    out = np.zeros((ox, oy, oz), dtype=bool)
    it = range(0, ox, slabs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="occupancy", unit="slab", total=math.ceil(ox / slabs))
    with torch.no_grad():
        for x0 in it:
            xs = torch.arange(x0, min(ox, x0 + slabs), device=device)
            corners = plane[None].repeat(len(xs), 1, 1)
            corners[..., 0] = (lo[0] + xs.to(torch.float32) * vox[0])[:, None]
            corners = corners.reshape(-1, 3)  # [V, 3] voxel min corners
            if per_slab * len(xs) <= chunk:
                pts = (corners[:, None, :] + sub_t[None]).reshape(-1, 3)
                occ = (density_fn(pts).reshape(-1, sub_t.shape[0]) > threshold).any(dim=1)
            else:  # one slab is more than a chunk: one sub-sample offset at a time
                occ = torch.zeros(corners.shape[0], dtype=torch.bool, device=device)
                for s in range(sub_t.shape[0]):
                    for c0 in range(0, corners.shape[0], chunk):
                        pts = corners[c0 : c0 + chunk] + sub_t[s]
                        occ[c0 : c0 + chunk] |= density_fn(pts).reshape(-1) > threshold
            out[x0 : x0 + len(xs)] = occ.reshape(len(xs), oy, oz).cpu().numpy()
    return out


def network_index_from_occupancy(occ: np.ndarray, grid_res: Sequence[int]) -> np.ndarray:
    """Network ids per cell: −1 where the cell has no occupied voxel, else 0..M−1 in C order of the cells.

    Args:
        occ: ``[ox, oy, oz]`` bool, each ``o`` a multiple of the matching ``grid_res`` entry.
        grid_res: (rx, ry, rz).

    Returns:
        ``[rx, ry, rz]`` int32.
    """
    rx, ry, rz = (int(v) for v in grid_res)
    ox, oy, oz = occ.shape
    if ox % rx or oy % ry or oz % rz:
        raise ValueError(f"occupancy shape {occ.shape} is not a multiple of the network grid {(rx, ry, rz)}")
    cells = occ.reshape(rx, ox // rx, ry, oy // ry, rz, oz // rz).any(axis=(1, 3, 5))
    index = np.full((rx, ry, rz), -1, dtype=np.int32)
    index[cells] = np.arange(int(cells.sum()), dtype=np.int32)
    return index


def estimate_bbox(
    density_fn: DensityFn,
    search_min: Sequence[float] | np.ndarray,
    search_max: Sequence[float] | np.ndarray,
    threshold: float = 10.0,
    margin: float = 0.05,
    *,
    resolution: int = 128,
    subsamples: int = 2,
    chunk: int = 1 << 20,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Tight box around where σ > ``threshold`` in the search box, grown by ``margin`` of its size per side.

    The search box is sampled on cubic voxels (``resolution`` along its longest axis, ``subsamples``³ per
    voxel); the box of the occupied voxels is clipped to the search box after the margin.

    Returns:
        (bbox_min ``[3]``, bbox_max ``[3]``) float64; ValueError when nothing exceeds the threshold.
    """
    lo = np.asarray(search_min, dtype=np.float64).reshape(3)
    hi = np.asarray(search_max, dtype=np.float64).reshape(3)
    ext = hi - lo
    res = np.maximum(1, np.round(ext / (ext.max() / resolution))).astype(int)
    occ = extract_occupancy(density_fn, lo, hi, res.tolist(), threshold, subsamples, chunk, device=device)
    if not occ.any():
        raise ValueError(f"no density above {threshold} inside the search box {lo.tolist()}..{hi.tolist()}")
    vox = ext / res
    idx = np.argwhere(occ)
    bmin = lo + idx.min(axis=0) * vox
    bmax = lo + (idx.max(axis=0) + 1) * vox
    pad = margin * (bmax - bmin)
    return np.maximum(bmin - pad, lo), np.minimum(bmax + pad, hi)


def occupancy_grid_for_bbox(
    bbox_min: Sequence[float] | np.ndarray, bbox_max: Sequence[float] | np.ndarray, cfg: OccupancyConfig
) -> tuple[tuple[int, int, int], tuple[int, int, int], np.ndarray, np.ndarray]:
    """Network grid and occupancy resolution for a box: (grid_res, occupancy_res, bbox_min, bbox_max)."""
    grid_res, lo, hi = network_grid_for_bbox(bbox_min, bbox_max, cfg.longest_axis_cells)
    f = cfg.occupancy_factor
    return grid_res, (grid_res[0] * f, grid_res[1] * f, grid_res[2] * f), lo, hi
