"""Camera controllers, overlay projection/geometry, dynamic resolution and banded rendering (no GL needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app import overlay_geometry as og
from app.camera_control import CameraController
from app.dynres import DynamicResolution
from app.render_worker import band_camera, combine_stats, union_touched
from renderer.camera import Camera, look_at
from renderer.camera import camera_directions as _camera_directions
from renderer.frame import RenderOptions


def camera_directions(cam: Camera) -> np.ndarray:
    """The renderer's unit ray directions [H·W, 3] as float64 numpy (torch or numpy upstream)."""
    d = _camera_directions(cam)
    return np.asarray(d.detach().cpu().numpy() if hasattr(d, "detach") else d, dtype=np.float64)


def _cam() -> CameraController:
    c = CameraController()
    c.look_at(np.array([0.0, -4.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    return c


def test_c2w_matches_renderer_look_at() -> None:
    c = CameraController()
    eye, tgt = np.array([1.0, -3.0, 2.0]), np.array([0.2, 0.1, -0.3])
    c.look_at(eye, tgt)
    np.testing.assert_allclose(c.c2w(), look_at(eye, tgt), atol=1e-12)
    np.testing.assert_allclose(c.target, tgt, atol=1e-12)


def test_orbit_drag_right_circles_left_keeping_distance_to_target() -> None:
    c = _cam()
    c.settings.rotate_deg_per_px = 0.5
    c.orbit_rotate(180.0, 0.0)  # 90 degrees
    # started at -Y looking at +Y; a 90° turn to the camera's left puts the eye on -X
    np.testing.assert_allclose(c.eye, [-4.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(c.target, [0.0, 0.0, 0.0], atol=1e-9)


def test_orbit_drag_down_raises_camera() -> None:
    c = _cam()
    c.settings.rotate_deg_per_px = 0.5
    c.orbit_rotate(0.0, 60.0)  # 30 degrees
    np.testing.assert_allclose(c.eye, [0.0, -4 * math.cos(math.pi / 6), 4 * math.sin(math.pi / 6)], atol=1e-9)
    c.orbit_rotate(0.0, 1000.0)  # pitch clamps at 89°, never flips
    assert c.eye[2] == pytest.approx(4 * math.sin(math.radians(89)))


def test_pan_moves_target_with_cursor_and_zoom_scales_distance() -> None:
    c = _cam()
    h = 500
    f = c.focal(h)
    c.pan(100.0, 0.0, h)  # drag right by 100 px: the scene follows, so the camera moves left
    np.testing.assert_allclose(c.eye, [-100 * 4 / f, -4.0, 0.0], atol=1e-9)
    c.pan(0.0, 50.0, h)  # drag down: camera moves up
    assert c.eye[2] == pytest.approx(50 * 4 / f)
    tgt = c.target.copy()
    c.zoom(2)
    assert c.distance == pytest.approx(4 * 0.81)
    np.testing.assert_allclose(c.target, tgt, atol=1e-12)


def test_fly_motion_is_frame_rate_independent() -> None:
    a, b = _cam(), _cam()
    a.fly((0, 0, 1), 1.0)
    for _ in range(60):
        b.fly((0, 0, 1), 1 / 60)
    np.testing.assert_allclose(a.eye, [0.0, -3.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(a.eye, b.eye, atol=1e-12)
    c = _cam()
    c.fly((1, 0, 0), 0.5, fast=True)  # strafe right at 4x speed
    np.testing.assert_allclose(c.eye, [2.0, -4.0, 0.0], atol=1e-12)
    c.fly((0, 1, 0), 0.25)  # E: world up
    assert c.eye[2] == pytest.approx(0.25)


def test_mouse_look_turns_about_the_eye() -> None:
    c = _cam()
    c.settings.look_deg_per_px = 1.0
    c.look(90.0, 0.0)
    np.testing.assert_allclose(c.eye, [0.0, -4.0, 0.0])
    np.testing.assert_allclose(c.forward, [1.0, 0.0, 0.0], atol=1e-12)  # looked right
    c.look(0.0, 30.0)
    assert c.pitch == pytest.approx(math.radians(-30))  # mouse down → look down


def test_exact_pose_kept_until_moved() -> None:
    c = _cam()
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = q, [0.5, -3.0, 1.0]
    c.set_c2w(m, pivot=np.zeros(3))
    np.testing.assert_array_equal(c.c2w(), m)  # a training view with roll is reproduced exactly
    np.testing.assert_allclose(c.forward, -q[:, 2] / np.linalg.norm(q[:, 2]), atol=1e-9)
    c.zoom(1)
    assert not np.array_equal(c.c2w(), m)


def test_projection_puts_world_points_on_the_renderers_pixels() -> None:
    cam = Camera(
        width=37, height=23, focal=30.0, c2w=look_at((1.0, -3.0, 1.5), (0.0, 0.2, 0.1)), cx=17.2, cy=12.9
    )
    dirs = camera_directions(cam).reshape(cam.height, cam.width, 3)
    mvp = og.projection_matrix(cam.width, cam.height, cam.focal, cam.cx, cam.cy) @ og.view_matrix(cam.c2w)
    pix = [(0, 0), (36, 22), (5, 17), (20, 3)]
    pts = np.array([cam.c2w[:3, 3] + 2.5 * dirs[py, px] for px, py in pix])
    got = og.project_points(mvp, pts, cam.width, cam.height)
    np.testing.assert_allclose(got, np.array(pix) + 0.5, atol=1e-6)


def test_overlay_geometry_counts_and_positions() -> None:
    lines = og.box_lines((0, 0, 0), (1, 2, 3))
    assert lines.shape == (24, 3)
    lengths = sorted(np.linalg.norm(lines[0::2] - lines[1::2], axis=1).round(6))
    assert lengths == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    g = og.grid_lines((0, 0, 0), (1, 1, 1), (2, 3, 1))
    assert g.shape == (2 * (4 * 2 + 3 * 2 + 3 * 4), 3)
    occ = np.zeros((4, 4, 4), bool)
    occ[1, 2, 0] = occ[3, 3, 3] = True
    pts = og.occupied_voxel_centers(occ, (0, 0, 0), (4, 8, 4))
    np.testing.assert_allclose(pts, [[1.5, 5.0, 0.5], [3.5, 7.0, 3.5]])
    only_top = og.occupied_voxel_centers(occ, (0, 0, 0), (4, 8, 4), axis=2, lo=0.5, hi=1.0)
    np.testing.assert_allclose(only_top, [[3.5, 7.0, 3.5]])
    fr = og.frustum_lines(np.eye(4), 100, 50, 50.0, 2.0)
    assert fr.shape == (16, 3)
    np.testing.assert_allclose(fr[1], [-2.0, 1.0, -2.0])  # top-left image corner at depth 2


def test_band_camera_rays_equal_rows_of_the_full_camera() -> None:
    cam = Camera(width=16, height=11, focal=12.0, c2w=look_at((0.0, -3.0, 1.0), (0.0, 0.0, 0.0)))
    full = camera_directions(cam).reshape(11, 16, 3)
    band = band_camera(cam, 4, 9)
    np.testing.assert_allclose(camera_directions(band).reshape(5, 16, 3), full[4:9], atol=1e-12)


def test_combine_stats_sums_counts_and_maxes_networks() -> None:
    s = combine_stats(
        [{"rays": 10, "networks_touched": 5, "passes": 2}, {"rays": 6, "networks_touched": 7, "passes": 1}]
    )
    assert s == {"rays": 16, "networks_touched": 7, "passes": 2, "bands": 2, "networks_exact": 0}
    union = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], bool)  # 5 and 7 networks sharing 3: 9 in the frame
    s = combine_stats([{"networks_touched": 5}, {"networks_touched": 7}], union)
    assert s["networks_touched"] == 9 and s["networks_exact"] == 1


def test_union_touched_is_the_or_of_the_bands_and_none_once_a_band_has_no_mask() -> None:
    from types import SimpleNamespace

    a = SimpleNamespace(touched=torch.tensor([True, False, False]))
    b = SimpleNamespace(touched=np.array([False, False, True]))
    acc = union_touched(None, a, first=True)
    acc = union_touched(acc, b, first=False)
    assert acc is not None and acc.tolist() == [True, False, True]
    assert a.touched.tolist() == [True, False, False]  # the band's own mask is not changed
    assert union_touched(acc, SimpleNamespace(touched=None), first=False) is None
    assert union_touched(None, a, first=False) is None  # an earlier band had none: stays unknown


@pytest.mark.parametrize("backend_name", ["torch", "cpu"])
def test_a_frame_in_bands_reports_the_same_networks_as_one_call(backend_name: str) -> None:
    """Issue 29: the GUI showed 77 networks for the last band against the CLI's 541 for the frame. The
    worker's banded frame now reports the union of its bands: the one-call render's count."""
    from renderer.backends import cpu_backend_status, get_backend
    from renderer.camera import Camera, look_at
    from renderer.synthetic import random_scene

    if backend_name == "cpu" and not cpu_backend_status()[0]:
        pytest.skip(cpu_backend_status()[1])
    backend = get_backend(backend_name)
    scene = random_scene(grid_res=(4, 4, 4), occupancy_factor=(4, 4, 4), seed=3)
    cam = Camera(width=40, height=36, focal=40.0, c2w=look_at((2.2, -1.6, 1.2), (0.0, 0.0, 0.0)))
    whole = backend.render(scene, cam, RenderOptions())
    assert whole.touched is not None and int(whole.touched.sum()) == whole.stats.networks_touched
    parts, acc = [], None
    for i, (y0, y1) in enumerate(((0, 12), (12, 24), (24, 36))):
        res = backend.render(scene, band_camera(cam, y0, y1), RenderOptions())
        parts.append(res.stats.to_dict())
        acc = union_touched(acc, res, first=i == 0)
    s = combine_stats(parts, acc)
    assert max(p["networks_touched"] for p in parts) < whole.stats.networks_touched  # bands differ
    assert s["networks_touched"] == whole.stats.networks_touched and s["networks_exact"] == 1


def test_dynamic_resolution_meets_budget() -> None:
    d = DynamicResolution(target_fps=10.0)
    d.observe(ms=400.0, pixels=400 * 400)  # 0.0025 ms/px → 100 ms buys 40000 px = 200²
    s = d.moving_scale(800, 800)
    assert s == pytest.approx(0.25, abs=1 / 64)
    assert d.predicted_ms(int((800 * s) ** 2)) <= 100.0 + 1e-9
    d.observe(ms=1.0, pixels=1_000_000)  # much faster now: the estimate moves half way each frame
    assert d.ms_per_px == pytest.approx(0.5 * 0.0025 + 0.5 * 1e-6)
    for _ in range(20):
        d.observe(ms=1.0, pixels=1_000_000)
    assert d.moving_scale(800, 800) == 1.0  # clamps at full resolution


def test_parallel_render_threads_never_publish_an_older_frame_after_a_newer_one() -> None:
    import threading
    import time
    from types import SimpleNamespace

    from app.render_worker import FrameRequest, RenderWorker

    class SlowOddBackend:
        """Renders serial-tagged images; odd frames are slow, so later even frames overtake them."""

        name = "fake"
        parallel_safe = True

        def __init__(self) -> None:
            self.active = 0
            self.max_active = 0
            self.lock = threading.Lock()

        def render(self, scene: object, camera: Camera, options: object) -> object:
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            time.sleep(0.15 if int(camera.focal) % 2 else 0.02)
            with self.lock:
                self.active -= 1
            img = np.full((camera.height, camera.width, 3), camera.focal / 100.0, np.float32)
            return SimpleNamespace(image=img, depth=None, stats={"rays": camera.width * camera.height})

    backend = SlowOddBackend()
    worker = RenderWorker(backend, threads=2)  # type: ignore[arg-type]
    worker.set_scene(object())
    shown: list[int] = []
    try:
        for k in range(1, 9):
            cam = Camera(width=4, height=3, focal=float(k), c2w=np.eye(4))
            worker.submit(FrameRequest(cam, None))
            time.sleep(0.05)
            if (r := worker.poll()) is not None:
                shown.append(r.request.serial)
        assert worker.wait_idle(10)
        if (r := worker.poll()) is not None:
            shown.append(r.request.serial)
    finally:
        worker.stop()
    assert backend.max_active == 2  # two frames really rendered at once
    assert shown == sorted(shown) and len(set(shown)) == len(shown)  # never back in time
    assert shown[-1] == 8  # the newest request is what stays on screen


def test_every_shortcut_is_in_the_docs() -> None:
    """input.SHORTCUT_LIST is the one list of keys: docs/viewer.md's table names each of them."""
    from pathlib import Path

    from app.input import SHORTCUT_LIST

    doc = (Path(__file__).resolve().parents[1] / "docs" / "viewer.md").read_text()
    missing = [s.label for s in SHORTCUT_LIST if f"`{s.label}`" not in doc]
    assert not missing, missing


def test_no_viewer_method_resolves_to_a_mixin_stub() -> None:
    """The Viewer is assembled from mixins that declare what they use as stubs raising NotImplementedError;
    every public name must resolve to a real implementation (a stub earlier in the MRO would shadow it)."""
    import inspect

    from app.viewer import Viewer

    stubs = []
    for name in dir(Viewer):
        fn = getattr(Viewer, name)
        if name.startswith("__") or not inspect.isfunction(fn):
            continue
        body = [ln.strip() for ln in inspect.getsource(fn).splitlines()[1:] if ln.strip()]
        body = [ln for ln in body if not ln.startswith(('"""', "'''")) and not ln.endswith('"""')]
        if body == ["raise NotImplementedError"]:
            stubs.append(name)
    assert not stubs, stubs


def test_resize_linear_is_gl_style_bilinear_not_nearest_blocks() -> None:
    """The rows a refine has not reached show the moving frame as the window drew it (linear filter)."""
    import torch

    from app.presenter import resize_linear

    rng = np.random.default_rng(0)
    small = rng.random((13, 21, 3), dtype=np.float32)
    big = resize_linear(small, 80, 128)
    t = torch.from_numpy(small).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(t, size=(80, 128), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(big, want[0].permute(1, 2, 0).numpy(), atol=1e-5)
    np.testing.assert_array_equal(resize_linear(small, 13, 21), small)  # same size: the pixels as they are
    step = np.zeros((1, 2, 3), np.float32)
    step[0, 1] = 1.0
    row = resize_linear(step, 1, 8)[0, :, 0]
    assert np.all(np.diff(row) >= 0) and 0 < row[3] < 1 and 0 < row[4] < 1  # a ramp, not two blocks
    assert resize_linear(np.full((2, 3, 3), 0.25, np.float32), 50, 70).std() == 0


def test_a_depth_view_refined_in_bands_is_the_one_call_picture() -> None:
    """Each band of the depth view was shaded over its own depth range (stripes); the worker re-shades the
    rows done over their common range, so the finished frame equals the one-call render's."""
    from app.render_worker import reshade_depth_rows
    from renderer.backends import get_backend
    from renderer.synthetic import random_scene

    backend = get_backend("torch")
    scene = random_scene(grid_res=(4, 4, 4), occupancy_factor=(4, 4, 4), seed=5)
    cam = Camera(width=30, height=24, focal=30.0, c2w=look_at((2.2, -1.6, 1.2), (0.0, 0.0, 0.0)))
    opts = RenderOptions(output="depth", background=(0.2, 0.4, 0.6))
    whole = backend.render(scene, cam, opts)
    image, depth = np.zeros((24, 30, 3), np.float32), np.zeros((24, 30), np.float32)
    for y0 in range(0, 24, 8):
        res = backend.render(scene, band_camera(cam, y0, y0 + 8), opts)
        image[y0 : y0 + 8], depth[y0 : y0 + 8] = res.image.numpy(), res.depth.numpy()
    assert not np.allclose(image, whole.image.numpy(), atol=1e-4)  # the bands' own ranges: stripes
    reshade_depth_rows(image, depth, 24)
    np.testing.assert_allclose(image, whole.image.numpy(), atol=1e-5)
    np.testing.assert_allclose(depth, whole.depth.numpy(), atol=1e-5)


def test_depth_range_and_legend_text() -> None:
    from app.panels import depth_legend_text
    from app.render_worker import FrameRequest, FrameResult

    depth = np.array([[0.0, 2.5, 3.0], [4.25, 0.0, 9.0]], np.float32)
    req = FrameRequest(camera=None, options=RenderOptions(output="depth"), serial=1)
    assert FrameResult(None, depth, {}, 1.0, req, False, rows_done=1).depth_range == (2.5, 3.0)
    assert FrameResult(None, depth, {}, 1.0, req, True, rows_done=2).depth_range == (2.5, 9.0)
    assert FrameResult(None, np.zeros((2, 3), np.float32), {}, 1.0, req, True, 2).depth_range is None
    assert (
        depth_legend_text((2.5, 9.0))
        == "near 2.500 (white) .. far 9.000 (dark grey), scene units along the ray"
    )
    assert "nothing hit" in depth_legend_text(None)
