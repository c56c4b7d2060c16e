"""The torch renderer against tests/reference_renderer.py (the issue-2 rule, ray by ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer.camera import Camera, generate_rays, look_at
from renderer.composite import composite_front_to_back, composite_pass
from renderer.march import intersect_aabb, lattice_count, march_rays
from renderer.networks import KiloNetworks
from renderer.pixels import network_colors
from renderer.render import RenderOptions, prepare_scene, render_image, render_rays
from renderer.scene import Scene
from renderer.synthetic import random_scene
from tests.reference_renderer import reference_rays, reference_render, reference_render_ray

W, H = 20, 13

LAYOUTS = [
    ((3, 2, 4), (2, 3, 2)),
    ((1, 1, 1), (3, 2, 2)),
    ((5, 1, 3), (1, 4, 2)),
]


def outside_camera() -> Camera:
    return Camera(W, H, 15.0, look_at((2.6, -1.9, 1.5), (0.0, 0.05, 0.05)))


def inside_camera() -> Camera:
    return Camera(W, H, 7.5, look_at((0.15, 0.1, 0.2), (-0.9, -0.4, -0.6)))


def _scene(layout: int, dtype: str, seed: int = 0, **kw: object) -> Scene:
    grid, factor = LAYOUTS[layout]
    return random_scene(grid, factor, seed=seed + layout, dtype=dtype, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "layout, dtype, camera, ess",
    [
        (0, "float32", "outside", True),
        (0, "float16", "inside", False),
        (1, "float16", "outside", False),
        (1, "float32", "inside", True),
        (2, "float32", "outside", False),
        (2, "float16", "inside", True),
    ],
)
def test_matches_reference_without_ert(layout: int, dtype: str, camera: str, ess: bool) -> None:
    scene = _scene(layout, dtype)
    cam = outside_camera() if camera == "outside" else inside_camera()
    ref, n_ref = reference_render(scene, cam, ess=ess)
    res = render_image(scene, cam, RenderOptions(ess=ess, ert=False, samples_per_pass=3))
    assert res.image.shape == (H, W, 3) and res.image.dtype == torch.float32
    err = float(np.abs(res.image.numpy() - ref).max())
    assert err <= 1e-4, err
    assert res.stats.samples_evaluated == n_ref
    assert res.stats.rays == W * H
    # the scene is visible, not just background
    assert float(np.abs(ref - np.asarray(scene.background, dtype=np.float32)).max()) > 0.1


def test_ess_skips_samples_and_changes_the_image() -> None:
    scene = _scene(0, "float32")
    cam = outside_camera()
    rs = prepare_scene(scene)
    on = render_image(rs, cam, RenderOptions(ess=True, ert=False))
    off = render_image(rs, cam, RenderOptions(ess=False, ert=False))
    assert on.stats.samples_evaluated < off.stats.samples_evaluated
    assert on.stats.samples_marched == off.stats.samples_marched  # ERT off: every ray walks the whole box
    assert float((on.image - off.image).abs().max()) > 1e-3


@pytest.mark.parametrize("ess", [True, False])
def test_ert_within_eps_of_reference_and_saves_work(ess: bool) -> None:
    scene = _scene(0, "float32", seed=3, density_bias=8.0)
    cam = outside_camera()
    eps = scene.ert_threshold
    ref_full, n_full = reference_render(scene, cam, ess=ess, ert=False)
    ref_ert, _ = reference_render(scene, cam, ess=ess, ert=True)
    rs = prepare_scene(scene)
    res = render_image(rs, cam, RenderOptions(ess=ess, ert=True))
    no_ert = render_image(rs, cam, RenderOptions(ess=ess, ert=False))
    assert float(np.abs(res.image.numpy() - ref_full).max()) < eps
    assert float(np.abs(res.image.numpy() - ref_ert).max()) <= 1e-4
    assert res.stats.samples_evaluated < no_ert.stats.samples_evaluated == n_full
    assert res.stats.rays_terminated_early > 0
    assert res.stats.samples_marched < no_ert.stats.samples_marched
    # a different threshold is honoured
    res2 = render_image(rs, cam, RenderOptions(ess=ess, ert=True, ert_threshold=0.2))
    ref2, _ = reference_render(scene, cam, ess=ess, ert=True, ert_threshold=0.2)
    assert float(np.abs(res2.image.numpy() - ref2).max()) <= 1e-4
    assert res2.stats.samples_evaluated < res.stats.samples_evaluated


def test_samples_per_pass_changes_passes_not_pixels() -> None:
    scene = _scene(2, "float32", density_bias=12.0)
    cam = inside_camera()
    rs = prepare_scene(scene)
    a = render_image(rs, cam, RenderOptions(samples_per_pass=2))
    assert a.stats.rays_terminated_early > 0
    b = render_image(rs, cam, RenderOptions(samples_per_pass=64))
    assert a.stats.passes > b.stats.passes >= 1
    assert a.stats.samples_evaluated < b.stats.samples_evaluated  # small passes waste less after termination
    torch.testing.assert_close(a.image, b.image, atol=2e-6, rtol=0)
    # without ERT passes are only a memory bound: at least 32 samples per ray per pass
    e = render_image(rs, cam, RenderOptions(ert=False, samples_per_pass=2))
    f = render_image(rs, cam, RenderOptions(ert=False, samples_per_pass=64))
    assert e.stats.passes >= f.stats.passes >= 1
    torch.testing.assert_close(e.image, f.image, atol=2e-6, rtol=0)
    c = render_image(rs, cam, RenderOptions(ert=True, samples_per_pass=1, chunk_size=50))
    ref, _ = reference_render(scene, cam, ert=True)
    assert float(np.abs(c.image.numpy() - ref).max()) <= 1e-4


def test_step_multiplier_and_background_option() -> None:
    scene = _scene(1, "float32")
    cam = outside_camera()
    res = render_image(scene, cam, RenderOptions(ert=False, step_multiplier=1.7, background=(0.0, 1.0, 0.0)))
    scene.background = (0.0, 1.0, 0.0)
    ref, _ = reference_render(scene, cam, step_multiplier=1.7)
    assert float(np.abs(res.image.numpy() - ref).max()) <= 1e-4


def test_rays_missing_the_box_are_background() -> None:
    scene = _scene(0, "float32")
    cam = Camera(8, 6, 10.0, look_at((5.0, 5.0, 5.0), (10.0, 10.0, 10.0)))
    res = render_image(scene, cam, RenderOptions())
    assert res.stats.rays_hit_box == 0 and res.stats.samples_evaluated == 0
    expected = torch.tensor(scene.background, dtype=torch.float32).expand(6, 8, 3)
    torch.testing.assert_close(res.image, expected)


def _slab_scene(density: float) -> Scene:
    """One network filling the whole box with constant density; colour constant (0.5 after sigmoid)."""
    scene = random_scene((1, 1, 1), (2, 2, 2), seed=0, empty_cell_fraction=0.0, occupied_fraction=1.0)
    for k, v in scene.weights.items():
        scene.weights[k] = torch.zeros_like(v)
    scene.weights["l2.bias"][0, 0] = density
    scene.bbox_min, scene.bbox_max = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)
    scene.step_size = 0.1
    scene.background = (1.0, 1.0, 1.0)
    return scene


def test_hand_computed_constant_medium() -> None:
    # camera on +z looking down: the centre ray crosses z = 1 … −1, 20 samples, t0 = 2
    scene = _slab_scene(density=2.0)
    cam = Camera(1, 1, 1.0, look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)))
    res = render_image(scene, cam, RenderOptions(ert=False, output="depth"))
    alpha = 1 - math.exp(-2.0 * 0.1)
    t_end = (1 - alpha) ** 20
    want = 0.5 * (1 - t_end) + t_end * 1.0
    assert abs(float(res.image[0, 0, 0]) - (1.0 - 0.85 * 0.0)) < 1e-6  # single hit pixel: brightest grey
    rgb = render_image(scene, cam, RenderOptions(ert=False)).image
    assert abs(float(rgb[0, 0, 0]) - want) < 1e-5
    assert res.depth is not None
    depth_want = sum((1 - alpha) ** k * alpha * (2.0 + (k + 0.5) * 0.1) for k in range(20)) / (1 - t_end)
    assert abs(float(res.depth[0, 0]) - depth_want) < 1e-4
    assert res.stats.samples_evaluated == 20 and res.stats.samples_marched == 20


def test_network_output_is_the_dominant_network() -> None:
    scene = random_scene((2, 1, 1), (1, 1, 1), seed=0, empty_cell_fraction=0.0, occupied_fraction=1.0)
    for k, v in scene.weights.items():
        scene.weights[k] = torch.zeros_like(v)
    scene.weights["l2.bias"][:, 0] = 50.0
    scene.bbox_min, scene.bbox_max = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)
    scene.step_size = 0.05
    cam = Camera(2, 1, 4.0, look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)))
    res = render_image(scene, cam, RenderOptions(output="network"))
    assert res.network is not None
    left, right = int(scene.network_index[0, 0, 0]), int(scene.network_index[1, 0, 0])
    assert res.network[0].tolist() == [left, right]
    torch.testing.assert_close(res.image[0], network_colors(torch.tensor([left, right])))


def test_prepare_scene_with_live_module() -> None:
    scene = _scene(0, "float32")
    module = KiloNetworks.from_scene(scene)
    rs = prepare_scene(scene, "cpu", networks=module)
    cam = outside_camera()
    before = render_image(rs, cam, RenderOptions()).image
    with torch.no_grad():
        module.weights["l4_bias"].add_(2.0)  # everything redder/greener/bluer
    after = render_image(rs, cam, RenderOptions()).image
    assert float((after - before).abs().max()) > 0.01
    scene.weights = module.to_weights()
    ref, _ = reference_render(scene, cam, ert=True)
    assert float(np.abs(after.numpy() - ref).max()) <= 1e-4


def test_march_rays_matches_reference_samples() -> None:
    scene = _scene(0, "float32")
    cam = outside_camera()
    rs = prepare_scene(scene)
    o, d = generate_rays(cam)
    for ess in (True, False):
        samples = march_rays(rs, o, d, ess=ess)
        assert bool((samples.ray_idx[1:] >= samples.ray_idx[:-1]).all())
        same_ray = samples.ray_idx[1:] == samples.ray_idx[:-1]
        assert bool((samples.t[1:][same_ray] > samples.t[:-1][same_ray]).all())
        counts = torch.bincount(samples.ray_idx, minlength=W * H)
        o_ref, d_ref = reference_rays(cam)
        total = 0
        for i in range(0, W * H, 5):
            _, n = reference_render_ray(scene, o_ref[i], d_ref[i], ess=ess)
            assert int(counts[i]) == n
            total += n
        assert total > 0
        firsts = march_rays(rs, o, d, ess=ess, max_samples_per_ray=2)
        assert torch.equal(torch.bincount(firsts.ray_idx, minlength=W * H), counts.clamp(max=2))
        x = o[samples.ray_idx] + samples.t[:, None] * d[samples.ray_idx]
        torch.testing.assert_close(samples.x, x)
        assert bool((samples.net >= 0).all())


def test_intersect_aabb_and_lattice_count_by_hand() -> None:
    lo, hi = torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-1.0, 0.5, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t0, t1 = intersect_aabb(o, d, lo, hi)
    assert t0[[0, 1, 3]].tolist() == [2.0, 0.0, 0.0]
    assert t1[[0, 1, 3]].tolist() == [4.0, 1.0, 2.0] and not bool(t1[2] > t0[2])
    n = lattice_count(t0, t1, 0.5)
    # t_k = t0 + (k + ½)·0.5 < t1: 4 samples over length 2, 2 over length 1, none when missing
    assert n.tolist() == [4, 2, 0, 4]


def test_render_rays_api_and_batches() -> None:
    scene = _scene(1, "float32")
    rs = prepare_scene(scene)
    o, d = generate_rays(outside_camera())
    rgb, stats = render_rays(rs, o, d, RenderOptions(chunk_size=37))
    rgb2, _ = render_rays(rs, o, d, RenderOptions())
    assert rgb.shape == (W * H, 3)
    torch.testing.assert_close(rgb, rgb2, atol=1e-6, rtol=0)
    assert set(stats.to_dict()) == {
        "rays",
        "rays_hit_box",
        "samples_marched",
        "samples_evaluated",
        "networks_touched",
        "passes",
        "rays_terminated_early",
        "ms",
    }
    assert 0 < stats.networks_touched <= rs.num_networks


def _sequential(sigma: np.ndarray, rgb: np.ndarray, rays: np.ndarray, step: float, r: int, bg: np.ndarray):
    color = np.zeros((r, 3))
    trans = np.ones(r)
    for s, c, i in zip(sigma, rgb, rays):
        a = 1 - np.exp(-s * step)
        color[i] += trans[i] * a * c
        trans[i] *= 1 - a
    return color + trans[:, None] * bg, trans


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=30), st.integers(0, 10**6))
def test_composite_matches_sequential_rule(rays: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    rays_np = np.sort(np.array(rays, dtype=np.int64))
    sigma = rng.exponential(3.0, size=len(rays)).astype(np.float32)
    rgb = rng.random((len(rays), 3)).astype(np.float32)
    bg = np.array([0.1, 0.5, 0.9])
    color, trans = composite_front_to_back(
        torch.from_numpy(sigma), torch.from_numpy(rgb), torch.from_numpy(rays_np), 0.3, 5, bg.tolist()
    )
    want_c, want_t = _sequential(sigma, rgb, rays_np, 0.3, 5, bg)
    np.testing.assert_allclose(color.numpy(), want_c, atol=1e-5)
    np.testing.assert_allclose(trans.numpy(), want_t, atol=1e-6)
    # the per-pass variant gives the same result
    if len(rays):
        starts = np.searchsorted(rays_np, rays_np, side="left")
        slot = np.arange(len(rays)) - starts
        c2, t2, _ = composite_pass(
            torch.from_numpy(sigma),
            torch.from_numpy(rgb),
            torch.from_numpy(rays_np),
            torch.from_numpy(slot),
            torch.ones(5),
            0.3,
            int(slot.max()) + 1,
            None,
        )
        np.testing.assert_allclose((c2 + t2[:, None] * torch.tensor(bg)).numpy(), want_c, atol=1e-5)


def test_composite_is_differentiable() -> None:
    sigma = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    rays = torch.tensor([0, 0, 0, 2])
    assert torch.autograd.gradcheck(
        lambda s, c: composite_front_to_back(s, c, rays, 0.2, 3, [0.3, 0.3, 0.3]), (sigma, rgb)
    )


def test_composite_pass_ert_stops_at_threshold() -> None:
    # alphas 0.9, 0.9, 0.9 from T = 1: T before = 1, 0.1, 0.01 → with ε = 0.05 the third sample is skipped
    sigma = torch.full((3,), -math.log(0.1) / 0.5)
    rgb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    row = torch.zeros(3, dtype=torch.int64)
    slot = torch.arange(3)
    color, trans, w = composite_pass(sigma, rgb, row, slot, torch.ones(1), 0.5, 4, 0.05)
    torch.testing.assert_close(w, torch.tensor([0.9, 0.09, 0.0]))
    torch.testing.assert_close(color[0], torch.tensor([0.9, 0.09, 0.0]))
    torch.testing.assert_close(trans, torch.tensor([0.01]))


def test_backends_selection() -> None:
    from renderer.backends import (
        BackendError,
        TorchBackend,
        cpu_backend_status,
        cuda_backend_status,
        get_backend,
    )

    scene = _scene(1, "float32")
    cam = outside_camera()
    b = get_backend("torch")
    assert isinstance(b, TorchBackend) and b.name == "torch"
    torch.testing.assert_close(b.render(scene, cam, RenderOptions()).image, render_image(scene, cam).image)
    fastest_cpu = "cpu" if cpu_backend_status()[0] else "torch"
    assert get_backend("auto", "cpu").name == fastest_cpu
    with pytest.raises(BackendError, match="unknown backend"):
        get_backend("vulkan")
    ok, why = cuda_backend_status()
    if not ok:
        assert why
        with pytest.raises(BackendError, match="CUDA backend unavailable"):
            get_backend("cuda")
        assert get_backend("auto").name == fastest_cpu


@pytest.mark.gpu
def test_torch_renderer_on_cuda_matches_cpu() -> None:
    scene = _scene(0, "float16", density_bias=6.0)
    cam = outside_camera()
    cpu = render_image(prepare_scene(scene, "cpu"), cam, RenderOptions())
    gpu = render_image(prepare_scene(scene, "cuda"), cam, RenderOptions())
    assert float((cpu.image - gpu.image).abs().max()) <= 1e-4
    assert gpu.stats.samples_evaluated == cpu.stats.samples_evaluated
