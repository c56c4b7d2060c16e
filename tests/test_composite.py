"""Compositing: hand-computed transmittance and weights; the dense, packed and per-pass forms agree."""

from __future__ import annotations

import math

import numpy as np
import torch

from renderer.composite import (
    composite_front_to_back,
    composite_pass,
    composite_weights,
    exclusive_optical_depth,
    exclusive_transmittance,
    packed_weights,
)


def test_exclusive_optical_depth_and_transmittance_hand_computed() -> None:
    sigma = torch.tensor([1.0, 2.0, 3.0, 5.0, 1.0])
    ray = torch.tensor([0, 0, 0, 2, 2])
    depth = exclusive_optical_depth(sigma, ray, 0.5)
    torch.testing.assert_close(depth, torch.tensor([0.0, 0.5, 1.5, 0.0, 2.5], dtype=torch.float64))
    t = torch.exp(-depth).float()  # the transmittance in front of each sample
    expected = torch.tensor([1.0, math.exp(-0.5), math.exp(-1.5), 1.0, math.exp(-2.5)])
    torch.testing.assert_close(t, expected)


def test_dense_composite_weights_hand_computed() -> None:
    sigma_delta = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]])
    w, t_end = composite_weights(sigma_delta)
    a0, a2 = 1 - math.exp(-0.5), 1 - math.exp(-1.0)
    t2 = math.exp(-0.5)
    np.testing.assert_allclose(w[0].numpy(), [a0, 0.0, t2 * a2], rtol=1e-6)
    np.testing.assert_allclose(w[1].numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(t_end.numpy(), [math.exp(-1.5), 1.0], rtol=1e-6)
    np.testing.assert_allclose(w[0].sum() + t_end[0], 1.0, rtol=1e-6)  # weights + T_end partition unity
    trans, t_end2 = exclusive_transmittance(sigma_delta)
    np.testing.assert_allclose(trans[0].numpy(), [1.0, t2, t2], rtol=1e-6)
    assert torch.equal(t_end, t_end2)
    trans, t_end = exclusive_transmittance(torch.zeros(3, 0))  # no samples: nothing absorbs
    assert trans.shape == (3, 0) and t_end.tolist() == [1.0, 1.0, 1.0]


def test_dense_packed_and_pass_forms_agree_on_the_same_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = [3, 0, 5, 1]  # samples per ray; the ray without samples keeps T = 1
    r, s, step = len(counts), max(counts), 0.25
    ray_idx = torch.repeat_interleave(torch.arange(r), torch.tensor(counts))
    slot = torch.cat([torch.arange(c) for c in counts])
    sigma = 4.0 * torch.rand(ray_idx.numel(), generator=gen)
    rgb = torch.rand(ray_idx.numel(), 3, generator=gen)
    bg = torch.tensor([0.2, 0.5, 1.0])
    # dense [R, S], padded with σ·δ = 0 and rgb = 0
    od = torch.zeros(r, s).index_put((ray_idx, slot), sigma * step)
    rgb_dense = torch.zeros(r, s, 3).index_put((ray_idx, slot), rgb)
    w, t_end = composite_weights(od)
    dense = (w[..., None] * rgb_dense).sum(dim=1) + t_end[:, None] * bg
    # packed [S] with ray ids
    packed, t_packed = composite_front_to_back(sigma, rgb, ray_idx, step, r, bg)
    torch.testing.assert_close(packed, dense, atol=1e-6, rtol=0)
    torch.testing.assert_close(t_packed, t_end, atol=1e-6, rtol=0)
    trans, _ = exclusive_transmittance(od)
    torch.testing.assert_close(
        torch.exp(-exclusive_optical_depth(sigma, ray_idx, step)).float(), trans[ray_idx, slot]
    )
    # one marching pass of all samples in a padded [R, slots] table, no early stop
    color, t_pass, w_pass = composite_pass(sigma, rgb, ray_idx, slot, torch.ones(r), step, s, None)
    torch.testing.assert_close(color + t_pass[:, None] * bg, dense, atol=1e-6, rtol=0)
    torch.testing.assert_close(t_pass, t_end, atol=1e-6, rtol=0)
    torch.testing.assert_close(w_pass, w[ray_idx, slot], atol=1e-6, rtol=0)
    assert float(t_end[1]) == 1.0 and torch.equal(dense[1], bg)


def test_packed_weights_hand_computed() -> None:
    # ray 0: τ = 1, 2; ray 1: none; ray 2: τ = 0.5
    w, t_end = packed_weights(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0, 0, 2]), 3)
    e = math.exp
    expected = [1 - e(-1), e(-1) * (1 - e(-2)), 1 - e(-0.5)]
    assert torch.allclose(w, torch.tensor(expected), atol=1e-7)
    assert torch.allclose(t_end, torch.tensor([e(-3), 1.0, e(-0.5)]), atol=1e-7)
    w0, t0 = packed_weights(torch.zeros(0), torch.zeros(0, dtype=torch.int64), 2)
    assert w0.shape == (0,) and t0.tolist() == [1.0, 1.0]


def test_packed_weights_equal_the_dense_form_and_its_gradient() -> None:
    g = torch.Generator().manual_seed(4)
    counts = torch.tensor([3, 0, 5, 1, 7])
    ray = torch.repeat_interleave(torch.arange(5), counts)
    tau = (torch.rand(int(counts.sum()), generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    w, t_end = packed_weights(tau, ray, 5)
    dense = torch.zeros(5, 7, dtype=torch.float64)
    col = torch.cat([torch.arange(int(c)) for c in counts])
    dense = dense.index_put((ray, col), tau)
    wd, td = composite_weights(dense)
    assert torch.allclose(w, wd[ray, col], atol=1e-12) and torch.allclose(t_end, td, atol=1e-12)
    coef = torch.rand(w.shape[0], generator=g, dtype=torch.float64)
    (gp,) = torch.autograd.grad((w * coef).sum() + t_end.sum(), tau)
    (gd,) = torch.autograd.grad((wd[ray, col] * coef).sum() + td.sum(), tau)
    assert torch.allclose(gp, gd, atol=1e-12)
