"""Teacher-labelled novel rays: arc origins, rays through occupied voxels, and their use in fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer.camera import orbit_pose
from trainer.finetune import FinetuneConfig, FinetunePixelSampler, FinetuneState, finetune
from trainer.teacher_rays import LabelledRayPool, TeacherRays, slerp_origins


def test_slerp_origins_hand_computed() -> None:
    a = torch.tensor([[2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 4.0, 0.0]])
    c = torch.zeros(3)
    mid = slerp_origins(a, b, torch.tensor([0.5]), c)
    # halfway along the quarter arc, at the mean radius 3
    expected = 3.0 * torch.tensor([[math.sqrt(0.5), math.sqrt(0.5), 0.0]])
    assert torch.allclose(mid, expected, atol=1e-6)
    assert torch.allclose(slerp_origins(a, b, torch.tensor([0.0]), c), a, atol=1e-6)
    assert torch.allclose(slerp_origins(a, b, torch.tensor([1.0]), c), b, atol=1e-6)
    # the same camera twice (the fallback for parallel directions) stays put
    assert torch.allclose(slerp_origins(a, a, torch.tensor([0.3]), c), a, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    st.floats(0, 1),
)
def test_slerp_origins_stay_between_the_radii(pa: list[float], pb: list[float], t: float) -> None:
    a, b = torch.tensor([pa], dtype=torch.float64), torch.tensor([pb], dtype=torch.float64)
    c = torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64)
    ra, rb = float((a - c).norm()), float((b - c).norm())
    if min(ra, rb) < 1e-3:
        return
    p = slerp_origins(a, b, torch.tensor([t], dtype=torch.float64), c)
    r = float((p - c).norm())
    assert abs(r - ((1 - t) * ra + t * rb)) < 1e-6 * max(1.0, ra, rb)


def test_rays_pass_through_an_occupied_voxel_from_between_the_cameras() -> None:
    occ = np.zeros((8, 8, 8), bool)
    occ[2, 5, 3] = True
    occ[6, 1, 4] = True
    cams = np.stack([orbit_pose((0, 0, 0), 4.0, az, 30.0)[:3, 3] for az in (0.0, 90.0, 180.0)])
    tr = TeacherRays.from_occupancy(
        cams, np.full(3, -1.0), np.full(3, 1.0), occ, lambda o, d: torch.zeros(o.shape[0], 3)
    )
    o, d = tr.sample_rays(500, torch.Generator().manual_seed(3))
    assert torch.allclose(d.norm(dim=-1), torch.ones(500), atol=1e-5)
    # origins at the cameras' radius (all 4), never at a pole the cameras do not reach
    assert torch.allclose(o.norm(dim=-1), torch.full((500,), 4.0), atol=1e-4)
    assert float(o[:, 2].min()) > 4.0 * math.sin(math.radians(30.0)) - 1e-4
    # every ray passes within half a voxel diagonal of one of the two occupied voxel centres
    size = 2.0 / 8
    centres = -1 + (torch.tensor([[2.0, 5.0, 3.0], [6.0, 1.0, 4.0]]) + 0.5) * size
    v = centres[None] - o[:, None]  # [R, 2, 3]
    along = (v * d[:, None]).sum(-1, keepdim=True)
    dist = (v - along * d[:, None]).norm(dim=-1).min(dim=1).values
    assert float(dist.max()) <= size * math.sqrt(3) / 2 + 1e-5


def test_teacher_rays_pull_the_students_colour_to_the_teacher() -> None:
    from renderer.render import prepare_scene
    from tests.test_finetune import _box_scene

    scene, spec = _box_scene(density_bias=4.0)
    rs = prepare_scene(scene, "cpu")
    cams = np.stack([orbit_pose((0, 0, 0), 3.5, az, 25.0) for az in (0.0, 90.0)])
    rays = FinetunePixelSampler(
        images=torch.ones(2, 4, 4, 3), c2w=torch.as_tensor(cams).float(), focal=4.0, cx=2.0, cy=2.0
    )
    grey = torch.tensor([0.2, 0.4, 0.6])
    calls: list[int] = []

    def teacher(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        calls.append(o.shape[0])
        return grey.expand(o.shape[0], 3)

    novel = TeacherRays.from_occupancy(
        cams[:, :3, 3], np.asarray(spec.bbox_min), np.asarray(spec.bbox_max), scene.occupancy, teacher
    )
    cfg = FinetuneConfig(
        steps=150, rays_per_batch=8, teacher_rays=256, teacher_ray_weight=1.0, lr=1e-2,
        checkpoint_seconds=1e9, checkpoint_every=10**9,
    )  # fmt: skip
    start = FinetuneState(step=0, params={k: v.clone() for k, v in scene.weights.items()})
    out = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg, start, novel_rays=novel)
    assert calls == [256] * 150
    plain = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg, start)  # white pixels only
    assert len(calls) == 150
    o, d = novel.sample_rays(512, torch.Generator().manual_seed(5))
    from trainer.finetune import render_training_rays

    with torch.no_grad():
        before, _ = render_training_rays(scene.weights, rs, spec, o, d, scene.step_size, torch.ones(3))
        after, _ = render_training_rays(out.params, rs, spec, o, d, scene.step_size, torch.ones(3))
        white, _ = render_training_rays(plain.params, rs, spec, o, d, scene.step_size, torch.ones(3))
    err_before = float((before - grey).square().mean())
    err_after = float((after - grey).square().mean())
    err_plain = float((white - grey).square().mean())
    assert err_after < 0.7 * err_before and err_after < 0.1 * err_plain, (err_before, err_after, err_plain)
    # from a pool of 4 steps' rays: the teacher labels only during the first 4 steps, the pull is the same
    calls.clear()
    pool = LabelledRayPool(novel, 4 * 256, seed=1)
    pooled = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg, start, novel_rays=pool)
    assert calls == [256] * 4
    with torch.no_grad():
        after_pool, _ = render_training_rays(pooled.params, rs, spec, o, d, scene.step_size, torch.ones(3))
    err_pool = float((after_pool - grey).square().mean())
    assert err_pool < 0.7 * err_before and err_pool < 0.1 * err_plain, (err_before, err_pool, err_plain)


def _labelled_pool(size: int, calls: list[int]) -> tuple[LabelledRayPool, TeacherRays]:
    """A pool over two occupied voxels whose "teacher" colours a ray by its direction (and counts calls)."""
    occ = np.zeros((4, 4, 4), bool)
    occ[1, 2, 3] = occ[3, 0, 1] = True
    cams = np.stack([orbit_pose((0, 0, 0), 4.0, az, 30.0)[:3, 3] for az in (0.0, 120.0, 240.0)])

    def teacher(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        calls.append(o.shape[0])
        return d.abs()

    source = TeacherRays.from_occupancy(cams, np.full(3, -1.0), np.full(3, 1.0), occ, teacher)
    return LabelledRayPool(source, size, seed=7), source


def test_a_pool_labels_each_step_s_rays_once_then_draws_from_them() -> None:
    calls: list[int] = []
    pool, source = _labelled_pool(40, calls)
    gen = torch.Generator()
    seen = []
    for step in range(4):  # steps 0..3 take rays [10s, 10s + 10), labelled then
        o, d, c = pool.batch(step, 10, gen)
        assert torch.equal(o, pool.origins[10 * step : 10 * step + 10]) and torch.equal(c, d.abs())
        seen.append(torch.cat([o, d], dim=1))
    assert calls == [10] * 4 and pool.labelled == 40
    assert torch.unique(torch.cat(seen), dim=0).shape[0] == 40  # 40 distinct rays, each used once
    for step in range(4, 30):  # afterwards: drawn from the labelled pool, no teacher call
        o, d, c = pool.batch(step, 10, gen.manual_seed(step))
        assert torch.equal(c, d.abs())
        assert ((o[:, None] == pool.origins[None]).all(-1)).any(1).all()
    assert calls == [10] * 4
    # the pool is drawn from its own seed: unit directions, origins on the cameras' sphere
    assert torch.allclose(pool.dirs.norm(dim=-1), torch.ones(40), atol=1e-5)
    assert torch.allclose(pool.origins.norm(dim=-1), torch.full((40,), 4.0), atol=1e-4)
    assert torch.equal(LabelledRayPool(source, 40, seed=7).origins, pool.origins)


def test_a_pool_resumed_mid_run_gives_the_uninterrupted_run_s_batches() -> None:
    def run(start: int, calls: list[int]) -> list[torch.Tensor]:
        pool, _ = _labelled_pool(64, calls)
        gen = torch.Generator()
        out = []
        for step in range(start, 12):
            o, d, c = pool.batch(step, 16, gen.manual_seed(1000 + step))
            out.append(torch.cat([o, d, c], dim=1))
        return out

    whole_calls: list[int] = []
    whole = run(0, whole_calls)
    for start in (2, 4, 7):  # inside the labelling steps, at their end, after them
        calls: list[int] = []
        resumed = run(start, calls)
        assert all(torch.equal(a, b) for a, b in zip(resumed, whole[start:]))
        assert sum(calls) == 64 and sum(whole_calls) == 64  # catching up labels what the steps took
