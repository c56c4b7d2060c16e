"""Speedup of KiloNeRF over a vanilla NeRF: same views, same resolution, same device, one run.

Vanilla NeRF: the paper's 8x256 MLP with a skip connection at layer 4, a 128-wide direction branch,
positional encoding 10/4, 384 uniform samples per ray between near and far, no ESS, no ERT. Untrained
weights cost exactly as much as trained ones. A full frame takes minutes on a CPU, so by default a random
subset of rays is timed and the frame time is extrapolated (said so in the output).
KiloNeRF: a renderer backend (``--backend``, default auto: cuda, else the native cpu kernels, else torch)
with ESS + ERT on the whole frame.

    python benchmarks/speedup.py --scene assets/lego.kilo --data ../shared/data/nerf_synthetic/lego \
        --downscale 4 --views 3 [--backend auto|cuda|cpu|torch]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Sleeping OpenMP workers (see trainer/__main__.py); override by setting OMP_WAIT_POLICY.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from renderer.backends import BACKENDS, get_backend  # noqa: E402
from renderer.camera import Camera, generate_rays  # noqa: E402
from renderer.encoding import positional_encoding  # noqa: E402
from renderer.render import RenderOptions  # noqa: E402
from renderer.scene import load_scene  # noqa: E402


class VanillaNerf(torch.nn.Module):
    """NeRF MLP: 8 x 256 trunk with the input concatenated again after layer 4, sigma head, 128 dir branch."""

    def __init__(self, pos_freqs: int = 10, dir_freqs: int = 4, width: int = 256, depth: int = 8) -> None:
        super().__init__()
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        pin, din = 3 + 6 * pos_freqs, 3 + 6 * dir_freqs
        self.skip = 4
        layers = []
        for i in range(depth):
            fan_in = pin if i == 0 else width + (pin if i == self.skip else 0)
            layers.append(torch.nn.Linear(fan_in, width))
        self.trunk = torch.nn.ModuleList(layers)
        self.sigma = torch.nn.Linear(width, 1)
        self.feature = torch.nn.Linear(width, width)
        self.dir_layer = torch.nn.Linear(width + din, width // 2)
        self.rgb = torch.nn.Linear(width // 2, 3)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma ``[N]`` and rgb ``[N, 3]`` of points ``x [N, 3]`` and unit directions ``d [N, 3]``."""
        ex = positional_encoding(x, self.pos_freqs)
        h = ex
        for i, layer in enumerate(self.trunk):
            if i == self.skip:
                h = torch.cat([h, ex], dim=-1)
            h = torch.relu(layer(h))
        sigma = torch.relu(self.sigma(h)[:, 0])
        f = self.feature(h)
        h = torch.relu(self.dir_layer(torch.cat([f, positional_encoding(d, self.dir_freqs)], dim=-1)))
        return sigma, torch.sigmoid(self.rgb(h))


@torch.no_grad()
def render_vanilla(
    model: VanillaNerf,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: float,
    far: float,
    samples: int = 384,
    chunk_points: int = 1 << 16,
) -> torch.Tensor:
    """Colours ``[R, 3]`` of rays ``[R, 3]``: ``samples`` uniform samples in [near, far], white background."""
    r = origins.shape[0]
    t = (
        near
        + (torch.arange(samples, device=origins.device, dtype=torch.float32) + 0.5) * (far - near) / samples
    )
    delta = (far - near) / samples
    rays_per_chunk = max(1, chunk_points // samples)
    out = []
    for a in range(0, r, rays_per_chunk):
        o, d = origins[a : a + rays_per_chunk], dirs[a : a + rays_per_chunk]
        x = (o[:, None, :] + t[None, :, None] * d[:, None, :]).reshape(-1, 3)
        dd = d[:, None, :].expand(-1, samples, -1).reshape(-1, 3)
        sigma, rgb = model(x, dd)
        sigma = sigma.reshape(-1, samples)
        rgb = rgb.reshape(-1, samples, 3)
        tau = sigma * delta
        trans = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
        w = trans * (1 - torch.exp(-tau))
        out.append((w[..., None] * rgb).sum(1) + (1 - w.sum(1, keepdim=True)))
    return torch.cat(out)


def load_views(args: argparse.Namespace, scene: object) -> tuple[list[Camera], float, float, str]:
    """Cameras of the test views (dataset) or of the scene's training cameras; near/far; a description."""
    if args.data is not None:
        from trainer.data import default_near_far, load_dataset

        ds = load_dataset(args.data, args.split, args.downscale)
        n = len(ds.c2w)
        idx = sorted({int(i * n / args.views) for i in range(min(args.views, n))})
        near, far = default_near_far(ds) if ds.near is None else (ds.near, ds.far)
        cams = [Camera(ds.width, ds.height, float(ds.focal), np.asarray(ds.c2w[i], np.float64)) for i in idx]
        return cams, float(near), float(far), f"{args.data} [{args.split}] views {idx}"
    sc = getattr(scene, "cameras", None)
    if sc is None:
        raise SystemExit("error: the scene stores no cameras; give --data DIR")
    f = args.downscale_scene
    n = len(sc.c2w)
    idx = sorted({int(i * n / args.views) for i in range(min(args.views, n))})
    cams = [
        Camera(sc.width // f, sc.height // f, sc.focal / f, np.asarray(sc.c2w[i], np.float64)) for i in idx
    ]
    return cams, 2.0, 6.0, f"scene training cameras {idx} (near/far 2/6)"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table and one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scene", type=Path, default=ROOT / "assets" / "lego.kilo")
    p.add_argument("--data", type=Path, default=None, help="dataset folder for the test views")
    p.add_argument("--split", default="test")
    p.add_argument("--downscale", type=int, default=4, help="dataset downscale (4: lego at 200x200)")
    p.add_argument("--downscale-scene", type=int, default=1, help="without --data: scale the scene's cameras")
    p.add_argument("--views", type=int, default=3)
    p.add_argument(
        "--nerf-rays", type=int, default=2048, help="rays timed per view for NeRF (0: whole frame)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="the KiloNeRF renderer")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        from renderer.backends import set_cpu_threads

        set_cpu_threads(args.threads)
    dev = torch.device(args.device)
    scene = load_scene(args.scene)
    cams, near, far, where = load_views(args, scene)
    backend = get_backend(args.backend, None if args.backend in ("cpu", "cuda") else dev)
    rs = backend.prepare(scene)  # type: ignore[attr-defined]
    model = VanillaNerf().to(dev).eval()
    opts = RenderOptions()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    backend.render(rs, cams[0], opts)  # warm-up
    o, d = generate_rays(cams[0], dev)
    render_vanilla(model, o[:256], d[:256], near, far)
    kilo_ms, nerf_ms = [], []
    extrapolated = False
    gen = torch.Generator().manual_seed(0)
    for cam in cams:
        sync()
        t0 = time.perf_counter()
        backend.render(rs, cam, opts)
        sync()
        kilo_ms.append((time.perf_counter() - t0) * 1000)
        o, d = generate_rays(cam, dev)
        n = o.shape[0]
        if 0 < args.nerf_rays < n:
            pick = torch.randperm(n, generator=gen)[: args.nerf_rays].to(dev)
            o, d = o[pick], d[pick]
            extrapolated = True
        sync()
        t0 = time.perf_counter()
        render_vanilla(model, o, d, near, far)
        sync()
        nerf_ms.append((time.perf_counter() - t0) * 1000 * n / o.shape[0])
    w, h = cams[0].width, cams[0].height
    k, v = float(np.mean(kilo_ms)), float(np.mean(nerf_ms))
    print(f"views: {where}, {w}x{h}, device {dev}, torch threads {torch.get_num_threads()}")
    print(f"{'renderer':<34}{'ms/frame':>14}")
    note = f" (timed {args.nerf_rays} rays/view, extrapolated)" if extrapolated else ""
    print(f"{'vanilla NeRF 8x256, 384 samples':<34}{v:>14.1f}{note}")
    print(f"{f'KiloNeRF (ESS + ERT, {backend.name})':<34}{k:>14.1f}")
    print(f"{'speedup':<34}{v / k:>13.0f}x")
    print(
        json.dumps(
            {
                "width": w,
                "height": h,
                "views": len(cams),
                "device": str(dev),
                "backend": backend.name,
                "nerf_ms_per_frame": v,
                "kilonerf_ms_per_frame": k,
                "speedup": v / k,
                "nerf_extrapolated_from_rays": args.nerf_rays if extrapolated else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
