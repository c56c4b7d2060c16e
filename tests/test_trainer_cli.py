"""`python -m trainer`: user errors exit 2 with one line naming the file, and are logged to progress.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _write_png(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 4), 200, np.uint8), "RGBA").save(path)


def _blender(root: Path, frames: list[dict] | None, sizes: list[tuple[int, int]] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    meta: dict = {"camera_angle_x": 0.69}
    if frames is not None:
        meta["frames"] = frames
    (root / "transforms_train.json").write_text(json.dumps(meta))
    for i, (w, h) in enumerate(sizes or []):
        _write_png(root / "train" / f"r_{i}.png", w, h)
    return root


def _frame(i: int) -> dict:
    return {"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()}


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def _events(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "progress.jsonl").read_text().splitlines()]


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o.kilo"), "--preset", "tiny"]
    )
    assert rc == 2
    _one_line_error(capsys, "nope", "not found")
    assert not (tmp_path / "o.kilo").exists() and not (tmp_path / "o.kilo.work").exists()


def test_json_without_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", None)
    rc = main(
        [
            "run",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o.kilo"),
            "--preset",
            "tiny",
            "--downscale",
            "1",
            "--no-bar",
        ]
    )
    assert rc == 2
    _one_line_error(capsys, "transforms_train.json", "frames")
    ev = _events(tmp_path / "o.kilo.work")
    assert ev[-1]["event"] == "error" and ev[-1]["stage"] == "teacher"
    assert "frames" in ev[-1]["message"] and "\n" not in ev[-1]["message"]


def test_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", [_frame(0), _frame(1)], sizes=[(8, 8)])
    rc = main(
        [
            "run",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o.kilo"),
            "--preset",
            "tiny",
            "--downscale",
            "1",
            "--no-bar",
        ]
    )
    assert rc == 2
    _one_line_error(capsys, "r_1")


def test_mis_sized_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", [_frame(0), _frame(1)], sizes=[(8, 8), (9, 8)])
    rc = main(
        [
            "run",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o.kilo"),
            "--preset",
            "tiny",
            "--downscale",
            "1",
            "--no-bar",
        ]
    )
    assert rc == 2
    _one_line_error(capsys, "r_1")


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", [_frame(0)], sizes=[(8, 8)])
    out = tmp_path / "no_such_dir" / "o.kilo"
    rc = main(
        ["run", "--data", str(data), "--out", str(out), "--workdir", str(tmp_path / "w"), "--preset", "tiny"]
    )
    assert rc == 2
    _one_line_error(capsys, "o.kilo", "does not exist")
    (tmp_path / "adir.kilo").mkdir()
    rc = main(["run", "--data", str(data), "--out", str(tmp_path / "adir.kilo"), "--preset", "tiny"])
    assert rc == 2
    _one_line_error(capsys, "adir.kilo", "folder")


def test_unknown_preset_and_bad_downscale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", [_frame(0)], sizes=[(8, 8)])
    rc = main(["run", "--data", str(data), "--out", str(tmp_path / "o.kilo"), "--preset", "huge"])
    assert rc == 2
    _one_line_error(capsys, "huge", "tiny")
    rc = main(["run", "--data", str(data), "--out", str(tmp_path / "o.kilo"), "--downscale", "0"])
    assert rc == 2
    _one_line_error(capsys, "downscale")


def test_mismatched_workdir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _blender(tmp_path / "d", [_frame(0)], sizes=[(8, 8)])
    w = tmp_path / "w"
    # a stage whose prerequisite has not run: clear error, but run.json is recorded
    rc = main(
        [
            "distill",
            "--data",
            str(data),
            "--workdir",
            str(w),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "o.kilo"),
        ]
    )
    assert rc == 2
    _one_line_error(capsys, "occupancy", "has not finished")
    assert json.loads((w / "run.json").read_text())["preset"] == "tiny"
    rc = main(["occupancy", "--data", str(data), "--workdir", str(w), "--preset", "cpu"])
    assert rc == 2
    _one_line_error(capsys, "run.json", "preset")
    other = _blender(tmp_path / "d2", [_frame(0)], sizes=[(8, 8)])
    rc = main(["occupancy", "--data", str(other), "--workdir", str(w)])
    assert rc == 2
    _one_line_error(capsys, "run.json", "data")


def test_subprocess_exit_code_and_single_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "run",
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o.kilo"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_presets_are_data_and_round_trip_through_json() -> None:
    from trainer.presets import PRESETS, PresetError, get_preset, preset_from_dict, preset_to_dict

    for name in PRESETS:
        p = get_preset(name)
        assert p.name == name
        back = preset_from_dict(json.loads(json.dumps(preset_to_dict(p))))
        assert back == p
    tiny, cpu = get_preset("tiny"), get_preset("cpu")
    assert tiny.downscale == 16 and cpu.downscale == 4
    assert tiny.distill.steps < cpu.distill.steps and cpu.density_activation == "softplus"
    assert get_preset("cpu", {"distill": {"steps": 7}}).distill.steps == 7
    with pytest.raises(PresetError, match="nope"):
        get_preset("cpu", {"distill": {"nope": 1}})


def test_set_overrides_parse_and_are_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.cli import parse_overrides

    assert parse_overrides(["distill.steps=30", "teacher.grid_res=[8,16]", "name=x"]) == {
        "distill": {"steps": 30},
        "teacher": {"grid_res": [8, 16]},
        "name": "x",
    }
    data = _blender(tmp_path / "d", [_frame(0)], sizes=[(8, 8)])
    w = tmp_path / "w"
    args = ["occupancy", "--data", str(data), "--workdir", str(w), "--preset", "tiny"]
    assert main([*args, "--set", "distill.steps=33"]) == 2  # the teacher has not run: refused, but recorded
    capsys.readouterr()
    rec = json.loads((w / "run.json").read_text())
    assert rec["preset_config"]["distill"]["steps"] == 33
    # no stage has run: a change is accepted and recorded (a stage that finished would refuse it)
    assert main([*args, "--set", "distill.steps=34"]) == 2
    _one_line_error(capsys, "teacher", "has not finished")
    rec = json.loads((w / "run.json").read_text())
    assert rec["preset_config"]["distill"]["steps"] == 34
    assert main([*args, "--set", "distill=3"]) == 2
    _one_line_error(capsys, "distill")
    fresh = ["occupancy", "--data", str(data), "--workdir", str(tmp_path / "w2"), "--preset", "tiny"]
    assert main([*fresh, "--set", "finetune.ema_decay=1.5"]) == 2
    _one_line_error(capsys, "ema_decay")
    assert main([*fresh, "--set", "distill.visibility_floor=0"]) == 2
    _one_line_error(capsys, "visibility_floor")
    for bad, word in [
        ("finetune.steps=-3", "an integer in [1, "),
        ("distill.steps=1.5", "integer"),
        ("finetune.jitter=1", "true or false"),
        ("finetune.lr=abc", "number"),
        ("finetune.max_samples_per_ray=-5", "or null"),  # a field declared `int | None`
    ]:
        assert main([*fresh, "--set", bad]) == 2  # refused before any stage starts
        _one_line_error(capsys, bad.split("=")[0].split(".")[1], word)
    rec["preset_config"]["finetune"]["ema_decay"] = 2.0  # a hand-edited record of the first work folder
    (w / "run.json").write_text(json.dumps(rec))
    assert main(args) == 2
    _one_line_error(capsys, "run.json", "ema_decay")
    rec["preset_config"]["finetune"]["ema_decay"] = 0.0
    rec["preset_config"]["finetune"]["steps"] = -3  # the record is checked like --set
    (w / "run.json").write_text(json.dumps(rec))
    assert main(args) == 2
    _one_line_error(capsys, "run.json", "steps", "repair it with --set finetune.steps=")
