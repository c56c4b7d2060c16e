"""Stage 3, fine-tuning: photometric L2 on random training rays through the differentiable renderer.

Each step draws random pixels over all training images, marches their rays exactly as the renderer does
(ESS through the occupancy grid, no gradient), evaluates the networks on the kept samples
(`evaluate_networks`, with gradient) and composites them front to back (`composite_front_to_back`). An
ERT-style early stop keeps only the samples in front of a transmittance below a threshold: the marching
runs in passes that evaluate the new samples' densities alone (no grad) and retire the rays that stopped
(`front_samples`), so neither the marching nor the backward pass sees samples that cannot change the
pixel. The loss adds ``l2_reg`` x the sum of the L2 norms of the weight and bias tensors of ``l3`` and ``l4``
only, each norm over all networks at once (the paper's code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.camera import pixel_rays
from renderer.composite import composite_front_to_back, exclusive_optical_depth
from renderer.march import RayBatch, contributing, lattice_samples, next_samples
from renderer.networks import NetworkSpec, evaluate_density_first, evaluate_networks
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
from trainer.data.cameras import FrameRays
from trainer.distill import exponential_lr, freeze_rows
from trainer.errors import check_finite_loss
from trainer.optim import adam
from trainer.settings import MAX_LR, MAX_RAYS, MAX_SECONDS, MAX_SEED, MAX_STEPS, MAX_WEIGHT, setting
from trainer.teacher_rays import NovelRays

REGULARISED_KEYS: tuple[str, ...] = ("l3.weight", "l3.bias", "l4.weight", "l4.bias")


@dataclass
class FinetuneConfig:
    """Stage 3: photometric L2 through the differentiable multi-network renderer (ESS as the renderer)."""

    steps: int = setting(1000, ge=1, le=MAX_STEPS)
    """Optimiser steps."""
    rays_per_batch: int = setting(4096, ge=1, le=MAX_RAYS)
    """Random training rays per step, drawn over all images."""
    lr: float = setting(1e-3, gt=0, le=MAX_LR)
    """Adam learning rate at the start."""
    lr_final_factor: float = setting(0.1, gt=0, le=1)
    """The learning rate decays exponentially to lr * this at the last step."""
    l2_reg: float = setting(1e-6, ge=0, le=MAX_WEIGHT)
    """Weight of the sum of the L2 norms of the l3/l4 weight and bias tensors (each over all networks)."""
    distill_weight: float = setting(0.0, ge=0, le=MAX_WEIGHT)
    """Weight of the distillation loss (stage 2's, on ``distill_points`` fresh points per network and step)
    added to the photometric loss, so the networks stay near the teacher's field where the training images
    constrain them little; 0: the paper's photometric loss alone."""
    distill_points: int = setting(32, ge=1, le=2**16)
    """Points per network and step of the distillation term (when ``distill_weight`` > 0)."""
    teacher_rays: int = setting(0, ge=0, le=MAX_RAYS)
    """Novel rays per step (between training cameras, aimed at occupied voxels) whose target is the
    teacher's rendering (`trainer.teacher_rays`), next to the ``rays_per_batch`` training pixels; 0: none."""
    teacher_ray_pool: int = setting(0, ge=0, le=MAX_RAYS)
    """Novel rays drawn once and labelled by the teacher a step's worth at a time; once all are labelled,
    each step draws its ``teacher_rays`` from them (`trainer.teacher_rays.LabelledRayPool`), so the later
    steps render nothing with the teacher; 0: fresh rays, labelled every step."""
    teacher_ray_weight: float = setting(1.0, ge=0, le=MAX_WEIGHT)
    """Weight of the teacher rays' L2 relative to the training pixels' L2."""
    jitter: bool = setting(False)
    """Shift each training ray's sample lattice by a random fraction of a step (uniform in [-s/2, s/2)),
    re-applying the exact sample rule at the shifted points, so the networks fit a continuous field rather
    than the training rays' fixed sample positions; False: the renderer's lattice exactly."""
    ema_decay: float = setting(0.0, ge=0, lt=1)
    """Decay of an exponential moving average of the parameters, which is what the stage writes out
    (0: the last iterate)."""
    early_stop_transmittance: float = setting(1e-3, ge=0, lt=1)
    """Drop samples behind a transmittance below this (found by a no-grad pass); 0 disables."""
    max_samples_per_ray: int | None = setting(None, ge=1, le=2**16)
    """Cap on marched samples per ray (None: all occupied samples)."""
    checkpoint_seconds: float = setting(60.0, gt=0, le=MAX_SECONDS, anytime=True)
    """Write a checkpoint at least this often (seconds)."""
    checkpoint_every: int = setting(500, ge=1, le=10**12, anytime=True)
    """... and at least every this many steps."""
    scene_seconds: float = setting(120.0, gt=0, le=MAX_SECONDS, anytime=True)
    """Rewrite the output .kilo (and announce it) at least this often (seconds)."""
    seed: int = setting(0, ge=0, le=MAX_SEED)
    """Seed of the ray sampler."""


def l2_norm_regulariser(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """||l3.weight||_2 + ||l3.bias||_2 + ||l4.weight||_2 + ||l4.bias||_2 (a scalar), each norm taken over the
    whole ``[M, ...]`` tensor of all networks, as the paper's code does (one norm per multi-network
    parameter). Its gradient, W / ||W||, is about sqrt(M) times smaller per network than that of a sum of
    per-network norms, which on lego (692 networks) outweighed the photometric gradient of l3/l4.
    """
    total = torch.zeros((), device=params[REGULARISED_KEYS[0]].device)
    for key in REGULARISED_KEYS:
        total = total + torch.linalg.vector_norm(params[key])
    return total


def order_front_to_back(ray_idx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Permutation sorting samples by ray, then by t (stable); identity when already ordered."""
    if ray_idx.numel() < 2:
        return torch.arange(ray_idx.numel(), device=ray_idx.device)
    dr = ray_idx[1:] - ray_idx[:-1]
    if bool(((dr > 0) | ((dr == 0) & (t[1:] >= t[:-1]))).all()):
        return torch.arange(ray_idx.numel(), device=ray_idx.device)
    o1 = torch.argsort(t, stable=True)
    o2 = torch.argsort(ray_idx[o1], stable=True)
    return o1[o2]


@dataclass
class FinetunePixelSampler:
    """All training pixels: ``images [N, H, W, 3]``, ``c2w [N, 4, 4]``, pinhole focal and principal point.

    Draws pixels uniformly over all images as one flat index on the images' device (one ``randint`` per
    batch); the teachers' sampler (`trainer.teachers.TeacherPixelSampler`) draws differently. A dataset whose
    frames differ in size or intrinsics (``frames``, `trainer.data.cameras.FrameRays`) draws its flat index
    over each frame's own pixels and takes each frame's intrinsics.
    """

    images: torch.Tensor
    c2w: torch.Tensor
    focal: float
    cx: float
    cy: float
    frames: FrameRays | None = None

    @staticmethod
    def from_dataset(ds: Any, device: torch.device | str) -> FinetunePixelSampler:
        """From a `trainer.data.Dataset`."""
        cx = ds.cx if getattr(ds, "cx", None) is not None else ds.width / 2
        cy = ds.cy if getattr(ds, "cy", None) is not None else ds.height / 2
        frames = FrameRays(ds, device)
        return FinetunePixelSampler(
            images=torch.as_tensor(np.ascontiguousarray(ds.images), dtype=torch.float32, device=device),
            c2w=frames.c2w,
            focal=float(ds.focal),
            cx=float(cx),
            cy=float(cy),
            frames=None if frames.uniform else frames,
        )

    def sample(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` random pixels over all images: origins, dirs, colours ``[R, 3]``."""
        if self.frames is not None:
            img, py, px = self.frames.draw_pixels(count, generator, self.images.device)
            o, d = self.frames.rays(img, px, py)
            return o, d, self.images[img, py, px]
        n, h, w, _ = self.images.shape
        flat = torch.randint(0, n * h * w, (count,), generator=generator, device=self.images.device)
        img = flat // (h * w)
        py = (flat // w) % h
        px = flat % w
        o, d = pixel_rays(self.c2w[img], px, py, self.focal, self.cx, self.cy)
        return o, d, self.images[img, py, px]


@dataclass
class FinetuneState:
    """Resumable state: step, parameters (float32), optimiser, elapsed seconds, loss history."""

    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    elapsed: float = 0.0
    history: list[tuple[int, float, float]] = field(default_factory=list)
    ema: dict[str, torch.Tensor] | None = None
    """Moving average of ``params`` (when ``FinetuneConfig.ema_decay`` > 0)."""

    def output_params(self) -> dict[str, torch.Tensor]:
        """The parameters to write out: the moving average when there is one, else the last iterate."""
        return self.ema if self.ema is not None else self.params

    def save(self, path: str | Path) -> None:
        """Atomic save of the state (trainer.checkpoint)."""
        blob = {
            "step": self.step,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizer": self.optimizer,
            "elapsed": self.elapsed,
            "history": self.history,
            "ema": None if self.ema is None else {k: v.detach().cpu() for k, v in self.ema.items()},
        }
        save_checkpoint(path, blob)

    @staticmethod
    def load(path: str | Path, device: torch.device | str) -> FinetuneState:
        """Load a state saved by `save`; `trainer.checkpoint.CheckpointError` (one line) when malformed."""
        blob = load_checkpoint(path, device)
        params = checkpoint_tensors(path, blob, "params", device)
        assert params is not None
        check_optimizer_state(path, blob.get("optimizer"), params)
        ema = checkpoint_tensors(path, blob, "ema", device, optional=True)
        if ema is not None and {k: v.shape for k, v in ema.items()} != {
            k: v.shape for k, v in params.items()
        }:
            raise CheckpointError(path, "ema does not hold the same tensors as params")
        return FinetuneState(
            step=checkpoint_step(path, blob),
            params=params,
            optimizer=blob.get("optimizer"),
            elapsed=checkpoint_number(path, blob, "elapsed"),
            history=checkpoint_history(path, blob, 3),  # type: ignore[arg-type]
            ema=ema,
        )


def shift_samples(
    rs: Any,
    ray_idx: torch.Tensor,
    t: torch.Tensor,
    x: torch.Tensor,
    net: torch.Tensor,
    dirs: torch.Tensor,
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the samples ``x [S, 3]`` of each ray by ``shift [R]`` along its direction ``dirs [R, 3]`` and
    keep those that still contribute under the exact rule (`contributing`, ESS), with their new network.

    Returns ``ray_idx [S']``, ``t [S']``, ``x [S', 3]``, ``net [S']``; the order within a ray is unchanged.
    """
    sh = shift[ray_idx]
    x2 = x + sh[:, None] * dirs[ray_idx]
    ok, net2 = contributing(rs, x2, True)
    return ray_idx[ok], (t + sh)[ok], x2[ok], net2[ok]


@dataclass
class FrontSamples:
    """The samples a training ray is rendered from, ordered by ray then t (no grad)."""

    ray_idx: torch.Tensor
    """``[S]`` int64 ray of each sample."""
    x: torch.Tensor
    """``[S, 3]`` float32 world position."""
    net: torch.Tensor
    """``[S]`` int64 network of the sample's cell."""
    marched: int
    """Contributing samples the marching visited (those behind a ray's stop are never reached)."""


FRONT_SAMPLES_PER_PASS = 16
"""Samples marched per live ray and pass by `front_samples` (lego's rays stop after a few)."""


def front_samples(
    params: Mapping[str, torch.Tensor],
    rs: Any,
    spec: NetworkSpec,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    step_size: float,
    threshold: float,
    *,
    max_samples_per_ray: int | None = None,
    shift: torch.Tensor | None = None,
    samples_per_pass: int = FRONT_SAMPLES_PER_PASS,
) -> FrontSamples:
    """The contributing samples of rays ``origins/dirs [R, 3]`` (the renderer's rule, ESS) whose
    transmittance in front of them, under ``params``' densities, is at least ``threshold`` (0: all).

    The rays march in passes of ≤ ``samples_per_pass`` samples each (`renderer.march.next_samples`); each
    pass evaluates only the density trunk of its new samples and retires the rays whose transmittance fell
    below ``threshold``, so the samples behind a ray's stop are neither marched nor evaluated. The kept
    samples are those of marching every sample and keeping the ones with T_k ≥ threshold. ``shift [R]``
    moves each pass's samples along their ray (`shift_samples`); ``max_samples_per_ray`` marches only each
    ray's first samples (one pass).
    """
    with torch.no_grad():
        r = origins.shape[0]
        rays = RayBatch.start(rs, origins, dirs, step_size)
        per_pass = samples_per_pass if threshold > 0 else 64
        if max_samples_per_ray is not None:
            per_pass = max_samples_per_ray
        live = torch.nonzero(rays.n > 0).squeeze(1)
        depth = torch.zeros(r, dtype=torch.float64, device=origins.device)  # optical depth so far
        parts: list[tuple[torch.Tensor, ...]] = []
        marched = 0
        while live.numel() > 0:
            ray, k, _ = next_samples(rs, rays, step_size, per_pass, True, live)
            found = lattice_samples(rs, rays, ray, k, step_size, True)
            ray, t, x, net = found.ray_idx, found.t, found.x, found.net
            if shift is not None:
                ray, t, x, net = shift_samples(rs, ray, t, x, net, dirs, shift)
            marched += int(ray.numel())
            if threshold > 0 and ray.numel() > 0:
                sigma = evaluate_density_first(params, x, net, scene_meta=spec)[0]
                before = depth[ray] + exclusive_optical_depth(sigma, ray, step_size)
                keep = (torch.exp(-before) >= threshold).nonzero().squeeze(1)
                depth.index_add_(0, ray, sigma.double() * step_size)
                ray, t, x, net = ray[keep], t[keep], x[keep], net[keep]
            parts.append((ray, t, x, net))
            if max_samples_per_ray is not None:
                break
            done = rays.k[live] >= rays.n[live]
            if threshold > 0:
                done |= torch.exp(-depth[live]) < threshold
            live = live[~done]
        if not parts:
            empty = torch.zeros(0, dtype=torch.int64, device=origins.device)
            return FrontSamples(empty, origins.new_zeros(0, 3), empty.clone(), 0)
        ray, t, x, net = (torch.cat([p[i] for p in parts]) for i in range(4))
        order = order_front_to_back(ray, t)
        return FrontSamples(ray[order], x[order], net[order].long(), marched)


def render_training_rays(
    params: Mapping[str, torch.Tensor],
    rs: Any,
    spec: NetworkSpec,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    step_size: float,
    background: torch.Tensor,
    *,
    early_stop_transmittance: float = 0.0,
    max_samples_per_ray: int | None = None,
    shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Differentiable colours ``[R, 3]`` of rays ``origins/dirs [R, 3]`` (the renderer's rule), and counts.

    The samples (`front_samples`: ESS, and with ``early_stop_transmittance`` only those in front of a
    transmittance below it) are found without gradient; the networks and the compositing carry the
    gradient to ``params``. ``shift [R]`` (world units, within ±s/2 for jitter), when given, moves every
    sample of a ray along it by that much (`shift_samples`).
    """
    s = front_samples(
        params,
        rs,
        spec,
        origins,
        dirs,
        step_size,
        early_stop_transmittance,
        max_samples_per_ray=max_samples_per_ray,
        shift=shift,
    )
    d = dirs[s.ray_idx]
    sigma, rgb = evaluate_networks(params, s.x, d, s.net, scene_meta=spec)
    color, _ = composite_front_to_back(sigma, rgb, s.ray_idx, step_size, origins.shape[0], background)
    return color, {"marched": s.marched, "evaluated": int(s.ray_idx.numel())}


def finetune(
    rays: FinetunePixelSampler,
    rs: Any,
    spec: NetworkSpec,
    step_size: float,
    background: torch.Tensor,
    cfg: FinetuneConfig,
    state: FinetuneState,
    *,
    on_step: Callable[[int, int, float, float], None] | None = None,
    checkpoint: Callable[[FinetuneState], None] | None = None,
    publish: Callable[[FinetuneState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra_loss: Callable[[Mapping[str, torch.Tensor], int], torch.Tensor] | None = None,
    novel_rays: NovelRays | None = None,
    frozen_rows: Mapping[str, torch.Tensor] | None = None,
) -> FinetuneState:
    """Fine-tune from ``state.step`` to ``cfg.steps``; returns the final state.

    ``extra_loss(params, step)``, when given, is added to each step's loss (the pipeline's distillation
    term, ``cfg.distill_weight`` x stage 2's loss). ``novel_rays`` (`trainer.teacher_rays.NovelRays`),
    when given and ``cfg.teacher_rays`` > 0, adds that many teacher-labelled novel rays per step, weighted
    by ``cfg.teacher_ray_weight``.

    ``on_step(step, total, loss, psnr)`` after every step (psnr of the photometric term);
    ``checkpoint(state)`` every ``cfg.checkpoint_seconds`` / ``cfg.checkpoint_every`` steps and at the end;
    ``publish(state)`` every ``cfg.scene_seconds`` (the pipeline rewrites the output .kilo);
    ``should_stop()`` polled each step: when true, checkpoint and return early. ``frozen_rows``:
    ``{key: [in] bool}`` rows of weights held at zero (`trainer.distill.freeze_rows`).
    """
    device = rays.images.device
    params = {
        k: v.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        for k, v in state.params.items()  # a copy: the caller's state is left as it was
    }
    freeze_rows(params, frozen_rows)
    opt = adam(params.values(), lr=cfg.lr)
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
    bg = background.to(device=device, dtype=torch.float32)
    gen = torch.Generator(device=device)
    t_start = time.monotonic() - state.elapsed
    last_ckpt_t = last_pub_t = time.monotonic()
    last_ckpt_step = state.step
    step = state.step
    history = list(state.history)
    ema: dict[str, torch.Tensor] | None = None
    if cfg.ema_decay > 0:
        source = state.ema if state.ema is not None else params
        ema = {k: v.detach().to(device=device, dtype=torch.float32).clone() for k, v in source.items()}

    def snapshot() -> FinetuneState:
        return FinetuneState(
            step=step,
            params={k: v.detach().clone() for k, v in params.items()},
            optimizer=opt.state_dict(),
            elapsed=time.monotonic() - t_start,
            history=list(history),
            ema=None if ema is None else {k: v.clone() for k, v in ema.items()},
        )

    while step < cfg.steps:
        if should_stop is not None and should_stop():
            break
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = exponential_lr(cfg.lr, cfg.lr_final_factor, step, cfg.steps)
        o, d, target = rays.sample(cfg.rays_per_batch, gen)
        n_real = o.shape[0]
        if novel_rays is not None and cfg.teacher_rays > 0:
            o2, d2, t2 = novel_rays.batch(step, cfg.teacher_rays, gen)
            o, d, target = torch.cat([o, o2]), torch.cat([d, d2]), torch.cat([target, t2])
        shift = None
        if cfg.jitter:
            shift = (torch.rand(o.shape[0], generator=gen, device=device) - 0.5) * step_size
        color, _ = render_training_rays(
            params,
            rs,
            spec,
            o,
            d,
            step_size,
            bg,
            early_stop_transmittance=cfg.early_stop_transmittance,
            max_samples_per_ray=cfg.max_samples_per_ray,
            shift=shift,
        )
        sq = (color - target).square()
        photo = sq[:n_real].mean()
        loss = photo + cfg.l2_reg * l2_norm_regulariser(params)
        if sq.shape[0] > n_real:
            loss = loss + cfg.teacher_ray_weight * sq[n_real:].mean()
        if extra_loss is not None:
            loss = loss + extra_loss(params, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        check_finite_loss("finetune", step + 1, float(loss.detach()), "finetune.lr")
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in params.items():
                    ema[k].lerp_(v.detach(), 1.0 - cfg.ema_decay)
        step += 1
        mse = float(photo.detach())
        psnr = -10.0 * float(np.log10(max(mse, 1e-12)))
        if step % 25 == 0 or step == cfg.steps:
            history.append((step, float(loss.detach()), psnr))
        if on_step is not None:
            on_step(step, cfg.steps, float(loss.detach()), psnr)
        now = time.monotonic()
        if checkpoint is not None and (
            now - last_ckpt_t >= cfg.checkpoint_seconds or step - last_ckpt_step >= cfg.checkpoint_every
        ):
            checkpoint(snapshot())
            last_ckpt_t, last_ckpt_step = now, step
        if publish is not None and now - last_pub_t >= cfg.scene_seconds and step < cfg.steps:
            publish(snapshot())
            last_pub_t = now
    final = snapshot()
    if checkpoint is not None:
        checkpoint(final)
    return final
