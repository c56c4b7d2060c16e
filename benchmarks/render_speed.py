"""Render speed of the torch (or CUDA) backend: ms/frame, samples per ray, network points/s.

    python benchmarks/render_speed.py [--backend torch|cuda] [--scene PATH] [--quick] [--threads N]

Default scene: assets/lego.kilo when it exists, else the synthetic lego-like scene. The camera is the
scene's first training view when it has one, else an orbit view (radius 4, elevation 30°, lego's focal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Sleeping OpenMP workers (see renderer/__main__.py); override by setting OMP_WAIT_POLICY.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from renderer.camera import Camera, orbit_pose  # noqa: E402
from renderer.grid import cell_index, flat_index  # noqa: E402
from renderer.networks import NetworkSpec, evaluate_networks, init_weights  # noqa: E402
from renderer.render import RenderOptions, prepare_scene, render_image  # noqa: E402


def load_benchmark_scene(path: str | None) -> tuple[Any, str]:
    """The scene to time and a label for it."""
    from renderer.scene import load_scene

    if path:
        return load_scene(path), path
    bundled = ROOT / "assets" / "lego.kilo"
    if bundled.exists():
        return load_scene(bundled), str(bundled.relative_to(ROOT))
    from renderer.synthetic import make_lego_like_scene

    return make_lego_like_scene(), "synthetic lego-like (9x16x10 nets, 144x256x160 occupancy)"


def benchmark_camera(scene: Any, width: int, height: int) -> Camera:
    """The scene's first training view (or an orbit view) at width × height, lego's field of view."""
    if scene.cameras is not None and len(scene.cameras.c2w):
        c = scene.cameras
        cam = Camera(c.width, c.height, c.focal, np.asarray(c.c2w[0], dtype=np.float64))
    else:
        cam = Camera(800, 800, 1111.1111, orbit_pose((0.0, 0.0, 0.3), 4.0, 30.0, 30.0))
    return cam.with_size(width, height)


def time_frames(fn: Any, reps: int) -> tuple[float, float, Any]:
    """Median wall ms and process CPU ms of ``fn()`` over ``reps`` calls after one warm-up call.

    The CPU time (all threads of this process) shows the cost on a machine shared with other jobs, where
    wall time also counts the time the process waited for a core.
    """
    result = fn()
    walls, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - t) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return statistics.median(walls), statistics.median(cpus), result


def network_points_per_second(
    n: int, device: str, reps: int, grid: tuple[int, int, int] = (16, 16, 16)
) -> tuple[float, float]:
    """Points per wall second and per CPU second of no-grad ``evaluate_networks``: n uniform points over a
    ``grid`` of networks (16³ = 4096: short runs, ~64 points per network at 2¹⁸ points; 13×10×5 = 650:
    long runs, like a lego frame's), width 32."""
    spec = NetworkSpec((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), grid)
    num = grid[0] * grid[1] * grid[2]
    w = {k: v.to(device) for k, v in init_weights(num, spec, seed=0).items()}
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, generator=g) * 2 - 1).to(device)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1).to(device)
    net = flat_index(cell_index(x, spec.bbox_min, spec.bbox_max, spec.grid_res), spec.grid_res)

    def run() -> None:
        with torch.no_grad():
            evaluate_networks(w, x, d, net, scene_meta=spec)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    ms, cpu_ms, _ = time_frames(run, reps)
    return n / (ms / 1e3), n / (cpu_ms / 1e3)


def torch_table(scene: Any, device: str, quick: bool) -> list[list[str]]:
    """Rows: resolution, ESS, ERT, ms/frame, marched and evaluated samples per ray in the box, passes."""
    rs = prepare_scene(scene, device)
    t = time.perf_counter()
    rs.distance_field(True)
    rs.distance_field(False)
    print(f"prepare (distance fields): {(time.perf_counter() - t) * 1e3:.0f} ms", flush=True)
    rows = []
    # 96x72: the viewer's small frames while the camera moves (fixed costs per frame dominate)
    configs = [((96, 72), True, True), ((200, 200), True, True), ((200, 200), True, False)]
    configs += [((200, 200), False, True), ((200, 200), False, False)]
    big = (800, 800)
    configs += [(big, True, True)] if quick else [(big, e, r) for e in (True, False) for r in (True, False)]
    for (width, height), ess, ert in configs:
        cam = benchmark_camera(scene, width, height)
        opts = RenderOptions(ess=ess, ert=ert)
        reps = 1 if (quick or width >= 800) else 3
        ms, cpu_ms, res = time_frames(lambda cam=cam, opts=opts: render_image(rs, cam, opts), reps)
        st = res.stats
        hit = max(1, st.rays_hit_box)
        rows.append(
            [
                f"{width}x{height}",
                "on" if ess else "off",
                "on" if ert else "off",
                f"{ms:.0f}",
                f"{cpu_ms:.0f}",
                f"{st.samples_marched / hit:.1f}",
                f"{st.samples_evaluated / hit:.2f}",
                str(st.passes),
            ]
        )
        print("  " + " | ".join(rows[-1]), flush=True)
    return rows


def cuda_table(scene: Any) -> list[list[str]]:
    """CUDA-event ms of the CUDA backend vs the torch backend on the same GPU at 800² and 1920×1080."""
    from renderer.backends import get_backend

    cuda = get_backend("cuda")
    rs = prepare_scene(scene, "cuda")
    rows = []
    for w, h in ((800, 800), (1920, 1080)):
        cam = benchmark_camera(scene, w, h)
        opts = RenderOptions()
        out = []
        fns = (
            lambda cam=cam, opts=opts: cuda.render(scene, cam, opts),
            lambda cam=cam, opts=opts: render_image(rs, cam, opts),
        )
        for fn in fns:
            fn()
            fn()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(5):
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            out.append(statistics.median(times))
        rows.append([f"{w}x{h}", f"{out[0]:.2f}", f"{out[1]:.1f}", f"{out[1] / out[0]:.1f}x"])
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("torch", "cuda"), default="torch")
    p.add_argument("--scene", default=None, help="a .kilo file (default: assets/lego.kilo or synthetic)")
    p.add_argument("--device", default=None, help="torch device (default: cuda for --backend cuda, else cpu)")
    p.add_argument("--quick", action="store_true", help="fewer configurations and repetitions")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scene, label = load_benchmark_scene(args.scene)
    device = args.device or ("cuda" if args.backend == "cuda" else "cpu")
    print(
        f"scene: {label}; {scene.num_networks} networks; device {device}; "
        f"torch threads {torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    if args.backend == "cuda":
        print_table(["frame", "cuda ms", "torch-on-GPU ms", "speed-up"], cuda_table(scene))
        return 0
    rows = torch_table(scene, device, args.quick)
    print()
    print_table(["frame", "ESS", "ERT", "ms/frame", "CPU ms", "marched/ray", "evaluated/ray", "passes"], rows)
    print("(per ray that crosses the box; CPU ms = process CPU time, all threads)")
    print("\nnetwork evaluation alone (no grad; sort + encode + MLPs + unsort; width 32):")
    for n, grid in ((1 << 18, (16, 16, 16)), (1_000_000, (13, 10, 5))):
        pps, pps_cpu = network_points_per_second(n, device, 1 if args.quick else 3, grid)
        print(
            f"  {pps / 1e6:.2f} M points/s wall, {pps_cpu / 1e6:.2f} M points per CPU second "
            f"({n} points, {grid[0] * grid[1] * grid[2]} networks)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
