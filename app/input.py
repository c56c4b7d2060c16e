"""Keyboard and mouse handling of the viewer window (glfw callbacks → camera controller and shortcuts).

ImGui sees every event first; the scene gets keys unless an ImGui text field is active, and drags that
start outside the panels. The shortcuts are one list, :data:`SHORTCUT_LIST`. Held keys move the camera
in :meth:`InputMixin.apply_held_keys`, scaled by the frame time, so motion does not depend on the frame
rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import glfw
import imgui

from app.camera_control import CameraController
from app.settings import ViewerSettings

CLICK_SLOP_PX = 4.0
"""A left press and release on the image this close together (|dx| + |dy|) is a click, not a drag."""
ORBIT_KEY_DEG_PER_S = 90.0
"""Arrow keys in orbit mode turn by this many degrees per second."""


@dataclass(frozen=True)
class Shortcut:
    """One key of the viewer: what a user presses, what it does, and the viewer method it calls."""

    key: int
    ctrl: bool
    label: str
    what: str
    action: str


SHORTCUT_LIST: tuple[Shortcut, ...] = (
    Shortcut(glfw.KEY_F1, False, "F1", "show / hide this help", "toggle_help"),
    Shortcut(glfw.KEY_ESCAPE, False, "Esc", "close the help or an open dialog (nothing else)", "escape"),
    Shortcut(glfw.KEY_F, False, "F", "switch orbit / fly", "toggle_mode"),
    Shortcut(glfw.KEY_R, False, "R", "reset the view (training view 0, or the whole box)", "reset_view"),
    Shortcut(glfw.KEY_H, False, "H", "hide / show the side panel", "toggle_panel"),
    Shortcut(glfw.KEY_C, True, "Ctrl+C", "copy the pose as camera JSON", "copy_pose"),
    Shortcut(glfw.KEY_V, True, "Ctrl+V", "paste a pose (camera JSON)", "paste_pose_from_clipboard"),
    Shortcut(glfw.KEY_F12, False, "F12", "screenshot of the view (PNG + camera JSON)", "screenshot"),
    Shortcut(glfw.KEY_F11, False, "F11", "save the window as drawn, panel included", "save_window"),
)
"""Every key shortcut: the one list the key handler, the help overlay and docs/viewer.md follow."""
SHORTCUTS: dict[tuple[int, bool], str] = {(s.key, s.ctrl): s.action for s in SHORTCUT_LIST}
MOTION_HELP: tuple[tuple[str, str], ...] = (
    ("W / S, A / D", "forward / back, left / right (both modes; in orbit the centre moves along)"),
    ("Q / E", "down / up along world +Z"),
    ("Shift", "4x faster"),
    ("arrows", "orbit: turn around the centre at 90 deg/s"),
    ("left drag", "orbit: turn the scene; fly: look around"),
    ("right / middle drag", "orbit: pan; fly: look around"),
    ("wheel", "orbit: zoom; fly: fly speed x 1.25 per notch"),
    ("click a camera", "with the training-camera overlay on: go to that camera"),
)
"""Keys held and mouse actions, for the help overlay."""


class InputMixin:
    """Input callbacks of :class:`app.viewer.Viewer` (which provides the attributes declared here)."""

    window: Any
    imgui: Any
    settings: ViewerSettings
    camera: CameraController
    held: set[int]
    tapped: set[int]
    show_help: bool
    panel_width: float
    panel_collapsed: bool
    _buttons: set[int]
    _drag_on_scene: bool
    _cursor: tuple[float, float] | None
    _input_seen: bool
    _press_at: tuple[float, float] | None
    click_scene: Callable[[float, float], bool]
    """Provided by app.overlay_control.OverlayMixin (a later base of Viewer)."""
    screenshot: Callable[[], None]
    """Provided by app.export_control.ExportMixin."""
    close_dialogs: Callable[[], None]
    dialogs_open: Callable[[], bool]
    """Provided by app.dialogs.DialogMixin."""

    # provided by Viewer
    def viewport(self) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def save_window(self) -> None:
        """Save the window as drawn (Viewer)."""
        raise NotImplementedError

    def reset_view(self) -> None:
        """Reset the camera (Viewer)."""
        raise NotImplementedError

    def copy_pose(self) -> None:
        """Copy the pose (Viewer)."""
        raise NotImplementedError

    def paste_pose_from_clipboard(self) -> bool:
        """Paste a pose (Viewer)."""
        raise NotImplementedError

    def _ui_wants(self, kind: str) -> bool:
        """Whether ImGui takes this input: ``"mouse"`` (over a panel or dragging a widget), ``"keyboard"``,
        or ``"text"`` (a text field is active: keys go to it, not to the scene)."""
        if not self.settings.show_ui:
            return False
        io = imgui.get_io()
        if kind == "mouse":
            return bool(io.want_capture_mouse)
        return bool(io.want_text_input if kind == "text" else io.want_capture_keyboard)

    def handle_key(self, window: Any, key: int, scancode: int, action: int, mods: int) -> None:
        """glfw key callback: ImGui first (Tab only while a text field is active, so it never moves ImGui's
        focus otherwise), then the shortcuts and the held keys of camera motion, unless a text field is
        active. A key pressed and released within one UI frame still moves the camera for that frame."""
        typing = self._ui_wants("text")
        if key != glfw.KEY_TAB or typing:
            self.imgui.keyboard_callback(window, key, scancode, action, mods)
        self._input_seen = True
        if action == glfw.RELEASE:
            self.held.discard(key)
            return
        if typing or action != glfw.PRESS:
            return
        self.held.add(key)
        self.tapped.add(key)
        shortcut = SHORTCUTS.get((key, bool(mods & glfw.MOD_CONTROL)))
        if shortcut is not None:
            getattr(self, shortcut)()

    def toggle_mode(self) -> None:
        """Switch orbit / fly."""
        self.camera.mode = "fly" if self.camera.mode == "orbit" else "orbit"

    def toggle_help(self) -> None:
        """Show / hide the help overlay."""
        self.show_help = not self.show_help

    def escape(self) -> None:
        """Esc: close the help overlay if it is shown, else any open dialog; nothing else (never a quit)."""
        if self.show_help:
            self.show_help = False
        else:
            self.close_dialogs()

    def toggle_panel(self) -> None:
        """Show / hide the side panel."""
        self.settings.show_ui = not self.settings.show_ui

    def handle_mouse_button(self, window: Any, button: int, action: int, mods: int) -> None:
        """glfw mouse button callback: a drag belongs to the scene if it starts outside the panels."""
        self.imgui.mouse_button_callback(button, action)
        self._input_seen = True
        pos = glfw.get_cursor_pos(self.window)
        if action == glfw.PRESS:
            if not self._buttons:
                self._drag_on_scene = not self._over_ui(pos)
                self._press_at = pos
            self._buttons.add(button)
            return
        self._buttons.discard(button)
        start, self._press_at = self._press_at, None
        if (
            button == glfw.MOUSE_BUTTON_LEFT
            and self._drag_on_scene
            and start is not None
            and not self._buttons
        ):
            if abs(pos[0] - start[0]) + abs(pos[1] - start[1]) <= CLICK_SLOP_PX:  # a click, not a drag
                self.click_scene(pos[0], pos[1])

    def _over_ui(self, pos: tuple[float, float]) -> bool:
        """Whether window point ``pos`` is on the panel (by geometry: ImGui's own flag is a frame old when
        the mouse moved and clicked between two frames) or on an overlay window ImGui reports."""
        if not self.settings.show_ui:
            return False
        title_h = 24.0
        if pos[0] < self.panel_width and (not self.panel_collapsed or pos[1] < title_h):
            return True
        return (self.show_help or self.dialogs_open()) and self._ui_wants("mouse")

    def handle_cursor(self, window: Any, x: float, y: float) -> None:
        """glfw cursor callback: drags rotate/pan (orbit) or look around (fly)."""
        prev, self._cursor = self._cursor, (x, y)
        self._input_seen = True
        if prev is None or not self._buttons or not self._drag_on_scene:
            return
        dx, dy = x - prev[0], y - prev[1]
        if self.camera.mode == "orbit":
            if glfw.MOUSE_BUTTON_LEFT in self._buttons:
                self.camera.orbit_rotate(dx, dy)
            else:
                self.camera.pan(dx, dy, max(self.viewport()[3], 1))
        else:
            self.camera.look(dx, dy)

    def handle_scroll(self, window: Any, xoff: float, yoff: float) -> None:
        """glfw scroll callback: zoom (orbit) or fly speed (fly)."""
        self.imgui.scroll_callback(window, xoff, yoff)
        self._input_seen = True
        if self._ui_wants("mouse"):
            return
        if self.camera.mode == "orbit":
            self.camera.zoom(yoff)
        else:
            self.camera.settings.fly_speed *= 1.25**yoff

    def apply_held_keys(self, dt: float) -> None:
        """Key motion for ``dt`` seconds, in both modes: W/A/S/D/Q/E move the camera (in orbit mode the orbit
        centre moves with it; Shift faster); in orbit mode the arrows turn around the centre. Keys tapped
        since the last frame count as held for this one."""
        held = self.held | self.tapped
        self.tapped.clear()
        move = (
            float((glfw.KEY_D in held) - (glfw.KEY_A in held)),
            float((glfw.KEY_E in held) - (glfw.KEY_Q in held)),
            float((glfw.KEY_W in held) - (glfw.KEY_S in held)),
        )
        fast = glfw.KEY_LEFT_SHIFT in held or glfw.KEY_RIGHT_SHIFT in held
        self.camera.fly(move, dt, fast)
        if self.camera.mode == "orbit":
            px = ORBIT_KEY_DEG_PER_S * dt / self.camera.settings.rotate_deg_per_px
            dx = float((glfw.KEY_RIGHT in held) - (glfw.KEY_LEFT in held)) * px
            dy = float((glfw.KEY_DOWN in held) - (glfw.KEY_UP in held)) * px
            if dx or dy:
                self.camera.orbit_rotate(dx, dy)
