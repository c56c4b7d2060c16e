"""Writing pixels: a frame's per-ray accumulators → the picture of the asked output (torch twin of the
native and CUDA ``write_pixels``)."""

from __future__ import annotations

import torch


def network_colors(net: torch.Tensor) -> torch.Tensor:
    """``[N]`` int64 network ids → ``[N, 3]`` float32 colours from an integer hash (ids < 0 → 0)."""
    h = (net.clamp(min=0) * 2654435761 + 12345) % (1 << 32)
    h = (h ^ (h >> 15)) * 2246822519 % (1 << 32)
    rgb = torch.stack(((h >> 16) & 255, (h >> 8) & 255, h & 255), dim=1).to(torch.float32) / 255.0
    return 0.25 + 0.75 * rgb


def shade_depth(depth: torch.Tensor, hit: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``[N]`` depths → ``[N, 3]`` grey (near = bright) normalised over ``hit`` pixels, else background."""
    out = background.reshape(1, 3).expand(depth.shape[0], 3).clone()
    if bool(hit.any()):
        lo, hi = depth[hit].min(), depth[hit].max()
        g = 1.0 - 0.85 * (depth - lo) / (hi - lo).clamp(min=1e-6)
        out[hit] = g[hit, None].expand(-1, 3)
    return out


def expected_depth(depth_sum: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Σ w·t / Σ w per ray with Σ w = 1 − T_end (``[N]`` each); 0 where nothing was hit."""
    wsum = 1.0 - trans
    return torch.where(wsum > 0, depth_sum / wsum.clamp(min=1e-12), torch.zeros_like(wsum))


def write_pixels(
    color: torch.Tensor,
    trans: torch.Tensor,
    depth: torch.Tensor,
    best_net: torch.Tensor,
    background: tuple[float, float, float],
    output: str,
) -> torch.Tensor:
    """The picture of a frame's rays, ``[N, 3]`` float32.

    Args:
        color: ``[N, 3]`` composited colour C = Σ T_k α_k rgb_k.
        trans: ``[N]`` transmittance left at the end T_end.
        depth: ``[N]`` expected depth (``expected_depth``).
        best_net: ``[N]`` int64 dominant network (−1: none).
        output: "rgb": C + T_end·background; "depth": ``shade_depth`` over the rays with T_end < 1;
            "network": ``network_colors`` of the dominant network (background where none).
    """
    bg = torch.tensor(background, dtype=torch.float32, device=color.device)
    if output == "network":
        return torch.where((best_net >= 0)[:, None], network_colors(best_net), bg[None, :])
    if output == "depth":
        return shade_depth(depth, trans < 1.0, bg)
    return color + trans[:, None] * bg
