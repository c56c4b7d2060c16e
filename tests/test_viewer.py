"""The viewer window under a display (make test runs pytest inside xvfb-run; Mesa llvmpipe through EGL).

One small window is shared by the tests in this module (opening one costs about a second); each test
puts the viewer state it needs back in place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gl,
    pytest.mark.skipif(
        not os.environ.get("DISPLAY"), reason="needs a display: run under xvfb-run (make test does)"
    ),
]

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import glfw  # noqa: E402

from app.presenter import to_uint8  # noqa: E402
from renderer.backends import get_backend  # noqa: E402
from renderer.scene import SceneCameras, load_scene, save_scene  # noqa: E402
from renderer.synthetic import random_scene  # noqa: E402

W, H = 64, 48


def _scene_with_cameras(seed: int, hidden: int = 8) -> object:
    from renderer.camera import orbit_pose

    s = random_scene(
        grid_res=(3, 2, 4), seed=seed, background=(1.0, 1.0, 1.0), density_bias=10.0, hidden=hidden
    )
    poses = np.stack([orbit_pose((0.0, 0.0, 0.0), 3.0, az, 20.0) for az in (-90.0, 0.0, 120.0)])
    s.cameras = SceneCameras(width=80, height=60, focal=70.0, c2w=poses.astype(np.float32))
    return s


@pytest.fixture(scope="module")
def scene_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scenes")
    paths = {"a": d / "a.kilo", "b": d / "b.kilo", "c16": d / "c16.kilo", "d16": d / "d16.kilo"}
    save_scene(_scene_with_cameras(3), paths["a"])
    save_scene(_scene_with_cameras(5), paths["b"])
    save_scene(_scene_with_cameras(6, hidden=16), paths["c16"])  # hidden widths the native kernels have
    save_scene(_scene_with_cameras(7, hidden=16), paths["d16"])
    return paths


@pytest.fixture(scope="module")
def viewer(scene_paths: dict[str, Path]) -> Iterator[object]:
    from app.viewer import Viewer

    v = Viewer(
        load_scene(scene_paths["a"]),
        str(scene_paths["a"]),
        get_backend("torch"),
        (W, H),
        title="kilonerf-test-viewer",
    )
    yield v
    v.close()


@pytest.fixture
def v(viewer: object, scene_paths: dict[str, Path]) -> object:
    """The shared viewer, reset: scene a, panels hidden, overlays off, orbit mode, view 0."""
    from app.settings import ViewerSettings

    vw = viewer
    if vw.scene_name != str(scene_paths["a"]):  # type: ignore[attr-defined]
        vw.set_scene(load_scene(scene_paths["a"]), str(scene_paths["a"]))  # type: ignore[attr-defined]
    vw.settings = ViewerSettings(show_ui=False)  # type: ignore[attr-defined]
    vw.settings.render.backend = "torch"  # type: ignore[attr-defined]
    vw.settings.render.ert_threshold = vw.scene.ert_threshold  # type: ignore[attr-defined]
    vw.camera.mode = "orbit"  # type: ignore[attr-defined]
    vw.held.clear()  # type: ignore[attr-defined]
    vw.reset_view()  # type: ignore[attr-defined]
    return vw


def test_window_shows_the_renderers_frame(v: object) -> None:
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]
    shown = v.read_frame()  # type: ignore[attr-defined]
    cam = v.render_camera()  # type: ignore[attr-defined]
    assert (cam.width, cam.height) == (W, H)
    ref = get_backend("torch").render(v.scene, cam, v.render_options())  # type: ignore[attr-defined]
    expected = to_uint8(ref.image)
    assert shown.shape == expected.shape
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    assert expected.std() > 5  # a real image, not a blank frame


def test_panels_draw_over_the_frame(v: object) -> None:
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]
    plain = v.read_frame()  # type: ignore[attr-defined]
    v.settings.show_ui = True  # type: ignore[attr-defined]
    for _ in range(3):
        v.step()  # type: ignore[attr-defined]
    with_ui = v.read_frame()  # type: ignore[attr-defined]
    assert (np.abs(with_ui.astype(int) - plain.astype(int)).sum(axis=2) > 30).mean() > 0.2


def test_keys_move_the_camera_in_fly_mode_frame_rate_independently(v: object) -> None:
    key = v.handle_key  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_F, 0, glfw.PRESS, 0)  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_F, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    assert v.camera.mode == "fly"  # type: ignore[attr-defined]
    speed = v.camera.settings.fly_speed  # type: ignore[attr-defined]
    eye0, fwd = v.camera.eye.copy(), v.camera.forward  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_W, 0, glfw.PRESS, 0)  # type: ignore[attr-defined]
    for _ in range(4):
        v.step(dt=0.05)  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_W, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    v.step(dt=0.05)  # type: ignore[attr-defined]
    np.testing.assert_allclose(v.camera.eye, eye0 + fwd * speed * 0.2, atol=1e-9)  # type: ignore[attr-defined]
    # Shift + Q for 0.1 s: down along world Z at fast_factor × speed
    eye1 = v.camera.eye.copy()  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_LEFT_SHIFT, 0, glfw.PRESS, glfw.MOD_SHIFT)  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_Q, 0, glfw.PRESS, glfw.MOD_SHIFT)  # type: ignore[attr-defined]
    v.step(dt=0.1)  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_Q, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    key(v.window, glfw.KEY_LEFT_SHIFT, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    fast = v.camera.settings.fast_factor  # type: ignore[attr-defined]
    np.testing.assert_allclose(v.camera.eye - eye1, [0, 0, -speed * fast * 0.1], atol=1e-9)  # type: ignore[attr-defined]
    # mouse look: drag 40 px right turns the view right by 40 × look_deg_per_px
    yaw0 = v.camera.yaw  # type: ignore[attr-defined]
    _drag(v, glfw.MOUSE_BUTTON_LEFT, (30, 20), (70, 20))
    assert v.camera.yaw == pytest.approx(yaw0 - math.radians(40 * v.camera.settings.look_deg_per_px))  # type: ignore[attr-defined]


def _drag(v: object, button: int, start: tuple[float, float], end: tuple[float, float]) -> None:
    v.handle_cursor(v.window, *start)  # type: ignore[attr-defined]
    v.handle_mouse_button(v.window, button, glfw.PRESS, 0)  # type: ignore[attr-defined]
    v.handle_cursor(v.window, *end)  # type: ignore[attr-defined]
    v.handle_mouse_button(v.window, button, glfw.RELEASE, 0)  # type: ignore[attr-defined]


def test_mouse_and_keys_in_orbit_mode(v: object) -> None:
    c = v.camera  # type: ignore[attr-defined]
    target, dist = c.target.copy(), c.distance
    _drag(v, glfw.MOUSE_BUTTON_LEFT, (10, 10), (40, 10))  # rotate 30 px × 0.3° = 9°
    np.testing.assert_allclose(c.target, target, atol=1e-9)
    assert np.linalg.norm(c.eye - target) == pytest.approx(dist)
    v.handle_scroll(v.window, 0.0, 1.0)  # type: ignore[attr-defined]
    assert c.distance == pytest.approx(dist * c.settings.zoom_per_notch)
    yaw = c.yaw
    v.handle_key(v.window, glfw.KEY_LEFT, 0, glfw.PRESS, 0)  # type: ignore[attr-defined]
    v.step(dt=0.5)  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_LEFT, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    assert c.yaw == pytest.approx(yaw + math.radians(45.0))  # 90°/s for 0.5 s
    _drag(v, glfw.MOUSE_BUTTON_RIGHT, (10, 10), (10, 30))  # pan: eye and target move together
    assert np.linalg.norm(c.target - target) > 0
    assert c.distance == pytest.approx(dist * c.settings.zoom_per_notch)


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool not installed")
def test_real_x11_events_reach_the_viewer(v: object) -> None:
    wid = subprocess.run(
        ["xdotool", "search", "--name", "kilonerf-test-viewer"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    assert wid, "window not found by xdotool"
    subprocess.run(["xdotool", "windowfocus", "--sync", wid[0]], timeout=10, check=False)
    yaw0 = v.camera.yaw  # type: ignore[attr-defined]
    subprocess.run(
        [
            "xdotool",
            "mousemove",
            "--window",
            wid[0],
            "20",
            "20",
            "mousedown",
            "1",
            "mousemove",
            "--window",
            wid[0],
            "50",
            "20",
            "mouseup",
            "1",
        ],
        timeout=10,
        check=True,
    )
    end = time.monotonic() + 5
    while v.camera.yaw == yaw0 and time.monotonic() < end:  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
    assert v.camera.yaw < yaw0  # type: ignore[attr-defined]  # dragged right: camera circles left


def test_ess_and_ert_toggles_change_the_renderers_stats(v: object) -> None:
    def stats() -> dict[str, float]:
        assert v.wait_full_frame(60)  # type: ignore[attr-defined]
        return dict(v.frame.stats)  # type: ignore[attr-defined]

    base = stats()
    v.settings.render.ess = False  # type: ignore[attr-defined]
    no_ess = stats()
    v.settings.render.ess = True  # type: ignore[attr-defined]
    v.settings.render.ert = False  # type: ignore[attr-defined]
    no_ert = stats()
    assert no_ess["samples_evaluated"] > base["samples_evaluated"]
    assert no_ert["rays_terminated_early"] == 0 < base["rays_terminated_early"]
    assert no_ert["samples_evaluated"] > base["samples_evaluated"]


def test_training_view_selector_and_pose_copy_paste(v: object) -> None:
    cams = v.scene.cameras  # type: ignore[attr-defined]
    v.set_view(2)  # type: ignore[attr-defined]
    np.testing.assert_allclose(v.camera.c2w(), cams.c2w[2], atol=1e-6)  # type: ignore[attr-defined]
    fov = math.degrees(2 * math.atan(0.5 * cams.height / cams.focal))
    assert v.camera.settings.fov_y_deg == pytest.approx(fov)  # type: ignore[attr-defined]
    text = v.pose_json()  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_C, 0, glfw.PRESS, glfw.MOD_CONTROL)  # type: ignore[attr-defined]
    assert json.loads(glfw.get_clipboard_string(None).decode()) == json.loads(text)  # type: ignore[attr-defined]
    v.set_view(0)  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_V, 0, glfw.PRESS, glfw.MOD_CONTROL)  # type: ignore[attr-defined]
    np.testing.assert_allclose(v.camera.c2w(), cams.c2w[2], atol=1e-6)  # type: ignore[attr-defined]
    assert not v.paste_pose("{not json")  # type: ignore[attr-defined]
    assert "not a camera JSON" in v.messages[-1][1]  # type: ignore[attr-defined]


def test_pasting_a_deep_or_overflowing_pose_shows_one_red_line(v: object) -> None:
    """Ctrl+V with camera JSON from outside: refused in one red status line, the view unchanged."""
    good = json.loads(v.pose_json())  # type: ignore[attr-defined]
    bad = [
        "[" * 5000 + "]" * 5000,  # used to raise RecursionError out of the key handler
        json.dumps({**good, "focal": 1}).replace('"focal": 1', '"focal": ' + "9" * 400),  # OverflowError
        json.dumps({**good, "c2w": [[1e300] * 4] * 4}),
        "\x00\x01 not text",
        "",
    ]
    before = v.camera.c2w()  # type: ignore[attr-defined]
    for text in bad:
        glfw.set_clipboard_string(None, text)  # type: ignore[arg-type]
        n = len(v.messages)  # type: ignore[attr-defined]
        v.handle_key(v.window, glfw.KEY_V, 0, glfw.PRESS, glfw.MOD_CONTROL)  # type: ignore[attr-defined]
        v.handle_key(v.window, glfw.KEY_V, 0, glfw.RELEASE, glfw.MOD_CONTROL)  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        _, msg, level = v.messages[-1]  # type: ignore[attr-defined]
        assert len(v.messages) == min(n + 1, v.messages.maxlen)  # type: ignore[attr-defined]
        assert (
            level == "error" and msg.startswith("paste: not a camera JSON (clipboard: ") and "\n" not in msg
        )
        np.testing.assert_array_equal(v.camera.c2w(), before)  # type: ignore[attr-defined]
    assert not v.paste_pose(b"\xff\xfe")  # type: ignore[attr-defined]  # not UTF-8
    assert v.paste_pose(json.dumps(good))  # type: ignore[attr-defined]
    assert not v.should_close()  # type: ignore[attr-defined]


def test_malformed_progress_lines_never_close_the_window(v: object, tmp_path: Path) -> None:
    """Bad lines in a running job's progress.jsonl (and already in its work folder when Train is pressed):
    one red line each, the good events still shown, the viewer keeps stepping with the panels drawn."""
    from app.jobs import JobConfig, TrainingJob

    v.settings.show_ui = True  # type: ignore[attr-defined]
    t = v.settings.train  # type: ignore[attr-defined]
    t.data, t.out, t.preset, t.stage, t.auto_reload = "unused", str(tmp_path / "o.kilo"), "tiny", "", False
    work = tmp_path / "o.kilo.work"
    work.mkdir()
    prog = work / "progress.jsonl"
    prog.write_text('{"event":"progress","stage":"teacher","step":"abc","total":4}\n')  # before Train
    script = tmp_path / "job.py"
    script.write_text(
        "import json, sys, time\n"
        f"p = {str(prog)!r}\n"
        "def w(b):\n"
        "    with open(p, 'ab') as f: f.write(b + b'\\n')\n"
        'w(b\'{"event":"stage_start","stage":"teacher"}\')\n'
        'for bad in (b\'{"event":"progress","stage":"teacher","step":1,"total":[5]}\',\n'
        '            b\'{"event":"progress","stage":"teacher","step":1e400,"total":4}\',\n'
        "            b'[' * 100000, bytes(range(10)) + bytes(range(11, 256))):\n"
        "    w(bad); time.sleep(0.1)\n"
        "w(json.dumps({'event': 'progress', 'stage': 'teacher', 'step': 3, 'total': 4, 'loss': 0.1,\n"
        "              'psnr': 20.0, 'elapsed': 1.0, 'eta': 0.3}).encode())\n"
        "time.sleep(1.0)\n"
    )
    cfg = JobConfig(data=t.data, out=t.out, preset=t.preset, stage=t.stage)
    v.job = TrainingJob(cfg, command=[sys.executable, str(script)])  # type: ignore[attr-defined]
    try:
        v.start_training()  # type: ignore[attr-defined]  # used to raise from TrainingJob.start()
        end = time.monotonic() + 3.0  # the window used to close within 1.4 s
        while time.monotonic() < end:
            v.step()  # type: ignore[attr-defined]
            assert not v.should_close()  # type: ignore[attr-defined]
            _draw_training_panel(v)  # the panel shows the job's numbers (its header may be closed)
            time.sleep(0.02)
        v.job.wait(20)  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        errors = [m for _, m, level in v.messages if level == "error"]  # type: ignore[attr-defined]
        lines = [m for m in errors if m.startswith(f"training: {prog}:")]
        assert [m.split(":")[2] for m in lines] == ["1", "3", "4", "5", "6"], errors
        assert all("\n" not in m and len(m) < 600 for m in errors)
        st = v.job.stages["teacher"]  # type: ignore[attr-defined]
        assert (st.step, st.total, st.loss) == (3, 4, 0.1)
        assert v.job.state.value == "done"  # type: ignore[attr-defined]
    finally:
        v.job = None  # type: ignore[attr-defined]


def _draw_training_panel(v: object) -> None:
    """One ImGui frame with only the training panel (built, not drawn to GL)."""
    import imgui

    from app.panels import _training_panel

    imgui.new_frame()
    imgui.begin("training-test")
    _training_panel(v)  # type: ignore[arg-type]
    imgui.end()
    imgui.render()


def test_opening_a_symlink_loop_scene_shows_one_red_line(v: object, tmp_path: Path) -> None:
    name = v.scene_name  # type: ignore[attr-defined]
    loop = tmp_path / "loop.kilo"
    loop.symlink_to(loop)
    v.open_scene(str(loop))  # type: ignore[attr-defined]
    v.loader.wait(30)  # type: ignore[attr-defined]
    v.step()  # type: ignore[attr-defined]
    _, msg, level = v.messages[-1]  # type: ignore[attr-defined]
    assert level == "error" and str(loop) in msg and "symbolic links" in msg and "\n" not in msg
    assert v.scene_name == name  # type: ignore[attr-defined]


def test_missing_and_corrupt_scenes_are_reported_and_the_viewer_keeps_running(
    v: object, tmp_path: Path
) -> None:
    name = v.scene_name  # type: ignore[attr-defined]
    bad = tmp_path / "corrupt.kilo"
    bad.write_bytes(b"PK\x03\x04 this is not a kilo file")
    for path in (tmp_path / "missing.kilo", bad):
        v.open_scene(str(path))  # type: ignore[attr-defined]
        v.loader.wait(30)  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        msg = v.messages[-1]  # type: ignore[attr-defined]
        assert msg[2] == "error" and str(path) in msg[1] and "\n" not in msg[1]
        assert v.scene_name == name  # type: ignore[attr-defined]
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]  # still rendering the old scene


def test_job_scene_events_hot_reload(v: object, scene_paths: dict[str, Path], tmp_path: Path) -> None:
    from app.jobs import JobConfig, TrainingJob

    script = tmp_path / "fake.py"
    work = tmp_path / "w"
    script.write_text(
        "import json, sys, time\n"
        f"open({str(work / 'progress.jsonl')!r}, 'a').write(json.dumps("
        f"{{'event': 'scene', 'stage': 'distill', 'path': {str(scene_paths['b'])!r}, 'time': 0}}) + '\\n')\n"
    )
    v.job = TrainingJob(
        JobConfig(out=str(tmp_path / "o.kilo"), workdir=str(work)),  # type: ignore[attr-defined]
        command=[sys.executable, str(script)],
    )
    v.job.start()  # type: ignore[attr-defined]
    end = time.monotonic() + 30
    while v.scene_name != str(scene_paths["b"]) and time.monotonic() < end:  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert v.scene_name == str(scene_paths["b"])  # type: ignore[attr-defined]
    v.job = None  # type: ignore[attr-defined]


def test_f12_screenshot_matches_a_headless_render_of_its_camera(v: object, tmp_path: Path) -> None:
    from PIL import Image

    from app.cli import main

    v.settings.export.folder = str(tmp_path / "exports")  # type: ignore[attr-defined]
    v.settings.export.shot_width, v.settings.export.shot_height = 50, 36  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_F12, 0, glfw.PRESS, 0)  # type: ignore[attr-defined]
    assert v.export is not None and v.export.wait(60) and not v.export.error, v.export.message  # type: ignore[attr-defined]
    pngs = list((tmp_path / "exports").glob("screenshot-*.png"))
    assert len(pngs) == 1
    shot = np.asarray(Image.open(pngs[0]).convert("RGB"))
    assert shot.shape == (36, 50, 3)
    cam_json = pngs[0].with_suffix(".json")
    again = tmp_path / "again.png"
    scene_file = tmp_path / "scene.kilo"
    save_scene(v.scene, scene_file)  # type: ignore[attr-defined]
    assert (
        main(
            ["--scene", str(scene_file), "--headless", "--screenshot", str(again), "--camera", str(cam_json)]
            + ["--backend", v.settings.render.backend]  # type: ignore[attr-defined]  # the viewer's renderer
        )
        == 0
    )
    np.testing.assert_array_equal(np.asarray(Image.open(again).convert("RGB")), shot)


def test_f11_saves_the_window_as_drawn(v: object, tmp_path: Path) -> None:
    from PIL import Image

    v.settings.export.folder = str(tmp_path / "exports")  # type: ignore[attr-defined]
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_F11, 0, glfw.PRESS, 0)  # type: ignore[attr-defined]
    v.handle_key(v.window, glfw.KEY_F11, 0, glfw.RELEASE, 0)  # type: ignore[attr-defined]
    end = time.monotonic() + 10
    while not list((tmp_path / "exports").glob("window-*.png")) and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.2)  # renamed into place when complete
    (png,) = (tmp_path / "exports").glob("window-*.png")
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), v.read_frame())  # type: ignore[attr-defined]


def test_pbo_upload_path_shows_the_buffer(v: object) -> None:
    ctx = v.ctx  # type: ignore[attr-defined]
    p = v.presenter  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(H, W, 4), dtype=np.uint8)
    pbo = p.pixel_buffer(W, H)
    pbo.write(rgba.tobytes())
    fbo = ctx.framebuffer(color_attachments=[ctx.texture((W, H), 4)])
    fbo.use()
    p.upload_pbo(pbo, W, H)
    p.draw((0, 0, W, H))
    got = np.frombuffer(fbo.read(components=3, alignment=1), np.uint8).reshape(H, W, 3)[::-1]
    np.testing.assert_array_equal(got, rgba[:, :, :3])
    fbo.release()
    pbo.release()


def test_box_overlay_lands_on_projected_corners(v: object) -> None:
    from app import overlay_geometry as og

    v.settings.render.background = (0.0, 0.0, 0.0)  # type: ignore[attr-defined]
    v.settings.overlays.box = True  # type: ignore[attr-defined]
    v.settings.overlays.depth_aware = False  # type: ignore[attr-defined]
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]
    img = v.read_frame().astype(int)  # type: ignore[attr-defined]
    s = v.scene  # type: ignore[attr-defined]
    cam = v.render_camera()  # type: ignore[attr-defined]
    mvp = og.projection_matrix(W, H, cam.focal) @ og.view_matrix(cam.c2w)
    lines = og.box_lines(s.bbox_min, s.bbox_max)
    mids = og.project_points(mvp, 0.5 * (lines[0::2] + lines[1::2]), W, H)
    hits = 0
    for x, y in mids:
        xi, yi = int(x), int(y)
        if 1 <= xi < W - 1 and 1 <= yi < H - 1:
            patch = img[yi - 1 : yi + 2, xi - 1 : xi + 2]
            # the box is orange (1.0, 0.6, 0.0): red clearly above blue somewhere in the 3x3 patch
            hits += bool(((patch[..., 0] - patch[..., 2]) > 100).any())
    assert hits >= 3


@pytest.mark.slow
def test_training_panel_runs_tiny_preset_and_hot_loads_the_result(
    v: object, blender_lego: Path, tmp_path: Path
) -> None:
    """The real trainer: `tiny` preset end to end from the training panel's API, result loaded live."""
    t = v.settings.train  # type: ignore[attr-defined]
    out = tmp_path / "tiny.kilo"
    t.data, t.preset, t.out, t.stage, t.auto_reload = str(blender_lego), "tiny", str(out), "", True
    v.start_training()  # type: ignore[attr-defined]
    job = v.job  # type: ignore[attr-defined]
    end = time.monotonic() + 1200  # tiny takes minutes of CPU on a shared 2-core machine
    while (job.running or v.loader.loading) and time.monotonic() < end:
        v.step()  # type: ignore[attr-defined]
        time.sleep(0.25)  # leave the CPU to the trainer
    for _ in range(20):  # let the last hot reload land
        v.step()  # type: ignore[attr-defined]
        v.loader.wait(30)  # type: ignore[attr-defined]
        if v.scene_name == str(out):  # type: ignore[attr-defined]
            break
    assert job.state.value == "done", f"{job.message}; log: {list(job.log_tail)[-5:]}"
    assert all(st.status == "done" for st in job.stages.values()), job.stages
    assert any(p.loss is not None for p in job.history)
    assert out.exists()
    assert Path(v.scene_name).resolve() == out.resolve()  # type: ignore[attr-defined]
    assert v.scene.num_networks > 0  # type: ignore[attr-defined]
    assert v.wait_full_frame(120)  # type: ignore[attr-defined]  # and it renders
    v.job = None  # type: ignore[attr-defined]


def test_bench_moves_the_camera_and_reports_the_breakdown(v: object) -> None:
    from app.bench import run_bench

    yaw = v.camera.yaw  # type: ignore[attr-defined]
    res = run_bench(v, seconds=1.0, deg_per_s=90.0, warmup=0.2)
    assert v.camera.yaw < yaw - math.radians(60)  # type: ignore[attr-defined]  # ≈ 108° in 1.2 s
    assert res.ui_frames > 0 and res.shown_frames > 0
    assert len(res.frame_ms) == res.ui_frames and len(res.render_ms) == res.shown_frames
    text = res.report()
    assert "rendered FPS" in text and "upload ms" in text and "UI (ImGui) ms" in text


def test_resize_renders_at_the_new_size(v: object) -> None:
    glfw.set_window_size(v.window, 72, 40)  # type: ignore[attr-defined]
    try:
        end = time.monotonic() + 10
        while glfw.get_framebuffer_size(v.window) != (72, 40) and time.monotonic() < end:  # type: ignore[attr-defined]
            v.step()  # type: ignore[attr-defined]
        assert v.wait_full_frame(60)  # type: ignore[attr-defined]
        assert v.read_frame().shape == (40, 72, 3)  # type: ignore[attr-defined]
        assert v.frame.image.shape == (40, 72, 3)  # type: ignore[attr-defined]
        cam = v.render_camera()  # type: ignore[attr-defined]
        assert cam.focal == pytest.approx(v.camera.focal(40))  # type: ignore[attr-defined]  # same vertical FOV
    finally:
        glfw.set_window_size(v.window, W, H)  # type: ignore[attr-defined]
        end = time.monotonic() + 10
        while glfw.get_framebuffer_size(v.window) != (W, H) and time.monotonic() < end:  # type: ignore[attr-defined]
            v.step()  # type: ignore[attr-defined]


class _HostPixelBufferBackend:
    """The CUDA backend's pixel-buffer interface, served by the torch renderer through the interop class's
    host path (renderer.cuda.interop.CudaGLPixelBuffer with prefer="host"; no GPU needed)."""

    name = "cuda-test"

    def __init__(self) -> None:
        self.torch = get_backend("torch")
        self.calls = 0

    def render(self, scene: object, camera: object, options: object = None) -> object:
        return self.torch.render(scene, camera, options)

    def pixel_buffer(self, ctx: object, width: int, height: int) -> object:
        from renderer.cuda.interop import CudaGLPixelBuffer

        return CudaGLPixelBuffer(ctx, width, height, prefer="host")

    def render_to_pixel_buffer(
        self, scene: object, camera: object, target: object, options: object = None
    ) -> object:
        self.calls += 1
        res = self.torch.render(scene, camera, options)
        target.write_host(res.image)  # type: ignore[attr-defined]
        return res.stats


def test_pixel_buffer_backend_frames_reach_the_window(v: object) -> None:
    backend = _HostPixelBufferBackend()
    old = v.worker.backend  # type: ignore[attr-defined]
    v.worker.set_backend(backend, v.scene)  # type: ignore[attr-defined]
    try:
        assert v.pbo_path_active()  # type: ignore[attr-defined]
        for _ in range(3):
            v.step()  # type: ignore[attr-defined]
        assert backend.calls == 1  # rendered once for the unchanged view, on the GL thread
        shown = v.read_frame()  # type: ignore[attr-defined]
        ref = to_uint8(get_backend("torch").render(v.scene, v.render_camera(), v.render_options()).image)  # type: ignore[attr-defined]
        assert np.abs(shown.astype(int) - ref.astype(int)).max() <= 1
        assert v.frame.stats["rays"] == W * H  # type: ignore[attr-defined]
        v.camera.zoom(1)  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        assert backend.calls == 2
    finally:
        v.worker.set_backend(old, old.prepare(v.scene))  # type: ignore[attr-defined]
        v.release_pixel_buffer()  # type: ignore[attr-defined]
        v._submitted = None  # type: ignore[attr-defined]


def test_switching_backends_cpu_and_torch_with_hot_reload(
    v: object, scene_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The native cpu backend renders on the worker thread (no child process) with its own profile; a hot
    reload prepares the new scene for it; switching back to torch restores the render process."""
    import renderer.backends as B
    from app.backend_profiles import PROFILES
    from app.render_process import ProcessPoolBackend

    ok, why = B.cpu_backend_status()
    if not ok:
        pytest.skip(f"native cpu backend unavailable: {why}")
    from renderer.native.scene import NativeScene

    v.set_scene(load_scene(scene_paths["c16"]), str(scene_paths["c16"]))  # type: ignore[attr-defined]
    try:
        v.switch_backend("cpu")  # type: ignore[attr-defined]
        backend = v.worker.backend  # type: ignore[attr-defined]
        assert backend.name == "cpu" and not isinstance(backend, ProcessPoolBackend)
        assert isinstance(v.worker._scene, NativeScene)  # type: ignore[attr-defined]
        assert v.settings.render.backend == "cpu"  # type: ignore[attr-defined]
        assert v.settings.render.target_fps == PROFILES["cpu"].target_fps  # type: ignore[attr-defined]
        assert v.dynres.min_pixels == PROFILES["cpu"].min_pixels  # type: ignore[attr-defined]
        assert v.wait_full_frame(60)  # type: ignore[attr-defined]
        ref = B.get_backend("cpu").render(v.scene, v.render_camera(), v.render_options())  # type: ignore[attr-defined]
        assert np.abs(v.read_frame().astype(int) - to_uint8(ref.image).astype(int)).max() <= 1  # type: ignore[attr-defined]
        v.open_scene(str(scene_paths["d16"]))  # type: ignore[attr-defined]
        v.loader.wait(30)  # type: ignore[attr-defined]
        v.step()  # type: ignore[attr-defined]
        assert v.scene_name == str(scene_paths["d16"]) and isinstance(v.worker._scene, NativeScene)  # type: ignore[attr-defined]
        assert v.wait_full_frame(60)  # type: ignore[attr-defined]
        monkeypatch.setattr(B, "cuda_backend_status", lambda: (False, "no GPU (test)"))
        v.switch_backend("cuda")  # type: ignore[attr-defined]
        assert v.worker.backend is backend and v.messages[-1][2] == "error"  # type: ignore[attr-defined]
    finally:
        v.switch_backend("torch")  # type: ignore[attr-defined]
    assert isinstance(v.worker.backend, ProcessPoolBackend)  # type: ignore[attr-defined]
    assert v.settings.render.target_fps == PROFILES["torch"].target_fps  # type: ignore[attr-defined]
    assert v.wait_full_frame(60)  # type: ignore[attr-defined]


class _FaultyCuda:
    """A CUDA backend whose GPU faults on every frame (as after an illegal address: the context is dead)."""

    name = "cuda"

    def __init__(self, pbo: bool) -> None:
        self.calls = 0
        self.closed = False
        if pbo:  # the interop path: frames rendered on the GL thread into a pixel buffer
            self.pixel_buffer = self._pixel_buffer
            self.render_to_pixel_buffer = self._render_to_pixel_buffer

    def prepare(self, scene: object) -> object:
        return scene

    def render(self, *args: object) -> object:
        self.calls += 1
        raise RuntimeError("cuLaunchKernel failed: an illegal memory access was encountered")

    def _pixel_buffer(self, ctx: object, w: int, h: int) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(
            mode="host",
            reason="pycuda was built without GL",
            release=lambda: None,
            buffer=SimpleNamespace(release=lambda: None),
        )

    def _render_to_pixel_buffer(self, *args: object) -> object:
        return self.render()

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("pbo", [False, True], ids=["render-thread", "pixel-buffer"])
def test_a_gpu_fault_switches_to_the_torch_renderer_with_one_line(
    scene_paths: dict[str, Path], pbo: bool
) -> None:
    """Issue 28: a GPU fault must not take the viewer down; it renders on with torch and says so once."""
    from app.viewer import Viewer

    faulty = _FaultyCuda(pbo)
    fv = Viewer(
        load_scene(scene_paths["a"]),
        "a.kilo",
        faulty,
        (W, H),
        title="kilonerf-gpu-fault",
        render_process=False,
    )
    try:
        assert fv.wait_full_frame(timeout=60)  # the frame shown comes from the torch renderer
        assert faulty.calls >= 1 and faulty.closed
        assert fv.worker.backend.name == "torch" and fv.settings.render.backend == "torch"
        errors = [m for m in fv.messages if "CUDA renderer failed" in m[1]]
        assert len(errors) == 1 and "illegal memory access" in errors[0][1] and "torch" in errors[0][1]
        assert "\n" not in errors[0][1]
        assert not [m for m in fv.messages if "unexpected error" in m[1]]
        said = [m[1] for m in fv.messages if "reach GL" in m[1]]  # the transfer, in one line
        assert said == (["CUDA frames reach GL by host copy: pycuda was built without GL"] if pbo else [])
    finally:
        fv.close()
