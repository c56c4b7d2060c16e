"""The torch backend's frame: rays → box clip → lattice samples (ESS) → networks → compositing with ERT, in
passes (the steps of ``renderer.steps``, as torch ops), on any torch device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from renderer.camera import Camera, generate_rays
from renderer.composite import transmittance_pass
from renderer.frame import (
    FrameParams,
    RenderOptions,
    RenderResult,
    RenderScene,
    RenderStats,
    prepare_scene,
    resolve_options,
)
from renderer.march import PassSamples, RayBatch, march_pass
from renderer.networks import evaluate_colors_where, evaluate_density_first, evaluate_networks
from renderer.pixels import expected_depth, write_pixels

__all__ = ["RenderOptions", "RenderResult", "RenderScene", "RenderStats", "prepare_scene", "render_image",
           "render_rays", "render_rays_full"]  # fmt: skip

NETWORK_CHUNK = 1 << 15
"""Samples per network-evaluation chunk."""
ONE_CALL_SAMPLES = 1 << 20
"""With ERT, passes of at most this many samples evaluate σ and rgb in one call (else σ first, then rgb
only where the weight is not 0): with K samples per ray per pass few samples lose their weight, so the
second call's fixed costs (sorting, tiling, gathering weights again) outweigh the colours it saves."""


@dataclass
class _Accum:
    """Per-ray accumulators of one chunk: colour ``[R, 3]``, transmittance, Σ w·t, dominant network."""

    color: torch.Tensor
    trans: torch.Tensor
    depth: torch.Tensor
    best_w: torch.Tensor
    best_net: torch.Tensor

    @classmethod
    def empty(cls, r: int, device: torch.device) -> _Accum:
        """R rays with nothing composited yet (T = 1)."""
        return cls(
            color=torch.zeros(r, 3, device=device),
            trans=torch.ones(r, device=device),
            depth=torch.zeros(r, device=device),
            best_w=torch.zeros(r, device=device),
            best_net=torch.full((r,), -1, dtype=torch.int64, device=device),
        )


def _evaluate_and_composite(
    rs: RenderScene, s: PassSamples, acc: _Accum, live: torch.Tensor, fp: FrameParams, k_pass: int
) -> torch.Tensor:
    """Evaluate a pass's samples and composite them onto the live rays; returns the weights ``[S]``."""
    sel = torch.index_select
    eps = fp.ert_threshold
    trans_live = sel(acc.trans, 0, live)
    c_add = torch.zeros(live.numel(), 3, device=rs.device)
    if eps is None or s.ray.numel() <= ONE_CALL_SAMPLES:
        sigma, rgb = evaluate_networks(
            rs.params, s.x, s.d, s.net, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
        )
        t_out, w = transmittance_pass(sigma, s.row, s.slot, trans_live, fp.step, k_pass, eps)
        c_add.index_add_(0, s.row, w[:, None] * rgb)
    else:
        # densities first; colours only for the samples that end up with a weight
        sigma, feat, order = evaluate_density_first(
            rs.params, s.x, s.net, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
        )
        t_out, w = transmittance_pass(sigma, s.row, s.slot, trans_live, fp.step, k_pass, eps)
        idx, rgb = evaluate_colors_where(
            rs.params, feat, s.d, order, w > 0, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
        )
        del feat
        c_add.index_add_(0, sel(s.row, 0, idx), sel(w, 0, idx)[:, None] * rgb)
    acc.color.index_add_(0, live, c_add)
    acc.trans.index_copy_(0, live, t_out)
    acc.depth.index_add_(0, s.ray, w * s.t)
    return w


def _dominant_network(s: PassSamples, w: torch.Tensor, acc: _Accum, live: torch.Tensor) -> None:
    """Per ray, keep the first sample with the largest weight so far (strictly above earlier passes')."""
    row, dev = s.row, w.device
    best = torch.zeros(live.numel(), device=dev).scatter_reduce_(0, row, w, "amax")
    is_best = (w == best[row]) & (w > acc.best_w[s.ray])
    first = torch.full((live.numel(),), row.numel(), dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, row[is_best], torch.nonzero(is_best).squeeze(1), "amin")
    upd = first < row.numel()
    acc.best_net[live[upd]] = s.net[first[upd]]
    acc.best_w[live[upd]] = w[first[upd]]


def _march_chunk(
    rs: RenderScene,
    o: torch.Tensor,
    d: torch.Tensor,
    fp: FrameParams,
    stats: RenderStats,
    touched: torch.Tensor,
) -> _Accum:
    """Render ``[R, 3]`` rays in passes of ≤ K contributing samples; fills ``stats`` counters."""
    rays = RayBatch.start(rs, o, d, fp.step)
    acc = _Accum.empty(o.shape[0], rs.device)
    live = torch.nonzero(rays.n > 0).squeeze(1)
    stats.rays_hit_box += int(live.numel())
    passes = 0
    sel = torch.index_select
    while live.numel() > 0:
        k_pass = fp.pass_samples(passes, live.numel())
        s = march_pass(rs, rays, fp.step, fp.ess, k_pass, live)
        passes += 1
        if s.ray.numel() > 0:
            stats.samples_evaluated += int(s.ray.numel())
            touched.index_fill_(0, s.net, True)
            w = _evaluate_and_composite(rs, s, acc, live, fp, k_pass)
            if fp.output == "network":
                _dominant_network(s, w, acc, live)
        done = sel(rays.k, 0, live) >= sel(rays.n, 0, live)
        if fp.ert_threshold is not None:
            stop = sel(acc.trans, 0, live) < fp.ert_threshold
            stats.rays_terminated_early += int((stop & ~done).sum())
            done = done | stop
        live = torch.masked_select(live, ~done)
    stats.samples_marched += int(rays.k.sum())
    stats.passes = max(stats.passes, passes)
    return acc


def render_rays_full(
    rs: RenderScene, origins: torch.Tensor, dirs: torch.Tensor, options: RenderOptions | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RenderStats]:
    """Render rays: rgb ``[N, 3]``, depth ``[N]``, network id ``[N]``, T_end ``[N]`` and the stats.

    rgb = C + T_end·background; depth = Σ w_k t_k / Σ w_k (0 where Σ w = 0).
    """
    return _render_rays_touched(rs, origins, dirs, options)[:5]  # type: ignore[return-value]


def _render_rays_touched(
    rs: RenderScene, origins: torch.Tensor, dirs: torch.Tensor, options: RenderOptions | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RenderStats, torch.Tensor]:
    """``render_rays_full`` and the ``[num_networks]`` bool mask of the networks evaluated."""
    fp = resolve_options(rs, options)
    start = time.perf_counter()
    stats = RenderStats(rays=int(origins.shape[0]))
    touched = torch.zeros(rs.num_networks, dtype=torch.bool, device=rs.device)
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        o_all = origins.to(rs.device, torch.float32)
        d_all = dirs.to(rs.device, torch.float32)
        for a in range(0, max(1, o_all.shape[0]), fp.chunk_size):
            o, d = o_all[a : a + fp.chunk_size], d_all[a : a + fp.chunk_size]
            acc = _march_chunk(rs, o, d, fp, stats, touched)
            depth = expected_depth(acc.depth, acc.trans)
            rgb = write_pixels(acc.color, acc.trans, depth, acc.best_net, fp.background, "rgb")
            parts.append((rgb, depth, acc.best_net, acc.trans))
    if rs.device.type == "cuda":
        torch.cuda.synchronize(rs.device)
    stats.networks_touched = int(touched.sum())
    stats.ms = (time.perf_counter() - start) * 1e3
    rgb, depth, net, trans = (torch.cat([p[i] for p in parts]) for i in range(4))
    return rgb, depth, net, trans, stats, touched


def render_rays(
    rs: RenderScene, origins: torch.Tensor, dirs: torch.Tensor, options: RenderOptions | None = None
) -> tuple[torch.Tensor, RenderStats]:
    """Pixel colours ``[N, 3]`` of ``[N, 3]`` rays (on ``rs.device``) and the stats."""
    rgb, _, _, _, stats = render_rays_full(rs, origins, dirs, options)
    return rgb, stats


def render_image(scene_or_rs: Any, camera: Camera, options: RenderOptions | None = None) -> RenderResult:
    """Render a camera's image with the torch backend (``Scene`` is prepared on the CPU first)."""
    rs = scene_or_rs if isinstance(scene_or_rs, RenderScene) else prepare_scene(scene_or_rs, "cpu")
    fp = resolve_options(rs, options)
    start = time.perf_counter()
    origins, dirs = generate_rays(camera, rs.device)
    rgb, depth, net, trans, stats, touched = _render_rays_touched(rs, origins, dirs, options)
    if fp.output != "rgb":
        rgb = write_pixels(rgb, trans, depth, net, fp.background, fp.output)
    h, w = camera.height, camera.width
    stats.ms = (time.perf_counter() - start) * 1e3
    return RenderResult(
        image=rgb.reshape(h, w, 3).float().cpu(),
        depth=depth.reshape(h, w).float().cpu(),
        stats=stats,
        network=net.reshape(h, w).cpu() if fp.output == "network" else None,
        touched=touched.cpu(),
    )
