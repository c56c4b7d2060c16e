"""Training progress: `progress.jsonl` events for the viewer, a tqdm bar for the terminal, cancellation.

`progress.jsonl` holds one JSON object per line, exactly these events (the viewer reads them):

- ``{"event": "stage_start", "stage": S, "time": unix}``
- ``{"event": "progress", "stage": S, "step": i, "total": n, "loss": x, "psnr": p | null, "elapsed": sec,
  "eta": sec, "time": unix}``
- ``{"event": "stage_done", "stage": S, "elapsed": sec, "time": unix}``
- ``{"event": "scene", "stage": S, "path": abs_path_of_kilo, "time": unix}``
- ``{"event": "done", "path": abs_path, "time": unix}``
- ``{"event": "error", "stage": S, "message": one_line, "time": unix}``
- ``{"event": "cancelled", "stage": S, "time": unix}``

with ``S`` one of ``teacher | occupancy | distill | finetune``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from trainer.files import writing

STAGES = ("teacher", "occupancy", "distill", "finetune")


class Cancelled(KeyboardInterrupt):
    """Raised at a step boundary after SIGINT/SIGTERM; ``exit_code`` is 130 or 143.

    A KeyboardInterrupt, so code that checkpoints on Ctrl-C (the teacher's loop) does so here too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"cancelled by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class ProgressLog:
    """Appends events to ``W/progress.jsonl`` (one flushed line each) and drives a tqdm bar per stage.

    ``progress`` events are rate-limited to one per ``min_interval`` seconds (the first and last step of a
    stage are always written) so the file stays small for long runs.
    """

    def __init__(self, path: str | os.PathLike[str], *, min_interval: float = 0.5, bar: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_interval = min_interval
        self.bar_enabled = bar
        self._bar: tqdm | None = None
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self._step0 = 0
        self._first: tuple[int, float] | None = None
        self._last_write = 0.0

    def write(self, event: dict[str, Any]) -> None:
        """Append one event object (``time`` added) as a line, in one ``write``; a write that fails part way
        (a full disk) is cut back off, so the file only ever holds whole lines. Fails as `PipelineError`
        (``no space left writing PATH``)."""
        event = {**event, "time": time.time()}
        data = (json.dumps(event, allow_nan=False) + "\n").encode("utf-8")
        with writing(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(errno.ENOSPC, "short write")
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)

    def _write_quietly(self, event: dict[str, Any]) -> None:
        """`write`, ignoring a failure (the ``error`` / ``cancelled`` events of a run that is ending anyway:
        their own write error must not hide the error being reported)."""
        with contextlib.suppress(ValueError):
            self.write(event)

    def stage_start(self, stage: str, total: int | None = None, initial: int = 0) -> None:
        """Start ``stage`` (``initial`` steps already done when resuming)."""
        self._close_bar()
        self._stage = stage
        self._stage_t0 = time.monotonic()
        self._step0 = initial
        self._first = None
        self._last_write = 0.0
        self.write({"event": "stage_start", "stage": stage})
        if self.bar_enabled and total:
            tty = sys.stderr.isatty()
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=stage,
                unit="it",
                dynamic_ncols=True,
                leave=True,
                mininterval=0.2 if tty else 30.0,  # a log file gets a line every 30 s, not every step
            )

    def progress(self, step: int, total: int, loss: float, psnr: float | None = None) -> None:
        """Report that ``step`` of ``total`` steps are done (1-based), with the current loss and PSNR."""
        stage = self._stage or "unknown"
        now = time.monotonic()
        elapsed = now - self._stage_t0
        if self._first is None:
            self._first = (step, now)
        first_step, first_t = self._first
        if step > first_step:  # rate measured between reports: right even when the resume point is unknown
            eta: float | None = (now - first_t) / (step - first_step) * max(total - step, 0)
        else:
            done_here = max(step - self._step0, 0)
            eta = elapsed / done_here * max(total - step, 0) if done_here > 0 else None
        if self._bar is not None:
            self._bar.n = step
            post = {"loss": f"{loss:.4g}"}
            if psnr is not None:
                post["psnr"] = f"{psnr:.2f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(0)  # redraws only when mininterval has passed
        if step >= total or step <= self._step0 + 1 or now - self._last_write >= self.min_interval:
            self._last_write = now
            self.write(
                {
                    "event": "progress",
                    "stage": stage,
                    "step": int(step),
                    "total": int(total),
                    "loss": _finite_or_none(loss),
                    "psnr": _finite_or_none(psnr),
                    "elapsed": elapsed,
                    "eta": eta,
                }
            )

    def stage_done(self, stage: str) -> float:
        """Close ``stage``; returns its elapsed seconds in this process."""
        self._close_bar()
        elapsed = time.monotonic() - self._stage_t0 if self._stage == stage else 0.0
        self.write({"event": "stage_done", "stage": stage, "elapsed": elapsed})
        self._stage = None
        return elapsed

    def scene(self, stage: str, path: str | os.PathLike[str]) -> None:
        """Announce that the output ``.kilo`` was (re)written."""
        self.write({"event": "scene", "stage": stage, "path": str(Path(path).resolve())})

    def done(self, path: str | os.PathLike[str]) -> None:
        """The whole run finished with ``path``."""
        self._close_bar()
        self.write({"event": "done", "path": str(Path(path).resolve())})

    def error(self, stage: str, message: str) -> None:
        """A stage failed; ``message`` is reduced to one line."""
        self._close_bar()
        one_line = " ".join(str(message).split())
        self._write_quietly({"event": "error", "stage": stage, "message": one_line})

    def cancelled(self, stage: str) -> None:
        """The run was stopped by a signal after checkpointing."""
        self._close_bar()
        self._write_quietly({"event": "cancelled", "stage": stage})

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class CancelToken:
    """Set by SIGINT/SIGTERM; training loops call ``check()`` at step boundaries to stop cleanly.

    A second signal while the first is pending raises ``Cancelled`` immediately from the handler.
    """

    signum: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> CancelToken:
        """Install the handlers (main thread only; elsewhere this is a no-op)."""
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            pass
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Cancelled(self.signum)
        self.signum = signum
        print(f"\nsignal {signum}: checkpointing and stopping (send again to stop now)", file=sys.stderr)

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    def check(self) -> None:
        """Raise ``Cancelled`` if a stop was asked for."""
        if self.signum is not None:
            raise Cancelled(self.signum)
