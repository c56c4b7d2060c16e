"""``python -m renderer``: render a .kilo scene to PNG/NPY, or describe it.

    python -m renderer render SCENE.kilo --camera CAM.json --out OUT.png|OUT.npy
        [--backend auto|cuda|cpu|torch] [--device cpu|cuda] [--no-ess] [--no-ert] [--stats] [--size WxH]
        [--output rgb|depth|network]
    python -m renderer info SCENE.kilo [--json]

User errors (missing or corrupt scene, bad camera JSON, unwritable output, bad arguments) print one line
on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


class UsageError(ValueError):
    """A bad command-line value (one-line message)."""


def parse_size(text: str) -> tuple[int, int]:
    """ "WxH" → (W, H), each 1..32768."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--size must look like 800x600, got {text!r}")
    w, h = int(parts[0]), int(parts[1])
    if not (1 <= w <= 32768 and 1 <= h <= 32768):
        raise UsageError(f"--size must be between 1x1 and 32768x32768, got {text!r}")
    return w, h


def _check_output(path: Path) -> str:
    """The output kind ("png" or "npy") after checking the extension and that the folder is writable."""
    ext = path.suffix.lower()
    if ext not in (".png", ".npy"):
        raise UsageError(f"{path}: output must end in .png or .npy")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{path}: output folder {folder} does not exist")
    if path.is_dir():
        raise UsageError(f"{path}: output path is a directory")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{path}: output folder {folder} is not writable")
    return ext[1:]


def _encode(image: np.ndarray, kind: str) -> bytes:
    """``[H, W, 3]`` float32 → file bytes: .npy as is, .png 8-bit (clipped, rounded)."""
    buf = io.BytesIO()
    if kind == "npy":
        np.save(buf, image.astype(np.float32, copy=False))
    else:
        import imageio.v3 as iio

        buf.write(
            iio.imwrite(
                "<bytes>", (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), extension=".png"
            )
        )
    return buf.getvalue()


def cmd_render(args: argparse.Namespace) -> int:
    """Render one frame."""
    from renderer.atomic import atomic_write_bytes
    from renderer.backends import get_backend
    from renderer.camera import Camera, load_camera_json
    from renderer.render import RenderOptions
    from renderer.scene import load_scene

    out = Path(args.out)
    kind = _check_output(out)
    size = parse_size(args.size) if args.size else None
    scene = load_scene(args.scene)
    if args.camera:
        camera = load_camera_json(args.camera)
    elif scene.cameras is not None and len(scene.cameras.c2w):
        cams = scene.cameras
        camera = Camera(cams.width, cams.height, cams.focal, np.asarray(cams.c2w[0], dtype=np.float64))
    else:
        raise UsageError(f"{args.scene}: --camera is required (the scene stores no training cameras)")
    if size is not None:
        camera = camera.with_size(*size)
    options = RenderOptions(
        ess=not args.no_ess,
        ert=not args.no_ert,
        output=args.output,
        samples_per_pass=args.samples_per_pass,
    )
    backend = get_backend(args.backend, args.device)
    result = backend.render(scene, camera, options)
    image = result.image.detach().cpu().numpy()
    try:
        atomic_write_bytes(out, _encode(image, kind))
    except OSError as e:
        raise UsageError(f"{out}: cannot write output ({e.strerror or e})") from None
    if args.stats:
        stats = result.stats.to_dict()
        stats.update(backend=backend.name, width=camera.width, height=camera.height, out=str(out))
        print(json.dumps(stats))
    return 0


def scene_info(path: str) -> dict[str, Any]:
    """Summary of a .kilo file: grid, networks, occupancy, step, size on disk, dtype, provenance."""
    from renderer.scene import load_scene_summary

    scene, occupied = load_scene_summary(path)  # the occupancy stays packed: memory ~ 2x the file
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in scene.weights.values()})
    info: dict[str, Any] = {
        "file": str(path),
        "size_bytes": os.path.getsize(path),
        "bbox_min": list(scene.bbox_min),
        "bbox_max": list(scene.bbox_max),
        "grid_res": list(scene.grid_res),
        "networks": scene.num_networks,
        "cells": int(np.prod(scene.grid_res)),
        "occupancy_res": list(scene.occupancy_res),
        "occupancy_percent": 100.0 * occupied / max(1, int(np.prod(scene.occupancy_res))),
        "step_size": scene.step_size,
        "weights_dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "hidden": scene.hidden,
        "pos_freqs": scene.pos_freqs,
        "dir_freqs": scene.dir_freqs,
        "density_activation": scene.density_activation,
        "density_scale": scene.density_scale,
        "ert_threshold": scene.ert_threshold,
        "background": list(scene.background),
        "cameras": 0 if scene.cameras is None else len(scene.cameras.c2w),
        "provenance": scene.provenance,
    }
    return info


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a scene."""
    info = scene_info(args.scene)
    if args.json:
        print(json.dumps(info))
        return 0
    g, o = info["grid_res"], info["occupancy_res"]
    lines = [
        f"file:        {info['file']} ({_human_size(info['size_bytes'])})",
        f"box:         {tuple(info['bbox_min'])} – {tuple(info['bbox_max'])}",
        f"grid:        {g[0]}x{g[1]}x{g[2]} cells, {info['networks']} networks "
        f"({100.0 * info['networks'] / max(1, info['cells']):.1f}% of cells)",
        f"occupancy:   {o[0]}x{o[1]}x{o[2]}, {info['occupancy_percent']:.2f}% occupied",
        f"step:        {info['step_size']:.6g}",
        f"networks:    hidden {info['hidden']}, freqs {info['pos_freqs']}/{info['dir_freqs']}, "
        f"weights {info['weights_dtype']}, density {info['density_activation']} x {info['density_scale']:g}",
        f"rendering:   background {tuple(info['background'])}, ERT threshold {info['ert_threshold']:g}",
        f"cameras:     {info['cameras']} training views",
        f"provenance:  {json.dumps(info['provenance'], sort_keys=True) if info['provenance'] else '(none)'}",
    ]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    from renderer.backends import BACKENDS

    p = argparse.ArgumentParser(
        prog="python -m renderer", description="Render or describe KiloNeRF .kilo scenes."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render one frame to .png or .npy")
    r.add_argument("scene", help="the .kilo scene file")
    r.add_argument(
        "--camera", help="camera JSON (width, height, focal, c2w); default: the scene's first view"
    )
    r.add_argument("--out", required=True, help="output .png (8-bit) or .npy (float32 [H, W, 3])")
    r.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: cuda, else cpu, else torch")
    r.add_argument("--device", default=None, help="torch device for the torch backend (cpu, cuda, cuda:1)")
    r.add_argument("--no-ess", action="store_true", help="disable empty-space skipping")
    r.add_argument("--no-ert", action="store_true", help="disable early ray termination")
    r.add_argument("--stats", action="store_true", help="print one JSON line of render statistics")
    r.add_argument("--size", help="override the camera resolution, WxH (same field of view)")
    r.add_argument("--output", default="rgb", choices=("rgb", "depth", "network"), help="what to draw")
    r.add_argument("--samples-per-pass", type=int, default=8, help="samples per ray per marching pass")
    r.set_defaults(func=cmd_render)
    i = sub.add_parser("info", help="describe a .kilo scene")
    i.add_argument("scene", help="the .kilo scene file")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)
    return p


def stdout_closed() -> int:
    """Exit code after the reader of stdout went away (``| head``): stdout is pointed at /dev/null so the
    interpreter's final flush cannot fail again, and nothing is printed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, with one line on stderr)."""
    from renderer.backends import BackendError
    from renderer.camera import CameraFormatError
    from renderer.scene import SceneFormatError

    args = build_parser().parse_args(argv)
    # a backend passed over for a slower one says why on stderr, once (renderer.backends logs it)
    logging.basicConfig(level=logging.WARNING, format="python -m renderer: %(message)s")
    try:
        if getattr(args, "device", None):
            import torch

            try:
                dev = torch.device(args.device)
            except RuntimeError:
                raise UsageError(f"--device: unknown device {args.device!r}") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise UsageError(f"--device {args.device}: no CUDA device available")
        return int(args.func(args))
    except (SceneFormatError, CameraFormatError, UsageError, BackendError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_closed()
