"""Stage checkpoints in the work folder: atomic writes, and loading that never runs pickled code and refuses
a malformed file in one line (`PipelineError`) instead of a traceback."""

from __future__ import annotations

import io
import math
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from renderer.atomic import atomic_write_bytes
from trainer.errors import PipelineError
from trainer.files import writing

MAX_CHECKPOINT_STEP = 10**9
"""Largest step a checkpoint may record."""


class CheckpointError(PipelineError):
    """A checkpoint file that cannot be resumed from (one line naming it; delete it to restart its stage)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; delete it to restart that stage from its beginning")


def save_checkpoint(path: str | Path, blob: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a dict of tensors, numbers, strings, lists, tuples and dicts (serialised in
    memory first, so a full disk fails as `PipelineError` ``no space left writing PATH``)."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    with writing(path):
        atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    """Load a dict saved by `save_checkpoint` (``weights_only``: plain data and tensors, no code);
    `CheckpointError` when the file is not one."""
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "checkpoint file not found") from None
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        EOFError,
        OSError,
        ImportError,
    ) as e:
        reason = (str(e).splitlines() or [""])[0][:100]
        raise CheckpointError(
            path, f"not a checkpoint of this trainer ({type(e).__name__}: {reason})"
        ) from None
    if not isinstance(blob, dict):
        raise CheckpointError(path, f"not a checkpoint of this trainer (holds {type(blob).__name__})")
    return blob


def checkpoint_step(path: str | Path, blob: Mapping[str, Any]) -> int:
    """The ``step`` a checkpoint records (an integer in [0, 1e9])."""
    step = blob.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_CHECKPOINT_STEP:
        raise CheckpointError(path, f"step must be an integer in [0, {MAX_CHECKPOINT_STEP}], got {step!r}")
    return step


def checkpoint_number(path: str | Path, blob: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    """A finite number stored under ``key`` (``default`` when absent)."""
    v = blob.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise CheckpointError(path, f"{key} must be a finite number, got {v!r}")
    return float(v)


def checkpoint_tensors(
    path: str | Path, blob: Mapping[str, Any], key: str, device: torch.device | str, *, optional: bool = False
) -> dict[str, torch.Tensor] | None:
    """``blob[key]``: a dict of finite floating-point tensors, moved to ``device``."""
    value = blob.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict) or not value:
        raise CheckpointError(path, f"{key} must be a dict of tensors, got {type(value).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, t in value.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise CheckpointError(path, f"{key} holds {name!r}, not a floating-point tensor")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(path, f"{key}[{name!r}] holds NaN or infinite values")
        out[name] = t.to(device)
    return out


def checkpoint_history(path: str | Path, blob: Mapping[str, Any], width: int) -> list[tuple[Any, ...]]:
    """The loss history: a list of ``width``-tuples of numbers."""
    history = blob.get("history", [])
    if not isinstance(history, list | tuple):
        raise CheckpointError(path, f"history must be a list, got {type(history).__name__}")
    out = []
    for h in history:
        if (
            not isinstance(h, list | tuple)
            or len(h) != width
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in h)
        ):
            raise CheckpointError(path, f"history holds {h!r}, not {width} numbers")
        out.append(tuple(h))
    return out


def check_optimizer_state(path: str | Path, state: Any, params: Mapping[str, torch.Tensor]) -> None:
    """An Adam ``state_dict`` for ``params`` (in their order): one group over all of them and, per
    parameter, moments of its shape."""
    if state is None:
        return
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise CheckpointError(path, "optimizer is not an optimiser state")
    groups = state.get("param_groups")
    shapes = [tuple(p.shape) for p in params.values()]
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or not isinstance(groups[0], dict)
        or list(groups[0].get("params", [])) != list(range(len(shapes)))
    ):
        raise CheckpointError(path, "optimizer state does not belong to these parameters")
    for idx, st in state["state"].items():
        if not isinstance(idx, int) or not 0 <= idx < len(shapes) or not isinstance(st, dict):
            raise CheckpointError(path, f"optimizer state holds an entry for parameter {idx!r}")
        for name, t in st.items():
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(path, f"optimizer state {idx}.{name} is not a tensor")
            if name != "step" and tuple(t.shape) != shapes[idx]:
                raise CheckpointError(
                    path, f"optimizer state {idx}.{name} has shape {list(t.shape)}, not {list(shapes[idx])}"
                )
            if not bool(torch.isfinite(t).all()):
                raise CheckpointError(path, f"optimizer state {idx}.{name} holds NaN or infinite values")
