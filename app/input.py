"""Keyboard and mouse handling of the viewer window (glfw callbacks → camera controller and shortcuts).

ImGui sees every event first; the scene gets keys unless an ImGui text field is active, and drags that
start outside the panels. The shortcuts are one list, :data:`SHORTCUT_LIST`. Held keys move the camera
in :meth:`InputMixin.apply_held_keys`, scaled by the frame time (at most ``KEY_DT_CAP_S``), so motion does
not depend on the frame rate.
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
KEY_DT_CAP_S = 0.5
"""Key motion per UI frame is at most this many seconds' worth (a UI thread at 2 Hz still moves at full
speed; a longer stall does not throw the camera away)."""
TAP_S = 0.1
"""A key pressed and released between two UI frames moves the camera this long (or the frame time, if
shorter): GLFW reports both events at the next poll, so how long it was down is not known."""
RESIZE_GRAB_PX = 4.0
"""ImGui grabs a window's edge this far outside it (its hover padding): a press there resizes the panel."""
_GLFW_CURSORS: dict[int, int] = {
    imgui.MOUSE_CURSOR_TEXT_INPUT: glfw.IBEAM_CURSOR,
    imgui.MOUSE_CURSOR_RESIZE_EW: glfw.HRESIZE_CURSOR,
    imgui.MOUSE_CURSOR_RESIZE_NS: glfw.VRESIZE_CURSOR,
    imgui.MOUSE_CURSOR_HAND: glfw.HAND_CURSOR,
}
"""ImGui's cursor shapes → GLFW 3.3's standard cursors (others: the default arrow)."""


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

    def init_input(self) -> None:
        """Install the glfw callbacks (ImGui sees every event first) and let ImGui resize the panel by its
        right edge (ImGui does that only for a backend that shows cursor shapes: :meth:`update_cursor`)."""
        glfw.set_key_callback(self.window, self.handle_key)
        glfw.set_char_callback(self.window, self.imgui.char_callback)
        glfw.set_mouse_button_callback(self.window, self.handle_mouse_button)
        glfw.set_cursor_pos_callback(self.window, self.handle_cursor)
        glfw.set_scroll_callback(self.window, self.handle_scroll)
        io = imgui.get_io()
        io.config_windows_resize_from_edges = True
        io.backend_flags |= imgui.BACKEND_HAS_MOUSE_CURSORS
        self._cursor_shapes: dict[int, Any] = {}
        self._cursor_shape: int | None = None

    def update_cursor(self) -> None:
        """Show the cursor shape ImGui asks for: the resize arrow on the panel's edge, a text beam over a
        field, else the default arrow (a shape this GLFW cannot make stays the arrow)."""
        shape = _GLFW_CURSORS.get(imgui.get_mouse_cursor()) if self.settings.show_ui else None
        if shape == self._cursor_shape:
            return
        self._cursor_shape = shape
        cursor = None
        if shape is not None:
            if shape not in self._cursor_shapes:
                try:
                    self._cursor_shapes[shape] = glfw.create_standard_cursor(shape)
                except Exception:  # noqa: BLE001 - a missing cursor theme: keep the arrow
                    self._cursor_shapes[shape] = None
            cursor = self._cursor_shapes[shape]
        glfw.set_cursor(self.window, cursor)  # type: ignore[arg-type]  # None restores the arrow

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
        edge = 0.0 if self.panel_collapsed else RESIZE_GRAB_PX  # a press just right of it resizes it
        if pos[0] < self.panel_width + edge and (not self.panel_collapsed or pos[1] < title_h):
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
        centre moves with it; Shift faster); in orbit mode the arrows turn around the centre. A key tapped
        since the last frame and already released counts for ``TAP_S`` (at most ``dt``)."""
        seconds = {k: min(dt, TAP_S) for k in self.tapped} | {k: dt for k in self.held}
        self.tapped.clear()

        def axis(plus: int, minus: int) -> float:
            return seconds.get(plus, 0.0) - seconds.get(minus, 0.0)

        move = (axis(glfw.KEY_D, glfw.KEY_A), axis(glfw.KEY_E, glfw.KEY_Q), axis(glfw.KEY_W, glfw.KEY_S))
        t = max(abs(m) for m in move)
        fast = glfw.KEY_LEFT_SHIFT in seconds or glfw.KEY_RIGHT_SHIFT in seconds
        if t > 0:
            self.camera.fly((move[0] / t, move[1] / t, move[2] / t), t, fast)
        if self.camera.mode == "orbit":
            px = ORBIT_KEY_DEG_PER_S / self.camera.settings.rotate_deg_per_px
            dx = axis(glfw.KEY_RIGHT, glfw.KEY_LEFT) * px
            dy = axis(glfw.KEY_DOWN, glfw.KEY_UP) * px
            if dx or dy:
                self.camera.orbit_rotate(dx, dy)
