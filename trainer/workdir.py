"""The pipeline's work folder: the run config, the stage context, stage records and elapsed time, and
opening (or resuming) a run against ``W/run.json`` (layout described in `trainer.pipeline`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_text
from trainer.metrics import peak_ram_mb
from trainer.presets import Preset, get_preset, preset_fingerprint, preset_from_dict, preset_to_dict
from trainer.progress import CancelToken, ProgressLog


class PipelineError(ValueError):
    """A user error in the pipeline's inputs (one line naming the file and the problem)."""


@dataclass
class RunConfig:
    """What to train, where, on what."""

    data: Path | None
    """Dataset folder (Blender or NSVF layout); None: read from the work folder's run.json."""
    out: Path | None
    """Output .kilo; None: from run.json (or ``W/scene.kilo``)."""
    workdir: Path
    """Work folder with checkpoints and progress.jsonl."""
    preset: str | None = None
    """Preset name; None: from run.json (or ``cpu``)."""
    downscale: int | None = None
    """Image downscale override; None: the preset's."""
    device: str = "cpu"
    """Torch device: cpu or cuda."""
    progress_bar: bool = True
    """Show tqdm bars on stderr."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Nested preset overrides (``--set distill.steps=3000``); only when a run starts."""


@dataclass
class Context:
    """Everything a stage needs: resolved paths, preset, device, log, cancellation, lazily loaded data."""

    data: Path
    out: Path
    workdir: Path
    preset: Preset
    device: torch.device
    log: ProgressLog
    cancel: CancelToken
    _train: Any = None
    _eval: Any = None
    _eval_split: str = "test"
    eval_every: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """``W/name``."""
        return self.workdir / name

    @property
    def train_set(self) -> Any:
        """The training split at the preset's resolution (loaded once)."""
        if self._train is None:
            from trainer.data import load_dataset

            self._train = load_dataset(
                self.data, "train", self.preset.downscale, limit=self.preset.train_views
            )
        return self._train

    def eval_set(self) -> tuple[Any, str, list[int]]:
        """Views for the provenance metrics: ``eval_views`` test views spread evenly over the split (else the
        first training views); returns the dataset, the split and the views' indices in the split.

        Only those views are decoded (a full-resolution test split would not fit a small machine's memory);
        `python -m trainer eval` measures every test view.
        """
        if self._eval is None:
            from trainer.data import DatasetError, load_dataset

            k = max(int(self.preset.eval_views), 1)
            try:
                from trainer.data import count_frames

                total = count_frames(self.data, "test")
                self.eval_every = max(1, total // k)
                self._eval = load_dataset(
                    self.data, "test", self.preset.downscale, limit=k, every=self.eval_every
                )
                self._eval_split = "test"
            except DatasetError:
                self._eval = self.train_set
                self._eval_split = "train"
                self.eval_every = 1
        n = min(len(self._eval.images), max(int(self.preset.eval_views), 1))
        return self._eval, self._eval_split, list(range(n))


# ---------------------------------------------------------------------------------------------- records


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` or None when missing."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable ({e}); delete it to redo that stage") from e
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: not a JSON object; delete it to redo that stage")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON write."""
    atomic_write_text(path, json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stage_record(ctx: Context, stage: str) -> dict[str, Any] | None:
    """The ``<stage>.done`` record, or None when the stage has not finished."""
    return read_json(ctx.path(f"{stage}.done"))


def add_elapsed(ctx: Context, stage: str, seconds: float) -> float:
    """Add ``seconds`` to ``stage``'s total in ``elapsed.json``; returns the new total."""
    data = read_json(ctx.path("elapsed.json")) or {}
    data[stage] = float(data.get(stage, 0.0)) + float(seconds)
    write_json(ctx.path("elapsed.json"), data)
    return float(data[stage])


class ElapsedClock:
    """Accumulates a stage's wall time into ``elapsed.json`` (flushed every few seconds and at the end)."""

    def __init__(self, ctx: Context, stage: str, flush_s: float = 10.0) -> None:
        self.ctx, self.stage, self.flush_s = ctx, stage, flush_s
        self.t = time.monotonic()

    def tick(self) -> None:
        """Flush the time since the last flush when ``flush_s`` has passed."""
        if time.monotonic() - self.t >= self.flush_s:
            self.flush()

    def flush(self) -> float:
        """Add the unflushed time to ``elapsed.json``; returns the stage's total seconds."""
        now = time.monotonic()
        total = add_elapsed(self.ctx, self.stage, now - self.t)
        self.t = now
        return total


def finish_stage(ctx: Context, stage: str, clock: ElapsedClock, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``<stage>.done`` with seconds and peak RAM added; log ``stage_done``."""
    record = {
        **record,
        "seconds": clock.flush(),
        "peak_ram_mb": peak_ram_mb(),
        "finished": time.time(),
    }
    write_json(ctx.path(f"{stage}.done"), record)
    ctx.log.stage_done(stage)
    return record


def require(ctx: Context, stage: str, needed: str) -> dict[str, Any]:
    """The record of ``needed``, or a PipelineError telling to run it first."""
    rec = stage_record(ctx, needed)
    if rec is None:
        raise PipelineError(f"{ctx.workdir}: stage '{needed}' has not finished; run it before '{stage}'")
    return rec


# ---------------------------------------------------------------------------------------------- setup


def _check_writable_out(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise PipelineError(f"{out}: output is a folder, expected a .kilo file path")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise PipelineError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PipelineError(f"{out}: output folder {parent} is not writable")


def open_context(cfg: RunConfig) -> Context:
    """Resolve the config against ``W/run.json`` (create it on first use; refuse a mismatched resume)."""
    workdir = cfg.workdir
    run_path = workdir / "run.json"
    if workdir.exists() and not workdir.is_dir():
        raise PipelineError(f"{workdir}: work folder path exists and is not a folder")
    recorded = read_json(run_path) if workdir.is_dir() else None
    if cfg.data is not None:
        data = cfg.data.resolve()
    elif recorded is not None:
        data = Path(recorded["data"])
    else:
        raise PipelineError(f"{workdir}: no run.json here; give --data DIR")
    from trainer.data import detect_layout

    detect_layout(data)  # DatasetError (one line) on a missing folder / unknown layout
    preset_name = cfg.preset or (recorded or {}).get("preset") or "cpu"
    downscale = cfg.downscale if cfg.downscale is not None else (recorded or {}).get("downscale")
    preset = get_preset(preset_name, cfg.overrides)
    if downscale is not None:
        if int(downscale) < 1:
            raise PipelineError(f"--downscale must be >= 1, got {downscale}")
        preset.downscale = int(downscale)
    if cfg.out is not None:
        out = cfg.out.resolve()
    elif recorded is not None and recorded.get("out"):
        out = Path(recorded["out"])
    else:
        out = (workdir / "scene.kilo").resolve()
    if out.parent == workdir.resolve():
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PipelineError(f"{workdir}: cannot create the work folder ({e.strerror or e})") from e
    _check_writable_out(out)
    if recorded is not None:
        mismatch = []
        if Path(recorded.get("data", "")) != data:
            mismatch.append(f"data {recorded.get('data')!r} != {str(data)!r}")
        if recorded.get("preset") != preset.name:
            mismatch.append(f"preset {recorded.get('preset')!r} != {preset.name!r}")
        if recorded.get("downscale") != preset.downscale:
            mismatch.append(f"downscale {recorded.get('downscale')} != {preset.downscale}")
        if cfg.overrides and recorded.get("fingerprint") != preset_fingerprint(preset):
            mismatch.append("--set changes settings of a run already started")
        if mismatch:
            raise PipelineError(
                f"{run_path}: this work folder belongs to another run ({'; '.join(mismatch)}); "
                "use another --workdir or delete it"
            )
        if isinstance(recorded.get("preset_config"), dict):
            # a resumed run keeps exactly the settings it started with, even if the code's defaults moved
            try:
                preset = preset_from_dict(recorded["preset_config"])
            except ValueError as e:  # a field's own check (__post_init__) on a hand-edited record
                raise PipelineError(f"{run_path}: preset_config: {e}") from e
    fp = preset_fingerprint(preset)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if recorded is None:
            write_json(
                run_path,
                {
                    "data": str(data),
                    "preset": preset.name,
                    "downscale": preset.downscale,
                    "fingerprint": fp,
                    "out": str(out),
                    "preset_config": preset_to_dict(preset),
                    "created": time.time(),
                },
            )
    except OSError as e:
        raise PipelineError(f"{workdir}: cannot write the work folder ({e.strerror or e})") from e
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda: no CUDA GPU is available to torch here")
    log = ProgressLog(workdir / "progress.jsonl", bar=cfg.progress_bar)
    return Context(
        data=data, out=out, workdir=workdir, preset=preset, device=device, log=log, cancel=CancelToken()
    )
