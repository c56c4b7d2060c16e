"""Volume rendering for the teachers: rays of training pixels, ray-box clipping, sample lattices, compositing.

The teachers render with the same optical model as the student (α = 1 − exp(−σ·δ), front-to-back
transmittance, ``pixel = C + T_end · background``), on a dense ``[R, S]`` layout so transmittance is an exact
cumulative sum per ray.
"""

from __future__ import annotations

import torch


def pixel_rays(
    c2w: torch.Tensor, px: torch.Tensor, py: torch.Tensor, focal: float, cx: float, cy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres (the core issue's camera model).

    Args:
        c2w: ``[R, 4, 4]`` camera-to-world of each ray's camera (Blender/OpenGL convention).
        px, py: ``[R]`` integer pixel coordinates (0-based, from the top-left).
        focal, cx, cy: pinhole intrinsics in pixels.

    Returns:
        origins ``[R, 3]`` and unit directions ``[R, 3]``.
    """
    cam = torch.stack(
        [
            (px.to(c2w.dtype) + 0.5 - cx) / focal,
            -(py.to(c2w.dtype) + 0.5 - cy) / focal,
            -torch.ones_like(c2w[:, 0, 0]),
        ],
        dim=-1,
    )
    d = torch.einsum("rij,rj->ri", c2w[:, :3, :3], cam)
    return c2w[:, :3, 3].contiguous(), d / d.norm(dim=-1, keepdim=True)


def ray_aabb(
    origins: torch.Tensor, dirs: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test: entry and exit distances of each ray through the box.

    Args:
        origins, dirs: ``[R, 3]``.
        bbox_min, bbox_max: ``[3]``.

    Returns:
        t_enter ``[R]``, t_exit ``[R]`` (t_exit <= t_enter when the ray misses).
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    ta = (bbox_min - origins) * inv
    tb = (bbox_max - origins) * inv
    t_enter = torch.minimum(ta, tb).amax(dim=-1)
    t_exit = torch.maximum(ta, tb).amin(dim=-1)
    return t_enter, t_exit


def ray_interval(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    bbox_min: torch.Tensor,
    bbox_max: torch.Tensor,
    near: float,
    far: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of each ray inside the box and [near, far]: t0 ``[R]``, t1 ``[R]`` (empty when t1 <= t0)."""
    t_enter, t_exit = ray_aabb(origins, dirs, bbox_min, bbox_max)
    return t_enter.clamp(min=near), t_exit.clamp(max=far)


def exclusive_transmittance(optical_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Transmittance before each sample and after the last one.

    Args:
        optical_depth: ``[R, S]`` σ·δ per sample (0 for empty or padding samples).

    Returns:
        T ``[R, S]`` with T_k = exp(−Σ_{j<k} σ_j δ_j), and T_end ``[R]`` = exp(−Σ_j σ_j δ_j).
    """
    cum = torch.cumsum(optical_depth, dim=-1)
    t_end = (
        torch.exp(-cum[:, -1])
        if cum.shape[1]
        else torch.ones(cum.shape[0], dtype=cum.dtype, device=cum.device)
    )
    return torch.exp(-(cum - optical_depth)), t_end


def composite_weights(optical_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights w_k = T_k·(1 − exp(−σ_k δ_k)) ``[R, S]`` and the final transmittance ``[R]``."""
    trans, t_end = exclusive_transmittance(optical_depth)
    return trans * (1.0 - torch.exp(-optical_depth)), t_end


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    import math

    return float(-10.0 * math.log10(max(mse, 1e-12)))
