"""Tile evaluation (``renderer.tiles`` + ``renderer.networks``) against a plain per-network loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import renderer.tiles as tiles
from renderer.encoding import positional_encoding
from renderer.grid import cell_index, local_coords
from renderer.networks import (
    LAYER_KEYS,
    NetworkSpec,
    density_activation,
    evaluate_colors_where,
    evaluate_density_first,
    evaluate_networks,
    init_weights,
)
from renderer.tiles import plan_tiles

SPEC = NetworkSpec(
    bbox_min=(-1.0, -1.0, -1.0),
    bbox_max=(1.0, 1.0, 1.0),
    grid_res=(2, 2, 2),
    hidden=8,
    pos_freqs=3,
    dir_freqs=2,
    density_activation="softplus",
)
M = 16


def loop_reference(
    w: dict[str, torch.Tensor], x: torch.Tensor, d: torch.Tensor, net: torch.Tensor, spec: NetworkSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """σ, rgb with one plain matmul chain per network (the evaluation before tiles), differentiable."""
    w = {k: v.to(x.dtype) for k, v in w.items()}
    cell = cell_index(x, spec.bbox_min, spec.bbox_max, spec.grid_res)
    enc_u = positional_encoding(local_coords(x, cell, spec.bbox_min, spec.cell_size), spec.pos_freqs)
    enc_d = positional_encoding(d, spec.dir_freqs)
    sels, raws, rgbs = [], [], []
    for m in torch.unique(net).tolist():
        sel = torch.nonzero(net == m).squeeze(1)
        a = F.relu(enc_u[sel] @ w["l0.weight"][m] + w["l0.bias"][m])
        a = F.relu(a @ w["l1.weight"][m] + w["l1.bias"][m])
        o = a @ w["l2.weight"][m] + w["l2.bias"][m]
        a = F.relu(torch.cat((o[:, 1:], enc_d[sel]), 1) @ w["l3.weight"][m] + w["l3.bias"][m])
        rgbs.append(torch.sigmoid(a @ w["l4.weight"][m] + w["l4.bias"][m]))
        raws.append(o[:, 0])
        sels.append(sel)
    n = x.shape[0]
    sel_all = torch.cat(sels)
    raw = x.new_zeros(n).index_copy(0, sel_all, torch.cat(raws))
    rgb = x.new_zeros(n, 3).index_copy(0, sel_all, torch.cat(rgbs))
    return density_activation(raw, spec), rgb


def _samples(run_lens: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points with ``run_lens[m]`` samples of network m, shuffled."""
    g = torch.Generator().manual_seed(seed)
    net = torch.repeat_interleave(torch.arange(len(run_lens)), torch.tensor(run_lens))
    net = net[torch.randperm(net.numel(), generator=g)]
    n = net.numel()
    x = torch.rand(n, 3, generator=g) * 2 - 1
    d = F.normalize(torch.randn(n, 3, generator=g), dim=1)
    return x, d, net


def _weights(seed: int = 1) -> dict[str, torch.Tensor]:
    w = init_weights(M, SPEC, seed)
    w["l2.bias"][:, 0] += 0.5
    return w


# run lengths around the tile sizes (128, 64, 16 by default; 8, 4, 2 in the small-tile runs): 0, 1, K, K+1,
# 3K/4 ± 1 and a long run
RUNS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 0]
RUNS_BIG = [0, 1, 16, 17, 47, 48, 63, 64, 65, 95, 97, 128, 129, 1500]


@pytest.fixture(params=["default", "small"])
def tile_sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Default tile sizes, and tiny tiles and chunks (every chunk and bucket boundary in a few samples)."""
    if request.param == "small":
        monkeypatch.setattr(tiles, "TILE_SIZES", (8, 4, 2))
        monkeypatch.setattr(tiles, "MAX_TILES", 5)
    return str(request.param)


@pytest.mark.parametrize("runs", [RUNS, RUNS_BIG], ids=["short", "long"])
def test_plan_covers_every_sample_once_with_its_own_network(runs: list[int], tile_sizes: str) -> None:
    lens = torch.tensor([r for r in runs if r > 0])
    ids = torch.tensor([m for m, r in enumerate(runs) if r > 0])
    net_sorted = torch.repeat_interleave(ids, lens)
    n = int(lens.sum())
    seen = torch.zeros(n, dtype=torch.int64)
    last_end = 0
    for ch in plan_tiles(ids, lens, chunk_size=37):
        assert ch.begin == last_end and ch.end > ch.begin
        last_end = ch.end
        t0 = 0
        for g in ch.groups:
            nets = ch.net[t0 : t0 + g.count]
            t0 += g.count
            assert g.rows.shape == (g.count * g.size,)
            assert int(g.rows.min()) >= 0 and int(g.rows.max()) < ch.end - ch.begin
            assert torch.equal(net_sorted[ch.begin + g.rows], nets.repeat_interleave(g.size))
            assert torch.equal(g.dst, g.rows[g.valid])
            seen.index_add_(0, ch.begin + g.dst, torch.ones_like(g.dst))
        assert t0 == ch.net.numel()
    assert last_end == n
    assert torch.equal(seen, torch.ones(n, dtype=torch.int64))


def test_plan_of_nothing_is_empty() -> None:
    empty = torch.zeros(0, dtype=torch.int64)
    assert plan_tiles(empty, empty) == []


@pytest.mark.parametrize("runs", [RUNS, RUNS_BIG], ids=["short", "long"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_grad_equals_loop(runs: list[int], dtype: torch.dtype, tile_sizes: str) -> None:
    w = {k: v.to(dtype) for k, v in _weights().items()}
    x, d, net = _samples(runs)
    with torch.no_grad():
        s_ref, c_ref = loop_reference(w, x, d, net, SPEC)
        sigma, rgb = evaluate_networks(w, x, d, net, scene_meta=SPEC, chunk_size=50)
    assert sigma.dtype == torch.float32
    torch.testing.assert_close(sigma, s_ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(rgb, c_ref, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("runs", [RUNS, RUNS_BIG], ids=["short", "long"])
def test_density_first_and_colours_equal_loop(runs: list[int], tile_sizes: str) -> None:
    w = _weights()
    x, d, net = _samples(runs, seed=4)
    s_ref, c_ref = loop_reference(w, x, d, net, SPEC)
    sigma, feat, order = evaluate_density_first(w, x, net, scene_meta=SPEC, chunk_size=41)
    torch.testing.assert_close(sigma, s_ref, atol=2e-5, rtol=2e-5)
    keep = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(2)) < 0.6
    keep[net == 1] = True  # a run of one kept sample
    idx, rgb = evaluate_colors_where(w, feat, d, order, keep, scene_meta=SPEC, chunk_size=29)
    assert sorted(idx.tolist()) == torch.nonzero(keep).squeeze(1).tolist()
    torch.testing.assert_close(rgb, c_ref[idx], atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("runs", [RUNS, RUNS_BIG], ids=["short", "long"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradients_equal_loop(runs: list[int], dtype: torch.dtype, tile_sizes: str) -> None:
    base = {k: v.to(dtype) for k, v in _weights(seed=3).items()}
    x, d, net = _samples(runs, seed=5)
    g = torch.Generator().manual_seed(9)
    r_s, r_c = torch.randn(x.shape[0], generator=g), torch.randn(x.shape[0], 3, generator=g)
    grads = []
    for fn in ("loop", "tiles"):
        w = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        xx, dd = x.clone().requires_grad_(True), d.clone().requires_grad_(True)
        if fn == "loop":
            sigma, rgb = loop_reference(w, xx, dd, net, SPEC)
        else:
            sigma, rgb = evaluate_networks(w, xx, dd, net, scene_meta=SPEC, chunk_size=50)
        ((sigma * r_s).sum() + (rgb * r_c).sum()).backward()
        grads.append({k: v.grad for k, v in w.items()} | {"x": xx.grad, "d": dd.grad})
    ref, got = grads
    for k in (*LAYER_KEYS, "x", "d"):
        assert got[k] is not None and ref[k] is not None, k
        assert got[k].dtype == ref[k].dtype
        scale = float(ref[k].float().abs().max()) + 1e-6
        tol = 2e-5 if dtype == torch.float32 or k in ("x", "d") else 2e-3  # float16 rounds the sums
        torch.testing.assert_close(got[k].float() / scale, ref[k].float() / scale, atol=tol, rtol=0, msg=k)
    # networks without samples get exactly zero gradient
    empty = [m for m, r in enumerate(runs) if r == 0] + list(range(len(runs), M))
    for k in LAYER_KEYS:
        assert float(got[k][empty].abs().sum()) == 0.0, k


def test_rendering_gathers_at_most_the_tile_weight_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a backward, a chunk gathers at most ``TILE_WEIGHT_BYTES`` of weights: 548 values per network
    here (l0 21·8+8, l1 72, l2 8·9+9, l3 23·8+8, l4 27), 4 bytes each in float32, 2 + 4 (gather, then cast)
    from float16; training keeps ``MAX_TILES``. The pictures do not depend on how samples are chunked."""
    from renderer.networks import _max_tiles

    monkeypatch.setattr(tiles, "TILE_WEIGHT_BYTES", 100_000)
    w32 = _weights()
    w16 = {k: v.half() for k, v in w32.items()}
    x, d, net = _samples(RUNS_BIG, seed=6)
    assert _max_tiles(w32, x, grad=False) == 100_000 // (548 * 4) == 45
    assert _max_tiles(w16, x, grad=False) == 100_000 // (548 * 6) == 30
    assert _max_tiles(w16, x, grad=True) == tiles.MAX_TILES
    assert tiles.tiles_within(10**9) == 16 and tiles.tiles_within(1) == tiles.MAX_TILES
    with torch.no_grad():
        small = evaluate_networks(w16, x, d, net, scene_meta=SPEC)
        monkeypatch.setattr(tiles, "TILE_WEIGHT_BYTES", 1 << 30)
        large = evaluate_networks(w16, x, d, net, scene_meta=SPEC)
    assert torch.equal(small[0], large[0]) and torch.equal(small[1], large[1])
