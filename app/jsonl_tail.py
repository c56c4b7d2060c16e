"""Following a growing file: :class:`JsonlTail` returns the complete lines appended since the last read.

Bounded in bytes per read and per line; a file that shrinks or is replaced is read again from its start; a
file that cannot be read is reported once. Used for a training job's ``progress.jsonl`` and its log.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.progress_events import MAX_LINE_BYTES, MAX_REPORTS, one_line
from renderer.safe_json import parse_json

MAX_READ_BYTES = 4 * 2**20
"""Most bytes read from a followed file per poll (the rest is read by the next polls)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailLine:
    """One complete line of a followed file."""

    offset: int
    """Byte offset of the line's start in the file."""
    number: int
    """1-based line number, counted from where the reader started (the file's start unless given)."""
    data: bytes
    """The line without its newline (and without a trailing carriage return)."""
    problem: str = ""
    """Why the line cannot be used (it was too long: ``data`` is empty); the reader reports it in order."""


class JsonlTail:
    """Incremental reader of a JSON-lines file: returns only complete lines appended since the last read.

    Bounded: a poll reads at most ``MAX_READ_BYTES``, a line longer than ``max_line`` bytes is skipped and
    reported (``long_lines="skip"``) or cut to its last ``max_line`` bytes (``"tail"``, for logs). A file
    that shrinks or is replaced (another inode) is read again from its start; one that is not a regular
    file (a folder, a FIFO) or cannot be read is reported once and not opened. Problems go to the log and
    to :meth:`pop_problems`, the first ``MAX_REPORTS`` of them; later ones are counted in ``problems``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        max_line: int = MAX_LINE_BYTES,
        long_lines: str = "skip",
    ) -> None:
        if long_lines not in ("skip", "tail"):
            raise ValueError(f"long_lines must be 'skip' or 'tail', got {long_lines!r}")
        self.path = Path(path)
        self.offset = offset
        self.max_line = max_line
        self.long_lines = long_lines
        self.resets = 0
        """Times the file shrank or was replaced and reading started over."""
        self.problems = 0
        """Problems seen (malformed lines, unreadable file), reported or not."""
        self._partial = b""
        self._partial_start = offset
        self._skipping = False
        self._line = 0
        self._ident: tuple[int, int] | None = None
        self._file_error = ""
        self._messages: list[str] = []

    # ---- problems ------------------------------------------------------------------------------------
    def report(self, message: str) -> None:
        """Record one problem: logged (one line) while fewer than MAX_REPORTS were, then only counted."""
        self.problems += 1
        if self.problems <= MAX_REPORTS:
            text = one_line(message)
            if self.problems == MAX_REPORTS:
                text += f" (further problems in {self.path} are skipped without a message)"
            log.warning(text)
            self._messages.append(text)

    def pop_problems(self) -> list[str]:
        """Problem messages reported since the last call."""
        out, self._messages = self._messages, []
        return out

    # ---- reading -------------------------------------------------------------------------------------
    def read_new(self) -> list[dict[str, Any]]:
        """Parse the lines appended since the last call (malformed lines are reported and skipped)."""
        out: list[dict[str, Any]] = []
        for rec in self.read_records():
            if rec.problem:
                self.report(rec.problem)
                continue
            name = f"{self.path}:{rec.number}"
            try:
                obj = parse_json(rec.data, name, what="JSON line", max_bytes=self.max_line)
            except ValueError as e:
                self.report(str(e))
                continue
            if isinstance(obj, dict):
                out.append(obj)
            else:
                self.report(f"{name}: expected a JSON object, got {type(obj).__name__}")
        return out

    def read_new_lines(self) -> list[str]:
        """Complete text lines appended since the last call (undecodable bytes replaced)."""
        out = []
        for rec in self.read_records():
            if rec.problem:
                self.report(rec.problem)
            else:
                out.append(rec.data.decode("utf-8", "replace"))
        return out

    def _file_problem(self, message: str) -> None:
        if message != self._file_error:  # once per distinct problem, not once per poll
            self._file_error = message
            self.report(message)

    def _restart(self) -> None:
        self.offset, self._partial, self._partial_start, self._skipping, self._line = 0, b"", 0, False, 0
        self.resets += 1

    def read_records(self) -> list[TailLine]:
        """Complete non-blank lines appended since the last call, with their offsets and line numbers, in
        file order; a line that was too long comes as a record with ``problem`` set (the caller reports it
        with :meth:`report`, so reports stay in line order)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:  # a symlink loop, no permission, a NUL in the name
            self._file_problem(f"{self.path}: cannot read ({os_reason(e)})")
            return []
        if not stat.S_ISREG(st.st_mode):
            self._file_problem(f"{self.path}: not a regular file")
            return []
        ident = (st.st_dev, st.st_ino)
        if self._ident is not None and ident != self._ident:
            log.info("%s was replaced: reading it from its start", self.path)
            self._restart()
        elif st.st_size < self.offset:
            log.info("%s shrank: reading it from its start", self.path)
            self._restart()
        self._ident = ident
        if st.st_size == self.offset:
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            try:
                data = os.pread(fd, min(st.st_size - self.offset, MAX_READ_BYTES), self.offset)
            finally:
                os.close(fd)
        except OSError as e:
            self._file_problem(f"{self.path}: cannot read ({os_reason(e)})")
            return []
        self._file_error = ""
        base = self.offset
        self.offset += len(data)
        return self._split(data, base)

    def _split(self, data: bytes, base: int) -> list[TailLine]:
        out: list[TailLine] = []
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:  # an unfinished line: keep it (bounded) for the next read
                if not self._skipping:
                    if not self._partial:
                        self._partial_start = base + pos
                    self._partial += data[pos:]
                    out += self._overflow()
                break
            piece = data[pos:nl]
            start = base + pos if not self._partial else self._partial_start
            pos = nl + 1
            self._line += 1
            if self._skipping:
                self._skipping = False
                continue
            line, self._partial = self._partial + piece, b""
            if len(line) > self.max_line:
                if self.long_lines == "skip":
                    out.append(self._too_long(start, self._line))
                    continue
                line = line[-self.max_line :]
            line = line.rstrip(b"\r")
            if line.strip():
                out.append(TailLine(start, self._line, line))
        return out

    def _overflow(self) -> list[TailLine]:
        """An unfinished line past ``max_line``: skip it to its newline (returned as a problem record), or
        keep only its tail."""
        if len(self._partial) <= self.max_line:
            return []
        if self.long_lines == "tail":
            self._partial = self._partial[-self.max_line :]
            return []
        rec = self._too_long(self._partial_start, self._line + 1)
        self._partial, self._skipping = b"", True
        return [rec]

    def _too_long(self, offset: int, number: int) -> TailLine:
        why = f"{self.path}:{number}: line is longer than {self.max_line} bytes: skipped"
        return TailLine(offset, number, b"", problem=why)


def os_reason(e: BaseException) -> str:
    """The reason of an OSError without the file name (which the message already has)."""
    return e.strerror if isinstance(e, OSError) and e.strerror else one_line(str(e), 120)
