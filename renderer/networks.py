"""Evaluation of thousands of tiny MLPs: every sample goes through the network of its grid cell.

Layer layout (``y = x @ W + b``, M networks, H hidden, P/D = position/direction frequencies):
``l0 [M, 3+6P, H]`` → relu → ``l1 [M, H, H]`` → relu → ``l2 [M, H, 1+H]`` (column 0 raw density, 1..H feature)
→ concat(feature, γ_D(d)) → ``l3 [M, H+3+6D, H]`` → relu → ``l4 [M, H, 3]`` → sigmoid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from renderer.encoding import encoded_size, positional_encoding
from renderer.grid import cell_index, local_coords
from renderer.tiles import MAX_TILES, TileChunk, TileGroup, plan_tiles, tiles_within

LAYER_KEYS: tuple[str, ...] = tuple(f"l{i}.{kind}" for i in range(5) for kind in ("weight", "bias"))
DENSITY_ACTIVATIONS: tuple[str, ...] = ("relu", "softplus", "exp")


@dataclass(frozen=True)
class NetworkSpec:
    """Everything besides the weights that evaluating the networks needs."""

    bbox_min: tuple[float, float, float]
    """Lower corner of the scene box, world units."""
    bbox_max: tuple[float, float, float]
    """Upper corner of the scene box, world units."""
    grid_res: tuple[int, int, int]
    """Network cells per axis (rx, ry, rz)."""
    pos_freqs: int = 10
    """Octaves of the position encoding."""
    dir_freqs: int = 4
    """Octaves of the direction encoding."""
    hidden: int = 32
    """Hidden width H."""
    density_activation: str = "relu"
    """"relu", "softplus" or "exp" applied to the raw density."""
    density_scale: float = 1.0
    """σ = density_scale · act(raw density)."""

    @classmethod
    def from_scene(cls, scene: Any) -> NetworkSpec:
        """Spec of a ``renderer.scene.Scene`` (or anything with the same fields)."""
        return cls(
            bbox_min=tuple(float(v) for v in scene.bbox_min),  # type: ignore[arg-type]
            bbox_max=tuple(float(v) for v in scene.bbox_max),  # type: ignore[arg-type]
            grid_res=tuple(int(v) for v in scene.grid_res),  # type: ignore[arg-type]
            pos_freqs=int(scene.pos_freqs),
            dir_freqs=int(scene.dir_freqs),
            hidden=int(scene.hidden),
            density_activation=str(scene.density_activation),
            density_scale=float(scene.density_scale),
        )

    @property
    def cell_size(self) -> tuple[float, float, float]:
        """(bbox_max − bbox_min) / grid_res per axis."""
        return tuple((hi - lo) / r for lo, hi, r in zip(self.bbox_min, self.bbox_max, self.grid_res))  # type: ignore[return-value]

    @property
    def pos_dim(self) -> int:
        """Input width of l0: 3 + 6·pos_freqs."""
        return encoded_size(3, self.pos_freqs)

    @property
    def dir_dim(self) -> int:
        """Width of the direction encoding: 3 + 6·dir_freqs."""
        return encoded_size(3, self.dir_freqs)

    def weight_shapes(self, num_networks: int) -> dict[str, tuple[int, ...]]:
        """Shape of every ``l*`` tensor for M = ``num_networks``."""
        m, h = num_networks, self.hidden
        return {
            "l0.weight": (m, self.pos_dim, h),
            "l0.bias": (m, h),
            "l1.weight": (m, h, h),
            "l1.bias": (m, h),
            "l2.weight": (m, h, 1 + h),
            "l2.bias": (m, 1 + h),
            "l3.weight": (m, h + self.dir_dim, h),
            "l3.bias": (m, h),
            "l4.weight": (m, h, 3),
            "l4.bias": (m, 3),
        }


def density_activation(raw: torch.Tensor, spec: NetworkSpec) -> torch.Tensor:
    """σ = density_scale · act(raw) for ``[N]`` raw densities."""
    if spec.density_activation == "relu":
        sigma = F.relu(raw)
    elif spec.density_activation == "softplus":
        sigma = F.softplus(raw)
    elif spec.density_activation == "exp":
        sigma = torch.exp(raw)
    else:
        raise ValueError(f"unknown density activation {spec.density_activation!r}")
    return sigma * spec.density_scale if spec.density_scale != 1.0 else sigma


def init_weights(num_networks: int, spec: NetworkSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Default initialisation (torch.nn.Linear's: U(±1/√fan_in) for weights and biases), float32 CPU.

    Returns:
        ``{"l0.weight": [M, 3+6P, H], …, "l4.bias": [M, 3]}``.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    shapes = spec.weight_shapes(num_networks)
    for i in range(5):
        w_shape = shapes[f"l{i}.weight"]
        bound = 1.0 / math.sqrt(w_shape[1])
        for kind in ("weight", "bias"):
            shape = shapes[f"l{i}.{kind}"]
            out[f"l{i}.{kind}"] = (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound
    return out


def _as_compute(params: Mapping[str, torch.Tensor], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ten tensors in ``like``'s dtype and device (differentiable casts, no copy when already right)."""
    return {k: params[k].to(device=like.device, dtype=like.dtype) for k in LAYER_KEYS}


def _max_tiles(w: Mapping[str, torch.Tensor], like: torch.Tensor, grad: bool) -> int:
    """Tiles per chunk: ``MAX_TILES`` when a backward is recorded (training), else as many as
    ``TILE_WEIGHT_BYTES`` of gathered weights allow (each tile's network in ``like``'s dtype, plus its
    gather in the weights' own dtype when they differ)."""
    if grad:
        return MAX_TILES
    per_tile = 0
    for t in w.values():
        n = t.numel() // max(1, t.shape[0])
        per_tile += n * (like.element_size() + (t.element_size() if t.dtype != like.dtype else 0))
    return tiles_within(per_tile)


def _on_device(params: Mapping[str, torch.Tensor], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ten tensors on ``like``'s device in their own dtype: the tiled paths cast only the weights each
    chunk gathers (``_tile_params``), so a float16 scene never gets a float32 copy of all its weights."""
    return {k: params[k].to(device=like.device) for k in LAYER_KEYS}


def _segments(net_sorted: torch.Tensor) -> tuple[list[int], list[int]]:
    """Ids and lengths of the runs of equal ids in sorted ``[N]`` int64 ``net_sorted``."""
    ids, counts = torch.unique_consecutive(net_sorted, return_counts=True)
    return ids.tolist(), counts.tolist()


class _Scratch:
    """Reusable buffers for the outputs of a no-grad evaluation's tile groups.

    A fresh tensor of a few MB costs page faults on the CPU on every use (about as long as the matmul
    that fills it); reusing the same buffers over the groups and chunks of one call avoids that. Disabled
    (every ``out`` is None: a fresh tensor) when autograd records, which keeps what it saved.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bufs: dict[str, torch.Tensor] = {}

    def out(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """A contiguous ``shape`` tensor of ``like``'s dtype and device (contents undefined), or None."""
        if not self.enabled:
            return None
        numel = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype:
            buf = like.new_empty((numel,))
            self._bufs[name] = buf
        return buf[:numel].view(shape)


_NO_SCRATCH = _Scratch(False)


def _encode(v: torch.Tensor, num_freqs: int, ws: _Scratch = _NO_SCRATCH, name: str = "enc") -> torch.Tensor:
    """γ_L(v) of ``[n, C]``, transposed and regrouped: ``[C·(1+2L), n]`` with row blocks
    ``v, sin(2⁰v) … sin(2^(L−1)v), cos(2⁰v) … cos(2^(L−1)v)``.

    The same values as ``positional_encoding`` (scaling by 2^l is exact) in the row order
    ``_encoding_rows`` names; the weights that read it are gathered in that order (``_tile_params``).
    Every block is a contiguous run of memory (sin and cos write in place), which makes it 2-3x faster on
    the CPU than the interleaved ``[n, C·(1+2L)]`` layout; the matmuls read it through a transposed view.
    """
    n, c = v.shape
    vt = v.t()
    if num_freqs == 0:
        return vt.contiguous()
    scales = (2.0 ** torch.arange(num_freqs, dtype=v.dtype, device=v.device)).repeat_interleave(c)
    if torch.is_grad_enabled() and v.requires_grad:  # out= does not record gradients
        s = vt.repeat(num_freqs, 1).mul_(scales[:, None])
        return torch.cat((vt, torch.sin(s), torch.cos(s)), 0)
    s_buf = ws.out(name + ".s", (num_freqs, c, n), v)
    s_buf = v.new_empty((num_freqs, c, n)) if s_buf is None else s_buf
    s = s_buf.copy_(vt.expand(num_freqs, c, n)).view(num_freqs * c, n).mul_(scales[:, None])
    out = ws.out(name, (c * (1 + 2 * num_freqs), n), v)
    out = v.new_empty((c * (1 + 2 * num_freqs), n)) if out is None else out
    out[:c] = vt
    torch.sin(s, out=out[c : c * (1 + num_freqs)])
    torch.cos(s, out=out[c * (1 + num_freqs) :])
    return out


def _encoding_rows(channels: int, num_freqs: int) -> list[int]:
    """Column of ``positional_encoding`` held by each column of ``_encode``."""
    c, freqs = channels, range(num_freqs)
    sin = [c + 2 * c * f + i for f in freqs for i in range(c)]
    return [*range(c), *sin, *(j + c for j in sin)]


@functools.lru_cache(maxsize=16)
def _weight_rows(key: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the l0 and l3 weights in the order ``_encode`` feeds them; ``key`` = (P, D, H)."""
    pos, dirs, h = key
    r0 = _encoding_rows(3, pos)
    r3 = [*range(h), *(h + r for r in _encoding_rows(3, dirs))]
    return torch.tensor(r0, device=device), torch.tensor(r3, device=device)


def _tile_params(
    w: dict[str, torch.Tensor],
    chunk: TileChunk,
    spec: NetworkSpec,
    like: torch.Tensor,
    ws: _Scratch = _NO_SCRATCH,
) -> list[list[torch.Tensor]]:
    """Every tile group's weights in ``like``'s dtype: one gather per tensor for the whole chunk (in the
    weights' own dtype, then cast), split by group.

    Per group, the ten tensors in ``LAYER_KEYS`` order, ``[T, Din, Dout]`` weights (l0 and l3 with their
    encoding rows in ``_encode``'s order) and ``[T, 1, Dout]`` biases (broadcast over the K samples).
    Differentiable: the backward is one cat and one index_add per tensor.
    """
    counts = [g.count for g in chunk.groups]
    net = chunk.net
    r0, r3 = _weight_rows((spec.pos_freqs, spec.dir_freqs, spec.hidden), net.device)
    rows = {"l0.weight": r0, "l3.weight": r3}
    parts = []
    for k in LAYER_KEYS:
        t = w[k]
        buf = ws.out(k, (net.numel(), *t.shape[1:]), t)
        if k in rows:
            m, din, dout = t.shape
            flat = (net[:, None] * din + rows[k][None, :]).reshape(-1)
            src = t.reshape(m * din, dout)
            t = (
                src.index_select(0, flat)
                if buf is None
                else torch.index_select(src, 0, flat, out=buf.view(-1, dout))
            )
            t = t.view(-1, din, dout)
        else:
            t = t.index_select(0, net) if buf is None else torch.index_select(t, 0, net, out=buf)
        if t.dtype != like.dtype:
            cast = ws.out(k + ".cast", tuple(t.shape), like)
            t = t.to(like.dtype) if cast is None else cast.copy_(t)
        parts.append((t.unsqueeze(1) if k.endswith("bias") else t).split(counts))
    return [list(p) for p in zip(*parts)]


def _encoded_positions(x: torch.Tensor, spec: NetworkSpec, ws: _Scratch = _NO_SCRATCH) -> torch.Tensor:
    """γ_P (``_encode``'s layout) of the cell-local coordinates of ``[n, 3]`` world points: ``[3+6P, n]``."""
    cell = cell_index(x, spec.bbox_min, spec.bbox_max, spec.grid_res)
    return _encode(local_coords(x, cell, spec.bbox_min, spec.cell_size), spec.pos_freqs, ws, "enc_u")


def _trunk(p: list[torch.Tensor], x: torch.Tensor, ws: _Scratch = _NO_SCRATCH) -> torch.Tensor:
    """l0 → relu → l1 → relu → l2 on tiles: ``[T, K, 3+6P]`` → ``[T, K, 1+H]`` (raw σ, feature)."""
    t, k, _ = x.shape
    hid = p[0].shape[2]
    h = torch.baddbmm(p[1], x, p[0], out=ws.out("h1", (t, k, hid), x)).relu_()
    h = torch.baddbmm(p[3], h, p[2], out=ws.out("h2", (t, k, hid), x)).relu_()
    return torch.baddbmm(p[5], h, p[4], out=ws.out("o", (t, k, 1 + hid), x))


def _head(
    p: list[torch.Tensor], feat: torch.Tensor, enc_d: torch.Tensor, ws: _Scratch = _NO_SCRATCH
) -> torch.Tensor:
    """concat(feature ``[T, K, H]``, γ_D(d) ``[T, K, 3+6D]``) → l3 → relu → l4 → sigmoid: rgb ``[T, K, 3]``.

    The concatenation is never built: l3 is two matmuls over the two row blocks of its weight.
    """
    w3 = p[6]
    t, k, h = feat.shape
    a = torch.baddbmm(p[7], feat, w3[:, :h], out=ws.out("h3", (t, k, w3.shape[2]), feat))
    a = a.baddbmm_(enc_d, w3[:, h:]).relu_()
    return torch.baddbmm(p[9], a, p[8], out=ws.out("rgb", (t, k, 3), feat)).sigmoid_()


def _real(v: torch.Tensor, g: TileGroup) -> torch.Tensor:
    """``[T, K, D]`` tile results → ``[V, D]`` of the real (not padding) slots, in ``g.dst`` order."""
    return v.reshape(g.count * g.size, v.shape[2]).index_select(0, g.valid)


def _flat(v: torch.Tensor) -> torch.Tensor:
    """``[T, K, D]`` tile results → ``[T·K, D]``, padding slots included.

    A padding slot holds the result of its tile's last real sample (same input, same weights), so writing
    every slot to its ``rows`` entry (``index_copy_``; duplicates carry the same value) saves selecting
    the real ones first.
    """
    return v.reshape(-1, v.shape[2])


def _tiled_t(v: torch.Tensor, g: TileGroup) -> torch.Tensor:
    """``[D, T·K]`` (``_encode``) → ``[T, K, D]`` view."""
    return v.view(v.shape[0], g.count, g.size).permute(1, 2, 0)


def _tiled(v: torch.Tensor, g: TileGroup) -> torch.Tensor:
    """``[T·K, D]`` → ``[T, K, D]``."""
    return v.view(g.count, g.size, v.shape[1])


@dataclass
class NetworkOrder:
    """Samples sorted by network id: the permutation and the runs of equal ids."""

    order: torch.Tensor
    """``[N]`` int64: sample index at each sorted position."""
    seg_ids: list[int]
    """Network of each run."""
    seg_lens: list[int]
    """Length of each run (sum N)."""

    @classmethod
    def of(cls, net: torch.Tensor) -> NetworkOrder:
        """Sort ``[N]`` int64 ids."""
        net_sorted, order = torch.sort(net)
        ids, lens = _segments(net_sorted)
        return cls(order, ids, lens)

    def tiles(self, chunk_size: int, max_tiles: int | None = None) -> list[TileChunk]:
        """The sorted runs cut into tiles (``renderer.tiles.plan_tiles``)."""
        dev = self.order.device
        ids = torch.tensor(self.seg_ids, dtype=torch.int64, device=dev)
        lens = torch.tensor(self.seg_lens, dtype=torch.int64, device=dev)
        return plan_tiles(ids, lens, chunk_size=chunk_size, max_tiles=max_tiles)


def evaluate_density_first(
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    net: torch.Tensor,
    *,
    scene_meta: NetworkSpec,
    chunk_size: int = 1 << 15,
) -> tuple[torch.Tensor, torch.Tensor, NetworkOrder]:
    """First half of a no-grad evaluation: σ of every sample and the feature for a later colour pass.

    Args:
        x: ``[N, 3]`` world points; net ``[N]`` int64 ids.

    Returns:
        sigma ``[N]`` (input order), feature ``[N, H]`` (network-sorted order), the ``NetworkOrder``.
    """
    spec = scene_meta
    w = _on_device(params, x)
    no = NetworkOrder.of(net)
    n = x.shape[0]
    trunk = x.new_empty((n, 1 + spec.hidden))  # raw density, feature: network-sorted order
    ws = _Scratch(True)
    with torch.no_grad():
        for ch in no.tiles(chunk_size, _max_tiles(w, x, False)):
            idx = no.order[ch.begin : ch.end]
            out = trunk[ch.begin : ch.end]
            for g, p in zip(ch.groups, _tile_params(w, ch, spec, x, ws)):
                enc_u = _encoded_positions(x.index_select(0, idx.index_select(0, g.rows)), spec, ws)
                out.index_copy_(0, g.rows, _flat(_trunk(p, _tiled_t(enc_u, g), ws)))
        raw = trunk[:, 0]
        sigma = torch.empty_like(raw).index_copy_(0, no.order, density_activation(raw, spec))
    return sigma, trunk[:, 1:], no


def evaluate_colors_where(
    params: Mapping[str, torch.Tensor],
    feature: torch.Tensor,
    d: torch.Tensor,
    no: NetworkOrder,
    keep: torch.Tensor,
    *,
    scene_meta: NetworkSpec,
    chunk_size: int = 1 << 15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Second half: rgb of the samples where ``keep`` is set (the others are never computed).

    Args:
        feature: ``[N, H]`` from ``evaluate_density_first`` (sorted order); d ``[N, 3]`` unit directions and
            keep ``[N]`` bool in input order.

    Returns:
        sample indices ``[K]`` int64 (input order, grouped by network) and their rgb ``[K, 3]``.
    """
    spec = scene_meta
    w = _on_device(params, feature)
    dev = keep.device
    keep_sorted = keep.index_select(0, no.order)
    ends = torch.tensor(no.seg_lens, dtype=torch.int64, device=dev).cumsum(0)
    csum = torch.cumsum(keep_sorted.to(torch.int64), 0)
    at_end = csum[ends - 1]
    counts = at_end - torch.cat((at_end.new_zeros(1), at_end[:-1]))
    some = counts > 0
    ids = torch.tensor(no.seg_ids, dtype=torch.int64, device=dev)[some]
    pos = keep_sorted.nonzero().squeeze(1)
    idx = no.order.index_select(0, pos)
    feat = feature.index_select(0, pos)
    rgb = feature.new_empty((idx.shape[0], 3))
    ws = _Scratch(True)
    with torch.no_grad():
        tiles = plan_tiles(ids, counts[some], chunk_size=chunk_size, max_tiles=_max_tiles(w, feature, False))
        for ch in tiles:
            sub, f, out = idx[ch.begin : ch.end], feat[ch.begin : ch.end], rgb[ch.begin : ch.end]
            for g, p in zip(ch.groups, _tile_params(w, ch, spec, feature, ws)):
                enc_d = _encode(d.index_select(0, sub.index_select(0, g.rows)), spec.dir_freqs, ws, "enc_d")
                out.index_copy_(
                    0, g.rows, _flat(_head(p, _tiled(f.index_select(0, g.rows), g), _tiled_t(enc_d, g), ws))
                )
    return idx, rgb


def evaluate_networks(
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    d: torch.Tensor,
    net: torch.Tensor,
    *,
    scene_meta: NetworkSpec,
    chunk_size: int = 1 << 15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """σ and rgb of every sample through the network of its cell.

    Samples are sorted by network id; each network's run is cut into padded tiles and the tiles are
    evaluated with one batched matmul per layer and tile size (``renderer.tiles``); results are put back in
    the input order. Differentiable with respect to ``params`` (and ``x``, ``d``) when autograd is on
    (gradients reach only the networks that have samples); memory is bounded by evaluating about
    ``chunk_size`` sorted samples at a time.

    Args:
        params: ``l0.weight`` … ``l4.bias`` (any float dtype; computed in ``x``'s dtype).
        x: ``[N, 3]`` world positions (float32).
        d: ``[N, 3]`` unit directions.
        net: ``[N]`` int64 network id of each sample's cell, each in 0..M−1.
        scene_meta: the ``NetworkSpec``.
        chunk_size: samples evaluated at once.

    Returns:
        sigma ``[N]`` (after the density activation and scale), rgb ``[N, 3]`` in (0, 1).
    """
    spec = scene_meta
    n = x.shape[0]
    if n == 0:
        return x.new_zeros((0,)), x.new_zeros((0, 3))
    w = _on_device(params, x)
    grad = torch.is_grad_enabled() and (
        x.requires_grad or d.requires_grad or any(t.requires_grad for t in w.values())
    )
    no = NetworkOrder.of(net)
    num_networks = w["l0.weight"].shape[0]
    if no.seg_ids and (no.seg_ids[0] < 0 or no.seg_ids[-1] >= num_networks):
        raise IndexError(f"network id out of range 0..{num_networks - 1}")
    raw_parts: list[torch.Tensor] = []
    rgb_parts: list[torch.Tensor] = []
    dst_parts: list[torch.Tensor] = []
    raw_out = x.new_empty((n,))
    rgb_out = x.new_empty((n, 3))
    ws = _Scratch(not grad)
    with torch.set_grad_enabled(grad):
        for ch in no.tiles(chunk_size, _max_tiles(w, x, grad)):
            idx = no.order[ch.begin : ch.end]
            for g, p in zip(ch.groups, _tile_params(w, ch, spec, x, ws)):
                sample = idx.index_select(0, g.rows)  # input index of every slot
                enc_u = _encoded_positions(x.index_select(0, sample), spec, ws)
                enc_d = _encode(d.index_select(0, sample), spec.dir_freqs, ws, "enc_d")
                o = _trunk(p, _tiled_t(enc_u, g), ws)
                rgb = _head(p, o[..., 1:], _tiled_t(enc_d, g), ws)
                if grad:  # only the real slots, each once
                    raw_parts.append(_real(o[..., :1], g).squeeze(1))
                    rgb_parts.append(_real(rgb, g))
                    dst_parts.append(sample.index_select(0, g.valid))
                else:
                    raw_out.index_copy_(0, sample, _flat(o[..., :1]).squeeze(1))
                    rgb_out.index_copy_(0, sample, _flat(rgb))
        if grad:
            inverse = torch.empty_like(no.order).index_copy_(
                0, torch.cat(dst_parts), torch.arange(n, device=no.order.device)
            )
            raw_out = torch.cat(raw_parts).index_select(0, inverse)
            rgb_out = torch.cat(rgb_parts).index_select(0, inverse)
        return density_activation(raw_out, spec), rgb_out


def evaluate_networks_batched(
    params: Mapping[str, torch.Tensor], u: torch.Tensor, d: torch.Tensor, spec: NetworkSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every network on its own batch of B points with ``torch.bmm`` (for distillation).

    Args:
        params: the ten tensors, first dimension M.
        u: ``[M, B, 3]`` local coordinates in [−1, 1] (already relative to each network's cell).
        d: ``[M, B, 3]`` unit directions.
        spec: the ``NetworkSpec``.

    Returns:
        sigma ``[M, B]``, rgb ``[M, B, 3]``.
    """
    m, b, _ = u.shape
    w = _as_compute(params, u)
    h = spec.hidden
    enc_u = positional_encoding(u.reshape(m * b, 3), spec.pos_freqs).reshape(m, b, -1)
    enc_d = positional_encoding(d.reshape(m * b, 3), spec.dir_freqs).reshape(m, b, -1)
    a = F.relu(torch.baddbmm(w["l0.bias"][:, None, :], enc_u, w["l0.weight"]))
    a = F.relu(torch.baddbmm(w["l1.bias"][:, None, :], a, w["l1.weight"]))
    o = torch.baddbmm(w["l2.bias"][:, None, :], a, w["l2.weight"])
    w3 = w["l3.weight"]
    a = torch.baddbmm(torch.baddbmm(w["l3.bias"][:, None, :], o[..., 1:], w3[:, :h]), enc_d, w3[:, h:])
    a = F.relu(a)
    rgb = torch.sigmoid(torch.baddbmm(w["l4.bias"][:, None, :], a, w["l4.weight"]))
    return density_activation(o[..., 0], spec), rgb


def _param_name(key: str) -> str:
    """Module-safe parameter name of a scene key (``l0.weight`` → ``l0_weight``)."""
    return key.replace(".", "_")


class KiloNetworks(torch.nn.Module):
    """The M tiny MLPs as trainable float32 parameters (``l0_weight`` … ``l4_bias``)."""

    def __init__(self, weights: Mapping[str, torch.Tensor], spec: NetworkSpec) -> None:
        """Copy ``weights`` (scene keys, any float dtype) into float32 parameters."""
        super().__init__()
        self.spec = spec
        self.weights = torch.nn.ParameterDict(
            {
                _param_name(k): torch.nn.Parameter(weights[k].detach().to(torch.float32).clone())
                for k in LAYER_KEYS
            }
        )

    @classmethod
    def from_scene(cls, scene: Any) -> KiloNetworks:
        """Networks of a ``Scene`` (weights converted to float32)."""
        return cls(scene.weights, NetworkSpec.from_scene(scene))

    @classmethod
    def initialized(cls, num_networks: int, spec: NetworkSpec, seed: int = 0) -> KiloNetworks:
        """Fresh networks with ``init_weights``."""
        return cls(init_weights(num_networks, spec, seed), spec)

    @property
    def num_networks(self) -> int:
        """M."""
        return int(self.weights["l0_weight"].shape[0])

    def params(self) -> dict[str, torch.Tensor]:
        """The live parameters under scene keys (for ``evaluate_networks``; gradients flow into them)."""
        return {k: self.weights[_param_name(k)] for k in LAYER_KEYS}

    def to_weights(self) -> dict[str, torch.Tensor]:
        """Detached CPU float32 copies under scene keys (for ``Scene.weights``)."""
        return {k: self.weights[_param_name(k)].detach().to("cpu", torch.float32).clone() for k in LAYER_KEYS}

    def forward(
        self, x: torch.Tensor, d: torch.Tensor, net: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """σ ``[N]``, rgb ``[N, 3]`` of ``[N, 3]`` world points, ``[N, 3]`` unit dirs, ``[N]`` net ids."""
        return evaluate_networks(self.params(), x, d, net, scene_meta=self.spec)
