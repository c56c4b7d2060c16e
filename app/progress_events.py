"""Progress events: one ``progress.jsonl`` line → a checked :class:`ProgressEvent`, or one line why not.

The trainer appends one JSON object per line to ``WORKDIR/progress.jsonl`` (``trainer/progress.py``). What a
job writes is untrusted: each line is parsed by ``renderer.safe_json.parse_json`` and every field the viewer
uses is checked here (type, range, enum). No glfw, imgui or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from renderer.safe_json import parse_json
from trainer.progress import STAGES  # the trainer's own list (a light module: no torch)

EVENTS: tuple[str, ...] = ("stage_start", "progress", "stage_done", "scene", "done", "error", "cancelled")
"""The ``progress.jsonl`` events the viewer understands (written by ``trainer.progress.ProgressLog``)."""
MAX_LINE_BYTES = 64 * 1024
"""Longest ``progress.jsonl`` line accepted (an event is ~200 bytes); longer lines are skipped."""
MAX_EVENT_DEPTH = 4
"""Deepest nesting accepted in an event (the trainer writes flat objects)."""
MAX_COUNT = 10**12
"""Largest step or total accepted."""
MAX_PATH_CHARS = 4096
"""Longest scene path accepted in an event."""
MAX_MESSAGE_CHARS = 500
"""Error messages from the job are cut to this many characters."""
MAX_REPORTS = 10
"""Problems reported per followed file; later ones are only counted."""


class ProgressFormatError(ValueError):
    """A ``progress.jsonl`` line is malformed (one line naming the file, the line number and the problem)."""


@dataclass(frozen=True)
class ProgressEvent:
    """One checked ``progress.jsonl`` event: only the fields the viewer uses, each of the right type."""

    event: str
    """One of :data:`EVENTS`."""
    stage: str | None = None
    """One of the trainer's ``STAGES`` (required for stage_start, progress, stage_done and scene)."""
    step: int = 0
    """progress: steps done, 0 ≤ step ≤ total."""
    total: int = 0
    """progress: steps of the stage."""
    loss: float | None = None
    psnr: float | None = None
    elapsed: float | None = None
    """Seconds, finite and ≥ 0."""
    eta: float | None = None
    """Seconds, finite and ≥ 0."""
    time: float | None = None
    """Unix time, finite and ≥ 0."""
    path: str | None = None
    """scene (required) and done: the .kilo written."""
    message: str | None = None
    """error: one line, at most MAX_MESSAGE_CHARS characters."""


def _short(v: Any) -> str:
    """``repr(v)`` cut to 40 characters, for messages."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters (whitespace runs become one space)."""
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _count(ev: dict[str, Any], key: str, name: str) -> int:
    v = ev.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise ProgressFormatError(f"{name}: {key} must be an integer in 0..{MAX_COUNT}, got {_short(v)}")
    return v


def _number(ev: dict[str, Any], key: str, name: str, *, nonneg: bool = False) -> float | None:
    """A finite float (≥ 0 with ``nonneg``) or None when the key is absent or null."""
    v = ev.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProgressFormatError(f"{name}: {key} must be a number or null, got {_short(v)}")
    f = float(v)  # parse_json keeps integers to 20 digits, so this is finite
    if not (abs(f) < float("inf")) or (nonneg and f < 0):
        raise ProgressFormatError(
            f"{name}: {key} must be a finite number{' >= 0' if nonneg else ''}, got {v}"
        )
    return f


def _path(ev: dict[str, Any], name: str, required: bool) -> str | None:
    v = ev.get("path")
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v or len(v) > MAX_PATH_CHARS or not v.isprintable():
        raise ProgressFormatError(
            f"{name}: path must be a printable string of 1..{MAX_PATH_CHARS} characters, got {_short(v)}"
        )
    return v


def parse_event(line: str | bytes, name: str) -> ProgressEvent:
    """One ``progress.jsonl`` line → :class:`ProgressEvent`; ``ProgressFormatError`` (one line) otherwise.

    Args:
        name: the file and line number, for the message ("W/progress.jsonl:12").
    """
    ev = parse_json(
        line,
        name,
        error=ProgressFormatError,
        what="progress event",
        max_bytes=MAX_LINE_BYTES,
        max_depth=MAX_EVENT_DEPTH,
    )
    if not isinstance(ev, dict):
        raise ProgressFormatError(f"{name}: progress event must be a JSON object, got {type(ev).__name__}")
    kind = ev.get("event")
    if not isinstance(kind, str) or kind not in EVENTS:
        raise ProgressFormatError(
            f"{name}: unknown event {_short(kind)} (expected one of {', '.join(EVENTS)})"
        )
    stage = ev.get("stage")
    if stage is not None or kind in ("stage_start", "progress", "stage_done", "scene"):
        if not isinstance(stage, str) or stage not in STAGES:
            raise ProgressFormatError(
                f"{name}: {kind} event: stage must be one of {', '.join(STAGES)}, got {_short(stage)}"
            )
    out: dict[str, Any] = {"event": kind, "stage": stage, "time": _number(ev, "time", name, nonneg=True)}
    if kind == "progress":
        step, total = _count(ev, "step", name), _count(ev, "total", name)
        if step > total:
            raise ProgressFormatError(f"{name}: step {step} is past the total {total}")
        out.update(
            step=step,
            total=total,
            loss=_number(ev, "loss", name),
            psnr=_number(ev, "psnr", name),
            elapsed=_number(ev, "elapsed", name, nonneg=True),
            eta=_number(ev, "eta", name, nonneg=True),
        )
    elif kind == "stage_done":
        out["elapsed"] = _number(ev, "elapsed", name, nonneg=True)
    elif kind in ("scene", "done"):
        out["path"] = _path(ev, name, required=kind == "scene")
    elif kind == "error":
        msg = ev.get("message")
        if msg is not None and not isinstance(msg, str):
            raise ProgressFormatError(f"{name}: error message must be a string, got {_short(msg)}")
        out["message"] = one_line(msg) if msg else None
    return ProgressEvent(**out)
