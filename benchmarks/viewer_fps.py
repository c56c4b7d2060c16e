"""Viewer frame rate: FPS while the camera moves (dynamic resolution), UI frame times while a job trains.

Needs a display; on a server run it under Xvfb:

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python benchmarks/viewer_fps.py [--scene S.kilo]
        [--size 800x600] [--seconds 8] [--target-fps 12] [--train ../shared/data/nerf_synthetic/lego]

Prints, per phase, rendered FPS, the render resolution dynamic resolution settled on, and the per-frame
breakdown: render (worker thread), upload, overlays+quad, ImGui, whole UI frame (mean / p95 / max ms).
With ``--train`` a second phase runs the same motion while the ``tiny`` trainer preset runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bench import run_bench  # noqa: E402
from app.cli import get_backend_once, parse_size  # noqa: E402
from app.scene_source import DEFAULT_SCENE, initial_scene  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(DEFAULT_SCENE))
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--size", default="800x600")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--target-fps", type=float, default=12.0)
    ap.add_argument("--train", default=None, help="dataset folder: also measure while the tiny preset trains")
    ap.add_argument("--no-ui", action="store_true", help="hide the ImGui panels")
    args = ap.parse_args()

    from app.viewer import Viewer

    scene, name, notice = initial_scene(args.scene)
    viewer = Viewer(scene, name, get_backend_once(args.backend), parse_size(args.size), notice=notice)
    viewer.settings.render.target_fps = args.target_fps
    viewer.settings.show_ui = not args.no_ui
    try:
        print(f"scene: {name}, backend: {viewer.settings.render.backend}, window {args.size}")
        print(run_bench(viewer, args.seconds).report())
        if args.train:
            with tempfile.TemporaryDirectory() as tmp:
                t = viewer.settings.train
                t.data, t.preset, t.out, t.auto_reload = (
                    args.train,
                    "tiny",
                    str(Path(tmp) / "bench.kilo"),
                    False,
                )
                viewer.start_training()
                res = run_bench(viewer, args.seconds, label="camera moving, tiny job training")
                print(res.report())
                job = viewer.job
                assert job is not None
                job.cancel()
                job.wait(30)
                print(f"  job state after the phase: {job.state.value}; max UI frame {res.max_ui_ms:.0f} ms")
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
