"""The viewer's file browsers (a scene file, a dataset folder) and what it remembers between runs.

A mixin of :class:`app.viewer.Viewer`: it opens the browsers from the panels, draws them each frame, applies
the remembered settings (``app/user_settings.py``) at start and saves them when the viewer closes.
"""

from __future__ import annotations

from typing import Any

import glfw
import imgui

from app.file_browser import FileBrowser
from app.user_settings import Remembered, load_remembered, remember, save_remembered


class DialogMixin:
    """File browsers and remembered settings of :class:`app.viewer.Viewer`."""

    settings: Any
    camera: Any
    window: Any
    panel_width: float
    panel_collapsed: bool
    remembered: Remembered
    browsers: dict[str, FileBrowser]

    def notify(self, text: str, level: str = "info", echo: bool = True) -> None:
        raise NotImplementedError

    def open_scene(self, path: str) -> None:
        raise NotImplementedError

    def init_dialogs(self) -> None:
        """Make the browsers and apply the remembered settings (a bad settings file: one red line)."""
        self.browsers = {
            "scene": FileBrowser("Open a scene", "file", (".kilo",)),
            "data": FileBrowser("Pick a dataset folder", "folder"),
        }
        self.remembered, problem = load_remembered()
        if problem:
            self.notify(problem, "error")
        r = self.remembered
        if r.fly_speed is not None:
            self.camera.settings.fly_speed = r.fly_speed
        if r.panel_width is not None:
            self.panel_width = r.panel_width
        self.panel_collapsed = r.panel_collapsed
        if r.export_folder:
            self.settings.export.folder = r.export_folder
        if r.recent_datasets and not self.settings.train.data:
            self.settings.train.data = r.recent_datasets[0]

    def browse(self, which: str, start: str = "") -> None:
        """Open browser ``which`` ("scene" or "data") at ``start`` (or the most recent entry)."""
        recent = self.remembered.recent_scenes if which == "scene" else self.remembered.recent_datasets
        self.browsers[which].open(start or (recent[0] if recent else None))

    def dialogs_open(self) -> bool:
        """Whether a browser is showing (the mouse then belongs to it, not to the scene)."""
        return any(b.is_open or b.want_open for b in self.browsers.values())

    def close_dialogs(self) -> None:
        """Close every open browser (Esc)."""
        for b in self.browsers.values():
            b.close()

    def draw_dialogs(self) -> None:
        """Draw the open browsers (inside the ImGui frame); act on a choice."""
        scene = self.browsers["scene"].draw(imgui)
        if scene is not None:
            self.open_scene(scene)
        data = self.browsers["data"].draw(imgui)
        if data is not None:
            self.settings.train.data = data
            self.remember_dataset(data)

    def remember_scene(self, path: str) -> None:
        """Put a scene that loaded first in the recent list."""
        self.remembered.recent_scenes = remember(self.remembered.recent_scenes, path)

    def remember_dataset(self, path: str) -> None:
        """Put a dataset folder first in the recent list."""
        self.remembered.recent_datasets = remember(self.remembered.recent_datasets, path)

    def save_remembered_settings(self) -> None:
        """Store what is remembered (a failure is one line on stderr: the viewer is closing)."""
        r = self.remembered
        r.fly_speed = float(self.camera.settings.fly_speed)
        r.panel_width, r.panel_collapsed = float(self.panel_width), bool(self.panel_collapsed)
        r.export_folder = str(self.settings.export.folder)
        w, h = glfw.get_window_size(self.window)
        r.window_size = (int(w), int(h)) if w >= 200 and h >= 200 else r.window_size
        problem = save_remembered(r)
        if problem:
            print(f"[viewer] {problem}", flush=True)
