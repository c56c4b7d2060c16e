"""The viewer's exports started from the panels: screenshot, turntable and camera-path video, each in the
background with progress and cancel (``app/export.py`` renders and encodes)."""

from __future__ import annotations

from typing import Any

from app.export import ExportTask, screenshot_paths, start_screenshot, start_turntable, start_video
from app.path_editor import PathEditor
from app.settings import ViewerSettings


class ExportMixin:
    """Exports of :class:`app.viewer.Viewer`."""

    settings: ViewerSettings
    export: ExportTask | None
    worker: Any
    scene: Any
    camera: Any
    path_editor: PathEditor

    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        raise NotImplementedError

    def render_camera(self, scale: float = 1.0, size: tuple[int, int] | None = None) -> Any:
        raise NotImplementedError

    def render_options(self) -> Any:
        raise NotImplementedError

    def _prepared_scene(self) -> Any:
        return self.worker.scene

    def screenshot(self) -> None:
        """Render the current view at the export size into exports/ (PNG + camera JSON), in the background."""
        if self.export is not None and not self.export.finished:
            self.notify("an export is already running", "error")
            return
        e = self.settings.export
        png, _ = screenshot_paths(e.folder)
        cam = self.render_camera(size=(e.shot_width, e.shot_height))
        self.export = start_screenshot(
            self.worker.backend, self._prepared_scene(), cam, self.render_options(), png
        )

    def turntable(self) -> None:
        """Start the turntable export from the export panel's settings."""
        if self.export is not None and not self.export.finished:
            self.notify("an export is already running", "error")
            return
        e = self.settings.export
        self.export = start_turntable(
            self.worker.backend,
            self._prepared_scene(),
            self.scene,
            self.render_options(),
            e.video_path,
            frames=e.frames,
            fps=e.fps,
            size=(e.video_width, e.video_height),
            elevation=e.elevation,
            radius=e.radius or None,
            fov_y_deg=self.camera.settings.fov_y_deg,
        )

    def export_path_video(self) -> None:
        """Render the edited camera path to its video in the background (progress in the Export panel)."""
        from app.camera_path import path_cameras

        if self.export is not None and not self.export.finished:
            self.notify("an export is already running", "error")
            return
        ed = self.path_editor
        if not ed.keyframes:
            self.notify("the camera path has no keyframes: add the current view first", "error")
            return
        cams = path_cameras(ed.path())
        self.export = start_video(
            self.worker.backend, self._prepared_scene(), self.render_options(), cams, ed.video, ed.fps, "path"
        )
