"""The Blender (NeRF synthetic) layout: ``transforms_{train,val,test}.json`` plus images.

The json holds ``camera_angle_x`` (horizontal field of view, radians) and ``frames``, each with a
``file_path`` (relative to the json, usually without extension: ``./train/r_0`` -> ``train/r_0.png``) and a
``transform_matrix`` (camera-to-world, OpenGL convention: already what :class:`Dataset` stores).
Optional keys written by other tools are honoured: ``fl_x`` (focal in pixels), ``cx``, ``cy``, ``w``, ``h``,
``near``, ``far``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from trainer.data.common import (
    Dataset,
    image_header_size,
    load_images,
)
from trainer.data.fields import (
    DatasetError,
    as_c2w,
    check_every,
    check_frame_count,
    check_image_size,
    check_intrinsics,
    check_options,
    distance,
    finite_float,
    finite_positive,
    image_side,
    read_json,
    short_repr,
)

#: Longest ``file_path`` accepted (characters).
MAX_FILE_PATH = 4096

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".webp")


def is_blender_layout(root: Path) -> bool:
    """Whether ``root`` holds at least one ``transforms_*.json``."""
    return root.is_dir() and any(root.glob("transforms_*.json"))


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Pinhole focal in pixels from the horizontal field of view: 0.5 W / tan(0.5 angle)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def read_transforms(path: Path) -> dict[str, Any]:
    """Parse a transforms json (``renderer.safe_json.parse_json``: bounded size, depth and numbers);
    DatasetError when missing, not json, not an object, or without a list of 1..MAX_FRAMES frames."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    meta = read_json(path, "transforms json")
    if not isinstance(meta, dict):
        raise DatasetError(path, "top level must be a json object")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(path, "json has no frames (expected a non-empty list under 'frames')")
    check_frame_count(len(frames), path)
    return meta


def check_file_path(file_path: object, json_path: Path, where: str) -> str:
    """A frame's ``file_path``: a non-empty relative path that stays inside the dataset folder.

    Refused: not a string, empty, longer than MAX_FILE_PATH, control characters, absolute (``/x``, ``~``,
    ``C:``), or with ``..`` parts that climb out of the folder.
    """
    if not isinstance(file_path, str) or not file_path.strip():
        raise DatasetError(json_path, f"{where} has no 'file_path' string")
    if len(file_path) > MAX_FILE_PATH:
        raise DatasetError(json_path, f"{where} 'file_path' is longer than {MAX_FILE_PATH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in file_path):
        raise DatasetError(json_path, f"{where} 'file_path' {short_repr(file_path)} has control characters")
    posix = PurePosixPath(file_path.replace("\\", "/"))
    drive = len(file_path) > 1 and file_path[0].isalpha() and file_path[1] == ":"
    if posix.is_absolute() or file_path.startswith("~") or drive:
        problem = f"{where} 'file_path' {short_repr(file_path)} must be relative to the dataset folder"
        raise DatasetError(json_path, problem)
    depth = 0
    for part in posix.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            problem = f"{where} 'file_path' {short_repr(file_path)} leaves the dataset folder"
            raise DatasetError(json_path, problem)
    return file_path


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
    """(width, height) from an image header, without decoding it (DatasetError past the size limits)."""
    return image_header_size(path)


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
        file_path = check_file_path(frame.get("file_path"), json_path, where)
        if "transform_matrix" not in frame:
            raise DatasetError(json_path, f"{where} has no 'transform_matrix'")
        poses[i] = as_c2w(frame["transform_matrix"], json_path, f"{where} transform_matrix")
        paths.append(resolve_image_path(root, file_path))
        names.append(frame_name(file_path))

    if "w" in meta and "h" in meta:
        width = image_side(meta["w"], json_path, "'w'")
        height = image_side(meta["h"], json_path, "'h'")
        check_image_size(width, height, json_path, "image size 'w' x 'h'")
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
    check_intrinsics(focal, cx, cy, width, height, json_path)
    near = distance(meta["near"], json_path, "'near'") if "near" in meta else None
    far = distance(meta["far"], json_path, "'far'") if "far" in meta else None
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
