"""Camera JSON from outside the viewer (the clipboard, ``--camera FILE``): parsed and checked in one place.

Both are untrusted: the text goes through ``renderer.safe_json.parse_json`` (size, nesting depth, integer
digits, finite numbers, duplicate keys) and ``renderer.camera.Camera.from_dict``; anything wrong, including
a value that overflows when converted, is one ``CameraFormatError`` line naming the source.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

MAX_CAMERA_BYTES = 1 << 20
"""Largest camera JSON accepted (a pose is ~400 bytes)."""


def camera_from_json(text: str | bytes, name: str) -> Any:
    """A ``renderer.camera.Camera`` from camera JSON text; ``CameraFormatError`` (one line) otherwise.

    Args:
        name: where the text came from, for the message ("clipboard", a file path).
    """
    from renderer.camera import Camera, CameraFormatError
    from renderer.safe_json import parse_json

    d = parse_json(text, name, error=CameraFormatError, what="camera JSON", max_bytes=MAX_CAMERA_BYTES)
    try:
        cam = Camera.from_dict(d, name=name)
    except CameraFormatError:
        raise
    except (OverflowError, ValueError, TypeError, ArithmeticError) as e:
        raise CameraFormatError(
            f"{name}: not a usable camera ({type(e).__name__}: {e})".splitlines()[0]
        ) from None
    _check_usable(cam, name)
    return cam


def _check_usable(cam: Any, name: str) -> None:
    """Refuse a pose the viewer cannot turn into a view (values whose products overflow)."""
    import numpy as np

    from renderer.camera import CameraFormatError

    c2w = np.asarray(cam.c2w, dtype=np.float64)
    with np.errstate(all="ignore"):
        axes = np.linalg.norm(c2w[:3, :3], axis=0)
        fov = 2 * math.atan(0.5 * cam.height / cam.focal)
    if not (np.all(np.isfinite(axes)) and np.all(axes > 0) and math.isfinite(fov) and fov > 0):
        raise CameraFormatError(f"{name}: camera pose is out of range (focal {cam.focal:g})")


def load_camera_file(path: str | os.PathLike[str]) -> Any:
    """Read a camera JSON file (at most MAX_CAMERA_BYTES, a regular file); ``CameraFormatError`` naming it."""
    from renderer.camera import CameraFormatError

    p = Path(path)
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise CameraFormatError(f"{p}: is a directory, not a camera JSON file")
        if not stat.S_ISREG(st.st_mode):
            raise CameraFormatError(f"{p}: not a regular file")
        if st.st_size > MAX_CAMERA_BYTES:
            raise CameraFormatError(f"{p}: camera file is {st.st_size} bytes, more than {MAX_CAMERA_BYTES}")
        with open(p, "rb") as f:
            data = f.read(MAX_CAMERA_BYTES + 1)
    except CameraFormatError:
        raise
    except FileNotFoundError:
        raise CameraFormatError(f"{p}: camera file not found") from None
    except (OSError, ValueError) as e:  # a symlink loop, no permission, a NUL in the name
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CameraFormatError(f"{p}: cannot read camera file ({why})".splitlines()[0]) from None
    return camera_from_json(data, str(p))
