"""app/camera_path.py: interpolation through keyframes, nerfstudio's camera_path.json both ways, hostile
files, and the headless --camera-path video against the GUI export's frames."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import camera_path as cp
from renderer.camera import look_at, orbit_pose

ROOT = Path(__file__).resolve().parents[1]


def _path() -> cp.CameraPath:
    keys = [
        cp.Keyframe(orbit_pose((0, 0, 0), 4.0, az, el), fov, t)
        for az, el, fov, t in [(0, 20, 40, 0.0), (60, 30, 50, 1.0), (150, 10, 40, 2.5), (200, 40, 30, 3.0)]
    ]
    return cp.CameraPath(keys, fps=10, width=64, height=48)


def test_the_path_passes_through_every_keyframe() -> None:
    p = _path()
    for k in p.keyframes:
        c2w, fov = cp.pose_at(p, k.time)
        np.testing.assert_allclose(c2w, k.c2w, atol=1e-12)
        assert fov == pytest.approx(k.fov_deg)
    assert p.seconds == 3.0 and p.frame_count == 31


def test_positions_are_c1_smooth_and_rotations_stay_rotations() -> None:
    p = _path()
    eps = 1e-5
    for t in (1.0, 2.5):  # velocity just before and after an inner keyframe agree
        before = (cp.pose_at(p, t)[0][:3, 3] - cp.pose_at(p, t - eps)[0][:3, 3]) / eps
        after = (cp.pose_at(p, t + eps)[0][:3, 3] - cp.pose_at(p, t)[0][:3, 3]) / eps
        np.testing.assert_allclose(before, after, rtol=1e-3, atol=1e-3)
    for t in np.linspace(0, 3, 37):
        r = cp.pose_at(p, float(t))[0][:3, :3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0)


def test_slerp_halfway_is_the_half_angle() -> None:
    q0 = cp.quat_from_matrix(np.eye(3))
    rz90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    half = cp.matrix_from_quat(cp.slerp(q0, cp.quat_from_matrix(rz90), 0.5))
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(half, [[c, -c, 0], [c, c, 0], [0, 0, 1]], atol=1e-12)


def test_one_and_two_keyframes() -> None:
    one = cp.CameraPath([cp.Keyframe(look_at((3, 0, 0), (0, 0, 0)), 45.0, 0.0)], fps=24)
    assert one.frame_count == 1 and len(cp.path_cameras(one)) == 1
    two = cp.CameraPath(
        [
            cp.Keyframe(look_at((3, 0, 0), (0, 0, 0)), 45.0, 0.0),
            cp.Keyframe(look_at((0, 3, 0), (0, 0, 0)), 45.0, 1.0),
        ],
        fps=4,
    )
    mid = cp.pose_at(two, 0.5)[0]
    assert np.linalg.norm(mid[:3, 3]) < 3.0  # the straight segment between the eyes, no overshoot
    assert len(cp.path_cameras(two)) == 5


def test_round_trip_through_nerfstudios_format(tmp_path: Path) -> None:
    p = _path()
    out = cp.save_camera_path(p, tmp_path / "camera_path.json")
    data = json.loads(out.read_text())
    assert data["render_width"] == 64 and data["render_height"] == 48 and data["camera_type"] == "perspective"
    assert len(data["camera_path"]) == p.frame_count and len(data["camera_path"][0]["camera_to_world"]) == 16
    back = cp.load_camera_path(out)
    a, b = cp.path_cameras(p), cp.path_cameras(back)
    assert len(a) == len(b)
    for x, y in zip(a, b):  # the frames of the file are rendered exactly
        np.testing.assert_allclose(x.c2w, y.c2w, atol=1e-9)
        assert x.focal == pytest.approx(y.focal) and (x.width, x.height) == (y.width, y.height)
    del data["camera_path"]  # keyframes alone (column-major matrix text, TIME in properties)
    keys = cp.from_nerfstudio(data, "k.json")
    for k0, k1 in zip(p.keyframes, keys.keyframes):
        np.testing.assert_allclose(k0.c2w, k1.c2w, atol=1e-12)
        assert (k0.time, k0.fov_deg) == (k1.time, k1.fov_deg)


def _hand_written() -> dict:
    """A file as nerfstudio documents it, written by hand: two frames, 60 degrees vertical fov."""
    c2w = look_at((0.0, -3.5, 1.0), (0.0, 0.0, 0.0))
    c2w2 = look_at((3.5, 0.0, 1.0), (0.0, 0.0, 0.0))
    return {
        "camera_type": "perspective",
        "render_height": 24,
        "render_width": 32,
        "fps": 2,
        "seconds": 1,
        "camera_path": [
            {"camera_to_world": np.asarray(m).reshape(-1).tolist(), "fov": 60, "aspect": 32 / 24}
            for m in (c2w, c2w2)
        ],
    }


def test_a_hand_written_nerfstudio_file_loads_with_the_right_cameras() -> None:
    p = cp.from_nerfstudio(_hand_written(), "hand.json")
    cams = cp.path_cameras(p)
    assert len(cams) == 2 and (cams[0].width, cams[0].height) == (32, 24)
    assert cams[0].focal == pytest.approx(12 / math.tan(math.radians(30)))
    np.testing.assert_allclose(cams[1].c2w, look_at((3.5, 0.0, 1.0), (0.0, 0.0, 0.0)), atol=1e-12)


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: d["camera_path"][0].update(camera_to_world=[1.0] * 15), "16 numbers"),
        (lambda d: d["camera_path"][0].update(fov=float("nan")), "NaN"),
        (lambda d: d["camera_path"][0].update(fov=0.001), "fov"),
        (lambda d: d["camera_path"][1].update(camera_to_world=[1e30] * 16), "camera_to_world"),
        (lambda d: d.pop("render_width"), "render_width"),
        (lambda d: d.update(camera_path=[], keyframes=[]), "no camera_path frames"),
        (lambda d: d.update(render_height=10**40), "digits"),
        (lambda d: d["camera_path"][0].update(camera_to_world=[0.0] * 16), "not a camera pose"),
    ],
)
def test_malformed_files_are_one_line(tmp_path: Path, edit, says: str) -> None:
    d = _hand_written()
    edit(d)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    with pytest.raises(cp.CameraPathError, match=says) as e:
        cp.load_camera_path(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(cp.CameraPathError, match="nested deeper"):
        cp.load_camera_path(deep)


def test_headless_camera_path_video_has_the_frames_of_the_gui_export(tmp_path: Path) -> None:
    """`run_viewer.py --headless --camera-path P --video OUT` and the GUI's export (start_video) render the
    same cameras through the same renderer: the decoded videos are identical."""
    iio = pytest.importorskip("imageio.v3")
    from app.export import start_video
    from renderer.backends import get_backend
    from renderer.render import RenderOptions
    from renderer.scene import save_scene
    from renderer.synthetic import random_scene

    scene = random_scene(seed=2, density_bias=8.0)
    kilo = tmp_path / "s.kilo"
    save_scene(scene, kilo)
    path_file = tmp_path / "camera_path.json"
    path_file.write_text(json.dumps(_hand_written()))
    video = tmp_path / "headless.mp4"
    res = subprocess.run(
        [
            sys.executable,
            "run_viewer.py",
            "--scene",
            str(kilo),
            "--backend",
            "torch",
            "--headless",
            "--camera-path",
            str(path_file),
            "--video",
            str(video),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    backend = get_backend("torch")
    cams = cp.path_cameras(cp.load_camera_path(path_file))
    task = start_video(backend, backend.prepare(scene), RenderOptions(), cams, tmp_path / "gui.mp4", 2)
    task.wait(120)
    a, b = iio.imread(video), iio.imread(tmp_path / "gui.mp4")
    assert a.shape == b.shape == (2, 24, 32, 3) and np.array_equal(a, b)


def test_headless_camera_path_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"render_width": 32}')
    res = subprocess.run(
        [
            sys.executable,
            "run_viewer.py",
            "--headless",
            "--camera-path",
            str(bad),
            "--video",
            str(tmp_path / "o.mp4"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "render_height" in res.stderr and len(res.stderr.strip().splitlines()) == 1
