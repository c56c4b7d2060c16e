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
