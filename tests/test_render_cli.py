"""``python -m renderer``: render/info, output formats, and exit code 2 with one line for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from renderer.camera import Camera, look_at, save_camera_json
from renderer.cli import main
from renderer.render import RenderOptions, render_image
from renderer.scene import load_scene, save_scene
from renderer.synthetic import random_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    scene = random_scene((3, 2, 2), (2, 2, 2), seed=4, dtype="float16")
    save_scene(scene, d / "s.kilo")
    cam = Camera(12, 9, 9.0, look_at((2.6, -1.9, 1.5), (0.0, 0.05, 0.05)))
    save_camera_json(cam, d / "cam.json")
    return {"dir": d, "scene": d / "s.kilo", "cam": d / "cam.json"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "renderer", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_subprocess_render_npy_matches_library_and_stats(files: dict[str, Path]) -> None:
    out = files["dir"] / "img.npy"
    p = _run(
        "render",
        str(files["scene"]),
        "--camera",
        str(files["cam"]),
        "--out",
        str(out),
        "--stats",
        "--backend",
        "torch",
        "--no-ert",
    )
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout.strip().splitlines()[-1])
    assert stats["rays"] == 12 * 9 and stats["samples_evaluated"] > 0 and stats["backend"] == "torch"
    img = np.load(out)
    assert img.dtype == np.float32 and img.shape == (9, 12, 3)
    from renderer.camera import load_camera_json

    want = render_image(load_scene(files["scene"]), load_camera_json(files["cam"]), RenderOptions(ert=False))
    np.testing.assert_array_equal(img, want.image.numpy())


def test_subprocess_user_error_exits_2_without_traceback(files: dict[str, Path]) -> None:
    p = _run(
        "render",
        str(files["dir"] / "missing.kilo"),
        "--camera",
        str(files["cam"]),
        "--out",
        str(files["dir"] / "x.png"),
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "missing.kilo" in p.stderr


EYE_C2W = "[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]"
#: Untrusted camera files: name -> (content, fragment of the one error line).
BAD_CAMERAS: dict[str, tuple[str, str]] = {
    "bigint_focal.json": (
        '{"width": 8, "height": 6, "focal": 1' + "0" * 400 + ', "c2w": ' + EYE_C2W + "}",
        "integer with 401 digits",
    ),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
}


def test_subprocess_untrusted_camera_exits_2_with_one_line(files: dict[str, Path]) -> None:
    # python -m renderer render --camera CAM.json used to die with an OverflowError (400-digit focal) or a
    # RecursionError (deep JSON) traceback
    for name in ("bigint_focal.json", "deep.json"):
        content, fragment = BAD_CAMERAS[name]
        cam = files["dir"] / name
        cam.write_text(content)
        out = files["dir"] / "bad_cam.png"
        p = _run("render", str(files["scene"]), "--camera", str(cam), "--out", str(out), "--backend", "torch")
        assert p.returncode == 2, (name, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, (name, p.stderr)
        assert name in p.stderr and fragment in p.stderr, (name, p.stderr)
        assert not out.exists()


def test_png_output_size_and_modes(files: dict[str, Path]) -> None:
    import imageio.v3 as iio

    out = files["dir"] / "img.png"
    assert (
        main(
            [
                "render",
                str(files["scene"]),
                "--camera",
                str(files["cam"]),
                "--out",
                str(out),
                "--backend",
                "torch",
                "--size",
                "24x18",
            ]
        )
        == 0
    )
    png = iio.imread(out)
    assert png.shape == (18, 24, 3) and png.dtype == np.uint8
    npy = files["dir"] / "img24.npy"
    assert (
        main(
            [
                "render",
                str(files["scene"]),
                "--camera",
                str(files["cam"]),
                "--out",
                str(npy),
                "--backend",
                "torch",
                "--size",
                "24x18",
            ]
        )
        == 0
    )
    f = np.load(npy)
    assert np.abs(png.astype(np.int32) - np.round(np.clip(f, 0, 1) * 255).astype(np.int32)).max() <= 1
    for mode in ("depth", "network"):
        m = files["dir"] / f"{mode}.npy"
        assert (
            main(
                [
                    "render",
                    str(files["scene"]),
                    "--camera",
                    str(files["cam"]),
                    "--out",
                    str(m),
                    "--output",
                    mode,
                    "--backend",
                    "torch",
                ]
            )
            == 0
        )
        assert not np.array_equal(np.load(m), np.load(files["dir"] / "img.npy"))


def test_info(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(files["scene"])]) == 0
    text = capsys.readouterr().out
    assert "3x2x2" in text and "float16" in text and "occupied" in text and "random_scene" in text
    assert main(["info", str(files["scene"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    scene = load_scene(files["scene"])
    assert info["networks"] == scene.num_networks
    assert info["size_bytes"] == files["scene"].stat().st_size
    assert abs(info["occupancy_percent"] - 100 * np.asarray(scene.occupancy).mean()) < 1e-9


def test_closed_stdout_ends_quietly(files: dict[str, Path]) -> None:
    """``python -m renderer info S | head -0``: the reader is gone before anything is printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "renderer", "info", str(files["scene"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has imported torch and read the scene
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""


def _bad_cases(files: dict[str, Path]) -> list[tuple[list[str], str]]:
    d = files["dir"]
    (d / "garbage.kilo").write_bytes(b"\x00\x01not a kilo file at all")
    (d / "bad.json").write_text('{"width": 4, "height": 4}')
    (d / "notjson.json").write_text("{nope")
    (d / "huge_focal.json").write_text('{"width": 8, "height": 6, "focal": 1e300, "c2w": ' + EYE_C2W + "}")
    far = "[[1, 0, 0, 1e30], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]"
    (d / "far_camera.json").write_text('{"width": 8, "height": 6, "focal": 9, "c2w": ' + far + "}")
    for name, (content, _) in BAD_CAMERAS.items():
        (d / name).write_text(content)
    s, c = str(files["scene"]), str(files["cam"])
    return [
        (["render", str(d / "nope.kilo"), "--camera", c, "--out", str(d / "o.png")], "nope.kilo"),
        (["render", str(d / "garbage.kilo"), "--camera", c, "--out", str(d / "o.png")], "garbage.kilo"),
        (["render", str(d), "--camera", c, "--out", str(d / "o.png")], str(d)),
        (["render", s, "--camera", str(d / "bad.json"), "--out", str(d / "o.png")], "bad.json"),
        (["render", s, "--camera", str(d / "notjson.json"), "--out", str(d / "o.png")], "notjson.json"),
        (["render", s, "--camera", str(d / "none.json"), "--out", str(d / "o.png")], "none.json"),
        *(
            (["render", s, "--camera", str(d / name), "--out", str(d / "o.png")], name)
            for name in ("huge_focal.json", "far_camera.json", *BAD_CAMERAS)
        ),
        (["render", s, "--camera", c, "--out", str(d / "no_dir" / "o.png")], "no_dir"),
        (["render", s, "--camera", c, "--out", str(d / "o.jpg")], "o.jpg"),
        (["render", s, "--camera", c, "--out", str(d / "o.png"), "--size", "12by9"], "--size"),
        (["render", s, "--out", str(d / "o.png")], "--camera"),
        (["info", str(d / "garbage.kilo")], "garbage.kilo"),
    ]


def test_user_errors_exit_2_with_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for argv, fragment in _bad_cases(files):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and fragment in err, (argv, err)
        assert not (files["dir"] / "o.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_explicit_cuda_unavailable_is_a_clear_error(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(files["dir"] / "c.png")
    assert (
        main(
            ["render", str(files["scene"]), "--camera", str(files["cam"]), "--out", out, "--backend", "cuda"]
        )
        == 2
    )
    assert "CUDA" in capsys.readouterr().err
    assert (
        main(["render", str(files["scene"]), "--camera", str(files["cam"]), "--out", out, "--device", "cuda"])
        == 2
    )
    assert "cuda" in capsys.readouterr().err.lower()
