"""Picking a camera frustum with a click, and finding the stored camera the view is at (overlay_geometry)."""

from __future__ import annotations

import numpy as np

from app import overlay_geometry as og
from renderer.camera import look_at


def _cams() -> np.ndarray:
    a = look_at((4.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    b = look_at((0.0, 4.0, 0.0), (0.0, 0.0, 0.0))
    c = look_at((0.0, -4.0, 0.0), (0.0, 0.0, 0.0))
    return np.stack([a, b, c])


def test_a_click_on_an_apex_picks_that_camera() -> None:
    view = look_at((0.0, -8.0, 0.0), (0.0, 0.0, 0.0))  # looks along +y: camera b is straight ahead
    w, h, f = 200, 100, 100.0
    assert og.pick_camera(_cams()[:2], view, w, h, f, (100.0, 50.0), depth=0.5) == 1  # the centre: b's eye
    # c lies on the same line of sight, nearer the eye: a click there takes the nearer camera
    assert og.pick_camera(_cams(), view, w, h, f, (100.0, 50.0), depth=0.5) == 2
    # camera a at (4, 0, 0) is 8 ahead and 4 to the right: pixel x = 100 + 100 * 4 / 8 = 150
    assert og.pick_camera(_cams(), view, w, h, f, (149.0, 51.0), depth=0.5) == 0
    assert og.pick_camera(_cams(), view, w, h, f, (20.0, 20.0), depth=0.5) is None  # empty space
    assert og.pick_camera(np.zeros((0, 4, 4)), view, w, h, f, (100.0, 50.0), depth=0.5) is None


def test_cameras_behind_the_view_are_never_picked() -> None:
    view = look_at((0.0, -2.0, 0.0), (0.0, -8.0, 0.0))  # looks along -y, away from a and b
    cams = _cams()
    # camera c at (0, -4, 0) is ahead (2 along the view), a and b are behind
    assert og.pick_camera(cams, view, 200, 100, 100.0, (100.0, 50.0), depth=0.5) == 2
    assert og.pick_camera(cams[:2], view, 200, 100, 100.0, (100.0, 50.0), depth=0.5) is None


def test_the_view_at_a_stored_camera_is_found() -> None:
    cams = _cams()
    assert og.matching_camera(cams, cams[1]) == 1
    moved = cams[1].copy()
    moved[0, 3] += 0.01
    assert og.matching_camera(cams, moved) is None
    assert og.matching_camera(np.zeros((0, 4, 4)), cams[0]) is None
