"""The torch renderer: rays → box clip → lattice samples (ESS) → networks → compositing with ERT, in
passes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from renderer.camera import Camera, generate_rays
from renderer.composite import transmittance_pass
from renderer.grid import cell_index, flat_index
from renderer.march import RayBatch, empty_space_distance, lattice_t, next_samples
from renderer.networks import NetworkSpec, evaluate_colors_where, evaluate_density_first, evaluate_networks

OUTPUTS = ("rgb", "depth", "network")
NETWORK_CHUNK = 1 << 15
"""Samples per network-evaluation chunk."""
ONE_CALL_SAMPLES = 1 << 20
"""With ERT, passes of at most this many samples evaluate σ and rgb in one call (else σ first, then rgb
only where the weight is not 0): with K samples per ray per pass few samples lose their weight, so the
second call's fixed costs (sorting, tiling, gathering weights again) outweigh the colours it saves."""
PASS_GROWTH_CAP = 64
"""Most samples per ray per pass that a pass with few live rays grows to (``samples_per_pass`` if larger)."""
PASS_SAMPLE_BUDGET = 1 << 15
"""Pass p takes up to 2^p × ``samples_per_pass`` samples per ray while live rays × samples ≤ this."""


@dataclass
class RenderOptions:
    """How to render a frame."""

    ess: bool = True
    """Empty-space skipping through the occupancy grid."""
    ert: bool = True
    """Early ray termination when transmittance falls below the threshold."""
    ert_threshold: float | None = None
    """ERT threshold ε (None → the scene's)."""
    step_multiplier: float = 1.0
    """Marching step = scene step size × this."""
    background: tuple[float, float, float] | None = None
    """Background colour (None → the scene's)."""
    samples_per_pass: int = 8
    """Contributing samples gathered per ray per pass (K)."""
    grow_passes: bool = True
    """Later passes with few live rays take up to 2^p × K samples per ray (False: K in every pass, as the
    CUDA kernels do; with ERT the samples marched past a ray's end differ, the image does not)."""
    output: str = "rgb"
    """"rgb", "depth" (expected t, shaded) or "network" (colour of the dominant network's id)."""
    chunk_size: int = 1 << 18
    """Rays marched at once (bounds memory)."""


@dataclass
class RenderStats:
    """What a frame cost."""

    rays: int = 0
    """Rays cast."""
    rays_hit_box: int = 0
    """Rays that cross the scene box."""
    samples_marched: int = 0
    """Lattice steps walked over (skipped or tested) before the rays stopped."""
    samples_evaluated: int = 0
    """Samples sent through a network."""
    networks_touched: int = 0
    """Distinct networks evaluated."""
    passes: int = 0
    """Marching passes (largest over the ray chunks)."""
    rays_terminated_early: int = 0
    """Rays stopped by ERT before leaving the box."""
    ms: float = 0.0
    """Wall-clock time in milliseconds."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass
class RenderResult:
    """A rendered frame."""

    image: torch.Tensor
    """``[H, W, 3]`` float32 CPU."""
    depth: torch.Tensor | None
    """``[H, W]`` float32 CPU expected t of the composited samples (0 where nothing was hit), or None."""
    stats: RenderStats
    """Counters and time."""
    network: torch.Tensor | None = None
    """``[H, W]`` int64 id of the network with the largest weight per pixel (−1: none), or None."""


@dataclass
class RenderScene:
    """A scene prepared for rendering on one device (reuse it between frames)."""

    device: torch.device
    """Where the tensors live."""
    spec: NetworkSpec
    """Network layout and box (bbox floats are float32-representable)."""
    occupancy_res: tuple[int, int, int]
    """Occupancy voxels per axis."""
    network_index_flat: torch.Tensor
    """``[rx·ry·rz]`` int64 network id per cell (C order), −1 = none."""
    occupancy_flat: torch.Tensor
    """``[ox·oy·oz]`` bool occupancy (C order)."""
    params: dict[str, torch.Tensor]
    """``l0.weight`` … ``l4.bias`` float32 on the device (live parameters when built from a module)."""
    step_size: float
    """Scene marching step (float32-representable)."""
    background: tuple[float, float, float]
    """Scene background colour."""
    ert_threshold: float
    """Scene ERT threshold."""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def grid_res(self) -> tuple[int, int, int]:
        """Network cells per axis."""
        return self.spec.grid_res

    @property
    def num_networks(self) -> int:
        """M."""
        return int(self.params["l0.weight"].shape[0])

    def _const(self, key: str, make: Any) -> torch.Tensor:
        """A per-scene constant tensor, made once (callers must not modify it in place)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def bbox_min_t(self) -> torch.Tensor:
        """``[3]`` float32 box minimum on the device."""
        return self._const(
            "lo", lambda: torch.tensor(self.spec.bbox_min, dtype=torch.float32, device=self.device)
        )

    @property
    def bbox_max_t(self) -> torch.Tensor:
        """``[3]`` float32 box maximum on the device."""
        return self._const(
            "hi", lambda: torch.tensor(self.spec.bbox_max, dtype=torch.float32, device=self.device)
        )

    @property
    def voxel_size_t(self) -> torch.Tensor:
        """``[3]`` float32 occupancy voxel edge lengths."""

        def make() -> torch.Tensor:
            res = torch.tensor(self.occupancy_res, dtype=torch.float32, device=self.device)
            return (self.bbox_max_t - self.bbox_min_t) / res

        return self._const("voxel_size", make)

    @property
    def march_zero3(self) -> torch.Tensor:
        """``[3]`` float32 zeros (lower clamp of voxel indices)."""
        return self._const("zero3", lambda: torch.zeros(3, dtype=torch.float32, device=self.device))

    def valid_voxels(self, ess: bool) -> torch.Tensor:
        """``[ox, oy, oz]`` bool: voxels whose cell has a network (and, with ``ess``, that are occupied)."""
        ratio = [o // g for o, g in zip(self.occupancy_res, self.grid_res)]
        has = (self.network_index_flat >= 0).reshape(self.grid_res)
        valid = (
            has.repeat_interleave(ratio[0], 0).repeat_interleave(ratio[1], 1).repeat_interleave(ratio[2], 2)
        )
        if ess:
            valid = valid & self.occupancy_flat.reshape(self.occupancy_res)
        return valid

    @property
    def voxel_count(self) -> int:
        """ox·oy·oz."""
        return int(np.prod(self.occupancy_res))

    @property
    def voxel_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 ``[3]`` tensors for voxel lookups: min, max − min, res, res − 1, C-order strides."""
        if "voxel" not in self._cache:
            lo, hi = self.bbox_min_t, self.bbox_max_t
            r = self.occupancy_res
            dev = self.device
            self._cache["voxel"] = (
                lo,
                hi - lo,
                torch.tensor(r, dtype=torch.float32, device=dev),
                torch.tensor([v - 1 for v in r], dtype=torch.float32, device=dev),
                torch.tensor([r[1] * r[2], r[2], 1], dtype=torch.float32, device=dev),
            )
        return self._cache["voxel"]

    def valid_flat(self, ess: bool) -> torch.Tensor:
        """``[ox·oy·oz]`` bool ``valid_voxels(ess)``, cached."""
        key = f"valid{int(ess)}"
        if key not in self._cache:
            self._cache[key] = self.valid_voxels(ess).reshape(-1).contiguous()
        return self._cache[key]

    def distance_field(self, ess: bool) -> torch.Tensor:
        """``[ox·oy·oz]`` uint8 empty-space distance (see ``march.empty_space_distance``), cached."""
        key = f"dist{int(ess)}"
        if key not in self._cache:
            self._cache[key] = empty_space_distance(self.valid_voxels(ess)).reshape(-1)
        return self._cache[key]


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32, as a Python float."""
    return float(np.float32(v))


def prepare_scene(scene: Any, device: str | torch.device = "cpu", networks: Any = None) -> RenderScene:
    """Move a ``Scene`` to ``device``: float32 weights, flat lookup tables, float32-rounded box and step.

    Args:
        scene: a ``renderer.scene.Scene`` (its weights are ignored when ``networks`` is given).
        networks: optional ``KiloNetworks`` whose live parameters are used (render while training; the
            module must already be on ``device``).
    """
    dev = torch.device(device)
    spec = NetworkSpec.from_scene(scene)
    spec = NetworkSpec(
        bbox_min=tuple(_f32(v) for v in spec.bbox_min),  # type: ignore[arg-type]
        bbox_max=tuple(_f32(v) for v in spec.bbox_max),  # type: ignore[arg-type]
        grid_res=spec.grid_res,
        pos_freqs=spec.pos_freqs,
        dir_freqs=spec.dir_freqs,
        hidden=spec.hidden,
        density_activation=spec.density_activation,
        density_scale=spec.density_scale,
    )
    if networks is not None:
        params = dict(networks.params())
    else:
        params = {k: v.detach().to(dev, torch.float32).contiguous() for k, v in scene.weights.items()}
    index = torch.as_tensor(np.ascontiguousarray(scene.network_index).astype(np.int64)).reshape(-1).to(dev)
    occ = torch.as_tensor(np.ascontiguousarray(scene.occupancy).astype(bool)).reshape(-1).to(dev)
    return RenderScene(
        device=dev,
        spec=spec,
        occupancy_res=tuple(int(v) for v in scene.occupancy_res),  # type: ignore[arg-type]
        network_index_flat=index,
        occupancy_flat=occ,
        params=params,
        step_size=_f32(scene.step_size),
        background=tuple(float(v) for v in scene.background),  # type: ignore[arg-type]
        ert_threshold=float(scene.ert_threshold),
    )


def network_colors(net: torch.Tensor) -> torch.Tensor:
    """``[N]`` int64 network ids → ``[N, 3]`` float32 colours from an integer hash (ids < 0 → 0)."""
    h = (net.clamp(min=0) * 2654435761 + 12345) % (1 << 32)
    h = (h ^ (h >> 15)) * 2246822519 % (1 << 32)
    rgb = torch.stack(((h >> 16) & 255, (h >> 8) & 255, h & 255), dim=1).to(torch.float32) / 255.0
    return 0.25 + 0.75 * rgb


@dataclass
class _Accum:
    """Per-ray accumulators of one chunk."""

    color: torch.Tensor
    trans: torch.Tensor
    depth: torch.Tensor
    best_w: torch.Tensor
    best_net: torch.Tensor


def _march_chunk(
    rs: RenderScene,
    o: torch.Tensor,
    d: torch.Tensor,
    opts: RenderOptions,
    stats: RenderStats,
    touched: torch.Tensor,
) -> _Accum:
    """Render ``[R, 3]`` rays in passes of ≤ K contributing samples; fills ``stats`` counters."""
    step = _f32(rs.step_size * opts.step_multiplier)
    eps: float | None = None
    if opts.ert:
        eps = float(rs.ert_threshold if opts.ert_threshold is None else opts.ert_threshold)
    # without ERT nothing is saved by stopping early, so passes are only a memory bound: make them longer
    k_per_pass = max(1, int(opts.samples_per_pass)) if opts.ert else max(32, int(opts.samples_per_pass))
    r = o.shape[0]
    rays = RayBatch.start(rs, o, d, step)
    acc = _Accum(
        color=torch.zeros(r, 3, device=rs.device),
        trans=torch.ones(r, device=rs.device),
        depth=torch.zeros(r, device=rs.device),
        best_w=torch.zeros(r, device=rs.device),
        best_net=torch.full((r,), -1, dtype=torch.int64, device=rs.device),
    )
    live = torch.nonzero(rays.n > 0).squeeze(1)
    stats.rays_hit_box += int(live.numel())
    row_of = torch.full((r,), -1, dtype=torch.int64, device=rs.device)
    passes = 0
    sel = torch.index_select  # much faster than advanced indexing on the CPU
    while live.numel() > 0:
        # few rays left (a small frame, or a pass's stragglers): a pass costs about the same for up to
        # PASS_SAMPLE_BUDGET samples, so take more per ray and spare later passes' fixed costs
        k_pass = k_per_pass
        for _ in range(passes if opts.grow_passes else 0):  # at most doubling from one pass to the next
            if k_pass >= PASS_GROWTH_CAP or live.numel() * k_pass * 2 > PASS_SAMPLE_BUDGET:
                break
            k_pass *= 2
        ray, k, slot = next_samples(rs, rays, step, k_pass, opts.ess, live)
        passes += 1
        if ray.numel() > 0:
            t = lattice_t(sel(rays.t0, 0, ray), k, step)
            d_s = sel(d, 0, ray)
            x = sel(o, 0, ray) + t[:, None] * d_s
            # the voxel table decided occupancy by the exact rule; the network comes from the cell rule
            cell = cell_index(x, rs.bbox_min_t, rs.bbox_max_t, rs.grid_res)
            net = sel(rs.network_index_flat, 0, flat_index(cell, rs.grid_res))
            ok = net >= 0
            if not bool(ok.all()):  # rounding at a cell face disagreed with the voxel table: exact rule wins
                ray, k, slot, t, x, net, d_s = ray[ok], k[ok], slot[ok], t[ok], x[ok], net[ok], d_s[ok]
            stats.samples_evaluated += int(ray.numel())
            touched.index_fill_(0, net, True)
            row_of.index_copy_(0, live, torch.arange(live.numel(), device=rs.device))
            row = sel(row_of, 0, ray)
            trans_live = sel(acc.trans, 0, live)
            if eps is None or ray.numel() <= ONE_CALL_SAMPLES:
                sigma, rgb = evaluate_networks(
                    rs.params, x, d_s, net, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
                )
                t_out, w = transmittance_pass(sigma, row, slot, trans_live, step, k_pass, eps)
                c_add = torch.zeros(live.numel(), 3, device=rs.device).index_add_(0, row, w[:, None] * rgb)
            else:
                # densities first; colours only for the samples that end up with a weight
                sigma, feat, order = evaluate_density_first(
                    rs.params, x, net, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
                )
                t_out, w = transmittance_pass(sigma, row, slot, trans_live, step, k_pass, eps)
                idx, rgb = evaluate_colors_where(
                    rs.params, feat, d_s, order, w > 0, scene_meta=rs.spec, chunk_size=NETWORK_CHUNK
                )
                del feat
                c_add = torch.zeros(live.numel(), 3, device=rs.device)
                c_add.index_add_(0, sel(row, 0, idx), sel(w, 0, idx)[:, None] * rgb)
            acc.color.index_add_(0, live, c_add)
            acc.trans.index_copy_(0, live, t_out)
            acc.depth.index_add_(0, ray, w * t)
        if ray.numel() > 0 and opts.output == "network":
            # dominant network: the first sample with the largest weight
            best = torch.zeros(live.numel(), device=rs.device).scatter_reduce_(0, row, w, "amax")
            is_best = (w == best[row]) & (w > acc.best_w[ray])
            first = torch.full((live.numel(),), row.numel(), dtype=torch.int64, device=rs.device)
            first.scatter_reduce_(0, row[is_best], torch.nonzero(is_best).squeeze(1), "amin")
            upd = first < row.numel()
            acc.best_net[live[upd]] = net[first[upd]]
            acc.best_w[live[upd]] = w[first[upd]]
        done = sel(rays.k, 0, live) >= sel(rays.n, 0, live)
        if eps is not None:
            stop = sel(acc.trans, 0, live) < eps
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
    opts = options or RenderOptions()
    if opts.output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {opts.output!r}")
    start = time.perf_counter()
    stats = RenderStats(rays=int(origins.shape[0]))
    bg = torch.tensor(rs.background if opts.background is None else opts.background, device=rs.device)
    touched = torch.zeros(rs.num_networks, dtype=torch.bool, device=rs.device)
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        o_all = origins.to(rs.device, torch.float32)
        d_all = dirs.to(rs.device, torch.float32)
        for a in range(0, max(1, o_all.shape[0]), opts.chunk_size):
            o, d = o_all[a : a + opts.chunk_size], d_all[a : a + opts.chunk_size]
            acc = _march_chunk(rs, o, d, opts, stats, touched)
            wsum = 1.0 - acc.trans
            depth = torch.where(wsum > 0, acc.depth / wsum.clamp(min=1e-12), torch.zeros_like(wsum))
            parts.append((acc.color + acc.trans[:, None] * bg, depth, acc.best_net, acc.trans))
    if rs.device.type == "cuda":
        torch.cuda.synchronize(rs.device)
    stats.networks_touched = int(touched.sum())
    stats.ms = (time.perf_counter() - start) * 1e3
    rgb, depth, net, trans = (torch.cat([p[i] for p in parts]) for i in range(4))
    return rgb, depth, net, trans, stats


def render_rays(
    rs: RenderScene, origins: torch.Tensor, dirs: torch.Tensor, options: RenderOptions | None = None
) -> tuple[torch.Tensor, RenderStats]:
    """Pixel colours ``[N, 3]`` of ``[N, 3]`` rays (on ``rs.device``) and the stats."""
    rgb, _, _, _, stats = render_rays_full(rs, origins, dirs, options)
    return rgb, stats


def shade_depth(depth: torch.Tensor, hit: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``[N]`` depths → ``[N, 3]`` grey (near = bright) normalised over ``hit`` pixels, else background."""
    out = background.reshape(1, 3).expand(depth.shape[0], 3).clone()
    if bool(hit.any()):
        lo, hi = depth[hit].min(), depth[hit].max()
        g = 1.0 - 0.85 * (depth - lo) / (hi - lo).clamp(min=1e-6)
        out[hit] = g[hit, None].expand(-1, 3)
    return out


def render_image(scene_or_rs: Any, camera: Camera, options: RenderOptions | None = None) -> RenderResult:
    """Render a camera's image with the torch backend (``Scene`` is prepared on the CPU first)."""
    opts = options or RenderOptions()
    rs = scene_or_rs if isinstance(scene_or_rs, RenderScene) else prepare_scene(scene_or_rs, "cpu")
    start = time.perf_counter()
    origins, dirs = generate_rays(camera, rs.device)
    rgb, depth, net, trans, stats = render_rays_full(rs, origins, dirs, opts)
    bg = torch.tensor(rs.background if opts.background is None else opts.background, device=rs.device)
    if opts.output == "network":
        rgb = torch.where((net >= 0)[:, None], network_colors(net), bg[None, :])
    elif opts.output == "depth":
        rgb = shade_depth(depth, trans < 1.0, bg)
    h, w = camera.height, camera.width
    stats.ms = (time.perf_counter() - start) * 1e3
    return RenderResult(
        image=rgb.reshape(h, w, 3).float().cpu(),
        depth=depth.reshape(h, w).float().cpu(),
        stats=stats,
        network=net.reshape(h, w).cpu() if opts.output == "network" else None,
    )
