"""The pipeline's work folder: the run config, the stage context, stage records and elapsed time, and
opening (or resuming) a run against ``W/run.json`` (layout described in `trainer.pipeline`).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.errors import PipelineError
from trainer.files import read_json, remove_stale_temp_files, write_json, writing
from trainer.metrics import peak_ram_mb
from trainer.presets import (
    Preset,
    apply_overrides,
    get_preset,
    preset_fingerprint,
    preset_to_dict,
    read_preset,
)
from trainer.progress import STAGES, CancelToken, ProgressLog
from trainer.settings import PresetError, Problem, changed_keys, problems, rule_of, show, stage_of, value_ok

__all__ = [
    "STAGE_FILES",
    "Context",
    "ElapsedClock",
    "PipelineError",
    "RunConfig",
    "add_elapsed",
    "check_poses",
    "finish_stage",
    "open_context",
    "read_json",
    "require",
    "resolve_device",
    "stage_record",
    "write_json",
]

STAGE_FILES: dict[str, tuple[str, ...]] = {
    "teacher": ("teacher.done", "teacher.pt", "teacher.ckpt"),
    "occupancy": ("occupancy.done", "occupancy.npz"),
    "distill": ("distill.done", "distill_errors.json", "distill.ckpt"),
    "finetune": ("finetune.done", "finetune.ckpt"),
}
"""Each stage's files in the work folder, its record first (removed first when a stage is reset)."""
OWN_FILES: tuple[str, ...] = (
    "run.json",
    "elapsed.json",
    *(n for names in STAGE_FILES.values() for n in names),
)
"""Every file the trainer writes atomically in a work folder (their stray temp files are removed)."""
MAX_POSE_TRANSLATION = 1e6
"""Largest camera distance from the origin the trainer accepts, in world units."""


@dataclass
class RunConfig:
    """What to train, where, on what."""

    data: Path | None
    """Dataset folder (Blender, transforms.json or NSVF layout); None: from the work folder's run.json."""
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

            train = load_dataset(
                self.data,
                "train",
                self.preset.downscale,
                limit=self.preset.train_views,
                bbox=self.preset.data.box,
            )
            check_poses(train)
            self._train = train
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
                    self.data,
                    "test",
                    self.preset.downscale,
                    limit=k,
                    every=self.eval_every,
                    bbox=self.preset.data.box,
                )
                check_poses(self._eval)
                self._eval_split = "test"
            except DatasetError:
                self._eval = self.train_set
                self._eval_split = "train"
                self.eval_every = 1
        n = min(len(self._eval.images), max(int(self.preset.eval_views), 1))
        return self._eval, self._eval_split, list(range(n))


def stage_record(ctx: Context, stage: str) -> dict[str, Any] | None:
    """The ``<stage>.done`` record, or None when the stage has not finished."""
    return read_json(ctx.path(f"{stage}.done"))


def add_elapsed(ctx: Context, stage: str, seconds: float) -> float:
    """Add ``seconds`` to ``stage``'s total in ``elapsed.json``; returns the new total."""
    data = read_json(ctx.path("elapsed.json"), "delete it (it holds only stage times)") or {}
    old = data.get(stage, 0.0)
    if isinstance(old, bool) or not isinstance(old, int | float):
        old = 0.0
    data[stage] = float(old) + float(seconds)
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


# ---------------------------------------------------------------------------------------------- inputs


def check_poses(ds: Any) -> None:
    """Refuse a dataset whose camera poses the trainer cannot use: every ``c2w`` finite, its camera within
    `MAX_POSE_TRANSLATION` of the origin, its rotation not degenerate (the loader checks the files; this
    keeps the trainer from crashing or writing NaN whatever it is given)."""
    c2w = np.asarray(ds.c2w, dtype=np.float64)
    where = f"{ds.root} ({ds.split} split)"
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or c2w.shape[0] == 0:
        raise PipelineError(f"{where}: camera poses of shape {list(c2w.shape)}, expected [N, 4, 4]")
    names = list(getattr(ds, "names", []) or [])

    def name(i: int) -> str:
        return names[i] if i < len(names) else f"#{i}"

    for i in range(c2w.shape[0]):
        m = c2w[i]
        if not np.isfinite(m).all():
            raise PipelineError(f"{where}: camera {name(i)} has a pose with NaN or infinite values")
        t = float(np.abs(m[:3, 3]).max())
        if t > MAX_POSE_TRANSLATION:
            raise PipelineError(
                f"{where}: camera {name(i)} is {t:g} units from the origin (at most {MAX_POSE_TRANSLATION:g})"
            )
        if abs(float(np.linalg.det(m[:3, :3]))) < 1e-6:
            raise PipelineError(f"{where}: camera {name(i)} has a degenerate rotation (determinant ~0)")


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (cpu, cuda, cuda:N) if it can train here, else a one-line PipelineError."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise PipelineError(f"--device {name}: not a device (use cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise PipelineError(f"--device {name}: the trainer runs on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(f"--device {name}: no CUDA GPU is available to torch here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PipelineError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs here")
    return dev


def _resolve(path: Path, what: str) -> Path:
    """``path`` made absolute with its symlinks resolved; a loop or unreadable link is a PipelineError."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: Python < 3.13 reports a symlink loop so
        if isinstance(e, RuntimeError) or e.errno == errno.ELOOP:
            raise PipelineError(f"{path}: the {what} path is a symlink loop") from None
        raise PipelineError(f"{path}: the {what} path cannot be resolved ({e.strerror or e})") from None


def _check_writable_out(out: Path, created: Path) -> None:
    """The output's folder must exist and be writable (``created``: a folder this run will create)."""
    if out.is_dir():
        raise PipelineError(f"{out}: output is a folder, expected a .kilo file path")
    parent = out.parent if str(out.parent) else Path(".")
    if parent == created and not parent.exists():
        return
    if not parent.is_dir():
        raise PipelineError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PipelineError(f"{out}: output folder {parent} is not writable")


def _own_outputs(workdir: Path) -> list[Path]:
    """The outputs a work folder may write without ``--out``: ``W/scene.kilo``, and ``OUT`` for ``OUT.work``
    (the default work folder of ``--out OUT``)."""
    out = [workdir / "scene.kilo"]
    if workdir.name.endswith(".work") and len(workdir.name) > len(".work"):
        out.append(workdir.with_name(workdir.name[: -len(".work")]))
    return out


def _record_field(run_path: Path, recorded: dict[str, Any], key: str, kind: type, optional: bool) -> Any:
    value = recorded.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PipelineError(
            f"{run_path}: {key} must be {kind.__name__}, got {show(value)}; "
            "this is not a run record of this trainer (use another --workdir or delete it)"
        )
    return value


def stage_started(workdir: Path, stage: str) -> bool:
    """Whether ``stage`` left anything in the work folder (its record, checkpoint or products)."""
    return any((workdir / n).exists() for n in STAGE_FILES[stage])


def _reset_stages(workdir: Path, stages: list[str]) -> None:
    """Remove the files of ``stages`` (records first, so an interrupted reset still redoes them) and their
    times in ``elapsed.json``."""
    for stage in stages:
        for name in STAGE_FILES[stage]:
            try:
                (workdir / name).unlink(missing_ok=True)
            except OSError as e:
                raise PipelineError(f"{workdir / name}: cannot remove it ({e.strerror or e})") from None
    elapsed_path = workdir / "elapsed.json"
    try:
        elapsed = read_json(elapsed_path, "delete it (it holds only stage times)")
    except PipelineError:
        elapsed = None
    if elapsed and any(s in elapsed for s in stages):
        write_json(elapsed_path, {k: v for k, v in elapsed.items() if k not in stages})


def _resume_settings(
    run_path: Path, workdir: Path, base: Preset, overrides: dict[str, Any]
) -> tuple[Preset, list[str], list[str]]:
    """The settings of a resumed run: the recorded ones with ``overrides`` (``--set``) applied; returns them,
    the dotted keys that changed, and the stages to redo.

    Rules (README, "Train"): a change to a setting of a stage that finished is refused (nothing finished is
    ever lost silently); a change to a stage that started but did not finish restarts that stage and the
    later ones. A recorded setting that is invalid (a record from an older trainer, or edited by hand) must
    be repaired with ``--set``: the stages that depend on it are redone even when they finished, since they
    ran with a value they cannot use; every other finished stage is kept.
    """
    old_problems = problems(base)
    preset = apply_overrides(base, overrides) if overrides else base
    new_problems = problems(preset)
    if new_problems:
        p = new_problems[0]
        old_keys = {q.key for q in old_problems}
        if p.key in old_keys:
            still = [q.key for q in new_problems if q.key in old_keys]
            fix = " ".join(f"--set {k}=VALUE" for k in still)
            raise PipelineError(
                f"{run_path}: the recorded setting {p.message}; repair it with {fix} "
                "(finished stages that do not depend on it are kept)"
            )
        raise PresetError(f"--set: {p.message}")
    repair_stages = {q.stage for q in old_problems}
    changes = changed_keys(base, preset)
    first: int | None = None
    for key in changes:
        stage = stage_of(preset, key)
        if stage is None:
            continue
        i = STAGES.index(stage)
        if stage not in repair_stages:
            done = [s for s in STAGES[i:] if (workdir / f"{s}.done").exists()]
            if done:
                old = base
                for part in key.split("."):
                    old = getattr(old, part)
                files = ", ".join(n for s in STAGES[i:] for n in STAGE_FILES[s] if (workdir / n).exists())
                raise PipelineError(
                    f"--set {key}: the {done[0]} stage already finished with {key} = {show(old)} "
                    f"({workdir / (done[0] + '.done')}); to redo it and the stages after it, delete {files} "
                    "from the work folder first, or use another --workdir"
                )
        first = i if first is None else min(first, i)
    resets = [s for s in STAGES[first:] if stage_started(workdir, s)] if first is not None else []
    return preset, changes, resets


def _problem_free(found: list[Problem]) -> None:
    if found:
        raise PresetError(f"--set: {found[0].message}")


def open_context(cfg: RunConfig) -> Context:
    """Resolve the config against ``W/run.json`` (create it on first use; refuse a mismatched resume).

    Everything is checked before anything is written: paths, device, dataset layout, every setting.
    """
    workdir = cfg.workdir
    run_path = workdir / "run.json"
    work_abs = _resolve(workdir, "work folder")
    if os.path.lexists(workdir) and not workdir.is_dir():
        raise PipelineError(f"{workdir}: work folder path exists and is not a folder")
    recorded = read_json(run_path, "use another --workdir or delete it") if workdir.is_dir() else None
    rec_preset = rec_out = None
    rec_downscale = None
    if recorded is not None:
        _record_field(run_path, recorded, "data", str, False)
        rec_preset = _record_field(run_path, recorded, "preset", str, False)
        rec_downscale = _record_field(run_path, recorded, "downscale", int, False)
        rec_out = _record_field(run_path, recorded, "out", str, True)
        _record_field(run_path, recorded, "preset_config", dict, True)
    if cfg.data is not None:
        data = _resolve(cfg.data, "dataset folder")
    elif recorded is not None:
        data = Path(recorded["data"])
    else:
        raise PipelineError(f"{workdir}: no run.json here; give --data DIR")
    device = resolve_device(cfg.device)
    from trainer.data import detect_layout

    detect_layout(data)  # DatasetError (one line) on a missing folder / unknown layout
    preset_name = cfg.preset or rec_preset or "cpu"
    if cfg.downscale is not None:
        f = {f.name: f for f in dataclasses.fields(Preset)}["downscale"]
        if not value_ok("int", False, rule_of(f), cfg.downscale):
            raise PipelineError(
                f"--downscale must be an integer in [1, {rule_of(f).le:g}], got {cfg.downscale}"
            )
    changes: list[str] = []
    resets: list[str] = []
    if recorded is None:
        overrides = dict(cfg.overrides)
        if cfg.downscale is not None:
            overrides["downscale"] = int(cfg.downscale)
        preset = get_preset(preset_name, overrides)
        _problem_free(problems(preset))
    else:
        mismatch = []
        if Path(recorded["data"]) != data:
            mismatch.append(f"data {recorded['data']!r} != {str(data)!r}")
        if rec_preset != preset_name:
            mismatch.append(f"preset {rec_preset!r} != {preset_name!r}")
        if cfg.downscale is not None and rec_downscale != cfg.downscale:
            mismatch.append(f"downscale {rec_downscale} != {cfg.downscale}")
        if mismatch:
            raise PipelineError(
                f"{run_path}: this work folder belongs to another run ({'; '.join(mismatch)}); "
                "use another --workdir or delete it"
            )
        if isinstance(recorded.get("preset_config"), dict):
            # a resumed run keeps exactly the settings it started with, even if the code's defaults moved
            try:
                base = read_preset(recorded["preset_config"])
            except PresetError as e:
                raise PipelineError(
                    f"{run_path}: preset_config: {e}; use another --workdir or delete it"
                ) from None
            base.name = preset_name
        else:
            base = get_preset(preset_name)
            base.downscale = int(recorded["downscale"])
        preset, changes, resets = _resume_settings(run_path, workdir, base, cfg.overrides)
    if cfg.out is not None:
        out = _resolve(cfg.out, "output")
    elif rec_out is not None:
        out = Path(rec_out)
        if out not in [_resolve(p, "output") for p in _own_outputs(work_abs)]:
            raise PipelineError(
                f"{run_path}: records the output {out}, which is not this work folder's own; "
                f"give --out {out} to write there (or --out another path)"
            )
    else:
        out = work_abs / "scene.kilo"
    _check_writable_out(out, work_abs)
    # ---- every input checked: from here on the run writes
    fp = preset_fingerprint(preset)
    with writing(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(workdir, OWN_FILES)
    remove_stale_temp_files(out.parent, [out.name])
    if resets:
        _reset_stages(workdir, resets)
        print(
            f"note: settings changed ({', '.join(changes)}): redoing the {', '.join(resets)} stage"
            + ("s" if len(resets) > 1 else ""),
            file=sys.stderr,
        )
    if recorded is None or changes:
        record = {
            "data": str(data),
            "preset": preset.name,
            "downscale": preset.downscale,
            "fingerprint": fp,
            "out": str(out) if recorded is None else rec_out or str(out),
            "preset_config": preset_to_dict(preset),
            "created": recorded.get("created", time.time()) if recorded else time.time(),
        }
        if recorded is not None:
            record["changed"] = time.time()
        write_json(run_path, record)
    log = ProgressLog(workdir / "progress.jsonl", bar=cfg.progress_bar)
    return Context(
        data=data, out=out, workdir=workdir, preset=preset, device=device, log=log, cancel=CancelToken()
    )
