"""Training jobs (app/jobs.py), progress events, the file tail: parsing, crashes, cancel/resume."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.jobs import JobConfig, JobHistory, JobState, TrainingJob, trainer_command
from app.jsonl_tail import JsonlTail

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


# ---- untrusted progress.jsonl (issue 31): a malformed line is reported once and skipped --------------

GOOD_1 = {"event": "progress", "stage": "teacher", "step": 1, "total": 4, "loss": 0.5, "psnr": 11.0,
          "elapsed": 0.1, "eta": 0.3, "time": 1.0}  # fmt: skip
GOOD_2 = {**GOOD_1, "step": 2, "loss": 0.25, "psnr": 12.0}
I4 = "[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]"

BAD_LINES: dict[str, bytes] = {
    "step not a number": b'{"event":"progress","stage":"teacher","step":"abc","total":4}',
    "total a list": b'{"event":"progress","stage":"teacher","step":1,"total":[5]}',
    "step 1e400": b'{"event":"progress","stage":"teacher","step":1e400,"total":4}',
    "step a float": b'{"event":"progress","stage":"teacher","step":1.5,"total":4}',
    "step a bool": b'{"event":"progress","stage":"teacher","step":true,"total":4}',
    "step negative": b'{"event":"progress","stage":"teacher","step":-1,"total":4}',
    "step past total": b'{"event":"progress","stage":"teacher","step":5,"total":4}',
    "step missing": b'{"event":"progress","stage":"teacher","total":4}',
    "400-digit step": b'{"event":"progress","stage":"teacher","step":' + b"9" * 400 + b',"total":4}',
    "loss a string": b'{"event":"progress","stage":"teacher","step":1,"total":4,"loss":"x"}',
    "loss NaN": b'{"event":"progress","stage":"teacher","step":1,"total":4,"loss":NaN}',
    "psnr Infinity": b'{"event":"progress","stage":"teacher","step":1,"total":4,"psnr":-Infinity}',
    "eta negative": b'{"event":"progress","stage":"teacher","step":1,"total":4,"eta":-1}',
    "elapsed a dict": b'{"event":"progress","stage":"teacher","step":1,"total":4,"elapsed":{}}',
    "time negative": b'{"event":"stage_start","stage":"teacher","time":-5}',
    "unknown stage": b'{"event":"stage_start","stage":"bogus"}',
    "stage a list": b'{"event":"stage_done","stage":["teacher"]}',
    "stage missing": b'{"event":"progress","step":1,"total":4}',
    "unknown event": b'{"event":"explode","stage":"teacher"}',
    "event a number": b'{"event":7}',
    "not an object": b"[1, 2, 3]",
    "a bare string": b'"progress"',
    "duplicate keys": b'{"event":"progress","event":"done"}',
    "deep JSON": b"[" * 5000 + b"]" * 5000,
    "deep object": b'{"event":"done","x":' + b'{"a":' * 10 + b"1" + b"}" * 10 + b"}",
    "not JSON": b"{not json",
    "binary garbage": bytes(range(256)).replace(b"\n", b""),
    "invalid UTF-8": b'{"event":"done","path":"\xff\xfe"}',
    "scene path a number": b'{"event":"scene","stage":"distill","path":5}',
    "scene path empty": b'{"event":"scene","stage":"distill","path":""}',
    "scene path with NUL": b'{"event":"scene","stage":"distill","path":"/tmp/a\\u0000.kilo"}',
    "scene path missing": b'{"event":"scene","stage":"distill"}',
    "error message a list": b'{"event":"error","stage":"teacher","message":["boom"]}',
}


def _quick_job(tmp_path: Path, lines: list[bytes], script: str = "pass") -> TrainingJob:
    """A job whose work folder already holds ``lines`` in progress.jsonl; its command runs ``script``."""
    cfg = JobConfig(out=str(tmp_path / "out.kilo"), niceness=0)
    work = cfg.resolved_workdir()
    work.mkdir(parents=True)
    (work / "progress.jsonl").write_bytes(b"".join(ln + b"\n" for ln in lines))
    return TrainingJob(cfg, command=[sys.executable, "-c", script])


def _line(ev: dict[str, object]) -> bytes:
    return json.dumps(ev).encode()


@pytest.mark.parametrize("bad", list(BAD_LINES), ids=list(BAD_LINES))
def test_malformed_progress_line_already_in_the_work_folder_is_reported_once_and_skipped(
    tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = _quick_job(tmp_path, [_line(GOOD_1), BAD_LINES[bad], _line(GOOD_2)])
    with caplog.at_level("WARNING", logger="app.jsonl_tail"):
        job.start()  # used to raise ValueError/TypeError/OverflowError/RecursionError from here
        assert job.wait(20) == JobState.DONE, job.message
        job.poll()
    problems = job.pop_problems()
    assert len(problems) == 1, problems
    msg = problems[0]
    assert msg.startswith(f"{job.progress_path}:2: ") and "\n" not in msg and len(msg) < 600
    assert [r.getMessage() for r in caplog.records if r.name == "app.jsonl_tail"] == [msg]  # logged once
    assert [p.step for p in job.history] == [1, 2]  # the good lines around it still count
    t = job.stages["teacher"]
    assert (t.step, t.total, t.loss, t.psnr) == (2, 4, 0.25, 12.0)
    assert job.pop_problems() == []


def test_malformed_lines_written_while_the_job_runs_are_skipped(tmp_path: Path) -> None:
    bad = [BAD_LINES[k] for k in ("step not a number", "total a list", "step 1e400", "deep JSON")]
    lines = [_line({"event": "stage_start", "stage": "teacher"}), _line(GOOD_1), *bad, _line(GOOD_2)]
    lines += [_line({"event": "stage_done", "stage": "teacher", "elapsed": 0.5})]
    lines += [_line({"event": "done", "path": "/tmp/final.kilo"})]
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys, time\n"
        "lines = open(sys.argv[1], 'rb').read().split(b'\\n')\n"
        "with open(sys.argv[2], 'ab') as f:\n"
        "    for ln in lines:\n"
        "        f.write(ln + b'\\n'); f.flush(); time.sleep(0.02)\n"
    )
    src = tmp_path / "lines.bin"
    src.write_bytes(b"\n".join(lines))
    cfg = JobConfig(out=str(tmp_path / "out.kilo"), niceness=0)
    job = TrainingJob(
        cfg, command=[sys.executable, str(script), str(src), str(cfg.resolved_workdir() / "progress.jsonl")]
    )
    job.start()
    assert job.wait(20) == JobState.DONE, job.message
    assert job.message == "finished: /tmp/final.kilo"
    assert [p.step for p in job.history] == [1, 2]
    assert job.stages["teacher"].status == "done"
    assert [m.split(": ")[0] for m in job.pop_problems()] == [
        f"{job.progress_path}:{n}" for n in (3, 4, 5, 6)
    ]
    assert job.pop_new_scenes() == ["/tmp/final.kilo"]


def test_huge_line_is_skipped_without_holding_it_in_memory(tmp_path: Path) -> None:
    from app.progress_events import MAX_LINE_BYTES

    p = tmp_path / "progress.jsonl"
    p.write_bytes(b"")
    tail = JsonlTail(p)
    with open(p, "ab") as f:
        f.write(b'{"a": "' + b"x" * (MAX_LINE_BYTES // 2))
    assert tail.read_new() == []
    with open(p, "ab") as f:  # the same line grows past the limit over several reads
        for _ in range(4):
            f.write(b"x" * MAX_LINE_BYTES)
            f.flush()
            assert tail.read_new() == []
            assert len(tail._partial) <= MAX_LINE_BYTES
        f.write(b'"}\n{"b": 2}\n' + b"y" * (3 * MAX_LINE_BYTES) + b'\n{"c": 3}\n')
    assert tail.read_new() == [{"b": 2}, {"c": 3}]
    assert tail.pop_problems() == [
        f"{p}:1: line is longer than {MAX_LINE_BYTES} bytes: skipped",
        f"{p}:3: line is longer than {MAX_LINE_BYTES} bytes: skipped",
    ]


def test_a_poll_reads_a_bounded_number_of_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.jsonl_tail

    monkeypatch.setattr(app.jsonl_tail, "MAX_READ_BYTES", 100)
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"".join(_line({"i": i}) + b"\n" for i in range(40)))
    tail = JsonlTail(p)
    got: list[dict[str, object]] = []
    for _ in range(100):
        before = tail.offset
        got += tail.read_new()
        assert tail.offset - before <= 100
    assert got == [{"i": i} for i in range(40)]


def test_a_file_that_shrinks_or_is_replaced_is_read_again_from_its_start(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    tail = JsonlTail(p)
    assert len(tail.read_new()) == 3
    p.write_text('{"b": 1}\n')  # truncated and rewritten: smaller
    assert tail.read_new() == [{"b": 1}]
    new = tmp_path / "new.jsonl"
    new.write_text('{"c": 1}\n{"c": 2}\n{"c": 3}\n{"c": 4}\n')
    os.replace(new, p)  # rotated: another file, larger than what was read
    assert tail.read_new() == [{"c": 1}, {"c": 2}, {"c": 3}, {"c": 4}]
    assert tail.resets == 2 and tail.pop_problems() == []


def test_progress_file_rotated_during_a_run_counts_as_this_run(tmp_path: Path) -> None:
    old = [_line({"event": "stage_start", "stage": "teacher"})] * 30  # long, from an earlier run
    script = (
        "import json, os, sys, time\n"
        f"p = {str(tmp_path / 'out.kilo.work' / 'progress.jsonl')!r}\n"
        "time.sleep(0.3)\n"
        "open(p + '.new', 'w').write(json.dumps({'event': 'done', 'path': '/tmp/x.kilo'}) + '\\n')\n"
        "os.replace(p + '.new', p)\n"
    )
    job = _quick_job(tmp_path, old, script)
    job.start()
    assert job.wait(20) == JobState.DONE, job.message
    assert job.message == "finished: /tmp/x.kilo" and job.pop_new_scenes() == ["/tmp/x.kilo"]


def test_reports_are_capped_per_file(tmp_path: Path) -> None:
    from app.progress_events import MAX_REPORTS

    job = _quick_job(tmp_path, [b"{bad"] * 50)
    job.start()
    job.wait(20)
    problems = job.pop_problems()
    assert len(problems) == MAX_REPORTS and "further problems" in problems[-1]
    assert job._progress is not None and job._progress.problems == 50


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink loop"])
def test_progress_file_that_is_not_a_regular_file_is_reported_once(tmp_path: Path, kind: str) -> None:
    cfg = JobConfig(out=str(tmp_path / "out.kilo"), niceness=0)
    work = cfg.resolved_workdir()
    work.mkdir()
    p = work / "progress.jsonl"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)  # opening it would block the UI thread forever
    else:
        p.symlink_to(p)
    job = TrainingJob(cfg, command=[sys.executable, "-c", "pass"])
    job.start()
    assert job.wait(20) == JobState.DONE
    for _ in range(3):
        job.poll()
    problems = job.pop_problems()
    assert len(problems) == 1 and problems[0].startswith(f"{p}: "), problems


def test_work_folder_that_cannot_be_made_fails_the_job_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out.kilo"
    (tmp_path / "out.kilo.work").write_text("a file where the work folder should be")
    job = TrainingJob(JobConfig(out=str(out)), command=[sys.executable, "-c", "pass"])
    job.start()  # used to raise FileExistsError
    assert job.state == JobState.FAILED and not job.running
    assert job.message.startswith("could not start the trainer: ") and "\n" not in job.message


def test_log_lines_are_bounded_and_printable(tmp_path: Path) -> None:
    from app.progress_events import MAX_LINE_BYTES

    script = (
        "import sys\nsys.stdout.buffer.write(b'x' * 300000 + b'END\\n' + b'bell\\x07 and \\xff bytes\\n')\n"
    )
    cfg = JobConfig(out=str(tmp_path / "out.kilo"), niceness=0)
    job = TrainingJob(cfg, command=[sys.executable, "-c", script])
    job.start()
    assert job.wait(20) == JobState.DONE
    job.poll()
    assert len(job.log_tail) == 2
    assert job.log_tail[0].endswith("END") and len(job.log_tail[0]) <= MAX_LINE_BYTES
    assert job.log_tail[1] == "bell? and \ufffd bytes"


def test_events_written_by_the_trainers_progress_log_parse(tmp_path: Path) -> None:
    """The viewer's checks accept every event trainer.progress.ProgressLog writes (the contract)."""
    from app.progress_events import EVENTS, STAGES, parse_event
    from trainer import progress

    assert STAGES is progress.STAGES  # one list, the trainer's
    log = progress.ProgressLog(tmp_path / "progress.jsonl", bar=False, min_interval=0.0)
    for stage in progress.STAGES:
        log.stage_start(stage, total=3)
        for i in range(1, 4):
            log.progress(i, 3, 1.0 / i, 20.0 + i if i > 1 else None)
        log.progress(3, 3, float("nan"), float("inf"))  # written as null
        log.scene(stage, tmp_path / "a.kilo")
        log.stage_done(stage)
    log.error("distill", "boom\nsecond line")
    log.cancelled("finetune")
    log.done(tmp_path / "a.kilo")
    lines = (tmp_path / "progress.jsonl").read_bytes().splitlines()
    events = [parse_event(ln, f"progress.jsonl:{i + 1}") for i, ln in enumerate(lines)]
    assert {e.event for e in events} == set(EVENTS)
    assert [e.step for e in events if e.event == "progress"][:4] == [1, 2, 3, 3]
    assert next(e for e in events if e.event == "error").message == "boom second line"


def test_importing_the_job_api_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, app.jobs; sys.exit(int('torch' in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_progress_events_fuzz_never_raise_anything_but_the_format_error() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from app.progress_events import ProgressFormatError, parse_event

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=False),
        st.text(max_size=8),
    )
    values = st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=8,
    )
    keys = st.sampled_from(
        ["event", "stage", "step", "total", "loss", "psnr", "elapsed", "eta", "time", "path", "message"]
    )
    events = st.fixed_dictionaries(
        {
            "event": st.sampled_from(
                ["progress", "stage_start", "stage_done", "scene", "done", "error", "cancelled"]
            )
        },
        optional={"stage": st.sampled_from(["teacher", "distill", "x"]) | values},
    ).flatmap(lambda base: st.dictionaries(keys, values, max_size=6).map(lambda extra: {**extra, **base}))

    job = TrainingJob(JobConfig(out="/nonexistent/out.kilo"))

    @settings(max_examples=400, deadline=None)
    @given(ev=events, raw=st.binary(max_size=64))
    def check(ev: dict[str, object], raw: bytes) -> None:
        for line in (json.dumps(ev, allow_nan=True).encode(), raw):
            try:
                parsed = parse_event(line, "fuzz:1")
            except ProgressFormatError as e:
                assert str(e).startswith("fuzz:1: ") and "\n" not in str(e)
                continue
            job._apply(parsed, current_run=True)
            for s in job.stages.values():
                assert 0.0 <= s.fraction <= 1.0

    check()


def test_problems_are_reported_in_line_order_within_one_read(tmp_path: Path) -> None:
    from app.progress_events import MAX_LINE_BYTES

    long_line = b"[" * (MAX_LINE_BYTES + 10)
    for tail_end in (b"\n", b""):  # the long line complete, or still unfinished when read
        job = _quick_job(tmp_path / f"t{len(tail_end)}", [b"{bad", _line(GOOD_1)])
        with open(job.progress_path, "ab") as f:
            f.write(BAD_LINES["step 1e400"] + b"\n" + long_line + tail_end)
        job.start()
        job.wait(20)
        nums = [int(m.split(":")[1]) for m in job.pop_problems()]
        assert nums == [1, 3, 4], nums


def test_paths_are_resolved_against_the_viewers_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from another folder, the default output lands there (not in the project), and the panel
    follows the same progress.jsonl the trainer writes."""
    monkeypatch.chdir(tmp_path)
    job = TrainingJob(JobConfig(data="data/lego", out="exports/trained.kilo", workdir=""))
    assert job.paths.out == str(tmp_path / "exports" / "trained.kilo")
    assert job.paths.data == str(tmp_path / "data" / "lego")
    assert job.workdir == tmp_path / "exports" / "trained.kilo.work" and job.workdir.is_absolute()
    cmd = trainer_command(job.paths)
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "exports" / "trained.kilo")
    assert cmd[cmd.index("--workdir") + 1] == str(job.workdir)
    assert JobConfig(out="~/x.kilo").absolute("/base").out == str(Path("~/x.kilo").expanduser())
    assert JobConfig().absolute("/base").data == ""  # empty stays empty: the trainer uses run.json's


@pytest.mark.parametrize("kind", ["empty folder", "missing folder", "a file"])
def test_an_unreadable_dataset_is_refused_before_the_job_starts(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    if kind == "empty folder":
        data.mkdir()
    elif kind == "a file":
        data.write_text("x")
    job = TrainingJob(JobConfig(data=str(data), out=str(tmp_path / "o.kilo"), niceness=0))
    job.start()
    assert job.state == JobState.FAILED and not job.running and job.last_command == []
    assert job.message.startswith(f"dataset: {data}: ") and "\n" not in job.message
    assert not job.can_resume  # nothing ran: a Resume would only fail again
    assert not job.workdir.exists()  # nothing was written


def test_a_job_that_ran_and_failed_can_be_resumed(tmp_path: Path) -> None:
    job = TrainingJob(
        JobConfig(out=str(tmp_path / "o.kilo"), niceness=0),
        command=[sys.executable, "-c", "raise SystemExit(2)"],
    )
    job.start()
    assert job.wait(20) == JobState.FAILED and job.can_resume


def test_real_datasets_pass_the_pre_start_check(blender_lego: Path, nsvf_lego: Path) -> None:
    from app.jobs import dataset_problem

    assert dataset_problem(str(blender_lego)) == "" and dataset_problem(str(nsvf_lego)) == ""
    assert "no recognised dataset layout" in dataset_problem(str(blender_lego / "train"))
