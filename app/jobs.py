"""Training jobs: run the trainer CLI as a background process and follow its ``progress.jsonl``.

No glfw or imgui here, so the whole job API is testable without a window. The trainer appends one JSON
object per line to ``WORKDIR/progress.jsonl`` (events ``stage_start``, ``progress``, ``stage_done``,
``scene``, ``done``, ``error``, ``cancelled``); :class:`TrainingJob` reads only the bytes added since the
last :meth:`TrainingJob.poll`, so polling every UI frame costs one ``stat`` when nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

STAGES: tuple[str, ...] = ("teacher", "occupancy", "distill", "finetune")
PRESETS: tuple[str, ...] = ("tiny", "cpu", "gpu", "paper")
ROOT = Path(__file__).resolve().parents[1]


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
    """Trainer preset: tiny, cpu, gpu or paper."""
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


class JsonlTail:
    """Incremental reader of a JSON-lines file: returns only complete lines appended since the last read."""

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        """Parse the lines appended since the last call (malformed lines are skipped)."""
        out: list[dict[str, Any]] = []
        for line in self.read_new_lines():
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def read_new_lines(self) -> list[str]:
        """Complete text lines appended since the last call."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # file was truncated or replaced: start over
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines if ln.strip()]


class TrainingJob:
    """A trainer process in its own process group, followed through ``progress.jsonl`` and its log.

    Call :meth:`poll` often (every UI frame is fine). ``command`` overrides the trainer command line
    (tests use small scripts that write progress events).
    """

    def __init__(self, config: JobConfig, command: list[str] | None = None, log_lines: int = 200) -> None:
        self.config = config
        self.command = command
        self.workdir = config.resolved_workdir()
        self.progress_path = self.workdir / "progress.jsonl"
        self.log_path = self.workdir / "viewer-job.log"
        self.state = JobState.IDLE
        self.message = ""
        self.stages: dict[str, StageProgress] = {s: StageProgress(s) for s in STAGES}
        self.history: list[HistoryPoint] = []
        self.log_tail: deque[str] = deque(maxlen=log_lines)
        self.returncode: int | None = None
        self.last_command: list[str] = []
        self.started_at: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._progress: JsonlTail | None = None
        self._log: JsonlTail | None = None
        self._run_offset = 0
        self._terminal: dict[str, Any] | None = None
        self._new_scenes: list[str] = []
        self._cancel_deadline: float | None = None

    # ---- control -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or, when checkpoints exist, resume) the job. Raises RuntimeError while one runs."""
        if self.running:
            raise RuntimeError("a training job is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command if self.command is not None else trainer_command(self.config)
        if self.config.niceness > 0 and shutil.which("nice"):
            cmd = ["nice", "-n", str(self.config.niceness), *cmd]  # nice execs: same pid, same process group
        self.last_command = cmd
        if self._progress is None:  # first start: earlier runs' events fill the stage history
            self._progress = JsonlTail(self.progress_path)
        self._run_offset = self.progress_path.stat().st_size if self.progress_path.exists() else 0
        self._terminal = None
        self.message = ""
        self.returncode = None
        self.poll_progress()
        logf = open(self.log_path, "ab")
        if self._log is None:
            self._log = JsonlTail(self.log_path, offset=self.log_path.stat().st_size)
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
            self.message = f"could not start the trainer: {e}"
            return
        finally:
            logf.close()
        self.started_at = time.time()
        self._cancel_deadline = None
        self.state = JobState.RUNNING

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
                self.log_tail.append(shown)

    def poll_progress(self) -> None:
        """Apply the progress events appended since the last call."""
        if self._progress is None:
            return
        start = self._progress.offset
        events = self._progress.read_new()
        for ev in events:
            self._apply(ev, current_run=start >= self._run_offset)

    def _apply(self, ev: dict[str, Any], current_run: bool) -> None:
        kind = ev.get("event")
        stage = ev.get("stage")
        st = self.stages.get(stage) if isinstance(stage, str) else None
        if kind == "stage_start" and st is not None:
            st.status = "running"
        elif kind == "progress" and st is not None:
            st.status = "running"
            st.step = int(ev.get("step", st.step) or 0)
            st.total = int(ev.get("total", st.total) or 0)
            st.loss = _num(ev.get("loss"))
            st.psnr = _num(ev.get("psnr"))
            st.elapsed = _num(ev.get("elapsed")) or st.elapsed
            st.eta = _num(ev.get("eta"))
            self.history.append(
                HistoryPoint(stage or "", st.step, st.loss, st.psnr, _num(ev.get("time")) or 0)
            )
        elif kind == "stage_done" and st is not None:
            st.status = "done"
            st.step = max(st.step, st.total)
            st.eta = 0.0
            st.elapsed = _num(ev.get("elapsed")) or st.elapsed
        elif kind == "scene" and isinstance(ev.get("path"), str) and current_run:
            self._new_scenes.append(ev["path"])
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
        elif kind == "done":
            if current_run:
                self._terminal = ev
                if isinstance(ev.get("path"), str):
                    self._new_scenes.append(ev["path"])

    def _finish(self, rc: int) -> None:
        self.returncode = rc
        term = self._terminal or {}
        kind = term.get("event")
        if kind == "done" and rc == 0:
            self.state = JobState.DONE
            self.message = f"finished: {term.get('path', self.config.out)}"
        elif kind == "cancelled" or (self.state == JobState.CANCELLING and kind != "error"):
            self.state = JobState.CANCELLED
            self.message = "cancelled (resume continues from the last checkpoint)"
            for st in self.stages.values():
                if st.status == "running":
                    st.status = "cancelled"
        elif kind == "error":
            self.state = JobState.FAILED
            self.message = f"stage {term.get('stage', '?')} failed: {term.get('message', 'unknown error')}"
        elif rc == 0:
            self.state = JobState.DONE
            self.message = "finished"
        else:
            self.state = JobState.FAILED
            last = next((ln for ln in reversed(self.log_tail) if ln.strip()), "")
            self.message = f"trainer crashed (exit code {rc})" + (f": {last.strip()}" if last else "")
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


def _num(v: Any) -> float | None:
    """A finite float from a JSON value, or None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if f == f and abs(f) != float("inf") else None


@dataclass
class JobHistory:
    """Loss and PSNR series extracted from a job's history, for plotting."""

    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)

    @classmethod
    def from_points(cls, points: list[HistoryPoint], stage: str | None = None) -> JobHistory:
        """Series of the given stage (all stages when None), skipping missing values."""
        pts = [p for p in points if stage is None or p.stage == stage]
        return cls(
            loss=[p.loss for p in pts if p.loss is not None],
            psnr=[p.psnr for p in pts if p.psnr is not None],
        )
