"""Overlay geometry in world space (numpy only): scene box, network grid, occupied voxels, camera frusta.

Line sets are ``[2·S, 3]`` float32 arrays of segment end points (pairs); point sets are ``[N, 3]``.
Also the pinhole projection that puts them exactly where the renderer puts the same world points.
"""

from __future__ import annotations

import itertools

import numpy as np

BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def box_corners(bmin: np.ndarray, bmax: np.ndarray) -> np.ndarray:
    """The 8 corners [8, 3] of an axis-aligned box; corner i has bit 0 → x, bit 1 → y, bit 2 → z at max."""
    lo, hi = np.asarray(bmin, np.float32), np.asarray(bmax, np.float32)
    return np.array([[(hi if (i >> a) & 1 else lo)[a] for a in range(3)] for i in range(8)], np.float32)


def box_lines(bmin: np.ndarray, bmax: np.ndarray) -> np.ndarray:
    """The 12 edges of the box as segments [24, 3]."""
    c = box_corners(bmin, bmax)
    return np.array([c[k] for e in BOX_EDGES for k in e], np.float32)


def grid_lines(bmin: np.ndarray, bmax: np.ndarray, res: tuple[int, int, int]) -> np.ndarray:
    """Lines of the network grid: for each axis, one segment along it per lattice point of the other two.

    Returns [2·S, 3] with S = Σ_axis Π_(other axes) (res + 1).
    """
    lo, hi = np.asarray(bmin, np.float64), np.asarray(bmax, np.float64)
    ticks = [np.linspace(lo[a], hi[a], int(res[a]) + 1) for a in range(3)]
    segs = []
    for a in range(3):
        b, c = [x for x in range(3) if x != a]
        for tb, tc in itertools.product(ticks[b], ticks[c]):
            p0, p1 = np.empty(3), np.empty(3)
            p0[a], p1[a] = lo[a], hi[a]
            p0[b] = p1[b] = tb
            p0[c] = p1[c] = tc
            segs += [p0, p1]
    return np.array(segs, np.float32)


def occupied_voxel_centers(
    occupancy: np.ndarray,
    bmin: np.ndarray,
    bmax: np.ndarray,
    axis: int = 2,
    lo: float = 0.0,
    hi: float = 1.0,
    max_points: int = 200_000,
) -> np.ndarray:
    """Centres [N, 3] of set voxels of ``occupancy`` [ox, oy, oz] whose index along ``axis`` lies in the
    slice [lo, hi) (fractions of the grid); subsampled evenly to at most ``max_points``."""
    occ = np.asarray(occupancy, bool)
    n = occ.shape[axis]
    i0 = int(np.clip(np.floor(lo * n), 0, n))
    i1 = int(np.clip(np.ceil(hi * n), i0, n))
    sl: list[slice] = [slice(None)] * 3
    sl[axis] = slice(i0, i1)
    idx = np.argwhere(occ[tuple(sl)]).astype(np.float64)
    idx[:, axis] += i0
    if len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).astype(np.int64)]
    cell = (np.asarray(bmax, np.float64) - np.asarray(bmin, np.float64)) / np.array(occ.shape)
    return (np.asarray(bmin, np.float64) + (idx + 0.5) * cell).astype(np.float32)


def frustum_lines(c2w: np.ndarray, width: int, height: int, focal: float, depth: float) -> np.ndarray:
    """A camera drawn as a pyramid: apex at the eye, base = image corners at ``depth`` along the view.

    Returns [16, 3]: 4 apex→corner segments and the 4 base edges.
    """
    c2w = np.asarray(c2w, np.float64)
    hw, hh = 0.5 * width / focal * depth, 0.5 * height / focal * depth
    cam = np.array([[-hw, hh, -depth], [hw, hh, -depth], [hw, -hh, -depth], [-hw, -hh, -depth]])
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    eye = c2w[:3, 3]
    segs = []
    for i in range(4):
        segs += [eye, world[i]]
    for i in range(4):
        segs += [world[i], world[(i + 1) % 4]]
    return np.array(segs, np.float32)


def view_matrix(c2w: np.ndarray) -> np.ndarray:
    """World → camera [4, 4] (the inverse of ``c2w``)."""
    return np.linalg.inv(np.asarray(c2w, np.float64))


def projection_matrix(
    width: int,
    height: int,
    focal: float,
    cx: float | None = None,
    cy: float | None = None,
    near: float = 0.01,
    far: float = 100.0,
) -> np.ndarray:
    """OpenGL projection [4, 4] of the renderer's pinhole: camera point (x, y, z), z < 0, lands on pixel
    coordinates (cx + f·x/−z, cy − f·y/−z) measured from the image's top-left corner."""
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    p = np.zeros((4, 4))
    p[0, 0], p[0, 2] = 2 * focal / width, -(2 * cx / width - 1)
    p[1, 1], p[1, 2] = 2 * focal / height, -(1 - 2 * cy / height)
    p[2, 2], p[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    p[3, 2] = -1.0
    return p


def project_points(mvp: np.ndarray, pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates [N, 2] (x right, y down from the top-left corner) of world points [N, 3]."""
    h = np.c_[np.asarray(pts, np.float64), np.ones(len(pts))] @ mvp.T
    ndc = h[:, :2] / h[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) * 0.5 * width, (1 - ndc[:, 1]) * 0.5 * height]


def frustum_centers(c2ws: np.ndarray, depth: float) -> np.ndarray:
    """[K, 3] the centre of each camera's frustum base (``depth`` along its view axis): what a click picks."""
    c2ws = np.asarray(c2ws, np.float64).reshape(-1, 4, 4)
    return c2ws[:, :3, 3] - depth * c2ws[:, :3, 2]


def pick_camera(
    c2ws: np.ndarray,
    view_c2w: np.ndarray,
    width: int,
    height: int,
    focal: float,
    click: tuple[float, float],
    depth: float,
    radius_px: float = 12.0,
) -> int | None:
    """The stored camera whose frustum a click at pixel ``click`` (x right, y down, in the view) lands on:
    the nearest projected apex or base centre within ``radius_px``, ties to the camera nearest the eye;
    None when no frustum is that close or every candidate is behind the view.

    Args:
        c2ws: ``[K, 4, 4]`` the scene's stored cameras; view_c2w, width, height, focal: the current view.
    """
    c2ws = np.asarray(c2ws, np.float64).reshape(-1, 4, 4)
    if len(c2ws) == 0:
        return None
    w2c = view_matrix(view_c2w)
    pts = np.concatenate([c2ws[:, :3, 3], frustum_centers(c2ws, depth)])  # [2K, 3]
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    ahead = cam[:, 2] < -1e-6
    px = width / 2 + focal * cam[:, 0] / np.where(ahead, -cam[:, 2], 1.0)
    py = height / 2 - focal * cam[:, 1] / np.where(ahead, -cam[:, 2], 1.0)
    dist = np.hypot(px - click[0], py - click[1])
    dist[~ahead] = np.inf
    k = len(c2ws)
    best = np.minimum(dist[:k], dist[k:])  # [K] either point of each frustum
    hits = np.flatnonzero(best <= radius_px)
    if len(hits) == 0:
        return None
    eye_dist = -cam[:k, 2][hits]
    order = np.lexsort((eye_dist, best[hits]))
    return int(hits[order[0]])


def matching_camera(c2ws: np.ndarray, view_c2w: np.ndarray, tol: float = 1e-4) -> int | None:
    """The stored camera the view is at (same pose within ``tol`` per matrix entry, relative to the scene's
    camera spread for the position), for highlighting; None when the view is elsewhere."""
    c2ws = np.asarray(c2ws, np.float64).reshape(-1, 4, 4)
    if len(c2ws) == 0:
        return None
    v = np.asarray(view_c2w, np.float64)
    scale = max(1.0, float(np.abs(c2ws[:, :3, 3]).max()))
    rot_err = np.abs(c2ws[:, :3, :3] - v[:3, :3]).max(axis=(1, 2))
    pos_err = np.abs(c2ws[:, :3, 3] - v[:3, 3]).max(axis=1) / scale
    ok = np.flatnonzero((rot_err <= tol) & (pos_err <= tol))
    return int(ok[0]) if len(ok) else None
