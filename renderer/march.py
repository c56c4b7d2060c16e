"""Ray marching on the sample lattice t_k = t0 + (k + ½)·s with empty-space skipping (ESS).

A lattice sample *contributes* when its network cell has a network and, with ESS on, its occupancy voxel
is set. The marcher finds the contributing samples of each ray without visiting every lattice step: a
Chebyshev distance over blocks of 2³ voxels (capped) to the nearest block that can hold a contributing
sample, read as a distance in voxels (`distance_field.voxel_distance`), lets a ray jump over whole empty
cubes, and near the surface a window of lattice steps is tested at once against the packed voxel table.
Every jump lands exactly on the lattice, and every kept sample passes the exact test, so the samples are
the same as a step-by-step walk would keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from renderer.distance_field import FINE_BLOCK
from renderer.frame import RenderScene
from renderer.grid import cell_index, flat_index

WINDOW = 16
"""Lattice steps tested at once by a ray that is next to possibly contributing voxels."""
JUMP_MARGIN = 0.01
"""Jumps stop this fraction of a voxel before the empty cube's exit (guards against rounding)."""


@dataclass
class Samples:
    """Contributing lattice samples of a batch of rays, ordered by ray then t (no grad)."""

    ray_idx: torch.Tensor
    """``[S]`` int64 ray of each sample."""
    t: torch.Tensor
    """``[S]`` float32 distance along the ray."""
    x: torch.Tensor
    """``[S, 3]`` float32 world position o + t·d."""
    net: torch.Tensor
    """``[S]`` int64 network id of the sample's cell."""
    k: torch.Tensor
    """``[S]`` int64 lattice index."""

    @property
    def count(self) -> int:
        """Number of samples S."""
        return int(self.ray_idx.shape[0])


def intersect_aabb(
    origins: torch.Tensor, dirs: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of ``[R, 3]`` rays against the box (``[3]`` float32 corners).

    Per axis t = (min − o)/d and (max − o)/d; an axis with d = 0 is an unbounded slab when o lies inside
    it and empty otherwise.

    Returns:
        t0 = max(0, t_enter) ``[R]`` and t1 = t_exit ``[R]``; the ray misses when not t1 > t0.
    """
    ta = (bbox_min - origins) / dirs
    tb = (bbox_max - origins) / dirs
    zero = dirs == 0
    inside = (origins >= bbox_min) & (origins <= bbox_max)
    inf = torch.full_like(ta, float("inf"))
    near = torch.where(zero, torch.where(inside, -inf, inf), torch.minimum(ta, tb))
    far = torch.where(zero, torch.where(inside, inf, -inf), torch.maximum(ta, tb))
    t0 = torch.clamp(near.amax(dim=1), min=0.0)
    return t0, far.amin(dim=1)


def clip_to_box(
    origins: torch.Tensor, dirs: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor, step: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step ``clip_to_box``: t0 ``[R]`` (``intersect_aabb``) and the number of lattice samples t_k < t1 of
    each ray ``[R]`` int64 (``lattice_count``; 0 when the ray misses the box)."""
    t0, t1 = intersect_aabb(origins, dirs, bbox_min, bbox_max)
    return t0, lattice_count(t0, t1, step)


def lattice_t(t0: torch.Tensor, k: torch.Tensor, step: float) -> torch.Tensor:
    """t_k = t0 + (k + ½)·s in float32 (``t0``, ``k`` broadcast; ``step`` a float32-representable float)."""
    return t0 + (k.to(torch.float32) + 0.5) * step


def lattice_count(t0: torch.Tensor, t1: torch.Tensor, step: float) -> torch.Tensor:
    """``[R]`` int64 number of lattice samples with t_k < t1 (0 when the ray misses the box)."""
    hit = (t1 > t0) & torch.isfinite(t1)
    span = torch.where(hit, t1 - t0, torch.zeros_like(t0)).double()
    n = torch.ceil(span / step - 0.5).clamp(min=0).to(torch.int64)
    for _ in range(2):  # exact float32 comparison of the rule t_k < t1, one step either way
        n = n + (hit & (lattice_t(t0, n, step) < t1)).to(torch.int64)
        n = n - ((n > 0) & (lattice_t(t0, n - 1, step) >= t1)).to(torch.int64)
    return torch.where(hit, n, torch.zeros_like(n))


def contributing(rs: RenderScene, x: torch.Tensor, ess: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-sample rule: ``[..., 3]`` points → (contributes ``[...]`` bool, net id ``[...]`` int64)."""
    shape = x.shape[:-1]
    flat = x.reshape(-1, 3)
    cell = cell_index(flat, rs.bbox_min_t, rs.bbox_max_t, rs.grid_res)
    net = rs.network_index_flat[flat_index(cell, rs.grid_res)]
    ok = net >= 0
    if ess:
        vox = cell_index(flat, rs.bbox_min_t, rs.bbox_max_t, rs.occupancy_res)
        ok &= bits_at(rs.occupancy_bits, flat_index(vox, rs.occupancy_res))
    return ok.reshape(shape), net.reshape(shape)


def bits_at(bits: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``[...]`` bool: the bits of packed ``bits`` (uint8, ``renderer.bit_grid`` layout) at int64 ``flat``."""
    byte = torch.index_select(bits, 0, (flat >> 3).reshape(-1)).reshape(flat.shape)
    return ((byte.to(torch.int64) >> (flat & 7)) & 1).bool()


def voxel_distance_at(rs: RenderScene, dist: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[...]`` float32 empty-space distance in voxels at voxel indices ``g [..., 3]`` (float32, exact):
    the block field ``dist`` (``RenderScene.distance_field``) read as ``distance_field.voxel_distance``."""
    fr = rs.fine_res

    def strides() -> torch.Tensor:
        return torch.tensor([fr[1] * fr[2], fr[2], 1], dtype=torch.float32, device=rs.device)

    fb = torch.floor(g * (1.0 / FINE_BLOCK))
    if fr[0] * fr[1] * fr[2] < (1 << 24):  # exact in float32
        flat = torch.matmul(fb, rs.cached("fine_strides", strides)).to(torch.int64)
    else:
        bi = fb.to(torch.int64)
        flat = (bi[..., 0] * fr[1] + bi[..., 1]) * fr[2] + bi[..., 2]
    d = torch.index_select(dist, 0, flat.reshape(-1)).reshape(flat.shape).to(torch.float32)
    return d.mul_(FINE_BLOCK).sub_(FINE_BLOCK - 1).clamp_min_(0.0)


@dataclass
class RayBatch:
    """Marching state of R rays."""

    origins: torch.Tensor
    """``[R, 3]`` float32."""
    dirs: torch.Tensor
    """``[R, 3]`` float32 unit directions."""
    t0: torch.Tensor
    """``[R]`` start of the lattice (box entry, ≥ 0)."""
    n: torch.Tensor
    """``[R]`` int64 number of lattice samples inside the box."""
    k: torch.Tensor
    """``[R]`` int64 next lattice index to examine."""
    packed: torch.Tensor | None = None
    """``[R, 20]`` float32 per-ray marching constants (see ``_ray_state``), made on first use."""

    @classmethod
    def start(cls, rs: RenderScene, origins: torch.Tensor, dirs: torch.Tensor, step: float) -> RayBatch:
        """Clip the rays to the box and put every ray at k = 0."""
        t0, n = clip_to_box(origins, dirs, rs.bbox_min_t, rs.bbox_max_t, step)
        return cls(origins, dirs, t0, n, torch.zeros_like(n))


def voxel_tables(
    rs: RenderScene,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 ``[3]`` tensors for voxel lookups: min, max − min, res, res − 1, C-order strides (cached)."""

    def make() -> tuple[torch.Tensor, ...]:
        lo, hi, r, dev = rs.bbox_min_t, rs.bbox_max_t, rs.occupancy_res, rs.device
        return (
            lo,
            hi - lo,
            torch.tensor(r, dtype=torch.float32, device=dev),
            torch.tensor([v - 1 for v in r], dtype=torch.float32, device=dev),
            torch.tensor([r[1] * r[2], r[2], 1], dtype=torch.float32, device=dev),
        )

    return rs.cached("voxel", make)  # type: ignore[no-any-return]


def voxel_lookup(rs: RenderScene, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupancy voxel of ``[..., 3]`` points by the rule clamp(floor((x − min)/(max − min)·res), 0, res − 1).

    Returns:
        voxel indices ``[..., 3]`` as float32 and the C-order flat index ``[...]`` int64.
    """
    lo, ext, res_f, top, strides = voxel_tables(rs)
    g = torch.floor((x - lo) / ext * res_f)
    g = torch.minimum(torch.clamp_min(g, 0.0), top)
    if rs.voxel_count < (1 << 24):  # exact in float32
        flat = (g * strides).sum(dim=-1).to(torch.int64)
    else:
        gi = g.to(torch.int64)
        r = rs.occupancy_res
        flat = (gi[..., 0] * r[1] + gi[..., 1]) * r[2] + gi[..., 2]
    return g, flat


# Columns of the packed marching state of the active rays (float32; the integers are exact below 2**24).
_O, _D, _P, _SG, _DI = 0, 3, 6, 9, 12
_T0, _K, _N, _CNT, _ROW = 15, 16, 17, 18, 19
_COLS = 20
MAX_JUMPS = 3
"""Empty-space jumps a ray may chain in one marching iteration before the window test."""
WINDOW_BUDGET = 1 << 14
"""Lattice samples a window test may examine at once: few near rays get longer windows."""
BRUTE_BUDGET = 1 << 16
"""Below this many samples for 4 windows per active ray, every ray tests a window instead of jumping."""
MAX_WINDOW = 256
"""Longest window."""


def _ray_state(rs: RenderScene, rays: RayBatch, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``[A, 20]`` float32 packed state of the rays ``rows[pos]``: o, d, face offset P, direction sign, 1/d,
    t0, k, n, samples taken this pass, position in ``rows``.

    P = min − o + (d ≤ 0)·voxel, so that the ray leaves the cube of voxels g − r + 1 … g + r − 1 through the
    face at t = (P + (g + sign·r)·voxel)·(1/d) on each axis; an axis with |d| < 1e-30 gets P = inf, 1/d = 1
    (it moves less than 1e-29 over the box and never reaches a face that is ≥ 1 voxel away).
    """
    sel = torch.index_select
    if rays.packed is None:
        o, d = rays.origins, rays.dirs
        packed = torch.empty((o.shape[0], _COLS), dtype=torch.float32, device=o.device)
        packed[:, _O : _O + 3] = o
        packed[:, _D : _D + 3] = d
        zero = d.abs() < 1e-30
        ahead = d > 0
        p = rs.bbox_min_t - o + torch.where(ahead, 0.0, rs.voxel_size_t)
        packed[:, _P : _P + 3] = torch.where(zero, float("inf"), p)
        packed[:, _SG : _SG + 3] = torch.where(ahead, 1.0, -1.0)
        packed[:, _DI : _DI + 3] = 1.0 / torch.where(zero, 1.0, d)
        packed[:, _T0] = rays.t0
        packed[:, _N] = rays.n
        rays.packed = packed
    active = sel(rows, 0, pos)
    st = sel(rays.packed, 0, active)
    st[:, _K] = sel(rays.k, 0, active)
    st[:, _CNT] = 0.0
    st[:, _ROW] = pos
    return st


def _voxel_of(rs: RenderScene, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``voxel_lookup`` of ``[..., 3]`` points, in place in ``x`` (flat index: float32-exact, as int64)."""
    lo, ext, res_f, top, strides = voxel_tables(rs)
    zero = rs.cached("zero3", lambda: torch.zeros(3, dtype=torch.float32, device=rs.device))
    g = x.sub_(lo).div_(ext).mul_(res_f).floor_().clamp_(min=zero, max=top)
    return g, torch.matmul(g, strides).to(torch.int64)


def next_samples(
    rs: RenderScene,
    rays: RayBatch,
    step: float,
    max_per_ray: int,
    ess: bool,
    rows: torch.Tensor | None = None,
    window: int = WINDOW,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advance rays to their next ≤ ``max_per_ray`` contributing lattice samples each.

    A ray whose current voxel is ≥ 2 voxels (Chebyshev, as the block distance field guarantees:
    ``voxel_distance_at``) from any voxel that may contribute jumps to the first lattice step at the exit of
    the empty cube around it; otherwise it tests ``window`` lattice steps at once against the packed voxel
    table (a voxel contributes when its cell has a network and, with ``ess``, it is occupied) and keeps the
    first ones.

    Args:
        rays: the batch; ``rays.k`` is advanced past the returned samples (or to ``rays.n``).
        rows: ``[A]`` int64 rays of the batch to advance (default: all).

    Returns:
        ray ``[S]`` int64 (rows of the batch), lattice index ``[S]`` int64 and slot ``[S]`` int64 (order
        of the sample within its ray's pass), grouped by ray in the order of ``rows``, then by k.
    """
    dev = rays.k.device
    if rows is None:
        rows = torch.arange(rays.k.shape[0], device=dev)
    sel = torch.index_select
    live = sel(rays.k, 0, rows) < sel(rays.n, 0, rows)
    too_big = rs.voxel_count >= (1 << 24) or rows.numel() >= (1 << 24)
    if too_big or (rays.n.numel() > 0 and int(rays.n.max()) >= (1 << 24) - 2 * max(window, MAX_WINDOW)):
        return _next_samples_wide(rs, rays, step, max_per_ray, ess, rows, window)
    dist = rs.distance_field(ess)
    valid = rs.valid_bits(ess)
    vox_size = rs.voxel_size_t
    margin = JUMP_MARGIN * float(vox_size.min())
    kmax = max_per_ray
    table = torch.full((rows.numel(), kmax), -1, dtype=torch.int64, device=dev)
    st = _ray_state(rs, rays, rows, live.nonzero().squeeze(1))
    while st.shape[0] > 0:
        n = st[:, _N]
        k = st[:, _K].clone()
        o, d, t0 = st[:, _O : _O + 3], st[:, _D : _D + 3], st[:, _T0]
        # few rays left: one long window each costs less than a chain of small ops per jump
        brute = st.shape[0] * window * 4 <= BRUTE_BUDGET
        for j in range(0 if brute else MAX_JUMPS + 1):
            t = (k + 0.5).mul_(step).add_(t0)  # = lattice_t
            g, _ = _voxel_of(rs, torch.mul(d, t[:, None]).add_(o))
            dvox = voxel_distance_at(rs, dist, g)
            far = dvox >= 2
            if j == MAX_JUMPS or not bool(far.any()):
                break
            # jump out of the cube of voxels within dvox − 1 of this one: none of them can contribute
            face = torch.mul(st[:, _SG : _SG + 3], dvox[:, None])
            te = face.add_(g).mul_(vox_size).add_(st[:, _P : _P + 3]).mul_(st[:, _DI : _DI + 3]).amin(dim=1)
            kj = te.sub_(margin).sub_(t0).div_(step).sub_(0.5).ceil_()
            kj = torch.minimum(torch.maximum(kj, k + 1.0), n)
            k = torch.where(far & (k < n), kj, k)
        # rays next to possibly contributing voxels test a window of lattice steps at once
        nl = torch.arange(st.shape[0], device=dev) if brute else ((dvox < 2) & (k < n)).nonzero().squeeze(1)
        if nl.numel() > 0:
            sub = st if brute else sel(st, 0, nl)
            k0, n_i, cnt = sel(k, 0, nl), sub[:, _N], sub[:, _CNT]
            w, budget = (window, BRUTE_BUDGET) if brute else (window, WINDOW_BUDGET)
            while w < MAX_WINDOW and nl.numel() * w * 2 <= budget:
                w *= 2
            lane = torch.arange(w, device=dev, dtype=torch.float32)
            kw = k0[:, None] + lane  # [B, W]
            tw = (kw + 0.5).mul_(step).add_(sub[:, _T0, None])
            flat_w = _voxel_of(
                rs, torch.mul(tw[..., None], sub[:, None, _D : _D + 3]).add_(sub[:, None, _O : _O + 3])
            )[1]
            ok = bits_at(valid, flat_w) & (kw < n_i[:, None])
            remaining = kmax - cnt
            rank = torch.cumsum(ok, dim=1)
            take = ok & (rank <= remaining[:, None])
            hit = take.view(-1).nonzero().squeeze(1)
            if hit.numel() > 0:
                i, ln = hit // w, hit % w
                slot = sel(cnt, 0, i).to(torch.int64) + sel(rank.view(-1), 0, hit) - 1
                pos = sel(sub[:, _ROW], 0, i).to(torch.int64)
                table.view(-1).index_copy_(0, pos * kmax + slot, sel(k0, 0, i).to(torch.int64) + ln)
            got = take.sum(dim=1).to(torch.float32)
            last = torch.where(take, lane, -1.0).amax(dim=1)
            newk = torch.where(got >= remaining, k0 + last + 1.0, torch.minimum(k0 + w, n_i))
            k.index_copy_(0, nl, newk)
            st[:, _CNT].index_add_(0, nl, got)
        st[:, _K] = k
        keep = ((k < n) & (st[:, _CNT] < kmax)).nonzero().squeeze(1)
        if keep.numel() < st.shape[0]:
            rays.k.index_copy_(0, sel(rows, 0, st[:, _ROW].to(torch.int64)), k.to(torch.int64))
            st = sel(st, 0, keep)
    nz = (table.view(-1) >= 0).nonzero().squeeze(1)  # row-major: grouped by ray, then slot (= k order)
    ray = sel(rows, 0, nz // kmax)
    return ray, sel(table.view(-1), 0, nz), nz % kmax


def _next_samples_wide(
    rs: RenderScene,
    rays: RayBatch,
    step: float,
    max_per_ray: int,
    ess: bool,
    rows: torch.Tensor | None = None,
    window: int = WINDOW,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``next_samples`` in int64 for batches whose indices do not fit float32 exactly."""
    dev = rays.k.device
    if rows is None:
        rows = torch.arange(rays.k.shape[0], device=dev)
    dist = rs.distance_field(ess)
    valid = rs.valid_bits(ess)
    lo = rs.bbox_min_t
    vox_size = rs.voxel_size_t
    margin = JUMP_MARGIN * float(vox_size.min())
    count = torch.zeros(rays.k.shape[0], dtype=torch.int64, device=dev)
    table = torch.full((rays.k.shape[0], max_per_ray), -1, dtype=torch.int64, device=dev)
    lane = torch.arange(window, device=dev)
    inf = torch.tensor(float("inf"), device=dev)
    sel = torch.index_select  # much faster than advanced indexing on the CPU
    active = torch.masked_select(rows, sel(rays.k, 0, rows) < sel(rays.n, 0, rows))
    while active.numel() > 0:
        ka = sel(rays.k, 0, active)
        oa, da, t0a = sel(rays.origins, 0, active), sel(rays.dirs, 0, active), sel(rays.t0, 0, active)
        x = oa + lattice_t(t0a, ka, step)[:, None] * da
        vox, _ = voxel_lookup(rs, x)
        dvox = voxel_distance_at(rs, dist, vox)
        far = dvox >= 2
        fi = far.nonzero().squeeze(1)
        if fi.numel() > 0:
            # jump out of the cube of voxels within dvox−1 of this one: none of them can contribute
            df = sel(dvox, 0, fi)[:, None]
            vf, dfi, ofi = sel(vox, 0, fi), sel(da, 0, fi), sel(oa, 0, fi)
            face = lo + torch.where(dfi > 0, vf + df, vf - (df - 1.0)) * vox_size
            te = torch.where(dfi != 0, (face - ofi) / dfi, inf).amin(dim=1)
            knew = torch.ceil((te - margin - sel(t0a, 0, fi)) / step - 0.5).clamp(max=2.0**40).to(torch.int64)
            knew = torch.maximum(knew, sel(ka, 0, fi) + 1)
            rows_f = sel(active, 0, fi)
            rays.k.index_copy_(0, rows_f, torch.minimum(knew, sel(rays.n, 0, rows_f)))
        nl = (~far).nonzero().squeeze(1)
        if nl.numel() > 0:
            ni = sel(active, 0, nl)
            k0 = sel(ka, 0, nl)
            kw = k0[:, None] + lane  # [B, W]
            tw = lattice_t(sel(t0a, 0, nl)[:, None], kw, step)
            xw = sel(oa, 0, nl)[:, None, :] + tw[..., None] * sel(da, 0, nl)[:, None, :]
            flat_w = voxel_lookup(rs, xw)[1]
            n_i = sel(rays.n, 0, ni)
            ok = bits_at(valid, flat_w) & (kw < n_i[:, None])
            cnt = sel(count, 0, ni)
            remaining = max_per_ray - cnt
            rank = torch.cumsum(ok, dim=1)
            take = ok & (rank <= remaining[:, None])
            got = take.sum(dim=1)
            hit = take.view(-1).nonzero().squeeze(1)
            if hit.numel() > 0:
                i, ln = hit // window, hit % window
                slot = sel(cnt, 0, i) + sel(rank.view(-1), 0, hit) - 1
                table.view(-1).index_copy_(0, sel(ni, 0, i) * max_per_ray + slot, sel(k0, 0, i) + ln)
            count.index_add_(0, ni, got)
            filled = got >= remaining
            last = torch.where(take, lane, -1).amax(dim=1)
            newk = torch.where(filled, k0 + last + 1, torch.minimum(k0 + window, n_i))
            rays.k.index_copy_(0, ni, newk)
        still = (sel(rays.k, 0, active) < sel(rays.n, 0, active)) & (sel(count, 0, active) < max_per_ray)
        active = torch.masked_select(active, still)
    sub = (
        table
        if rows.numel() == table.shape[0] and bool(rows[-1] == rows.numel() - 1)
        else sel(table, 0, rows)
    )
    nz = (sub.view(-1) >= 0).nonzero().squeeze(1)  # row-major: grouped by ray, then slot (= k order)
    ray = sel(rows, 0, nz // max_per_ray)
    return ray, sel(sub.view(-1), 0, nz), nz % max_per_ray


@dataclass
class PassSamples:
    """One pass's contributing samples (``march_pass``), ``[S]`` each: ray (row of the batch), lattice index,
    slot (order within the ray's pass), row among the live rays, t, position ``[S, 3]``, direction ``[S, 3]``
    and network."""

    ray: torch.Tensor
    k: torch.Tensor
    slot: torch.Tensor
    row: torch.Tensor
    t: torch.Tensor
    x: torch.Tensor
    d: torch.Tensor
    net: torch.Tensor


def march_pass(
    rs: RenderScene, rays: RayBatch, step: float, ess: bool, k_pass: int, live: torch.Tensor
) -> PassSamples:
    """The next ≤ ``k_pass`` contributing samples of the ``live`` rays (``[A]`` rows of the batch).

    The voxel table decides which lattice steps take a slot; the network comes from the cell rule, and a
    sample whose cell has none (rounding at a cell face) is dropped, its slot left empty.
    """
    sel = torch.index_select  # much faster than advanced indexing on the CPU
    ray, k, slot = next_samples(rs, rays, step, k_pass, ess, live)
    t = lattice_t(sel(rays.t0, 0, ray), k, step)
    d_s = sel(rays.dirs, 0, ray)
    x = sel(rays.origins, 0, ray) + t[:, None] * d_s
    net = sel(
        rs.network_index_flat,
        0,
        flat_index(cell_index(x, rs.bbox_min_t, rs.bbox_max_t, rs.grid_res), rs.grid_res),
    )
    ok = net >= 0
    if not bool(ok.all()):
        ray, k, slot, t, x, net, d_s = ray[ok], k[ok], slot[ok], t[ok], x[ok], net[ok], d_s[ok]
    row_of = torch.full((rays.k.shape[0],), -1, dtype=torch.int64, device=rs.device)
    row_of.index_copy_(0, live, torch.arange(live.numel(), device=rs.device))
    return PassSamples(ray, k, slot, sel(row_of, 0, ray), t, x, d_s, net)


def march_rays(
    rs: RenderScene,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    *,
    ess: bool = True,
    max_samples_per_ray: int | None = None,
    step: float | None = None,
) -> Samples:
    """Every contributing lattice sample of ``[R, 3]`` rays (or each ray's first ``max_samples_per_ray``).

    Samples sit at t_k = t0 + (k + ½)·s inside the box; kept when their cell has a network and, with
    ``ess``, their occupancy voxel is set. Ordered by ray then t; no grad; on the rays' device.

    Args:
        step: marching step s (default: the scene's step size).
    """
    with torch.no_grad():
        s = rs.step_size if step is None else float(torch.tensor(step, dtype=torch.float32))
        origins = origins.to(rs.device, torch.float32)
        dirs = dirs.to(rs.device, torch.float32)
        rays = RayBatch.start(rs, origins, dirs, s)
        per_pass = 64 if max_samples_per_ray is None else max_samples_per_ray
        rays_out: list[torch.Tensor] = []
        ks_out: list[torch.Tensor] = []
        rows = torch.arange(origins.shape[0], device=rs.device)
        while True:
            rows = rows[rays.k[rows] < rays.n[rows]]
            if rows.numel() == 0:
                break
            r, k, _ = next_samples(rs, rays, s, per_pass, ess, rows)
            rays_out.append(r)
            ks_out.append(k)
            if max_samples_per_ray is not None:
                break
        if rays_out:
            ray = torch.cat(rays_out)
            k = torch.cat(ks_out)
            order = torch.argsort(ray * (int(rays.n.max()) + 1) + k)
            ray, k = ray[order], k[order]
        else:
            ray = torch.zeros(0, dtype=torch.int64, device=rs.device)
            k = ray.clone()
        return lattice_samples(rs, rays, ray, k, s, ess)


def lattice_samples(
    rs: RenderScene, rays: RayBatch, ray: torch.Tensor, k: torch.Tensor, step: float, ess: bool
) -> Samples:
    """Lattice samples ``(ray [S], k [S])`` of a batch (as `next_samples` finds them) as world points
    x = o + t_k·d, keeping those the exact per-sample rule (`contributing`) accepts, in the given order."""
    t = lattice_t(rays.t0[ray], k, step)
    x = rays.origins[ray] + t[:, None] * rays.dirs[ray]
    ok, net = contributing(rs, x, ess)
    if not bool(ok.all()):  # rounding at a cell face disagreed with the voxel table: exact rule wins
        ray, t, x, net, k = ray[ok], t[ok], x[ok], net[ok], k[ok]
    return Samples(ray_idx=ray, t=t, x=x, net=net, k=k)
