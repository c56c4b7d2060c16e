"""app/path_editor.py: keyframes added, deleted, reordered and retimed; preview playback; save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.camera_path import CameraPathError
from app.path_editor import MIN_GAP_S, PathEditor
from renderer.camera import orbit_pose


def _editor(n: int = 3) -> PathEditor:
    ed = PathEditor(fps=10, width=32, height=24)
    for i in range(n):
        ed.add(orbit_pose((0, 0, 0), 3.0, 40.0 * i, 20.0), 40.0 + i)
    return ed


def test_add_delete_move_and_retime() -> None:
    ed = _editor(3)
    assert [k.time for k in ed.keyframes] == [0.0, 1.0, 2.0]
    first = ed.keyframes[0].c2w.copy()
    ed.move(0, 1)  # swap views, keep the times
    assert [k.time for k in ed.keyframes] == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(ed.keyframes[1].c2w, first)
    assert ed.keyframes[0].fov_deg == 41.0 and ed.keyframes[1].fov_deg == 40.0
    ed.move(0, -1)  # nothing before the first: no change
    assert ed.keyframes[1].fov_deg == 40.0
    assert ed.set_time(1, 5.0) == pytest.approx(2.0 - MIN_GAP_S)  # kept before its neighbour
    assert ed.set_time(1, -3.0) == pytest.approx(MIN_GAP_S)
    assert ed.set_time(0, 4.0) == 0.0  # the first keyframe starts the path
    assert ed.set_time(2, 7.5) == 7.5  # the last may move out
    ed.delete(0)
    assert ed.keyframes[0].time == 0.0 and ed.keyframes[1].time == pytest.approx(7.5 - MIN_GAP_S)


def test_playback_walks_the_path_and_stops_at_its_end() -> None:
    ed = _editor(3)
    assert ed.advance(0.1) is None  # not playing
    ed.play()
    c2w, fov = ed.advance(0.0)  # type: ignore[misc]
    np.testing.assert_allclose(c2w, ed.keyframes[0].c2w, atol=1e-12)
    pose = None
    for _ in range(30):
        pose = ed.advance(0.1) if ed.playing else pose
    assert pose is not None and not ed.playing and ed.t == 2.0
    np.testing.assert_allclose(pose[0], ed.keyframes[-1].c2w, atol=1e-12)
    empty = PathEditor()
    empty.play()
    assert not empty.playing


def test_save_and_load(tmp_path: Path) -> None:
    ed = _editor(2)
    ed.file = str(tmp_path / "p.json")
    assert "2 keyframes" in ed.save()
    other = PathEditor(file=ed.file)
    assert "2 keyframes" in other.load()
    assert (other.width, other.height, other.fps) == (32, 24, 10)
    np.testing.assert_allclose(other.keyframes[1].c2w, ed.keyframes[1].c2w, atol=1e-12)  # its keyframes
    with pytest.raises(ValueError, match="no keyframes"):
        PathEditor(file=ed.file).save()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CameraPathError):
        PathEditor(file=str(tmp_path / "bad.json")).load()
