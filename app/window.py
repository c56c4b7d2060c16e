"""The GLFW window: an OpenGL 3.3 core forward-compatible context created through EGL, wrapped by moderngl.

EGL everywhere in one process (see ../shared/ENVIRONMENT.md): ``PYOPENGL_PLATFORM=egl`` is set before
anything imports PyOpenGL (pyimgui's renderer does), and glfw creates its context with the EGL API, so
an offscreen EGL context (tests, export) and the window can live in the same process.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import glfw  # noqa: E402
import moderngl  # noqa: E402


class NoDisplayError(RuntimeError):
    """No display to open a window on (one-line message pointing to --headless)."""


NO_DISPLAY_MESSAGE = (
    "cannot open a window: no display found{why}; use --headless --screenshot OUT.png or "
    "--headless --turntable OUT.mp4 (or run under xvfb-run)"
)


def check_display() -> None:
    """Raise NoDisplayError (one line, pointing to --headless) when there is no display for a window."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise NoDisplayError(NO_DISPLAY_MESSAGE.format(why=" ($DISPLAY is not set)"))


_OPEN: set[int] = set()
"""Windows created and not yet destroyed (glfw is terminated when the last one goes)."""


def create_window(width: int, height: int, title: str, visible: bool = True) -> tuple[Any, moderngl.Context]:
    """Open a ``width × height`` window and return (glfw window, moderngl context). Raises NoDisplayError."""
    glfw.ERROR_REPORTING = "ignore"
    check_display()
    if not glfw.init():
        raise NoDisplayError(
            NO_DISPLAY_MESSAGE.format(why=f" (glfw could not open {os.environ.get('DISPLAY')})")
        )
    glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
    glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
    glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
    glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
    glfw.window_hint(glfw.CONTEXT_CREATION_API, glfw.EGL_CONTEXT_API)
    glfw.window_hint(glfw.VISIBLE, visible)
    window = glfw.create_window(width, height, title, None, None)
    if not window:
        glfw.terminate()
        raise NoDisplayError(NO_DISPLAY_MESSAGE.format(why=" (no OpenGL 3.3 window could be created)"))
    _OPEN.add(id(window))
    glfw.make_context_current(window)
    glfw.swap_interval(0)
    moderngl.init_context()
    ctx = moderngl.get_context()
    return window, ctx


def destroy_window(window: Any) -> None:
    """Close the window; shut glfw down with the last one (other viewers in this process keep theirs)."""
    glfw.destroy_window(window)
    _OPEN.discard(id(window))
    if not _OPEN:
        glfw.terminate()
