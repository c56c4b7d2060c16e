"""Positional encoding: order of the terms, no π, hand values."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from renderer.encoding import encoded_size, positional_encoding


def test_hand_values() -> None:
    v = torch.tensor([[0.5, -1.0]])
    out = positional_encoding(v, 2)
    expected = [0.5, -1.0]
    expected += [math.sin(0.5), math.sin(-1.0), math.cos(0.5), math.cos(-1.0)]
    expected += [math.sin(1.0), math.sin(-2.0), math.cos(1.0), math.cos(-2.0)]
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-6)


def test_zero_freqs_is_identity_and_sizes() -> None:
    v = torch.randn(4, 3)
    assert torch.equal(positional_encoding(v, 0), v)
    assert encoded_size(3, 10) == 63 and encoded_size(3, 4) == 27
    assert positional_encoding(v, 10).shape == (4, 63)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)), elements=st.floats(-4, 4)),
    st.integers(0, 6),
)
def test_matches_formula(v: np.ndarray, num_freqs: int) -> None:
    out = positional_encoding(torch.from_numpy(v), num_freqs).numpy()
    terms = [v]
    for i in range(num_freqs):
        terms += [np.sin(2.0**i * v), np.cos(2.0**i * v)]
    np.testing.assert_allclose(out, np.concatenate(terms, axis=1), rtol=0, atol=1e-12)


def test_differentiable() -> None:
    v = torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True)
    positional_encoding(v, 1).sum().backward()
    # d/dv (v + sin v + cos v) = 1 + cos v − sin v
    assert v.grad is not None
    assert abs(v.grad.item() - (1 + math.cos(0.3) - math.sin(0.3))) < 1e-12
