"""The marcher's strategies (chained empty-space jumps, windows, whole-ray windows, the int64 fallback) keep
exactly the samples of a step-by-step walk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import renderer.march as march
import renderer.render as render_module
from renderer.camera import Camera, generate_rays, look_at
from renderer.march import RayBatch, _next_samples_wide, next_samples
from renderer.render import RenderOptions, RenderScene, prepare_scene, render_image
from renderer.synthetic import random_scene
from tests.reference_renderer import reference_render

STRATEGIES = {
    "jumps": {"BRUTE_BUDGET": 0, "WINDOW_BUDGET": 0, "MAX_JUMPS": 1},
    "chained": {"BRUTE_BUDGET": 0, "WINDOW_BUDGET": 1 << 14, "MAX_JUMPS": 3},
    "brute": {"BRUTE_BUDGET": 1 << 30, "WINDOW_BUDGET": 1 << 14, "MAX_JUMPS": 3},
}


def _use(monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    for name, value in STRATEGIES[strategy].items():
        monkeypatch.setattr(march, name, value)


def _camera(inside: bool, w: int = 20, h: int = 13) -> Camera:
    if inside:
        return Camera(w, h, 7.5 * w / 20, look_at((0.15, 0.1, 0.2), (-0.9, -0.4, -0.6)))
    return Camera(w, h, 15.0 * w / 20, look_at((2.6, -1.9, 1.5), (0.0, 0.05, 0.05)))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("ess, ert, inside", [(True, False, False), (False, True, True), (True, True, True)])
def test_strategies_match_reference(
    monkeypatch: pytest.MonkeyPatch, strategy: str, ess: bool, ert: bool, inside: bool
) -> None:
    _use(monkeypatch, strategy)
    # sparse occupancy on a fine grid: long empty stretches to jump over, next to windows of samples
    scene = random_scene(
        (3, 2, 4), (4, 6, 4), seed=4, occupied_fraction=0.08, step_size=0.02, density_bias=4.0
    )
    cam = _camera(inside)
    ref, n_ref = reference_render(scene, cam, ess=ess, ert=ert)
    res = render_image(scene, cam, RenderOptions(ess=ess, ert=ert, samples_per_pass=3))
    assert float(np.abs(res.image.numpy() - ref).max()) <= 1e-4
    if not ert:
        assert res.stats.samples_evaluated == n_ref


def _all_samples(
    rs: RenderScene, o: torch.Tensor, d: torch.Tensor, ess: bool, per_pass: int, fn: Callable[..., Any]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every pass's (ray, k, slot) of ``fn`` (a ``next_samples``) over the rays, and the rays' final k."""
    step = rs.step_size
    rays = RayBatch.start(rs, o, d, step)
    out = []
    live = torch.nonzero(rays.n > 0).squeeze(1)
    while live.numel() > 0:
        ray, k, slot = fn(rs, rays, step, per_pass, ess, live)
        out += [ray, k, slot]
        live = live[(rays.k[live] < rays.n[live]) & (torch.bincount(ray, minlength=o.shape[0])[live] > 0)]
    return out, rays.k


@pytest.mark.parametrize("ess", [True, False])
def test_next_samples_identical_across_strategies(monkeypatch: pytest.MonkeyPatch, ess: bool) -> None:
    scene = random_scene((4, 3, 5), (8, 8, 8), seed=7, occupied_fraction=0.004, step_size=0.01)
    assert int((prepare_scene(scene).distance_field(True) >= 2).sum()) > 500  # blocks >= 3 voxels from any
    rs = prepare_scene(scene)
    o, d = generate_rays(_camera(False, 64, 48))
    o2, d2 = generate_rays(_camera(True, 32, 24))
    o, d = torch.cat((o, o2)), torch.cat((d, d2))
    results = []
    for strategy in sorted(STRATEGIES):
        _use(monkeypatch, strategy)
        results.append(_all_samples(rs, o, d, ess, 5, next_samples))
    results.append(_all_samples(rs, o, d, ess, 5, _next_samples_wide))
    first, k_end = results[0]
    assert sum(int(t.numel()) for t in first) > 0
    for other, k_other in results[1:]:
        assert len(other) == len(first)
        for a, b in zip(first, other):
            assert torch.equal(a, b)
        assert torch.equal(k_end, k_other)


@pytest.mark.parametrize("one_call", [0, 1 << 30])
def test_ert_network_calls_match_reference(monkeypatch: pytest.MonkeyPatch, one_call: int) -> None:
    """σ and rgb in one call, or σ first and rgb only where the weight is not 0: same pixels."""
    monkeypatch.setattr(render_module, "ONE_CALL_SAMPLES", one_call)
    scene = random_scene((5, 1, 3), (1, 4, 2), seed=2, density_bias=12.0)
    cam = _camera(True)
    ref, _ = reference_render(scene, cam, ert=True)
    res = render_image(scene, cam, RenderOptions(ert=True, samples_per_pass=2))
    assert res.stats.rays_terminated_early > 0
    assert float(np.abs(res.image.numpy() - ref).max()) <= 1e-4
