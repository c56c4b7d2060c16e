"""The ``data`` settings of a training run (``--set data.bbox_min=[x,y,z] data.bbox_max=[x,y,z]``).

Declared like every other setting (`trainer.settings.setting`): validated with the preset before anything
is written, refused in one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.data.fields import MAX_DISTANCE
from trainer.settings import setting


@dataclass
class DataConfig:
    """What the trainer takes from the dataset beyond its images: the scene box, when the user gives one."""

    bbox_min: tuple[float, ...] | None = setting(None, length=(3, 3), ge=-MAX_DISTANCE, le=MAX_DISTANCE)
    """Scene box minimum [x, y, z] in the dataset's world units, replacing the dataset's own box (NSVF
    ``bbox.txt``, a transforms.json ``aabb`` / ``aabb_scale``, or the box estimated from its cameras);
    None: the dataset's."""
    bbox_max: tuple[float, ...] | None = setting(None, length=(3, 3), ge=-MAX_DISTANCE, le=MAX_DISTANCE)
    """Scene box maximum [x, y, z]; given together with ``bbox_min``."""

    def relations(self) -> list[tuple[str, str]]:
        """Both corners or neither; the minimum below the maximum on every axis."""
        lo, hi = self.bbox_min, self.bbox_max
        if lo is None and hi is not None:
            return [("bbox_min", "must be given with bbox_max (both corners, or neither)")]
        if hi is None and lo is not None:
            return [("bbox_max", "must be given with bbox_min (both corners, or neither)")]
        if lo is not None and hi is not None and not all(a < b for a, b in zip(lo, hi, strict=True)):
            return [("bbox_max", f"must exceed bbox_min {list(lo)} on every axis, got {list(hi)}")]
        return []

    @property
    def box(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(bbox_min, bbox_max) when the user set them, else None."""
        if self.bbox_min is None or self.bbox_max is None:
            return None
        return tuple(self.bbox_min), tuple(self.bbox_max)
