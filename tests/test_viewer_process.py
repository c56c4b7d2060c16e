"""The torch renderer in a child process (app/render_process.py) renders what it renders in-process."""

from __future__ import annotations

import numpy as np
import pytest

from app.render_process import ProcessBackend
from renderer.backends import get_backend
from renderer.camera import Camera, orbit_pose
from renderer.render import RenderOptions
from renderer.synthetic import random_scene


def test_child_process_render_matches_in_process_and_reports_errors() -> None:
    a = random_scene(grid_res=(3, 2, 4), seed=3, density_bias=10.0)
    b = random_scene(grid_res=(2, 2, 2), seed=4, density_bias=10.0)
    cam = Camera(width=24, height=18, focal=20.0, c2w=orbit_pose((0.0, 0.0, 0.0), 3.0, 30.0, 20.0))
    local = get_backend("torch")
    pb = ProcessBackend(threads=1)
    try:
        ra = pb.prepare(a)
        assert pb.prepare(a) is ra  # sent once
        for scene, opts in ((a, RenderOptions()), (b, RenderOptions(ess=False, ert=False))):
            got = pb.render(scene, cam, opts)
            ref = local.render(scene, cam, opts)
            np.testing.assert_allclose(got.image, ref.image.numpy(), atol=1e-5)
            np.testing.assert_allclose(got.depth, ref.depth.numpy(), atol=1e-5)
            assert got.stats["samples_evaluated"] == ref.stats.samples_evaluated
        for _ in range(3):  # scene a was evicted by newer ones: it is sent again transparently
            pb.prepare(random_scene(grid_res=(2, 2, 2), seed=5))
        np.testing.assert_allclose(pb.render(ra, cam).image, local.render(a, cam).image.numpy(), atol=1e-5)
        with pytest.raises(RuntimeError) as err:
            pb.render(a, cam, RenderOptions(output="bogus"))
        assert "\n" not in str(err.value)
    finally:
        pb.close()
    assert not pb._proc.is_alive()
