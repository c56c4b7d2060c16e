"""Fine-tuning: rays, transmittance, the l3/l4 regulariser, gradient locality, early stop, loss reduction."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from renderer.camera import Camera, generate_rays, orbit_pose
from renderer.composite import exclusive_optical_depth
from renderer.native.library import status
from renderer.networks import LAYER_KEYS, NetworkSpec, init_weights
from trainer.distill import untrained_encoding_rows
from trainer.finetune import (
    REGULARISED_KEYS,
    FinetuneConfig,
    FinetunePixelSampler,
    FinetuneState,
    finetune,
    l2_norm_regulariser,
    render_training_rays,
)
from trainer.front import TorchPasses, front_samples, native_marcher, order_front_to_back, shift_samples

NATIVE_BUILT = status()[0]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run far faster on one thread on a shared 2-core machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_rays_pass_through_their_pixel_centre() -> None:
    poses = [orbit_pose((0, 0, 0), 3.0, az, 20.0) for az in (0.0, 90.0)]
    images = torch.rand(2, 6, 8, 3, generator=torch.Generator().manual_seed(0))
    c2w = torch.as_tensor(np.stack(poses), dtype=torch.float32)
    rays = FinetunePixelSampler(images=images, c2w=c2w, focal=7.0, cx=4.0, cy=3.0)
    o, d, colour = rays.sample(3000, torch.Generator().manual_seed(1))
    cam = torch.einsum("nji,rj->nri", c2w[:, :3, :3], d)  # each ray in both cameras' frames
    u = -cam[..., 0] / cam[..., 2] * 7.0 + 4.0
    v = cam[..., 1] / cam[..., 2] * 7.0 + 3.0
    img = (o[:, None, :] - c2w[None, :, :3, 3]).norm(dim=-1).argmin(dim=1)  # the camera it came from
    r = torch.arange(3000)
    u, v = u[img, r], v[img, r]
    px, py = u.floor().long(), v.floor().long()
    torch.testing.assert_close(colour, images[img, py, px])  # the colour is the pixel the ray crosses
    torch.testing.assert_close(u - px, torch.full_like(u, 0.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(v - py, torch.full_like(v, 0.5), atol=1e-3, rtol=0)


def test_order_front_to_back_sorts_by_ray_then_t() -> None:
    ray = torch.tensor([1, 0, 1, 0])
    t = torch.tensor([0.5, 0.7, 0.2, 0.1])
    o = order_front_to_back(ray, t)
    assert ray[o].tolist() == [0, 0, 1, 1]
    assert t[o].tolist() == pytest.approx([0.1, 0.7, 0.2, 0.5])
    assert order_front_to_back(ray[o], t[o]).tolist() == [0, 1, 2, 3]


def test_regulariser_is_sum_of_whole_tensor_norms_of_l3_l4_only() -> None:
    """One norm per l3/l4 weight and bias tensor over all networks (the paper's code), not per network."""
    spec = NetworkSpec((-1, -1, -1), (1, 1, 1), (2, 1, 1), pos_freqs=2, dir_freqs=1, hidden=4)
    params = {k: torch.zeros_like(v).requires_grad_(True) for k, v in init_weights(2, spec, seed=3).items()}
    with torch.no_grad():  # hand-picked entries: network 0 and network 1 of each regularised tensor
        params["l3.weight"][0, 0, 0] = 3.0
        params["l3.weight"][1, 0, 0] = 4.0  # ||l3.weight|| = 5 (per network: 3 + 4 = 7)
        params["l3.bias"][1, 0] = -2.0  # 2
        params["l4.weight"][0, 1, 2] = 1.0
        params["l4.weight"][1, 2, 1] = 1.0  # sqrt(2)
        params["l4.bias"][0, 0] = 0.5  # 0.5
        params["l0.weight"][0, 0, 0] = 100.0  # not regularised
    reg = l2_norm_regulariser(params)
    assert float(reg.detach()) == pytest.approx(5.0 + 2.0 + math.sqrt(2.0) + 0.5, rel=1e-6)
    reg.backward()
    for k in LAYER_KEYS:
        if k in REGULARISED_KEYS:
            g = params[k].grad
            assert g is not None
            p = params[k].detach()
            torch.testing.assert_close(g, p / torch.linalg.vector_norm(p))
        else:
            assert params[k].grad is None, f"{k} must not be regularised"
    assert float(params["l3.weight"].grad[1, 0, 0]) == pytest.approx(0.8)


def _box_scene(density_bias: float = 0.0, hidden: int = 8):
    """2x2x1 networks over [-1,1]x[-1,1]x[-0.5,0.5], every voxel occupied, softplus density."""
    from renderer.scene import Scene

    grid = (2, 2, 1)
    spec = NetworkSpec((-1.0, -1.0, -0.5), (1.0, 1.0, 0.5), grid, 3, 2, hidden, "softplus", 10.0)
    w = init_weights(4, spec, seed=7)
    w["l2.bias"][:, 0] += density_bias
    scene = Scene(
        bbox_min=spec.bbox_min,
        bbox_max=spec.bbox_max,
        grid_res=grid,
        occupancy_res=(4, 4, 2),
        network_index=np.arange(4, dtype=np.int32).reshape(grid),
        occupancy=np.ones((4, 4, 2), bool),
        weights=w,
        pos_freqs=3,
        dir_freqs=2,
        hidden=hidden,
        step_size=0.05,
        background=(1.0, 1.0, 1.0),
        density_activation="softplus",
        density_scale=10.0,
    )
    return scene, spec


def test_gradients_reach_only_networks_that_rays_hit() -> None:
    from renderer.render import prepare_scene

    scene, spec = _box_scene()
    rs = prepare_scene(scene, "cpu")
    params = {k: v.clone().requires_grad_(True) for k, v in scene.weights.items()}
    # rays along +x at y = -0.5 (cells with iy = 0), z in the box
    n = 16
    origins = torch.stack([torch.full((n,), -3.0), torch.full((n,), -0.5), torch.linspace(-0.4, 0.4, n)], -1)
    dirs = torch.tensor([[1.0, 0.0, 0.0]]).expand(n, 3).contiguous()
    color, counts = render_training_rays(params, rs, spec, origins, dirs, scene.step_size, torch.ones(3))
    assert counts["evaluated"] > 0
    (color - 0.3).square().mean().backward()
    index = scene.network_index
    for key in LAYER_KEYS:
        g = params[key].grad
        assert g is not None
        per_net = g.reshape(4, -1).abs().sum(dim=1)
        for ix in range(2):
            assert per_net[index[ix, 0, 0]] > 0, f"{key}: network hit by the rays got no gradient"
            assert per_net[index[ix, 1, 0]] == 0, f"{key}: network never hit got a gradient"


def test_early_stop_changes_colour_by_less_than_threshold_and_saves_samples() -> None:
    from renderer.render import prepare_scene

    scene, spec = _box_scene(density_bias=3.0)  # nearly opaque
    rs = prepare_scene(scene, "cpu")
    cam = Camera(width=12, height=10, focal=12.0, c2w=orbit_pose((0, 0, 0), 3.5, 40.0, 25.0))
    o, d = generate_rays(cam)
    with torch.no_grad():
        full, c_full = render_training_rays(scene.weights, rs, spec, o, d, scene.step_size, torch.ones(3))
        cut, c_cut = render_training_rays(
            scene.weights, rs, spec, o, d, scene.step_size, torch.ones(3), early_stop_transmittance=1e-3
        )
    assert c_cut["evaluated"] < 0.5 * c_full["evaluated"]
    assert float((full - cut).abs().max()) <= 1e-3 + 1e-6


@pytest.mark.parametrize("threshold", [0.0, 1e-3, 0.2])
@pytest.mark.parametrize("per_pass", [1, 3, 16])
@pytest.mark.parametrize("marcher", ["torch", "native"])
def test_front_samples_are_the_marched_samples_in_front_of_the_stop(
    threshold: float, per_pass: int, marcher: str
) -> None:
    from renderer.march import march_rays
    from renderer.networks import evaluate_networks
    from renderer.render import prepare_scene

    scene, spec = _box_scene(density_bias=1.0, hidden=16)  # a width the native kernels are compiled for
    occ = np.asarray(scene.occupancy)
    occ[1, :, 0] = False  # an empty slab for the marcher to skip
    scene = replace(scene, occupancy=occ)
    rs = prepare_scene(scene, "cpu")
    cam = Camera(width=9, height=7, focal=9.0, c2w=orbit_pose((0, 0, 0), 3.0, 35.0, 30.0))
    o, d = generate_rays(cam)
    if marcher == "native":
        if not NATIVE_BUILT:
            pytest.skip("the native library is not built (no C++ compiler)")
        native = native_marcher(rs, scene.weights)
        assert native is not None
        passes = native.start(o, d)
    else:
        passes = TorchPasses(scene.weights, rs, spec, o, d, scene.step_size)
    got = front_samples(passes, o.shape[0], scene.step_size, threshold, samples_per_pass=per_pass)
    # reference: every contributing sample, kept where the transmittance in front of it is >= threshold
    ref = march_rays(rs, o, d, ess=True)
    sigma, _ = evaluate_networks(scene.weights, ref.x, d[ref.ray_idx], ref.net, scene_meta=spec)
    keep = torch.exp(-exclusive_optical_depth(sigma, ref.ray_idx, scene.step_size)) >= threshold
    assert 0 < int(keep.sum()) and (threshold == 0 or int(keep.sum()) < ref.count)
    assert torch.equal(got.ray_idx, ref.ray_idx[keep])
    assert torch.equal(got.x, ref.x[keep])
    assert torch.equal(got.net, ref.net[keep])
    assert got.marched <= ref.count
    if threshold >= 0.2 and per_pass == 1:  # rays stop marching at their stop
        assert got.marched < 0.5 * ref.count


def test_finetune_reduces_photometric_error() -> None:
    from renderer.render import RenderOptions, prepare_scene, render_image

    target, spec = _box_scene(density_bias=1.0)
    images, poses = [], []
    for az in (0.0, 60.0, 120.0, 200.0):
        c2w = orbit_pose((0, 0, 0), 3.5, az, 25.0)
        cam = Camera(width=16, height=16, focal=16.0, c2w=c2w)
        images.append(render_image(target, cam, RenderOptions(ert=False)).image.numpy())
        poses.append(c2w)
    rays = FinetunePixelSampler(
        images=torch.as_tensor(np.stack(images)),
        c2w=torch.as_tensor(np.stack(poses), dtype=torch.float32),
        focal=16.0,
        cx=8.0,
        cy=8.0,
    )
    start = {
        k: v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
        for k, v in target.weights.items()
    }
    rs = prepare_scene(target, "cpu")

    def error(params) -> float:
        gen = torch.Generator().manual_seed(99)
        o, d, c = rays.sample(1024, gen)
        with torch.no_grad():
            col, _ = render_training_rays(params, rs, spec, o, d, target.step_size, torch.ones(3))
        return float((col - c).square().mean())

    before = error(start)
    cfg = FinetuneConfig(
        steps=60, rays_per_batch=256, lr=3e-3, checkpoint_seconds=1e9, checkpoint_every=10**9
    )
    psnrs: list[float] = []
    final = finetune(
        rays, rs, spec, target.step_size, torch.ones(3), cfg, FinetuneState(step=0, params=start),
        on_step=lambda s, t, loss, p: psnrs.append(p),
    )  # fmt: skip
    after = error(final.params)
    assert final.step == 60 and len(psnrs) == 60
    assert after < 0.5 * before, (before, after)


def test_extra_loss_joins_every_step() -> None:
    from renderer.render import prepare_scene

    scene, spec = _box_scene()
    rays = FinetunePixelSampler(
        images=torch.ones(2, 8, 8, 3),
        c2w=torch.as_tensor(np.stack([orbit_pose((0, 0, 0), 3.5, az, 25.0) for az in (0.0, 90.0)])).float(),
        focal=8.0,
        cx=4.0,
        cy=4.0,
    )
    rs = prepare_scene(scene, "cpu")
    goal = scene.weights["l4.bias"] - 0.25  # the white images push the colour biases up instead
    calls: list[int] = []

    def pull(params, step: int) -> torch.Tensor:  # a strong pull of l4.bias towards the goal
        calls.append(step)
        return 1e3 * (params["l4.bias"] - goal).square().sum()

    cfg = FinetuneConfig(
        steps=40,
        rays_per_batch=64,
        lr=2e-2,
        lr_final_factor=1.0,
        checkpoint_seconds=1e9,
        checkpoint_every=10**9,
    )
    start = FinetuneState(step=0, params={k: v.clone() for k, v in scene.weights.items()})
    plain = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg, start)
    pulled = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg, start, extra_loss=pull)
    assert calls == list(range(40))
    assert float((pulled.params["l4.bias"] - goal).abs().max()) < 0.05
    assert float((plain.params["l4.bias"] - goal).abs().min()) > 0.2


def test_shift_samples_moves_each_ray_and_reapplies_the_rule() -> None:
    from renderer.march import march_rays
    from renderer.render import prepare_scene

    scene, spec = _box_scene()
    occ = np.ones((4, 4, 2), bool)
    occ[2:, :, :] = False  # x > 0 empty
    network_index = scene.network_index.copy()
    network_index[1, 1, 0] = -1  # and the cell x > 0, y > 0 has no network

    rs = prepare_scene(replace(scene, occupancy=occ, network_index=network_index), "cpu")
    # one ray along +x at y = -0.5, z = 0: lattice t_k = 2 + (k + 1/2) * 0.05 from the box entry x = -1
    o = torch.tensor([[-3.0, -0.5, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = march_rays(rs, o, d, ess=True)
    ray_idx, t, x, net = s.ray_idx, s.t, s.x, s.net
    assert ray_idx.numel() == 20  # x in (-1, 0): 20 samples of 0.05
    same = shift_samples(rs, ray_idx, t, x, net, d, torch.zeros(1))
    for a, b in zip(same, (ray_idx, t, x, net), strict=True):
        assert torch.equal(a, b)
    r2, t2, x2, n2 = shift_samples(rs, ray_idx, t, x, net, d, torch.tensor([0.02]))
    torch.testing.assert_close(x2[:, 0], x[:, 0] + 0.02)  # all 20 stay below x = 0 (last at -0.005)
    torch.testing.assert_close(t2, t + 0.02)
    assert r2.numel() == 20
    r3, _, x3, n3 = shift_samples(rs, ray_idx, t, x, net, d, torch.tensor([0.04]))
    assert r3.numel() == 19 and float(x3[:, 0].max()) < 0.0  # the last one (x = -0.025) moved to x > 0
    # a ray at y = +0.5 crosses cells (0, 1) and (1, 1); after the shift each sample takes its new cell's net
    o = torch.tensor([[-3.0, 0.5, 0.0]])
    full = prepare_scene(scene, "cpu")
    s = march_rays(full, o, d, ess=True)
    _, _, x4, n4 = shift_samples(full, s.ray_idx, s.t, s.x, s.net, d, torch.tensor([-0.024]))
    expect = scene.network_index[(x4[:, 0] > 0).long(), 1, 0]
    assert torch.equal(n4.long(), torch.as_tensor(expect).long())
    assert n4.numel() == 40  # the first sample moves to x = -0.999 (still in the box), the rest stay inside


def test_parameter_average_after_one_step_and_through_a_checkpoint(tmp_path) -> None:
    from renderer.render import prepare_scene

    scene, spec = _box_scene()
    rays = FinetunePixelSampler(
        images=torch.full((2, 8, 8, 3), 0.2),
        c2w=torch.as_tensor(np.stack([orbit_pose((0, 0, 0), 3.5, az, 25.0) for az in (0.0, 90.0)])).float(),
        focal=8.0,
        cx=4.0,
        cy=4.0,
    )
    rs = prepare_scene(scene, "cpu")
    start = FinetuneState(step=0, params={k: v.clone() for k, v in scene.weights.items()})
    common = {
        "rays_per_batch": 64,
        "lr": 1e-2,
        "lr_final_factor": 1.0,  # the same learning rate at every step, whatever `steps` is
        "checkpoint_seconds": 1e9,
        "checkpoint_every": 10**9,
    }
    one = finetune(rays, rs, spec, scene.step_size, torch.ones(3), FinetuneConfig(steps=1, **common), start)
    assert start.ema is None and one.ema is None
    cfg1 = FinetuneConfig(steps=1, ema_decay=0.9, **common)
    one_avg = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg1, start)
    assert one_avg.ema is not None and one_avg.output_params() is one_avg.ema
    for k, p0 in scene.weights.items():
        torch.testing.assert_close(one_avg.params[k], one.params[k])  # the average does not steer training
        torch.testing.assert_close(one_avg.ema[k], 0.9 * p0 + 0.1 * one.params[k])
    # 6 steps straight == 3 steps, checkpoint, load, 3 more (the average resumes too)
    cfg6 = FinetuneConfig(steps=6, ema_decay=0.8, jitter=True, **common)
    straight = finetune(rays, rs, spec, scene.step_size, torch.ones(3), cfg6, start)
    half = finetune(
        rays, rs, spec, scene.step_size, torch.ones(3), FinetuneConfig(steps=3, ema_decay=0.8, jitter=True,
        **common), start,
    )  # fmt: skip
    half.save(tmp_path / "f.ckpt")
    resumed = finetune(
        rays, rs, spec, scene.step_size, torch.ones(3), cfg6, FinetuneState.load(tmp_path / "f.ckpt", "cpu")
    )
    assert straight.ema is not None and resumed.ema is not None
    for k in scene.weights:
        torch.testing.assert_close(resumed.ema[k], straight.ema[k])
        torch.testing.assert_close(resumed.params[k], straight.params[k])
    assert float((straight.ema["l0.weight"] - straight.params["l0.weight"]).abs().max()) > 1e-4
    # weight rows held at zero (position octaves >= 1 in l0, direction octaves >= 0 in l3) stay zero in
    # the parameters and in their average; the other rows train
    frozen_rows = {
        "l0.weight": untrained_encoding_rows(0, spec.pos_freqs, 1),
        "l3.weight": untrained_encoding_rows(spec.hidden, spec.dir_freqs, 0),
    }
    frozen = finetune(
        rays,
        rs,
        spec,
        scene.step_size,
        torch.ones(3),
        cfg6,
        start,
        frozen_rows=frozen_rows,  # type: ignore[arg-type]
    )
    assert frozen.ema is not None
    for key, rows in frozen_rows.items():
        assert rows is not None
        assert bool((frozen.params[key][:, rows] == 0).all()) and bool((frozen.ema[key][:, rows] == 0).all())
        moved = (frozen.params[key][:, ~rows] - start.params[key][:, ~rows]).abs().max()
        assert float(moved) > 1e-4, key


@pytest.mark.skipif(not NATIVE_BUILT, reason="the native library is not built (no C++ compiler)")
def test_native_marcher_reads_the_weights_as_they_are_updated_in_place() -> None:
    from renderer.render import prepare_scene

    scene, spec = _box_scene(density_bias=1.0, hidden=16)
    rs = prepare_scene(scene, "cpu")
    params = {k: v.clone() for k, v in scene.weights.items()}
    top = untrained_encoding_rows(0, spec.pos_freqs, spec.pos_freqs - 1)
    assert top is not None
    params["l0.weight"][:, top] = 0.0  # a student trained on fewer octaves: the top octave's rows are zero
    native = native_marcher(rs, params)
    assert native is not None
    cam = Camera(width=9, height=7, focal=9.0, c2w=orbit_pose((0, 0, 0), 3.0, 35.0, 30.0))
    o, d = generate_rays(cam)
    before = front_samples(native.start(o, d), o.shape[0], scene.step_size, 0.2)
    with torch.no_grad():  # as an optimiser steps: the same storage, new values, the top octave now used
        params["l2.bias"][:, 0] += 2.0
        params["l0.weight"][:, top] = 0.5
    after = front_samples(native.start(o, d), o.shape[0], scene.step_size, 0.2)
    torch_passes = TorchPasses(params, rs, spec, o, d, scene.step_size)
    ref = front_samples(torch_passes, o.shape[0], scene.step_size, 0.2)
    assert after.ray_idx.numel() < before.ray_idx.numel()  # denser: the rays stop sooner
    assert torch.equal(after.ray_idx, ref.ray_idx)
    assert torch.equal(after.x, ref.x)
    assert torch.equal(after.net, ref.net)
