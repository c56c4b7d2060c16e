"""The instant-ngp / nerfstudio ``transforms.json`` layout: hand-computed intrinsics, rays, splits and boxes
on tiny scenes; every malformed file one line (exit 2 from the CLI); real lego converted in the test to the
layout, with per-frame intrinsics and moved principal points, against the Blender loader; end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from renderer.camera import generate_rays, look_at, orbit_pose
from trainer.cli import main
from trainer.data import DatasetError, count_frames, default_near_far, detect_layout, load_dataset
from trainer.data.cameras import FrameRays
from trainer.teachers import TeacherPixelSampler
from trainer.teachers.hull import visual_hull

ROOT = Path(__file__).resolve().parents[1]
TJ = "transforms.json"


# ----------------------------------------------------------------------------------------------- helpers
def png(path: Path, w: int, h: int, value: int = 200, alpha: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((h, w, 4), value, np.uint8)
    pixels[..., 3] = alpha
    Image.fromarray(pixels, "RGBA").save(path)


def pose(t: float) -> list[list[float]]:
    """Rotation about Z by t radians, translated to (t, 2t, 3t)."""
    c, s = math.cos(t), math.sin(t)
    return [[c, -s, 0.0, t], [s, c, 0.0, 2 * t], [0.0, 0.0, 1.0, 3 * t], [0.0, 0.0, 0.0, 1.0]]


def scene(root: Path, n: int = 3, size: tuple[int, int] = (4, 4), **top: Any) -> Path:
    """``n`` frames ``images/f<i>.png`` of ``size`` (pixel value 10 i), cameras 4 from the origin looking at
    it (azimuth 40° i, elevation 20°), ``fl_x`` = 2."""
    frames = []
    for i in range(n):
        png(root / "images" / f"f{i}.png", *size, value=10 * i)
        c2w = orbit_pose((0.0, 0.0, 0.0), 4.0, 40.0 * i, 20.0)
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": c2w.tolist()})
    write(root, {"fl_x": 2.0, **top, "frames": frames})
    return root


def write(root: Path, meta: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / TJ).write_text(json.dumps(meta))


def edit(root: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((root / TJ).read_text())
    fn(meta)
    write(root, meta)


def one_line(excinfo: pytest.ExceptionInfo[DatasetError], *needles: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, (n, text)
    return text


# --------------------------------------------------------------------------------------- known answers
def test_layout_detection(tmp_path: Path) -> None:
    root = scene(tmp_path / "s")
    assert detect_layout(root) == "ngp"
    (root / "transforms_train.json").write_text("{}")  # a Blender folder that also holds a transforms.json
    assert detect_layout(root) == "blender"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as excinfo:
        detect_layout(tmp_path / "empty")
    one_line(excinfo, "transforms.json")


def test_global_intrinsics_and_a_ray_by_hand(tmp_path: Path) -> None:
    root = scene(tmp_path, n=1, size=(4, 2), cx=1.5, cy=0.5)
    edit(root, lambda m: m["frames"][0].update(transform_matrix=np.eye(4).tolist()))
    ds = load_dataset(root, "test")  # one frame: frame 0 is the test split
    assert ds.layout == "ngp" and ds.uniform and ds.focal == 2.0 and ds.principal_point == (1.5, 0.5)
    assert ds.images.shape == (1, 2, 4, 3) and ds.names == ["images/f0"]
    o, d = FrameRays(ds).rays(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
    # pixel (0, 0): ((0.5 - 1.5) / 2, -(0.5 - 0.5) / 2, -1) = (-0.5, 0, -1), normalised
    torch.testing.assert_close(d[0], torch.tensor([-0.5, 0.0, -1.0]) / math.sqrt(1.25))
    torch.testing.assert_close(o[0], torch.zeros(3))


@pytest.mark.parametrize(
    ("keys", "fx", "fy"),
    [
        ({"camera_angle_x": 2 * math.atan(0.5)}, 4.0, 4.0),  # 0.5 * 4 / tan(atan(1/2)) = 4
        ({"camera_angle_y": 2 * math.atan(0.25)}, 4.0, 4.0),  # 0.5 * 2 / (1/4) = 4, for both axes
        ({"x_fov": 90.0}, 2.0, 2.0),  # degrees: 0.5 * 4 / tan(45°) = 2
        ({"fl_x": 3.0, "fl_y": 5.0}, 3.0, 5.0),
        ({"fl_x": 3.0, "camera_angle_x": 1.0}, 3.0, 3.0),  # fl_x wins
    ],
)
def test_focal_lengths(tmp_path: Path, keys: dict[str, float], fx: float, fy: float) -> None:
    root = scene(tmp_path, n=1, size=(4, 2))
    edit(root, lambda m: (m.pop("fl_x"), m.update(keys)))
    ds = load_dataset(root, "test")
    assert ds.all_intrinsics()[0].tolist() == pytest.approx([fx, fy, 2.0, 1.0])
    assert ds.uniform == (fx == fy)


def test_per_frame_intrinsics_sizes_and_padding(tmp_path: Path) -> None:
    root = scene(tmp_path, n=2, size=(8, 8), train_filenames=["images/f0.png", "images/f1.png"])
    png(root / "images" / "f1.png", 4, 6, value=10)
    edit(root, lambda m: m["frames"][1].update(fl_x=3.0, fl_y=5.0, cx=1.0, w=4, h=6))
    ds = load_dataset(root, "train", downscale=2, background=(0.0, 0.0, 1.0))
    assert not ds.uniform and ds.images.shape == (2, 4, 4, 3)
    assert ds.all_sizes().tolist() == [[4, 4], [2, 3]]
    assert ds.all_intrinsics().tolist() == [[1.0, 1.0, 2.0, 2.0], [1.5, 2.5, 0.5, 1.5]]  # halved
    assert ds.view_image(1).shape == (3, 2, 3)
    np.testing.assert_allclose(ds.view_image(1), 10 / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.images[1, 3:], np.broadcast_to([0.0, 0.0, 1.0], (1, 4, 3)))  # padding
    assert (ds.alphas[1, :, 2:] == 1.0).all()
    cam = ds.camera(1)  # the dataset's W x H picture with frame 1's focal and principal point
    assert (cam.width, cam.height, cam.focal, cam.cx, cam.cy) == (4, 4, 1.5, 0.5, 1.5)


def test_file_paths_with_and_without_extension_in_any_folder(tmp_path: Path) -> None:
    root = scene(tmp_path, n=1)
    png(root / "a" / "b" / "g.png", 4, 4)
    (root / "c").mkdir()
    Image.new("RGB", (4, 4)).save(root / "c" / "h.jpeg")
    Image.new("RGB", (4, 4)).save(root / "c" / "k.JPG")
    names = ["a/b/g", "./c/h", "c/k", "images/../images/f0.png"]
    cams = [orbit_pose((0.0, 0.0, 0.0), 4.0, 90.0 * i, 10.0).tolist() for i in range(4)]
    frames = [{"file_path": p, "transform_matrix": c} for p, c in zip(names, cams)]
    edit(root, lambda m: m.update(frames=frames))
    ds = load_dataset(root, "train")  # every 8th frame from 0 is test: frames 1..3 are train
    assert ds.names == ["c/h", "c/k", "images/../images/f0"]
    edit(root, lambda m: m["frames"][0].update(file_path="../outside.png"))
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root)
    one_line(excinfo, str(root / TJ), "leaves the dataset folder")


def test_every_eighth_frame_is_test(tmp_path: Path) -> None:
    root = scene(tmp_path, n=17, size=(2, 2))
    assert [count_frames(root, s) for s in ("train", "val", "test")] == [14, 3, 3]
    assert load_dataset(root, "test").names == ["images/f0", "images/f8", "images/f16"]
    assert load_dataset(root, "val").names == load_dataset(root, "test").names
    assert load_dataset(root, "train").names[:2] == ["images/f1", "images/f2"]
    assert load_dataset(root, "train", every=4, limit=2).names == ["images/f1", "images/f5"]


def test_nerfstudio_split_lists(tmp_path: Path) -> None:
    root = scene(
        tmp_path, n=4, train_filenames=["images/f2.png", "./images/f1"], test_filenames=["images/f0"]
    )
    assert load_dataset(root, "train").names == ["images/f1", "images/f2"]  # in the file's frame order
    assert load_dataset(root, "test").names == ["images/f0"]
    assert count_frames(root, "train") == 2
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, "val")
    one_line(excinfo, "no 'val_filenames'", "train_filenames, test_filenames")
    edit(root, lambda m: m.update(test_filenames=["images/f9.png"]))
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root, "test")
    one_line(excinfo, "'test_filenames' names 'images/f9.png', which is no frame's file_path")


def test_aabb_is_the_scene_box(tmp_path: Path) -> None:
    root = scene(tmp_path, aabb=[[-1, -2, -3], [1, 2, 3]])
    edit(root, lambda m: [f.update(transform_matrix=pose(0.1 * i)) for i, f in enumerate(m["frames"])])
    ds = load_dataset(root)
    assert ds.bbox_min.tolist() == [-1, -2, -3] and ds.bbox_max.tolist() == [1, 2, 3] and not ds.bbox_loose
    near, far = default_near_far(ds)  # from the box (cameras inside it: near is 1e-3 of its diagonal)
    assert near == pytest.approx(1e-3 * math.sqrt(4 + 16 + 36)) and far > near


def test_aabb_scale_box_by_hand(tmp_path: Path) -> None:
    # json x -> x * scale + offset in instant-ngp's cube, which aabb_scale k grows to [0.5 - k/2, 0.5 + k/2]
    ds = load_dataset(scene(tmp_path / "a", aabb_scale=2, scale=0.5, offset=[0.5, 0.0, 1.0]))
    assert ds.bbox_min.tolist() == [-2.0, -1.0, -3.0] and ds.bbox_max.tolist() == [2.0, 3.0, 1.0]
    assert ds.bbox_loose
    ds = load_dataset(scene(tmp_path / "b", aabb_scale=1))  # instant-ngp's defaults: scale 0.33, offset 0.5
    np.testing.assert_allclose(ds.bbox_max, [0.5 / 0.33] * 3, rtol=1e-6)
    np.testing.assert_allclose(ds.bbox_min, -ds.bbox_max)


def test_box_from_cameras_by_hand(tmp_path: Path) -> None:
    target = np.array([1.0, 2.0, 3.0])
    eyes = [target + v for v in ([4.0, 0, 0], [0, 4.0, 0], [-4.0, 0, 0], [0, -4.0, 0])]
    root = scene(tmp_path, n=4)
    edit(
        root,
        lambda m: [f.update(transform_matrix=look_at(e, target).tolist()) for f, e in zip(m["frames"], eyes)],
    )
    ds = load_dataset(root)
    # every optical axis passes through the target, 4 away; half side 1.2 * 4 * tan(half fov) = 1.2 * 4 * 2/2
    np.testing.assert_allclose(ds.bbox_min, target - 4.8, atol=1e-5)
    np.testing.assert_allclose(ds.bbox_max, target + 4.8, atol=1e-5)
    assert ds.bbox_loose
    ds = load_dataset(root, bbox=([0, 0, 0], [1, 1, 1]))  # --set data.bbox_min/max
    assert ds.bbox_min.tolist() == [0, 0, 0] and ds.bbox_max.tolist() == [1, 1, 1] and not ds.bbox_loose


@pytest.mark.parametrize("facing", ["parallel", "outward"])
def test_cameras_without_a_common_point_need_a_box(tmp_path: Path, facing: str) -> None:
    root = scene(tmp_path, n=4)
    if facing == "parallel":  # a forward-facing capture: every camera looks down -Z
        poses = [np.eye(4) for _ in range(4)]
        for i, m in enumerate(poses):
            m[:3, 3] = [0.3 * i, 0.1 * i, 0.0]
    else:  # half a unit out from the origin, looking away from it: their axes meet behind them
        targets = [np.array(t, dtype=float) for t in ([1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0])]
        poses = [look_at(0.5 * t, t) for t in targets]
    edit(
        root,
        lambda m: [f.update(transform_matrix=np.asarray(c).tolist()) for f, c in zip(m["frames"], poses)],
    )
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root)
    one_line(excinfo, "cameras look at no common point", "--set data.bbox_min=[x,y,z]")
    edit(root, lambda m: m.update(aabb="broken"))  # the user's box: the file's is not read
    ds = load_dataset(root, bbox=([-1, -1, -3], [1, 1, -1]))
    assert ds.bbox_max.tolist() == [1, 1, -1] and not ds.bbox_loose
    assert default_near_far(ds)[1] > default_near_far(ds)[0] > 0


def test_zero_distortion_is_a_pinhole(tmp_path: Path) -> None:
    root = scene(tmp_path, camera_model="OPENCV", k1=0, k2=0.0, p1=0, p2=0, applied_transform=pose(1)[:3])
    assert load_dataset(root).uniform


# ------------------------------------------------------------------------------- rays and samplers
@settings(max_examples=40, deadline=None)
@given(
    fx=st.floats(0.5, 50),
    fy=st.floats(0.5, 50),
    cx=st.floats(-10, 10),
    cy=st.floats(-10, 10),
    px=st.integers(0, 7),
    py=st.integers(0, 5),
)
def test_rays_project_back_to_their_pixel_centre(
    fx: float, fy: float, cx: float, cy: float, px: int, py: int
):
    from trainer.data import Dataset

    c2w = np.stack([np.asarray(pose(0.3)), np.asarray(pose(-0.7))])  # float64
    k = np.array([[1.0, 1.0, 0.0, 0.0], [fx, fy, cx, cy]])
    ds = Dataset(np.zeros((2, 6, 8, 3)), np.ones((2, 6, 8)), c2w, 1.0, 8, 6, frame_intrinsics=k)
    rays = FrameRays(ds, dtype=torch.float64)
    o, d = rays.rays(torch.tensor([1]), torch.tensor([px]), torch.tensor([py]))
    cam = torch.as_tensor(c2w[1, :3, :3], dtype=torch.float64).T @ d[0]  # into the camera: looks down -Z
    u, v = -cam[0] / cam[2] * fx + cx, cam[1] / cam[2] * fy + cy
    assert float(u) == pytest.approx(px + 0.5, abs=1e-6) and float(v) == pytest.approx(py + 0.5, abs=1e-6)
    torch.testing.assert_close(o[0], torch.as_tensor(c2w[1, :3, 3], dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
    crop=st.floats(0.1, 1),
)
def test_draws_stay_inside_each_frames_own_pixels(sizes: list[tuple[int, int]], crop: float) -> None:
    from trainer.data import Dataset

    n, w, h = len(sizes), max(s[0] for s in sizes), max(s[1] for s in sizes)
    ds = Dataset(np.zeros((n, h, w, 3)), np.ones((n, h, w)), np.tile(np.eye(4), (n, 1, 1)), 1.0, w, h)
    ds.frame_sizes = np.array(sizes)
    rays = FrameRays(ds)
    gen = torch.Generator().manual_seed(0)
    for img, py, px in (rays.draw(500, gen, crop), rays.draw_pixels(500, gen, "cpu")):
        own = torch.tensor(sizes)[img]
        assert bool((px >= 0).all() and (px < own[:, 0]).all() and (py >= 0).all() and (py < own[:, 1]).all())


def test_draw_pixels_is_uniform_over_every_frames_pixels() -> None:
    from trainer.data import Dataset

    ds = Dataset(np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4)), np.tile(np.eye(4), (2, 1, 1)), 1.0, 4, 4)
    ds.frame_sizes = np.array([[4, 4], [1, 2]])  # 16 + 2 pixels
    img, _, _ = FrameRays(ds).draw_pixels(18_000, torch.Generator().manual_seed(1), "cpu")
    assert float((img == 1).float().mean()) == pytest.approx(2 / 18, abs=0.01)


def test_teacher_sampler_and_hull_use_each_frames_intrinsics(tmp_path: Path) -> None:
    root = scene(tmp_path, n=2, size=(8, 8), train_filenames=["images/f0.png", "images/f1.png"])
    png(root / "images" / "f1.png", 4, 6, value=10)
    edit(root, lambda m: m["frames"][1].update(fl_x=3.0, fl_y=5.0, cx=1.0, w=4, h=6))
    ds = load_dataset(root)
    sampler = TeacherPixelSampler(ds, "cpu")
    o, d, target = sampler.sample(400, torch.Generator().manual_seed(2))
    img = (o[:, None] - sampler.c2w[None, :, :3, 3]).norm(dim=-1).argmin(dim=1)
    k = torch.as_tensor(ds.all_intrinsics(), dtype=torch.float32)[img]
    cam = torch.einsum("rji,rj->ri", sampler.c2w[img, :3, :3], d)
    u, v = -cam[:, 0] / cam[:, 2] * k[:, 0] + k[:, 2], cam[:, 1] / cam[:, 2] * k[:, 1] + k[:, 3]
    px, py = u.floor().long(), v.floor().long()
    torch.testing.assert_close(u - px, torch.full_like(u, 0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(target, sampler.images[img, py, px])
    assert bool((px[img == 1] < 4).all() and (py[img == 1] < 6).all())
    # a point frame 1 would see at padded pixel (5, 5) (outside its own 4 x 6) is not carved by alpha 0 there
    ds.alphas[:] = 0.0
    c2w = np.asarray(ds.c2w[1:2], np.float64)
    cam_pt = np.array([(5.5 - 1.0) / 3.0, -(5.5 - 3.0) / 5.0, -1.0])  # pixel centre (5.5, 5.5), depth 1
    world = torch.as_tensor((c2w[0, :3, :3] @ cam_pt + c2w[0, :3, 3])[None], dtype=torch.float32)
    keep = visual_hull(world, ds.alphas[1:2], c2w, 3.0, 1.0, 3.0, 0.5, 1e-3, fy=5.0, sizes=np.array([[4, 6]]))
    assert keep.tolist() == [True]
    keep = visual_hull(world, ds.alphas[1:2], c2w, 3.0, 1.0, 3.0, 0.5, 1e-3, fy=5.0)  # as if 8 x 8
    assert keep.tolist() == [False]


# ------------------------------------------------------------------------------------ malformed files
def _raw(root: Path, text: str) -> None:
    (root / TJ).write_text(text)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "top level list": (lambda r: _raw(r, "[]"), "top level must be a json object"),
    "not json": (lambda r: _raw(r, "{"), "transforms json is not valid JSON"),
    "deep json": (lambda r: _raw(r, '{"frames": ' + "[" * 200 + "]" * 200 + "}"), "nested deeper than 64"),
    "duplicate key": (lambda r: _raw(r, '{"frames": [], "frames": []}'), "duplicate key"),
    "no frames": (lambda r: edit(r, lambda m: m.pop("frames")), "json has no frames"),
    "frame not an object": (
        lambda r: edit(r, lambda m: m["frames"].append(3)),
        "frame 3 is not a json object",
    ),
    "no file_path": (
        lambda r: edit(r, lambda m: m["frames"][1].pop("file_path")),
        "frame 1 has no 'file_path'",
    ),
    "no matrix": (
        lambda r: edit(r, lambda m: m["frames"][2].pop("transform_matrix")),
        "frame 2 (images/f2.png): no 'transform_matrix'",
    ),
    "NaN matrix": (
        lambda r: _raw(r, (r / TJ).read_text().replace("0.0, 0.0, 0.0, 1.0]]", "0.0, 0.0, NaN, 1.0]]", 1)),
        "NaN is not a number",
    ),
    "singular matrix": (
        lambda r: edit(r, lambda m: m["frames"][0].update(transform_matrix=np.diag([0, 0, 0, 1.0]).tolist())),
        "transform_matrix rotation is singular",
    ),
    "bad bottom row": (
        lambda r: edit(r, lambda m: m["frames"][0].update(transform_matrix=np.zeros((4, 4)).tolist())),
        "bottom row",
    ),
    "3x3 matrix": (
        lambda r: edit(r, lambda m: m["frames"][0].update(transform_matrix=np.eye(3).tolist())),
        "must be a 4x4 matrix",
    ),
    "missing image": (lambda r: (r / "images" / "f1.png").unlink(), "f1.png: image file not found"),
    "size differs from w/h": (lambda r: edit(r, lambda m: m.update(w=5, h=4)), "image is 4x4, expected 5x4"),
    "per-frame size differs": (
        lambda r: edit(r, lambda m: m["frames"][2].update(w=4, h=5)),
        "f2.png: image is 4x4, expected 4x5 ('w'/'h' in transforms.json)",
    ),
    "fractional w": (lambda r: edit(r, lambda m: m.update(w=2.5, h=4)), "'w' must be an integer"),
    "no focal": (lambda r: edit(r, lambda m: m.pop("fl_x")), "frame 0 (images/f0.png): no focal length"),
    "negative focal": (lambda r: edit(r, lambda m: m.update(fl_x=-1)), "'fl_x' must be a finite number > 0"),
    "focal string": (lambda r: edit(r, lambda m: m.update(fl_x="2")), "'fl_x' is not a number"),
    "angle past pi": (
        lambda r: edit(r, lambda m: (m.pop("fl_x"), m.update(camera_angle_x=4.0))),
        "'camera_angle_x' must be below 180 degrees",
    ),
    "principal point far out": (lambda r: edit(r, lambda m: m.update(cx=1e9)), "principal point cx"),
    "k1": (
        lambda r: edit(r, lambda m: m.update(k1=0.01)),
        "frame 0 (images/f0.png): distortion k1=0.01 is not supported; undistort the images first",
    ),
    "per-frame p2": (
        lambda r: edit(r, lambda m: m["frames"][2].update(p2=-0.5)),
        "frame 2 (images/f2.png): distortion p2=-0.5 is not supported",
    ),
    "fisheye model": (
        lambda r: edit(r, lambda m: m.update(camera_model="OPENCV_FISHEYE")),
        "camera_model 'OPENCV_FISHEYE' is not supported",
    ),
    "is_fisheye": (
        lambda r: edit(r, lambda m: m.update(is_fisheye=True)),
        "'is_fisheye' lenses are not supported",
    ),
    "aabb not a box": (
        lambda r: edit(r, lambda m: m.update(aabb=[1, 2])),
        "'aabb' minimum must be 3 numbers",
    ),
    "aabb not a pair": (lambda r: edit(r, lambda m: m.update(aabb=[[0, 0, 0]])), "'aabb' must be [[x0"),
    "aabb inverted": (
        lambda r: edit(r, lambda m: m.update(aabb=[[1, 0, 0], [0, 1, 1]])),
        "'aabb' minimum [1.0, 0.0, 0.0] must be below its maximum",
    ),
    "aabb_scale zero": (lambda r: edit(r, lambda m: m.update(aabb_scale=0)), "'aabb_scale' must be a finite"),
    "aabb_scale huge": (lambda r: edit(r, lambda m: m.update(aabb_scale=1024)), "at most 128"),
    "split list not a list": (
        lambda r: edit(r, lambda m: m.update(train_filenames="x")),
        "'train_filenames' must",
    ),
    "split names unknown file": (
        lambda r: edit(r, lambda m: m.update(train_filenames=["nope.png"])),
        "'train_filenames' names 'nope.png'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_files_are_one_line(tmp_path: Path, case: str) -> None:
    root = scene(tmp_path / "s", n=3)
    mutate, needle = CASES[case]
    mutate(root)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(root)
    one_line(excinfo, needle)
    assert str(tmp_path) in str(excinfo.value)


@pytest.mark.parametrize("case", ["k1", "NaN matrix", "missing image", "deep json", "aabb inverted"])
def test_cli_exits_2_with_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = scene(tmp_path / "s", n=3)
    mutate, needle = CASES[case]
    mutate(root)
    rc = main(["run", "--data", str(root), "--out", str(tmp_path / "o.kilo"), "--preset", "tiny", "--no-bar"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err


def test_subprocess_exit_code_for_distortion(tmp_path: Path) -> None:
    root = scene(tmp_path / "s", n=3, k2=0.2)
    cmd = [sys.executable, "-m", "trainer", "run", "--data", str(root), "--preset", "tiny"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "o.kilo")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{root / TJ}: frame 0 (images/f0.png): distortion k2=0.2 is not supported" in proc.stderr


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["data.bbox_min=[0,0]", "data.bbox_max=[1,1,1]"], "data.bbox_min must be a list of 3 numbers"),
        (["data.bbox_min=[0,0,0]"], "data.bbox_max must be given with bbox_min"),
        (["data.bbox_min=[0,0,0]", "data.bbox_max=[1,0,1]"], "data.bbox_max must exceed bbox_min"),
        (["data.bbox_min=[0,0,1e9]", "data.bbox_max=[1,1,2e9]"], "data.bbox_min must be"),
    ],
)
def test_bad_box_settings_refused_before_anything_is_written(
    tmp_path: Path, sets: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = scene(tmp_path / "s")
    out = tmp_path / "o.kilo"
    rc = main(
        [
            "run",
            "--data",
            str(root),
            "--out",
            str(out),
            "--preset",
            "tiny",
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o.kilo.work").exists() and not out.exists()


def test_box_setting_reaches_the_datasets(tmp_path: Path) -> None:
    from trainer.pipeline import RunConfig, open_context

    root = scene(tmp_path / "s", n=9, size=(32, 32), aabb_scale=4)  # tiny: downscale 16
    overrides = {"data": {"bbox_min": [-1, -2, -3], "bbox_max": [1, 2, 3.5]}}
    cfg = RunConfig(
        data=root, out=tmp_path / "o.kilo", workdir=tmp_path / "w", preset="tiny", overrides=overrides
    )
    ctx = open_context(cfg)
    for ds in (ctx.train_set, ctx.eval_set()[0]):
        assert (
            ds.bbox_min.tolist() == [-1, -2, -3] and ds.bbox_max.tolist() == [1, 2, 3.5] and not ds.bbox_loose
        )
    assert json.loads((tmp_path / "w" / "run.json").read_text())["preset_config"]["data"]["bbox_max"] == [
        1,
        2,
        3.5,
    ]


# ---------------------------------------------------------------------------------- real lego, converted
def convert_lego(
    lego: Path, out: Path, count: int, step: int = 4, aabb: list[list[float]] | None = None
) -> list:
    """The first ``count`` lego training frames in the transforms.json layout, images cropped (frame i loses
    ``step`` x (i, 2i mod 5) pixels at the top-left and step x (i mod 3, i mod 2) at the bottom-right) into
    ``rgb/sub/``, with their own fl_x, fl_y, cx, cy, w, h; file paths without extension. Returns the crops."""
    meta = json.loads((lego / "transforms_train.json").read_text())
    focal = 0.5 * 800 / math.tan(0.5 * meta["camera_angle_x"])
    frames, crops = [], []
    for i, frame in enumerate(meta["frames"][:count]):
        x0, y0 = step * i, step * ((2 * i) % 5)
        x1, y1 = 800 - step * (i % 3), 800 - step * (i % 2)
        (out / "rgb" / "sub").mkdir(parents=True, exist_ok=True)
        Image.open(lego / f"{frame['file_path']}.png").crop((x0, y0, x1, y1)).save(
            out / "rgb" / "sub" / f"v{i}.png"
        )
        k = {"fl_x": focal, "fl_y": focal, "cx": 400.0 - x0, "cy": 400.0 - y0, "w": x1 - x0, "h": y1 - y0}
        frames.append({"file_path": f"rgb/sub/v{i}", "transform_matrix": frame["transform_matrix"], **k})
        crops.append((x0, y0, x1, y1))
    top: dict[str, Any] = {"camera_model": "OPENCV", "k1": 0.0, "p1": 0.0}
    if aabb is not None:
        top["aabb"] = aabb
    write(out, {**top, "frames": frames})
    return crops


def test_converted_lego_matches_the_blender_loader(blender_lego: Path, tmp_path: Path) -> None:
    n, factor = 5, 4
    crops = convert_lego(blender_lego, tmp_path / "ngp", n, aabb=[[-0.7, -1.2, -0.4], [0.7, 1.2, 1.1]])
    edit(tmp_path / "ngp", lambda m: m.update(train_filenames=[f["file_path"] for f in m["frames"]]))
    ngp = load_dataset(tmp_path / "ngp", "train", factor)
    ref = load_dataset(blender_lego, "train", factor, limit=n)
    assert not ngp.uniform and ngp.names == [f"rgb/sub/v{i}" for i in range(n)]
    np.testing.assert_array_equal(ngp.c2w, ref.c2w)
    assert ngp.bbox_min.tolist() == pytest.approx([-0.7, -1.2, -0.4]) and not ngp.bbox_loose
    gen = torch.Generator().manual_seed(5)
    ngp_rays, ref_rays = FrameRays(ngp, dtype=torch.float64), FrameRays(ref, dtype=torch.float64)
    for i, (x0, y0, x1, y1) in enumerate(crops):
        dx, dy, w, h = x0 // factor, y0 // factor, (x1 - x0) // factor, (y1 - y0) // factor
        assert ngp.size_of(i) == (w, h)
        # the same pixels, moved by the crop
        np.testing.assert_array_equal(ngp.view_image(i), ref.images[i, dy : dy + h, dx : dx + w])
        np.testing.assert_array_equal(ngp.alphas[i, :h, :w], ref.alphas[i, dy : dy + h, dx : dx + w])
        # the same rays for the same pixels
        px, py = torch.randint(0, w, (300,), generator=gen), torch.randint(0, h, (300,), generator=gen)
        o, d = ngp_rays.rays(torch.full((300,), i), px, py)
        o_ref, d_ref = ref_rays.rays(torch.full((300,), i), px + dx, py + dy)
        torch.testing.assert_close(o, o_ref)
        torch.testing.assert_close(d, d_ref, atol=1e-12, rtol=0)
        # the renderer's camera of the view draws the trainer's rays (its own pixels at the top-left)
        torch.testing.assert_close(
            generate_rays(ngp.camera(i))[1], FrameRays(ngp).view(i)[1], atol=1e-6, rtol=0
        )


def test_converted_lego_box_from_cameras(blender_lego: Path, tmp_path: Path) -> None:
    convert_lego(blender_lego, tmp_path / "ngp", 12)
    ds = load_dataset(tmp_path / "ngp", "train", 8)
    assert ds.bbox_loose
    lego_lo, lego_hi = np.array([-0.64, -1.15, -0.35]), np.array([0.64, 1.2, 1.05])  # lego's own extent
    assert (ds.bbox_min < lego_lo).all() and (ds.bbox_max > lego_hi).all()
    centre = (ds.bbox_min + ds.bbox_max) / 2  # the cameras all look at the origin, from 4.03 away
    assert np.linalg.norm(centre) < 0.2 and float((ds.bbox_max - ds.bbox_min).max()) < 4.0


@pytest.mark.slow
def test_end_to_end_tiny_run(blender_lego: Path, tmp_path: Path) -> None:
    from renderer.scene import load_scene

    data, out = tmp_path / "ngp", tmp_path / "out.kilo"
    convert_lego(blender_lego, data, 24, step=16)
    cmd = [sys.executable, "-m", "trainer", "run", "--data", str(data), "--preset", "tiny", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--no-bar"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scene_file = load_scene(out)
    assert scene_file.cameras is not None and scene_file.cameras.c2w.shape == (21, 4, 4)  # 24 less every 8th
    done = json.loads((tmp_path / "out.kilo.work" / "finetune.done").read_text())
    assert done["metrics"]["split"] == "test" and done["metrics"]["psnr"] > 16.0
