"""Training presets: one dataclass tree with defaults, and the named presets as data (overrides).

A `Preset` composes the teacher, occupancy, distillation and fine-tuning configurations with the student's
format choices; every field declares its valid values beside it (`trainer.settings`). The named presets
(`tiny`, `cpu`, `gpu`, `paper`) are nested dicts of overrides applied to the defaults by `get_preset`, so
they never copy code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from renderer.scene_checks import DENSITY_ACTIVATIONS, MAX_FREQS, MAX_HIDDEN
from trainer.distill import DistillConfig
from trainer.finetune import FinetuneConfig
from trainer.occupancy import OccupancyConfig
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


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _tiny(),
    "cpu": {
        "downscale": 4,
        # measured on lego 200x200 (2-core CPU, PSNR on 10 test views). Teacher: 3500 steps 33.0 dB,
        # 4000 steps with the box fitted at 35% 33.4 dB, 4500 steps 33.54 dB; colour MLP width 128
        # (the default) 33.85 dB at 4500 steps, 34.15 dB at 5500. Distillation at lr 1e-3 / 3e-3 /
        # 1e-2 (1500 steps x 128 points per network): 28.5 / 30.3 / 31.4 dB, 4000 x 128 points 32.17
        # dB, 6500 x 64 points (same time) 32.2-32.4 dB from either teacher. Fine-tuning (4096
        # training rays per step) gains most per second with 2048 teacher-labelled novel rays per
        # step (32.85 against 32.65 dB without, from the width-64 teacher; the students overfit the
        # 200x200 training views). From the 34.15 dB teacher's distilled student, 1150 steps: lr
        # 1e-3 with the distillation term (weight 1) 33.09 dB in 339 s, lr 2e-3 33.15 dB, lr 2e-3
        # and distill_weight 0.3 33.23 dB, lr 2e-3 without the term 33.27 dB in 377 s (adopted; with
        # teacher_ray_weight 2 33.30 dB, lr_final_factor 0.03 33.29 dB), lr 3e-3 without it and 1400
        # steps 33.20 dB; 4096 teacher rays + 2048 training rays 33.10 dB in 803 s. Not adopted for
        # the teacher: a total-variation term on its lattices (tv_density_weight 1e-5,
        # tv_feature_weight 1e-4: +0.03 dB in 2.2x the time; 10x those: -0.44 dB), rays through
        # random points of their pixels (-1.6 dB). Stage times on a 2-core machine: 748 / 18 / 498 /
        # 377 s (27 min 22 s). Also within noise of 33.27 dB, from the same distilled student: jitter
        # of the sample lattice (finetune.jitter) 33.27 dB, a parameter average (ema_decay 0.995)
        # 33.30 dB (200 views 32.84 against 32.82), both 33.30 dB, the average with the renderer's
        # ERT threshold as the early stop (0.01) 33.28 dB; 2150 steps with the average 33.37 dB in 1.9x
        # the fine-tuning time. The teacher rendered on the student's lattice with ESS gives 34.02 dB.
        # Distillation with directions uniform on the sphere (distill.camera_directions False, now
        # the default) instead of from the training cameras: distilled 32.37 dB either way, fine-tuned
        # 33.30 dB (200 views 32.90 against 32.82); with the parameter average (adopted), in one
        # uninterrupted run on 2026-12-04: 34.15 / 32.37 / 33.33 dB, 200 views 32.93 dB. Not adopted:
        # 4500 distillation + 1600 fine-tuning steps (about the same time) 32.14 / 33.25 dB; a fixed
        # pool of 524288 teacher-labelled rays reused over 1650 steps (labelling once, so about the
        # same time as 1150 steps with fresh rays) 33.21 dB: the teacher rays need to be fresh; a
        # longer average (0.998) 33.31 dB, with lr 3e-3 33.25 dB; 2x teacher-ray weight 33.35 dB
        # (200 views 32.95 dB, within noise). From the same teacher and occupancy (2026-12-04, machine at
        # 100-160 GFLOP/s): distillation with the colour error weighted by the teacher's alpha
        # (rgb_by_alpha) and occupied voxels picked by the teacher's training-ray weight (visibility_floor
        # 0.05): 32.49 / 33.35 dB (200 views 32.95); with that and only the first 6 of the 10 position
        # octaves trained (trained_pos_freqs 6, adopted: octaves 6-9 have periods under a marching step
        # in a cell's local coordinates, and the student fitted them to the training views): 32.51 /
        # 33.43 dB, 200 views 33.02 dB; 4 octaves 32.44 / 33.31 dB; 6 position octaves and 2 of the 4
        # direction octaves (trained_dir_freqs 2): distillation loss 11% above the 6-octave run at step
        # 4000 (stopped there). Fine-tuning the adopted distilled student with lr 3e-3: 33.37 dB; with
        # 2300 steps x 2048 rays + 1024 teacher rays (the same rays in all, twice the updates): 33.35 dB.
        # The other way (2026-12-04, 167 GFLOP/s, from the same distilled student, whose uninterrupted
        # rerun reproduced 32.51 / 33.43 dB to the last digit): 575 steps x 8192 rays + 4096 teacher rays,
        # average 0.99 (the same rays, half the updates, the same averaging window in rays) 33.45 dB in
        # 335 s against 402 s (adopted: a step's fixed costs are shared by twice the rays); with lr 3e-3
        # 33.43 dB; 288 steps x 16384 + 8192 rays, average 0.98: 33.45 dB in 334 s (no further gain).
        # Not adopted: a teacher of 2750 steps x 8192 rays (507 s to 46% of its steps against 404 s;
        # stopped), bfloat16 autocast of the teacher's colour MLP for labelling (no faster), 5000
        # distillation steps (32.36 / 33.36 dB). Interleaved short runs: 57 against 66 us per fine-tuning
        # ray with the adopted batches (-13%; full runs vary by ~10% on this machine).
        # 2026-12-05 (160 GFLOP/s), the same settings after three exact speedups (fused Adam in
        # distillation and fine-tuning, the teacher's lattice corners, fine-tuning's rays marched only
        # to their early stop): 735 / 17 / 565 / 209 s (25 min 30 s, was 830 / 26 / 575 / 287 s with fused
        # Adam alone and 856 / 27 / 729 / 335 s before), the same PSNRs to the last digit. Not adopted:
        # 1150 fine-tuning steps from that distilled student, 33.53 dB (200 views 33.11 against 33.06) in
        # 421 s: 29 min in all, too close to 30 on this machine for +0.05 dB.
        # 2026-12-05, the fine-tuning regulariser as the paper's code computes it (one L2 norm per l3/l4
        # tensor over all networks; it was a sum of per-network norms, ~26x the gradient): from the same
        # distilled student 33.74 dB (200 views 33.35, teacher 33.68), without any regulariser 33.74 dB;
        # a per-sample colour term (the teacher's colour at the student's samples, weighted by T*alpha)
        # with the old regulariser 33.48 against 33.46 dB, not adopted. One run: 821 / 21 / 598 / 213 s.
        # With the paper's regulariser, from the same distilled student: lr 2e-3 / 3e-3 / 5e-3 / 8e-3
        # 33.74 / 33.82 / 33.87 / 33.79 dB (200 views: 33.35 / - / 33.47 / 33.39 dB), lr 5e-3 adopted;
        # not adopted: ema_decay 0.995 33.68 dB, teacher_ray_weight 2 33.61 dB, the per-sample colour
        # term with lr 3e-3 33.71 dB (against 33.82 without).
        "teacher": {"steps": 5500},
        "distill": {
            "steps": 6500,
            "points_per_network": 64,
            "lr": 1e-2,
            "rgb_by_alpha": True,
            "visibility_floor": 0.05,
        },
        "finetune": {
            "steps": 575,
            "rays_per_batch": 8192,
            "lr": 5e-3,
            "teacher_rays": 4096,
            "ema_decay": 0.99,
        },
        "trained_pos_freqs": 6,
        "eval_views": 10,
    },
    "gpu": {
        "downscale": 1,
        "teacher": {},
        "distill": {"steps": 4000, "points_per_network": 512},
        "finetune": {"steps": 6000, "rays_per_batch": 8192},
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
    """The preset ``name`` (tiny | cpu | gpu | paper) with optional nested ``overrides``, validated."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
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
