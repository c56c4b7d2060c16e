"""Training presets: one dataclass tree with defaults, and the named presets as data (overrides).

A `Preset` composes the teacher, occupancy, distillation and fine-tuning configurations with the student's
format choices; every field declares its valid values beside it (`trainer.settings`). The named presets
(`tiny`, `cpu`, `cpu-hd`, `gpu`, `paper`) are nested dicts of overrides applied to the defaults by
`get_preset`, so they never copy code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from renderer.scene_checks import DENSITY_ACTIVATIONS, MAX_FREQS, MAX_HIDDEN
from trainer.data.config import DataConfig
from trainer.distill import DistillConfig
from trainer.finetune import FinetuneConfig
from trainer.occupancy import OccupancyConfig
from trainer.preset_names import PRESET_NAMES
from trainer.settings import PresetError, group, is_group, kind_of, rule_of, setting, validate
from trainer.teachers.config import TeacherConfig

__all__ = [
    "PRESETS",
    "Preset",
    "PresetError",
    "apply_overrides",
    "get_preset",
    "preset_fingerprint",
    "preset_from_dict",
    "preset_to_dict",
    "read_preset",
]


@dataclass
class Preset:
    """A full training recipe: data resolution, the four stages, and the student's format.

    Each field's valid values sit beside it (`trainer.settings.setting`); `trainer.settings.validate`
    checks them all, and the relations of `relations`.
    """

    name: str = setting("cpu", settable=False, anytime=True)
    """Preset name (recorded in the provenance); chosen with ``--preset``, not ``--set``."""
    downscale: int = setting(4, ge=1, le=64, stage="teacher")
    """Image downscale factor (area average); 4 turns 800x800 lego into 200x200."""
    train_views: int | None = setting(None, ge=1, le=100_000, stage="teacher")
    """Use only the first N training views (None: all)."""
    data: DataConfig = group(DataConfig, stage="teacher")
    """What is taken from the dataset: the scene box (``data.bbox_min`` / ``data.bbox_max``)."""
    teacher: TeacherConfig = group(TeacherConfig, stage="teacher")
    """Stage 1: the teacher."""
    occupancy: OccupancyConfig = group(OccupancyConfig, stage="occupancy")
    """Occupancy extraction and the network grid."""
    distill: DistillConfig = group(DistillConfig, stage="distill")
    """Stage 2: distillation."""
    finetune: FinetuneConfig = group(FinetuneConfig, stage="finetune")
    """Stage 3: fine-tuning."""
    step_voxels: float = setting(1.0, ge=0.05, le=100, stage="occupancy")
    """Scene marching step as a multiple of the smallest occupancy-voxel edge (1: lego 0.0094)."""
    step_size: float | None = setting(None, gt=0, le=1e6, stage="occupancy")
    """Explicit marching step in world units (overrides step_voxels; the occupancy stage refuses one under
    0.05 voxel)."""
    density_activation: str = setting("softplus", choices=DENSITY_ACTIVATIONS, stage="distill")
    """Student density activation: softplus distils 2.6x better than the paper's relu."""
    density_shift: float = setting(-1.0, ge=-100, le=100, stage="distill")
    """Initial bias of the density output: per-step optical depth starts at softplus(-1) = 0.31."""
    hidden: int = setting(32, ge=1, le=MAX_HIDDEN, stage="distill")
    """Student hidden width H (any width the scene format accepts; widths without native kernels render
    with torch)."""
    pos_freqs: int = setting(10, ge=0, le=MAX_FREQS, stage="distill")
    """Student positional-encoding frequencies."""
    trained_pos_freqs: int | None = setting(None, ge=0, le=MAX_FREQS, stage="distill")
    """Train only the first K position octaves: the first layer's weights for the higher ones are held at
    zero (the format keeps its width). None: all (the paper)."""
    dir_freqs: int = setting(4, ge=0, le=MAX_FREQS, stage="distill")
    """Student direction-encoding frequencies."""
    trained_dir_freqs: int | None = setting(None, ge=0, le=MAX_FREQS, stage="distill")
    """Train only the first K direction octaves (the colour layer's rows for the higher ones held at zero).
    None: all (the paper)."""
    ert_threshold: float = setting(0.01, ge=0, le=1, stage="distill")
    """Early-ray-termination threshold stored in the scene."""
    weights_dtype: str = setting("float16", choices=("float16", "float32"), anytime=True)
    """dtype of the weights in the output .kilo (used only when it is written)."""
    eval_views: int = setting(4, ge=1, le=10_000, anytime=True)
    """Test views (the first ones) on which teacher and student PSNR are measured for the provenance."""

    def relations(self) -> list[tuple[str, str]]:
        """Trained octaves are among the octaves."""
        out = []
        if self.trained_pos_freqs is not None and self.trained_pos_freqs > self.pos_freqs:
            out.append(
                (
                    "trained_pos_freqs",
                    f"must be <= pos_freqs ({self.pos_freqs}) or null, got {self.trained_pos_freqs}",
                )
            )
        if self.trained_dir_freqs is not None and self.trained_dir_freqs > self.dir_freqs:
            out.append(
                (
                    "trained_dir_freqs",
                    f"must be <= dir_freqs ({self.dir_freqs}) or null, got {self.trained_dir_freqs}",
                )
            )
        return out


def _tiny() -> dict[str, Any]:
    return {
        "downscale": 16,
        "train_views": 40,
        "teacher": {
            "steps": 150,
            "batch_rays": 512,
            "alpha_init": 1e-2,
            "grid_res": (32, 48),
            "mlp_width": 64,
            "upsample_at": (0.4,),
            "hull_res": 48,
            "prune_at": (0.6,),
            "fit_box_at": 0.6,
            "log_every": 10,
            "checkpoint_every_s": 5.0,
        },
        "occupancy": {"threshold": 2.0, "longest_axis_cells": 8, "occupancy_factor": 8, "subsamples": 2},
        "distill": {
            "steps": 100,
            "points_per_network": 128,
            "rgb_by_alpha": True,
            "visibility_floor": 0.05,
            "checkpoint_every": 20,
            "checkpoint_seconds": 5.0,
        },
        "finetune": {
            "steps": 60,
            "rays_per_batch": 512,
            "distill_weight": 1.0,
            "distill_points": 8,
            "ema_decay": 0.9,
            "checkpoint_every": 5,
            "checkpoint_seconds": 5.0,
            "scene_seconds": 0.3,
        },
        "trained_pos_freqs": 6,
        "eval_views": 1,
    }


_CPU_DISTILL: dict[str, Any] = {
    "steps": 6500,
    "points_per_network": 64,
    "lr": 1e-2,
    "rgb_by_alpha": True,
    "visibility_floor": 0.05,
}
"""Distillation of both CPU presets (`cpu` at 200x200, `cpu-hd` at 800x800)."""
_CPU_FINETUNE: dict[str, Any] = {"rays_per_batch": 8192, "lr": 5e-3, "teacher_rays": 4096, "ema_decay": 0.99}
"""Fine-tuning batches, learning rate and parameter average of both CPU presets (their steps differ)."""


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _tiny(),
    "cpu": {
        "downscale": 4,
        # how these values were chosen: docs/presets.md
        "teacher": {"steps": 5500},
        "distill": dict(_CPU_DISTILL),
        "finetune": {"steps": 575, **_CPU_FINETUNE},
        "trained_pos_freqs": 6,
        "eval_views": 10,
    },
    "cpu-hd": {  # lego at 800x800 on a 2-core CPU; how the values were chosen: docs/presets.md
        "downscale": 1,
        "teacher": {"steps": 20000, "grid_res": (96, 128, 160), "hull_res": 128},
        "distill": {**_CPU_DISTILL, "steps": 5000},
        "finetune": {"steps": 6000, **_CPU_FINETUNE},
        "trained_pos_freqs": 8,
        "eval_views": 4,
    },
    "gpu": {  # full resolution on one GPU; not yet run on one (README), choices in docs/presets.md
        "downscale": 1,
        "teacher": {
            "steps": 10000,
            "batch_rays": 16384,
            "grid_res": (80, 128, 160),
            "hull_res": 160,
            "mixed_precision": True,
            "render_chunk": 65536,
        },
        "distill": {"steps": 4000, "points_per_network": 512},
        "finetune": {"steps": 6000, "rays_per_batch": 16384, "teacher_rays": 8192},
        "eval_views": 8,
    },
    "paper": {
        "downscale": 1,
        "teacher": {"kind": "nerf"},
        "density_activation": "relu",
        "density_shift": 0.0,
        "distill": {"steps": 150000, "points_per_network": 1024},
        "finetune": {"steps": 1000000, "rays_per_batch": 8192},
        "eval_views": 8,
    },
}
"""The named presets, as overrides of the `Preset` defaults."""


def _apply(obj: Any, data: dict[str, Any], where: str, *, strict: bool = True) -> Any:
    """A copy of dataclass ``obj`` with the values of ``data`` put in place (nested dicts recurse, lists
    become tuples where the field holds a tuple, integers become floats where it holds a float); nothing is
    checked here but the keys (`trainer.settings.validate` checks the values). An unknown key is an error
    when ``strict`` (preset data, ``--set``) and is ignored otherwise, so older ``run.json`` records load."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    out = copy.copy(obj)
    for key, value in data.items():
        f = fields.get(key)
        if f is None or (strict and not rule_of(f).settable):
            if not strict:
                continue
            if f is not None:
                raise PresetError(f"{where}: {key} is not a setting (choose the preset with --preset)")
            names = ", ".join(fields)
            raise PresetError(f"{where}: unknown setting {key!r} (known: {names})")
        current = getattr(obj, key)
        if is_group(f):
            if not isinstance(value, dict):
                raise PresetError(
                    f"{where}: {key} is a group of settings, set its fields ({key}.FIELD=VALUE)"
                )
            setattr(out, key, _apply(current, value, f"{where}", strict=strict))
            continue
        kind, _ = kind_of(f)
        if kind.startswith("tuple[") and isinstance(value, list):
            value = tuple(value)
        elif kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(out, key, copy.deepcopy(value))
    return out


def get_preset(name: str, overrides: dict[str, Any] | None = None, *, where: str = "--set") -> Preset:
    """The preset ``name`` (one of `PRESET_NAMES`) with optional nested ``overrides``, validated."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r} (choose from {', '.join(PRESET_NAMES)})")
    preset = _apply(Preset(name=name), copy.deepcopy(PRESETS[name]), f"preset {name}")
    validate(preset, f"preset {name}")
    if overrides:
        preset = apply_overrides(preset, overrides, where=where)
    return preset


def apply_overrides(preset: Preset, overrides: dict[str, Any], *, where: str = "--set") -> Preset:
    """``preset`` with nested ``overrides`` applied (unknown keys refused), not validated."""
    return _apply(preset, overrides, where)  # type: ignore[no-any-return]


def read_preset(data: dict[str, Any]) -> Preset:
    """The preset recorded by `preset_to_dict`, unchecked (unknown keys ignored): `validate` or
    `trainer.settings.problems` tells what in it is invalid."""
    return _apply(Preset(), data, "preset", strict=False)  # type: ignore[no-any-return]


def preset_to_dict(preset: Preset) -> dict[str, Any]:
    """Plain JSON-able dict of every field."""
    return dataclasses.asdict(preset)


def preset_from_dict(data: dict[str, Any]) -> Preset:
    """The preset recorded by `preset_to_dict`, validated (a resumed run keeps the settings it started
    with)."""
    preset = read_preset(data)
    validate(preset, "preset")
    return preset


def preset_fingerprint(preset: Preset) -> str:
    """Short hash of the preset's contents, recorded in the workdir to detect a mismatched resume."""
    text = json.dumps(preset_to_dict(preset), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
