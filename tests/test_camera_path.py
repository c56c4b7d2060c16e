"""app/camera_path.py: interpolation through keyframes, nerfstudio's camera_path.json both ways, hostile
files, and the headless --camera-path video against the GUI export's frames."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
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


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def test_a_constant_turn_is_followed_exactly_even_with_uneven_keyframe_times() -> None:
    """Keyframes turning 30 degrees per second about z (at 0, 1 and 3 s): every angular velocity is the same,
    so the spherical Bézier is the uniform turn: 15 degrees at 0.5 s, 60 at 2 s (hand-computed)."""
    p = cp.CameraPath([cp.Keyframe(_rz(a), 40.0, t) for a, t in [(0, 0.0), (30, 1.0), (90, 3.0)]], fps=10)
    for t, deg in [(0.5, 15.0), (1.0, 30.0), (2.0, 60.0), (2.75, 82.5)]:
        np.testing.assert_allclose(cp.pose_at(p, t)[0][:3, :3], _rz(deg)[:3, :3], atol=1e-12)


def _body_rate(p: cp.CameraPath, t: float, eps: float) -> np.ndarray:
    """Angular velocity (body frame) over [t, t + eps] by finite difference."""
    r0, r1 = cp.pose_at(p, t)[0][:3, :3], cp.pose_at(p, t + eps)[0][:3, :3]
    return cp.quat_log(cp.quat_from_matrix(r0.T @ r1)) / eps


def test_rotations_are_c1_at_the_keyframes() -> None:
    """The angular velocity just before and just after each inner keyframe agrees (plain per-segment slerp
    would jump there: 60 degrees in 1 s, then 90 in 1.5 s, on another axis)."""
    p = _path()
    eps = 1e-6
    for t in (1.0, 2.5):
        before, after = _body_rate(p, t - eps, eps), _body_rate(p, t, eps)
        assert np.linalg.norm(after) > 0.1
        np.testing.assert_allclose(before, after, atol=1e-4 * np.linalg.norm(after))
    seg = [
        cp.quat_log(cp.quat_from_matrix(a.c2w[:3, :3].T @ b.c2w[:3, :3]))
        for a, b in zip(p.keyframes, p.keyframes[1:])
    ]
    assert np.linalg.norm(seg[0] / 1.0 - seg[1] / 1.5) > 0.3  # the segments' own rates differ a lot


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
    assert (
        len(data["camera_path"]) == p.frame_count == 31
        and len(data["camera_path"][0]["camera_to_world"]) == 16
    )
    assert data["seconds"] == pytest.approx(3.1)  # ns-render plays len(camera_path) / seconds = 10 fps
    back = cp.load_camera_path(out)
    a, b = cp.path_cameras(p), cp.path_cameras(back)
    assert len(a) == len(b)
    for x, y in zip(a, b):  # the frames of the file are rendered exactly
        np.testing.assert_allclose(x.c2w, y.c2w, atol=1e-9)
        assert x.focal == pytest.approx(y.focal) and (x.width, x.height) == (y.width, y.height)
    # the keyframes as nerfstudio's viewer writes them: row-major matrix, the time to the next as transition
    assert data["keyframes"][1]["matrix"] == p.keyframes[1].c2w.reshape(-1).tolist()
    assert [k["override_transition_sec"] for k in data["keyframes"][:3]] == [1.0, 1.5, 0.5]
    keys = cp.load_camera_path(out, prefer_keyframes=True)
    for k0, k1 in zip(p.keyframes, keys.keyframes, strict=True):
        np.testing.assert_allclose(k0.c2w, k1.c2w, atol=1e-12)
        assert (k0.time, k0.fov_deg) == (k1.time, k1.fov_deg)


def test_keyframes_of_both_nerfstudio_viewers_by_hand() -> None:
    """Keyframes written by hand: the viser viewer's (row-major list, transitions, a default transition,
    is_cycle) and the older three.js viewer's (column-major JSON text, TIME in properties)."""
    a, b = look_at((3.0, 0.0, 1.0), (0.0, 0.0, 0.0)), look_at((0.0, 3.0, 1.0), (0.0, 0.0, 0.0))
    viser = {
        "render_width": 32,
        "render_height": 24,
        "fps": 10,
        "default_fov": 50.0,
        "default_transition_sec": 2.0,
        "is_cycle": True,
        "keyframes": [
            {"matrix": a.reshape(-1).tolist(), "fov": 40.0, "aspect": 4 / 3},
            {
                "matrix": b.reshape(-1).tolist(),
                "aspect": 4 / 3,
                "override_transition_enabled": True,
                "override_transition_sec": 0.5,
            },
        ],
    }
    p = cp.from_nerfstudio(viser, "viser.json")
    assert [k.time for k in p.keyframes] == [0.0, 2.0, 2.5]  # a default 2 s, then its own 0.5 s, back to a
    assert [k.fov_deg for k in p.keyframes] == [40.0, 50.0, 40.0]  # no fov: the default
    np.testing.assert_allclose(p.keyframes[1].c2w, b, atol=1e-12)
    np.testing.assert_allclose(p.keyframes[2].c2w, a, atol=1e-12)
    assert p.frame_count == 26
    three = {
        "render_width": 32,
        "render_height": 24,
        "keyframes": [
            {
                "matrix": json.dumps(m.T.reshape(-1).tolist()),
                "fov": 45,
                "properties": json.dumps([["TIME", t]]),
            }
            for m, t in ((a, 0.0), (b, 1.5))
        ],
    }
    q = cp.from_nerfstudio(three, "three.json")
    assert [k.time for k in q.keyframes] == [0.0, 1.5] and q.fps == 24
    np.testing.assert_allclose(q.keyframes[1].c2w, b, atol=1e-12)


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
        (lambda d: d.update(camera_path=[], keyframes=[{"matrix": [0.0] * 15, "fov": 40}]), "16 numbers"),
        (
            lambda d: d.update(
                camera_path=[],
                fps=240,
                keyframes=[
                    {"matrix": np.eye(4).reshape(-1).tolist(), "fov": 40},
                    {"matrix": np.eye(4).reshape(-1).tolist(), "fov": 40, "properties": '[["TIME", 9e5]]'},
                ],
            ),
            "frames to render",
        ),
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


@pytest.mark.gl
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display: run under xvfb-run")
def test_the_windows_path_export_and_the_headless_video_have_the_same_frames(tmp_path: Path) -> None:
    """Keyframes added from the window's view, the path saved and exported from the window (the panel's
    Save path and Export video), then that file rendered by `run_viewer.py --headless --camera-path`: the
    decoded videos are identical (the window interpolates its keyframes, headless reads the frames)."""
    iio = pytest.importorskip("imageio.v3")
    from app.viewer import Viewer
    from renderer.backends import cpu_backend_status, get_backend
    from renderer.scene import load_scene, save_scene
    from renderer.synthetic import random_scene

    name = "cpu" if cpu_backend_status()[0] else "torch"
    kilo = tmp_path / "s.kilo"  # white: the render panel's background
    save_scene(random_scene(grid_res=(3, 2, 4), seed=3, background=(1.0, 1.0, 1.0), density_bias=10.0), kilo)
    v = Viewer(load_scene(kilo), str(kilo), get_backend(name), (160, 120), title="kilonerf-test-path")
    try:
        ed = v.path_editor
        for dx, dy in [(0, 0), (60, 10), (90, -20)]:
            v.camera.orbit_rotate(dx, dy)
            v.camera.settings.fov_y_deg += 5
            ed.add(v.camera.c2w(), v.camera.settings.fov_y_deg)
        ed.width, ed.height, ed.fps = 32, 24, 4.0
        ed.file, ed.video = str(tmp_path / "path.json"), str(tmp_path / "window.mp4")
        ed.save()
        v.export_path_video()
        task, end = v.export, time.monotonic() + 120
        while task is not None and not task.finished and time.monotonic() < end:
            v.step()
            time.sleep(0.01)
        assert task is not None and task.finished and not task.error, task and task.message
    finally:
        v.close()
    headless = tmp_path / "headless.mp4"
    cmd = [sys.executable, "run_viewer.py", "--scene", str(kilo), "--backend", name, "--headless"]
    res = subprocess.run(
        [*cmd, "--camera-path", ed.file, "--video", str(headless)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    a, b = iio.imread(ed.video), iio.imread(headless)
    assert a.shape == b.shape == (9, 24, 32, 3) and np.array_equal(a, b)
    assert len({f.tobytes() for f in a}) == 9  # the camera moves: nine different frames
