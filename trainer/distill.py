"""Stage 2, distillation: every tiny network regresses the teacher's alpha and colour inside its own cell.

All M networks train at once with `evaluate_networks_batched` (one `bmm` per layer). Each step draws, per
network, B points uniform in its cell (most of them inside the cell's occupied voxels) and unit directions
from a random training camera to each point (or uniform on the sphere, as the paper); the targets are the
teacher's alpha = 1 - exp(-sigma * s) (s = the scene step) and rgb. Points are generated on the fly, so
memory stays bounded by one step's M * B points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from renderer.networks import NetworkSpec, evaluate_networks_batched
from trainer.checkpoint import (
    CheckpointError,
    check_optimizer_state,
    checkpoint_history,
    checkpoint_number,
    checkpoint_step,
    checkpoint_tensors,
    load_checkpoint,
    save_checkpoint,
)
from trainer.errors import check_finite_loss
from trainer.optim import adam
from trainer.settings import MAX_LR, MAX_SECONDS, MAX_SEED, MAX_STEPS, MAX_WEIGHT, setting


@dataclass
class DistillConfig:
    """Stage 2: every network regresses the teacher's alpha and colour on points of its own cell."""

    steps: int = setting(1500, ge=1, le=MAX_STEPS)
    """Optimiser steps (all networks step together)."""
    points_per_network: int = setting(128, ge=1, le=2**16)
    """Points B drawn per network per step (generated on the fly)."""
    occupied_fraction: float = setting(0.9, ge=0, le=1)
    """Share of each network's points drawn inside its occupied voxels; the rest are uniform in the cell."""
    lr: float = setting(1e-3, gt=0, le=MAX_LR)
    """Adam learning rate at the start."""
    lr_final_factor: float = setting(0.1, gt=0, le=1)
    """The learning rate decays exponentially to lr * this at the last step."""
    rgb_weight: float = setting(1.0, ge=0, le=MAX_WEIGHT)
    """Weight of the colour L2 term relative to the alpha L2 term."""
    rgb_by_alpha: bool = setting(False)
    """Weight each point's colour error by the teacher's alpha there (colour shows only where there is
    density), normalised by the mean alpha of the draw so the term keeps its scale."""
    visibility_floor: float | None = setting(None, gt=0, le=1)
    """Pick each network's occupied voxels with probability proportional to max(the teacher's largest
    rendering weight along training rays in the voxel, this floor) (grid teacher); None: uniformly."""
    camera_directions: bool = setting(False)
    """True: view directions from a random training camera to each point (the directions rendering asks
    for); False: uniform on the sphere, as the paper (on lego 0.08 dB better after fine-tuning)."""
    checkpoint_seconds: float = setting(60.0, gt=0, le=MAX_SECONDS, anytime=True)
    """Write a checkpoint at least this often (seconds)."""
    checkpoint_every: int = setting(500, ge=1, le=10**12, anytime=True)
    """... and at least every this many steps."""
    error_ema: float = setting(0.95, ge=0, lt=1)
    """Smoothing of the per-network error that is reported at the end."""
    seed: int = setting(0, ge=0, le=MAX_SEED)
    """Seed of the point sampler and the student initialisation."""


class DensityColourField(Protocol):
    """What distillation needs from a teacher: sigma [N] and rgb [N, 3] at points x [N, 3], dirs d [N, 3]."""

    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class CellSampler:
    """Per-network point sampler: uniform in the cell, biased to the cell's occupied voxels.

    Built from the scene layout. ``cell_min [M, 3]`` world corner of each network's cell, ``cell_size [3]``,
    ``sub (3,)`` occupancy voxels per cell per axis, ``voxels [V, 3]`` int64 local voxel coordinates of the
    occupied voxels grouped by network, ``offset [M]`` / ``count [M]`` their ranges.
    """

    cell_min: torch.Tensor
    cell_size: torch.Tensor
    sub: torch.Tensor
    voxels: torch.Tensor
    offset: torch.Tensor
    count: torch.Tensor
    camera_origins: torch.Tensor | None = None
    """``[K, 3]`` training camera centres: directions point from one of them (at random) to each point."""
    voxel_cdf: torch.Tensor | None = None
    """``[V]`` float64 running sum of the voxels' sampling weights (`set_voxel_weights`); None: uniform."""

    @property
    def num_networks(self) -> int:
        """M."""
        return int(self.cell_min.shape[0])

    @staticmethod
    def from_layout(
        bbox_min: np.ndarray,
        bbox_max: np.ndarray,
        network_index: np.ndarray,
        occupancy: np.ndarray,
        device: torch.device | str = "cpu",
    ) -> CellSampler:
        """From ``network_index`` int32 [rx, ry, rz] and ``occupancy`` bool [ox, oy, oz] (ox = rx*sx, ...)."""
        res = np.array(network_index.shape, dtype=np.int64)
        ores = np.array(occupancy.shape, dtype=np.int64)
        sub = ores // res
        if np.any(sub * res != ores):
            raise ValueError(f"occupancy_res {tuple(ores)} is not a multiple of grid_res {tuple(res)}")
        bmin = np.asarray(bbox_min, dtype=np.float64)
        cell = (np.asarray(bbox_max, dtype=np.float64) - bmin) / res
        flat = network_index.reshape(-1)
        m_count = int(flat.max()) + 1 if flat.size and flat.max() >= 0 else 0
        cell_of_net = np.zeros(m_count, dtype=np.int64)
        ids = np.nonzero(flat >= 0)[0]
        cell_of_net[flat[ids]] = ids
        cells3 = np.stack(np.unravel_index(cell_of_net, tuple(res)), axis=1)  # [M, 3]
        # occupancy per cell: [rx, sx, ry, sy, rz, sz] -> [R, sx, sy, sz]
        occ_cells = occupancy.reshape(res[0], sub[0], res[1], sub[1], res[2], sub[2]).transpose(
            0, 2, 4, 1, 3, 5
        )
        occ_nets = occ_cells.reshape(-1, int(sub.prod()))[cell_of_net]  # [M, S]
        net_ids, vox = np.nonzero(occ_nets)
        count = np.bincount(net_ids, minlength=m_count)
        offset = np.concatenate([[0], np.cumsum(count)[:-1]]) if m_count else np.zeros(0, np.int64)
        voxels = np.stack(np.unravel_index(vox, tuple(sub)), axis=1)
        dev = torch.device(device)
        return CellSampler(
            cell_min=torch.as_tensor(bmin + cells3 * cell, dtype=torch.float32, device=dev),
            cell_size=torch.as_tensor(cell, dtype=torch.float32, device=dev),
            sub=torch.as_tensor(sub, dtype=torch.float32, device=dev),
            voxels=torch.as_tensor(voxels, dtype=torch.int64, device=dev).reshape(-1, 3),
            offset=torch.as_tensor(offset, dtype=torch.int64, device=dev),
            count=torch.as_tensor(count, dtype=torch.int64, device=dev),
        )

    def voxel_centres(self) -> torch.Tensor:
        """``[V, 3]`` world centres of the occupied voxels, in the order of ``voxels``."""
        net = torch.repeat_interleave(torch.arange(self.num_networks, device=self.count.device), self.count)
        return self.cell_min[net] + (self.voxels.float() + 0.5) / self.sub * self.cell_size

    def set_voxel_weights(self, weights: torch.Tensor) -> None:
        """Pick each network's occupied voxels with probability proportional to ``weights [V]`` (> 0)."""
        if weights.shape != (self.voxels.shape[0],):
            raise ValueError(f"voxel weights of shape {tuple(weights.shape)}, need ({self.voxels.shape[0]},)")
        if not bool((weights > 0).all()):
            raise ValueError("voxel weights must be positive")
        self.voxel_cdf = torch.cumsum(weights.double(), 0)

    def _pick_voxels(self, n: int, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``[M, n]`` int64 indices into ``voxels``, each network's own (uniform or by ``voxel_cdf``)."""
        last = (self.offset + self.count - 1).clamp_min(0)
        if self.voxel_cdf is None:
            pick = (rand(self.num_networks, n) * self.count.clamp_min(1)[:, None]).long()
            pick = torch.minimum(pick, (self.count - 1).clamp_min(0)[:, None])
            return (self.offset[:, None] + pick).clamp_max(self.voxels.shape[0] - 1)
        cdf = self.voxel_cdf
        hi = cdf[last]
        lo = torch.where(self.offset > 0, cdf[(self.offset - 1).clamp_min(0)], torch.zeros_like(hi))
        r = lo[:, None] + rand(self.num_networks, n).double() * (hi - lo)[:, None]
        idx = torch.searchsorted(cdf, r.contiguous(), right=True)
        return torch.minimum(torch.maximum(idx, self.offset[:, None]), last[:, None])

    def sample(
        self, points_per_network: int, occupied_fraction: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw points: local ``u [M, B, 3]`` in [-1, 1], world ``x [M, B, 3]``, unit ``d [M, B, 3]``."""
        m, b = self.num_networks, points_per_network
        dev = self.cell_min.device
        n_occ = int(round(b * occupied_fraction))

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev)

        pos = rand(m, b, 3)  # position in the cell, [0, 1)
        if n_occ > 0 and self.voxels.shape[0] > 0:
            has = self.count > 0
            vox = self.voxels[self._pick_voxels(n_occ, rand)]  # [M, n, 3]
            in_vox = (vox.float() + rand(m, n_occ, 3)) / self.sub
            pos[:, :n_occ] = torch.where(has[:, None, None], in_vox, pos[:, :n_occ])
        u = pos * 2.0 - 1.0
        x = self.cell_min[:, None, :] + pos * self.cell_size
        if self.camera_origins is not None and self.camera_origins.shape[0] > 0:
            k = self.camera_origins.shape[0]
            cam = (rand(m, b) * k).long().clamp_max(k - 1)
            d = x - self.camera_origins[cam]
        else:
            d = torch.randn(m, b, 3, generator=generator, device=dev)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return u, x, d


def alpha_from_sigma(sigma: torch.Tensor, step: float) -> torch.Tensor:
    """alpha = 1 - exp(-sigma * step), any shape."""
    return -torch.expm1(-sigma * step)


def distill_losses(
    sigma_s: torch.Tensor,
    rgb_s: torch.Tensor,
    sigma_t: torch.Tensor,
    rgb_t: torch.Tensor,
    step: float,
    rgb_weight: float,
    rgb_by_alpha: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-network error [M] = mean_B (alpha_s - alpha_t)^2 + w * mean_B,c (rgb_s - rgb_t)^2, and the loss.

    ``sigma_* [M, B]``, ``rgb_* [M, B, 3]``. The loss is the mean over networks. With ``rgb_by_alpha`` each
    point's colour error is multiplied by alpha_t / mean(alpha_t) (the mean over all M x B points).
    """
    alpha_t = alpha_from_sigma(sigma_t, step)
    err_alpha = (alpha_from_sigma(sigma_s, step) - alpha_t).square().mean(dim=1)
    sq_rgb = (rgb_s - rgb_t).square()
    if rgb_by_alpha:
        sq_rgb = sq_rgb * (alpha_t / alpha_t.mean().clamp_min(1e-6)).detach()[..., None]
    err_rgb = sq_rgb.mean(dim=(1, 2))
    per_net = err_alpha + rgb_weight * err_rgb
    return per_net, per_net.mean()


@dataclass
class DistillState:
    """Resumable state: step count, student parameters (float32), optimiser and the smoothed errors."""

    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    error: torch.Tensor | None = None
    elapsed: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        """Atomic save of the state (trainer.checkpoint)."""
        blob = {
            "step": self.step,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizer": self.optimizer,
            "error": None if self.error is None else self.error.cpu(),
            "elapsed": self.elapsed,
            "history": self.history,
        }
        save_checkpoint(path, blob)

    @staticmethod
    def load(path: str | Path, device: torch.device | str) -> DistillState:
        """Load a state saved by `save`; `trainer.checkpoint.CheckpointError` (one line) when malformed."""
        blob = load_checkpoint(path, device)
        params = checkpoint_tensors(path, blob, "params", device)
        assert params is not None
        check_optimizer_state(path, blob.get("optimizer"), params)
        error = blob.get("error")
        if error is not None and (not isinstance(error, torch.Tensor) or error.ndim != 1):
            raise CheckpointError(path, "error must be a 1-D tensor or null")
        return DistillState(
            step=checkpoint_step(path, blob),
            params=params,
            optimizer=blob.get("optimizer"),
            error=None if error is None else error.to(device),
            elapsed=checkpoint_number(path, blob, "elapsed"),
            history=checkpoint_history(path, blob, 2),  # type: ignore[arg-type]
        )


def distill_step_loss(
    teacher: DensityColourField,
    sampler: CellSampler,
    params: Mapping[str, torch.Tensor],
    spec: NetworkSpec,
    step_size: float,
    points_per_network: int,
    occupied_fraction: float,
    rgb_weight: float,
    generator: torch.Generator,
    rgb_by_alpha: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of the distillation objective: per-network error ``[M]`` and the loss (differentiable in
    ``params``), on ``points_per_network`` fresh points per network."""
    u, x, d = sampler.sample(points_per_network, occupied_fraction, generator)
    with torch.no_grad():
        sigma_t, rgb_t = teacher.query(x.reshape(-1, 3), d.reshape(-1, 3))
        sigma_t = sigma_t.reshape(u.shape[0], u.shape[1]).float()
        rgb_t = rgb_t.reshape(u.shape[0], u.shape[1], 3).float()
    sigma_s, rgb_s = evaluate_networks_batched(params, u, d, spec)
    return distill_losses(sigma_s, rgb_s, sigma_t, rgb_t, step_size, rgb_weight, rgb_by_alpha)


def untrained_encoding_rows(lead: int, num_freqs: int, trained: int | None) -> torch.Tensor | None:
    """``[lead + 3 (1 + 2 num_freqs)]`` bool: the rows of a weight fed by ``lead`` other inputs and then an
    encoding (x, then sin and cos of each octave) that belong to the octaves ``>= trained``; None when every
    octave is trained. l0: lead 0 (position); l3: lead H (the feature, then the direction)."""
    if trained is None or trained >= num_freqs:
        return None
    rows = torch.zeros(lead + 3 * (1 + 2 * num_freqs), dtype=torch.bool)
    rows[lead + 3 * (1 + 2 * trained) :] = True
    return rows


def freeze_rows(params: Mapping[str, torch.Tensor], frozen: Mapping[str, torch.Tensor] | None) -> None:
    """Zero rows ``frozen[key] [in]`` of each leaf weight ``params[key] [M, in, out]`` and keep them zero:
    their gradient is masked out, so Adam never moves them (the scene format keeps its width; those inputs
    are unused)."""
    for key, rows in (frozen or {}).items():
        weight = params[key]
        mask = rows.to(weight.device)[None, :, None]
        with torch.no_grad():
            weight.masked_fill_(mask, 0.0)
        weight.register_hook(lambda g, mask=mask: g.masked_fill(mask, 0.0))


def exponential_lr(lr: float, final_factor: float, step: int, total: int) -> float:
    """lr * final_factor ** (step / total)."""
    return lr * final_factor ** (step / max(total, 1))


def distill(
    teacher: DensityColourField,
    sampler: CellSampler,
    spec: NetworkSpec,
    step_size: float,
    cfg: DistillConfig,
    state: DistillState,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
    checkpoint: Callable[[DistillState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    frozen_rows: Mapping[str, torch.Tensor] | None = None,
) -> DistillState:
    """Run distillation from ``state.step`` to ``cfg.steps`` and return the final state.

    ``frozen_rows``: ``{key: [in] bool}`` rows of weights held at zero (`freeze_rows`).

    ``on_step(step, total, loss)`` after each step; ``checkpoint(state)`` every ``cfg.checkpoint_seconds`` /
    ``cfg.checkpoint_every`` steps and at the end; ``should_stop()`` is polled each step and, when true, the
    state is checkpointed and returned early (``state.step < cfg.steps``).
    """
    device = sampler.cell_min.device
    params = {
        k: v.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        for k, v in state.params.items()
    }
    freeze_rows(params, frozen_rows)
    opt = adam(params.values(), lr=cfg.lr)
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
    error = (
        state.error
        if state.error is not None
        else torch.full((sampler.num_networks,), float("nan"), device=device)
    )
    gen = torch.Generator(device=device)
    last_ckpt_t = time.monotonic()
    last_ckpt_step = state.step
    t_start = time.monotonic() - state.elapsed
    step = state.step

    def snapshot() -> DistillState:
        return DistillState(
            step=step,
            params={k: v.detach().clone() for k, v in params.items()},
            optimizer=opt.state_dict(),
            error=error.clone(),
            elapsed=time.monotonic() - t_start,
            history=list(state.history),
        )

    while step < cfg.steps:
        if should_stop is not None and should_stop():
            break
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = exponential_lr(cfg.lr, cfg.lr_final_factor, step, cfg.steps)
        per_net, loss = distill_step_loss(
            teacher,
            sampler,
            params,
            spec,
            step_size,
            cfg.points_per_network,
            cfg.occupied_fraction,
            cfg.rgb_weight,
            gen,
            cfg.rgb_by_alpha,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        loss_v = float(loss.detach())
        check_finite_loss("distill", step + 1, loss_v, "distill.lr")
        opt.step()
        with torch.no_grad():
            pn = per_net.detach()
            error = torch.where(torch.isnan(error), pn, cfg.error_ema * error + (1 - cfg.error_ema) * pn)
        step += 1
        if step % 50 == 0 or step == cfg.steps:
            state.history.append((step, loss_v))
        if on_step is not None:
            on_step(step, cfg.steps, loss_v)
        now = time.monotonic()
        if checkpoint is not None and (
            now - last_ckpt_t >= cfg.checkpoint_seconds or step - last_ckpt_step >= cfg.checkpoint_every
        ):
            checkpoint(snapshot())
            last_ckpt_t, last_ckpt_step = now, step
    final = snapshot()
    if checkpoint is not None:
        checkpoint(final)
    return final


def initial_state(weights: Mapping[str, torch.Tensor], density_shift: float) -> DistillState:
    """Step-0 state from initial student ``weights`` with ``density_shift`` added to l2.bias[:, 0]."""
    params = {k: v.detach().float().clone() for k, v in weights.items()}
    params["l2.bias"][:, 0] += density_shift
    return DistillState(step=0, params=params)


def error_report(error: torch.Tensor, network_cells: np.ndarray) -> dict[str, Any]:
    """Summary and per-network final errors: ``error [M]``, ``network_cells [M, 3]`` grid coordinates."""
    e = error.detach().cpu().double().numpy()
    finite = e[np.isfinite(e)]
    order = np.argsort(-np.nan_to_num(e, nan=-1.0))
    worst = [
        {"network": int(i), "cell": [int(c) for c in network_cells[i]], "error": float(e[i])}
        for i in order[:10]
    ]
    return {
        "num_networks": int(e.size),
        "mean": float(finite.mean()) if finite.size else math.nan,
        "median": float(np.median(finite)) if finite.size else math.nan,
        "p95": float(np.percentile(finite, 95)) if finite.size else math.nan,
        "max": float(finite.max()) if finite.size else math.nan,
        "worst": worst,
        "per_network": [float(v) for v in e],
    }
