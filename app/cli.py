"""``run_viewer.py`` command line: the window, headless screenshot/turntable, and the FPS benchmark.

User errors (missing or corrupt scene, bad camera JSON, bad size, no display) print one line naming the
file or the problem and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

# Sleeping (not spinning) OpenMP workers, set before torch loads, as `python -m renderer` and the trainer do.
# Two spinning torch workers on a shared 2-core machine made the headless turntable 8x slower than the
# window's export of the same frames (issue 29: 71 s against 8.6 s sleeping); get_backend_once also gives the
# headless backend the window's thread count. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.scene_source import DEFAULT_SCENE, SceneLoadError, initial_scene  # noqa: E402
from renderer.backends import BACKENDS  # noqa: E402


class UserError(Exception):
    """A one-line problem with the user's input (exit code 2)."""


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → (W, H) with 1 ≤ W, H ≤ 16384."""
    try:
        w_s, h_s = text.lower().split("x")
        w, h = int(w_s), int(h_s)
    except ValueError:
        raise UserError(f"--size: expected WxH such as 800x600, got {text!r}") from None
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise UserError(f"--size: width and height must be within 1..16384, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of run_viewer.py."""
    p = argparse.ArgumentParser(
        prog="run_viewer.py",
        description="KiloNeRF viewer: orbit/fly a .kilo scene, train, export screenshots and turntables.",
    )
    p.add_argument("--scene", default=str(DEFAULT_SCENE), help="scene file (.kilo); default assets/lego.kilo")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="renderer backend (auto: cuda, else the native cpu renderer, else torch)",
    )
    p.add_argument(
        "--size", default=None, help="window or export size WxH (window: the last one used, else 1280x800)"
    )
    p.add_argument("--headless", action="store_true", help="no window: export and exit")
    p.add_argument("--screenshot", metavar="OUT.png", help="headless: render one image (+ OUT.json camera)")
    p.add_argument("--camera", metavar="CAM.json", help="headless screenshot: camera JSON (default: view 0)")
    p.add_argument(
        "--turntable", metavar="OUT.mp4", help="headless: render a turntable video (.mp4, or .gif)"
    )
    p.add_argument(
        "--camera-path", metavar="PATH.json", help="headless: render nerfstudio's camera_path.json to --video"
    )
    p.add_argument("--video", metavar="OUT.mp4", help="headless: the camera path's video (.mp4, or .gif)")
    p.add_argument("--frames", type=int, default=60, help="turntable frames (default 60)")
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second (turntable default 30; camera path: its own)",
    )
    p.add_argument("--elevation", type=float, default=30.0, help="turntable elevation in degrees")
    p.add_argument("--radius", type=float, default=0.0, help="turntable radius (default: from the scene box)")
    p.add_argument("--no-ess", action="store_true", help="disable empty space skipping")
    p.add_argument("--no-ert", action="store_true", help="disable early ray termination")
    p.add_argument("--bench", action="store_true", help="measure FPS while the camera moves, then exit")
    p.add_argument("--bench-seconds", type=float, default=8.0, help="duration of --bench")
    p.add_argument(
        "--bench-export",
        action="store_true",
        help="time the window's turntable export against the headless one (same --frames, --size, --fps)",
    )
    p.add_argument(
        "--capture-window",
        metavar="OUT.png",
        help="save the window with its panels once the view is refined, then exit (for docs)",
    )
    return p


def get_backend_once(name: str) -> Any:
    """renderer.backends.get_backend, ready for headless frames (every core for the native ``cpu``
    backend); it logs once which backend ``auto`` passed over and why. A backend asked for by name that
    cannot run here is a UserError (one line, exit code 2)."""
    import logging

    from app.backend_profiles import profile_for, set_render_threads
    from renderer.backends import BackendError, get_backend

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        backend = get_backend(name)
    except BackendError as e:
        raise UserError(str(e).splitlines()[0]) from None
    set_render_threads(backend, profile_for(backend).still_threads)
    return backend


def default_camera(scene: Any, size: tuple[int, int] | None, fov_y_deg: float = 40.0) -> Any:
    """Training view 0 when the scene stores cameras (at ``size`` or its own size), else a box view."""
    import numpy as np

    from renderer.camera import Camera, look_at

    cams = getattr(scene, "cameras", None)
    if cams is not None and len(cams.c2w):
        cam = Camera(width=cams.width, height=cams.height, focal=cams.focal, c2w=np.asarray(cams.c2w[0]))
        return cam if size is None else resize_camera(cam, size)
    w, h = size or (800, 800)
    lo, hi = np.asarray(scene.bbox_min, float), np.asarray(scene.bbox_max, float)
    c = 0.5 * (lo + hi)
    dist = 0.5 * float(np.linalg.norm(hi - lo)) / math.sin(math.radians(fov_y_deg) / 2) * 1.05
    el, az = math.radians(25.0), math.radians(-60.0)
    eye = c + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return Camera(
        width=w, height=h, focal=0.5 * h / math.tan(math.radians(fov_y_deg) / 2), c2w=look_at(eye, c)
    )


def resize_camera(cam: Any, size: tuple[int, int]) -> Any:
    """``cam`` at ``size``, keeping its vertical field of view and centring the principal point."""
    from renderer.camera import Camera

    w, h = size
    return Camera(width=w, height=h, focal=cam.focal * h / cam.height, c2w=cam.c2w)


def _options(args: argparse.Namespace) -> Any:
    from renderer.render import RenderOptions

    return RenderOptions(ess=not args.no_ess, ert=not args.no_ert)


def headless_screenshot(
    args: argparse.Namespace, scene: Any, size: tuple[int, int] | None, backend: Any
) -> str:
    """Render one image (and write its camera JSON beside it); returns the message."""
    from app.camera_json import load_camera_file
    from app.export import render_to_uint8, save_screenshot
    from renderer.camera import CameraFormatError

    if args.camera:
        try:
            cam = load_camera_file(args.camera)
        except CameraFormatError as e:
            raise UserError(str(e).splitlines()[0]) from None
        if size is not None:
            cam = resize_camera(cam, size)
    else:
        cam = default_camera(scene, size)
    from app.render_worker import prepare_for_backend

    t0 = time.perf_counter()
    img = render_to_uint8(backend, prepare_for_backend(backend, scene), cam, _options(args))
    png, cam_path = save_screenshot(img, cam, args.screenshot)
    return f"wrote {png} and {cam_path} ({cam.width}x{cam.height}, {time.perf_counter() - t0:.2f} s)"


def _check_turntable_args(args: argparse.Namespace, size: tuple[int, int] | None) -> None:
    from app.export import check_video_size

    try:
        check_video_size(size or (400, 400), args.turntable)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.frames < 1 or (args.fps is not None and args.fps <= 0):
        raise UserError(f"--frames must be >= 1 and --fps > 0, got {args.frames} and {args.fps}")


def headless_turntable(
    args: argparse.Namespace, scene: Any, size: tuple[int, int] | None, backend: Any
) -> str:
    """Render and encode a turntable on this thread with ``backend`` (the viewer's own fast path for the
    native ``cpu`` backend: one GIL-free call per frame on every core); returns the message."""
    from app.camera_path import path_cameras, turntable_path
    from app.export import turntable_cameras

    size = size or (400, 400)
    _check_turntable_args(args, size)
    fps = args.fps or 30.0
    path = turntable_path(
        turntable_cameras(scene, args.frames, size, args.elevation, args.radius or None), fps
    )
    return _headless_video(args, scene, backend, path_cameras(path), args.turntable, fps)


def headless_camera_path(
    args: argparse.Namespace, scene: Any, size: tuple[int, int] | None, backend: Any
) -> str:
    """Render nerfstudio's camera_path.json ``--camera-path`` to ``--video`` (its size and fps unless
    ``--size`` / ``--fps`` are given)."""
    from app.camera_path import CameraPathError, load_camera_path, path_cameras
    from app.export import check_video_size

    try:
        path = load_camera_path(args.camera_path)
        if args.fps is not None:
            if not 0 < args.fps <= 240:
                raise CameraPathError(f"--fps must be in (0, 240], got {args.fps}")
            path.fps = float(args.fps)
        cams = path_cameras(path, size)
        check_video_size((cams[0].width, cams[0].height), args.video)
    except ValueError as e:
        raise UserError(str(e)) from None
    return _headless_video(args, scene, backend, cams, args.video, path.fps)


def _headless_video(
    args: argparse.Namespace, scene: Any, backend: Any, cams: list[Any], out: str, fps: float
) -> str:
    from app.export import render_to_uint8, write_video
    from app.render_worker import prepare_for_backend

    prepared = prepare_for_backend(backend, scene)
    opts = _options(args)
    t0 = time.perf_counter()

    def progress(i: int, n: int) -> None:
        print(f"\rframe {i}/{n}", end="", file=sys.stderr, flush=True)

    frames = (render_to_uint8(backend, prepared, c, opts) for c in cams)
    written = write_video(frames, out, fps, len(cams), progress)
    print(file=sys.stderr)
    secs = time.perf_counter() - t0
    w, h = cams[0].width, cams[0].height
    return f"wrote {written} ({len(cams)} frames {w}x{h} at {fps:g} fps, {secs:.1f} s)"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except UserError as e:
        print(f"run_viewer.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _main(args: argparse.Namespace) -> int:
    size = parse_size(args.size) if args.size else None
    if args.headless and not (args.screenshot or args.turntable or args.camera_path):
        raise UserError(
            "--headless needs --screenshot OUT.png, --turntable OUT.mp4"
            " or --camera-path PATH.json --video OUT.mp4"
        )
    if (args.screenshot or args.turntable or args.camera_path) and not args.headless:
        raise UserError("--screenshot/--turntable/--camera-path export without a window: add --headless")
    if args.camera_path and not args.video:
        raise UserError("--camera-path needs --video OUT.mp4")
    if args.headless and args.camera_path:  # before the scene and backend: a bad file is the one line shown
        from app.camera_path import CameraPathError, load_camera_path

        try:
            load_camera_path(args.camera_path)
        except CameraPathError as e:
            raise UserError(str(e)) from None
    if args.headless and args.turntable:
        _check_turntable_args(args, size)
    if not args.headless:
        from app.window import NoDisplayError, check_display

        try:
            check_display()  # before loading anything: the one line the user needs
        except NoDisplayError as e:
            raise UserError(str(e)) from None
    try:
        scene, name, notice = initial_scene(args.scene)
    except SceneLoadError as e:
        raise UserError(str(e)) from None
    backend = get_backend_once(args.backend)
    if notice and args.headless:  # the window shows (and prints) it itself
        print(f"run_viewer.py: {notice}", file=sys.stderr)
    if args.headless:
        export = (
            headless_screenshot
            if args.screenshot
            else headless_turntable
            if args.turntable
            else headless_camera_path
        )
        msg = export(args, scene, size, backend)
        print(msg)
        return 0
    from app.window import NoDisplayError

    try:
        from app.viewer import Viewer

        window = None if args.bench_export else size  # --size is the export's there
        viewer = Viewer(scene, name, backend, window or _remembered_size(), notice=notice)
    except NoDisplayError as e:
        raise UserError(str(e)) from None
    r = viewer.settings.render
    r.ess, r.ert = not args.no_ess, not args.no_ert
    if args.bench:
        from app.bench import run_bench

        try:
            print(run_bench(viewer, seconds=args.bench_seconds).report())
        finally:
            viewer.close()
        return 0
    if args.bench_export:
        from app.bench import run_export_bench

        try:
            print(run_export_bench(viewer, args, size or (240, 240)).report())
        finally:
            viewer.close()
        return 0
    if args.capture_window:
        try:
            return capture_window(viewer, args.capture_window)
        finally:
            viewer.close()
    viewer.run()
    return 0


def capture_window(viewer: Any, out: str) -> int:
    """Let the view refine, then save the whole window (panels included) as PNG."""
    from app.export import save_png

    viewer.wait_full_frame(timeout=120)
    for _ in range(3):
        viewer.step()
    print(f"wrote {save_png(viewer.read_frame(), out)}")
    return 0


def _remembered_size() -> tuple[int, int]:
    """The window size of the last run (app/user_settings.py), else 1280x800."""
    from app.user_settings import load_remembered

    size = load_remembered()[0].window_size
    return size if size is not None else (1280, 800)
