"""Grid-teacher quality vs training time: PSNR on every k-th test view of lego at 200x200 (downscale 4).

    .venv/bin/python benchmarks/teacher_quality.py --minutes 14 --eval-every 2 --every-view 20

Training time excludes the evaluations; the step count of the schedule comes from a short measured warm-up
(``--steps`` overrides). Prints one row per evaluation (minutes, step, PSNR, peak RSS) and a final summary.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data import load_dataset  # noqa: E402
from trainer.teachers import GridTeacher, TeacherConfig, make_teacher, teacher_psnr, train_teacher  # noqa: E402

LEGO_BBOX = (np.array([-0.67, -1.2, -0.37], np.float32), np.array([0.67, 1.2, 1.03], np.float32))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"))
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=14.0, help="training-time budget")
    ap.add_argument("--steps", type=int, default=0, help="schedule length (0: estimate from --minutes)")
    ap.add_argument("--s-per-step", type=float, default=0.0, help="assumed seconds per step for the estimate")
    ap.add_argument("--eval-every", type=float, default=2.0, help="minutes of training between evaluations")
    ap.add_argument("--every-view", type=int, default=20, help="evaluate every k-th test view")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch-rays", type=int, default=TeacherConfig.batch_rays)
    ap.add_argument("--grid-res", default=",".join(str(r) for r in TeacherConfig.grid_res))
    ap.add_argument("--no-bbox", action="store_true", help="estimate the box instead of lego's known one")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.monotonic()
    train = load_dataset(args.data, "train", downscale=args.downscale)
    test = load_dataset(args.data, "test", downscale=args.downscale)
    views = list(range(0, len(test.images), args.every_view))
    if not args.no_bbox:
        train.bbox_min, train.bbox_max = LEGO_BBOX
    print(
        f"loaded {len(train.images)} train / {len(views)} test views {train.width}x{train.height} "
        f"in {time.monotonic() - t:.1f}s; threads={torch.get_num_threads()}",
        flush=True,
    )

    res = tuple(int(v) for v in args.grid_res.split(","))
    cfg = TeacherConfig(batch_rays=args.batch_rays, grid_res=res, checkpoint_every_s=1e9)
    if len(res) != len(cfg.upsample_at) + 1:
        cfg.upsample_at = tuple(np.linspace(0.15, 0.35, len(res) - 1).tolist()) if len(res) > 1 else ()
    steps = args.steps or max(100, int(args.minutes * 60 / (args.s_per_step or 0.2)))
    cfg.steps = steps
    t = time.monotonic()
    teacher = make_teacher(cfg, train, "cpu")
    print(f"teacher built (visual hull) in {time.monotonic() - t:.1f}s; steps={steps}", flush=True)

    state = {"train_s": 0.0, "last": time.monotonic(), "next_eval": args.eval_every * 60.0, "stop": False}
    print(f"{'min':>6} {'step':>6} {'batch dB':>8} {'test dB':>8} {'mask %':>7} {'RSS MB':>7}", flush=True)

    def evaluate(step: int, batch_psnr: float | None) -> None:
        psnr, _ = teacher_psnr(teacher, test, cfg, views)
        mask = (
            100.0 * float(teacher.mask.float().mean()) if isinstance(teacher, GridTeacher) else float("nan")
        )
        print(
            f"{state['train_s'] / 60:6.2f} {step:6d} {batch_psnr or 0:8.2f} {psnr:8.2f} {mask:7.2f} "
            f"{peak_rss_mb():7.0f}",
            flush=True,
        )

    def on_step(step: int, total: int, loss: float, psnr: float | None) -> None:
        now = time.monotonic()
        state["train_s"] += now - state["last"]
        if state["train_s"] >= state["next_eval"] or step == total:
            evaluate(step, psnr)
            state["next_eval"] += args.eval_every * 60.0
        state["last"] = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        train_teacher(
            teacher, train, cfg, ckpt_path=Path(tmp) / "teacher.ckpt", device="cpu", on_step=on_step
        )
    print(
        f"done: {steps} steps, {state['train_s'] / 60:.2f} min of training "
        f"({state['train_s'] / max(1, steps):.3f} s/step), peak RSS {peak_rss_mb():.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
