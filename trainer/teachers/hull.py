"""Visual hull of the training alpha masks (space carving) and the box of a scene that has none."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.teachers.config import TeacherConfig
from trainer.teachers.lattice import voxel_centres, voxel_grid_dims


def visual_hull(
    centres: torch.Tensor,
    alphas: np.ndarray,
    c2w: np.ndarray,
    focal: float,
    cx: float,
    cy: float,
    alpha_threshold: float,
    voxel_size: float,
    min_seen: float = 0.0,
) -> torch.Tensor:
    """Space carving: a point survives unless some view sees it and has alpha below the threshold there.

    With ``min_seen`` > 0 a point must also project into at least that fraction of the views (points that
    few cameras see are not constrained by carving, e.g. the corners of a search box).

    Each alpha image is first max-pooled over the footprint of a voxel so thin parts are never carved.

    Args:
        centres: ``[V, 3]`` world points (voxel centres).
        alphas: ``[N, H, W]`` coverage of the training views.
        c2w: ``[N, 4, 4]`` camera-to-world (Blender/OpenGL).
        focal, cx, cy: intrinsics in pixels; voxel_size: the voxels' side (world units).
        min_seen: fraction of the views a surviving point must project into.

    Returns:
        ``[V]`` bool, True inside the hull.
    """
    n, h, w = alphas.shape
    alive = torch.arange(centres.shape[0])  # indices of the points not carved yet
    pts = centres
    seen_count = torch.zeros(centres.shape[0], dtype=torch.int32)
    for i in range(n):
        pose = torch.as_tensor(c2w[i], dtype=torch.float32)
        cam = (pts - pose[:3, 3]) @ pose[:3, :3]  # world → camera coordinates
        depth = -cam[:, 2]
        front = depth > 1e-6
        z = depth.clamp(min=1e-6)
        u = cx + focal * cam[:, 0] / z
        v = cy - focal * cam[:, 1] / z
        seen = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        dmin = float(depth[front].min()) if bool(front.any()) else 1.0
        reach = focal * voxel_size * 0.87 / max(dmin, 1e-3)  # a voxel's footprint in pixels
        r = min(int(math.ceil(reach)), max(h, w)) if math.isfinite(reach) and reach > 0 else max(h, w)
        a = torch.as_tensor(alphas[i], dtype=torch.float32)[None, None]
        a = F.max_pool2d(a, 2 * r + 1, stride=1, padding=r)[0, 0]
        pu = u.clamp(0, w - 1).long()
        pv = v.clamp(0, h - 1).long()
        survive = ~(seen & (a[pv, pu] < alpha_threshold))
        seen_count[alive] += seen.to(torch.int32)
        alive, pts = alive[survive], pts[survive]
    keep = torch.zeros(centres.shape[0], dtype=torch.bool)
    keep[alive] = True
    if min_seen > 0:
        keep &= seen_count >= min_seen * n
    return keep


def camera_search_box(
    c2w: np.ndarray, focal: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """A cube the cameras look into: centred on the point nearest to every optical axis (least squares), with
    half-side 1.2 × the median camera distance × tan(half the field of view)."""
    o = c2w[:, :3, 3].astype(np.float64)
    a = -c2w[:, :3, 2].astype(np.float64)  # optical axes (cameras look down −Z)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    proj = np.eye(3)[None] - a[:, :, None] * a[:, None, :]
    lhs = proj.sum(axis=0)
    rhs = np.einsum("nij,nj->i", proj, o)
    centre = np.linalg.lstsq(lhs, rhs, rcond=None)[0] if len(o) > 1 else o[0] + 4.0 * a[0]
    dist = float(np.median(np.linalg.norm(o - centre, axis=1)))
    half = 1.2 * dist * 0.5 * max(width, height) / focal
    return (centre - half).astype(np.float32), (centre + half).astype(np.float32)


def estimate_bbox_from_views(
    dataset: Any, cfg: TeacherConfig, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Box for a dataset without one: the visual hull of its alpha masks inside :func:`camera_search_box`,
    grown by ``margin`` of its size on each side (the search box itself when the images have no alpha)."""
    c2w = np.asarray(dataset.c2w)
    lo, hi = camera_search_box(c2w, float(dataset.focal), int(dataset.width), int(dataset.height))
    alphas = np.asarray(dataset.alphas)
    if alphas.size == 0 or float(alphas.min()) > 0.999:
        return lo, hi
    dims, v = voxel_grid_dims(lo, hi, cfg.hull_res)
    centres = voxel_centres(lo, hi, dims)
    cx, cy = dataset.principal_point
    hull = visual_hull(centres, alphas, c2w, float(dataset.focal), cx, cy, cfg.hull_alpha, v, min_seen=0.5)
    if not bool(hull.any()):
        return lo, hi
    pts = centres[hull].numpy()
    pmin, pmax = pts.min(axis=0) - v, pts.max(axis=0) + v
    pad = margin * (pmax - pmin)
    return (pmin - pad).astype(np.float32), (pmax + pad).astype(np.float32)
