"""Input from outside the viewer without a window (issue 31): scene paths, camera JSON files and pastes.

Every refusal is one line naming the source; nothing raises past the viewer's own error types.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from app.camera_json import MAX_CAMERA_BYTES, camera_from_json, load_camera_file
from app.cli import main
from app.scene_source import SceneLoader, SceneLoadError, initial_scene, load_scene_file
from renderer.camera import CameraFormatError

I4 = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
GOOD = {"width": 8, "height": 6, "focal": 7.5, "c2w": I4}


def _loop(tmp_path: Path) -> Path:
    p = tmp_path / "loop.kilo"
    p.symlink_to(p)
    return p


def _odd_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    loop = _loop(tmp_path)
    fifo = tmp_path / "fifo.kilo"
    os.mkfifo(fifo)  # opening it would block the loader (and the command line) forever
    return {
        "symlink loop": (loop, "Too many levels of symbolic links"),
        "fifo": (fifo, "not a regular file"),
        "directory": (tmp_path, "is a directory"),
        "missing": (tmp_path / "missing.kilo", "file not found"),
    }


def test_scene_paths_that_are_not_files_give_one_line(tmp_path: Path) -> None:
    for what, (path, why) in _odd_files(tmp_path).items():
        with pytest.raises(SceneLoadError) as err:
            load_scene_file(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and why in msg and "\n" not in msg, what
        with pytest.raises(SceneLoadError):  # initial_scene resolved the path first: RuntimeError on a loop
            initial_scene(str(path))


def test_scene_loader_reports_a_symlink_loop(tmp_path: Path) -> None:
    loader = SceneLoader()
    loader.request(str(_loop(tmp_path)))
    loader.wait(30)
    (res,) = loader.poll()
    assert res.scene is None and res.error is not None and "symbolic links" in res.error


def test_cli_symlink_loop_scene_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = _loop(tmp_path)
    rc = main(["--scene", str(loop), "--headless", "--screenshot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"run_viewer.py: error: {loop}: cannot open (Too many levels of symbolic links)"


BAD_CAMERAS: dict[str, str | bytes] = {
    "deep JSON": "[" * 5000 + "]" * 5000,
    "400-digit focal": json.dumps({**GOOD, "focal": 1}).replace('"focal": 1', '"focal": ' + "9" * 400),
    "400-digit c2w": json.dumps(GOOD).replace("[0, 0, 0, 1]]", "[0, 0, 0, " + "9" * 400 + "]]"),
    "focal 1e400": json.dumps(GOOD).replace("7.5", "1e400"),
    "NaN": json.dumps(GOOD).replace("7.5", "NaN"),
    "overflowing pose": json.dumps({**GOOD, "focal": 1e300, "c2w": (np.eye(4) * 1e300).tolist()}),
    "duplicate keys": '{"width": 8, "width": 9}',
    "binary": b"\xff\xfe\x00garbage",
    "not an object": "[1, 2]",
    "empty": "",
    "too big": " " * (MAX_CAMERA_BYTES + 1) + "{}",
}


@pytest.mark.parametrize("bad", list(BAD_CAMERAS), ids=list(BAD_CAMERAS))
def test_bad_camera_json_is_one_camera_format_error(bad: str) -> None:
    with pytest.raises(CameraFormatError) as err:
        camera_from_json(BAD_CAMERAS[bad], "clipboard")
    assert str(err.value).startswith("clipboard: ") and "\n" not in str(err.value)
    assert len(str(err.value)) < 300


def test_good_camera_json_text_and_bytes() -> None:
    for text in (json.dumps(GOOD), json.dumps(GOOD).encode()):
        cam = camera_from_json(text, "clipboard")
        assert (cam.width, cam.height, cam.focal) == (8, 6, 7.5)
        np.testing.assert_array_equal(cam.c2w, np.eye(4))


def test_camera_files_from_outside(tmp_path: Path) -> None:
    for what, (path, why) in _odd_files(tmp_path).items():
        if what == "missing":
            why = "camera file not found"
        with pytest.raises(CameraFormatError, match=why):
            load_camera_file(path)
    deep = tmp_path / "deep.json"
    deep.write_text(str(BAD_CAMERAS["deep JSON"]))
    with pytest.raises(CameraFormatError, match="nested deeper"):
        load_camera_file(deep)
    good = tmp_path / "cam.json"
    good.write_text(json.dumps(GOOD))
    assert load_camera_file(good).focal == 7.5


def test_cli_camera_file_with_deep_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from renderer.scene import save_scene
    from renderer.synthetic import random_scene

    scene = tmp_path / "s.kilo"
    save_scene(random_scene(grid_res=(2, 2, 2), seed=1, hidden=8), scene)
    for bad in ("deep JSON", "400-digit focal"):
        cam = tmp_path / "cam.json"
        cam.write_text(str(BAD_CAMERAS[bad]))
        argv = [
            "--scene",
            str(scene),
            "--headless",
            "--screenshot",
            str(tmp_path / "x.png"),
            "--camera",
            str(cam),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"run_viewer.py: error: {cam}: ") and "\n" not in err
    assert not (tmp_path / "x.png").exists()
