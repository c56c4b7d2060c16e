"""Ground truth for the viewer's compare mode: the dataset views a scene was trained on, and a render set
beside its view with the error between them.

No glfw, imgui or GL here. The dataset comes from the scene's provenance (``dataset``, ``downscale``: what
the trainer wrote) or a folder the user picks; each split is loaded once, at the scene's training
resolution, on first use (then switching views is instant). A view is rendered with ``Dataset.camera(i)``
and compared with ``trainer.metrics.psnr``, the same camera and metric as ``python -m trainer eval``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")
"""The splits the compare mode offers."""
ERROR_SCALE = 0.25
"""Mean absolute channel error shown at the top of the colour map (brighter is clipped)."""
MAX_SPLIT_BYTES = 2 * 2**30
"""Largest split held in memory (images and alphas, float32); a larger one is refused in one line."""


class GroundTruthError(ValueError):
    """No usable dataset for the compare mode (one line naming the folder and the problem)."""


@dataclass(frozen=True)
class Comparison:
    """A render set against its ground truth."""

    side_by_side: np.ndarray
    """``[H, 3W, 3]`` float32 in [0, 1]: ground truth | render | error colour map."""
    error: np.ndarray
    """``[H, W, 3]`` float32 colour map of the mean absolute error per pixel (``error_colors``)."""
    psnr: float
    """PSNR in dB of the render (clamped to [0, 1]) against the ground truth (``trainer.metrics.psnr``)."""


def error_colors(render: np.ndarray, truth: np.ndarray, scale: float = ERROR_SCALE) -> np.ndarray:
    """``[H, W, 3]`` colours of the mean absolute error per pixel: black (0) → red → yellow → white
    (``scale`` and above), a ramp that reads in grey too."""
    e = np.abs(np.asarray(render, np.float32) - np.asarray(truth, np.float32)).mean(axis=-1)
    t = np.clip(e / scale, 0.0, 1.0)[..., None]  # [H, W, 1]
    return np.clip(np.concatenate([3 * t, 3 * t - 1, 3 * t - 2], axis=-1), 0.0, 1.0).astype(np.float32)


def compare(render: np.ndarray, truth: np.ndarray) -> Comparison:
    """``render`` and ``truth`` ``[H, W, 3]`` → the side-by-side picture, the error map and the PSNR."""
    from trainer.metrics import psnr

    img = np.clip(np.asarray(render, np.float32), 0.0, 1.0)
    gt = np.asarray(truth, np.float32)
    if img.shape != gt.shape:
        raise ValueError(f"render {img.shape} and ground truth {gt.shape} differ in size")
    err = error_colors(img, gt)
    return Comparison(np.concatenate([gt, img, err], axis=1), err, psnr(img, gt))


def dataset_of(scene: Any) -> tuple[str, int] | None:
    """The dataset folder and downscale a scene's provenance names (None when it names none)."""
    prov = getattr(scene, "provenance", None) or {}
    root, factor = prov.get("dataset"), prov.get("downscale", 1)
    if not isinstance(root, str) or not root:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= 64:
        factor = 1
    return root, factor


class GroundTruth:
    """The views of one dataset folder at one downscale, each split loaded once (thread-safe)."""

    def __init__(self, root: str | Path, downscale: int = 1, background: Any = (1.0, 1.0, 1.0)) -> None:
        from app.jobs import dataset_problem

        self.root = str(Path(root).expanduser())
        self.downscale = int(downscale)
        self.background = tuple(float(v) for v in background)
        problem = dataset_problem(self.root)
        if problem:
            raise GroundTruthError(problem)
        self._splits: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_scene(cls, scene: Any, root: str | None = None) -> GroundTruth:
        """The scene's own dataset (its provenance), or ``root`` when given (at the provenance's downscale
        when the scene has one); GroundTruthError when there is none or it cannot be read."""
        named = dataset_of(scene)
        background = getattr(scene, "background", (1.0, 1.0, 1.0))
        if root is not None:
            return cls(root, named[1] if named is not None else 1, background)
        if named is None:
            raise GroundTruthError("the scene names no dataset: pick its folder")
        return cls(named[0], named[1], background)

    def count(self, split: str) -> int:
        """Views in ``split`` (read from the dataset's index, without loading images)."""
        from trainer.data import DatasetError, count_frames

        try:
            return int(count_frames(self.root, split))
        except DatasetError:
            return 0

    def split(self, split: str) -> Any:
        """The ``trainer.data.Dataset`` of ``split``, loaded on first use and kept."""
        from trainer.data import DatasetError, load_dataset

        if split not in SPLITS:
            raise GroundTruthError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        with self._lock:
            if split not in self._splits:
                try:
                    ds = load_dataset(self.root, split, self.downscale, self.background)
                except DatasetError as e:
                    raise GroundTruthError(str(e)) from None
                if ds.images.nbytes + ds.alphas.nbytes > MAX_SPLIT_BYTES:
                    raise GroundTruthError(f"{self.root}: the {split} split needs more than 2 GiB here")
                self._splits[split] = ds
            return self._splits[split]

    def camera(self, split: str, i: int) -> Any:
        """The ``Camera`` of view ``i`` of ``split`` (``Dataset.camera``: the pose and intrinsics exactly)."""
        return self.split(split).camera(i)

    def image(self, split: str, i: int) -> np.ndarray:
        """``[H, W, 3]`` float32 ground truth of view ``i`` (composited on the scene's background)."""
        return np.asarray(self.split(split).images[i])
