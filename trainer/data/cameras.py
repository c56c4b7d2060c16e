"""A dataset's cameras as the trainer uses them: the rays of its pixels and the box its cameras look into.

Every ray comes from ``renderer.camera.pixel_rays`` (the project's one pixel -> ray rule) with the frame's own
fx, fy, cx, cy; there is no other copy of that maths in the trainer. A dataset whose frames share one size and
square-pixel intrinsics (``Dataset.uniform``) passes them as numbers, exactly as before per-frame intrinsics
existed; otherwise each ray gets its frame's as tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from renderer.camera import pixel_grid, pixel_rays


class FrameRays:
    """The poses and intrinsics of a dataset's frames on one device, and the rays of their pixels.

    Attributes: ``n`` frames of (padded) ``h`` x ``w``; ``c2w`` ``[N, 4, 4]``; ``sizes`` ``[N, 2]`` int64
    (each frame's own w, h, on the CPU); ``uniform`` as ``Dataset.uniform``, with then the numbers
    ``focal``, ``cx``, ``cy``.
    """

    def __init__(self, dataset: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.c2w = torch.as_tensor(np.asarray(dataset.c2w), dtype=dtype).to(device)
        self.n, self.h, self.w = len(dataset.c2w), int(dataset.height), int(dataset.width)
        self.uniform = bool(getattr(dataset, "uniform", True))
        self.focal = float(dataset.focal)
        self.cx, self.cy = (float(v) for v in dataset.principal_point)
        if self.uniform:
            self.sizes = torch.tensor([[self.w, self.h]], dtype=torch.int64).expand(self.n, 2)
            self.k = torch.tensor([[self.focal, self.focal, self.cx, self.cy]], dtype=dtype, device=device)
        else:
            self.sizes = torch.as_tensor(dataset.all_sizes(), dtype=torch.int64)
            self.k = torch.as_tensor(dataset.all_intrinsics(), dtype=dtype).to(device)  # [N, 4] fx fy cx cy

    def rays(
        self, img: torch.Tensor | int, px: torch.Tensor, py: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit dirs ``[R, 3]`` through pixels (px, py) of frames ``img`` (``[R]``, or one)."""
        c2w = self.c2w[img]
        if self.uniform:
            return pixel_rays(c2w, px, py, self.focal, self.cx, self.cy)
        k = self.k[img] if isinstance(img, int) else self.k[img.to(self.k.device)]
        if isinstance(img, int):
            fx, fy, cx, cy = (float(v) for v in k)
            return pixel_rays(c2w, px, py, fx, cx, cy, fy=fy)
        return pixel_rays(c2w, px, py, k[:, 0], k[:, 2], k[:, 3], fy=k[:, 1])

    def view(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays of every pixel of the W x H picture of view ``i`` (row-major; its own pixels are the top-left
        of it, as ``Dataset.camera(i)`` renders): origins, dirs ``[H*W, 3]``."""
        px, py = pixel_grid(self.w, self.h, self.c2w.device)
        return self.rays(int(i), px, py)

    def draw(
        self, batch: int, gen: torch.Generator, crop: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch`` random (frame, row, column) on the CPU, uniform over frames, then over each frame's
        own pixels (its centred ``crop`` fraction when ``crop < 1``): img, py, px ``[B]`` int64.

        A uniform dataset draws three ``randint`` calls (frame, row, column) as the teachers always have."""
        img = torch.randint(0, self.n, (batch,), generator=gen)
        if self.uniform:
            h, w = self.h, self.w
            if crop < 1.0:
                ch, cw = max(1, int(h * crop)), max(1, int(w * crop))
                py = torch.randint(0, ch, (batch,), generator=gen) + (h - ch) // 2
                px = torch.randint(0, cw, (batch,), generator=gen) + (w - cw) // 2
            else:
                py = torch.randint(0, h, (batch,), generator=gen)
                px = torch.randint(0, w, (batch,), generator=gen)
            return img, py, px
        wi, hi = self.sizes[img, 0], self.sizes[img, 1]
        rows = (hi.double() * crop).long().clamp(min=1) if crop < 1.0 else hi
        cols = (wi.double() * crop).long().clamp(min=1) if crop < 1.0 else wi
        py = (torch.rand(batch, generator=gen, dtype=torch.float64) * rows).long().clamp(max=rows - 1)
        px = (torch.rand(batch, generator=gen, dtype=torch.float64) * cols).long().clamp(max=cols - 1)
        return img, py + (hi - rows) // 2, px + (wi - cols) // 2

    def draw_pixels(
        self, count: int, gen: torch.Generator, device: str | torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` pixels uniform over every frame's own pixels (one flat index over them all, drawn on
        ``device``): img, py, px ``[R]`` int64."""
        area = (self.sizes[:, 0] * self.sizes[:, 1]).to(device)
        ends = torch.cumsum(area, 0)
        flat = torch.randint(0, int(ends[-1]), (count,), generator=gen, device=device)
        img = torch.searchsorted(ends, flat, right=True)
        local = flat - (ends[img] - area[img])
        w = self.sizes[:, 0].to(device)[img]
        return img, local // w, local % w


def view_rays(dataset: Any, i: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of every pixel of view ``i``'s W x H picture (row-major; float32): origins, dirs ``[H*W, 3]``."""
    rays = FrameRays(dataset, device)
    return rays.view(i)


#: Smallest spread of the optical axes (the least eigenvalue of the mean of I - a aᵀ: 0 when all are parallel,
#: about sin² of their angle to each other when they converge) for them to have a common point.
MIN_AXIS_SPREAD = 0.02


def look_at_point(c2w: np.ndarray) -> tuple[np.ndarray, bool]:
    """(the point nearest to every optical axis in least squares, whether it is a common point they look at:
    the axes spread by at least MIN_AXIS_SPREAD and at least half the cameras face it). One camera: the
    point 4 units ahead of it."""
    o = np.asarray(c2w, dtype=np.float64)[:, :3, 3]
    a = -np.asarray(c2w, dtype=np.float64)[:, :3, 2]  # optical axes (cameras look down -Z)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    if len(o) == 1:
        return o[0] + 4.0 * a[0], True
    proj = np.eye(3)[None] - a[:, :, None] * a[:, None, :]
    lhs = proj.sum(axis=0)
    centre = np.linalg.lstsq(lhs, np.einsum("nij,nj->i", proj, o), rcond=None)[0]
    spread = float(np.linalg.eigvalsh(lhs / len(o)).min())
    facing = float((((centre - o) * a).sum(axis=1) > 0).mean())
    return centre, spread >= MIN_AXIS_SPREAD and facing >= 0.5


def camera_box(c2w: np.ndarray, tan_half_fov: float, scale: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """A cube the cameras look into: centred on :func:`look_at_point`, with half-side ``scale`` x the median
    camera distance to it x ``tan_half_fov`` (the tangent of half the widest field of view). float32 (min,
    max)."""
    centre = look_at_point(c2w)[0]
    dist = float(np.median(np.linalg.norm(np.asarray(c2w, dtype=np.float64)[:, :3, 3] - centre, axis=1)))
    half = scale * dist * tan_half_fov
    return (centre - half).astype(np.float32), (centre + half).astype(np.float32)


def widest_half_fov(dataset: Any) -> float:
    """tan of half the widest field of view of any frame: the largest 0.5 w / fx or 0.5 h / fy."""
    if not hasattr(dataset, "all_intrinsics"):
        return 0.5 * max(int(dataset.width), int(dataset.height)) / float(dataset.focal)
    k = np.asarray(dataset.all_intrinsics(), dtype=np.float64)
    sizes = np.asarray(dataset.all_sizes(), dtype=np.float64)
    return float(max(np.max(0.5 * sizes[:, 0] / k[:, 0]), np.max(0.5 * sizes[:, 1] / k[:, 1])))
