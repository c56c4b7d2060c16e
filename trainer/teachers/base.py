"""The teacher interface every stage after stage 1 codes against: density σ(x) and colour c(x, d)."""

from __future__ import annotations

from typing import Any

import torch

from trainer.teachers.config import TeacherConfig


class Teacher(torch.nn.Module):
    """A radiance field over a box, trained on images, queried by occupancy extraction and distillation.

    Subclasses implement :meth:`query`, :meth:`density`, :meth:`render_rays`, :meth:`param_groups` and
    :meth:`arch`; the training loop in :mod:`trainer.teachers` is shared.
    """

    kind: str = "base"
    bbox_min: torch.Tensor
    bbox_max: torch.Tensor

    def __init__(self, bbox_min: Any, bbox_max: Any) -> None:
        super().__init__()
        self.register_buffer("bbox_min", torch.as_tensor(bbox_min, dtype=torch.float32).reshape(3).clone())
        self.register_buffer("bbox_max", torch.as_tensor(bbox_max, dtype=torch.float32).reshape(3).clone())

    # ---- queries ----
    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and colour at world points.

        Args:
            x: ``[N, 3]`` world points.
            d: ``[N, 3]`` unit view directions.

        Returns:
            sigma ``[N]`` >= 0 (world units⁻¹) and rgb ``[N, 3]`` in [0, 1].
        """
        raise NotImplementedError

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """σ ``[N]`` >= 0 (world units⁻¹) at world points ``x`` ``[N, 3]``."""
        raise NotImplementedError

    # ---- rendering and training ----
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
        """Volume-render rays ``[R, 3]`` → rgb ``[R, 3]`` and extra scalar loss terms (added to the loss).

        ``target`` ``[R, 3]``, the pixels while training, enables per-sample losses.
        """
        raise NotImplementedError

    def configure_training(self, cfg: TeacherConfig) -> None:
        """Take loss weights and other training-only settings from ``cfg`` (called by the training loop)."""

    def after_backward(self, step: int) -> None:
        """Hook run after the loss's backward pass of each step, before the optimiser's (e.g. to add the
        gradients of regularisers computed in closed form)."""

    def param_groups(self, cfg: TeacherConfig) -> list[dict[str, Any]]:
        """Adam parameter groups, each with ``name``, ``params`` and base ``lr``."""
        raise NotImplementedError

    def lr_factor(self, step: int, cfg: TeacherConfig) -> float:
        """Multiplier of every base learning rate at ``step``."""
        return 1.0

    def before_step(self, step: int, cfg: TeacherConfig) -> bool:
        """Schedule hook run before optimisation step ``step``; True when parameters were replaced."""
        return False

    def arch(self) -> dict[str, Any]:
        """JSON-compatible constructor arguments (with the current shapes), for saving and loading."""
        raise NotImplementedError

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> Teacher:
        """Build an (untrained) teacher with the shapes described by :meth:`arch`."""
        raise NotImplementedError

    # ---- helpers ----
    @torch.no_grad()
    def query_chunked(
        self, x: torch.Tensor, d: torch.Tensor, chunk: int = 1 << 18
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`query` in chunks of ``chunk`` points, without gradients."""
        sig, rgb = [], []
        for i in range(0, x.shape[0], chunk):
            s, c = self.query(x[i : i + chunk], d[i : i + chunk])
            sig.append(s)
            rgb.append(c)
        if not sig:
            return x.new_zeros(0), x.new_zeros(0, 3)
        return torch.cat(sig), torch.cat(rgb)

    def inside_box(self, x: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: points inside the teacher's box."""
        return ((x >= self.bbox_min) & (x <= self.bbox_max)).all(dim=-1)
