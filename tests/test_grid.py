"""Grid indexing: cell_index, local_coords, flat_index."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer.grid import cell_index, flat_index, local_coords

LO = (-1.0, 0.0, 2.0)
HI = (1.0, 3.0, 4.0)
RES = (4, 3, 2)  # cell size (0.5, 1.0, 1.0)


def test_cell_index_hand_values() -> None:
    x = torch.tensor(
        [
            [-1.0, 0.0, 2.0],  # min corner → (0, 0, 0)
            [-0.26, 1.5, 3.99],  # → (1, 1, 1)
            [0.999, 2.999, 2.5],  # → (3, 2, 0)
            [1.0, 3.0, 4.0],  # max corner clamps → (3, 2, 1)
            [-5.0, 10.0, 0.0],  # outside: clamped → (0, 2, 0)
        ]
    )
    g = cell_index(x, LO, HI, RES)
    assert g.dtype == torch.int64
    assert g.tolist() == [[0, 0, 0], [1, 1, 1], [3, 2, 0], [3, 2, 1], [0, 2, 0]]


def test_local_coords_hand_values() -> None:
    x = torch.tensor([[-0.75, 0.5, 3.25], [-1.0, 0.0, 2.0]])
    g = cell_index(x, LO, HI, RES)
    u = local_coords(x, g, LO, (0.5, 1.0, 1.0))
    np.testing.assert_allclose(u.numpy(), [[0.0, 0.0, -0.5], [-1.0, -1.0, -1.0]], atol=1e-6)


def test_flat_index_is_c_order() -> None:
    cells = torch.tensor([[0, 0, 0], [3, 2, 1], [1, 2, 0], [2, 0, 1]])
    expected = np.ravel_multi_index(cells.numpy().T, RES)
    assert flat_index(cells, RES).tolist() == expected.tolist()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1), st.floats(0, 1)),
        min_size=1,
        max_size=20,
    ),
    st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
)
def test_local_coords_in_range_and_invertible(fracs: list[tuple[float, float, float]], res: tuple) -> None:
    lo = np.array(LO)
    hi = np.array(HI)
    x = torch.tensor(lo + np.array(fracs) * (hi - lo), dtype=torch.float64)
    g = cell_index(x, LO, HI, res)
    assert bool((g >= 0).all()) and bool((g < torch.tensor(res)).all())
    c = (hi - lo) / np.array(res)
    u = local_coords(x, g, LO, tuple(c))
    assert float(u.min()) >= -1 - 1e-9 and float(u.max()) <= 1 + 1e-9
    back = lo + g.numpy() * c + (u.numpy() + 1) / 2 * c
    np.testing.assert_allclose(back, x.numpy(), atol=1e-9)
