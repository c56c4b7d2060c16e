"""Headless export: screenshot PNG + camera JSON, turntable mp4, and one-line user errors (no GL needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.export import render_to_uint8, turntable_cameras
from renderer.backends import get_backend
from renderer.camera import load_camera_json
from renderer.render import RenderOptions
from renderer.scene import save_scene
from renderer.synthetic import random_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random scene saved as .kilo."""
    path = tmp_path_factory.mktemp("scene") / "small.kilo"
    save_scene(random_scene(grid_res=(3, 2, 4), seed=3), path)
    return path


def test_headless_screenshot_writes_png_and_camera_that_rerenders_it(
    scene_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shot.png"
    assert main(["--scene", str(scene_file), "--headless", "--screenshot", str(out), "--size", "40x30"]) == 0
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (30, 40, 3)
    cam = load_camera_json(out.with_suffix(".json"))
    assert (cam.width, cam.height) == (40, 30)
    from renderer.scene import load_scene

    again = render_to_uint8(
        get_backend("auto"), load_scene(scene_file), cam, RenderOptions()
    )  # --backend's default
    np.testing.assert_array_equal(png, again)
    assert png.std() > 0  # the scene is visible, not a flat background
    # the camera JSON fed back through --camera reproduces the PNG byte for byte
    out2 = tmp_path / "again.png"
    assert (
        main(
            [
                "--scene",
                str(scene_file),
                "--headless",
                "--screenshot",
                str(out2),
                "--camera",
                str(out.with_suffix(".json")),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out2).convert("RGB")), png)


def test_headless_turntable_has_requested_frames_and_size(scene_file: Path, tmp_path: Path) -> None:
    import imageio.v2 as iio

    out = tmp_path / "turn.mp4"
    assert (
        main(
            [
                "--scene",
                str(scene_file),
                "--headless",
                "--turntable",
                str(out),
                "--frames",
                "5",
                "--fps",
                "10",
                "--size",
                "32x24",
            ]
        )
        == 0
    )
    reader = iio.get_reader(str(out), format="FFMPEG")
    frames = [f for f in reader]
    meta = reader.get_meta_data()
    reader.close()
    assert len(frames) == 5
    assert frames[0].shape == (24, 32, 3)
    assert meta["fps"] == pytest.approx(10.0)
    assert not list(tmp_path.glob(".*.tmp*"))  # the temp file was renamed, nothing left behind


def test_turntable_cameras_circle_the_box_centre() -> None:
    scene = random_scene(grid_res=(2, 2, 2), seed=1)
    cams = turntable_cameras(scene, 8, (20, 10), elevation_deg=30.0, radius=3.0)
    center = 0.5 * (np.asarray(scene.bbox_min) + np.asarray(scene.bbox_max))
    eyes = np.array([c.c2w[:3, 3] for c in cams])
    np.testing.assert_allclose(np.linalg.norm(eyes - center, axis=1), 3.0, atol=1e-9)
    np.testing.assert_allclose(eyes[:, 2] - center[2], 3.0 * np.sin(np.radians(30)), atol=1e-9)
    az = np.degrees(np.arctan2(eyes[:, 1] - center[1], eyes[:, 0] - center[0]))
    np.testing.assert_allclose(np.diff(np.unwrap(np.radians(az))), np.radians(45.0), atol=1e-9)
    fwd = -np.array([c.c2w[:3, 2] for c in cams])
    np.testing.assert_allclose(np.einsum("ij,ij->i", fwd, (center - eyes) / 3.0), 1.0, atol=1e-9)


def _run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_viewer.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run the CLI in-process: (exit code, stderr lines)."""
    capsys.readouterr()
    rc = main(args)
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scene", "/nonexistent/x.kilo", "--headless", "--screenshot", "o.png"], "/nonexistent/x.kilo"),
        (["--headless"], "--screenshot"),
        (["--headless", "--turntable", "o.mp4", "--size", "31x20"], "even"),
        (["--headless", "--screenshot", "o.png", "--size", "big"], "--size"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, lines = _cli([a.replace("o.", str(tmp_path / "o.")) for a in args], capsys)
    assert rc == 2
    assert len(lines) == 1 and needle in lines[0]


def test_corrupt_scene_and_camera_files_are_one_line_errors(
    scene_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.kilo"
    bad.write_bytes(b"\x00" * 5)
    r = _run_cli(
        ["--scene", str(bad), "--headless", "--screenshot", str(tmp_path / "o.png")]
    )  # the real script
    assert r.returncode == 2 and str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"width": 10}))
    rc, lines = _cli(
        [
            "--scene",
            str(scene_file),
            "--headless",
            "--screenshot",
            str(tmp_path / "o.png"),
            "--camera",
            str(cam),
        ],
        capsys,
    )
    assert rc == 2 and len(lines) == 1 and str(cam) in lines[0]


def test_no_display_points_to_headless(
    scene_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc, lines = _cli(["--scene", str(scene_file)], capsys)
    assert rc == 2
    assert len(lines) == 1 and "--headless" in lines[0] and "display" in lines[0]


def test_turntable_task_reports_progress_and_cancel_leaves_no_file(scene_file: Path, tmp_path: Path) -> None:
    from app.export import start_turntable
    from renderer.scene import load_scene

    scene = load_scene(scene_file)
    backend = get_backend("torch")
    out = tmp_path / "cancelled.mp4"
    task = start_turntable(
        backend, backend.prepare(scene), scene, RenderOptions(), out, frames=400, fps=10, size=(16, 12)
    )
    while task.done < 1 and not task.finished:
        task.wait(0.01)
    task.cancel()
    assert task.wait(60)
    assert task.message == "turntable cancelled" and not task.error
    assert 1 <= task.done < 400
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    done = start_turntable(
        backend, backend.prepare(scene), scene, RenderOptions(), out, frames=2, fps=10, size=(16, 12)
    )
    assert done.wait(60) and not done.error, done.message
    assert done.fraction == 1.0 and out.exists()


def test_the_headless_export_runs_with_the_windows_thread_setup() -> None:
    """Issue 29: 24 turntable frames at 240x240 took 97 s headless against 12.4 s from the window: the
    headless run rendered the torch backend on two OpenMP threads spinning on a shared 2-core machine, the
    window in a child process on one. A fresh run_viewer.py process (OMP_WAIT_POLICY unset) now sleeps idle
    OpenMP workers and gives each backend the thread count the window's export uses."""
    code = (
        "import os\n"
        "from app.cli import get_backend_once\n"
        "from app.backend_profiles import PROFILES, resolve_threads\n"
        "import torch\n"
        "from renderer.backends import cpu_backend_status\n"
        "get_backend_once('torch')\n"
        "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads(), PROFILES['torch'].moving_threads)\n"
        "if cpu_backend_status()[0]:\n"
        "    from renderer.native import library\n"
        "    get_backend_once('cpu')\n"
        "    print(library.threads() == resolve_threads(PROFILES['cpu'].moving_threads))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0] == "PASSIVE 1 1"  # the window's render process: one torch thread
    assert lines[1] in ("True", "")  # the native cpu backend: every core, as in the window


def test_a_path_video_of_odd_size_is_one_message_and_no_file(tmp_path: Path) -> None:
    """The camera-path editor's size is typed freely: an odd one is refused by the export task (one line in
    the panel) before any frame is rendered."""
    from app.export import start_video
    from renderer.camera import Camera, look_at

    class NoRender:
        def render(self, *a: object) -> None:
            raise AssertionError("nothing should be rendered")

    cam = Camera(width=33, height=24, focal=30.0, c2w=look_at((3.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    task = start_video(NoRender(), None, RenderOptions(), [cam], tmp_path / "odd.mp4", 24.0)
    assert task.wait(30) and task.error
    assert "even" in task.message and "33x24" in task.message and "\n" not in task.message
    assert list(tmp_path.iterdir()) == []


def test_a_gif_export_holds_every_frame_loops_and_takes_odd_sizes(tmp_path: Path) -> None:
    """``--video OUT.gif`` / a .gif path in the panel: an animated GIF (READMEs and issues show it inline),
    any size, each frame close to the render (a 256-colour palette per frame), written atomically."""
    from PIL import Image

    from app.export import check_video_size, write_video
    from renderer.atomic import new_file_mode

    rng = np.random.default_rng(0)
    frames = [np.full((15, 21, 3), 40 * i, np.uint8) for i in range(4)]
    frames[2][5:9, 3:17] = rng.integers(0, 255, (4, 14, 3), dtype=np.uint8)
    seen: list[int] = []
    out = write_video(iter(frames), tmp_path / "p.gif", 12.5, 4, lambda i, n: seen.append(i))
    assert seen == [1, 2, 3, 4] and [p.name for p in tmp_path.iterdir()] == ["p.gif"]
    assert out.stat().st_mode & 0o777 == new_file_mode()  # not the temp file's 0600
    im = Image.open(out)
    assert im.n_frames == 4 and im.info["loop"] == 0 and im.info["duration"] == 80  # 1/12.5 s
    for i, want in enumerate(frames):
        im.seek(i)
        got = np.asarray(im.convert("RGB"), np.int16)
        assert got.shape == (15, 21, 3) and np.abs(got - want).mean() < 3, i
    check_video_size((21, 15), "x.gif")  # odd sizes are fine for a GIF, not for H.264
    with pytest.raises(ValueError, match="even"):
        check_video_size((21, 15), "x.mp4")
