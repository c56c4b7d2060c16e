"""The NSVF layout (Synthetic-NSVF, BlendedMVS, Tanks&Temples): bbox, intrinsics, ``pose/``, ``rgb/``.

- ``bbox.txt``: ``xmin ymin zmin xmax ymax zmax [voxel_size]``.
- ``intrinsics.txt``: first line ``focal cx cy 0``, last line ``width height``; or a 3x3 / 4x4 matrix
  ``[[fx, 0, cx], [0, fy, cy], ...]`` (BlendedMVS, Tanks&Temples), with the size then taken from the images.
- ``pose/<split>_<id>.txt``: 4x4 camera-to-world in the OpenCV convention (+Y down, +Z forward); the Y and Z
  columns are negated to get the OpenGL convention :class:`Dataset` stores.
- ``rgb/<split>_<id>.png``; the prefixes ``0_``, ``1_``, ``2_`` are the train, val and test splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer.data.common import (
    Dataset,
    load_images,
)
from trainer.data.fields import (
    MAX_DISTANCE,
    MAX_TEXT_BYTES,
    DatasetError,
    as_c2w,
    check_every,
    check_frame_count,
    check_image_size,
    check_intrinsics,
    check_options,
    finite_positive,
    image_side,
    read_bounded,
)

SPLIT_PREFIX = {"train": "0", "val": "1", "test": "2"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Right-multiplying an OpenCV camera-to-world by this negates its Y and Z axes: the OpenGL camera.
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def is_nsvf_layout(root: Path) -> bool:
    """Whether ``root`` has ``intrinsics.txt`` and a ``pose/`` folder."""
    return (root / "intrinsics.txt").is_file() and (root / "pose").is_dir()


def read_numbers(path: Path, what: str) -> list[list[float]]:
    """Whitespace-separated finite numbers, one list per non-empty line; DatasetError when missing, larger
    than MAX_TEXT_BYTES, not UTF-8, or not finite numbers."""
    if not path.is_file():
        raise DatasetError(path, f"{what} file not found")
    try:
        text = read_bounded(path, MAX_TEXT_BYTES, what).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            path, f"cannot read {what} (not UTF-8 text: {e.reason} at byte {e.start})"
        ) from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tokens = line.replace(",", " ").split()
            if any("_" in tok for tok in tokens):  # float() reads "1_000"; a number file does not
                raise ValueError(line)
            row = [float(tok) for tok in tokens]
        except ValueError:
            shown = " ".join(line.split())
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            problem = f"malformed {what}: line {lineno} is not numbers: {shown!r}"
            raise DatasetError(path, problem) from None
        if not all(math.isfinite(v) for v in row):
            raise DatasetError(path, f"malformed {what}: line {lineno} has a non-finite number")
        rows.append(row)
    if not rows:
        raise DatasetError(path, f"{what} file is empty")
    return rows


def read_bbox(path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """``bbox.txt`` -> (bbox_min [3], bbox_max [3] float32, voxel size or None)."""
    values = [v for row in read_numbers(path, "bbox") for v in row]
    if len(values) not in (6, 7):
        raise DatasetError(
            path, f"malformed bbox: expected 6 or 7 numbers (min xyz, max xyz, voxel), got {len(values)}"
        )
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise DatasetError(path, "malformed bbox: non-finite values")
    if np.abs(arr).max() > MAX_DISTANCE:
        big = float(np.abs(arr).max())
        raise DatasetError(path, f"malformed bbox: a value of magnitude {big:g}, more than {MAX_DISTANCE:g}")
    lo, hi = arr[:3], arr[3:6]
    if np.any(hi - lo < 1e-6 * max(1.0, float(np.abs(arr[:6]).max()))):
        problem = f"malformed bbox: min {lo.tolist()} is not below max {hi.tolist()} on every axis"
        raise DatasetError(path, problem)
    voxel = float(arr[6]) if len(arr) == 7 else None
    if voxel is not None and voxel <= 0:
        raise DatasetError(path, f"malformed bbox: voxel size must be > 0, got {voxel}")
    return lo.astype(np.float32), hi.astype(np.float32), voxel


def read_intrinsics(path: Path) -> tuple[float, float, float, int | None, int | None]:
    """``intrinsics.txt`` -> (focal, cx, cy, width or None, height or None) at full resolution."""
    rows = read_numbers(path, "intrinsics")
    if len(rows) in (3, 4) and all(len(r) == len(rows) for r in rows):  # a 3x3 or 4x4 K matrix
        k = np.asarray(rows, dtype=np.float64)
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        if not np.all(np.isfinite(k)) or fx <= 0 or fy <= 0:
            raise DatasetError(path, "malformed intrinsics: matrix needs finite fx, fy > 0")
        if abs(fx - fy) > 1e-3 * fx:
            problem = f"malformed intrinsics: fx {fx} != fy {fy} (only square pixels are supported)"
            raise DatasetError(path, problem)
        return float(fx), float(cx), float(cy), None, None
    first = rows[0]
    if len(first) < 3:
        problem = f"malformed intrinsics: first line must be 'focal cx cy 0', got {len(first)} numbers"
        raise DatasetError(path, problem)
    focal = finite_positive(first[0], path, "intrinsics focal")
    cx, cy = float(first[1]), float(first[2])
    if not (np.isfinite(cx) and np.isfinite(cy)):
        raise DatasetError(path, "malformed intrinsics: cx, cy must be finite")
    width = height = None
    if len(rows) > 1:
        last = rows[-1]
        if len(last) != 2:
            problem = f"malformed intrinsics: last line must be 'width height', got {len(last)} numbers"
            raise DatasetError(path, problem)
        width = image_side(last[0], path, "malformed intrinsics: image width")
        height = image_side(last[1], path, "malformed intrinsics: image height")
        check_image_size(width, height, path, "malformed intrinsics: image size")
    return focal, cx, cy, width, height


def read_pose(path: Path) -> np.ndarray:
    """``pose/<id>.txt``: 4 (or 3) rows of 4 numbers -> [4, 4] float64 camera-to-world as stored (OpenCV)."""
    rows = read_numbers(path, "pose")
    if len(rows) not in (3, 4) or any(len(r) != 4 for r in rows):
        lengths = [len(r) for r in rows]
        raise DatasetError(path, f"malformed pose: expected 4 rows of 4 numbers, got row lengths {lengths}")
    return as_c2w(rows, path)


def list_frames(root: Path, split: str) -> list[str]:
    """Sorted frame ids of a split (``0_0000`` ...) from ``pose/<prefix>_*.txt``."""
    if split not in SPLIT_PREFIX:
        raise DatasetError(root, f"unknown split {split!r} (NSVF has {', '.join(SPLIT_PREFIX)})")
    prefix = SPLIT_PREFIX[split] + "_"
    stems: list[str] = []
    for p in (root / "pose").glob(f"{prefix}*.txt"):
        stems.append(p.stem)
        check_frame_count(len(stems), root / "pose")
    if not stems:
        raise DatasetError(root / "pose", f"no '{prefix}*.txt' poses for split {split!r}")
    return sorted(stems)


def image_for(root: Path, stem: str) -> Path:
    """``rgb/<stem>.png`` (or .jpg / .jpeg when that is what exists)."""
    for suffix in IMAGE_SUFFIXES:
        p = root / "rgb" / f"{stem}{suffix}"
        if p.is_file():
            return p
    return root / "rgb" / f"{stem}.png"


def load_nsvf(
    root: str | Path,
    split: str = "train",
    downscale: int = 1,
    background: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0),
    *,
    limit: int | None = None,
    num_workers: int | None = None,
    every: int = 1,
) -> Dataset:
    """Load one split of an NSVF-layout scene -> :class:`Dataset` (poses converted to OpenGL).

    ``every=k`` keeps every k-th frame (before ``limit``).
    """
    root = Path(root)
    factor, bg, limit = check_options(root, downscale, background, limit)
    focal, cx, cy, width, height = read_intrinsics(root / "intrinsics.txt")
    bbox_path = root / "bbox.txt"
    bbox_min, bbox_max, voxel = read_bbox(bbox_path) if bbox_path.exists() else (None, None, None)

    stems = list_frames(root, split)[:: check_every(every)]
    if limit is not None:
        stems = stems[:limit]
    poses = np.empty((len(stems), 4, 4), dtype=np.float64)
    for i, stem in enumerate(stems):
        pose_path = root / "pose" / f"{stem}.txt"
        poses[i] = read_pose(pose_path) @ OPENCV_TO_OPENGL
    paths = [image_for(root, stem) for stem in stems]

    if width is None or height is None:
        from trainer.data.blender import image_size

        width, height = image_size(paths[0])
        size_source = f"size of {paths[0].name}"
    else:
        size_source = "intrinsics.txt"
    check_intrinsics(focal, cx, cy, width, height, root / "intrinsics.txt")
    images, alphas = load_images(paths, width, height, bg, factor, size_source, num_workers)
    return Dataset(
        images=images,
        alphas=alphas,
        c2w=poses.astype(np.float32),
        focal=focal / factor,
        width=images.shape[2],
        height=images.shape[1],
        background=bg,
        names=stems,
        bbox_min=bbox_min,
        bbox_max=bbox_max,
        split=split,
        root=str(root),
        cx=cx / factor,
        cy=cy / factor,
        layout="nsvf",
        voxel_size=voxel,
    )
