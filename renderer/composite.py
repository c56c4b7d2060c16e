"""Front-to-back alpha compositing: α = 1 − exp(−σ·s), T_(k+1) = T_k·(1 − α_k), C = Σ T_k·α_k·rgb_k.

The project's one compositing module, in three layouts of the same samples:

- packed ``[S]`` samples ordered by ray then t, with their ray ids: ``composite_front_to_back`` (the
  trainer's differentiable whole-ray form), ``packed_weights`` (its weights, also the grid teacher's),
  ``exclusive_optical_depth``, ``segment_starts``;
- one marching pass in a padded ``[R, slots]`` table: ``transmittance_pass``, ``composite_pass`` (the
  renderer, with ERT);
- dense ``[R, S]`` rows, one per ray, padded with σ·δ = 0: ``exclusive_transmittance``,
  ``composite_weights`` (the NeRF teacher).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def segment_starts(ray_idx: torch.Tensor, num_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``[S]`` int64 ray ids sorted ascending: (first sample index of each ray ``[R]``, count ``[R]``)."""
    counts = torch.bincount(ray_idx, minlength=num_rays)
    starts = torch.cumsum(counts, dim=0) - counts
    return starts, counts


def exclusive_optical_depth(sigma: torch.Tensor, ray_idx: torch.Tensor, step: float) -> torch.Tensor:
    """Optical depth in front of each packed sample: Σ_(j<k) σ_j·s over the earlier samples of its ray.

    Args:
        sigma: ``[S]`` densities, the samples of a ray contiguous and in front-to-back order.
        ray_idx: ``[S]`` int64 ray of each sample.
        step: the marching step s.

    Returns:
        ``[S]`` float64; the transmittance in front of sample k is exp(−result_k).
    """
    tau = sigma.double() * step
    cs = torch.cumsum(tau, 0) - tau  # exclusive prefix over all samples
    is_start = torch.ones_like(ray_idx, dtype=torch.bool)
    is_start[1:] = ray_idx[1:] != ray_idx[:-1]
    pos = torch.arange(sigma.numel(), device=sigma.device)
    start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), 0).values
    return cs - cs[start]


def exclusive_transmittance(optical_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense form: transmittance in front of each sample and behind the last one.

    Args:
        optical_depth: ``[R, S]`` σ_k·δ_k per sample, one row per ray (0 for empty or padding samples).

    Returns:
        T ``[R, S]`` with T_k = exp(−Σ_(j<k) σ_j·δ_j), and T_end ``[R]`` = exp(−Σ_j σ_j·δ_j) (1 when S = 0).
    """
    cum = torch.cumsum(optical_depth, dim=-1)
    t_end = (
        torch.exp(-cum[:, -1])
        if cum.shape[1]
        else torch.ones(cum.shape[0], dtype=cum.dtype, device=cum.device)
    )
    return torch.exp(-(cum - optical_depth)), t_end


def composite_weights(optical_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense form: weights w_k = T_k·(1 − exp(−σ_k·δ_k)) ``[R, S]`` and T_end ``[R]``.

    Args:
        optical_depth: ``[R, S]`` σ_k·δ_k as in ``exclusive_transmittance``.

    Returns:
        w ``[R, S]`` and T_end ``[R]``; per ray Σ_k w_k + T_end = 1 and the pixel is Σ_k w_k·rgb_k + T_end·bg.
    """
    trans, t_end = exclusive_transmittance(optical_depth)
    return trans * (1.0 - torch.exp(-optical_depth)), t_end


def composite_front_to_back(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    ray_idx: torch.Tensor,
    step: float,
    num_rays: int,
    background: torch.Tensor | Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite samples ordered by ray then t; differentiable with respect to ``sigma`` and ``rgb``.

    T_k = exp(−Σ_(j<k) σ_j·s) is computed as a per-ray exclusive cumulative sum (float64, so long batches
    keep their precision); a ray without samples keeps T = 1.

    Args:
        sigma: ``[S]`` densities ≥ 0.
        rgb: ``[S, 3]`` colours.
        ray_idx: ``[S]`` int64 ray of each sample, non-decreasing.
        step: the marching step s.
        num_rays: R.
        background: ``[3]`` colour behind the scene.

    Returns:
        pixel colour ``[R, 3]`` = C + T_end·background, and T_end ``[R]``.
    """
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=sigma.device).reshape(3)
    weight, t_end = packed_weights((sigma * step).to(rgb.dtype), ray_idx, num_rays)
    color = torch.zeros(num_rays, 3, dtype=rgb.dtype, device=sigma.device).index_add(
        0, ray_idx, weight[:, None] * rgb
    )
    return color + t_end[:, None] * bg, t_end


def packed_weights(
    optical_depth: torch.Tensor, ray_idx: torch.Tensor, num_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed form: weights w_k = T_k·(1 − exp(−τ_k)) ``[S]`` and T_end ``[R]``; differentiable.

    T_k = exp(−Σ_(j<k) τ_j) is a per-ray exclusive cumulative sum (float64, so long batches keep their
    precision; τ is capped at 1e4, where T is already 0); a ray without samples has T_end = 1.

    Args:
        optical_depth: ``[S]`` τ_k = σ_k·δ_k ≥ 0, the samples ordered by ray then t.
        ray_idx: ``[S]`` int64 ray of each sample, non-decreasing.
        num_rays: R.
    """
    dev, dtype = optical_depth.device, optical_depth.dtype
    if optical_depth.numel() == 0:
        return optical_depth.new_zeros(0), torch.ones(num_rays, dtype=dtype, device=dev)
    tau = optical_depth.clamp(max=1e4)
    tau64 = tau.double()
    incl = torch.cumsum(tau64, dim=0)
    starts, counts = segment_starts(ray_idx, num_rays)
    before = torch.zeros(num_rays, dtype=torch.float64, device=dev)
    before = torch.where(counts > 0, (incl - tau64)[starts.clamp(max=tau.numel() - 1)], before)
    trans = torch.exp(-(incl - tau64 - before[ray_idx])).to(dtype)  # T_k, [S]
    total = torch.zeros(num_rays, dtype=torch.float64, device=dev).index_add(0, ray_idx, tau64)
    return trans * (1.0 - torch.exp(-tau)), torch.exp(-total).to(dtype)


def transmittance_pass(
    sigma: torch.Tensor,
    row: torch.Tensor,
    slot: torch.Tensor,
    trans_in: torch.Tensor,
    step: float,
    slots: int,
    ert_threshold: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of one marching pass: ≤ ``slots`` new samples per ray onto rays with transmittance T_in.

    Samples are laid out in a padded ``[R, slots]`` table and multiplied in order, T_(k+1) = T_k·(1 − α_k).
    With ``ert_threshold`` ε a sample contributes only while the ray's T before it is ≥ ε (the ray stops
    as soon as T < ε).

    Args:
        sigma: ``[S]`` densities.
        row: ``[S]`` int64 ray (0..R−1) of each sample; slot ``[S]`` int64 its order within the ray's pass.
        trans_in: ``[R]`` transmittance before the pass.

    Returns:
        transmittance after the pass ``[R]`` and the weight T_k·α_k of each sample ``[S]`` (0 once stopped).
    """
    r = trans_in.shape[0]
    one_minus = torch.ones(r, slots, dtype=trans_in.dtype, device=trans_in.device)
    alpha = 1.0 - torch.exp(-sigma * step)
    lin = row * slots + slot
    one_minus.view(-1).index_copy_(0, lin, 1.0 - alpha)
    prod = torch.cumprod(one_minus, dim=1)  # T after each slot, relative to trans_in
    t_before = torch.ones_like(prod)
    t_before[:, 1:] = prod[:, :-1]
    t_before *= trans_in[:, None]
    tk = t_before.view(-1).index_select(0, lin)
    if ert_threshold is None:
        return prod[:, -1] * trans_in, tk * alpha
    weight = torch.where(tk >= ert_threshold, tk * alpha, torch.zeros_like(tk))
    # T after the pass: T before the first slot where the ray had stopped, else T after all slots
    stopped = t_before < ert_threshold
    none = torch.full_like(trans_in, slots, dtype=torch.int64)
    first_stop = torch.where(stopped.any(dim=1), stopped.to(torch.int8).argmax(dim=1), none)
    t_all = torch.cat((t_before, (prod[:, -1] * trans_in)[:, None]), dim=1)
    return t_all.gather(1, first_stop[:, None]).squeeze(1), weight


def composite_pass(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    row: torch.Tensor,
    slot: torch.Tensor,
    trans_in: torch.Tensor,
    step: float,
    slots: int,
    ert_threshold: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``transmittance_pass`` plus the colour it adds: (colour ``[R, 3]``, T after ``[R]``, weights ``[S]``).

    Args:
        rgb: ``[S, 3]`` sample colours; the other arguments as in ``transmittance_pass``.
    """
    trans_out, weight = transmittance_pass(sigma, row, slot, trans_in, step, slots, ert_threshold)
    color = torch.zeros(trans_in.shape[0], 3, dtype=rgb.dtype, device=rgb.device)
    color.index_add_(0, row, weight[:, None] * rgb)
    return color, trans_out, weight
