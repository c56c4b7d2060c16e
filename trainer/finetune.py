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
from renderer.composite import composite_front_to_back
from renderer.networks import NetworkSpec, evaluate_networks
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
from trainer.front import NativeMarcher, Passes, TorchPasses, front_samples, native_marcher
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
    native_marching: bool = setting(True)
    """Find each step's samples with the native CPU kernels (`trainer.front.NativePasses`: the renderer's
    own marching and network evaluation) when training on the CPU and the library is built; False, or
    without the library: the torch marcher (`trainer.front.TorchPasses`)."""
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
    marcher: NativeMarcher | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Differentiable colours ``[R, 3]`` of rays ``origins/dirs [R, 3]`` (the renderer's rule), and counts.

    The samples (`front_samples`: ESS, and with ``early_stop_transmittance`` only those in front of a
    transmittance below it) are found without gradient; the networks and the compositing carry the
    gradient to ``params``. ``shift [R]`` (world units, within ±s/2 for jitter), when given, moves every
    sample of a ray along it by that much (`shift_samples`). ``marcher`` (`trainer.front.NativeMarcher`,
    made over these ``params``), when given, finds the samples with the native kernels (CPU rays).
    """
    if marcher is not None and origins.device.type == "cpu":
        passes: Passes = marcher.start(origins, dirs, shift)
    else:
        passes = TorchPasses(params, rs, spec, origins, dirs, step_size, shift)
    s = front_samples(
        passes,
        origins.shape[0],
        step_size,
        early_stop_transmittance,
        max_samples_per_ray=max_samples_per_ray,
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
    marcher = native_marcher(rs, params) if cfg.native_marching and device.type == "cpu" else None
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
            marcher=marcher,
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
