"""Dataset loaders: Blender (NeRF synthetic) and NSVF layouts into one :class:`Dataset`.

>>> ds = load_dataset("../shared/data/nerf_synthetic/lego", "train", downscale=4)  # doctest: +SKIP
>>> ds.images.shape, ds.focal  # doctest: +SKIP
((100, 200, 200, 3), 277.77...)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer.data.blender import is_blender_layout, load_blender, read_transforms
from trainer.data.common import SYNTHETIC_NEAR_FAR, Dataset, default_near_far
from trainer.data.fields import DatasetError
from trainer.data.nsvf import is_nsvf_layout, list_frames, load_nsvf

__all__ = [
    "SYNTHETIC_NEAR_FAR",
    "Dataset",
    "DatasetError",
    "default_near_far",
    "detect_layout",
    "load_blender",
    "load_dataset",
    "load_nsvf",
]


def detect_layout(root: str | os.PathLike[str]) -> str:
    """``"blender"`` or ``"nsvf"`` for a dataset folder; DatasetError when missing or unrecognised."""
    path = Path(root)
    if not path.exists():
        raise DatasetError(path, "dataset folder not found")
    if not path.is_dir():
        raise DatasetError(path, "not a folder (give the scene folder, e.g. nerf_synthetic/lego)")
    if is_blender_layout(path):
        return "blender"
    if is_nsvf_layout(path):
        return "nsvf"
    raise DatasetError(
        path,
        "no recognised dataset layout (expected transforms_<split>.json for Blender, "
        "or intrinsics.txt + pose/ + rgb/ for NSVF)",
    )


def count_frames(root: str | os.PathLike[str], split: str) -> int:
    """Number of frames of split ``split`` of the scene in ``root`` (DatasetError when unreadable)."""
    if detect_layout(root) == "blender":
        return len(read_transforms(Path(root) / f"transforms_{split}.json")["frames"])
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
) -> Dataset:
    """Load split ``split`` of the scene in ``root``, whatever its layout.

    ``downscale=N`` area-averages N x N blocks after compositing on ``background`` at full resolution
    (focal and principal point divided by N); ``every=k`` keeps every k-th frame and ``limit=K`` the first K
    of those; images are decoded in a pool of ``num_workers`` threads (default: a few per core). Missing or
    malformed files raise DatasetError.
    """
    layout = detect_layout(root)
    loader = load_blender if layout == "blender" else load_nsvf
    return loader(Path(root), split, downscale, background, limit=limit, num_workers=num_workers, every=every)
