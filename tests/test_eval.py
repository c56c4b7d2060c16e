"""Evaluation: metrics against references, and `eval` on a dataset rendered from a known scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from renderer.camera import Camera, orbit_pose
from renderer.render import RenderOptions, render_image
from renderer.scene import save_scene
from renderer.synthetic import random_scene
from trainer.cli import main
from trainer.eval import evaluate_scene, evenly_spaced
from trainer.metrics import psnr, ssim

W = H = 24
FOCAL = 30.0


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run far faster on one thread on a shared 2-core machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_psnr_hand_computed() -> None:
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-9)  # mse 0.01 -> 20 dB


def test_ssim_is_skimage_and_one_for_identical() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0)
    assert ssim(a, b) == pytest.approx(ref, rel=1e-9)
    assert ssim(a, b) < 0.99


def test_evenly_spaced() -> None:
    assert evenly_spaced(10, None) == list(range(10))
    assert evenly_spaced(10, 3) == [0, 3, 6]
    assert evenly_spaced(3, 10) == [0, 1, 2]


def _blender_dataset(root: Path, scene, views: int = 3, noise: float = 0.0) -> list[np.ndarray]:
    """Write a Blender-layout test split rendered from ``scene`` (optionally noisy); return the renders."""
    (root / "test").mkdir(parents=True)
    frames, exact = [], []
    rng = np.random.default_rng(1)
    for i in range(views):
        c2w = orbit_pose((0, 0, 0), 3.5, 360.0 * i / views, 25.0)
        img = render_image(scene, Camera(W, H, FOCAL, c2w), RenderOptions()).image.numpy()
        exact.append(img)
        out = np.clip(img + noise * rng.standard_normal(img.shape), 0, 1)
        rgba = np.concatenate([out, np.ones((H, W, 1))], axis=-1)
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(root / "test" / f"r_{i}.png")
        frames.append({"file_path": f"./test/r_{i}", "transform_matrix": c2w.tolist()})
    angle = 2 * math.atan(W / (2 * FOCAL))
    (root / "transforms_test.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return exact


def test_eval_of_the_scene_that_made_the_images(tmp_path: Path) -> None:
    scene = random_scene(background=(1.0, 1.0, 1.0), density_bias=1.0)
    kilo = tmp_path / "s.kilo"
    save_scene(scene, kilo, dtype="float32")
    _blender_dataset(tmp_path / "data", scene)
    res = evaluate_scene(kilo, tmp_path / "data", split="test")
    # only 8-bit quantisation separates the render from the PNGs: >= 45 dB
    assert res["views"] == 3 and res["width"] == W
    assert res["psnr"] > 45.0
    assert res["ssim"] > 0.99
    assert res["lpips"] is None or res["lpips"] < 0.05
    assert res["ms_per_frame"] > 0


def test_eval_cli_json_and_noise_lowers_psnr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = random_scene(background=(1.0, 1.0, 1.0), density_bias=1.0, seed=2)
    kilo = tmp_path / "s.kilo"
    save_scene(scene, kilo, dtype="float32")
    _blender_dataset(tmp_path / "data", scene, views=4, noise=0.05)
    out = tmp_path / "r.json"
    rc = main(["eval", str(kilo), "--data", str(tmp_path / "data"), "--limit", "2", "--json", str(out),
               "--save-dir", str(tmp_path / "renders")])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    # noise sigma 0.05 (clipped): PSNR close to 20*log10(1/0.05) = 26 dB
    assert 24.0 < res["psnr"] < 29.0
    assert res["views"] == 2 and [v["name"] for v in res["per_view"]] == ["test/r_0", "test/r_2"]
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["0000.png", "0002.png"]
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text and "ms/frame" in text


def test_eval_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing.kilo"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing.kilo" in err and err.count("\n") == 1
    bad = tmp_path / "bad.kilo"
    bad.write_bytes(b"not a scene")
    assert main(["eval", str(bad), "--data", str(tmp_path)]) == 2
    assert "bad.kilo" in capsys.readouterr().err


def test_eval_of_a_teacher_file(tmp_path: Path) -> None:
    from trainer.teachers import GridTeacher, TeacherConfig, save_teacher

    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    frames = []
    for i in range(2):
        grey = np.full((H, W, 4), 128, np.uint8)
        grey[..., 3] = 255
        Image.fromarray(grey, "RGBA").save(root / "test" / f"r_{i}.png")
        c2w = orbit_pose((0, 0, 0), 3.5, 180.0 * i, 25.0)
        frames.append({"file_path": f"./test/r_{i}", "transform_matrix": c2w.tolist()})
    angle = 2 * math.atan(W / (2 * FOCAL))
    (root / "transforms_test.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    cfg = TeacherConfig(grid_res=(8,), upsample_at=())
    teacher = GridTeacher.for_box([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], cfg)
    with torch.no_grad():
        teacher.density_table.fill_(-50.0)  # empty: every pixel is the white background
    save_teacher(teacher, tmp_path / "teacher.pt")
    res = evaluate_scene(tmp_path / "teacher.pt", root, split="test")
    mse = (1.0 - 128 / 255) ** 2
    assert res["views"] == 2
    assert res["psnr"] == pytest.approx(-10 * math.log10(mse), abs=1e-3)
