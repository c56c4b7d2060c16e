"""Viewer frame rate: FPS and render size while the camera moves, refine time of the still frame, UI stalls,
peak RAM; optionally the torch backend in the same run, and UI frame times while a job trains.

Needs a display; on a server run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/viewer_fps.py [--scene S.kilo]
        [--backend auto|cuda|cpu|torch] [--compare] [--size 1280x800] [--seconds 8] [--target-fps F]
        [--moving-threads N]
        [--train ../shared/data/nerf_synthetic/lego]

Per backend: a scripted orbit (30°/s) for ``--seconds`` after a second of warm-up, then the camera stops.
Prints rendered FPS while moving, the render size dynamic resolution settled on (median, smallest), the
seconds from the camera's last motion to the refined full-size frame on screen, UI frames over 100 ms,
the peak RAM (VmHWM) of the viewer process (and of the torch backend's render processes), and the
per-frame breakdown. The 2048² float32 matmul rate measured before and after gives the machine's speed in
the same run: compare figures between runs only beside it. ``--compare`` runs the torch backend after the
chosen one, each in a process of its own (so each peak RAM is that viewer's). With ``--train`` a further
phase runs the same motion while the ``tiny`` trainer preset runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bench import matmul_gflops, run_bench  # noqa: E402
from app.cli import UserError, get_backend_once, parse_size  # noqa: E402
from app.scene_source import DEFAULT_SCENE, initial_scene  # noqa: E402
from renderer.backends import BACKENDS  # noqa: E402


def train_phase(viewer: object, data: str, seconds: float) -> None:
    """The same motion while the ``tiny`` preset trains (hot reload off)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = viewer.settings.train  # type: ignore[attr-defined]
        t.data, t.preset, t.out, t.auto_reload = data, "tiny", str(Path(tmp) / "bench.kilo"), False
        viewer.start_training()  # type: ignore[attr-defined]
        res = run_bench(viewer, seconds, label="camera moving, tiny job training")
        print(res.report())
        job = viewer.job  # type: ignore[attr-defined]
        assert job is not None
        job.cancel()
        job.wait(30)
        print(f"  job state after the phase: {job.state.value}")


def bench_backend(name: str, args: argparse.Namespace, matmul: float) -> None:
    """One viewer with backend ``name``: the orbit, the refine, optionally the training phase."""
    from app.viewer import Viewer

    scene, scene_name, notice = initial_scene(args.scene)
    viewer = Viewer(scene, scene_name, get_backend_once(name), parse_size(args.size), notice=notice)
    if args.target_fps:
        viewer.settings.render.target_fps = args.target_fps
    if args.moving_threads is not None:
        viewer.profile = replace(viewer.profile, moving_threads=args.moving_threads)
    viewer.settings.show_ui = not args.no_ui
    try:
        r = viewer.settings.render
        p = viewer.profile
        threads = f"threads moving {p.moving_threads} still {p.still_threads} (0: all)"
        print(f"scene: {scene_name}, backend: {r.backend} (asked: {name}), window {args.size}, target "
              f"{r.target_fps:g} FPS, {threads}")  # fmt: skip
        res = run_bench(viewer, args.seconds)
        print(res.report())
        w, h = res.median_size()
        print(f"  => {r.backend}: {res.fps:.1f} FPS at {w}x{h} moving, still frame in "
              f"{res.refine_s if res.refine_s is not None else float('nan'):.2f} s, "
              f"beside matmul {matmul:.0f} GFLOP/s")  # fmt: skip
        if args.train:
            train_phase(viewer, args.train, args.seconds)
    finally:
        viewer.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(DEFAULT_SCENE))
    ap.add_argument("--backend", default="auto", choices=BACKENDS)
    ap.add_argument("--compare", action="store_true", help="also run the torch backend in the same run")
    ap.add_argument("--size", default="1280x800", help="window size WxH (default 1280x800)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of measured motion per backend")
    ap.add_argument("--target-fps", type=float, default=0.0, help="override the backend's target FPS")
    ap.add_argument("--moving-threads", type=int, default=None, help="override the profile's (0: all cores)")
    ap.add_argument("--train", default=None, help="dataset folder: also measure while the tiny preset trains")
    ap.add_argument("--no-ui", action="store_true", help="hide the ImGui panels")
    ap.add_argument("--matmul", type=float, default=0.0, help=argparse.SUPPRESS)  # given by a --compare run
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    matmul = args.matmul or matmul_gflops()
    if not args.matmul:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
              f"2048² float32 matmul {matmul:.0f} GFLOP/s")  # fmt: skip
    if not args.compare:
        try:
            bench_backend(args.backend, args, matmul)
        except UserError as e:
            print(f"viewer_fps.py: {e}", file=sys.stderr)
            return 2
    else:  # each backend in a process of its own: its peak RAM is its own
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--compare"]
        for name in dict.fromkeys([args.backend, "torch"]):
            cmd = [sys.executable, __file__, *rest, "--backend", name, "--matmul", f"{matmul:.1f}"]
            if subprocess.run(cmd, check=False).returncode:
                return 1
    if not args.matmul:
        print(f"2048² float32 matmul after the runs: {matmul_gflops():.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
