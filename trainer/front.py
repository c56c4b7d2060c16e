"""The samples a training ray is rendered from: its contributing lattice samples (the renderer's rule, ESS)
in front of an early stop, found without gradient (`front_samples`).

The rays march in passes; each pass evaluates only its new samples' densities and retires the rays whose
transmittance fell below the threshold, so neither the marching nor the backward pass of fine-tuning sees
samples that cannot change the pixel. Two marchers give the passes: `TorchPasses` (``renderer.march``, any
device) and `NativePasses` (the native CPU kernels, ``renderer.native.steps``: the renderer's own
``march_pass`` and network evaluation), with the same contract; the parity test runs both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from renderer.composite import exclusive_optical_depth
from renderer.march import RayBatch, contributing, lattice_samples, lattice_t, next_samples
from renderer.networks import NetworkSpec, evaluate_density_first

FRONT_SAMPLES_PER_PASS = 16
"""Samples marched per live ray and pass by `front_samples` (lego's rays stop after a few)."""
NO_STOP_SAMPLES_PER_PASS = 64
"""Samples per live ray and pass when no early stop is asked for (all samples are kept)."""


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


class Passes(Protocol):
    """A batch of rays marching in passes (the state of `front_samples`' loop)."""

    device: torch.device
    """Where the rays and the returned samples live."""

    def remaining(self, live: torch.Tensor) -> torch.Tensor:
        """``[A]`` bool: which of the rays ``live [A]`` have lattice samples left to examine."""
        ...

    def next(self, live: torch.Tensor, per_pass: int) -> tuple[torch.Tensor, ...]:
        """The next ≤ ``per_pass`` contributing samples of each ray in ``live``: ray ``[S]`` int64, t ``[S]``,
        x ``[S, 3]``, net ``[S]`` int64, ordered by ray then t within the pass."""
        ...

    def density(self, x: torch.Tensor, ray: torch.Tensor, net: torch.Tensor) -> torch.Tensor:
        """σ ``[S]`` of network ``net`` at ``x`` (samples of rays ``ray``) under the current weights."""
        ...


class TorchPasses:
    """`Passes` by ``renderer.march`` (`next_samples`, then the exact per-sample rule of `lattice_samples`)
    and the density trunk of ``renderer.networks``; any device. ``shift [R]`` moves each pass's samples
    along their ray (`shift_samples`)."""

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        rs: Any,
        spec: NetworkSpec,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        step: float,
        shift: torch.Tensor | None = None,
    ) -> None:
        self.params, self.rs, self.spec, self.step, self.shift = params, rs, spec, step, shift
        self.dirs, self.device = dirs, origins.device
        self.rays = RayBatch.start(rs, origins, dirs, step)

    def remaining(self, live: torch.Tensor) -> torch.Tensor:
        return self.rays.k[live] < self.rays.n[live]

    def next(self, live: torch.Tensor, per_pass: int) -> tuple[torch.Tensor, ...]:
        ray, k, _ = next_samples(self.rs, self.rays, self.step, per_pass, True, live)
        found = lattice_samples(self.rs, self.rays, ray, k, self.step, True)
        out = found.ray_idx, found.t, found.x, found.net
        if self.shift is not None:
            out = shift_samples(self.rs, *out, self.dirs, self.shift)
        return out

    def density(self, x: torch.Tensor, ray: torch.Tensor, net: torch.Tensor) -> torch.Tensor:
        return evaluate_density_first(self.params, x, net, scene_meta=self.spec)[0]


class NativeMarcher:
    """The native kernels for `front_samples` on the CPU: a ``renderer.native.scene.NativeScene`` over the
    scene's tables that reads ``params`` (float32, contiguous) in place, so an optimiser that updates them in
    place is seen by the next call without repacking. Make one per training run (its tables are built
    once)."""

    def __init__(self, rs: Any, params: Mapping[str, torch.Tensor]) -> None:
        from renderer.frame import FrameParams
        from renderer.native.scene import NativeScene

        live = replace(rs, params={k: v.detach() for k, v in params.items()}, _cache={})
        self.rs = rs
        self.scene = NativeScene(live, skip_zero_octaves=False)
        passes = FRONT_SAMPLES_PER_PASS
        self.frame = FrameParams(rs.step_size, None, rs.background, True, passes, False, "rgb", 1)

    def start(
        self, origins: torch.Tensor, dirs: torch.Tensor, shift: torch.Tensor | None = None
    ) -> NativePasses:
        """`Passes` of rays ``[R, 3]`` (float32 CPU); ``shift [R]`` as in `TorchPasses`."""
        return NativePasses(self, origins, dirs, shift)


class NativePasses:
    """`Passes` by the native kernels: ``march_pass`` (the renderer's samples: voxel table, then the cell's
    network) and ``evaluate_networks`` for σ."""

    def __init__(
        self, marcher: NativeMarcher, origins: torch.Tensor, dirs: torch.Tensor, shift: torch.Tensor | None
    ) -> None:
        from renderer.native import steps

        self.shift = shift
        self.steps, self.m, self.device = steps, marcher, torch.device("cpu")
        self.o, self.d = origins.contiguous(), dirs.contiguous()
        self.t0, self.n = steps.clip_to_box(marcher.scene, marcher.frame, self.o, self.d)
        self.k = torch.zeros_like(self.n)

    def remaining(self, live: torch.Tensor) -> torch.Tensor:
        return self.k[live] < self.n[live]

    def next(self, live: torch.Tensor, per_pass: int) -> tuple[torch.Tensor, ...]:
        m = self.m
        sk, snet, _ = self.steps.march_pass(
            m.scene, m.frame, self.o, self.d, self.t0, self.n, self.k, live, per_pass
        )
        rows, cols = (snet >= 0).nonzero(as_tuple=True)
        ray, k = live[rows], sk[rows, cols]
        t = lattice_t(self.t0[ray], k, m.scene.step_size)
        x = self.o[ray] + t[:, None] * self.d[ray]
        out = ray, t, x, snet[rows, cols].long()
        if self.shift is not None:
            out = shift_samples(m.rs, *out, self.d, self.shift)
        return out

    def density(self, x: torch.Tensor, ray: torch.Tensor, net: torch.Tensor) -> torch.Tensor:
        return self.steps.evaluate_networks(self.m.scene, x, self.d[ray], net)[0]


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


def front_samples(
    passes: Passes,
    rays: int,
    step_size: float,
    threshold: float,
    *,
    max_samples_per_ray: int | None = None,
    samples_per_pass: int = FRONT_SAMPLES_PER_PASS,
) -> FrontSamples:
    """The contributing samples of ``rays`` rays marching in ``passes`` (`TorchPasses`, `NativePasses`)
    whose transmittance in front of them is at least ``threshold`` (0: all).

    Each pass takes ≤ ``samples_per_pass`` samples per live ray, evaluates their densities alone and
    retires the rays whose transmittance fell below ``threshold``; the kept samples are those of marching
    every sample and keeping the ones with T_k ≥ threshold. ``max_samples_per_ray`` marches only each
    ray's first samples (one pass). On the device of the passes' rays.
    """
    with torch.no_grad():
        dev = passes.device
        per_pass = samples_per_pass if threshold > 0 else NO_STOP_SAMPLES_PER_PASS
        if max_samples_per_ray is not None:
            per_pass = max_samples_per_ray
        live = torch.nonzero(passes.remaining(torch.arange(rays, device=dev))).squeeze(1)
        depth = torch.zeros(rays, dtype=torch.float64, device=dev)  # optical depth so far
        parts: list[tuple[torch.Tensor, ...]] = []
        marched = 0
        while live.numel() > 0:
            ray, t, x, net = passes.next(live, per_pass)
            marched += int(ray.numel())
            if threshold > 0 and ray.numel() > 0:
                sigma = passes.density(x, ray, net)
                before = depth[ray] + exclusive_optical_depth(sigma, ray, step_size)
                keep = (torch.exp(-before) >= threshold).nonzero().squeeze(1)
                depth.index_add_(0, ray, sigma.double() * step_size)
                ray, t, x, net = ray[keep], t[keep], x[keep], net[keep]
            parts.append((ray, t, x, net))
            if max_samples_per_ray is not None:
                break
            done = ~passes.remaining(live)
            if threshold > 0:
                done |= torch.exp(-depth[live]) < threshold
            live = live[~done]
        if not parts:
            empty = torch.zeros(0, dtype=torch.int64, device=dev)
            return FrontSamples(empty, torch.zeros(0, 3, device=dev), empty.clone(), 0)
        ray, t, x, net = (torch.cat([p[i] for p in parts]) for i in range(4))
        order = order_front_to_back(ray, t)
        return FrontSamples(ray[order], x[order], net[order].long(), marched)


def native_marcher(rs: Any, params: Mapping[str, torch.Tensor]) -> NativeMarcher | None:
    """A `NativeMarcher` over ``params`` when the native library is built, the hidden width has a compiled
    kernel and every tensor is float32, contiguous and on the CPU (so the kernels read it in place); None
    otherwise (use `TorchPasses`)."""
    from renderer.native.library import status
    from renderer.native.scene import SUPPORTED_HIDDEN

    if rs.device.type != "cpu" or rs.spec.hidden not in SUPPORTED_HIDDEN or not status()[0]:
        return None
    for v in params.values():
        if v.dtype != torch.float32 or v.device.type != "cpu" or not v.is_contiguous():
            return None
    return NativeMarcher(rs, params)
