"""app/ground_truth.py: the compare mode's dataset views, error colours and PSNR (as trainer eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.ground_truth import GroundTruth, GroundTruthError, compare, dataset_of, error_colors

ROOT = Path(__file__).resolve().parents[1]


def test_error_colours_are_a_black_red_yellow_white_ramp() -> None:
    truth = np.zeros((1, 5, 3), np.float32)
    render = np.array([[[0, 0, 0], [0.25 / 3] * 3, [0.5 / 3] * 3, [0.25] * 3, [1, 1, 1]]], np.float32)
    got = error_colors(render, truth, scale=0.25)
    assert got[0, 0].tolist() == [0, 0, 0]
    assert np.allclose(got[0, 1], [1, 0, 0])  # a third of the scale: full red
    assert np.allclose(got[0, 2], [1, 1, 0], atol=1e-6)  # two thirds: yellow
    assert np.allclose(got[0, 3], [1, 1, 1]) and np.allclose(got[0, 4], [1, 1, 1])  # the scale and above


def test_compare_puts_truth_render_error_side_by_side_with_the_psnr() -> None:
    truth = np.full((4, 6, 3), 0.5, np.float32)
    render = truth + 0.1
    c = compare(render, truth)
    assert c.side_by_side.shape == (4, 18, 3)
    assert np.array_equal(c.side_by_side[:, :6], truth) and np.allclose(c.side_by_side[:, 6:12], 0.6)
    assert c.psnr == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert compare(render + 5, truth).side_by_side[:, 6:12].max() == 1.0  # clamped like eval's
    with pytest.raises(ValueError, match="differ in size"):
        compare(render[:2], truth)


def test_dataset_of_reads_the_provenance() -> None:
    class S:
        provenance = {"dataset": "/d/lego", "downscale": 4}

    assert dataset_of(S()) == ("/d/lego", 4)
    S.provenance = {"dataset": "/d", "downscale": "x"}
    assert dataset_of(S()) == ("/d", 1)
    S.provenance = {}
    assert dataset_of(S()) is None
    with pytest.raises(GroundTruthError, match="names no dataset"):
        GroundTruth.for_scene(S())


def test_an_unreadable_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GroundTruthError, match="no recognised dataset layout"):
        GroundTruth(tmp_path)


def test_compare_psnr_equals_trainer_eval_on_the_same_view(blender_lego: Path, tmp_path: Path) -> None:
    """The bundled scene against lego test view 0 at 1/8 size: the compare mode's PSNR is eval's."""
    from renderer.backends import get_backend
    from renderer.scene import load_scene
    from trainer.eval import evaluate_scene

    scene_path = ROOT / "assets" / "lego.kilo"
    scene = load_scene(scene_path)
    gt = GroundTruth(blender_lego, 8, scene.background)
    assert gt.count("test") == 200 and gt.count("train") == 100
    backend = get_backend("auto")
    render = backend.render(backend.prepare(scene), gt.camera("test", 0)).image.numpy()
    mine = compare(render, gt.image("test", 0)).psnr
    theirs = evaluate_scene(scene_path, blender_lego, split="test", downscale=8, limit=1)
    assert theirs["per_view"][0]["name"] == gt.split("test").names[0]
    assert mine == pytest.approx(theirs["per_view"][0]["psnr"], abs=1e-9)
    assert gt.split("test") is gt.split("test")  # loaded once
