"""Render speed of the backends side by side in one run: ms/frame, samples per ray, the native kernels'
time per step, network evaluation alone, and the machine's matmul rate beside every time.

    python benchmarks/render_speed.py [--scene PATH] [--backends cpu,torch] [--quick] [--threads N]
        [--isa generic|avx2|avx512]
    python benchmarks/render_speed.py --backends cuda,torch          # on a GPU machine

Default scene: assets/lego.kilo when it exists, else the synthetic lego-like scene. The camera is the
scene's first training view when it has one, else an orbit view (radius 4, elevation 30°, lego's focal).
Speed is reported as a ratio to the first backend measured in the same run, with the 2048² float32 matmul
rate (GFLOP/s, torch, same threads) measured before and after the frames.
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

from renderer.backends import get_backend, set_cpu_threads  # noqa: E402
from renderer.camera import Camera, orbit_pose  # noqa: E402
from renderer.frame import RenderOptions  # noqa: E402
from renderer.grid import cell_index, flat_index  # noqa: E402
from renderer.networks import NetworkSpec, evaluate_networks  # noqa: E402


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


def matmul_gflops(reps: int = 5) -> float:
    """GFLOP/s of a 2048×2048 float32 matmul with torch's threads (the machine's own speed right now)."""
    a = torch.randn(2048, 2048)
    a @ a
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    return reps * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def time_frames(fn: Any, reps: int) -> tuple[float, float, Any]:
    """Median wall ms and process CPU ms of ``fn()`` over ``reps`` calls after one warm-up call."""
    result = fn()
    walls, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - t) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return statistics.median(walls), statistics.median(cpus), result


def flops_per_sample(spec: NetworkSpec) -> int:
    """Multiply-adds × 2 of one sample through the five layers."""
    h = spec.hidden
    return 2 * (spec.pos_dim * h + h * h + h * (h + 1) + (h + spec.dir_dim) * h + h * 3)


def frame_configs(quick: bool) -> list[tuple[tuple[int, int], bool, bool]]:
    """(size, ESS, ERT) rows: the viewer's moving frames, 200², and 800² (all four modes unless quick)."""
    rows = [((96, 72), True, True), ((320, 200), True, True), ((200, 200), True, True)]
    rows += [((200, 200), e, r) for e in (True, False) for r in (True, False) if (e, r) != (True, True)]
    big = (800, 800)
    rows += [(big, True, True)] if quick else [(big, e, r) for e in (True, False) for r in (True, False)]
    return rows


def frame_table(scene: Any, backends: list[Any], quick: bool) -> list[list[str]]:
    """One row per frame: ms of each backend, speed-up of the first over the others, samples per ray."""
    prepared = [b.prepare(scene) for b in backends]
    rows = []
    for (w, h), ess, ert in frame_configs(quick):
        cam, opts = benchmark_camera(scene, w, h), RenderOptions(ess=ess, ert=ert)
        reps = 1 if quick else (3 if w * h >= 640_000 else 7)
        times, stats = [], []
        for b, p in zip(backends, prepared):
            reps_b = 1 if (b.name == "torch" and w * h >= 640_000) else reps
            ms, _, res = time_frames(lambda b=b, p=p, c=cam, o=opts: b.render(p, c, o), reps_b)
            times.append(ms)
            stats.append({k: v for k, v in res.stats.to_dict().items() if k != "ms"})
        st = res.stats
        hit = max(1, st.rays_hit_box)
        row = [f"{w}x{h}", "on" if ess else "off", "on" if ert else "off", *(f"{t:.1f}" for t in times)]
        row += [f"{t / times[0]:.1f}x" for t in times[1:]]
        row += [f"{st.samples_marched / hit:.1f}", f"{st.samples_evaluated / hit:.2f}", str(st.passes)]
        row += ["yes" if all(s == stats[0] for s in stats) else "NO"]
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
    return rows


def cpu_steps(scene: Any, backend: Any, gflops: float) -> None:
    """The native kernels' wall time per step of the lego 800² ESS+ERT frame, and the network part's rate."""
    p = backend.prepare(scene)
    cam = benchmark_camera(scene, 800, 800)
    steps: dict[str, list[float]] = {}
    res = None
    for _ in range(5):
        res = backend.render(p, cam, RenderOptions())
        for k, v in backend.last_step_ms.items():
            steps.setdefault(k, []).append(v)
    assert res is not None
    med = {k: statistics.median(v) for k, v in steps.items()}
    print(
        "\nnative kernels, 800x800 ESS+ERT, median ms per step: "
        + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
    )
    full = p.rs.spec
    # FLOPs as executed: octaves whose weights are all zero are not encoded (NativeScene.pos_freqs)
    spec = NetworkSpec(full.bbox_min, full.bbox_max, full.grid_res, p.pos_freqs, p.dir_freqs, full.hidden)
    rate = res.stats.samples_evaluated * flops_per_sample(spec) / (med["evaluate"] / 1e3) / 1e9
    n, ms = res.stats.samples_evaluated, med["evaluate"]
    print(
        f"network part: {n} samples in {ms:.1f} ms = {n / ms / 1e3:.2f} M samples/s, {rate:.1f} GFLOP/s "
        f"effective = {100 * rate / gflops:.0f}% of the matmul rate ({flops_per_sample(spec)} FLOP/sample as "
        f"executed: {p.pos_freqs}/{full.pos_freqs} pos. octaves; full layout {flops_per_sample(full)})"
    )


def points_per_second(scene: Any, backend: Any, n: int, reps: int) -> float:
    """Network evaluation alone: n uniform points of the scene's box (those in a network cell), per second."""
    rs = backend.prepare(scene)
    rs = getattr(rs, "rs", rs)  # the native scene keeps its torch RenderScene
    g = torch.Generator().manual_seed(0)
    lo, hi = rs.bbox_min_t, rs.bbox_max_t
    x = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    net = rs.network_index_flat[flat_index(cell_index(x, lo, hi, rs.grid_res), rs.grid_res)]
    x, d, net = x[net >= 0], d[net >= 0], net[net >= 0]
    if backend.name == "cpu":
        from renderer.native import steps

        ns = backend.prepare(scene)

        def run() -> None:
            steps.evaluate_networks(ns, x, d, net, backend.isa)
    else:

        def run() -> None:
            with torch.no_grad():
                evaluate_networks(rs.params, x, d, net, scene_meta=rs.spec)

    ms, _, _ = time_frames(run, reps)
    return x.shape[0] / (ms / 1e3)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths)) + " |")


def make_backends(names: list[str], isa: str | None) -> list[Any]:
    """Backends by name (``cpu`` with the given instruction set)."""
    out = []
    for name in names:
        if name == "cpu" and isa:
            from renderer.native.backend import CpuBackend

            out.append(CpuBackend(isa))
        else:
            out.append(get_backend(name, "cuda" if name == "torch-cuda" else None))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="cpu,torch", help="comma-separated, the first is the reference")
    p.add_argument("--scene", default=None, help="a .kilo file (default: assets/lego.kilo or synthetic)")
    p.add_argument("--quick", action="store_true", help="fewer configurations and repetitions")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--isa", default=None, help="native instruction set (generic, avx2, avx512; default: best)"
    )
    args = p.parse_args(argv)
    if args.threads:
        set_cpu_threads(args.threads)
    scene, label = load_benchmark_scene(args.scene)
    backends = make_backends([b.strip() for b in args.backends.split(",") if b.strip()], args.isa)
    names = [b.name + (f" ({b.isa})" if b.name == "cpu" else "") for b in backends]
    gflops0 = matmul_gflops()
    print(f"scene: {label}; {scene.num_networks} networks; backends {', '.join(names)}; threads "
          f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")  # fmt: skip
    print(f"matmul 2048² float32: {gflops0:.0f} GFLOP/s (before the frames)", flush=True)
    rows = frame_table(scene, backends, args.quick)
    gflops1 = matmul_gflops()
    print()
    head = ["frame", "ESS", "ERT", *(f"{n} ms" for n in names), *(f"{n} / {names[0]}" for n in names[1:])]
    print_table([*head, "marched/ray", "evaluated/ray", "passes", "same stats"], rows)
    print(
        f"(per ray crossing the box) matmul 2048² float32: {gflops0:.0f} GFLOP/s before, {gflops1:.0f} after"
    )
    cpu = next((b for b in backends if b.name == "cpu"), None)
    if cpu is not None:
        cpu_steps(scene, cpu, (gflops0 + gflops1) / 2)
    print("\nnetwork evaluation alone (no grad; sort + encode + MLPs + unsort; uniform points in the box):")
    for b, name in zip(backends, names):
        n = 1 << 18 if args.quick else 1_000_000
        pps = points_per_second(scene, b, n, 1 if args.quick else 3)
        print(f"  {name}: {pps / 1e6:.2f} M points/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
