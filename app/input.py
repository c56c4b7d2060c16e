"""Keyboard and mouse handling of the viewer window (glfw callbacks → camera controller and shortcuts).

ImGui sees every event first; the scene gets keys when no ImGui widget has keyboard focus and drags that
start outside the panels. Held keys move the camera in :meth:`InputMixin.apply_held_keys`, scaled by the
frame time, so motion does not depend on the frame rate.
"""

from __future__ import annotations

from typing import Any

import glfw
import imgui

from app.camera_control import CameraController
from app.settings import ViewerSettings

ORBIT_KEY_DEG_PER_S = 90.0
"""Arrow keys in orbit mode turn by this many degrees per second."""


class InputMixin:
    """Input callbacks of :class:`app.viewer.Viewer` (which provides the attributes declared here)."""

    window: Any
    imgui: Any
    settings: ViewerSettings
    camera: CameraController
    held: set[int]
    _buttons: set[int]
    _drag_on_scene: bool
    _cursor: tuple[float, float] | None
    _input_seen: bool

    # provided by Viewer
    def screenshot(self) -> None:
        """Export the current view (Viewer)."""
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
        if not self.settings.show_ui:
            return False
        io = imgui.get_io()
        return bool(io.want_capture_mouse if kind == "mouse" else io.want_capture_keyboard)

    def handle_key(self, window: Any, key: int, scancode: int, action: int, mods: int) -> None:
        """glfw key callback: imgui first, then shortcuts and held keys for motion."""
        self.imgui.keyboard_callback(window, key, scancode, action, mods)
        self._input_seen = True
        if action == glfw.RELEASE:
            self.held.discard(key)
            return
        if self._ui_wants("keyboard"):
            return
        if action == glfw.PRESS:
            self.held.add(key)
            ctrl = bool(mods & glfw.MOD_CONTROL)
            if key == glfw.KEY_TAB:
                self.camera.mode = "fly" if self.camera.mode == "orbit" else "orbit"
            elif key == glfw.KEY_F12:
                self.screenshot()
            elif key == glfw.KEY_F11:
                self.save_window()
            elif key == glfw.KEY_H:
                self.settings.show_ui = not self.settings.show_ui
            elif key == glfw.KEY_R and not ctrl:
                self.reset_view()
            elif key == glfw.KEY_C and ctrl:
                self.copy_pose()
            elif key == glfw.KEY_V and ctrl:
                self.paste_pose_from_clipboard()

    def handle_mouse_button(self, window: Any, button: int, action: int, mods: int) -> None:
        """glfw mouse button callback: a drag belongs to the scene if it starts outside the panels."""
        self._input_seen = True
        if action == glfw.PRESS:
            if not self._buttons:
                self._drag_on_scene = not self._ui_wants("mouse")
            self._buttons.add(button)
        else:
            self._buttons.discard(button)

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
                _, h = glfw.get_framebuffer_size(self.window)
                self.camera.pan(dx, dy, max(h, 1))
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
        """Key motion for ``dt`` seconds: W/A/S/D/Q/E fly (Shift faster), arrows orbit."""
        held = self.held
        if self.camera.mode == "fly":
            move = (
                float((glfw.KEY_D in held) - (glfw.KEY_A in held)),
                float((glfw.KEY_E in held) - (glfw.KEY_Q in held)),
                float((glfw.KEY_W in held) - (glfw.KEY_S in held)),
            )
            fast = glfw.KEY_LEFT_SHIFT in held or glfw.KEY_RIGHT_SHIFT in held
            self.camera.fly(move, dt, fast)
        else:
            px = ORBIT_KEY_DEG_PER_S * dt / self.camera.settings.rotate_deg_per_px
            dx = float((glfw.KEY_RIGHT in held) - (glfw.KEY_LEFT in held)) * px
            dy = float((glfw.KEY_DOWN in held) - (glfw.KEY_UP in held)) * px
            if dx or dy:
                self.camera.orbit_rotate(dx, dy)
