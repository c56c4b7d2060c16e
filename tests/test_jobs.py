"""The training job API (app/jobs.py): progress parsing, crash detection, cancel/resume, tiny preset."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.jobs import JobConfig, JobHistory, JobState, JsonlTail, TrainingJob, trainer_command

FAKE_TRAINER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    work, mode = sys.argv[1], sys.argv[2]
    prog = os.path.join(work, "progress.jsonl")
    def ev(**e):
        e["time"] = time.time()
        with open(prog, "a") as f:
            f.write(json.dumps(e) + "\\n")
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    print(f"niceness {os.nice(0)}", flush=True)
    ev(event="stage_start", stage="teacher")
    for i in range(1, 5):
        ev(event="progress", stage="teacher", step=i, total=4, loss=1.0 / i, psnr=10.0 + i,
           elapsed=0.1 * i, eta=0.1 * (4 - i))
        print(f"step {i}", flush=True)
    ev(event="stage_done", stage="teacher", elapsed=0.4)
    if mode == "crash":
        ev(event="stage_start", stage="occupancy")
        print("Traceback: boom in occupancy", flush=True)
        sys.exit(3)
    if mode == "error":
        ev(event="error", stage="occupancy", message="dataset has no images")
        sys.exit(2)
    if mode == "slow":
        ev(event="stage_start", stage="occupancy")
        t0 = time.time()
        while not stop and time.time() - t0 < 30:
            time.sleep(0.02)
        ev(event="cancelled", stage="occupancy")
        sys.exit(130)
    ev(event="scene", stage="teacher", path="/tmp/a.kilo")
    ev(event="done", path="/tmp/final.kilo")
    """
)


def _job(tmp_path: Path, mode: str) -> TrainingJob:
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    cfg = JobConfig(data="unused", out=str(tmp_path / "out.kilo"), preset="tiny")
    work = cfg.resolved_workdir()
    return TrainingJob(cfg, command=[sys.executable, str(script), str(work), mode])


def test_jsonl_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"a": 1}\n{"b": 2')
    tail = JsonlTail(p)
    assert tail.read_new() == [{"a": 1}]
    assert tail.read_new() == []
    with open(p, "a") as f:
        f.write('}\nnot json\n{"c": 3}\n')
    assert tail.read_new() == [{"b": 2}, {"c": 3}]


def test_trainer_command_all_stages_and_one_stage() -> None:
    cfg = JobConfig(data="D", out="o.kilo", preset="cpu")
    cmd = trainer_command(cfg)
    assert cmd[1:4] == ["-m", "trainer", "run"]
    assert cmd[cmd.index("--workdir") + 1] == "o.kilo.work"
    cfg.stage = "distill"
    assert trainer_command(cfg)[3] == "distill"
    cfg.stage = "bogus"
    with pytest.raises(ValueError, match="unknown stage"):
        trainer_command(cfg)


def test_job_runs_to_done_with_progress_history_and_scenes(tmp_path: Path) -> None:
    job = _job(tmp_path, "ok")
    job.start()
    assert job.wait(20) == JobState.DONE, job.message
    t = job.stages["teacher"]
    assert (t.status, t.step, t.total, t.fraction) == ("done", 4, 4, 1.0)
    assert [p.step for p in job.history] == [1, 2, 3, 4]
    h = JobHistory.from_points(job.history)
    assert h.loss == pytest.approx([1.0, 0.5, 1 / 3, 0.25]) and h.psnr == [11.0, 12.0, 13.0, 14.0]
    assert job.pop_new_scenes() == ["/tmp/a.kilo", "/tmp/final.kilo"]
    assert job.pop_new_scenes() == []
    assert "step 4" in job.log_tail
    if shutil.which("nice"):  # the trainer runs nicer than the viewer so the UI keeps its CPU share
        assert f"niceness {min(os.nice(0) + 5, 19)}" in job.log_tail


def test_job_crash_is_reported_with_last_log_line(tmp_path: Path) -> None:
    job = _job(tmp_path, "crash")
    job.start()
    assert job.wait(20) == JobState.FAILED
    assert job.returncode == 3
    assert "exit code 3" in job.message and "boom in occupancy" in job.message
    assert job.stages["occupancy"].status == "error"
    assert job.stages["teacher"].status == "done"


def test_job_error_event_message(tmp_path: Path) -> None:
    job = _job(tmp_path, "error")
    job.start()
    assert job.wait(20) == JobState.FAILED
    assert job.message == "stage occupancy failed: dataset has no images"


def test_job_cancel_then_resume_keeps_earlier_history(tmp_path: Path) -> None:
    job = _job(tmp_path, "slow")
    job.start()
    deadline = time.monotonic() + 20
    while job.stages["occupancy"].status != "running" and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert job.current_stage() == "occupancy"
    job.cancel()
    assert job.wait(20) == JobState.CANCELLED
    assert job.stages["occupancy"].status == "cancelled"
    # resume: a new run of the same command; the old run's terminal event must not decide the new state
    assert job.command is not None
    job.command[-1] = "ok"
    job.resume()
    assert job.wait(20) == JobState.DONE, job.message
    lines = (job.workdir / "progress.jsonl").read_text().splitlines()
    assert sum(json.loads(ln)["event"] == "cancelled" for ln in lines) == 1
    assert len(job.history) == 8  # both runs' progress events


def test_start_twice_is_refused(tmp_path: Path) -> None:
    job = _job(tmp_path, "slow")
    job.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            job.start()
    finally:
        job.cancel()
        job.wait(20)
