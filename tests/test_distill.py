"""Distillation: the point sampler, the loss, resumability, and error vs an analytic teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderer.networks import NetworkSpec, evaluate_networks_batched, init_weights
from trainer.distill import (
    CellSampler,
    DistillConfig,
    DistillState,
    alpha_from_sigma,
    distill,
    distill_losses,
    error_report,
    initial_state,
    untrained_encoding_rows,
)
from trainer.teachers.base import Teacher

BMIN = np.array([-1.0, -1.0, -0.5])
BMAX = np.array([1.0, 1.0, 0.5])
GRID = (2, 2, 1)
OCC_RES = (8, 8, 4)
STEP = 0.05


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run far faster on one thread on a shared 2-core machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class BallTeacher(Teacher):
    """Analytic field: density 20 inside a ball of radius 0.45 at the origin; colour from position."""

    kind = "analytic"

    def __init__(self) -> None:
        super().__init__(BMIN, BMAX)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x.norm(dim=-1) < 0.45, 20.0, 0.0)

    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = torch.stack([0.5 + 0.4 * x[:, 0], 0.5 + 0.4 * x[:, 1], 0.5 + 0.3 * d[:, 2]], dim=-1)
        return self.density(x), rgb


def ball_layout() -> tuple[np.ndarray, np.ndarray]:
    """Occupancy of voxels whose centre is within 0.5 of the origin, and the network index."""
    centres = [BMIN[a] + (np.arange(OCC_RES[a]) + 0.5) * (BMAX[a] - BMIN[a]) / OCC_RES[a] for a in range(3)]
    gx, gy, gz = np.meshgrid(*centres, indexing="ij")
    occ = np.sqrt(gx**2 + gy**2 + gz**2) < 0.5
    sub = np.array(OCC_RES) // np.array(GRID)
    cell_occ = occ.reshape(GRID[0], sub[0], GRID[1], sub[1], GRID[2], sub[2]).any(axis=(1, 3, 5))
    index = np.full(GRID, -1, np.int32)
    index[cell_occ] = np.arange(int(cell_occ.sum()))
    return occ, index


def spec_for(m: int) -> NetworkSpec:
    return NetworkSpec(
        bbox_min=tuple(BMIN), bbox_max=tuple(BMAX), grid_res=GRID, pos_freqs=4, dir_freqs=2, hidden=16,
        density_activation="softplus", density_scale=1.0 / STEP,
    )  # fmt: skip


def test_sampler_points_lie_in_their_cell_and_favour_occupied_voxels() -> None:
    occ, index = ball_layout()
    # one cell keeps its network but loses every occupied voxel: its points must fall back to uniform
    assert (index >= 0).all()
    occ[4:, 4:, :] = False
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    gen = torch.Generator().manual_seed(0)
    u, x, d = sampler.sample(256, 0.75, gen)
    m = sampler.num_networks
    assert u.shape == (m, 256, 3) and x.shape == (m, 256, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(m, 256), atol=1e-5)
    assert (u >= -1).all() and (u <= 1).all()
    cell = (np.array(BMAX) - np.array(BMIN)) / np.array(GRID)
    flat = index.reshape(-1)
    for net in range(m):
        g = np.array(np.unravel_index(int(np.nonzero(flat == net)[0][0]), GRID))
        lo = BMIN + g * cell
        xn = x[net].numpy()
        assert (xn >= lo - 1e-5).all() and (xn <= lo + cell + 1e-5).all()
        # local coordinate rule of the format: u = 2 (x - cell_min) / cell - 1
        np.testing.assert_allclose(u[net].numpy(), 2 * (xn - lo) / cell - 1, atol=1e-5)
        vox = np.clip(np.floor((xn - BMIN) / (BMAX - BMIN) * OCC_RES).astype(int), 0, np.array(OCC_RES) - 1)
        inside = occ[vox[:, 0], vox[:, 1], vox[:, 2]]
        if occ_in_cell(occ, g).any():
            assert inside[:192].all(), "the occupied share must be inside occupied voxels"
        else:
            assert not inside.any()
            # uniform fallback covers the whole cell
            assert (xn.min(axis=0) < lo + 0.1 * cell).all() and (xn.max(axis=0) > lo + 0.9 * cell).all()


def occ_in_cell(occ: np.ndarray, g: np.ndarray) -> np.ndarray:
    sub = np.array(OCC_RES) // np.array(GRID)
    lo = g * sub
    return occ[lo[0] : lo[0] + sub[0], lo[1] : lo[1] + sub[1], lo[2] : lo[2] + sub[2]]


def test_distill_losses_hand_computed() -> None:
    sigma_s = torch.tensor([[0.0, 10.0]])
    sigma_t = torch.tensor([[10.0, 10.0]])
    rgb_s = torch.zeros(1, 2, 3)
    rgb_t = torch.full((1, 2, 3), 0.5)
    per_net, loss = distill_losses(sigma_s, rgb_s, sigma_t, rgb_t, step=0.1, rgb_weight=2.0)
    a = 1 - np.exp(-1.0)
    expected = (a**2) / 2 + 2.0 * 0.25
    assert per_net.shape == (1,)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(alpha_from_sigma(torch.tensor(10.0), 0.1)) == pytest.approx(a, rel=1e-6)


def test_colour_error_weighted_by_teacher_alpha_hand_computed() -> None:
    # two points: the teacher is empty at the first (alpha 0) and dense at the second (alpha a)
    sigma_t = torch.tensor([[0.0, 10.0]])
    sigma_s = sigma_t.clone()
    rgb_s = torch.zeros(1, 2, 3)
    rgb_t = torch.tensor([[[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]]])
    a = 1 - np.exp(-1.0)
    _, plain = distill_losses(sigma_s, rgb_s, sigma_t, rgb_t, step=0.1, rgb_weight=1.0)
    assert float(plain) == pytest.approx((0.04 + 0.25) / 2, rel=1e-6)
    _, weighted = distill_losses(sigma_s, rgb_s, sigma_t, rgb_t, step=0.1, rgb_weight=1.0, rgb_by_alpha=True)
    # weights alpha / mean(alpha) = (0, 2): the empty point's colour no longer counts
    assert float(weighted) == pytest.approx((0.0 * 0.04 + 2.0 * 0.25) / 2, rel=1e-5)
    assert a > 0  # (the mean alpha a / 2 cancels in the normalisation)


def test_sampler_picks_occupied_voxels_in_proportion_to_their_weights() -> None:
    occ = np.zeros(OCC_RES, bool)
    occ[0, 0, 0] = occ[1, 0, 0] = True  # two occupied voxels, both in cell (0, 0, 0)
    index = np.full(GRID, -1, np.int32)
    index[0, 0, 0] = 0
    index[1, 1, 0] = 1  # a second network whose cell has no occupied voxel: uniform in its cell
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    centres = sampler.voxel_centres()
    np.testing.assert_allclose(centres.numpy(), [[-0.875, -0.875, -0.375], [-0.625, -0.875, -0.375]])
    sampler.set_voxel_weights(torch.tensor([1.0, 3.0]))
    u, x, _ = sampler.sample(4000, 1.0, torch.Generator().manual_seed(0))
    second = (x[0, :, 0] > -0.75).double().mean()
    assert float(second) == pytest.approx(0.75, abs=0.03)  # 3 / (1 + 3)
    assert bool((x[0, :, 0] < -0.5).all()) and bool((x[0, :, 1] < -0.75).all())
    assert bool((x[1, :, :2] >= 0).all()) and float(x[1, :, 0].min()) < 0.1 and float(x[1, :, 0].max()) > 0.9
    with pytest.raises(ValueError, match="shape"):
        sampler.set_voxel_weights(torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        sampler.set_voxel_weights(torch.tensor([1.0, 0.0]))


def _fresh_error(teacher: BallTeacher, sampler: CellSampler, spec: NetworkSpec, params: dict) -> float:
    gen = torch.Generator().manual_seed(12345)
    u, x, d = sampler.sample(512, 0.5, gen)
    s_t, c_t = teacher.query(x.reshape(-1, 3), d.reshape(-1, 3))
    with torch.no_grad():
        s_s, c_s = evaluate_networks_batched(params, u, d, spec)
    _, loss = distill_losses(s_s, c_s, s_t.reshape(s_s.shape), c_t.reshape(c_s.shape), STEP, 1.0)
    return float(loss)


def test_distillation_lowers_error_to_analytic_teacher() -> None:
    torch.manual_seed(0)
    occ, index = ball_layout()
    m = int(index.max()) + 1
    spec = spec_for(m)
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    teacher = BallTeacher()
    state0 = initial_state(init_weights(m, spec, seed=0), density_shift=-1.0)
    before = _fresh_error(teacher, sampler, spec, state0.params)
    cfg = DistillConfig(
        steps=150, points_per_network=256, lr=3e-3, checkpoint_seconds=1e9, checkpoint_every=10**9
    )
    seen: list[float] = []
    final = distill(teacher, sampler, spec, STEP, cfg, state0, on_step=lambda s, t, loss: seen.append(loss))
    after = _fresh_error(teacher, sampler, spec, final.params)
    assert final.step == 150 and len(seen) == 150
    assert after < 0.4 * before, (before, after)
    assert final.error is not None and final.error.shape == (m,)
    assert torch.isfinite(final.error).all()
    report = error_report(final.error, np.zeros((m, 3), np.int64))
    assert report["num_networks"] == m
    assert report["max"] == pytest.approx(float(final.error.max()), rel=1e-6)


def test_untrained_encoding_rows_hand_computed() -> None:
    assert untrained_encoding_rows(0, 4, None) is None and untrained_encoding_rows(0, 4, 4) is None
    rows = untrained_encoding_rows(0, 2, 1)  # inputs: x (3), sin/cos of octave 0 (6), of octave 1 (6)
    assert rows is not None and rows.tolist() == [False] * 9 + [True] * 6
    rows = untrained_encoding_rows(5, 2, 0)  # 5 feature rows, then d (3), octave 0 (6), octave 1 (6)
    assert rows is not None and rows.tolist() == [False] * 8 + [True] * 12


def test_frozen_position_rows_stay_zero_and_the_rest_trains() -> None:
    occ, index = ball_layout()
    m = int(index.max()) + 1
    spec = spec_for(m)  # 4 position octaves: l0 has 3 + 24 input rows
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    rows = untrained_encoding_rows(0, spec.pos_freqs, 2)
    assert rows is not None and int(rows.sum()) == 12
    state0 = initial_state(init_weights(m, spec, seed=0), density_shift=-1.0)
    w0 = state0.params["l0.weight"].clone()
    cfg = DistillConfig(
        steps=20, points_per_network=64, lr=3e-3, checkpoint_seconds=1e9, checkpoint_every=10**9
    )
    final = distill(BallTeacher(), sampler, spec, STEP, cfg, state0, frozen_rows={"l0.weight": rows})
    w = final.params["l0.weight"]
    assert bool((w[:, rows] == 0).all())
    assert float((w[:, ~rows] - w0[:, ~rows]).abs().min(dim=1).values.max()) > 0
    assert bool((state0.params["l0.weight"] == w0).all())  # the caller's state is not modified


def test_distill_resume_matches_uninterrupted(tmp_path) -> None:
    occ, index = ball_layout()
    m = int(index.max()) + 1
    spec = spec_for(m)
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    teacher = BallTeacher()
    cfg = DistillConfig(steps=12, points_per_network=32, checkpoint_seconds=1e9, checkpoint_every=10**9)
    straight = distill(teacher, sampler, spec, STEP, cfg, initial_state(init_weights(m, spec, 1), -1.0))

    ckpt = tmp_path / "d.ckpt"
    calls = {"n": 0}

    def stop_after_5() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    part = distill(
        teacher, sampler, spec, STEP, cfg, initial_state(init_weights(m, spec, 1), -1.0),
        checkpoint=lambda s: s.save(ckpt), should_stop=stop_after_5,
    )  # fmt: skip
    assert part.step == 5
    resumed = distill(teacher, sampler, spec, STEP, cfg, DistillState.load(ckpt, "cpu"))
    assert resumed.step == 12
    for k in straight.params:
        torch.testing.assert_close(resumed.params[k], straight.params[k], rtol=1e-5, atol=1e-6)


def test_camera_directions_point_from_a_training_camera_to_the_point() -> None:
    occ, index = ball_layout()
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    cams = torch.tensor([[4.0, 0.0, 0.0], [0.0, -4.0, 1.0], [-3.0, 2.0, 2.0]])
    sampler.camera_origins = cams
    u, x, d = sampler.sample(64, 0.5, torch.Generator().manual_seed(1))
    assert torch.allclose(d.norm(dim=-1), torch.ones(d.shape[:2]), atol=1e-5)
    # x - t d is one of the cameras for t = |x - camera|
    dist = (x[..., None, :] - cams).norm(dim=-1)  # [M, B, K]
    back = x[..., None, :] - dist[..., None] * d[..., None, :]
    hit = ((back - cams).norm(dim=-1) < 1e-4).any(dim=-1)
    assert bool(hit.all())
    used = ((back - cams).norm(dim=-1) < 1e-4).reshape(-1, 3).any(dim=0)
    assert bool(used.all()), "every camera is drawn"
