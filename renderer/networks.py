"""Evaluation of thousands of tiny MLPs: every sample goes through the network of its grid cell.

Layer layout (``y = x @ W + b``, M networks, H hidden, P/D = position/direction frequencies):
``l0 [M, 3+6P, H]`` → relu → ``l1 [M, H, H]`` → relu → ``l2 [M, H, 1+H]`` (column 0 raw density, 1..H feature)
→ concat(feature, γ_D(d)) → ``l3 [M, H+3+6D, H]`` → relu → ``l4 [M, H, 3]`` → sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from renderer.encoding import encoded_size, positional_encoding
from renderer.grid import cell_index, local_coords

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


def _segments(net_sorted: torch.Tensor) -> tuple[list[int], list[int]]:
    """Ids and lengths of the runs of equal ids in sorted ``[N]`` int64 ``net_sorted``."""
    ids, counts = torch.unique_consecutive(net_sorted, return_counts=True)
    return ids.tolist(), counts.tolist()


Bounds = list[tuple[int, int, int]]


def _bounds(seg_ids: list[int], seg_lens: list[int], start: int = 0) -> Bounds:
    """(network, begin, end) of each run, offsets from ``start``."""
    out = []
    s = start
    for m, c in zip(seg_ids, seg_lens):
        out.append((m, s, s + c))
        s += c
    return out


def _chunks(seg_ids: list[int], seg_lens: list[int], chunk_size: int) -> list[tuple[int, int, Bounds]]:
    """Split sorted runs into chunks of ≤ ``chunk_size`` samples: (begin, end, bounds relative to begin).

    Whole runs are kept together while they fit; a run longer than a chunk is split.
    """
    out: list[tuple[int, int, Bounds]] = []
    cur: Bounds = []
    begin = pos = 0
    for m, c in zip(seg_ids, seg_lens):
        while c > 0:
            take = min(c, chunk_size - (pos - begin))
            cur.append((m, pos - begin, pos - begin + take))
            pos += take
            c -= take
            if pos - begin >= chunk_size:
                out.append((begin, pos, cur))
                cur, begin = [], pos
    if cur:
        out.append((begin, pos, cur))
    return out


Views = dict[str, tuple[torch.Tensor, ...]]


_VIEWS_CACHE: dict[tuple[Any, ...], Views] = {}
"""Per-network views of recently used constant weights (``unbind`` of 11 tensors costs ~15 ms per call)."""
_VIEWS_CACHE_SIZE = 4


def _per_network_views(w: dict[str, torch.Tensor], hidden: int) -> Views:
    """Every network's slice of every tensor, made once (``unbind``) so the loops index Python tuples.

    Weights that need no gradient (a loaded scene) are cached by storage, shape and dtype, so a renderer's
    passes and frames reuse them (views share storage, so in-place edits stay visible; the cache holds the
    tensors, so their storage cannot be reused by others); trainable weights are unbound afresh (autograd).
    """
    tensors = [w[k] for k in LAYER_KEYS]
    key: tuple[Any, ...] | None = None
    if not any(t.requires_grad for t in tensors):
        key = (hidden, *((t.data_ptr(), tuple(t.shape), t.dtype, t.device) for t in tensors))
        hit = _VIEWS_CACHE.get(key)
        if hit is not None:
            return hit
    views = _unbind_views(w, hidden)
    if key is not None:
        if len(_VIEWS_CACHE) >= _VIEWS_CACHE_SIZE:
            _VIEWS_CACHE.pop(next(iter(_VIEWS_CACHE)))
        _VIEWS_CACHE[key] = views
    return views


def _unbind_views(w: dict[str, torch.Tensor], hidden: int) -> Views:
    """Unbind every tensor along the network axis."""
    h = hidden
    return {
        "w0": w["l0.weight"].unbind(0),
        "b0": w["l0.bias"].unbind(0),
        "w1": w["l1.weight"].unbind(0),
        "b1": w["l1.bias"].unbind(0),
        "w2": w["l2.weight"].unbind(0),
        "b2": w["l2.bias"].unbind(0),
        "w3f": w["l3.weight"][:, :h].unbind(0),
        "w3d": w["l3.weight"][:, h:].unbind(0),
        "b3": w["l3.bias"].unbind(0),
        "w4": w["l4.weight"].unbind(0),
        "b4": w["l4.bias"].unbind(0),
    }


def _trunk_inplace(
    v: Views, enc_u: torch.Tensor, bounds: Bounds, hidden: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """No-grad l0 → relu → l1 → relu → l2 on sorted runs: ``[n, 3+6P]`` → ``[n, 1+H]`` (raw σ, feature).

    ``out``: optional contiguous ``[n, 1+H]`` buffer to write into.
    """
    n = enc_u.shape[0]
    h1 = enc_u.new_empty((n, hidden))
    h2 = enc_u.new_empty((n, hidden))
    o = enc_u.new_empty((n, 1 + hidden)) if out is None else out
    ids = [m for m, _, _ in bounds]
    lens = [b - a for _, a, b in bounds]
    xs, h1s, h2s, os_ = enc_u.split(lens), h1.split(lens), h2.split(lens), o.split(lens)
    w0, b0, w1, b1, w2, b2 = v["w0"], v["b0"], v["w1"], v["b1"], v["w2"], v["b2"]
    addmm = torch.addmm
    for m, x, y in zip(ids, xs, h1s):
        addmm(b0[m], x, w0[m], out=y)
    h1.relu_()
    for m, x, y in zip(ids, h1s, h2s):
        addmm(b1[m], x, w1[m], out=y)
    h2.relu_()
    for m, x, y in zip(ids, h2s, os_):
        addmm(b2[m], x, w2[m], out=y)
    return o


def _head_inplace(
    v: Views, feat: torch.Tensor, enc_d: torch.Tensor, bounds: Bounds, hidden: int
) -> torch.Tensor:
    """No-grad concat(feature, γ_D(d)) → l3 → relu → l4 → sigmoid on sorted runs: → rgb ``[n, 3]``."""
    n = feat.shape[0]
    h1 = feat.new_empty((n, hidden))
    rgb = feat.new_empty((n, 3))
    ids = [m for m, _, _ in bounds]
    lens = [b - a for _, a, b in bounds]
    fs, ds, h1s, rs = feat.split(lens), enc_d.split(lens), h1.split(lens), rgb.split(lens)
    w3f, w3d, b3, w4, b4 = v["w3f"], v["w3d"], v["b3"], v["w4"], v["b4"]
    addmm = torch.addmm
    for m, f, d, y in zip(ids, fs, ds, h1s):
        addmm(b3[m], f, w3f[m], out=y)
        y.addmm_(d, w3d[m])
    h1.relu_()
    for m, x, y in zip(ids, h1s, rs):
        addmm(b4[m], x, w4[m], out=y)
    return rgb.sigmoid_()


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
    w = _as_compute(params, x)
    views = _per_network_views(w, spec.hidden)
    no = NetworkOrder.of(net)
    n = x.shape[0]
    trunk = x.new_empty((n, 1 + spec.hidden))  # raw density, feature: network-sorted order
    with torch.no_grad():
        for a, b, bounds in _chunks(no.seg_ids, no.seg_lens, chunk_size):
            xs = x.index_select(0, no.order[a:b])
            cell = cell_index(xs, spec.bbox_min, spec.bbox_max, spec.grid_res)
            u = local_coords(xs, cell, spec.bbox_min, spec.cell_size)
            _trunk_inplace(views, positional_encoding(u, spec.pos_freqs), bounds, spec.hidden, trunk[a:b])
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
    views = _per_network_views(_as_compute(params, feature), spec.hidden)
    keep_sorted = keep.index_select(0, no.order)
    ends = torch.tensor(no.seg_lens, dtype=torch.int64, device=keep.device).cumsum(0)
    csum = torch.cumsum(keep_sorted.to(torch.int64), 0)
    at_end = csum[ends - 1]
    counts = (at_end - torch.cat((at_end.new_zeros(1), at_end[:-1]))).tolist()
    ids = [m for m, c in zip(no.seg_ids, counts) if c > 0]
    lens = [c for c in counts if c > 0]
    pos = keep_sorted.nonzero().squeeze(1)
    idx = no.order.index_select(0, pos)
    feat = feature.index_select(0, pos)
    rgb = feature.new_empty((idx.shape[0], 3))
    with torch.no_grad():
        for a, b, bounds in _chunks(ids, lens, chunk_size):
            enc_d = positional_encoding(d.index_select(0, idx[a:b]), spec.dir_freqs)
            rgb[a:b] = _head_inplace(views, feat[a:b], enc_d, bounds, spec.hidden)
    return idx, rgb


def _mlp_segments_autograd(
    w: dict[str, torch.Tensor], enc_u: torch.Tensor, enc_d: torch.Tensor, bounds: Bounds, hidden: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable evaluation of each run (``bounds``): raw σ ``[n]`` and rgb ``[n, 3]``, sorted order.

    Weights are gathered once (``index_select``) and split with ``unbind`` so the backward pass costs one
    scatter per tensor, not one full-size zero tensor per network.
    """
    h = hidden
    ids = torch.tensor([m for m, _, _ in bounds], dtype=torch.int64, device=enc_u.device)
    per_net = {k: w[k].index_select(0, ids).unbind(0) for k in LAYER_KEYS}
    raws: list[torch.Tensor] = []
    rgbs: list[torch.Tensor] = []
    for i, (_, a0, b0) in enumerate(bounds):
        xu, xd = enc_u[a0:b0], enc_d[a0:b0]
        a = F.relu(torch.addmm(per_net["l0.bias"][i], xu, per_net["l0.weight"][i]))
        a = F.relu(torch.addmm(per_net["l1.bias"][i], a, per_net["l1.weight"][i]))
        o = torch.addmm(per_net["l2.bias"][i], a, per_net["l2.weight"][i])
        w3 = per_net["l3.weight"][i]
        a = torch.addmm(torch.addmm(per_net["l3.bias"][i], o[:, 1:], w3[:h]), xd, w3[h:])
        a = F.relu(a)
        rgbs.append(torch.sigmoid(torch.addmm(per_net["l4.bias"][i], a, per_net["l4.weight"][i])))
        raws.append(o[:, 0])
    return torch.cat(raws), torch.cat(rgbs)


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

    Samples are sorted by network id; each network is evaluated with plain matmuls on its contiguous run;
    results are put back in the input order. Differentiable with respect to ``params`` (and ``x``, ``d``)
    when autograd is on; memory is bounded by evaluating ``chunk_size`` sorted samples at a time.

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
    w = _as_compute(params, x)
    grad = torch.is_grad_enabled() and (
        x.requires_grad or d.requires_grad or any(t.requires_grad for t in w.values())
    )
    no = NetworkOrder.of(net)
    num_networks = w["l0.weight"].shape[0]
    if no.seg_ids and (no.seg_ids[0] < 0 or no.seg_ids[-1] >= num_networks):
        raise IndexError(f"network id out of range 0..{num_networks - 1}")
    raw_parts: list[torch.Tensor] = []
    rgb_parts: list[torch.Tensor] = []
    raw_out = x.new_empty((n,))
    rgb_out = x.new_empty((n, 3))
    views = {} if grad else _per_network_views(w, spec.hidden)
    for a, b, bounds in _chunks(no.seg_ids, no.seg_lens, chunk_size):
        idx = no.order[a:b]
        xs, ds = x.index_select(0, idx), d.index_select(0, idx)
        cell = cell_index(xs, spec.bbox_min, spec.bbox_max, spec.grid_res)
        u = local_coords(xs, cell, spec.bbox_min, spec.cell_size)
        enc_u = positional_encoding(u, spec.pos_freqs)
        enc_d = positional_encoding(ds, spec.dir_freqs)
        if grad:
            raw, rgb = _mlp_segments_autograd(w, enc_u, enc_d, bounds, spec.hidden)
            raw_parts.append(raw)
            rgb_parts.append(rgb)
        else:
            with torch.no_grad():
                o = _trunk_inplace(views, enc_u, bounds, spec.hidden)
                raw_out.index_copy_(0, idx, o[:, 0])
                rgb_out.index_copy_(0, idx, _head_inplace(views, o[:, 1:], enc_d, bounds, spec.hidden))
    if grad:
        inverse = torch.empty_like(no.order)
        inverse[no.order] = torch.arange(n, device=no.order.device)
        return density_activation(torch.cat(raw_parts)[inverse], spec), torch.cat(rgb_parts)[inverse]
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
