"""The viewer as a person uses it: real X events (xdotool) into a real 900×700 window, the frame loop
stepped by the test. Typing 0, 0.5 and garbage into every numeric field, holding W in orbit mode, F then
R, a click shorter than a frame, and the layout at 900 px wide."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gl,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DISPLAY"), reason="needs a display: run under xvfb-run (make test does)"
    ),
    pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool not installed"),
]

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from app import widgets  # noqa: E402
from renderer.backends import get_backend  # noqa: E402
from renderer.scene import SceneCameras  # noqa: E402
from renderer.synthetic import random_scene  # noqa: E402

TITLE = "kilonerf-person-test"
SIZE = (900, 700)


def _scene() -> Any:
    from renderer.camera import orbit_pose

    s = random_scene(grid_res=(3, 2, 4), seed=3, background=(1.0, 1.0, 1.0), density_bias=10.0, hidden=8)
    poses = np.stack([orbit_pose((0.0, 0.0, 0.0), 3.0, az, 20.0) for az in (-90.0, 0.0, 120.0)])
    s.cameras = SceneCameras(width=80, height=60, focal=70.0, c2w=poses.astype(np.float32))
    return s


@pytest.fixture(scope="module")
def v(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from app.settings import ViewerSettings
    from app.viewer import Viewer

    # remembered settings of viewers in earlier tests (panel width, ...) must not change this layout
    old = os.environ.get("KILONERF_STUDIO_SETTINGS")
    os.environ["KILONERF_STUDIO_SETTINGS"] = str(tmp_path_factory.mktemp("person") / "settings.json")

    settings = ViewerSettings(open_panels=("Scene", "Camera", "Render", "Export"))
    viewer = Viewer(
        _scene(),
        "person.kilo",
        get_backend("torch"),
        SIZE,
        settings=settings,
        title=TITLE,
        render_process=False,
    )
    yield viewer
    viewer.close()
    if old is not None:
        os.environ["KILONERF_STUDIO_SETTINGS"] = old


def _xdo(*args: str) -> None:
    subprocess.run(["xdotool", *args], timeout=10, check=True)


def _window() -> str:
    ids = subprocess.run(
        ["xdotool", "search", "--name", TITLE], capture_output=True, text=True, timeout=10
    ).stdout.split()
    assert ids, "window not found by xdotool"
    return ids[0]


def _steps(v: Any, n: int = 3) -> None:
    for _ in range(n):
        v.step()  # raises if anything escaped: the test then fails, which is the point


def _until(v: Any, cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        v.step()
    return cond()


FIELDS: dict[str, tuple[Callable[[Any], float], float, float]] = {
    "resolution": (lambda v: v.settings.render.res_scale, 0.1, 1.0),
    "target FPS": (lambda v: v.settings.render.target_fps, 2.0, 60.0),
    "eps": (lambda v: v.settings.render.ert_threshold, 1e-4, 0.2),
    "step x": (lambda v: v.settings.render.step_multiplier, 0.25, 4.0),
    "FOV (deg)": (lambda v: v.camera.settings.fov_y_deg, 10.0, 120.0),
    "fly speed": (lambda v: v.camera.settings.fly_speed, 0.05, 10.0),
    "view k": (lambda v: v.view_k, 0, 2),
    "frames": (lambda v: v.settings.export.frames, 1, 100_000),
    "fps": (lambda v: v.settings.export.fps, 1, 240),
    "elevation": (lambda v: v.settings.export.elevation, -80.0, 80.0),
    "radius (0 auto)": (lambda v: v.settings.export.radius, 0.0, 1e6),
}


def _type_into(v: Any, wid: str, label: str, text: str) -> None:
    x0, y0, x1, y1 = widgets.RECTS[label]
    _type_at(v, wid, (x0 + x1) / 2, (y0 + y1) / 2, text)


def _type_at(v: Any, wid: str, x: float, y: float, text: str) -> None:
    _xdo("mousemove", "--window", wid, str(int(x)), str(int(y)))
    _steps(v, 1)
    _xdo("keydown", "ctrl", "click", "1", "keyup", "ctrl")  # Ctrl+click: type a value into a slider
    _steps(v, 2)
    _xdo("key", "ctrl+a")
    _steps(v, 1)
    for ch in text:  # one key per frame at most, as a person types on a slow machine... and all at once too
        _xdo("type", "--delay", "0", ch)
    _steps(v, 2)
    _xdo("key", "Return")
    _steps(v, 3)


def test_typing_zero_half_and_garbage_into_every_numeric_field(v: Any) -> None:
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    _steps(v, 5)
    missing = [label for label in FIELDS if label not in widgets.RECTS]
    assert not missing, f"not drawn: {missing}"
    for label, (get, lo, hi) in FIELDS.items():
        for text in ("0", "0.5", "abc", "-1e999", "1e999", "nan"):
            _type_into(v, wid, label, text)
            value = get(v)
            assert math.isfinite(value) and lo <= value <= hi, (label, text, value)
        _xdo("key", "Escape")
        _steps(v, 2)
    assert v.settings.render.res_scale >= 0.1
    assert not [m for m in v.messages if "unexpected error" in m[1]], list(v.messages)
    assert _until(v, lambda: v.frame is not None and v.frame.complete, 30)  # still rendering


def _pair_field_centres(label: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres of the two fields of an ``input_int2`` (its item rect spans both fields and the label)."""
    import imgui

    x0, y0, x1, y1 = widgets.RECTS[label]
    fields = (x1 - x0) - imgui.calc_text_size(label).x - imgui.get_style().item_inner_spacing.x
    y = (y0 + y1) / 2
    return (x0 + fields / 4, y), (x0 + 3 * fields / 4, y)


def test_typing_into_the_size_pairs_and_the_voxel_slices(v: Any) -> None:
    """The numeric fields the first typing test cannot reach in one layout: the W x H pairs of the
    screenshot and the turntable (each half on its own) and the voxel slice sliders."""
    from app.panels import MAX_SIDE
    from app.settings import ViewerSettings
    from app.viewer import Viewer

    settings = ViewerSettings(open_panels=("Overlays", "Export"))
    settings.overlays.voxels = True
    pv = Viewer(
        _scene(),
        "pairs.kilo",
        get_backend("torch"),
        SIZE,
        settings=settings,
        title="kilonerf-pairs",
        render_process=False,
    )
    try:
        wid = subprocess.run(
            ["xdotool", "search", "--name", "kilonerf-pairs"], capture_output=True, text=True, timeout=10
        ).stdout.split()[0]
        _xdo("windowfocus", "--sync", wid)
        _steps(pv, 5)
        o, e = pv.settings.overlays, pv.settings.export
        slices = {"slice from": lambda: o.voxel_lo, "slice to": lambda: o.voxel_hi}
        pairs = {
            "shot WxH": (lambda: e.shot_width, lambda: e.shot_height),
            "video WxH": (lambda: e.video_width, lambda: e.video_height),
        }
        for text in ("0", "0.5", "abc", "-1e999", "1e999", "nan"):
            for label, get in slices.items():
                _type_into(pv, wid, label, text)
                assert 0.0 <= get() <= 1.0 and o.voxel_lo <= o.voxel_hi, (label, text, get())
                if text == "0.5":  # the typing reached the field
                    assert get() == pytest.approx(0.5), (label, get())
            for label, getters in pairs.items():
                for (x, y), get in zip(_pair_field_centres(label), getters, strict=True):
                    _type_at(pv, wid, x, y, text)
                    assert isinstance(get(), int) and 16 <= get() <= MAX_SIDE, (label, text, get())
                    if text == "0":  # the typing reached the field, and a typed 0 became the minimum
                        assert get() == 16, (label, get())
        assert not [m for m in pv.messages if "unexpected error" in m[1]], list(pv.messages)
        assert _until(pv, lambda: pv.frame is not None and pv.frame.complete, 30)  # still rendering
    finally:
        pv.close()


def test_holding_w_in_orbit_mode_moves_the_camera_and_its_centre(v: Any) -> None:
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    _xdo("mousemove", "--window", wid, "700", "350")  # over the image, not the panel
    v.camera.mode = "orbit"
    v.reset_view()
    _steps(v, 2)
    eye, target, fwd = v.camera.eye.copy(), v.camera.target.copy(), v.camera.forward
    _xdo("keydown", "w")
    time.sleep(0.3)
    _steps(v, 5)
    _xdo("keyup", "w")
    _steps(v, 2)
    moved = v.camera.eye - eye
    assert v.camera.mode == "orbit" and float(moved @ fwd) > 0.01  # forward
    np.testing.assert_allclose(v.camera.target - target, moved, atol=1e-9)  # the centre came along


def test_f_then_r_switches_mode_and_resets_even_after_a_click_on_the_panel(v: Any) -> None:
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    x0, y0, x1, y1 = widgets.RECTS["resolution"]
    _xdo("mousemove", "--window", wid, str(int(x0 + 5)), str(int((y0 + y1) / 2)), "click", "1")
    _steps(v, 2)
    _xdo("mousemove", "--window", wid, "700", "350")
    v.camera.mode = "orbit"
    _xdo("key", "Tab", "Tab")  # Tab no longer moves ImGui's focus into a field
    _steps(v, 2)
    v.camera.orbit_rotate(200, 0)
    start = v.camera.c2w().copy()
    _xdo("key", "f")
    _steps(v, 2)
    assert v.camera.mode == "fly"
    _xdo("key", "r")
    _steps(v, 2)
    assert not np.allclose(v.camera.c2w(), start)  # reset
    v.camera.mode = "orbit"


def test_a_click_shorter_than_a_frame_reaches_the_panel(v: Any) -> None:
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    _steps(v, 3)
    r = v.settings.render
    before = r.ess
    x0, y0, x1, y1 = widgets.RECTS["resolution"]  # ESS is the checkbox two rows below, at the left
    ess_y = int(y1 + 2 * (y1 - y0) + 2 * 4 - (y1 - y0) / 2)
    # press and release between two UI frames (the UI thread is not stepping while xdotool clicks)
    _xdo("mousemove", "--window", wid, str(int(x0 + 8)), str(ess_y), "click", "1")
    _steps(v, 3)
    assert r.ess != before, "the short click was lost"
    _xdo("click", "1")
    _steps(v, 3)
    assert r.ess == before


def test_the_whole_image_is_visible_at_900_px_wide(v: Any, tmp_path: Path) -> None:
    from PIL import Image

    v.settings.show_ui = True
    v.settings.render.res_scale = 1.0
    v.reset_view()
    want = v.render_camera()

    def shown_is_current() -> bool:
        f = v.frame
        still = f is not None and f.complete and tuple(f.size) == (want.width, want.height)
        return still and np.array_equal(f.request.camera.c2w, want.c2w)

    assert _until(v, shown_is_current, 60)
    _steps(v, 3)
    Image.fromarray(v.read_frame()).save(tmp_path / "window.png")  # for a person to look at
    x, y, w, h = v.viewport()
    assert x >= 240 and x + w == SIZE[0] and h == SIZE[1]  # beside the panel, not under it
    cam = v.render_camera()
    assert (cam.width, cam.height) == (w, h)  # the render has the viewport's aspect
    shown = v.read_frame()[:, x:]  # the window right of the panel
    expected = get_backend("torch").render(v.scene, cam, v.render_options()).image.numpy()
    diff = np.abs(shown.astype(int) - np.round(expected * 255).astype(int))
    assert np.percentile(diff, 99) <= 2, f"the image right of the panel is not the whole render: {tmp_path}"


def _drag(v: Any, wid: str, x: int, y: int, dx: int) -> None:
    _xdo("mousemove", "--window", wid, str(x), str(y))
    _steps(v, 2)
    _xdo("mousedown", "1")
    _steps(v, 2)
    for k in range(1, 6):
        _xdo("mousemove", "--window", wid, str(x + dx * k // 5), str(y))
        _steps(v, 1)
    _xdo("mouseup", "1")
    _steps(v, 3)


def test_dragging_the_panels_edge_resizes_it_and_the_image_follows(v: Any) -> None:
    """The right edge (grabbed just inside or just outside it) resizes the panel, the image viewport
    starts where the panel ends, and the drag does not turn the camera."""
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    v.settings.show_ui = True
    _steps(v, 3)
    for grab, dx in ((2, 100), (-2, -100)):  # outside, then inside the edge
        w0, c0 = v.panel_width, v.camera.c2w().copy()
        _drag(v, wid, int(w0) + grab, 350, dx)
        assert v.panel_width == pytest.approx(w0 + dx, abs=3), (grab, w0, v.panel_width)
        np.testing.assert_array_equal(v.camera.c2w(), c0)  # a drag on the edge is the panel's
        x, _, vw, _ = v.viewport()
        assert x == round(v.panel_width) and x + vw == SIZE[0]


def test_clicking_a_training_camera_goes_there_and_highlights_it(v: Any) -> None:
    from app import overlay_geometry as og

    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    v.settings.overlays.frusta = True
    v.settings.show_ui = True
    v.camera.settings.fov_y_deg = 60.0
    v.camera.look_at(np.array([0.0, -9.0, 4.0]), v.scene_center())  # an overview: at no camera

    def overview_shown() -> bool:  # not a refine of the view before, finishing late
        f = v.frame
        return f is not None and f.complete and np.allclose(f.request.camera.c2w, v.camera.c2w())

    assert _until(v, overview_shown, 60)
    _steps(v, 2)
    assert v.current_camera() is None and "frusta-current" not in v.overlays.layers
    vx, _, vw, vh = v.viewport()
    fc = v.frame.request.camera
    cams = v.scene.cameras
    k = 1
    mvp = og.projection_matrix(vw, vh, fc.focal * vh / fc.height) @ og.view_matrix(fc.c2w)
    px, py = og.project_points(mvp, cams.c2w[k : k + 1, :3, 3], vw, vh)[0]  # camera k's eye on screen
    assert 0 <= px < vw and 0 <= py < vh, "camera 1 is not in view"
    _xdo("mousemove", "--window", wid, str(int(round(vx + px))), str(int(round(py))), "click", "1")
    _steps(v, 3)
    assert v.view_k == k and v.current_camera() == k
    np.testing.assert_allclose(v.camera.c2w(), cams.c2w[k], atol=1e-5)
    v.update_overlays()
    assert "frusta-current" in v.overlays.layers  # drawn highlighted
    v.settings.overlays.frusta = False


def test_the_scene_browser_opens_and_esc_closes_it(v: Any) -> None:
    wid = _window()
    _xdo("windowfocus", "--sync", wid)
    v.browse("scene", str(Path.cwd()))
    _steps(v, 3)
    assert v.browsers["scene"].is_open and v.dialogs_open()
    _xdo("mousemove", "--window", wid, "700", "350", "key", "Escape")
    _steps(v, 3)
    assert not v.browsers["scene"].is_open and not v.show_help


def test_settings_are_remembered_and_a_corrupt_file_is_one_line(tmp_path: Path) -> None:
    import json

    from app.user_settings import settings_path
    from app.viewer import Viewer

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{" * 200)  # corrupt: deep and unfinished
    second = Viewer(
        _scene(), "second.kilo", get_backend("torch"), (400, 300), title="second", render_process=False
    )
    try:
        assert any("settings ignored" in m[1] and m[2] == "error" for m in second.messages)
        second.camera.settings.fly_speed = 2.5
        second.step()
    finally:
        second.close()
    saved = json.loads(path.read_text())
    assert saved["fly_speed"] == 2.5 and saved["window_size"] == [400, 300]
    third = Viewer(
        _scene(), "third.kilo", get_backend("torch"), (400, 300), title="third", render_process=False
    )
    try:
        assert third.camera.settings.fly_speed == 2.5  # remembered
    finally:
        third.close()


def test_compare_mode_shows_truth_render_error_with_evals_psnr(blender_lego: Path, tmp_path: Path) -> None:
    """The bundled scene names its dataset: Load, pick train view 3, compare: the side-by-side fills the
    viewport and its PSNR is the one `python -m trainer eval` gives for that view."""
    from PIL import Image

    from app.viewer import Viewer
    from renderer.scene import load_scene
    from trainer.eval import evaluate_scene

    kilo = Path(__file__).resolve().parents[1] / "assets" / "lego.kilo"
    scene = load_scene(kilo)
    # this machine's copy, at 200x200 (the scene was trained at 800x800: a quarter keeps the test quick)
    scene.provenance = {**scene.provenance, "dataset": str(blender_lego), "downscale": 4}
    cv = Viewer(scene, str(kilo), get_backend("torch"), (900, 500), title="compare", render_process=False)
    try:
        cv.settings.open_panels = ("Compare",)
        assert cv.cmp.root == str(blender_lego)
        cv.compare_load()
        assert _until(cv, lambda: cv.cmp.gt is not None and not cv.cmp.busy, 60), list(cv.messages)
        cv.compare_show("train", 3)
        assert _until(cv, lambda: cv.cmp.shown == ("train", 3) and not cv.cmp.busy, 120), list(cv.messages)
        cv.cmp.enabled = True
        _steps(cv, 3)
        side = cv.cmp.result.side_by_side
        assert side.shape == (200, 600, 3)
        x, _, vw, vh = cv.viewport()
        shot = cv.read_frame()
        Image.fromarray(shot).save(tmp_path / "compare.png")
        region = shot[:, x:]
        assert region.std() > 20  # the three pictures, not the background
        theirs = evaluate_scene(kilo, blender_lego, split="train", downscale=4, limit=None)
        assert cv.cmp.result.psnr == pytest.approx(theirs["per_view"][3]["psnr"], abs=1e-9)
    finally:
        cv.close()


def test_camera_path_editor_plays_and_exports(v: Any, tmp_path: Path) -> None:
    """Keyframes from two views, the panel drawn with them, the preview moves the camera, the export
    writes the path's frames."""
    v.settings.open_panels = ("Camera path",)
    v.settings.show_ui = True
    ed = v.path_editor
    ed.keyframes.clear()
    v.reset_view()
    ed.add(v.camera.c2w(), v.camera.settings.fov_y_deg)
    v.camera.orbit_rotate(300, 0)
    ed.add(v.camera.c2w(), v.camera.settings.fov_y_deg)
    ed.width, ed.height, ed.fps, ed.video = 32, 24, 4, str(tmp_path / "path.mp4")
    _steps(v, 3)  # the panel with two keyframe rows
    ed.play()
    start = v.camera.c2w().copy()
    v.step(dt=0.5)
    mid = v.camera.c2w().copy()
    assert not np.allclose(mid, start) and ed.playing
    v.step(dt=1.0)
    np.testing.assert_allclose(v.camera.c2w(), ed.keyframes[-1].c2w, atol=1e-9)
    assert not ed.playing
    v.export_path_video()
    assert _until(v, lambda: v.export is not None and v.export.finished, 120)
    assert (tmp_path / "path.mp4").stat().st_size > 0 and v.export.done == 5  # 1 s at 4 fps: 5 frames
    assert not [m for m in v.messages if "unexpected error" in m[1]]
