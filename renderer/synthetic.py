"""Synthetic scenes for tests and benchmarks: random scenes of any layout and a lego-like scene."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from renderer.bit_grid import BitGrid
from renderer.networks import NetworkSpec, init_weights
from renderer.scene import Scene

LEGO_BBOX_MIN = (-0.67, -1.2, -0.37)
LEGO_BBOX_MAX = (0.67, 1.2, 1.03)
LEGO_GRID_RES = (9, 16, 10)
LEGO_OCCUPANCY_RES = (144, 256, 160)


def _cast(weights: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """``weights`` as float16 or float32 CPU tensors."""
    dt = {"float16": torch.float16, "float32": torch.float32}[dtype]
    return {k: v.to(dt).contiguous() for k, v in weights.items()}


def random_network_index(
    grid_res: Sequence[int], empty_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """int32 ``[rx, ry, rz]``: about ``empty_fraction`` of cells −1, the rest a permutation of 0..M−1."""
    n = int(np.prod(grid_res))
    has = rng.random(n) >= empty_fraction
    if not has.any():
        has[rng.integers(n)] = True
    index = np.full(n, -1, dtype=np.int32)
    index[has] = rng.permutation(int(has.sum())).astype(np.int32)
    return index.reshape(tuple(grid_res))


def random_scene(
    grid_res: Sequence[int] = (3, 2, 4),
    occupancy_factor: Sequence[int] = (2, 3, 2),
    *,
    bbox_min: Sequence[float] = (-1.0, -0.6, -0.8),
    bbox_max: Sequence[float] = (1.0, 0.7, 0.9),
    seed: int = 0,
    dtype: str = "float32",
    empty_cell_fraction: float = 0.25,
    occupied_fraction: float = 0.6,
    hidden: int = 8,
    pos_freqs: int = 3,
    dir_freqs: int = 2,
    step_size: float | None = None,
    density_bias: float = 2.0,
    density_activation: str = "relu",
    density_scale: float = 1.0,
    background: Sequence[float] = (0.2, 0.4, 0.9),
) -> Scene:
    """A random scene: random network placement (some cells empty), random occupancy, random weights.

    Densities are shifted by ``density_bias`` so rays are semi-transparent (a ray accumulates a mix of
    colours instead of stopping at once). ``step_size`` defaults to 1/20 of the smallest box side.
    """
    rng = np.random.default_rng(seed)
    grid = tuple(int(v) for v in grid_res)
    occ_res = tuple(g * int(f) for g, f in zip(grid, occupancy_factor))
    index = random_network_index(grid, empty_cell_fraction, rng)
    m = int((index >= 0).sum())
    occupancy = rng.random(occ_res) < occupied_fraction
    f = [o // g for o, g in zip(occ_res, grid)]
    occupancy &= (index >= 0).repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)  # as the trainer writes them
    lo = tuple(float(v) for v in bbox_min)
    hi = tuple(float(v) for v in bbox_max)
    spec = NetworkSpec(lo, hi, grid, pos_freqs, dir_freqs, hidden, density_activation, density_scale)  # type: ignore[arg-type]
    weights = init_weights(m, spec, seed=seed + 1)
    weights["l0.weight"] *= 2.0  # more spatial variation inside each cell
    weights["l2.bias"][:, 0] += density_bias
    weights["l4.weight"] *= 3.0  # colours spread over (0, 1)
    if step_size is None:
        step_size = float(min(h - l for l, h in zip(lo, hi))) / 20.0
    return Scene(
        bbox_min=lo,  # type: ignore[arg-type]
        bbox_max=hi,  # type: ignore[arg-type]
        grid_res=grid,  # type: ignore[arg-type]
        occupancy_res=occ_res,  # type: ignore[arg-type]
        network_index=index,
        occupancy=BitGrid.from_bool(occupancy),
        weights=_cast(weights, dtype),
        pos_freqs=pos_freqs,
        dir_freqs=dir_freqs,
        hidden=hidden,
        step_size=float(step_size),
        background=tuple(float(v) for v in background),  # type: ignore[arg-type]
        density_activation=density_activation,
        density_scale=density_scale,
        provenance={"generator": "renderer.synthetic.random_scene", "seed": seed},
    )


def lego_like_occupancy(res: Sequence[int] = LEGO_OCCUPANCY_RES) -> np.ndarray:
    """bool ``[ox, oy, oz]``: a voxelised bulldozer-like union of boxes, a cylinder and an ellipsoid.

    Its extent is similar to lego's (about x ±0.6, y ±1.1, z −0.35..1.0 inside lego's box).
    """
    lo, hi = np.array(LEGO_BBOX_MIN), np.array(LEGO_BBOX_MAX)
    axes = [lo[i] + (np.arange(res[i]) + 0.5) * (hi[i] - lo[i]) / res[i] for i in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)

    def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)

    tracks = box(-0.62, -0.38, -0.9, 0.9, -0.35, -0.1) | box(0.38, 0.62, -0.9, 0.9, -0.35, -0.1)
    body = box(-0.4, 0.4, -0.7, 0.6, -0.15, 0.25)
    cabin = box(-0.3, 0.3, -0.3, 0.35, 0.25, 0.75)
    roof = ((x / 0.35) ** 2 + ((y - 0.02) / 0.4) ** 2 + ((z - 0.8) / 0.2) ** 2) <= 1.0
    blade = box(-0.6, 0.6, -1.15, -1.0, -0.35, 0.2)
    arm = ((z - 0.1) ** 2 + (x - 0.0) ** 2 <= 0.06**2) & (y >= -1.0) & (y <= -0.7)
    exhaust = ((x - 0.2) ** 2 + (y - 0.45) ** 2 <= 0.05**2) & (z >= 0.25) & (z <= 1.0)
    return np.broadcast_to(tracks | body | cabin | roof | blade | arm | exhaust, tuple(res)).copy()


def make_lego_like_scene(seed: int = 0, dtype: str = "float16", density: float = 300.0) -> Scene:
    """A scene with lego's layout: box (−0.67, −1.2, −0.37)–(0.67, 1.2, 1.03), 9×16×10 networks,
    144×256×160 occupancy from ``lego_like_occupancy``, a network in every cell the shape touches, opaque
    weights (σ ≈ ``density`` everywhere, colours varying in space) and step = one occupancy voxel edge.
    """
    occupancy = lego_like_occupancy()
    ratio = [o // g for o, g in zip(LEGO_OCCUPANCY_RES, LEGO_GRID_RES)]
    cells = occupancy.reshape(
        LEGO_GRID_RES[0], ratio[0], LEGO_GRID_RES[1], ratio[1], LEGO_GRID_RES[2], ratio[2]
    ).any(axis=(1, 3, 5))
    index = np.full(LEGO_GRID_RES, -1, dtype=np.int32)
    index[cells] = np.arange(int(cells.sum()), dtype=np.int32)
    m = int(cells.sum())
    spec = NetworkSpec(LEGO_BBOX_MIN, LEGO_BBOX_MAX, LEGO_GRID_RES)
    weights = init_weights(m, spec, seed=seed)
    weights["l2.weight"][:, :, 0] = 0.0
    weights["l2.bias"][:, 0] = density
    weights["l0.weight"] *= 2.0
    weights["l4.weight"] *= 4.0
    step = float(min((h - l) / r for l, h, r in zip(LEGO_BBOX_MIN, LEGO_BBOX_MAX, LEGO_OCCUPANCY_RES)))
    return Scene(
        bbox_min=LEGO_BBOX_MIN,
        bbox_max=LEGO_BBOX_MAX,
        grid_res=LEGO_GRID_RES,
        occupancy_res=LEGO_OCCUPANCY_RES,
        network_index=index,
        occupancy=BitGrid.from_bool(occupancy),
        weights=_cast(weights, dtype),
        step_size=step,
        background=(1.0, 1.0, 1.0),
        provenance={"generator": "renderer.synthetic.make_lego_like_scene", "seed": seed},
    )
