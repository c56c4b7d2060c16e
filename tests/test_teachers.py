"""Teachers: query contract, rendering maths, training lowers the loss, exact resume, files, NeRF runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from renderer.camera import pixel_rays
from trainer.data import Dataset
from trainer.teachers import (
    GridTeacher,
    NerfTeacher,
    TeacherConfig,
    TeacherFormatError,
    load_teacher,
    make_teacher,
    render_teacher,
    save_teacher,
    teacher_psnr,
    train_teacher,
)
from trainer.teachers.hull import box_max, estimate_bbox_from_views, visual_hull
from trainer.teachers.lattice import lattice_points, sparse_trilinear

SPHERE_C = np.array([0.1, -0.05, 0.0])
SPHERE_R = 0.5
SPHERE_RGB = np.array([0.9, 0.3, 0.1], np.float32)


def orbit_c2w(radius: float, azimuth: float, elevation: float) -> np.ndarray:
    """Camera on a sphere around the origin looking at it (Blender/OpenGL: looks down -Z, +Y up)."""
    eye = radius * np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ]
    )
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m.astype(np.float32)


def sphere_dataset(n_views: int = 12, size: int = 24, with_bbox: bool = True) -> Dataset:
    """An opaque flat-coloured sphere on white, rendered analytically (alpha = pixel-centre ray hits)."""
    focal = 1.2 * size
    c2w = np.stack([orbit_c2w(3.0, 2 * math.pi * i / n_views, 0.4 * math.sin(3 * i)) for i in range(n_views)])
    py, px = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, alphas = [], []
    for m in c2w:
        o, d = pixel_rays(
            torch.tensor(m).expand(size * size, 4, 4),
            px.reshape(-1),
            py.reshape(-1),
            focal,
            size / 2,
            size / 2,
        )
        oc = o.double().numpy() - SPHERE_C
        b = (oc * d.double().numpy()).sum(-1)
        disc = b**2 - ((oc**2).sum(-1) - SPHERE_R**2)
        hit = (disc > 0).reshape(size, size).astype(np.float32)
        alphas.append(hit)
        images.append(hit[..., None] * SPHERE_RGB + (1 - hit[..., None]) * 1.0)
    return Dataset(
        images=np.stack(images).astype(np.float32),
        alphas=np.stack(alphas),
        c2w=c2w,
        focal=focal,
        width=size,
        height=size,
        bbox_min=np.array([-0.7, -0.7, -0.7], np.float32) if with_bbox else None,
        bbox_max=np.array([0.7, 0.7, 0.7], np.float32) if with_bbox else None,
        near=1.0,
        far=5.0,
    )


def tiny_cfg(**kw: Any) -> TeacherConfig:
    base: dict[str, Any] = dict(
        steps=60,
        batch_rays=256,
        grid_res=(16, 24),
        upsample_at=(0.25,),
        prune_at=(0.75,),
        hull_res=24,
        alpha_init=1e-2,
        checkpoint_every_s=1e9,
        log_every=5,
        fit_box_at=None,
    )
    base.update(kw)
    return TeacherConfig(**base)


@pytest.fixture(scope="module")
def sphere() -> Dataset:
    return sphere_dataset()


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: on a busy 2-core machine a second thread only adds contention (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_grid_teacher_clips_rays_to_its_box_and_near_far(sphere):
    """The grid teacher samples only inside the box ∩ [near, far] (``intersect_aabb``): a ray that misses
    the box, or whose [near, far] ends before it, shows the background."""
    teacher = make_teacher(tiny_cfg(), sphere, "cpu")
    with torch.no_grad():
        teacher.density_table.fill_(10.0)  # opaque wherever it is sampled
    o = torch.tensor([[0.0, 0.0, -5.0], [3.0, 3.0, 3.0], [0.0, 0.0, -5.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    bg = torch.tensor([0.0, 1.0, 0.0])
    rgb = torch.cat(
        [
            teacher.render_rays(o[:2], d[:2], 1.0, 10.0, bg)[0],  # through the box; parallel to x, outside
            teacher.render_rays(o[2:], d[2:], 1.0, 4.0, bg)[0],  # far = 4 < the box's entry at 4.3
        ]
    )
    assert not torch.allclose(rgb[0], bg, atol=1e-3)
    torch.testing.assert_close(rgb[1:], bg.expand(2, 3))


@pytest.mark.parametrize("r", [0, 1, 3, 12, 40])
def test_box_max_is_the_max_over_the_square(r: int) -> None:
    """Rows then columns give exactly the square window's max (the carving's footprint), at the borders
    too; checked against a brute-force max over the clipped square."""
    img = torch.rand(23, 37, generator=torch.Generator().manual_seed(r))
    got = box_max(img, r)
    ref = torch.empty_like(img)
    for y in range(23):
        for x in range(37):
            ref[y, x] = img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].max()
    assert torch.equal(got, ref)


def test_visual_hull_keeps_the_sphere_and_carves_around_it(sphere):
    pts_np = np.array([SPHERE_C, SPHERE_C + [0.45, 0, 0], [0.65, 0.65, 0.65], [-0.65, 0.6, -0.6]])
    pts = torch.tensor(pts_np, dtype=torch.float32)
    keep = visual_hull(pts, sphere.alphas, sphere.c2w, sphere.focal, 12.0, 12.0, 0.05, 0.02)
    assert keep.tolist() == [True, True, False, False]


def test_bbox_from_views_encloses_the_sphere_tightly():
    ds = sphere_dataset(with_bbox=False)
    lo, hi = estimate_bbox_from_views(ds, tiny_cfg(hull_res=48))
    assert np.all(lo <= SPHERE_C - SPHERE_R + 0.01) and np.all(hi >= SPHERE_C + SPHERE_R - 0.01)
    # the hull of a sphere from few views is larger than the sphere, but far smaller than the search cube
    assert np.all(hi - lo < 2 * SPHERE_R * 1.6)


def test_query_contract_shapes_ranges_and_chunking(sphere):
    teacher = make_teacher(tiny_cfg(), sphere, "cpu")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(500, 3, generator=gen) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen), dim=-1)
    with torch.no_grad():
        sigma, rgb = teacher.query(x, d)
        s1, c1 = teacher.query(x[:123], d[:123])
        dens = teacher.density(x)
    assert sigma.shape == (500,) and rgb.shape == (500, 3)
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
    torch.testing.assert_close(sigma[:123], s1)
    torch.testing.assert_close(rgb[:123], c1)
    torch.testing.assert_close(dens, sigma)
    outside = (x.abs() > 0.7).any(dim=-1)
    assert outside.any() and (sigma[outside] == 0).all()  # nothing outside the teacher's box
    s2, c2 = teacher.query_chunked(x, d, chunk=64)
    torch.testing.assert_close(s2, sigma)


def test_empty_grid_renders_the_background(sphere):
    cfg = tiny_cfg()
    teacher = GridTeacher.for_box(sphere.bbox_min, sphere.bbox_max, cfg)
    with torch.no_grad():
        teacher.density_table.fill_(-50.0)  # σ ≈ 0 everywhere
    o = torch.tensor([[0.0, 0.0, 3.0]]).repeat(4, 1)
    d = torch.nn.functional.normalize(
        torch.tensor([[0.0, 0, -1], [0.1, 0, -1], [0, 0.2, -1], [1.0, 0, 0]]), dim=-1
    )
    rgb = render_teacher(teacher, o, d, 1.0, 5.0, (0.2, 0.4, 0.6), cfg)
    torch.testing.assert_close(rgb, torch.tensor([[0.2, 0.4, 0.6]]).repeat(4, 1), atol=1e-5, rtol=0)


def test_fit_box_shrinks_to_the_mask_and_keeps_the_field():
    cfg = tiny_cfg(grid_res=(16, 24))
    teacher = GridTeacher.for_box([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], cfg)
    assert teacher.mask_dims == (24, 24, 24) and bool(teacher.mask.all())
    coef = torch.tensor([0.7, -1.3, 2.1])

    def linear(p: torch.Tensor) -> torch.Tensor:
        return p @ coef + 0.25

    with torch.no_grad():
        pts = lattice_points(teacher.bbox_min, teacher.bbox_max, teacher.dims)
        teacher.density_table.copy_(linear(pts))
        teacher.feature_table.copy_(torch.stack([linear(pts) * (c + 1) for c in range(12)], dim=1))
    teacher.mask.zero_()
    assert not teacher.fit_box(0.0, 24, 24)  # an empty mask: nothing changes
    assert teacher.bbox_max.tolist() == [1.0, 1.0, 1.0]
    teacher.mask[8:16, 6:12, 12:18] = True
    teacher.max_weight[8:16, 6:12, 12:18] = 0.5
    assert teacher.fit_box(0.0, 24, 24)
    v = 2.0 / 24  # the mask's voxels 8..15, 6..11, 12..17 and two more voxels on each side
    lo = torch.tensor([-1 + (8 - 2) * v, -1 + (6 - 2) * v, -1 + (12 - 2) * v])
    hi = torch.tensor([-1 + (16 + 2) * v, -1 + (12 + 2) * v, -1 + (18 + 2) * v])
    torch.testing.assert_close(teacher.bbox_min, lo)
    torch.testing.assert_close(teacher.bbox_max, hi)
    ext = (hi - lo).tolist()
    vnew = (float(np.prod(ext)) / 24**3) ** (1 / 3)
    assert teacher.mask_dims == tuple(round(e / vnew) for e in ext)
    assert bool(teacher.mask[2:-2, 2:-2, 2:-2].all())  # the old mask, dilated by one voxel
    assert int(teacher.mask.sum()) < teacher.mask.numel()
    # trilinear resampling reproduces a linear field exactly inside the mask
    x = lo + 2 * v + torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * (hi - lo - 4 * v)
    expected = torch.nn.functional.softplus(linear(x) + teacher.shift) / teacher.voxel_final
    torch.testing.assert_close(teacher.raw_sigma(x), expected, rtol=1e-4, atol=1e-4)
    feat = sparse_trilinear(teacher.feature_table, teacher.slot(), *teacher.corners(x))
    torch.testing.assert_close(feat[:, 3], 4 * linear(x), rtol=1e-4, atol=1e-4)
    assert float(teacher.max_weight.max()) == 0.5  # the weight record moved with the box


def test_fit_box_leaves_out_mask_voxels_without_density():
    teacher = GridTeacher.for_box(
        [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], tiny_cfg(grid_res=(24,), upsample_at=())
    )
    assert teacher.dims == (24, 24, 24) and bool(teacher.mask.all())
    spacing = 2.0 / 23
    with torch.no_grad():  # dense only at lattice points 8..14, 5..10, 12..20 (σ ≈ 1e3 there, ≈ 0 elsewhere)
        dens = torch.full(teacher.dims, -50.0)
        dens[8:15, 5:11, 12:21] = 5.0
        teacher.density_table.copy_(dens.reshape(-1))
    assert teacher.fit_box(0.0, 24, 24, sigma_threshold=1.0)
    block_lo = torch.tensor([8.0, 5.0, 12.0]) * spacing - 1
    block_hi = torch.tensor([14.0, 10.0, 20.0]) * spacing - 1
    v = 2.0 / 24  # the box: the dense voxels, two more voxels and at most one lattice spacing around them
    assert (teacher.bbox_min <= block_lo).all() and (teacher.bbox_max >= block_hi).all()
    assert (teacher.bbox_min >= block_lo - spacing - 2 * v - 1e-6).all()
    assert (teacher.bbox_max <= block_hi + spacing + 2 * v + 1e-6).all()


def test_visibility_is_the_largest_recorded_weight_of_the_voxel_and_its_neighbours():
    teacher = GridTeacher.for_box([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], tiny_cfg(grid_res=(16, 24)))
    v = 2.0 / 24
    x = torch.tensor([[-1 + 10.5 * v, -1 + 4.5 * v, -1 + 7.5 * v]])
    assert teacher.visibility(x) is None  # no training ray recorded yet
    teacher.max_weight[10, 4, 7] = 0.6
    teacher.max_weight[11, 4, 7] = 0.2
    pts = torch.cat([x, x + torch.tensor([[v, 0.0, 0.0]]), x + torch.tensor([[2 * v, 0.0, 0.0]]), x - 3 * v])
    pts = torch.cat([pts, torch.tensor([[1.5, 0.0, 0.0]])])  # outside the box
    vis = teacher.visibility(pts)
    assert vis is not None
    torch.testing.assert_close(vis, torch.tensor([0.6, 0.6, 0.2, 0.0, 0.0]))


def test_training_rays_pass_through_their_pixel_centre(sphere):
    from trainer.teachers import TeacherPixelSampler

    rays = TeacherPixelSampler(sphere, "cpu")
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    o, d, target = rays.sample(2000, gen)
    gen.set_state(state)
    img = torch.randint(0, rays.n, (2000,), generator=gen)
    py = torch.randint(0, rays.h, (2000,), generator=gen)
    px = torch.randint(0, rays.w, (2000,), generator=gen)
    torch.testing.assert_close(target, rays.images[img, py, px])
    # back into the camera: the ray meets the image plane z = -1 at ((u - cx) / f, -(v - cy) / f)
    cam = torch.einsum("rji,rj->ri", rays.c2w[img, :3, :3], d)
    u = -cam[:, 0] / cam[:, 2] * rays.focal + rays.cx
    v = cam[:, 1] / cam[:, 2] * rays.focal + rays.cy
    torch.testing.assert_close(o, rays.c2w[img, :3, 3])
    torch.testing.assert_close(u - px, torch.full_like(u, 0.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(v - py, torch.full_like(v, 0.5), atol=1e-3, rtol=0)


def test_tv_regulariser_smooths_the_lattices(sphere, tmp_path):
    # the same training with a strong TV term leaves neighbouring lattice values much closer together
    def roughness(cfg: TeacherConfig, name: str) -> float:
        teacher = train_teacher(
            make_teacher(cfg, sphere, "cpu"), sphere, cfg, ckpt_path=tmp_path / f"{name}.ckpt"
        )
        assert isinstance(teacher, GridTeacher)
        from trainer.teachers.lattice import lattice_neighbour_rows

        pairs = lattice_neighbour_rows(teacher.active, teacher.slot(), teacher.dims)
        f = teacher.feature_table.detach()
        return float(((f[pairs[:, 0]] - f[pairs[:, 1]]) ** 2).sum(-1).mean())

    plain = roughness(tiny_cfg(steps=40), "plain")
    smooth = roughness(tiny_cfg(steps=40, tv_density_weight=1.0, tv_feature_weight=1.0), "tv")
    assert smooth < 0.5 * plain, (plain, smooth)


def test_grid_teacher_lowers_the_loss(sphere, tmp_path):
    cfg = tiny_cfg(steps=80)
    teacher = make_teacher(cfg, sphere, "cpu")
    before, _ = teacher_psnr(teacher, sphere, cfg, [0, 5])
    losses: list[float] = []
    teacher = train_teacher(
        teacher,
        sphere,
        cfg,
        ckpt_path=tmp_path / "t.ckpt",
        device="cpu",
        on_step=lambda s, n, loss, p: losses.append(loss),
    )
    after, _ = teacher_psnr(teacher, sphere, cfg, [0, 5])
    assert len(losses) == 80 // 5
    assert np.mean(losses[-3:]) < 0.3 * np.mean(losses[:2])
    assert after > before + 8.0 and after > 20.0, (before, after)
    # opacity (from renders on two backgrounds): opaque through the sphere's centre, clear beside it
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0]])
    aim = torch.tensor(np.array([SPHERE_C, [0.62, -0.62, 0.0]]), dtype=torch.float32)
    d = torch.nn.functional.normalize(aim - o, dim=-1)
    white = render_teacher(teacher, o, d, 1.0, 5.0, (1.0, 1.0, 1.0), cfg)
    black = render_teacher(teacher, o, d, 1.0, 5.0, (0.0, 0.0, 0.0), cfg)
    t_end = (white - black).mean(dim=-1)
    assert float(t_end[0]) < 0.25 and float(t_end[1]) > 0.9, t_end


def test_training_fits_the_box_to_the_scene(sphere, tmp_path):
    # pruning by weight at step 40 carves the hull down to the sphere; the box follows it at once
    cfg = tiny_cfg(
        steps=80,
        grid_res=(16, 20, 24),
        upsample_at=(0.2, 0.4),
        prune_at=(0.5,),
        fit_box_at=0.5,
        fit_box_sigma=1.0,
    )
    loose = dataclasses.replace(
        sphere, bbox_min=np.full(3, -1.2, np.float32), bbox_max=np.full(3, 1.2, np.float32)
    )
    teacher = train_teacher(make_teacher(cfg, loose, "cpu"), loose, cfg, ckpt_path=tmp_path / "t.ckpt")
    assert isinstance(teacher, GridTeacher)
    lo, hi = teacher.bbox_min.numpy(), teacher.bbox_max.numpy()
    assert (lo <= SPHERE_C - SPHERE_R).all() and (hi >= SPHERE_C + SPHERE_R).all(), (lo, hi)
    assert float(np.prod(hi - lo)) < 0.8 * 2.4**3, (lo, hi)
    assert teacher_psnr(teacher, sphere, cfg, [0, 5])[0] > 20.0
    again = load_teacher(tmp_path / "t.ckpt")  # the new box and grid shapes round-trip through the file
    torch.testing.assert_close(again.bbox_min, teacher.bbox_min)
    assert isinstance(again, GridTeacher) and again.mask_dims == teacher.mask_dims


@pytest.mark.parametrize("tv", [0.0, 0.1])
def test_checkpoint_resume_continues_exactly(sphere, tmp_path, tv):
    # upsampling at step 10, pruning at step 30; with TV, over a window of pairs that moves with the step
    cfg = tiny_cfg(steps=40, tv_density_weight=tv, tv_feature_weight=tv, tv_pairs=500)
    straight = train_teacher(make_teacher(cfg, sphere, "cpu"), sphere, cfg, ckpt_path=tmp_path / "a.ckpt")

    seen: list[int] = []

    def interrupt(step: int, total: int, loss: float, psnr: float | None) -> None:
        seen.append(step)
        if step == 20:
            raise KeyboardInterrupt

    ckpt = tmp_path / "b.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make_teacher(cfg, sphere, "cpu"), sphere, cfg, ckpt_path=ckpt, on_step=interrupt)
    assert ckpt.exists() and seen[-1] == 20
    partial = load_teacher(ckpt)
    assert isinstance(partial, GridTeacher) and partial.dims != make_teacher(cfg, sphere, "cpu").dims

    resumed_steps: list[int] = []
    resumed = train_teacher(
        make_teacher(cfg, sphere, "cpu"),
        sphere,
        cfg,
        ckpt_path=ckpt,
        on_step=lambda s, n, loss, p: resumed_steps.append(s),
    )
    assert resumed_steps[0] == 25 and resumed_steps[-1] == 40  # continued at the step where it stopped
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    # a finished checkpoint returns at once, without training further
    again: list[int] = []
    train_teacher(
        make_teacher(cfg, sphere, "cpu"), sphere, cfg, ckpt_path=ckpt, on_step=lambda *a: again.append(1)
    )
    assert again == []


def test_save_load_roundtrip_and_bad_files(sphere, tmp_path):
    cfg = tiny_cfg(steps=12)
    teacher = train_teacher(make_teacher(cfg, sphere, "cpu"), sphere, cfg, ckpt_path=tmp_path / "c.ckpt")
    path = tmp_path / "teacher.safetensors"
    save_teacher(teacher, path)
    loaded = load_teacher(path)
    x = torch.rand(50, 3) - 0.5
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    with torch.no_grad():
        for got, want in zip(loaded.query(x, d), teacher.query(x, d)):
            torch.testing.assert_close(got, want)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage that is not safetensors")
    for p in (bad, tmp_path / "missing.safetensors", tmp_path):
        with pytest.raises(TeacherFormatError) as e:
            load_teacher(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_nerf_teacher_runs_a_few_steps(sphere, tmp_path):
    cfg = TeacherConfig(
        kind="nerf",
        nerf_steps=3,
        nerf_batch_rays=32,
        nerf_samples=32,
        nerf_precrop_steps=2,
        checkpoint_every_s=1e9,
        log_every=1,
    )
    teacher = make_teacher(cfg, sphere, "cpu")
    assert isinstance(teacher, NerfTeacher)
    assert teacher.width == 256 and len(teacher.trunk) == 8 and teacher.trunk[4].in_features == 256 + 63
    assert teacher.dir_layer.out_features == 128
    before = [p.detach().clone() for p in teacher.parameters()]
    losses: list[float] = []
    teacher = train_teacher(
        teacher, sphere, cfg, ckpt_path=tmp_path / "n.ckpt", on_step=lambda s, n, loss, p: losses.append(loss)
    )
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    x = torch.rand(10, 3)
    d = torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    with torch.no_grad():
        sigma, rgb = teacher.query(x, d)
    assert (sigma >= 0).all() and ((rgb >= 0) & (rgb <= 1)).all()
    assert isinstance(load_teacher(tmp_path / "n.ckpt"), NerfTeacher)
    defaults = TeacherConfig()
    assert (defaults.nerf_samples, defaults.nerf_lr, defaults.nerf_batch_rays) == (384, 5e-4, 1024)
