"""Dataset loaders: Blender (NeRF synthetic), instant-ngp / nerfstudio (``transforms.json``) and NSVF layouts
into one :class:`Dataset`.

>>> ds = load_dataset("../shared/data/nerf_synthetic/lego", "train", downscale=4)  # doctest: +SKIP
>>> ds.images.shape, ds.focal  # doctest: +SKIP
((100, 200, 200, 3), 277.77...)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.blender import is_blender_layout, load_blender, read_transforms
from trainer.data.common import SYNTHETIC_NEAR_FAR, Dataset, default_near_far
from trainer.data.fields import MAX_DISTANCE, DatasetError
from trainer.data.ngp import count_ngp_frames, is_ngp_layout, load_ngp
from trainer.data.nsvf import is_nsvf_layout, list_frames, load_nsvf

__all__ = [
    "SYNTHETIC_NEAR_FAR",
    "Dataset",
    "DatasetError",
    "default_near_far",
    "detect_layout",
    "load_blender",
    "load_dataset",
    "load_ngp",
    "load_nsvf",
]

LOADERS = {"blender": load_blender, "ngp": load_ngp, "nsvf": load_nsvf}


def detect_layout(root: str | os.PathLike[str]) -> str:
    """``"blender"``, ``"ngp"`` or ``"nsvf"`` for a dataset folder; DatasetError when missing or unrecognised.

    A folder with ``transforms_<split>.json`` is Blender even when it also holds a ``transforms.json``.
    """
    path = Path(root)
    if not path.exists():
        raise DatasetError(path, "dataset folder not found")
    if not path.is_dir():
        raise DatasetError(path, "not a folder (give the scene folder, e.g. nerf_synthetic/lego)")
    if is_blender_layout(path):
        return "blender"
    if is_ngp_layout(path):
        return "ngp"
    if is_nsvf_layout(path):
        return "nsvf"
    raise DatasetError(
        path,
        "no recognised dataset layout (expected transforms_<split>.json for Blender, transforms.json for "
        "instant-ngp / nerfstudio, or intrinsics.txt + pose/ + rgb/ for NSVF)",
    )


def count_frames(root: str | os.PathLike[str], split: str) -> int:
    """Number of frames of split ``split`` of the scene in ``root`` (DatasetError when unreadable)."""
    layout = detect_layout(root)
    if layout == "blender":
        return len(read_transforms(Path(root) / f"transforms_{split}.json")["frames"])
    if layout == "ngp":
        return count_ngp_frames(Path(root), split)
    return len(list_frames(Path(root), split))


def load_dataset(
    root: str | os.PathLike[str],
    split: str = "train",
    downscale: int = 1,
    background: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0),
    *,
    limit: int | None = None,
    num_workers: int | None = None,
    every: int = 1,
    bbox: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Dataset:
    """Load split ``split`` of the scene in ``root``, whatever its layout.

    ``downscale=N`` area-averages N x N blocks after compositing on ``background`` at full resolution
    (focal and principal point divided by N); ``every=k`` keeps every k-th frame and ``limit=K`` the first K
    of those; images are decoded in a pool of ``num_workers`` threads (default: a few per core). ``bbox``
    (min, max) replaces the dataset's own scene box (``--set data.bbox_min/max``). Missing or malformed files
    raise DatasetError.
    """
    layout = detect_layout(root)
    box = None
    if bbox is not None:
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in bbox)
        finite = lo.shape == hi.shape == (3,) and np.isfinite(lo).all() and np.isfinite(hi).all()
        if not finite or not (lo < hi).all() or max(np.abs(lo).max(), np.abs(hi).max()) > MAX_DISTANCE:
            raise ValueError(
                f"bbox must be two corners [3] within ±{MAX_DISTANCE:g}, min < max; got {bbox!r}"
            )
        box = (lo.astype(np.float32), hi.astype(np.float32))
    options: dict[str, Any] = {"limit": limit, "num_workers": num_workers, "every": every}
    if layout == "ngp":  # the user's box spares the file's (which may be the problem)
        return load_ngp(Path(root), split, downscale, background, **options, bbox=box)
    ds = LOADERS[layout](Path(root), split, downscale, background, **options)
    if box is not None:
        ds.bbox_min, ds.bbox_max, ds.bbox_loose = box[0], box[1], False
    return ds
