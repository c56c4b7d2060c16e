"""The trainer's files on disk: writes that fail in one line (a full disk names the file), and the stray
temp files that killed atomic writes leave behind.

Every file the trainer writes goes through `renderer.atomic` (a temp file ``.NAME.XXXXXXXX.tmp`` beside the
target, fsynced, then renamed over it), so a reader never sees a half-written file. `writing` turns an
``OSError`` of such a write into a `PipelineError` naming the target; `remove_stale_temp_files` removes the
temp files a SIGKILL left behind.

Work-folder records (``run.json``, ``<stage>.done``, …) are small JSON objects: `read_json` reads them as
untrusted input (a bounded regular file parsed by `renderer.safe_json.parse_json`), `write_json` writes them
atomically.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from renderer.atomic import atomic_write_text
from renderer.safe_json import parse_json
from trainer.errors import PipelineError

MAX_RECORD_BYTES = 16 * 2**20
"""Largest JSON record read from a work folder."""

PROCESS_START = time.time()
"""When this process imported the trainer: temp files older than this are not being written by it."""

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: str | os.PathLike[str], e: OSError) -> PipelineError:
    """The one-line error of a failed write of ``path``."""
    if e.errno in _NO_SPACE:
        return PipelineError(f"no space left writing {path}")
    return PipelineError(f"cannot write {path} ({e.strerror or e})")


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into `PipelineError` ``"no space left writing PATH"`` (disk full or
    over quota) or ``"cannot write PATH (why)"``."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from None


def _temp_pattern(name: str) -> re.Pattern[str]:
    # renderer.atomic: tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp"), 8 characters of [a-z0-9_]
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temp_files(folder: Path, names: Iterable[str], before: float = PROCESS_START) -> list[Path]:
    """Remove the regular files ``.NAME.XXXXXXXX.tmp`` in ``folder`` (the atomic writer's temp files of
    ``names``) last modified before ``before``; returns those removed. Anything else is left alone."""
    patterns = [_temp_pattern(n) for n in names]
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or not any(p.fullmatch(entry.name) for p in patterns):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if entry.is_file(follow_symlinks=False) and st.st_mtime < before:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _read_record_text(path: Path) -> str | None:
    """The text of a small regular file, or None when missing (never blocks on a FIFO or reads a huge
    file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PipelineError(f"{path}: unreadable ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PipelineError(f"{path}: not a regular file")
    if st.st_size > MAX_RECORD_BYTES:
        raise PipelineError(f"{path}: {st.st_size} bytes, more than a record's limit of {MAX_RECORD_BYTES}")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_RECORD_BYTES + 1).decode("utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None


def read_json(path: Path, hint: str = "delete it to redo that stage") -> dict[str, Any] | None:
    """The JSON object in ``path`` (`renderer.safe_json.parse_json`) or None when missing; a malformed file
    is a `PipelineError` naming it, ending with ``hint``."""
    text = _read_record_text(path)
    if text is None:
        return None
    try:
        data = parse_json(text, str(path), error=PipelineError, what="record")
    except PipelineError as e:
        raise PipelineError(f"{e}; {hint}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: not a JSON object; {hint}")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON write (a full disk: `PipelineError` ``no space left writing PATH``)."""
    text = json.dumps(data, indent=1, default=_json_default) + "\n"
    with writing(path):
        atomic_write_text(path, text)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
