"""Evaluate a .kilo (or a teacher file) on a dataset split: PSNR, SSIM, LPIPS (when available offline), mean
ms per frame."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class EvalError(ValueError):
    """A user error (missing scene or data, unwritable output): one line naming the file."""


def evenly_spaced(n: int, limit: int | None) -> list[int]:
    """Indices of ``limit`` views evenly spaced over ``n`` (all when limit is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise EvalError(f"--limit must be >= 1, got {limit}")
    return sorted({int(i * n / limit) for i in range(limit)})


def evaluate_scene(
    scene_path: Path,
    data: Path,
    *,
    split: str = "test",
    downscale: int = 1,
    limit: int | None = None,
    save_dir: Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Render every chosen view of ``split`` with the scene and compare with the images. A file that is not a
    ``.kilo`` is read as a teacher (``W/teacher.pt``) and rendered by the teacher itself.

    Returns ``{"scene", "data", "split", "width", "height", "views", "psnr", "ssim", "lpips",
    "ms_per_frame", "device", "backend", "per_view": [{"name", "psnr", "ssim", "lpips", "ms"}]}`` (means over
    the views; "backend" is the renderer that drew them).
    """
    import torch

    from renderer.backends import get_backend
    from renderer.render import RenderOptions
    from renderer.scene import load_scene
    from trainer.data import load_dataset
    from trainer.metrics import Lpips, psnr, ssim
    from trainer.stages import view_size

    dev = torch.device(device)
    render_view: Callable[[Any, int], np.ndarray]
    backend_name = "teacher"
    if scene_path.suffix != ".kilo" and (teacher := _try_teacher(scene_path, dev)) is not None:
        ds = load_dataset(data, split, downscale)
        render_view = _teacher_renderer(teacher, ds)
    else:
        scene = load_scene(scene_path)
        ds = load_dataset(data, split, downscale, background=scene.background)
        backend = get_backend("auto", dev)  # the native CPU kernels when they run here (same pictures)
        backend_name = backend.name
        rs = backend.prepare(scene)  # type: ignore[attr-defined]
        opts = RenderOptions()

        def render_view(ds: Any, i: int) -> np.ndarray:
            w, h = view_size(ds, i)
            return backend.render(rs, ds.camera(i), opts).image[:h, :w].clamp(0, 1).numpy()

    idx = evenly_spaced(len(ds.images), limit)
    lp = Lpips.try_load()
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvalError(f"{save_dir}: cannot create the folder ({e.strerror or e})") from e
    # one warm-up render so the first timing does not include lazy initialisation
    render_view(ds, idx[0])
    rows = []
    for i in idx:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        img = render_view(ds, i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000.0
        w, h = view_size(ds, i)
        gt = np.asarray(ds.images[i])[:h, :w]
        row = {
            "name": ds.names[i] if i < len(ds.names) else str(i),
            "psnr": psnr(img, gt),
            "ssim": ssim(img, gt),
            "lpips": lp(img, gt) if lp is not None else None,
            "ms": ms,
        }
        rows.append(row)
        if save_dir is not None:
            _save_png(save_dir / f"{i:04d}.png", img)
    return {
        "scene": str(scene_path),
        "data": str(data),
        "split": split,
        "downscale": downscale,
        "width": int(ds.width),
        "height": int(ds.height),
        "views": len(rows),
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "lpips": float(np.mean([r["lpips"] for r in rows])) if lp is not None else None,
        "ms_per_frame": float(np.mean([r["ms"] for r in rows])),
        "device": str(dev),
        "backend": backend_name,
        "per_view": rows,
    }


def _try_teacher(path: Path, device: Any) -> Any:
    """The teacher in ``path``, or None when it is not a teacher file."""
    from trainer.teachers import TeacherFormatError, load_teacher

    try:
        teacher = load_teacher(path, device)
    except TeacherFormatError:
        return None
    teacher.eval()
    return teacher


def _teacher_renderer(teacher: Any, ds: Any) -> Callable[[Any, int], np.ndarray]:
    """``render(ds, i) -> [H, W, 3]``: view ``i`` rendered by the teacher (its own ray marcher), with the
    rays and near/far planes the pipeline's teacher PSNR uses."""
    import torch

    from trainer.stages import near_far, view_rays, view_size
    from trainer.teachers import TeacherConfig, render_teacher

    near, far = near_far(ds)
    cfg = TeacherConfig()

    def render(ds: Any, i: int) -> np.ndarray:
        o, d = view_rays(ds, i, torch.device("cpu"))
        rgb = render_teacher(teacher, o, d, near, far, ds.background, cfg)
        w, h = view_size(ds, i)
        return rgb.reshape(ds.height, ds.width, 3)[:h, :w].numpy()

    return render


def _save_png(path: Path, img: np.ndarray) -> None:
    import imageio.v3 as iio

    from renderer.atomic import atomic_write_bytes

    data = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    atomic_write_bytes(path, iio.imwrite("<bytes>", data, extension=".png"))


def format_table(result: dict[str, Any]) -> str:
    """A small text table of the means."""
    lp = "n/a (weights not available offline)" if result["lpips"] is None else f"{result['lpips']:.4f}"
    lines = [
        f"scene   {result['scene']}",
        f"data    {result['data']} [{result['split']}] "
        f"{result['width']}x{result['height']}, {result['views']} views",
        f"{'PSNR':<8}{result['psnr']:.2f} dB",
        f"{'SSIM':<8}{result['ssim']:.4f}",
        f"{'LPIPS':<8}{lp}",
        f"{'ms/frame':<8} {result['ms_per_frame']:.1f} ({result['device']}, {result.get('backend')})",
    ]
    return "\n".join(lines)


def run_eval(
    scene: Path,
    data: Path,
    *,
    split: str = "test",
    downscale: int = 1,
    limit: int | None = None,
    json_out: Path | None = None,
    save_dir: Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The `eval` subcommand: evaluate, print the table, write JSON."""
    from renderer.atomic import atomic_write_text

    if not scene.exists():
        raise EvalError(f"{scene}: scene file not found")
    if downscale < 1:
        raise EvalError(f"--downscale must be >= 1, got {downscale}")
    if json_out is not None and not (json_out.parent if str(json_out.parent) else Path(".")).is_dir():
        raise EvalError(f"{json_out}: output folder does not exist")
    result = evaluate_scene(
        scene, data, split=split, downscale=downscale, limit=limit, save_dir=save_dir, device=device
    )
    print(format_table(result))
    if json_out is not None:
        try:
            atomic_write_text(json_out, json.dumps(result, indent=1) + "\n")
        except OSError as e:
            raise EvalError(f"{json_out}: cannot write ({e.strerror or e})") from e
    return result
