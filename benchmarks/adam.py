"""Adam step time on a student's parameters: torch's default (multi-tensor), per-tensor and fused kernels.

    python benchmarks/adam.py [--networks M] [--steps N] [--threads T]

The parameters have the shapes of M tiny networks (63→32→32→33, [32+27]→32→3) with random gradients;
each kernel takes the same steps on its own copy, interleaved, and the ratio is against the default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from renderer.networks import NetworkSpec, init_weights  # noqa: E402
from trainer.optim import adam  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=692, help="M (lego's cpu preset: 692)")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per kernel and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = NetworkSpec(bbox_min=(0.0, 0.0, 0.0), bbox_max=(1.0, 1.0, 1.0), grid_res=(16, 16, 16))
    weights = init_weights(args.networks, spec, 0)
    kernels = {
        "default": lambda ps: torch.optim.Adam(ps, lr=1e-3),
        "per-tensor": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
        "fused (trainer.optim.adam)": lambda ps: adam(ps, lr=1e-3),
    }
    opts = {}
    for name, make in kernels.items():
        ps = [w.clone().requires_grad_(True) for w in weights.values()]
        for p in ps:
            p.grad = torch.randn_like(p)
        opts[name] = make(ps)
        for _ in range(3):
            opts[name].step()
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    n = sum(w.numel() for w in weights.values())
    print(f"Adam on {args.networks} networks ({n / 1e6:.2f} M parameters), {args.threads} threads")
    base = statistics.median(times["default"])
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"  {name:28s} {ms:7.2f} ms/step  ({base / ms:.2f}x the default)")


if __name__ == "__main__":
    main()
