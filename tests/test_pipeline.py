"""The tiny preset end to end on real lego, with SIGKILL / SIGTERM mid-stage and resumption.

One module-scoped run: `python -m trainer run --preset tiny` is SIGKILLed during fine-tuning right after it
rewrote the output .kilo, then rerun to completion. The tests check the result (loads, renders, beats a
mean-colour image), the resumption (no finished stage redone, fine-tuning continues from its checkpoint), the
progress.jsonl contract, and a SIGTERM during distillation (exit 143, `cancelled`, then resume).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 400


def _env() -> dict[str, str]:
    # one thread: far faster than two on a shared 2-core machine for these tiny ops
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args, "--no-bar"]


def _events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "progress.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def _wait_for(proc: subprocess.Popen, cond, timeout: float = TIMEOUT) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return bool(cond())
        time.sleep(0.05)
    return False


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


@pytest.fixture(scope="module")
def tiny_run(blender_lego: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("tiny")
    out = base / "lego.kilo"
    work = base / "lego.kilo.work"
    args = _cmd("run", "--data", str(blender_lego), "--out", str(out), "--preset", "tiny")
    proc = subprocess.Popen(args, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finetune_published() -> bool:
        ev = _events(work)
        return (
            any(e["event"] == "scene" and e["stage"] == "finetune" for e in ev)
            and (work / "finetune.ckpt").exists()
        )

    seen = _wait_for(proc, finetune_published)
    finished_early = proc.poll() is not None
    proc.kill()  # SIGKILL mid-finetune
    _, err = proc.communicate(timeout=60)
    assert seen, f"fine-tuning never published a scene; stderr: {err.decode()[-2000:]}"
    assert not finished_early, "the tiny run finished before it could be killed"
    from renderer.scene import load_scene

    killed_scene = load_scene(out)  # never half-written: the last atomic write is complete
    events_before = len(_events(work))
    ckpt_step = _ckpt_step(work / "finetune.ckpt")
    t0 = time.monotonic()
    rerun = subprocess.run(args, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return {
        "out": out,
        "work": work,
        "args": args,
        "data": blender_lego,
        "killed_scene": killed_scene,
        "events_before": events_before,
        "ckpt_step": ckpt_step,
        "rerun_seconds": time.monotonic() - t0,
    }


def test_tiny_result_loads_renders_and_beats_mean_colour(tiny_run: dict[str, Any]) -> None:
    from renderer.camera import Camera
    from renderer.render import render_image
    from renderer.scene import load_scene
    from trainer.data import load_dataset
    from trainer.metrics import psnr
    from trainer.presets import get_preset

    scene = load_scene(tiny_run["out"])
    assert scene.weights["l0.weight"].dtype == torch.float16
    assert scene.density_activation == "softplus"
    # the preset trains only 6 of the 10 position octaves: l0's rows for the others are zero, the rest not
    kept = 3 * (1 + 2 * 6)
    assert get_preset("tiny").trained_pos_freqs == 6 and scene.weights["l0.weight"].shape[1] == 63
    assert bool((scene.weights["l0.weight"][:, kept:] == 0).all())
    assert bool((scene.weights["l0.weight"][:, :kept] != 0).any(dim=1).all())
    assert scene.cameras is not None and scene.cameras.c2w.shape == (get_preset("tiny").train_views, 4, 4)
    prov = scene.provenance
    for key in ("dataset", "preset", "steps", "stage_seconds", "peak_ram_mb", "teacher_psnr", "student_psnr"):
        assert key in prov, key
    assert prov["preset"] == "tiny" and set(prov["stage_seconds"]) == {
        "teacher",
        "occupancy",
        "distill",
        "finetune",
    }
    test = load_dataset(tiny_run["data"], "test", 16, limit=2)
    gains = []
    for i in range(2):
        cam = Camera(test.width, test.height, float(test.focal), test.c2w[i].astype(np.float64))
        img = render_image(scene, cam).image.numpy()
        gt = test.images[i]
        mean_img = np.broadcast_to(gt.reshape(-1, 3).mean(0), gt.shape)
        gains.append(psnr(img, gt) - psnr(mean_img, gt))
    assert np.mean(gains) > 3.0, gains


def test_resume_after_sigkill_continues_finetune_and_redoes_nothing(tiny_run: dict[str, Any]) -> None:
    ev = _events(tiny_run["work"])
    starts = [e["stage"] for e in ev if e["event"] == "stage_start"]
    assert starts.count("teacher") == 1 and starts.count("occupancy") == 1 and starts.count("distill") == 1
    assert starts.count("finetune") == 2
    after = ev[tiny_run["events_before"] :]
    assert after[0] == {**after[0], "event": "stage_start", "stage": "finetune"}
    first = next(e for e in after if e["event"] == "progress")
    assert first["step"] == tiny_run["ckpt_step"] + 1 > 1
    assert after[-1]["event"] == "done" and after[-1]["path"] == str(tiny_run["out"].resolve())
    assert any(e["event"] == "scene" and e["stage"] == "finetune" for e in after)


def test_progress_events_follow_the_contract(tiny_run: dict[str, Any]) -> None:
    keys = {
        "stage_start": {"event", "stage", "time"},
        "progress": {"event", "stage", "step", "total", "loss", "psnr", "elapsed", "eta", "time"},
        "stage_done": {"event", "stage", "elapsed", "time"},
        "scene": {"event", "stage", "path", "time"},
        "done": {"event", "path", "time"},
        "error": {"event", "stage", "message", "time"},
        "cancelled": {"event", "stage", "time"},
    }
    ev = _events(tiny_run["work"])
    assert ev
    for e in ev:
        assert set(e) == keys[e["event"]], e
        if "stage" in e:
            assert e["stage"] in ("teacher", "occupancy", "distill", "finetune")
    done = [e["stage"] for e in ev if e["event"] == "stage_done"]
    assert done == ["teacher", "occupancy", "distill", "finetune"]
    scenes = [e for e in ev if e["event"] == "scene"]
    assert scenes[0]["stage"] == "distill" and scenes[-1]["stage"] == "finetune"
    teacher_psnr = [e["psnr"] for e in ev if e["event"] == "progress" and e["stage"] == "teacher"]
    assert any(p is not None for p in teacher_psnr)


def test_rerun_of_a_finished_run_does_nothing(tiny_run: dict[str, Any]) -> None:
    before = len(_events(tiny_run["work"]))
    mtime = tiny_run["out"].stat().st_mtime_ns
    proc = subprocess.run(
        tiny_run["args"], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    new = _events(tiny_run["work"])[before:]
    assert [e["event"] for e in new] == ["done"]
    assert tiny_run["out"].stat().st_mtime_ns == mtime


def test_a_removed_output_is_written_again_from_the_finished_run(tiny_run: dict[str, Any]) -> None:
    from renderer.scene import load_scene

    out: Path = tiny_run["out"]
    before = load_scene(out)
    backup = out.with_suffix(".kept")
    out.rename(backup)
    try:
        proc = subprocess.run(
            tiny_run["args"], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert proc.returncode == 0, proc.stderr
        again = load_scene(out)
    finally:
        backup.replace(out)
    # the same weights as the fine-tuning stage wrote: its parameter average (the tiny preset keeps one)
    for k, v in before.weights.items():
        assert torch.equal(again.weights[k], v), k


def test_sigterm_during_distill_checkpoints_then_resumes(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(tiny_run["work"], work)
    for name in ("distill.done", "distill.ckpt", "finetune.done", "finetune.ckpt"):
        (work / name).unlink(missing_ok=True)
    out = tmp_path / "o.kilo"
    args = _cmd("distill", "--workdir", str(work), "--out", str(out))
    proc = subprocess.Popen(args, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ok = _wait_for(proc, lambda: (work / "distill.ckpt").exists())
    assert ok and proc.poll() is None, "distillation ended before a checkpoint could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    ev = _events(work)
    assert ev[-1]["event"] == "cancelled" and ev[-1]["stage"] == "distill"
    step = _ckpt_step(work / "distill.ckpt")
    assert step > 0 and not (work / "distill.done").exists()
    n = len(ev)
    proc2 = subprocess.run(args, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    after = _events(work)[n:]
    first = next(e for e in after if e["event"] == "progress")
    assert first["stage"] == "distill" and first["step"] == step + 1
    assert (work / "distill.done").exists()
    from renderer.scene import load_scene

    assert load_scene(out).provenance["written_after"] == "distill"


def test_progress_log_rate_limits_and_writes_json_lines(tmp_path: Path) -> None:
    from trainer.progress import ProgressLog

    log = ProgressLog(tmp_path / "p.jsonl", min_interval=1e9, bar=False)
    log.stage_start("distill", total=10, initial=4)
    log.progress(5, 10, float("nan"), None)  # first step after a resume: always written, NaN -> null
    log.progress(6, 10, 0.5, 20.0)  # rate-limited away
    log.progress(10, 10, 0.25, 21.0)  # last step: always written
    log.stage_done("distill")
    log.error("finetune", "two\nlines")
    ev = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [e["event"] for e in ev] == ["stage_start", "progress", "progress", "stage_done", "error"]
    assert ev[1]["step"] == 5 and ev[1]["loss"] is None and ev[1]["psnr"] is None
    assert ev[2]["step"] == 10 and ev[2]["psnr"] == 21.0 and ev[2]["eta"] == 0.0
    assert ev[4]["message"] == "two lines"
