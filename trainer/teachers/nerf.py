"""The paper's teacher: a NeRF MLP (8×256, skip at layer 4, 128-wide direction branch, encoding 10/4).

Rendered with 384 uniform (stratified while training) samples per ray between near and far, no hierarchical
sampling; trained with Adam 5e-4 decaying ×0.1 over 500k steps on 1024 rays per step, centre crop first.
Meant for a GPU and days; on a CPU it runs, slowly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from renderer.composite import composite_weights
from trainer.teachers.base import Teacher
from trainer.teachers.config import TeacherConfig
from trainer.teachers.grid import direction_encoding


class NerfTeacher(Teacher):
    """γ(x) → 8 ReLU layers (γ(x) re-injected at ``skip``) → σ and a feature → direction branch → rgb."""

    kind = "nerf"

    def __init__(
        self,
        bbox_min: Any,
        bbox_max: Any,
        *,
        depth: int = 8,
        width: int = 256,
        skip: int = 4,
        dir_width: int = 128,
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        samples: int = 384,
        seed: int = 0,
    ) -> None:
        super().__init__(bbox_min, bbox_max)
        self.depth, self.width, self.skip, self.dir_width = depth, width, skip, dir_width
        self.pos_freqs, self.dir_freqs, self.samples = pos_freqs, dir_freqs, samples
        pin = 3 + 6 * pos_freqs
        din = 3 + 6 * dir_freqs
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = []
            for i in range(depth):
                fan_in = pin if i == 0 else width + (pin if i == skip else 0)
                layers.append(torch.nn.Linear(fan_in, width))
            self.trunk = torch.nn.ModuleList(layers)
            self.sigma_out = torch.nn.Linear(width, 1)
            self.feature = torch.nn.Linear(width, width)
            self.dir_layer = torch.nn.Linear(width + din, dir_width)
            self.rgb_out = torch.nn.Linear(dir_width, 3)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden state ``[N, width]`` of the trunk at world points ``[N, 3]``."""
        enc = direction_encoding(x, self.pos_freqs)
        h = enc
        for i, layer in enumerate(self.trunk):
            if i == self.skip:
                h = torch.cat([h, enc], dim=-1)
            h = F.relu(layer(h))
        return h

    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ ``[N]`` = relu(raw) and rgb ``[N, 3]`` = sigmoid(...) at world points with unit directions."""
        h = self._trunk(x)
        sigma = F.relu(self.sigma_out(h)[:, 0])
        g = F.relu(
            self.dir_layer(torch.cat([self.feature(h), direction_encoding(d, self.dir_freqs)], dim=-1))
        )
        return sigma, torch.sigmoid(self.rgb_out(g))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """σ ``[N]`` at world points ``[N, 3]``."""
        return F.relu(self.sigma_out(self._trunk(x))[:, 0])

    def render_rays(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        near: float,
        far: float,
        background: torch.Tensor,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``samples`` uniform samples per ray in [near, far] (stratified when training) → rgb ``[R, 3]``."""
        r, s = origins.shape[0], self.samples
        t0 = origins.new_full((r,), float(near))
        delta = origins.new_full((r,), (float(far) - float(near)) / s)
        k = torch.arange(s, dtype=origins.dtype, device=origins.device).expand(r, s)
        if train:
            jitter = torch.rand(r, s, generator=generator, device=origins.device, dtype=origins.dtype)
        else:
            jitter = torch.full_like(k, 0.5)
        t = t0[:, None] + (k + jitter) * delta[:, None]
        pts = origins[:, None] + t[..., None] * dirs[:, None]
        sigma, rgb = self.query(pts.reshape(-1, 3), dirs[:, None].expand(r, s, 3).reshape(-1, 3))
        weights, t_end = composite_weights(sigma.reshape(r, s) * delta[:, None])
        acc = (weights[..., None] * rgb.reshape(r, s, 3)).sum(dim=1)
        return acc + t_end[:, None] * background.to(origins).reshape(1, 3), {}

    def param_groups(self, cfg: TeacherConfig) -> list[dict[str, Any]]:
        """One group: every weight at ``nerf_lr``."""
        return [{"name": "nerf", "params": list(self.parameters()), "lr": cfg.nerf_lr}]

    def lr_factor(self, step: int, cfg: TeacherConfig) -> float:
        """``nerf_lr_decay ** (step / nerf_lr_decay_steps)``."""
        return float(cfg.nerf_lr_decay ** (step / max(1, cfg.nerf_lr_decay_steps)))

    def arch(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "bbox_min": self.bbox_min.tolist(),
            "bbox_max": self.bbox_max.tolist(),
            "depth": self.depth,
            "width": self.width,
            "skip": self.skip,
            "dir_width": self.dir_width,
            "pos_freqs": self.pos_freqs,
            "dir_freqs": self.dir_freqs,
            "samples": self.samples,
        }

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> NerfTeacher:
        """Inverse of :meth:`arch`."""
        a = dict(arch)
        return cls(a.pop("bbox_min"), a.pop("bbox_max"), **a)

    @classmethod
    def for_box(cls, bbox_min: Any, bbox_max: Any, cfg: TeacherConfig) -> NerfTeacher:
        """A fresh NeRF teacher with the paper's shape from ``cfg``."""
        return cls(
            bbox_min,
            bbox_max,
            depth=cfg.nerf_depth,
            width=cfg.nerf_width,
            skip=cfg.nerf_skip,
            dir_width=cfg.nerf_dir_width,
            pos_freqs=cfg.nerf_pos_freqs,
            dir_freqs=cfg.nerf_dir_freqs,
            samples=cfg.nerf_samples,
            seed=cfg.seed,
        )
