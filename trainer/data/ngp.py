"""The instant-ngp / nerfstudio layout: one ``transforms.json`` (and no ``transforms_<split>.json``).

What is read (docs/datasets.md has the whole list, and what is ignored):

- ``frames``: each a ``file_path`` (relative to the json's folder, in any folder inside it; with or without
  ``.png`` / ``.jpg`` / ``.jpeg``) and a ``transform_matrix`` (camera-to-world, OpenGL convention as in the
  Blender layout). nerfstudio's ``applied_transform`` is ignored: the poses in the file are the ones used.
- intrinsics, at the top level or per frame (a frame's own key wins): ``w``, ``h`` (else the image's size),
  ``fl_x`` / ``fl_y`` (else ``camera_angle_x`` / ``camera_angle_y`` in radians, else ``x_fov`` / ``y_fov`` in
  degrees; one axis alone gives both), ``cx``, ``cy`` (else the image centre). Frames may differ in all of
  them, sizes included.
- lens: ``camera_model`` PINHOLE / SIMPLE_PINHOLE, or OPENCV / SIMPLE_RADIAL / RADIAL / FULL_OPENCV with every
  coefficient (``k1``..``k6``, ``p1``, ``p2``) zero. Nonzero distortion, fisheye and panoramic cameras are
  refused naming the frame: undistort the images first.
- split: nerfstudio's ``train_filenames`` / ``val_filenames`` / ``test_filenames`` when present; otherwise
  every 8th frame (0, 8, 16, ...) is ``test`` (and ``val``), the others ``train``.
- box: ``aabb`` [[x0, y0, z0], [x1, y1, z1]] is the scene's box; else instant-ngp's ``aabb_scale`` (with its
  ``scale``, default 0.33, and ``offset``, default 0.5) bounds it; else a box the cameras look into (from
  every frame of the file, whatever the split). The latter two are loose bounds (``Dataset.bbox_loose``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from trainer.data.blender import IMAGE_SUFFIXES, check_file_path, frame_name, read_transforms
from trainer.data.cameras import camera_box, look_at_point
from trainer.data.common import Dataset, image_header_size, load_frame_images
from trainer.data.fields import (
    MAX_DISTANCE,
    MAX_FRAMES,
    DatasetError,
    as_c2w,
    check_every,
    check_image_size,
    check_intrinsics,
    check_options,
    finite_float,
    finite_positive,
    image_side,
    is_number,
    short_repr,
)

NGP_JSON = "transforms.json"
SPLIT_KEYS = {"train": "train_filenames", "val": "val_filenames", "test": "test_filenames"}
#: Without split lists, frames whose index is a multiple of this are the test (and val) split.
TEST_EVERY = 8
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")
#: COLMAP / nerfstudio camera models that are a pinhole once their distortion coefficients are zero.
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL", "FULL_OPENCV")
#: instant-ngp keys of lenses that are no pinhole whatever their coefficients.
OTHER_LENS_KEYS = ("is_fisheye", "latlong", "equirectangular", "ftheta_p0")
#: instant-ngp's defaults: json coordinates x map to x * scale + offset in its unit cube.
NGP_SCALE, NGP_OFFSET = 0.33, 0.5
MAX_AABB_SCALE = 128.0
UNDISTORT_HINT = "undistort the images first (e.g. COLMAP's image_undistorter) and give a PINHOLE camera"


@dataclass
class NgpFrame:
    """One frame of the json, checked, at full resolution: where its image is and its camera."""

    index: int
    name: str
    path: Path
    c2w: np.ndarray
    size: tuple[int, int]
    size_source: str
    k: tuple[float, float, float, float]
    """(fx, fy, cx, cy) in pixels."""


def is_ngp_layout(root: Path) -> bool:
    """Whether ``root`` holds a ``transforms.json``."""
    return (root / NGP_JSON).is_file()


def find_image(root: Path, file_path: str) -> Path:
    """The image a ``file_path`` names: the file itself, else with ``.png``, ``.jpg`` or ``.jpeg`` (either
    case) appended; the path as given when none exists (then reported missing)."""
    p = root / file_path.replace("\\", "/")
    if p.is_file() or p.suffix.lower() in IMAGE_SUFFIXES:
        return p
    for suffix in (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"):
        candidate = p.with_name(p.name + suffix)
        if candidate.is_file():
            return candidate
    return p


def split_key(file_path: str) -> str:
    """A file path as the split lists are matched: ``/`` separators, no ``./``, no image extension."""
    p = PurePosixPath(file_path.replace("\\", "/"))
    if p.suffix.lower() in IMAGE_SUFFIXES:
        p = p.with_suffix("")
    return p.as_posix()


def split_indices(meta: dict[str, Any], json_path: Path, file_paths: Sequence[str], split: str) -> list[int]:
    """Indices of the frames of ``split``: from nerfstudio's ``<split>_filenames`` when the file has any such
    list, else every TEST_EVERY-th frame for test / val and the others for train."""
    if split not in SPLIT_KEYS:
        raise DatasetError(json_path, f"unknown split {split!r} (expected train, val or test)")
    listed = [k for k in SPLIT_KEYS.values() if k in meta]
    if not listed:
        held_out = [i for i in range(len(file_paths)) if i % TEST_EVERY == 0]
        chosen = held_out if split != "train" else [i for i in range(len(file_paths)) if i % TEST_EVERY]
    else:
        key = SPLIT_KEYS[split]
        if key not in meta:
            raise DatasetError(json_path, f"no '{key}' (the file gives its splits as {', '.join(listed)})")
        names = meta[key]
        if (
            not isinstance(names, list)
            or len(names) > MAX_FRAMES
            or not all(isinstance(n, str) for n in names)
        ):
            raise DatasetError(json_path, f"'{key}' must be a list of at most {MAX_FRAMES} file names")
        keys = [split_key(p) for p in file_paths]
        known = set(keys)
        for n in names:
            if split_key(n) not in known:
                raise DatasetError(json_path, f"'{key}' names {short_repr(n)}, which is no frame's file_path")
        wanted = {split_key(n) for n in names}
        chosen = [i for i, k in enumerate(keys) if k in wanted]
    if not chosen:
        raise DatasetError(json_path, f"the {split} split has no frames")
    return chosen


def read_ngp(root: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """(json path, parsed json, every frame's checked ``file_path``)."""
    json_path = root / NGP_JSON
    meta = read_transforms(json_path)
    file_paths = []
    for i, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict):
            raise DatasetError(json_path, f"frame {i} is not a json object")
        file_paths.append(check_file_path(frame.get("file_path"), json_path, f"frame {i}"))
    return json_path, meta, file_paths


def count_ngp_frames(root: Path, split: str) -> int:
    """Number of frames in ``split`` (no image is opened)."""
    json_path, meta, file_paths = read_ngp(root)
    return len(split_indices(meta, json_path, file_paths, split))


def _key(frame: dict[str, Any], meta: dict[str, Any], key: str) -> Any:
    """A frame's own value of ``key``, else the file's, else None."""
    return frame[key] if key in frame else meta.get(key)


def check_lens(frame: dict[str, Any], meta: dict[str, Any], json_path: Path, where: str) -> None:
    """DatasetError unless the frame's camera is a pinhole: a pinhole ``camera_model`` (or none), every
    distortion coefficient zero, no fisheye / panoramic instant-ngp key."""
    model = _key(frame, meta, "camera_model")
    if model is not None and (not isinstance(model, str) or model.upper() not in PINHOLE_MODELS):
        raise DatasetError(
            json_path, f"{where}: camera_model {short_repr(model)} is not supported (pinhole cameras only)"
        )
    for key in OTHER_LENS_KEYS:
        value = _key(frame, meta, key)
        if value is not None and value is not False:
            raise DatasetError(json_path, f"{where}: '{key}' lenses are not supported; {UNDISTORT_HINT}")
    for key in DISTORTION_KEYS:
        value = _key(frame, meta, key)
        if value is not None and finite_float(value, json_path, f"{where}: '{key}'") != 0.0:
            raise DatasetError(
                json_path, f"{where}: distortion {key}={float(value):g} is not supported; {UNDISTORT_HINT}"
            )


def axis_focal(values: dict[str, Any], axis: str, side: int, json_path: Path, where: str) -> float | None:
    """Focal length along ``axis`` (x or y) from ``fl_<axis>``, ``camera_angle_<axis>`` (radians) or
    ``<axis>_fov`` (degrees) in ``values``, or None when it has none of them."""
    if f"fl_{axis}" in values:
        return finite_positive(values[f"fl_{axis}"], json_path, f"{where}: 'fl_{axis}'")
    for key, unit in ((f"camera_angle_{axis}", 1.0), (f"{axis}_fov", math.pi / 180.0)):
        if key in values:
            angle = finite_positive(values[key], json_path, f"{where}: '{key}'") * unit
            if angle >= math.pi:
                raise DatasetError(
                    json_path, f"{where}: '{key}' must be below 180 degrees, got {values[key]}"
                )
            return 0.5 * side / math.tan(0.5 * angle)
    return None


def frame_focals(
    frame: dict[str, Any], meta: dict[str, Any], size: tuple[int, int], json_path: Path, where: str
) -> tuple[float, float]:
    """(fx, fy): each axis from the frame's own keys, else the file's; one axis alone gives both."""
    f = [
        axis_focal(frame, axis, side, json_path, where) or axis_focal(meta, axis, side, json_path, where)
        for axis, side in (("x", size[0]), ("y", size[1]))
    ]
    if f[0] is None and f[1] is None:
        raise DatasetError(json_path, f"{where}: no focal length (fl_x, camera_angle_x or x_fov)")
    return (f[0] or f[1]), (f[1] or f[0])  # type: ignore[return-value]


def read_frame(root: Path, json_path: Path, meta: dict[str, Any], i: int, file_path: str) -> NgpFrame:
    """Frame ``i`` of the json, every field it uses checked (its image's header read when ``w`` / ``h`` are
    not given)."""
    frame = meta["frames"][i]
    where = f"frame {i} ({file_path if len(file_path) <= 60 else file_path[:57] + '...'})"
    if "transform_matrix" not in frame:
        raise DatasetError(json_path, f"{where}: no 'transform_matrix'")
    c2w = as_c2w(frame["transform_matrix"], json_path, f"{where}: transform_matrix")
    check_lens(frame, meta, json_path, where)
    path = find_image(root, file_path)
    w, h = _key(frame, meta, "w"), _key(frame, meta, "h")
    if w is not None and h is not None:
        size = (image_side(w, json_path, f"{where}: 'w'"), image_side(h, json_path, f"{where}: 'h'"))
        check_image_size(*size, json_path, f"{where}: image size 'w' x 'h'")
        source = f"'w'/'h' in {json_path.name}"
    else:
        size, source = image_header_size(path), f"size of {path.name}"
    fx, fy = frame_focals(frame, meta, size, json_path, where)
    centre = []
    for key, side in (("cx", size[0]), ("cy", size[1])):
        value = _key(frame, meta, key)
        centre.append(side / 2.0 if value is None else finite_float(value, json_path, f"{where}: '{key}'"))
    try:
        check_intrinsics(fx, centre[0], centre[1], *size, json_path)
        check_intrinsics(fy, None, None, *size, json_path)
    except DatasetError as e:
        raise DatasetError(json_path, f"{where}: {e.problem}") from None
    return NgpFrame(i, frame_name(file_path), path, c2w, size, source, (fx, fy, centre[0], centre[1]))


def corner(value: object, json_path: Path, what: str) -> np.ndarray:
    """A box corner: 3 finite numbers within ±MAX_DISTANCE."""
    if not isinstance(value, list) or len(value) != 3 or not all(is_number(v) for v in value):
        raise DatasetError(json_path, f"{what} must be 3 numbers, got {short_repr(value)}")
    v = np.array([finite_float(x, json_path, what) for x in value], dtype=np.float64)
    if np.abs(v).max() > MAX_DISTANCE:
        raise DatasetError(json_path, f"{what} has a coordinate beyond ±{MAX_DISTANCE:g}")
    return v


def ngp_box(
    meta: dict[str, Any], json_path: Path, frames: list[NgpFrame]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(min, max, loose): ``aabb``; else instant-ngp's ``aabb_scale`` cube; else the cameras' look-at box."""
    if "aabb" in meta:
        aabb = meta["aabb"]
        if not isinstance(aabb, list) or len(aabb) != 2:
            raise DatasetError(
                json_path, f"'aabb' must be [[x0, y0, z0], [x1, y1, z1]], got {short_repr(aabb)}"
            )
        lo, hi = corner(aabb[0], json_path, "'aabb' minimum"), corner(aabb[1], json_path, "'aabb' maximum")
        if not (lo < hi).all():
            raise DatasetError(
                json_path, f"'aabb' minimum {lo.tolist()} must be below its maximum {hi.tolist()}"
            )
        return lo, hi, False
    if "aabb_scale" in meta:
        k = finite_positive(meta["aabb_scale"], json_path, "'aabb_scale'")
        if k > MAX_AABB_SCALE:
            raise DatasetError(json_path, f"'aabb_scale' must be at most {MAX_AABB_SCALE:g}, got {k:g}")
        scale = finite_positive(meta.get("scale", NGP_SCALE), json_path, "'scale'")
        offset = meta.get("offset", NGP_OFFSET)
        if isinstance(offset, list):
            off = corner(offset, json_path, "'offset'")
        else:
            off = np.full(3, finite_float(offset, json_path, "'offset'"))
        lo, hi = (0.5 - 0.5 * k - off) / scale, (0.5 + 0.5 * k - off) / scale
    else:
        sizes = np.array([f.size for f in frames], dtype=np.float64)
        fl = np.array([f.k[:2] for f in frames], dtype=np.float64)
        tan_half = float(np.max(0.5 * sizes / fl))  # the widest half field of view, either axis
        c2w = np.stack([f.c2w for f in frames])
        lo, hi = camera_box(c2w, tan_half)
        if not look_at_point(c2w)[1]:
            lo = np.full(3, np.nan)  # refused below
    box = np.concatenate([lo, hi])
    if not np.isfinite(box).all() or np.abs(box).max() > MAX_DISTANCE or not (lo < hi).all():
        raise DatasetError(
            json_path,
            "cannot place a scene box: the cameras look at no common point (a forward-facing capture?) or "
            "it is too large; give 'aabb' in the file, or the box: --set data.bbox_min=[x,y,z] --set "
            "data.bbox_max=[x,y,z]",
        )
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64), True


def load_ngp(
    root: str | Path,
    split: str = "train",
    downscale: int = 1,
    background: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0),
    *,
    limit: int | None = None,
    num_workers: int | None = None,
    every: int = 1,
    bbox: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Load one split of a ``transforms.json`` scene -> :class:`Dataset` (``layout="ngp"``).

    ``every=k`` keeps every k-th frame of the split (before ``limit``). Intrinsics are divided by the
    downscale factor; frames that differ in size or intrinsics keep their own (``Dataset.frame_intrinsics``,
    ``frame_sizes``). ``bbox`` (min, max), the user's box, replaces the file's (which is then not read).
    """
    root = Path(root)
    factor, bg, limit = check_options(root, downscale, background, limit)
    json_path, meta, file_paths = read_ngp(root)
    chosen = split_indices(meta, json_path, file_paths, split)[:: check_every(every)]
    chosen = chosen[:limit] if limit is not None else chosen
    frames = [read_frame(root, json_path, meta, i, p) for i, p in enumerate(file_paths)]
    lo, hi, loose = ngp_box(meta, json_path, frames) if bbox is None else (*bbox, False)
    mine = [frames[i] for i in chosen]
    images, alphas = load_frame_images(
        [f.path for f in mine], [f.size for f in mine], bg, factor, [f.size_source for f in mine], num_workers
    )
    k = np.array([f.k for f in mine], dtype=np.float64) / factor
    sizes = np.array([f.size for f in mine], dtype=np.int64) // factor
    uniform = bool((k == k[0]).all() and k[0, 0] == k[0, 1] and (sizes == sizes[0]).all())
    return Dataset(
        images=images,
        alphas=alphas,
        c2w=np.stack([f.c2w for f in mine]).astype(np.float32),
        focal=float(k[0, 0]),
        width=images.shape[2],
        height=images.shape[1],
        background=bg,
        names=[f.name for f in mine],
        bbox_min=lo.astype(np.float32),
        bbox_max=hi.astype(np.float32),
        split=split,
        root=str(root),
        cx=float(k[0, 2]) if uniform else None,
        cy=float(k[0, 3]) if uniform else None,
        layout="ngp",
        frame_intrinsics=None if uniform else k,
        frame_sizes=None if uniform else sizes,
        bbox_loose=loose,
    )
