"""Issue 31 (the trainer's part): untrusted settings, work folders, teacher and checkpoint files, poses,
paths and a full disk get one line naming the file or key and exit 2; nothing is written before the
settings are checked; a run with invalid recorded settings is repaired with ``--set`` without losing its
finished teacher; stray temp files of killed atomic writes are removed.

Most tests run in process on a synthetic folder (no training); the rest share one work folder whose
teacher and occupancy stages ran with the ``tiny`` preset on real lego (about 8 s).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.test_trainer_cli import _blender, _frame, _one_line_error
from trainer.cli import main

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture()
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(blender_lego: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder whose teacher and occupancy stages finished (tiny preset on lego)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w = tmp_path_factory.mktemp("trained") / "w"
        args = ["--data", str(blender_lego), "--workdir", str(w), "--preset", "tiny", "--no-bar"]
        assert main(["teacher", *args]) == 0
        assert main(["occupancy", "--workdir", str(w), "--no-bar"]) == 0
    finally:
        torch.set_num_threads(n)
    return w


def _copy(trained: Path, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the work folder whose record names the copy's own output (``W/scene.kilo``): a copied
    record still names the original's, which the trainer writes only when given ``--out``."""
    w = tmp_path / "w"
    shutil.copytree(trained, w)
    for name in drop:
        (w / name).unlink(missing_ok=True)
    rec = _record(w)
    rec["out"] = str((w / "scene.kilo").resolve())
    (w / "run.json").write_text(json.dumps(rec))
    return w


def _record(w: Path) -> dict[str, Any]:
    return json.loads((w / "run.json").read_text())


def _edit_record(w: Path, **changes: Any) -> None:
    rec = _record(w)
    for key, value in changes.items():
        node = rec["preset_config"]
        parts = key.split("__")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    (w / "run.json").write_text(json.dumps(rec))


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return _blender(tmp_path / "d", [_frame(0)], sizes=[(8, 8)])


# ---------------------------------------------------------------------------------------------- F5


BAD_SETTINGS = [
    ("teacher.grid_res=5", "teacher.grid_res", "list of 1 to 8 integers"),
    ("teacher.grid_res=[1]", "teacher.grid_res", "each in [2, 512]"),
    ("teacher.grid_res=[16,32,64]", "teacher.upsample_at", "one fraction per step"),
    ("teacher.kind=foo", "teacher.kind", '"grid", "nerf"'),
    ("teacher.batch_rays=0", "teacher.batch_rays", "[1, "),
    ("teacher.steps=0", "teacher.steps", "[1, "),
    ("finetune.lr=-1", "finetune.lr", "(0, 10]"),
    ("finetune.lr=NaN", "finetune.lr", "finite number"),
    ("density_activation=tanh", "density_activation", '"relu", "softplus", "exp"'),
    ("hidden=0", "hidden", "[1, 1024]"),
    ("hidden=2000", "hidden", "[1, 1024]"),
    ("step_voxels=0", "step_voxels", "[0.05, 100]"),
    ("weights_dtype=float64", "weights_dtype", '"float16", "float32"'),
    ("pos_freqs=100", "pos_freqs", "[0, 32]"),
    ("trained_pos_freqs=11", "trained_pos_freqs", "<= pos_freqs"),
    ("distill.steps=0", "distill.steps", "[1, "),
    ("occupancy.threshold=1e9", "occupancy.threshold", "(0, 1000000]"),
    ("occupancy.longest_axis_cells=200", "occupancy.longest_axis_cells", "1048576 networks"),
    ("distill.seed=99999999999", "distill.seed", "[0, 2147483647]"),
    ("name=x", "name", "--preset"),
    ("distill.nope=1", "nope", "unknown setting"),
]


@pytest.mark.parametrize(("item", "key", "allowed"), BAD_SETTINGS)
def test_invalid_set_is_refused_before_anything_is_written(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], item: str, key: str, allowed: str
) -> None:
    out = tmp_path / "o.kilo"
    rc = main(["run", "--data", str(data), "--out", str(out), "--preset", "tiny", "--no-bar", "--set", item])
    assert rc == 2
    _one_line_error(capsys, key, allowed)
    assert not out.exists() and not (tmp_path / "o.kilo.work").exists()


def test_valid_widths_without_native_kernels_are_accepted() -> None:
    from trainer.presets import get_preset

    for hidden in (1, 16, 48, 100, 1024):
        assert get_preset("tiny", {"hidden": hidden}).hidden == hidden


def test_one_list_of_preset_names() -> None:
    """The CLI's --preset help, the viewer's launcher and the preset data share one list of names."""
    from app.jobs import PRESETS as LAUNCHER_PRESETS
    from trainer.preset_names import PRESET_NAMES
    from trainer.presets import PRESETS, PresetError, get_preset

    assert tuple(PRESETS) == PRESET_NAMES == LAUNCHER_PRESETS
    with pytest.raises(PresetError, match="cpu-hd"):
        get_preset("hd")


def test_every_setting_declares_its_rule_and_each_bound_is_enforced() -> None:
    from trainer.presets import PRESETS, Preset, get_preset
    from trainer.settings import is_group, kind_of, problems, rule_of

    for name in PRESETS:
        assert problems(get_preset(name)) == []

    def walk(obj: Any, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any]]]:
        out = []
        for f in dataclasses.fields(obj):
            rule_of(f)  # every field has one
            if is_group(f):
                out += walk(getattr(obj, f.name), prefix + f.name + ".")
            else:
                out.append((prefix + f.name, f))
        return out

    fields = walk(Preset())
    assert len(fields) > 80
    checked = 0
    for key, f in fields:
        rule, (kind, optional) = rule_of(f), kind_of(f)
        if kind not in ("int", "float") or rule.choices:
            continue
        outside = []
        if rule.ge is not None:
            outside.append(rule.ge - (1 if kind == "int" else 1e-9 * max(1.0, abs(rule.ge))))
        if rule.gt is not None:
            outside.append(rule.gt)
        if rule.le is not None:
            outside.append(rule.le + (1 if kind == "int" else 1e-6 * max(1.0, abs(rule.le))))
        if rule.lt is not None:
            outside.append(rule.lt)
        for value in outside:
            v = int(value) if kind == "int" else float(value)
            nested: dict[str, Any] = {}
            node = nested
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = v
            found = problems(get_preset("cpu", nested))
            assert found and found[0].key == key, (key, v, found)
            checked += 1
        if not optional:
            nested = {}
            node = nested
            for part in key.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[key.split(".")[-1]] = None
            assert problems(get_preset("cpu", nested)), key
    assert checked > 100


def test_recorded_invalid_settings_are_repaired_with_set_keeping_the_teacher(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """A run.json from before the checks (density_activation tanh, distill.steps 0, weights_dtype float64)
    whose distillation 'finished' under them: refused until repaired; the repair redoes only the stages
    that depend on a repaired setting."""
    w = _copy(trained, tmp_path)
    _edit_record(w, density_activation="tanh", weights_dtype="float64", distill__steps=0)
    (w / "distill.done").write_text("{}")  # what the old trainer left: a 'finished' NaN distillation
    (w / "distill.ckpt").write_bytes(b"stale")
    teacher_before = (w / "teacher.pt").read_bytes(), (w / "teacher.done").stat().st_mtime_ns
    rc = main(["distill", "--workdir", str(w), "--no-bar"])
    assert rc == 2
    _one_line_error(
        capsys,
        "run.json",
        "recorded setting distill.steps",
        "repair it with --set distill.steps=VALUE --set density_activation=VALUE --set weights_dtype=VALUE",
    )
    assert _record(w)["preset_config"]["density_activation"] == "tanh"  # nothing written
    rc = main(["distill", "--workdir", str(w), "--no-bar", "--set", "density_activation=softplus"])
    assert rc == 2
    _one_line_error(capsys, "run.json", "distill.steps", "repair it with --set distill.steps=")
    # the repair: the distill stage (which ran with them) is redone, the teacher and occupancy are kept
    rc = main(
        [
            "distill",
            "--workdir",
            str(w),
            "--no-bar",
            "--set",
            "density_activation=softplus",
            "--set",
            "distill.steps=5",
            "--set",
            "weights_dtype=float32",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "redoing the distill" in err
    rec = _record(w)["preset_config"]
    assert (rec["density_activation"], rec["distill"]["steps"], rec["weights_dtype"]) == (
        "softplus",
        5,
        "float32",
    )
    assert ((w / "teacher.pt").read_bytes(), (w / "teacher.done").stat().st_mtime_ns) == teacher_before
    assert json.loads((w / "distill.done").read_text())["steps"] == 5
    from renderer.scene import load_scene

    scene = load_scene(w / "scene.kilo")
    assert scene.weights["l0.weight"].dtype == torch.float32
    assert np.isfinite(scene.provenance["distill_error_mean"])
    # the same command again changes nothing
    rc = main(["distill", "--workdir", str(w), "--no-bar", "--set", "distill.steps=5"])
    assert rc == 0 and "already finished" in capsys.readouterr().out


def test_set_on_a_finished_stage_is_refused_and_on_a_pending_one_accepted(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    w = _copy(trained, tmp_path, drop=("occupancy.done", "occupancy.npz"))
    before = (w / "run.json").read_bytes()
    rc = main(["occupancy", "--workdir", str(w), "--no-bar", "--set", "teacher.lr_grid=0.05"])
    assert rc == 2
    _one_line_error(capsys, "--set teacher.lr_grid", "teacher.done", "another --workdir")
    assert (w / "run.json").read_bytes() == before
    # F6: a threshold the teacher's density never reaches is a one-line error, not a RuntimeError traceback
    rc = main(["occupancy", "--workdir", str(w), "--no-bar", "--set", "occupancy.threshold=1e5"])
    assert rc == 2
    _one_line_error(capsys, "teacher.pt", "occupancy.threshold", "--set occupancy.threshold=VALUE")
    assert _record(w)["preset_config"]["occupancy"]["threshold"] == 1e5
    events = [json.loads(line) for line in (w / "progress.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "error" and "threshold" in events[-1]["message"]
    # changing it back: the occupancy stage has not finished, so the change is accepted and it runs
    rc = main(["occupancy", "--workdir", str(w), "--no-bar", "--set", "occupancy.threshold=2"])
    assert rc == 0, capsys.readouterr().err
    assert (w / "occupancy.done").exists()
    # settings that change no stage's result can change at any time
    rc = main(["occupancy", "--workdir", str(w), "--no-bar", "--set", "distill.checkpoint_seconds=7"])
    assert rc == 0 and _record(w)["preset_config"]["distill"]["checkpoint_seconds"] == 7


def test_a_started_stage_restarts_when_its_settings_change(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = _copy(trained, tmp_path)
    (w / "distill.ckpt").write_bytes(b"an unfinished distillation")
    # fine-tuning's settings: distillation's checkpoint is kept (the refusal comes from the stage order)
    rc = main(["finetune", "--workdir", str(w), "--no-bar", "--set", "finetune.lr=0.002"])
    assert rc == 2 and (w / "distill.ckpt").exists()
    _one_line_error(capsys, "distill", "has not finished")
    rc = main(["finetune", "--workdir", str(w), "--no-bar", "--set", "distill.lr=0.002"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "redoing the distill stage" in err and not (w / "distill.ckpt").exists()
    assert (w / "teacher.done").exists() and (w / "occupancy.done").exists()


# ---------------------------------------------------------------------------------------------- work folder


def test_an_output_recorded_elsewhere_needs_out(tmp_path: Path, data: Path, capsys) -> None:
    w = tmp_path / "w"
    victim = tmp_path / "important.kilo"
    victim.write_bytes(b"someone else's scene")
    args = ["occupancy", "--data", str(data), "--workdir", str(w), "--preset", "tiny", "--no-bar"]
    assert main([*args, "--out", str(victim)]) == 2  # records the output; the teacher has not run
    capsys.readouterr()
    assert _record(w)["out"] == str(victim.resolve())
    assert main(["finetune", "--workdir", str(w), "--no-bar"]) == 2
    _one_line_error(capsys, "run.json", str(victim.resolve()), "--out")
    assert victim.read_bytes() == b"someone else's scene"
    # a work folder's own outputs need no --out: W/scene.kilo, and OUT for the default work folder OUT.work
    own = [(tmp_path / "a", []), (tmp_path / "b.kilo.work", ["--out", str(tmp_path / "b.kilo")])]
    for workdir, given in own:
        assert (
            main(["occupancy", "--data", str(data), "--workdir", str(workdir), "--preset", "tiny", *given])
            == 2
        )
        capsys.readouterr()
        assert main(["distill", "--workdir", str(workdir), "--no-bar"]) == 2
        _one_line_error(capsys, "occupancy", "has not finished")


def test_stale_temp_files_of_own_outputs_are_removed(tmp_path: Path, data: Path, capsys) -> None:
    w = tmp_path / "w"
    w.mkdir()
    out = tmp_path / "o.kilo"
    old = time.time() - 3600
    stale = [
        w / ".run.json.ab_cd123.tmp",
        w / ".teacher.ckpt.x1y2z3w4.tmp",
        tmp_path / ".o.kilo.qwertyui.tmp",
    ]
    kept = [
        w / ".notes.txt.abcdefgh.tmp",  # not one of the trainer's outputs
        w / ".run.json.short.tmp",  # not the atomic writer's naming
        tmp_path / ".other.kilo.abcdefgh.tmp",  # beside the output, but another file's
        w / "teacher.ckpt.abcdefgh.tmp",
    ]
    for p in stale + kept:
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    fresh = w / ".distill.ckpt.abcdefgh.tmp"  # newer than this process: maybe being written now
    fresh.write_bytes(b"x")
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    rc = main(["occupancy", "--data", str(data), "--workdir", str(w), "--out", str(out), "--preset", "tiny"])
    _one_line_error(capsys, "teacher", "has not finished")  # refused after the run was opened
    assert rc == 2
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and fresh.exists()


def test_device_and_symlink_loops(tmp_path: Path, data: Path, capsys) -> None:
    out = tmp_path / "o.kilo"
    for device in ("tpu", "meta", "cuda:7" if torch.cuda.is_available() else "cuda"):
        assert main(["run", "--data", str(data), "--out", str(out), "--device", device]) == 2
        _one_line_error(capsys, "--device", device)
    assert main(["eval", str(out), "--data", str(data), "--device", "tpu"]) == 2
    _one_line_error(capsys, "--device tpu")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    loop = str(tmp_path / "l1")
    for args in (["--data", loop, "--out", str(out)], ["--data", str(data), "--out", loop]):
        assert main(["run", *args, "--preset", "tiny"]) == 2
        _one_line_error(capsys, "l1", "symlink loop")
    assert main(["run", "--data", str(data), "--out", str(out), "--workdir", loop]) == 2
    _one_line_error(capsys, "l1", "work folder", "symlink loop")
    assert not out.exists() and not (tmp_path / "o.kilo.work").exists()


def test_malformed_records_are_one_line(tmp_path: Path, data: Path, capsys) -> None:
    w = tmp_path / "w"
    args = ["occupancy", "--data", str(data), "--workdir", str(w), "--preset", "tiny", "--no-bar"]
    assert main(args) == 2
    capsys.readouterr()
    good = (w / "run.json").read_text()
    for text, words in [
        ('{"data": 1, "data": 2}', ("run.json", "duplicate")),
        ("[" * 100 + "]" * 100, ("run.json", "nested")),
        ('{"data": 1e999}', ("run.json", "out of range")),
        ('{"data": 3, "preset": "tiny", "downscale": 1}', ("run.json", "data must be str")),
        (good.replace('"teacher": {', '"teacher": 7, "x": {'), ("run.json", "teacher", "group")),
    ]:
        (w / "run.json").write_text(text)
        assert main(args) == 2
        _one_line_error(capsys, *words)
    (w / "run.json").write_text(good)
    (w / "teacher.done").write_text('{"a": NaN}')
    assert main(args) == 2
    _one_line_error(capsys, "teacher.done", "NaN")
    (w / "teacher.done").unlink()
    os.mkfifo(w / "teacher.done")  # never blocks
    assert main(args) == 2
    _one_line_error(capsys, "teacher.done", "not a regular file")


# ---------------------------------------------------------------------------------------------- files


def _fail_fsync_for(monkeypatch: pytest.MonkeyPatch, fragment: str) -> list[str]:
    """Make the atomic writer's fsync fail with ENOSPC for temp files whose name holds ``fragment``."""
    real = os.fsync
    hits: list[str] = []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if fragment in os.path.basename(name):
            hits.append(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


def test_disk_full_is_one_line_corrupts_nothing_and_the_rerun_continues(
    trained: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    w = _copy(trained, tmp_path, drop=("teacher.done", "teacher.pt", "occupancy.done", "occupancy.npz"))
    ckpt = (w / "teacher.ckpt").read_bytes()
    hits = _fail_fsync_for(monkeypatch, ".teacher.pt.")
    assert main(["teacher", "--workdir", str(w), "--no-bar"]) == 2
    _one_line_error(capsys, f"no space left writing {w / 'teacher.pt'}")
    assert hits and not (w / "teacher.pt").exists() and not (w / "teacher.done").exists()
    assert (w / "teacher.ckpt").read_bytes() == ckpt  # the finished checkpoint is untouched
    assert not [p for p in w.iterdir() if p.name.endswith(".tmp")]
    lines = (w / "progress.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    monkeypatch.undo()
    assert main(["teacher", "--workdir", str(w), "--no-bar"]) == 0  # resumes: no step is trained again
    capsys.readouterr()
    from trainer.teachers import load_teacher

    load_teacher(w / "teacher.pt")
    assert (w / "teacher.done").exists()


def test_disk_full_on_the_first_record(tmp_path: Path, data: Path, capsys, monkeypatch) -> None:
    _fail_fsync_for(monkeypatch, ".run.json.")
    w = tmp_path / "w"
    args = ["occupancy", "--data", str(data), "--workdir", str(w), "--preset", "tiny", "--no-bar"]
    assert main(args) == 2
    _one_line_error(capsys, f"no space left writing {w / 'run.json'}")
    assert not (w / "run.json").exists() and not list(w.iterdir())
    monkeypatch.undo()
    assert main(args) == 2
    _one_line_error(capsys, "teacher", "has not finished")
    assert (w / "run.json").exists()


def test_progress_log_keeps_whole_lines_when_the_disk_fills(tmp_path: Path, monkeypatch) -> None:
    from trainer.errors import PipelineError
    from trainer.progress import ProgressLog

    path = tmp_path / "progress.jsonl"
    log = ProgressLog(path, bar=False)
    log.stage_start("teacher")
    before = path.read_bytes()
    real = os.write

    def short(fd: int, data: bytes) -> int:
        return real(fd, data[:7])  # the disk filled part way

    monkeypatch.setattr(os, "write", short)
    with pytest.raises(PipelineError, match=f"no space left writing {path}"):
        log.stage_done("teacher")
    assert path.read_bytes() == before

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(PipelineError, match="no space left"):
        log.progress(1, 2, 0.5)
    log.error("teacher", "the error being reported is not hidden by the log's own")
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_malformed_teacher_and_checkpoint_files(
    trained: Path, tmp_path: Path, capsys, one_thread: None
) -> None:
    from safetensors.torch import load_file, save_file

    w = _copy(trained, tmp_path, drop=("occupancy.done", "occupancy.npz"))
    good = (w / "teacher.pt").read_bytes()
    (w / "teacher.pt").write_bytes(b"garbage that is not safetensors")
    assert main(["occupancy", "--workdir", str(w), "--no-bar"]) == 2
    _one_line_error(capsys, "teacher.pt", "not a teacher file")
    # a header asking for a lattice its tensors do not hold (no allocation is attempted)
    tensors = load_file(trained / "teacher.pt")
    from safetensors import safe_open

    with safe_open(str(trained / "teacher.pt"), "pt") as f:
        meta = json.loads(f.metadata()["kilonerf_teacher"])
    for arch_change, words in [
        ({"mask_dims": [4000, 4000, 4000]}, "do not match"),
        ({"dims": [2**16, 2**16, 2**16]}, "arch dims"),
        ({"alpha_init": 1.0}, "not a usable teacher"),
        ({"mlp_width": "wide"}, "not a usable teacher"),
    ]:
        bad = {**meta, "arch": {**meta["arch"], **arch_change}}
        save_file(tensors, w / "teacher.pt", metadata={"kilonerf_teacher": json.dumps(bad)})
        assert main(["occupancy", "--workdir", str(w), "--no-bar"]) == 2
        _one_line_error(capsys, "teacher.pt", words)
    nan = dict(tensors)
    nan["model.density_table"] = torch.full_like(nan["model.density_table"], float("nan"))
    save_file(nan, w / "teacher.pt", metadata={"kilonerf_teacher": json.dumps(meta)})
    assert main(["occupancy", "--workdir", str(w), "--no-bar"]) == 2
    _one_line_error(capsys, "teacher.pt", "NaN")
    (w / "teacher.pt").write_bytes(good)
    # a malformed teacher checkpoint when the teacher resumes
    (w / "teacher.done").unlink()
    (w / "teacher.ckpt").write_bytes(b"\x80\x04garbage")
    assert main(["teacher", "--workdir", str(w), "--no-bar"]) == 2
    _one_line_error(capsys, "teacher.ckpt")
    # malformed student checkpoints: garbage, a pickle with code, wrong shapes
    w2 = _copy(trained, tmp_path / "b")
    for content in (b"garbage", b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n."):
        (w2 / "distill.ckpt").write_bytes(content)
        assert main(["distill", "--workdir", str(w2), "--no-bar"]) == 2
        _one_line_error(capsys, "distill.ckpt", "not a checkpoint", "delete it")
    from trainer.distill import DistillState

    DistillState(step=3, params={"l0.weight": torch.zeros(2, 2)}).save(w2 / "distill.ckpt")
    assert main(["distill", "--workdir", str(w2), "--no-bar"]) == 2
    _one_line_error(capsys, "distill.ckpt", "student weights", "this run needs")
    torch.save({"step": -1, "params": {"a": torch.zeros(1)}}, w2 / "distill.ckpt")
    assert main(["distill", "--workdir", str(w2), "--no-bar"]) == 2
    _one_line_error(capsys, "distill.ckpt", "step")
    (w2 / "distill.ckpt").unlink()
    np.savez(w2 / "occupancy.npz", bbox_min=np.zeros(3))
    assert main(["distill", "--workdir", str(w2), "--no-bar"]) == 2
    _one_line_error(capsys, "occupancy.npz", "occupancy.done")


# ---------------------------------------------------------------------------------------------- F6 poses


def test_a_far_pose_is_refused_and_the_hull_never_crashes() -> None:
    from tests.test_teachers import sphere_dataset
    from trainer.errors import PipelineError
    from trainer.teachers import TeacherConfig
    from trainer.teachers.hull import estimate_bbox_from_views
    from trainer.workdir import check_poses

    ds = sphere_dataset(with_bbox=False)
    check_poses(ds)
    far = dataclasses.replace(ds, c2w=ds.c2w.copy())
    far.c2w[3, 0, 3] = 1e30
    with pytest.raises(PipelineError, match="1e\\+30 units from the origin") as e:
        check_poses(far)
    assert "\n" not in str(e.value)
    lo, hi = estimate_bbox_from_views(far, TeacherConfig(hull_res=16))  # was: OverflowError in max_pool2d
    assert lo.shape == hi.shape == (3,)
    for bad in (float("nan"), float("inf")):
        odd = dataclasses.replace(ds, c2w=ds.c2w.copy())
        odd.c2w[0, 1, 1] = bad
        with pytest.raises(PipelineError, match="NaN or infinite"):
            check_poses(odd)
    flat = dataclasses.replace(ds, c2w=ds.c2w.copy())
    flat.c2w[2, :3, :3] = 0
    with pytest.raises(PipelineError, match="degenerate"):
        check_poses(flat)


def test_a_diverging_stage_stops_before_writing_nan(tmp_path: Path) -> None:
    from renderer.networks import init_weights
    from tests.test_distill import BMAX, BMIN, STEP, BallTeacher, ball_layout, spec_for
    from trainer.distill import CellSampler, DistillConfig, distill, initial_state
    from trainer.errors import TrainingDiverged

    class NanTeacher(BallTeacher):
        def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sigma, rgb = super().query(x, d)
            return sigma * float("nan"), rgb

    occ, index = ball_layout()
    m = int(index.max()) + 1
    spec = spec_for(m)
    sampler = CellSampler.from_layout(BMIN, BMAX, index, occ)
    saved: list[Any] = []
    with pytest.raises(TrainingDiverged, match="distill: the loss became nan at step 1.*distill.lr"):
        distill(
            NanTeacher(),
            sampler,
            spec,
            STEP,
            DistillConfig(steps=3, points_per_network=8, checkpoint_every=1),
            initial_state(init_weights(m, spec, 0), -1.0),
            checkpoint=saved.append,
        )
    assert saved == []
