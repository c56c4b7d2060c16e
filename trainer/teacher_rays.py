"""Teacher-labelled novel rays for fine-tuning: unlimited views the training images do not have.

The students fit the training pixels better than the test views (they overfit 100 views at 200x200), while
the teacher generalises better. Each fine-tuning step can therefore add rays from *novel* cameras whose
target colour is the teacher's rendering: an origin on the arc between two random training cameras (slerp
about the scene centre, radius interpolated), aimed at a random point of a random occupied voxel.

Labelling costs a teacher rendering per step (at 800x800 about as much as the rest of the step), so a
`LabelledRayPool` labels a fixed set of such rays once, a step's worth at a time during the first steps, and
the later steps draw from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


def slerp_origins(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Points on the arc from ``a`` to ``b`` ``[R, 3]`` about ``centre [3]`` at fractions ``t [R]``.

    The direction is spherically interpolated, the distance to the centre linearly; where ``a`` and ``b``
    are (anti)parallel the direction falls back to the linear blend.
    """
    va, vb = a - centre, b - centre
    ra, rb = va.norm(dim=-1, keepdim=True), vb.norm(dim=-1, keepdim=True)
    ua, ub = va / ra.clamp_min(1e-12), vb / rb.clamp_min(1e-12)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    tt = t[:, None]
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - tt) * omega) / sin.clamp_min(1e-12), 1 - tt)
    wb = torch.where(safe, torch.sin(tt * omega) / sin.clamp_min(1e-12), tt)
    u = wa * ua + wb * ub
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return centre + u * ((1 - tt) * ra + tt * rb)


@dataclass
class TeacherRays:
    """Sampler of novel rays ``(origins, dirs, teacher colours)``.

    ``camera_origins [K, 3]`` (training cameras), ``voxel_min [V, 3]`` (min corner of each occupied voxel),
    ``voxel_size [3]``, ``centre [3]``; ``render(o, d) -> [R, 3]`` is the teacher's colour of the rays.
    """

    camera_origins: torch.Tensor
    voxel_min: torch.Tensor
    voxel_size: torch.Tensor
    centre: torch.Tensor
    render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @staticmethod
    def from_occupancy(
        camera_origins: np.ndarray,
        bbox_min: np.ndarray,
        bbox_max: np.ndarray,
        occupancy: np.ndarray,
        render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
    ) -> TeacherRays:
        """From the training camera centres ``[K, 3]`` and the occupancy grid ``bool [ox, oy, oz]``."""
        bmin = np.asarray(bbox_min, dtype=np.float64)
        bmax = np.asarray(bbox_max, dtype=np.float64)
        size = (bmax - bmin) / np.asarray(occupancy.shape, dtype=np.float64)
        idx = np.argwhere(occupancy)
        if idx.shape[0] == 0:
            idx = np.zeros((1, 3), dtype=np.int64)
            size = bmax - bmin
        dev = torch.device(device)
        return TeacherRays(
            camera_origins=torch.as_tensor(np.asarray(camera_origins), dtype=torch.float32, device=dev),
            voxel_min=torch.as_tensor(bmin + idx * size, dtype=torch.float32, device=dev),
            voxel_size=torch.as_tensor(size, dtype=torch.float32, device=dev),
            centre=torch.as_tensor((bmin + bmax) / 2, dtype=torch.float32, device=dev),
            render=render,
        )

    def sample_rays(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` novel rays: origins ``[R, 3]`` and unit directions ``[R, 3]``."""
        dev = self.voxel_min.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev)

        k = self.camera_origins.shape[0]
        ia = (rand(count) * k).long().clamp_max(k - 1)
        ib = (rand(count) * k).long().clamp_max(k - 1)
        o = slerp_origins(self.camera_origins[ia], self.camera_origins[ib], rand(count), self.centre)
        v = self.voxel_min.shape[0]
        iv = (rand(count) * v).long().clamp_max(v - 1)
        p = self.voxel_min[iv] + rand(count, 3) * self.voxel_size
        d = p - o
        return o, d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def sample(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` novel rays and the teacher's colours: origins, dirs, colours ``[R, 3]``."""
        o, d = self.sample_rays(count, generator)
        with torch.no_grad():
            target = self.render(o, d).to(o)
        return o, d, target

    def batch(
        self, step: int, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step``'s rays (`NovelRays`): ``count`` fresh ones, labelled now (the step is not used)."""
        return self.sample(count, generator)


class NovelRays(Protocol):
    """What fine-tuning draws its teacher-labelled rays from: `TeacherRays` or `LabelledRayPool`."""

    def batch(
        self, step: int, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Origins, unit directions and teacher colours ``[count, 3]`` for fine-tuning step ``step``."""
        ...


LABEL_CHUNK = 65536
"""Rays labelled per teacher call when a pool catches up (bounds the teacher's working memory)."""


class LabelledRayPool:
    """``size`` novel rays of a `TeacherRays` drawn once (from ``seed``), labelled lazily.

    Step ``s`` takes pool rays ``[s·count, (s+1)·count)`` while they fit, labelling them then (so those
    first steps cost what fresh rays cost and each pool ray is used once); later steps draw ``count`` pool
    rays uniformly with replacement from the step's generator. A run resumed at step ``s`` first labels
    the rays steps ``0..s`` took, so its batches are those of an uninterrupted run.
    """

    def __init__(self, source: TeacherRays, size: int, seed: int) -> None:
        gen = torch.Generator(device=source.voxel_min.device).manual_seed(seed)
        self.source = source
        self.origins, self.dirs = source.sample_rays(size, gen)
        self.colours = torch.zeros_like(self.origins)
        self.labelled = 0
        """Rays ``[0, labelled)`` hold their teacher colour."""

    @property
    def size(self) -> int:
        """Rays in the pool."""
        return int(self.origins.shape[0])

    def label_to(self, end: int) -> None:
        """Label pool rays ``[labelled, end)`` with the teacher, ``LABEL_CHUNK`` at a time."""
        end = min(end, self.size)
        with torch.no_grad():
            for lo in range(self.labelled, end, LABEL_CHUNK):
                hi = min(lo + LABEL_CHUNK, end)
                self.colours[lo:hi] = self.source.render(self.origins[lo:hi], self.dirs[lo:hi]).to(
                    self.colours
                )
        self.labelled = max(self.labelled, end)

    def batch(
        self, step: int, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step``'s ``count`` rays ``[count, 3]`` each: origins, dirs, teacher colours."""
        lo, hi = step * count, (step + 1) * count
        if hi <= self.size:
            self.label_to(hi)
            return self.origins[lo:hi], self.dirs[lo:hi], self.colours[lo:hi]
        self.label_to(self.size)
        idx = torch.randint(self.size, (count,), generator=generator, device=generator.device)
        idx = idx.to(self.origins.device)
        return self.origins[idx], self.dirs[idx], self.colours[idx]
