"""What the viewer remembers between runs: recent scenes and datasets, fly speed, panel state, export folder
and window size, in one JSON file under the user's config folder.

No glfw or imgui. The file is untrusted (another version of the viewer, a hand edit, a half-copied disk):
it is parsed by ``renderer.safe_json.parse_json`` and every field is checked on its own; a field that does
not pass is dropped (the default is used) and the whole problem is reported in one line, never raised.
Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderer.atomic import atomic_write_text
from renderer.safe_json import parse_json

MAX_RECENT = 10
"""Entries kept in each recent list (most recent first)."""
MAX_SETTINGS_BYTES = 256 * 1024
"""Largest settings file read."""
MAX_PATH_CHARS = 4096
"""Longest path remembered."""
APP_FOLDER = "kilonerf-studio"


@dataclass
class Remembered:
    """The settings kept between runs (None: not remembered yet, the viewer's default applies)."""

    recent_scenes: list[str] = field(default_factory=list)
    """Scene files opened, most recent first (at most MAX_RECENT)."""
    recent_datasets: list[str] = field(default_factory=list)
    """Dataset folders used for training or ground truth, most recent first."""
    fly_speed: float | None = None
    """Fly-mode speed in scene units per second (0 < v ≤ 1e4)."""
    panel_width: float | None = None
    """Width of the side panel in pixels (120 ≤ v ≤ 2000)."""
    panel_collapsed: bool = False
    """Whether the side panel was collapsed."""
    export_folder: str | None = None
    """Folder of screenshots and videos."""
    window_size: tuple[int, int] | None = None
    """Window width and height in pixels (each 200..16384)."""


def settings_path() -> Path:
    """``$KILONERF_STUDIO_SETTINGS`` if set, else ``$XDG_CONFIG_HOME`` (default ``~/.config``)
    ``/kilonerf-studio/settings.json``."""
    explicit = os.environ.get("KILONERF_STUDIO_SETTINGS")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / APP_FOLDER / "settings.json"


def _path_ok(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_PATH_CHARS and v.isprintable()


def _number_in(v: Any, lo: float, hi: float) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and lo <= v <= hi


def _check_field(name: str, v: Any) -> Any:
    """The value of field ``name`` read from the file, or raise ValueError saying why it is unusable."""
    if name in ("recent_scenes", "recent_datasets"):
        if not isinstance(v, list) or not all(_path_ok(p) for p in v):
            raise ValueError("a list of paths")
        return list(dict.fromkeys(v))[:MAX_RECENT]
    if name == "fly_speed" and _number_in(v, 1e-6, 1e4):
        return float(v)
    if name == "panel_width" and _number_in(v, 120, 2000):
        return float(v)
    if name == "panel_collapsed" and isinstance(v, bool):
        return v
    if name == "export_folder" and _path_ok(v):
        return v
    if name == "window_size" and isinstance(v, list) and len(v) == 2:
        if all(isinstance(x, int) and not isinstance(x, bool) and 200 <= x <= 16384 for x in v):
            return (v[0], v[1])
    if v is None and name in ("fly_speed", "panel_width", "export_folder", "window_size"):
        return None
    raise ValueError("out of range or of the wrong type")


def load_remembered(path: Path | None = None) -> tuple[Remembered, str]:
    """The remembered settings and "" — or the defaults for what cannot be used and one line saying what
    was ignored. A missing file is not a problem."""
    path = settings_path() if path is None else path
    try:
        if not path.exists():
            return Remembered(), ""
        if not path.is_file():
            return Remembered(), f"{path}: not a file; settings ignored"
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            return Remembered(), f"{path}: larger than {MAX_SETTINGS_BYTES} bytes; settings ignored"
        data = parse_json(path.read_bytes(), str(path), what="settings", max_bytes=MAX_SETTINGS_BYTES)
    except (OSError, ValueError) as e:  # unreadable, not JSON, too deep, a symlink loop
        return Remembered(), f"{e if isinstance(e, ValueError) else f'{path}: {e}'}; settings ignored"
    if not isinstance(data, dict):
        return Remembered(), f"{path}: not a JSON object; settings ignored"
    out, bad = Remembered(), []
    names = {f.name for f in dataclasses.fields(Remembered)}
    for key, value in data.items():
        if key not in names:
            continue  # a newer viewer's field: kept out, not an error
        try:
            setattr(out, key, _check_field(key, value))
        except ValueError as e:
            bad.append(f"{key} ({e})")
    problem = f"{path}: ignored {', '.join(bad)}" if bad else ""
    return out, problem


def save_remembered(settings: Remembered, path: Path | None = None) -> str:
    """Write the settings atomically (creating the folder); "" or one line saying why it failed."""
    path = settings_path() if path is None else path
    data = dataclasses.asdict(settings)
    if settings.window_size is not None:
        data["window_size"] = list(settings.window_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError as e:
        return f"{path}: settings not saved ({e.strerror or e})"
    return ""


def remember(recent: list[str], item: str) -> list[str]:
    """``recent`` with ``item`` first (once), at most MAX_RECENT entries."""
    if not _path_ok(item):
        return list(recent)
    return [item, *(p for p in recent if p != item)][:MAX_RECENT]
