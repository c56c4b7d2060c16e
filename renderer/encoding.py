"""Positional encoding γ_L(v) of the KiloNeRF networks (no π factor)."""

from __future__ import annotations

import torch


def encoded_size(channels: int, num_freqs: int) -> int:
    """Width of ``positional_encoding`` for ``channels`` inputs and ``num_freqs`` octaves: C·(1 + 2L)."""
    return channels * (1 + 2 * num_freqs)


def positional_encoding(v: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """γ_L(v) = concat(v, sin(2⁰v), cos(2⁰v), sin(2¹v), cos(2¹v), …, sin(2^(L−1)v), cos(2^(L−1)v)).

    Args:
        v: ``[N, C]`` values (any float dtype, any device).
        num_freqs: L ≥ 0, the number of octaves.

    Returns:
        ``[N, C·(1+2L)]``: each term is a C-vector, in the order above.
    """
    if num_freqs < 0:
        raise ValueError(f"num_freqs must be >= 0, got {num_freqs}")
    n, c = v.shape
    if num_freqs == 0:
        return v
    scales = 2.0 ** torch.arange(num_freqs, dtype=v.dtype, device=v.device)  # [L]
    scaled = v[:, None, :] * scales[None, :, None]  # [N, L, C]
    out = v.new_empty((n, 1 + 2 * num_freqs, c))
    out[:, 0] = v
    out[:, 1::2] = torch.sin(scaled)
    out[:, 2::2] = torch.cos(scaled)
    return out.reshape(n, c * (1 + 2 * num_freqs))
