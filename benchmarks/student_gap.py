"""Where the student loses to its teacher: density or colour.

Renders test views on the student's own sample lattice (its ESS through the scene's occupancy grid, every
sample, no early stop) four ways, taking density and colour at each sample from the student or the teacher,
and prints the mean PSNR of each:

    density  colour
    student  student   the student (as the renderer draws it, less ERT's < 1% of transmittance)
    teacher  teacher   the teacher on the student's lattice
    student  teacher   the student's geometry with the teacher's colours
    teacher  student   the teacher's geometry with the student's colours

When "student density, teacher colour" scores as the teacher does, the student's geometry is good enough and
its colour (the view-dependent head, `l3`/`l4`, and the features feeding it) is what to improve; when
"teacher density, student colour" scores as the teacher does, the other way round.

    python benchmarks/student_gap.py SCENE.kilo WORKDIR/teacher.pt \\
        --data ../shared/data/nerf_synthetic/lego --downscale 4 [--limit 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOURCES = (("student", "student"), ("teacher", "teacher"), ("student", "teacher"), ("teacher", "student"))
"""(density, colour) source of each rendering."""


def measure(scene_path: Path, teacher_path: Path, data: Path, downscale: int, limit: int) -> dict[str, Any]:
    """Mean PSNR per (density, colour) source over ``limit`` evenly spaced test views."""
    import numpy as np
    import torch

    from renderer.composite import composite_front_to_back
    from renderer.networks import evaluate_networks
    from renderer.render import prepare_scene
    from renderer.scene import load_scene
    from trainer.data import load_dataset
    from trainer.eval import evenly_spaced
    from trainer.front import TorchPasses, front_samples
    from trainer.metrics import psnr
    from trainer.stages import view_rays
    from trainer.teachers import load_teacher

    dev = torch.device("cpu")
    scene = load_scene(scene_path)
    rs = prepare_scene(scene, dev)
    teacher = load_teacher(teacher_path, dev)
    teacher.eval()
    ds = load_dataset(data, "test", downscale, background=scene.background)
    bg = torch.as_tensor(ds.background, dtype=torch.float32)
    scores: dict[tuple[str, str], list[float]] = {s: [] for s in SOURCES}
    views = evenly_spaced(len(ds.images), limit)
    with torch.no_grad():
        for i in views:
            o, d = view_rays(ds, i, dev)
            passes = TorchPasses(rs.params, rs, rs.spec, o, d, rs.step_size)
            s = front_samples(passes, o.shape[0], rs.step_size, 0.0)
            dirs = d[s.ray_idx]
            student = evaluate_networks(rs.params, s.x, dirs, s.net, scene_meta=rs.spec)
            teacher_out = teacher.query_chunked(s.x, dirs)
            field = {"student": student, "teacher": teacher_out}
            for density_src, colour_src in SOURCES:
                sigma, rgb = field[density_src][0], field[colour_src][1]
                color, _ = composite_front_to_back(sigma, rgb, s.ray_idx, rs.step_size, o.shape[0], bg)
                img = color.clamp(0, 1).reshape(ds.height, ds.width, 3).numpy()
                scores[(density_src, colour_src)].append(psnr(img, ds.images[i]))
    return {
        "scene": str(scene_path),
        "teacher": str(teacher_path),
        "views": views,
        "psnr": [{"density": a, "colour": b, "psnr": float(np.mean(scores[(a, b)]))} for a, b in SOURCES],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path, help="the student (.kilo)")
    ap.add_argument("teacher", type=Path, help="its teacher (WORKDIR/teacher.pt)")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (its test split is used)")
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--limit", type=int, default=20, help="evenly spaced test views")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    for p in (args.scene, args.teacher):
        if not p.exists():
            print(f"{p}: file not found", file=sys.stderr)
            return 2
    result = measure(args.scene, args.teacher, args.data, args.downscale, args.limit)
    print(f"{'density':<9}{'colour':<9}PSNR over {len(result['views'])} test views")
    for row in result["psnr"]:
        print(f"{row['density']:<9}{row['colour']:<9}{row['psnr']:.2f} dB")
    if args.json is not None:
        from renderer.atomic import atomic_write_text

        try:
            atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        except OSError as e:
            print(f"{args.json}: cannot write ({e.strerror or e})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
