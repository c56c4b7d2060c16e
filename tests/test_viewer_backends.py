"""The viewer's backends without a window: the per-backend profiles, the render worker driving the native
``cpu`` backend on its own thread, and the command line's backend choice (no GL needed, no timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import renderer.backends as B
from app.backend_control import wrap_backend
from app.backend_profiles import PROFILES, profile_for, set_render_threads
from app.cli import build_parser, main
from app.dynres import DynamicResolution
from app.presenter import to_uint8
from app.render_worker import FrameRequest, RenderWorker
from app.settings import ViewerSettings
from renderer.camera import Camera, orbit_pose
from renderer.render import RenderOptions
from renderer.scene import save_scene
from renderer.synthetic import random_scene

CPU_OK, CPU_WHY = B.cpu_backend_status()
needs_cpu = pytest.mark.skipif(not CPU_OK, reason=f"native cpu backend unavailable: {CPU_WHY}")


def _scene(seed: int = 3) -> object:
    """A small random scene with a hidden width the native kernels have (16; the default 8 is rendered by
    the torch renderer even on the cpu backend)."""
    return random_scene(
        grid_res=(3, 2, 4), seed=seed, background=(1.0, 1.0, 1.0), density_bias=10.0, hidden=16
    )


def _camera(w: int = 40, h: int = 30) -> Camera:
    return Camera(width=w, height=h, focal=1.2 * w, c2w=orbit_pose((0.0, 0.0, 0.0), 3.0, 30.0, 20.0))


@pytest.fixture
def cpu_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """renderer.backends sees no native library (and says so once more)."""
    monkeypatch.setattr(
        B, "cpu_backend_status", lambda: (False, "the native CPU renderer is not built (test)")
    )
    monkeypatch.setattr(B, "cuda_backend_status", lambda: (False, "no GPU (test)"))
    monkeypatch.setattr(B, "_announced", set())


def test_backend_choices_are_the_renderers() -> None:
    action = next(a for a in build_parser()._actions if a.dest == "backend")
    assert tuple(action.choices) == B.BACKENDS and action.default == "auto"  # type: ignore[arg-type]
    assert set(B.BACKENDS) - {"auto"} <= set(PROFILES)


def test_profiles_floor_the_moving_size_per_backend() -> None:
    d = DynamicResolution()
    d.configure(PROFILES["cpu"])
    assert d.target_fps == PROFILES["cpu"].target_fps
    d.observe(ms=1000.0, pixels=1000)  # hopelessly slow: the floor holds
    s = d.moving_scale(1280, 800)
    assert round(1280 * s) * round(800 * s) >= 320 * 200
    assert d.moving_scale(200, 100) == 1.0  # a window smaller than the floor renders at full size
    d.configure(PROFILES["torch"])  # the torch renderer keeps its old limits, and a fresh estimate
    assert d.ms_per_px is None and d.min_pixels == 0
    d.observe(ms=1000.0, pixels=1000)
    assert d.moving_scale(1280, 800) == pytest.approx(0.08)
    assert profile_for(object()) is PROFILES["torch"]  # unknown backends get the cautious row


@needs_cpu
def test_cpu_backend_renders_in_process_and_takes_the_thread_count() -> None:
    from renderer.native import library

    cpu = B.get_backend("cpu")
    assert wrap_backend(cpu, ViewerSettings()) is cpu  # no child process, no pickled scene
    before = library.threads()
    try:
        set_render_threads(cpu, 1)
        assert library.threads() == 1
        set_render_threads(cpu, 0)  # 0: every core
        assert library.threads() >= 1
    finally:
        library.set_threads(before)


@needs_cpu
@pytest.mark.parametrize("publish_bands", [False, True])
def test_render_worker_with_the_cpu_backend_gives_the_backends_image(publish_bands: bool) -> None:
    from renderer.native import library

    scene, cam, opts = _scene(), _camera(40, 30), RenderOptions()
    cpu = B.get_backend("cpu")
    from renderer.native.scene import NativeScene

    assert isinstance(cpu.prepare(scene), NativeScene)  # type: ignore[attr-defined]
    ref = cpu.render(scene, cam, opts)
    before = library.threads()
    worker = RenderWorker(cpu)
    published: list[int] = []
    worker.on_publish = lambda: published.append(1)
    try:
        worker.set_scene(cpu.prepare(scene))  # type: ignore[attr-defined]
        worker.timing.ms_per_px = 1.0  # bands of 8 rows: four bands
        worker.submit(FrameRequest(cam, opts, band_ms=320.0, publish_bands=publish_bands, threads=1))
        assert worker.wait_idle(60)
        res = worker.poll()
        assert library.threads() == 1
    finally:
        worker.stop()
        library.set_threads(before)
    assert res is not None and res.complete and res.size == (40, 30)
    assert len(published) == (4 if publish_bands else 1)
    np.testing.assert_allclose(res.image, ref.image.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.depth, ref.depth.numpy(), atol=1e-4)
    assert res.stats["samples_evaluated"] == ref.stats.samples_evaluated
    assert res.stats["rays"] == 40 * 30


def test_backend_cpu_without_the_library_exits_2_with_one_line(
    cpu_unavailable: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene_file = tmp_path / "s.kilo"
    save_scene(_scene(), scene_file)
    out = tmp_path / "x.png"
    args = ["--scene", str(scene_file), "--headless", "--screenshot", str(out), "--size", "16x12"]
    assert main([*args, "--backend", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpu backend unavailable" in err[0] and "not built (test)" in err[0]
    assert not out.exists()
    assert main(args) == 0 and out.exists()  # auto falls back to the torch renderer


@needs_cpu
def test_headless_screenshot_and_turntable_with_the_cpu_backend(tmp_path: Path) -> None:
    import imageio.v2 as iio

    from renderer.camera import load_camera_json
    from renderer.scene import load_scene

    scene_file = tmp_path / "s.kilo"
    save_scene(_scene(), scene_file)
    shot = tmp_path / "shot.png"
    base = ["--scene", str(scene_file), "--headless", "--backend", "cpu"]
    assert main([*base, "--screenshot", str(shot), "--size", "40x30"]) == 0
    cam = load_camera_json(shot.with_suffix(".json"))
    ref = to_uint8(B.get_backend("cpu").render(load_scene(scene_file), cam, RenderOptions()).image)
    np.testing.assert_array_equal(np.asarray(Image.open(shot).convert("RGB")), ref)
    video = tmp_path / "turn.mp4"
    assert main([*base, "--turntable", str(video), "--frames", "3", "--fps", "10", "--size", "32x24"]) == 0
    reader = iio.get_reader(str(video), format="FFMPEG")
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 3 and frames[0].shape == (24, 32, 3)
