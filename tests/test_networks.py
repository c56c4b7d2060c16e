"""Multi-network evaluation against a per-point numpy float64 implementation of the issue-2 formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderer.grid import cell_index, flat_index
from renderer.networks import (
    LAYER_KEYS,
    KiloNetworks,
    NetworkSpec,
    evaluate_networks,
    evaluate_networks_batched,
    init_weights,
)

SPEC = NetworkSpec(
    bbox_min=(-1.0, -0.5, 0.0),
    bbox_max=(1.0, 0.5, 3.0),
    grid_res=(3, 2, 4),
    hidden=8,
    pos_freqs=3,
    dir_freqs=2,
)


def _gamma(v: np.ndarray, num_freqs: int) -> np.ndarray:
    out = [v]
    for i in range(num_freqs):
        out += [np.sin(2.0**i * v), np.cos(2.0**i * v)]
    return np.concatenate(out)


def reference_point(w: dict[str, np.ndarray], x: np.ndarray, d: np.ndarray, spec: NetworkSpec, m: int):
    """σ, rgb of one point through network m, straight from the issue-2 text, float64."""
    lo, hi, res = np.array(spec.bbox_min), np.array(spec.bbox_max), np.array(spec.grid_res)
    c = (hi - lo) / res
    g = np.clip(np.floor((x - lo) / c), 0, res - 1)
    u = 2 * (x - (lo + g * c)) / c - 1
    h = np.maximum(_gamma(u, spec.pos_freqs) @ w["l0.weight"][m] + w["l0.bias"][m], 0)
    h = np.maximum(h @ w["l1.weight"][m] + w["l1.bias"][m], 0)
    o = h @ w["l2.weight"][m] + w["l2.bias"][m]
    raw = float(o[0])
    act = {"relu": max(raw, 0.0), "softplus": float(np.log1p(np.exp(raw))), "exp": float(np.exp(raw))}
    sigma = spec.density_scale * act[spec.density_activation]
    h = np.maximum(
        np.concatenate([o[1:], _gamma(d, spec.dir_freqs)]) @ w["l3.weight"][m] + w["l3.bias"][m], 0
    )
    rgb = 1 / (1 + np.exp(-(h @ w["l4.weight"][m] + w["l4.bias"][m])))
    return sigma, rgb


def _points(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(SPEC.bbox_min), torch.tensor(SPEC.bbox_max)
    x = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    net = flat_index(cell_index(x, SPEC.bbox_min, SPEC.bbox_max, SPEC.grid_res), SPEC.grid_res)
    return x, d, net


def _weights(spec: NetworkSpec, seed: int = 1) -> dict[str, torch.Tensor]:
    w = init_weights(24, spec, seed)
    # larger density bias so relu is not always zero
    w["l2.bias"][:, 0] += 0.5
    return w


@pytest.mark.parametrize("activation", ["relu", "softplus", "exp"])
@pytest.mark.parametrize("chunk", [7, 1 << 15])
def test_matches_per_point_reference(activation: str, chunk: int) -> None:
    spec = NetworkSpec(**{**SPEC.__dict__, "density_activation": activation, "density_scale": 1.7})
    w = _weights(spec)
    x, d, net = _points(300)
    # scramble ids so network m is not the cell's flat index (any mapping is allowed)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    net = perm[net]
    with torch.no_grad():
        sigma, rgb = evaluate_networks(w, x, d, net, scene_meta=spec, chunk_size=chunk)
    wn = {k: v.double().numpy() for k, v in w.items()}
    for i in range(0, 300, 7):
        s_ref, rgb_ref = reference_point(wn, x[i].double().numpy(), d[i].double().numpy(), spec, int(net[i]))
        assert abs(float(sigma[i]) - s_ref) <= 1e-5 * max(1.0, abs(s_ref))
        np.testing.assert_allclose(rgb[i].numpy(), rgb_ref, atol=1e-5)


def test_autograd_path_equals_inplace_path_and_grads_reach_every_network_hit() -> None:
    w = {k: v.clone().requires_grad_(True) for k, v in _weights(SPEC).items()}
    x, d, net = _points(200, seed=3)
    net = torch.where(net == 5, torch.full_like(net, 6), net)  # network 5 is never hit
    sigma, rgb = evaluate_networks(w, x, d, net, scene_meta=SPEC, chunk_size=64)
    with torch.no_grad():
        s2, r2 = evaluate_networks(w, x, d, net, scene_meta=SPEC)
    torch.testing.assert_close(sigma.detach(), s2, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rgb.detach(), r2, atol=1e-6, rtol=1e-6)
    (sigma.sum() + rgb.sum()).backward()
    hit = set(net.tolist())
    for k in LAYER_KEYS:
        g = w[k].grad
        assert g is not None
        per_net = g.reshape(g.shape[0], -1).abs().sum(1)
        assert per_net[5] == 0, k
        for m in hit:
            if k.startswith("l4") or k.startswith("l3") or k.startswith("l2"):
                assert per_net[m] > 0, (k, m)
    # finite-difference check of one weight of one network
    m = int(net[0])
    k = "l1.weight"
    eps = 1e-3
    with torch.no_grad():
        base = {kk: vv.detach().double() for kk, vv in w.items()}
        plus = {kk: vv.clone() for kk, vv in base.items()}
        plus[k][m, 0, 0] += eps
        minus = {kk: vv.clone() for kk, vv in base.items()}
        minus[k][m, 0, 0] -= eps
        xd, dd = x.double(), d.double()
        fp = sum(t.sum() for t in evaluate_networks(plus, xd, dd, net, scene_meta=SPEC))
        fm = sum(t.sum() for t in evaluate_networks(minus, xd, dd, net, scene_meta=SPEC))
    grad = w[k].grad
    assert grad is not None
    assert abs(float((fp - fm) / (2 * eps)) - float(grad[m, 0, 0])) < 1e-3


def test_float16_params_are_computed_in_float32() -> None:
    w16 = {k: v.half() for k, v in _weights(SPEC).items()}
    x, d, net = _points(50)
    sigma, rgb = evaluate_networks(w16, x, d, net, scene_meta=SPEC)
    s32, r32 = evaluate_networks({k: v.float() for k, v in w16.items()}, x, d, net, scene_meta=SPEC)
    assert sigma.dtype == torch.float32
    torch.testing.assert_close(sigma, s32)
    torch.testing.assert_close(rgb, r32)


def test_batched_equals_segment_evaluation() -> None:
    w = _weights(SPEC)
    g = torch.Generator().manual_seed(2)
    u = torch.rand(24, 5, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(24, 5, 3, generator=g), dim=2)
    sigma_b, rgb_b = evaluate_networks_batched(w, u, d, SPEC)
    # world point of local u in the cell whose flat index is m (identity network_index)
    lo, c = torch.tensor(SPEC.bbox_min), torch.tensor(SPEC.cell_size)
    cells = torch.tensor(np.stack(np.unravel_index(np.arange(24), SPEC.grid_res), 1))
    x = lo + (cells[:, None, :] + (u * 0.999 + 1) / 2) * c
    net = torch.arange(24).repeat_interleave(5)
    sigma, rgb = evaluate_networks(w, x.reshape(-1, 3), d.reshape(-1, 3), net, scene_meta=SPEC)
    sigma_b2, rgb_b2 = evaluate_networks_batched(w, u * 0.999, d, SPEC)
    assert sigma_b.shape == (24, 5) and rgb_b.shape == (24, 5, 3)
    torch.testing.assert_close(sigma.reshape(24, 5), sigma_b2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rgb.reshape(24, 5, 3), rgb_b2, atol=1e-5, rtol=1e-5)


def test_kilonetworks_module_roundtrip_and_training_step() -> None:
    w = _weights(SPEC)
    mod = KiloNetworks(w, SPEC)
    assert mod.num_networks == 24
    assert len(list(mod.parameters())) == 10
    out = mod.to_weights()
    for k in LAYER_KEYS:
        assert torch.equal(out[k], w[k])
    x, d, net = _points(100)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
    target = torch.full((100, 3), 0.9)
    losses = []
    for _ in range(5):
        _, rgb = mod(x, d, net)
        loss = ((rgb - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_init_weights_shapes_and_determinism() -> None:
    a = init_weights(3, SPEC, seed=4)
    b = init_weights(3, SPEC, seed=4)
    c = init_weights(3, SPEC, seed=5)
    for k, shape in SPEC.weight_shapes(3).items():
        assert a[k].shape == shape and a[k].dtype == torch.float32
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["l0.weight"], c["l0.weight"])
    assert float(a["l0.weight"].abs().max()) <= 1 / np.sqrt(SPEC.pos_dim)


def test_empty_input() -> None:
    w = _weights(SPEC)
    sigma, rgb = evaluate_networks(
        w, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), scene_meta=SPEC
    )
    assert sigma.shape == (0,) and rgb.shape == (0, 3)


def test_density_first_then_colors_equals_full_evaluation() -> None:
    from renderer.networks import evaluate_colors_where, evaluate_density_first

    w = _weights(SPEC)
    x, d, net = _points(500, seed=7)
    sigma_full, rgb_full = evaluate_networks(w, x, d, net, scene_meta=SPEC)
    sigma, feat, order = evaluate_density_first(w, x, net, scene_meta=SPEC, chunk_size=37)
    torch.testing.assert_close(sigma, sigma_full, atol=1e-6, rtol=1e-6)
    keep = torch.rand(500, generator=torch.Generator().manual_seed(1)) < 0.3
    idx, rgb = evaluate_colors_where(w, feat, d, order, keep, scene_meta=SPEC, chunk_size=23)
    assert sorted(idx.tolist()) == torch.nonzero(keep).squeeze(1).tolist()
    torch.testing.assert_close(rgb, rgb_full[idx], atol=1e-6, rtol=1e-6)


def test_weight_changes_are_seen() -> None:
    """Edits in place and new tensors of the same shapes are both seen (nothing stale is kept)."""
    w = _weights(SPEC)
    x, d, net = _points(64)
    with torch.no_grad():
        s0, r0 = evaluate_networks(w, x, d, net, scene_meta=SPEC)
        s1, r1 = evaluate_networks(w, x, d, net, scene_meta=SPEC)
        torch.testing.assert_close(s0, s1)
        torch.testing.assert_close(r0, r1)
        w2 = {k: v.clone() for k, v in w.items()}  # same shapes, new storage
        w2["l4.bias"] += 1.0
        _, r2 = evaluate_networks(w2, x, d, net, scene_meta=SPEC)
        assert (r2 > r0).all()  # sigmoid of a larger logit
        w["l4.bias"] -= 1.0  # in place
        _, r3 = evaluate_networks(w, x, d, net, scene_meta=SPEC)
        assert (r3 < r0).all()
