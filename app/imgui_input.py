"""ImGui's GLFW input, latched: a key or mouse button pressed and released between two UI frames still
reaches ImGui as down for one frame.

pyimgui's ``GlfwRenderer`` sets ``io.keys_down`` from key events and polls the mouse buttons once per frame,
so on a loaded machine (the UI thread at 2–10 Hz) a quick click or an ``Enter`` tapped in a text field
is lost: ImGui never sees the button or key down. Here a release that comes in the same frame as its press
is held back until the next frame.
"""

from __future__ import annotations

from typing import Any

import glfw
from imgui.integrations.glfw import GlfwRenderer


class LatchedGlfwRenderer(GlfwRenderer):  # type: ignore[misc]
    """``GlfwRenderer`` whose presses last at least one UI frame (callbacks are attached by the viewer)."""

    def __init__(self, window: Any) -> None:
        super().__init__(window, attach_callbacks=False)
        self._keys_pressed: set[int] = set()
        """Keys pressed since the last frame started."""
        self._keys_release: set[int] = set()
        """Keys released in the frame they were pressed (ImGui sees them down in that frame)."""
        self._release_due: set[int] = set()
        """Those of the last frame: released when this frame starts."""
        self._buttons_pressed: set[int] = set()
        """Mouse buttons pressed since the last frame started (down for that frame even if released)."""

    def keyboard_callback(self, window: Any, key: int, scancode: int, action: int, mods: int) -> None:
        """Forward a key event, holding back the release of a key pressed in the same frame."""
        if key < 0:
            return
        if action == glfw.RELEASE and key in self._keys_pressed:
            self._keys_release.add(key)
            return
        if action == glfw.PRESS:
            self._keys_pressed.add(key)
            self._keys_release.discard(key)
            self._release_due.discard(key)
        super().keyboard_callback(window, key, scancode, action, mods)

    def mouse_button_callback(self, button: int, action: int) -> None:
        """Note a mouse press, so a click shorter than a frame is seen for one frame."""
        if action == glfw.PRESS and 0 <= button < 3:
            self._buttons_pressed.add(button)

    def process_inputs(self) -> None:
        """Start a UI frame's input: the polled state, plus this frame's latched presses."""
        super().process_inputs()
        io = self.io
        for b in self._buttons_pressed:
            io.mouse_down[b] = True
        self._buttons_pressed.clear()
        for key in self._release_due:  # pressed and released in the last frame, which saw it down
            super().keyboard_callback(self.window, key, 0, glfw.RELEASE, 0)
        self._release_due, self._keys_release = self._keys_release, set()
        self._keys_pressed.clear()
