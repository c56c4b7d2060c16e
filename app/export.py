"""Screenshot (PNG + camera JSON) and turntable (mp4 through imageio-ffmpeg) export, with or without a window.

The pixels are the renderer's output for the camera, quantised once (round to nearest), so a screenshot
re-rendered from its camera JSON reproduces the PNG exactly. :class:`ExportTask` runs an export in a
background thread with progress and cancel for the viewer; the headless command line calls the same
functions directly.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.presenter import to_uint8
from renderer.atomic import atomic_write_bytes, new_file_mode


class ExportCancelled(Exception):
    """The user cancelled an export."""


def render_to_uint8(backend: Any, scene: Any, camera: Any, options: Any) -> np.ndarray:
    """Render ``camera`` and quantise: uint8 [H, W, 3]."""
    return to_uint8(backend.render(scene, camera, options).image)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 [H, W, 3] image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def save_screenshot(image: np.ndarray, camera: Any, png_path: str | Path) -> tuple[Path, Path]:
    """Write ``image`` (uint8 [H, W, 3]) as PNG and ``camera`` as JSON beside it (same stem); both atomic."""
    from renderer.camera import save_camera_json

    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(png, png_bytes(image))
    cam_path = png.with_suffix(".json")
    save_camera_json(camera, cam_path)
    return png, cam_path


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, 3] image as PNG (atomic), making its folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, png_bytes(image))
    return p


def window_capture_path(folder: str | Path = "exports") -> Path:
    """A fresh ``folder/window-YYYYmmdd-HHMMSS[-n].png`` for a capture of the window."""
    base = Path(folder) / time.strftime("window-%Y%m%d-%H%M%S")
    png, n = base.with_suffix(".png"), 1
    while png.exists():
        png, n = Path(f"{base}-{n}.png"), n + 1
    return png


def screenshot_paths(folder: str | Path = "exports") -> tuple[Path, Path]:
    """A fresh ``folder/screenshot-YYYYmmdd-HHMMSS[-n].png`` and its ``.json`` (not yet existing)."""
    base = Path(folder) / time.strftime("screenshot-%Y%m%d-%H%M%S")
    png, n = base.with_suffix(".png"), 1
    while png.exists():
        png, n = Path(f"{base}-{n}.png"), n + 1
    return png, png.with_suffix(".json")


def turntable_poses(
    center: np.ndarray, radius: float, elevation_deg: float, frames: int, start_azimuth_deg: float = -90.0
) -> list[np.ndarray]:
    """``frames`` camera-to-world [4, 4] poses evenly around ``center`` (one full turn, no repeated frame)."""
    from renderer.camera import orbit_pose

    c = tuple(float(v) for v in center)
    return [
        orbit_pose(c, radius, start_azimuth_deg + 360.0 * i / frames, elevation_deg) for i in range(frames)
    ]


def default_turntable_radius(bbox_min: Any, bbox_max: Any, fov_y_deg: float) -> float:
    """Distance at which the box's bounding sphere fills the vertical field of view (plus 5 %)."""
    r = 0.5 * float(np.linalg.norm(np.asarray(bbox_max, float) - np.asarray(bbox_min, float)))
    return 1.05 * r / math.sin(math.radians(fov_y_deg) / 2)


def turntable_cameras(
    scene: Any,
    frames: int,
    size: tuple[int, int],
    elevation_deg: float = 30.0,
    radius: float | None = None,
    fov_y_deg: float = 40.0,
) -> list[Any]:
    """Cameras of a turntable around the scene box centre."""
    from renderer.camera import Camera

    w, h = size
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    center = 0.5 * (np.asarray(scene.bbox_min, float) + np.asarray(scene.bbox_max, float))
    rad = radius if radius else default_turntable_radius(scene.bbox_min, scene.bbox_max, fov_y_deg)
    focal = 0.5 * h / math.tan(math.radians(fov_y_deg) / 2)
    return [
        Camera(width=w, height=h, focal=focal, c2w=p)
        for p in turntable_poses(center, rad, elevation_deg, frames)
    ]


def check_video_size(size: tuple[int, int], out: str | Path | None = None) -> None:
    """H.264 in yuv420p needs even sizes: raise a one-line ValueError otherwise (a GIF takes any size)."""
    w, h = size
    if out is not None and is_gif(out):
        if w < 1 or h < 1:
            raise ValueError(f"video size must be positive, got {w}x{h}")
        return
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise ValueError(f"video size must be even in both dimensions (mp4/H.264), got {w}x{h}")


def is_gif(out: str | Path) -> bool:
    """Whether ``out`` asks for an animated GIF (by its suffix) rather than an H.264 mp4."""
    return Path(out).suffix.lower() == ".gif"


def _encode_frames(
    frames: Iterator[np.ndarray],
    tmp: Path,
    gif: bool,
    fps: float,
    step: Callable[[int], None],
) -> None:
    """Write ``frames`` into ``tmp``: H.264 mp4 through ffmpeg, or an animated GIF through Pillow (each
    frame quantised to its own 256-colour palette, looping, 1/fps apart rounded to 10 ms as GIF stores)."""
    if gif:
        from PIL import Image

        images = []
        for i, frame in enumerate(frames):
            images.append(Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT))
            step(i)
        if not images:
            raise ValueError("no frames to write")
        ms = max(20, round(100.0 / fps) * 10)
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)
        return
    import imageio.v2 as iio

    writer = iio.get_writer(
        str(tmp),
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        macro_block_size=1,
        pixelformat="yuv420p",
        ffmpeg_log_level="error",
    )
    try:
        for i, frame in enumerate(frames):
            writer.append_data(frame)
            step(i)
    finally:
        writer.close()


def write_video(
    frames: Iterator[np.ndarray],
    out: str | Path,
    fps: float,
    count: int,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Path:
    """Encode uint8 [H, W, 3] frames as H.264 mp4 (or an animated GIF when ``out`` ends in .gif) at ``out``.

    The encoder writes a temp file beside ``out`` that is renamed onto it only when every frame is in, so a
    cancelled or failed export never leaves a truncated video (the same rule as renderer/atomic.py).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp.gif" if is_gif(out) else ".tmp.mp4"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.fchmod(fd, new_file_mode())  # readable as any file the user writes, not mkstemp's 0600
    os.close(fd)
    tmp = Path(tmp_name)

    def step(i: int) -> None:
        if progress is not None:
            progress(i + 1, count)
        if cancelled is not None and cancelled():
            raise ExportCancelled("export cancelled")

    def checked() -> Iterator[np.ndarray]:
        for frame in frames:
            if cancelled is not None and cancelled():
                raise ExportCancelled("export cancelled")
            yield frame

    try:
        _encode_frames(checked(), tmp, is_gif(out), fps, step)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return out


@dataclass
class ExportTask:
    """A background export with progress and cancel."""

    kind: str
    total: int = 1
    done: int = 0
    finished: bool = False
    error: bool = False
    message: str = ""
    reported: bool = False
    _cancel: bool = False
    thread: threading.Thread | None = None

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]."""
        return self.done / self.total if self.total else 0.0

    def cancel(self) -> None:
        """Ask the export to stop at the next frame."""
        self._cancel = True

    @property
    def cancelled(self) -> bool:
        """Whether cancel was requested."""
        return self._cancel

    def wait(self, timeout: float) -> bool:
        """Join the thread; True when finished."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.finished

    def run(self, fn: Callable[[ExportTask], str]) -> ExportTask:
        """Run ``fn(self)`` in a daemon thread; its return value becomes the message."""

        def work() -> None:
            try:
                self.message = fn(self)
            except ExportCancelled:
                self.message = f"{self.kind} cancelled"
            except Exception as e:
                self.error = True
                self.message = f"{self.kind} failed: {e}".splitlines()[0]
            finally:
                self.finished = True

        self.thread = threading.Thread(target=work, name=f"export-{self.kind}", daemon=True)
        self.thread.start()
        return self


def start_screenshot(backend: Any, scene: Any, camera: Any, options: Any, png_path: str | Path) -> ExportTask:
    """Render ``camera`` and save PNG + JSON in the background."""

    def fn(task: ExportTask) -> str:
        img = render_to_uint8(backend, scene, camera, options)
        task.done = 1
        png, cam = save_screenshot(img, camera, png_path)
        return f"saved {png} ({camera.width}x{camera.height}) and {cam.name}"

    return ExportTask("screenshot").run(fn)


def start_turntable(
    backend: Any,
    prepared: Any,
    scene: Any,
    options: Any,
    out: str | Path,
    frames: int,
    fps: float,
    size: tuple[int, int],
    elevation: float = 30.0,
    radius: float | None = None,
    fov_y_deg: float = 40.0,
) -> ExportTask:
    """Render and encode a turntable in the background (cancel stops after the current frame)."""
    from app.camera_path import path_cameras, turntable_path

    check_video_size(size, out)
    # the turntable is a preset camera path: the same frames as the headless turntable and path export
    cams = path_cameras(
        turntable_path(turntable_cameras(scene, frames, size, elevation, radius, fov_y_deg), fps)
    )
    return start_video(backend, prepared, options, cams, out, fps, "turntable")


def start_video(
    backend: Any,
    prepared: Any,
    options: Any,
    cams: list[Any],
    out: str | Path,
    fps: float,
    kind: str = "path",
) -> ExportTask:
    """Render ``cams`` and encode them as a video in the background (cancel stops after the current frame)."""
    size = (cams[0].width, cams[0].height)
    task = ExportTask(kind, total=len(cams))

    def fn(task: ExportTask) -> str:
        check_video_size(size, out)  # a one-line message in the panel, before any frame is rendered

        def progress(i: int, n: int) -> None:
            task.done = i

        imgs = (render_to_uint8(backend, prepared, c, options) for c in cams)
        path = write_video(imgs, out, fps, len(cams), progress, lambda: task.cancelled)
        return f"saved {path} ({len(cams)} frames, {size[0]}x{size[1]}, {fps:g} fps)"

    return task.run(fn)
