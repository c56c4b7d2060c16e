"""The Blender (NeRF synthetic) layout: ``transforms_{train,val,test}.json`` plus images.

The json holds ``camera_angle_x`` (horizontal field of view, radians) and ``frames``, each with a
``file_path`` (relative to the json, usually without extension: ``./train/r_0`` -> ``train/r_0.png``) and a
``transform_matrix`` (camera-to-world, OpenGL convention: already what :class:`Dataset` stores).
Optional keys written by other tools are honoured: ``fl_x`` (focal in pixels), ``cx``, ``cy``, ``w``, ``h``,
``near``, ``far``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.common import (
    Dataset,
    DatasetError,
    as_c2w,
    check_every,
    check_options,
    finite_float,
    finite_positive,
    load_images,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".webp")


def is_blender_layout(root: Path) -> bool:
    """Whether ``root`` holds at least one ``transforms_*.json``."""
    return root.is_dir() and any(root.glob("transforms_*.json"))


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Pinhole focal in pixels from the horizontal field of view: 0.5 W / tan(0.5 angle)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def read_transforms(path: Path) -> dict[str, Any]:
    """Parse a transforms json; DatasetError when missing, not json, or without frames."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"bad json ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"cannot read ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(path, "top level must be a json object")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(path, "json has no frames (expected a non-empty list under 'frames')")
    return meta


def resolve_image_path(root: Path, file_path: str) -> Path:
    """The image a frame's ``file_path`` names: relative to ``root``, ``.png`` appended when no extension."""
    p = root / file_path
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return p
    for suffix in (".png", ".jpg", ".jpeg"):
        candidate = p.with_name(p.name + suffix)
        if candidate.is_file():
            return candidate
    return p.with_name(p.name + ".png")


def frame_name(file_path: str) -> str:
    """A frame's name: its ``file_path`` without a leading ``./`` or image extension (``train/r_0``)."""
    p = Path(file_path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        p = p.with_suffix("")
    return p.as_posix().removeprefix("./")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image header, without decoding it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(path, f"cannot read image ({e})") from None


def load_blender(
    root: str | Path,
    split: str = "train",
    downscale: int = 1,
    background: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0),
    *,
    limit: int | None = None,
    num_workers: int | None = None,
    every: int = 1,
) -> Dataset:
    """Load one split of a Blender-layout scene -> :class:`Dataset` (``near``/``far`` None unless stated).

    ``every=k`` keeps every k-th frame (before ``limit``).
    """
    root = Path(root)
    factor, bg, limit = check_options(root, downscale, background, limit)
    json_path = root / f"transforms_{split}.json"
    meta = read_transforms(json_path)
    frames = meta["frames"][:: check_every(every)]
    frames = frames[:limit] if limit is not None else frames

    names: list[str] = []
    paths: list[Path] = []
    poses = np.empty((len(frames), 4, 4), dtype=np.float64)
    for i, frame in enumerate(frames):
        where = f"frame {i}"
        if not isinstance(frame, dict):
            raise DatasetError(json_path, f"{where} is not a json object")
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path.strip():
            raise DatasetError(json_path, f"{where} has no 'file_path' string")
        if "transform_matrix" not in frame:
            raise DatasetError(json_path, f"{where} has no 'transform_matrix'")
        poses[i] = as_c2w(frame["transform_matrix"], json_path, f"{where} transform_matrix")
        paths.append(resolve_image_path(root, file_path))
        names.append(frame_name(file_path))

    if "w" in meta and "h" in meta:
        width = int(finite_positive(meta["w"], json_path, "'w'"))
        height = int(finite_positive(meta["h"], json_path, "'h'"))
        size_source = f"'w'/'h' in {json_path.name}"
    else:
        width, height = image_size(paths[0])
        size_source = f"size of {paths[0].name}"

    if "fl_x" in meta:
        focal = finite_positive(meta["fl_x"], json_path, "'fl_x'")
    elif "camera_angle_x" in meta:
        angle = finite_positive(meta["camera_angle_x"], json_path, "'camera_angle_x'")
        if angle >= math.pi:
            raise DatasetError(json_path, f"'camera_angle_x' must be below pi radians, got {angle}")
        focal = focal_from_fov(width, angle)
    else:
        raise DatasetError(json_path, "json has neither 'camera_angle_x' nor 'fl_x'")
    cx = finite_float(meta["cx"], json_path, "'cx'") if "cx" in meta else None
    cy = finite_float(meta["cy"], json_path, "'cy'") if "cy" in meta else None
    near = finite_positive(meta["near"], json_path, "'near'") if "near" in meta else None
    far = finite_positive(meta["far"], json_path, "'far'") if "far" in meta else None
    if near is not None and far is not None and far <= near:
        raise DatasetError(json_path, f"'far' ({far}) must exceed 'near' ({near})")

    images, alphas = load_images(paths, width, height, bg, factor, size_source, num_workers)
    if factor > 1 and (cx is not None or cy is not None or width % factor or height % factor):
        cx = (width / 2.0 if cx is None else cx) / factor
        cy = (height / 2.0 if cy is None else cy) / factor
    return Dataset(
        images=images,
        alphas=alphas,
        c2w=poses.astype(np.float32),
        focal=focal / factor,
        width=images.shape[2],
        height=images.shape[1],
        background=bg,
        names=names,
        near=near,
        far=far,
        split=split,
        root=str(root),
        cx=cx,
        cy=cy,
        layout="blender",
    )
