"""Stage checkpoints in the work folder: atomic writes, and loading that never runs pickled code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from renderer.atomic import atomic_write


def save_checkpoint(path: str | Path, blob: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a dict of tensors, numbers, strings, lists, tuples and dicts."""
    with atomic_write(path) as f:
        torch.save(blob, f)


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    """Load a dict saved by `save_checkpoint` (``weights_only``: plain data and tensors, no code)."""
    return torch.load(path, map_location=device, weights_only=True)
