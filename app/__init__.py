"""KiloNeRF viewer application: the only package that touches glfw and imgui.

PyOpenGL (used by pyimgui's renderer) must pick EGL before it is first imported, so that the glfw window
(created through EGL) and offscreen EGL contexts can share one process (see ../shared/ENVIRONMENT.md).
"""

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
