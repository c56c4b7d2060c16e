"""Visual hull of the training alpha masks (space carving) and the box of a scene that has none."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.data.cameras import camera_box, widest_half_fov
from trainer.teachers.config import TeacherConfig
from trainer.teachers.lattice import voxel_centres, voxel_grid_dims


def box_max(image: torch.Tensor, r: int) -> torch.Tensor:
    """The largest value of ``[H, W]`` ``image`` over the (2r+1)² square around each pixel (clipped at the
    borders): a max over rows, then over columns (exactly the square's max, in O(r) per pixel, not O(r²))."""
    a = F.max_pool2d(image[None, None], (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(a, (2 * r + 1, 1), stride=1, padding=(r, 0))[0, 0]


def visual_hull(
    centres: torch.Tensor,
    alphas: np.ndarray,
    c2w: np.ndarray,
    focal: float | np.ndarray,
    cx: float | np.ndarray,
    cy: float | np.ndarray,
    alpha_threshold: float,
    voxel_size: float,
    min_seen: float = 0.0,
    *,
    fy: float | np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> torch.Tensor:
    """Space carving: a point survives unless some view sees it and has alpha below the threshold there.

    With ``min_seen`` > 0 a point must also project into at least that fraction of the views (points that
    few cameras see are not constrained by carving, e.g. the corners of a search box).

    Each alpha image is first max-pooled over the footprint of a voxel so thin parts are never carved.

    Args:
        centres: ``[V, 3]`` world points (voxel centres).
        alphas: ``[N, H, W]`` coverage of the training views.
        c2w: ``[N, 4, 4]`` camera-to-world (Blender/OpenGL).
        focal, cx, cy: intrinsics in pixels (one for every view, or ``[N]`` each view's); ``fy``: the
            vertical focal when it differs (None: ``focal``); voxel_size: the voxels' side (world units).
        min_seen: fraction of the views a surviving point must project into.
        sizes: ``[N, 2]`` (w, h) of each view's own pixels at the top-left of its alpha image (None: all).

    Returns:
        ``[V]`` bool, True inside the hull.
    """
    n = alphas.shape[0]
    k = (focal, focal if fy is None else fy, cx, cy)
    per_view = np.stack([np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in k])  # [4, N]
    view_sizes = np.broadcast_to(np.asarray(alphas.shape[:0:-1] if sizes is None else sizes), (n, 2))
    alive = torch.arange(centres.shape[0])  # indices of the points not carved yet
    pts = centres
    seen_count = torch.zeros(centres.shape[0], dtype=torch.int32)
    for i in range(n):
        fx, fyi, cxi, cyi = (float(x) for x in per_view[:, i])
        w, h = (int(x) for x in view_sizes[i])
        pose = torch.as_tensor(c2w[i], dtype=torch.float32)
        cam = (pts - pose[:3, 3]) @ pose[:3, :3]  # world → camera coordinates
        depth = -cam[:, 2]
        front = depth > 1e-6
        z = depth.clamp(min=1e-6)
        u = cxi + fx * cam[:, 0] / z
        v = cyi - fyi * cam[:, 1] / z
        seen = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        dmin = float(depth[front].min()) if bool(front.any()) else 1.0
        reach = max(fx, fyi) * voxel_size * 0.87 / max(dmin, 1e-3)  # a voxel's footprint in pixels
        r = min(int(math.ceil(reach)), max(h, w)) if math.isfinite(reach) and reach > 0 else max(h, w)
        a = box_max(torch.as_tensor(alphas[i, :h, :w], dtype=torch.float32), r)
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
    half-side 1.2 × the median camera distance × tan(half the field of view) (`trainer.data.cameras`)."""
    return camera_box(c2w, 0.5 * max(width, height) / focal)


def dataset_hull(
    dataset: Any,
    centres: torch.Tensor,
    alpha_threshold: float,
    voxel_size: float,
    min_seen: float = 0.0,
) -> torch.Tensor:
    """:func:`visual_hull` of ``dataset``'s alpha masks, each view with its own intrinsics and size."""
    alphas, c2w = np.asarray(dataset.alphas), np.asarray(dataset.c2w)
    if getattr(dataset, "uniform", True):
        cx, cy = dataset.principal_point
        return visual_hull(
            centres, alphas, c2w, float(dataset.focal), cx, cy, alpha_threshold, voxel_size, min_seen
        )
    k = dataset.all_intrinsics()
    return visual_hull(
        centres,
        alphas,
        c2w,
        k[:, 0],
        k[:, 2],
        k[:, 3],
        alpha_threshold,
        voxel_size,
        min_seen,
        fy=k[:, 1],
        sizes=dataset.all_sizes(),
    )


def estimate_bbox_from_views(
    dataset: Any, cfg: TeacherConfig, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Box for a dataset without one: the visual hull of its alpha masks inside a search box, grown by
    ``margin`` of its size on each side (the search box itself when the images have no alpha). The search box
    is the dataset's own when that is a loose bound (``bbox_loose``), else the cube its cameras look into."""
    c2w = np.asarray(dataset.c2w)
    if (
        getattr(dataset, "bbox_loose", False)
        and dataset.bbox_min is not None
        and dataset.bbox_max is not None
    ):
        lo = np.asarray(dataset.bbox_min, dtype=np.float32)
        hi = np.asarray(dataset.bbox_max, dtype=np.float32)
    else:
        lo, hi = camera_box(c2w, widest_half_fov(dataset))
    alphas = np.asarray(dataset.alphas)
    if alphas.size == 0 or float(alphas.min()) > 0.999:
        return lo, hi
    dims, v = voxel_grid_dims(lo, hi, cfg.hull_res)
    centres = voxel_centres(lo, hi, dims)
    hull = dataset_hull(dataset, centres, cfg.hull_alpha, v, min_seen=0.5)
    if not bool(hull.any()):
        return lo, hi
    pts = centres[hull].numpy()
    pmin, pmax = pts.min(axis=0) - v, pts.max(axis=0) + v
    pad = margin * (pmax - pmin)
    return (pmin - pad).astype(np.float32), (pmax + pad).astype(np.float32)
