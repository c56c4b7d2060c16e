"""Training jobs: run the trainer CLI as a background process and follow its ``progress.jsonl``.

No glfw or imgui here, so the whole job API is testable without a window. The trainer appends one JSON
object per line to ``WORKDIR/progress.jsonl`` (events ``stage_start``, ``progress``, ``stage_done``,
``scene``, ``done``, ``error``, ``cancelled``; ``trainer/progress.py``); :class:`TrainingJob` reads only the
bytes added since the last :meth:`TrainingJob.poll`, so polling every UI frame costs one ``stat`` when
nothing changed.

What a job writes is untrusted: each line is checked by :func:`app.progress_events.parse_event` and
read by :class:`app.jsonl_tail.JsonlTail`. A malformed line (not JSON, too deep, too long, binary, a field
of the wrong type or out of range) is reported once, in one line naming the file and the line number, and
skipped; the first ``MAX_REPORTS`` problems of a file are reported, the rest only counted. A file that
shrinks or is replaced is read again from its start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.jsonl_tail import JsonlTail, os_reason
from app.progress_events import ProgressEvent, ProgressFormatError, one_line, parse_event
from trainer.preset_names import PRESET_NAMES  # the trainer's own list (no torch)
from trainer.progress import STAGES  # the trainer's own list (a light module: no torch)

PRESETS: tuple[str, ...] = PRESET_NAMES
ROOT = Path(__file__).resolve().parents[1]

MAX_HISTORY = 20000
"""Progress points kept for the loss/PSNR plots (the oldest are dropped)."""

log = logging.getLogger(__name__)


class JobState(StrEnum):
    """Lifecycle of a training job."""

    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class JobConfig:
    """What to train and where."""

    data: str = ""
    """Dataset folder (Blender or NSVF layout)."""
    out: str = "exports/scene.kilo"
    """Output .kilo path."""
    preset: str = "tiny"
    """Trainer preset: one of `trainer.preset_names.PRESET_NAMES`."""
    workdir: str = ""
    """Checkpoint folder holding progress.jsonl; empty means OUT.kilo.work."""
    stage: str = ""
    """One stage to run (teacher, occupancy, distill, finetune); empty runs all stages."""
    python: str = sys.executable
    """Python interpreter that runs ``-m trainer``."""
    niceness: int = 5
    """Run the trainer this much nicer than the viewer so the window stays responsive (0: same priority)."""

    def resolved_workdir(self) -> Path:
        """The checkpoint folder: ``workdir`` or ``OUT.kilo.work``."""
        return Path(self.workdir) if self.workdir else Path(self.out + ".work")

    def absolute(self, base: str | os.PathLike[str] | None = None) -> JobConfig:
        """This config with ``data``, ``out`` and ``workdir`` as absolute paths: ``~`` expanded, relative
        paths resolved against ``base`` (default: this process's working folder, the viewer's), so the
        trainer (which runs in the project folder) and the viewer mean the same files. Empty stays empty."""
        root = Path(base) if base is not None else Path.cwd()

        def full(p: str) -> str:
            return str(root / Path(p).expanduser()) if p else p

        return dataclasses.replace(self, data=full(self.data), out=full(self.out), workdir=full(self.workdir))


def dataset_problem(data: str) -> str:
    """Why the trainer could not read the dataset folder ``data`` (the loaders' own check: a known layout
    with at least one training frame), in one line; "" when it can. Imports the loaders on first use."""
    from trainer.data import DatasetError, count_frames  # lazily: they import torch

    try:
        if count_frames(data, "train") < 1:
            return f"{data}: no training frames"
    except DatasetError as e:
        return str(e)
    except (OSError, ValueError) as e:  # a symlink loop, a NUL in the name
        return one_line(f"{data}: {e}")
    return ""


def trainer_command(cfg: JobConfig) -> list[str]:
    """The trainer command line for ``cfg`` (all stages with ``run``, or one stage)."""
    sub = cfg.stage if cfg.stage else "run"
    if sub != "run" and sub not in STAGES:
        raise ValueError(f"unknown stage {sub!r} (expected one of {', '.join(STAGES)})")
    cmd = [cfg.python, "-m", "trainer", sub]
    if cfg.data:
        cmd += ["--data", cfg.data]
    if cfg.out:
        cmd += ["--out", cfg.out]
    cmd += ["--preset", cfg.preset, "--workdir", str(cfg.resolved_workdir()), "--no-bar"]
    return cmd


@dataclass
class StageProgress:
    """Progress of one stage as last reported."""

    name: str
    status: str = "pending"
    """pending, running, done, error or cancelled."""
    step: int = 0
    total: int = 0
    loss: float | None = None
    psnr: float | None = None
    elapsed: float = 0.0
    eta: float | None = None

    @property
    def fraction(self) -> float:
        """Completed fraction in [0, 1]."""
        if self.status == "done":
            return 1.0
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


@dataclass
class HistoryPoint:
    """One progress event, for the loss/PSNR plot."""

    stage: str
    step: int
    loss: float | None
    psnr: float | None
    time: float


class TrainingJob:
    """A trainer process in its own process group, followed through ``progress.jsonl`` and its log.

    Call :meth:`poll` often (every UI frame is fine). ``command`` overrides the trainer command line
    (tests use small scripts that write progress events).
    """

    def __init__(self, config: JobConfig, command: list[str] | None = None, log_lines: int = 200) -> None:
        self.config = config
        self.paths = config.absolute()
        """``config`` with absolute paths (against the working folder when the job was made): what runs."""
        self.command = command
        self.workdir = self.paths.resolved_workdir()
        self.progress_path = self.workdir / "progress.jsonl"
        self.log_path = self.workdir / "viewer-job.log"
        self.state = JobState.IDLE
        self.message = ""
        self.stages: dict[str, StageProgress] = {s: StageProgress(s) for s in STAGES}
        self.history: deque[HistoryPoint] = deque(maxlen=MAX_HISTORY)
        self.log_tail: deque[str] = deque(maxlen=log_lines)
        self.returncode: int | None = None
        self.last_command: list[str] = []
        self.started_at: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._progress: JsonlTail | None = None
        self._log: JsonlTail | None = None
        self._run_offset = 0
        self._terminal: ProgressEvent | None = None
        self._new_scenes: list[str] = []
        self._cancel_deadline: float | None = None
        self._resets_seen = 0
        self._problems: list[str] = []
        self._refused = False

    # ---- control -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or, when checkpoints exist, resume) the job. Raises RuntimeError while one runs."""
        if self.running:
            raise RuntimeError("a training job is already running")
        self._refused = False
        if self.command is None and self.paths.data:
            problem = dataset_problem(self.paths.data)
            if problem:  # refused before anything starts: nothing to resume
                self.state, self.message, self._refused = JobState.FAILED, f"dataset: {problem}", True
                return
        cmd = self.command if self.command is not None else trainer_command(self.paths)
        if self.config.niceness > 0 and shutil.which("nice"):
            cmd = ["nice", "-n", str(self.config.niceness), *cmd]  # nice execs: same pid, same process group
        self.last_command = cmd
        self._terminal = None
        self.message = ""
        self.returncode = None
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            log_fd = _open_log(self.log_path)
        except (OSError, ValueError) as e:  # the work folder is a file, not writable, a NUL in the name
            self.state = JobState.FAILED
            self.message = f"could not start the trainer: {self.workdir}: {os_reason(e)}"
            return
        if self._progress is None:  # first start: earlier runs' events fill the stage history
            self._progress = JsonlTail(self.progress_path)
        self._run_offset = _regular_file_size(self.progress_path)  # events from here on are this run's
        self.poll_progress()
        logf = os.fdopen(log_fd, "ab")
        if self._log is None:
            self._log = JsonlTail(self.log_path, offset=os.fstat(log_fd).st_size, long_lines="tail")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as e:
            self.state = JobState.FAILED
            self.message = one_line(f"could not start the trainer: {e}")
            return
        finally:
            logf.close()
        self.started_at = time.time()
        self._cancel_deadline = None
        self.state = JobState.RUNNING

    @property
    def can_resume(self) -> bool:
        """Whether a Resume makes sense: the job ran and was cancelled or failed (not refused before it
        started, e.g. for a dataset folder the loaders cannot read)."""
        return self.state in (JobState.CANCELLED, JobState.FAILED) and not self._refused

    def resume(self) -> None:
        """Rerun the same command: the trainer picks up from its checkpoints."""
        self.start()

    def cancel(self, grace_s: float = 10.0) -> None:
        """Send SIGINT to the job's process group; SIGKILL follows if it has not exited after ``grace_s``."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGINT)
        self.state = JobState.CANCELLING
        self._cancel_deadline = time.monotonic() + grace_s

    def wait(self, timeout: float) -> JobState:
        """Poll until the job leaves the running states or ``timeout`` seconds pass; returns the state."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if not self.running:
                break
            time.sleep(0.05)
        return self.state

    @property
    def running(self) -> bool:
        """Whether the process is alive (running or being cancelled)."""
        return self.state in (JobState.RUNNING, JobState.CANCELLING)

    # ---- following -----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read new progress events and log lines, and notice when the process ended."""
        self.poll_progress()
        self._read_log()
        if self._proc is None or not self.running:
            return
        rc = self._proc.poll()
        if rc is None:
            if self._cancel_deadline is not None and time.monotonic() > self._cancel_deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._cancel_deadline = None
            return
        self.poll_progress()
        self._read_log()
        self._finish(rc)

    def _read_log(self) -> None:
        if self._log is None:
            return
        for line in self._log.read_new_lines():
            # progress bars redraw with carriage returns: keep what the terminal would show
            shown = next((seg for seg in reversed(line.split("\r")) if seg.strip()), "")
            if shown:
                self.log_tail.append("".join(c if c.isprintable() else "?" for c in shown.rstrip()))
        self._problems += self._log.pop_problems()

    def poll_progress(self) -> None:
        """Apply the progress events appended since the last call (malformed lines reported and skipped)."""
        tail = self._progress
        if tail is None:
            return
        records = tail.read_records()
        if tail.resets != self._resets_seen:  # the file was truncated or replaced while we followed it
            self._resets_seen = tail.resets
            if self.running:  # what the new file holds was written by this run
                self._run_offset = 0
        for rec in records:
            if rec.problem:
                tail.report(rec.problem)
                continue
            try:
                ev = parse_event(rec.data, f"{self.progress_path}:{rec.number}")
            except ProgressFormatError as e:
                tail.report(str(e))
                continue
            self._apply(ev, current_run=rec.offset >= self._run_offset)
        self._problems += tail.pop_problems()

    def pop_problems(self) -> list[str]:
        """One-line reports of malformed lines and unreadable files since the last call (for the status
        line; they are logged as well)."""
        out, self._problems = self._problems, []
        return out

    def _apply(self, ev: ProgressEvent, current_run: bool) -> None:
        kind = ev.event
        st = self.stages.get(ev.stage) if ev.stage is not None else None
        if kind == "stage_start" and st is not None:
            st.status = "running"
        elif kind == "progress" and st is not None:
            st.status = "running"
            st.step, st.total = ev.step, ev.total
            st.loss, st.psnr, st.eta = ev.loss, ev.psnr, ev.eta
            if ev.elapsed is not None:
                st.elapsed = ev.elapsed
            self.history.append(HistoryPoint(st.name, st.step, st.loss, st.psnr, ev.time or 0.0))
        elif kind == "stage_done" and st is not None:
            st.status = "done"
            st.step = max(st.step, st.total)
            st.eta = 0.0
            if ev.elapsed is not None:
                st.elapsed = ev.elapsed
        elif kind == "scene" and ev.path is not None and current_run:
            self._new_scenes.append(ev.path)
        elif kind == "error":
            if st is not None:
                st.status = "error"
            if current_run:
                self._terminal = ev
        elif kind == "cancelled":
            if st is not None and st.status == "running":
                st.status = "cancelled"
            if current_run:
                self._terminal = ev
        elif kind == "done" and current_run:
            self._terminal = ev
            if ev.path is not None:
                self._new_scenes.append(ev.path)

    def _finish(self, rc: int) -> None:
        self.returncode = rc
        term = self._terminal
        kind = term.event if term is not None else None
        if term is not None and kind == "done" and rc == 0:
            self.state = JobState.DONE
            self.message = f"finished: {term.path or self.paths.out}"
        elif kind == "cancelled" or (self.state == JobState.CANCELLING and kind != "error"):
            self.state = JobState.CANCELLED
            self.message = "cancelled (resume continues from the last checkpoint)"
            for st in self.stages.values():
                if st.status == "running":
                    st.status = "cancelled"
        elif term is not None and kind == "error":
            self.state = JobState.FAILED
            self.message = f"stage {term.stage or '?'} failed: {term.message or 'unknown error'}"
        elif rc == 0:
            self.state = JobState.DONE
            self.message = "finished"
        else:
            self.state = JobState.FAILED
            last = next((ln for ln in reversed(self.log_tail) if ln.strip()), "")
            self.message = one_line(f"trainer crashed (exit code {rc})" + (f": {last}" if last else ""))
        if self.state == JobState.FAILED:
            for st in self.stages.values():
                if st.status == "running":
                    st.status = "error"

    def pop_new_scenes(self) -> list[str]:
        """Scene files announced since the last call (newest last); the viewer hot-reloads the last one."""
        out, self._new_scenes = self._new_scenes, []
        return out

    def current_stage(self) -> str | None:
        """The stage that is running now, if any."""
        return next((s.name for s in self.stages.values() if s.status == "running"), None)


def _regular_file_size(path: Path) -> int:
    """Size of ``path`` in bytes; 0 when it is missing, unreadable or not a regular file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _open_log(path: Path) -> int:
    """Open (create) the job's log for appending; refuses anything but a regular file without blocking."""
    fd = os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644
    )
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, f"{path.name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


@dataclass
class JobHistory:
    """Loss and PSNR series extracted from a job's history, for plotting."""

    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)

    @classmethod
    def from_points(cls, points: Iterable[HistoryPoint], stage: str | None = None) -> JobHistory:
        """Series of the given stage (all stages when None), skipping missing values."""
        pts = [p for p in points if stage is None or p.stage == stage]
        return cls(
            loss=[p.loss for p in pts if p.loss is not None],
            psnr=[p.psnr for p in pts if p.psnr is not None],
        )
