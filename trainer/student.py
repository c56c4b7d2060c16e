"""The student scene: its layout from the occupancy stage, its network spec, building the scene from
parameters, its provenance, and writing the output ``.kilo``.
"""

from __future__ import annotations

import math
import os
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from renderer.atomic import new_file_mode
from renderer.bit_grid import BitGrid
from trainer.checkpoint import CheckpointError
from trainer.files import writing
from trainer.progress import STAGES
from trainer.workdir import Context, PipelineError, read_json, stage_record


@dataclass
class Layout:
    """The student's geometry from ``occupancy.npz``."""

    bbox_min: np.ndarray
    bbox_max: np.ndarray
    grid_res: tuple[int, int, int]
    occupancy_res: tuple[int, int, int]
    occupancy: np.ndarray
    network_index: np.ndarray
    step_size: float

    @property
    def num_networks(self) -> int:
        """M."""
        return int((self.network_index >= 0).sum())


def load_layout(ctx: Context) -> Layout:
    """Read ``W/occupancy.npz`` (no pickles), held to the scene format's rules; a malformed file is a
    one-line `PipelineError`."""
    from renderer.scene import SceneFormatError
    from renderer.scene_checks import _check_box, _check_grids, _check_network_index

    path = ctx.path("occupancy.npz")
    hint = "delete it and occupancy.done to redo the occupancy stage"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in LAYOUT_KEYS}
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; {hint}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        reason = (str(e).splitlines() or [""])[0][:80]
        raise PipelineError(f"{path}: not an occupancy file ({type(e).__name__}: {reason}); {hint}") from None
    try:
        lo, hi = _check_box(str(path), arrays["bbox_min"].tolist(), arrays["bbox_max"].tolist())
        grid, occ_res = _check_grids(str(path), arrays["grid_res"].tolist(), arrays["occupancy_res"].tolist())
        occ, index = arrays["occupancy"], arrays["network_index"]
        if occ.dtype != np.bool_ or occ.shape != occ_res:
            raise SceneFormatError(f"{path}: occupancy is not a bool grid of shape {list(occ_res)}")
        if not np.issubdtype(index.dtype, np.integer) or index.shape != grid:
            raise SceneFormatError(f"{path}: network_index is not an integer grid of shape {list(grid)}")
        m = int((index >= 0).sum())
        _check_network_index(str(path), index.astype(np.int64), m)
        step = float(arrays["step_size"])
        if not (math.isfinite(step) and step > 0):
            raise SceneFormatError(f"{path}: step_size must be a finite number > 0, got {step}")
    except (SceneFormatError, TypeError, ValueError) as e:
        raise PipelineError(f"{' '.join(str(e).split())}; {hint}") from None
    return Layout(
        bbox_min=np.asarray(lo, np.float64),
        bbox_max=np.asarray(hi, np.float64),
        grid_res=grid,  # type: ignore[arg-type]
        occupancy_res=occ_res,  # type: ignore[arg-type]
        occupancy=occ.astype(bool),
        network_index=index.astype(np.int32),
        step_size=step,
    )


LAYOUT_KEYS = ("bbox_min", "bbox_max", "grid_res", "occupancy_res", "occupancy", "network_index", "step_size")
"""The arrays of ``occupancy.npz``."""


def check_student_params(path: Any, params: dict[str, torch.Tensor], layout: Layout, spec: Any) -> None:
    """The student weights a checkpoint holds must have this run's shapes (its networks, octaves, width)."""
    from renderer.scene_checks import weight_shapes

    want = weight_shapes(layout.num_networks, spec.pos_freqs, spec.dir_freqs, spec.hidden)
    got = {k: tuple(v.shape) for k, v in params.items()}
    if got != want:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[0]
        raise CheckpointError(
            path,
            f"student weights {bad} of shape {list(got.get(bad, ()))}, but this run needs "
            f"{list(want.get(bad, ()))}",
        )


def make_scene(
    ctx: Context, layout: Layout, weights: dict[str, torch.Tensor], provenance: dict[str, Any]
) -> Any:
    """A `renderer.scene.Scene` of the student with the training cameras and ``provenance``."""
    from renderer.scene import Scene, SceneCameras

    p = ctx.preset
    ds = ctx.train_set
    return Scene(
        bbox_min=tuple(float(v) for v in layout.bbox_min),  # type: ignore[arg-type]
        bbox_max=tuple(float(v) for v in layout.bbox_max),  # type: ignore[arg-type]
        grid_res=layout.grid_res,
        occupancy_res=layout.occupancy_res,
        network_index=layout.network_index,
        occupancy=BitGrid.from_bool(layout.occupancy),
        weights={k: v.detach().float().cpu() for k, v in weights.items()},
        pos_freqs=p.pos_freqs,
        dir_freqs=p.dir_freqs,
        hidden=p.hidden,
        step_size=layout.step_size,
        background=tuple(float(v) for v in ds.background),  # type: ignore[arg-type]
        density_activation=p.density_activation,
        density_scale=1.0 / layout.step_size,
        ert_threshold=p.ert_threshold,
        cameras=SceneCameras(
            width=int(ds.width),
            height=int(ds.height),
            focal=float(ds.focal),
            c2w=np.asarray(ds.c2w, np.float32),
        ),
        provenance=provenance,
    )


def student_spec(ctx: Context, layout: Layout) -> Any:
    """The `NetworkSpec` of the student (softplus density in optical depth per step: scale 1/step)."""
    from renderer.networks import NetworkSpec

    p = ctx.preset
    return NetworkSpec(
        bbox_min=tuple(float(v) for v in layout.bbox_min),  # type: ignore[arg-type]
        bbox_max=tuple(float(v) for v in layout.bbox_max),  # type: ignore[arg-type]
        grid_res=layout.grid_res,
        pos_freqs=p.pos_freqs,
        dir_freqs=p.dir_freqs,
        hidden=p.hidden,
        density_activation=p.density_activation,
        density_scale=1.0 / layout.step_size,
    )


def provenance(ctx: Context, stage: str) -> dict[str, Any]:
    """Provenance of the scene written at ``stage``: dataset, preset, steps, times, PSNRs, peak RAM."""
    recs = {s: stage_record(ctx, s) for s in STAGES}
    elapsed = read_json(ctx.path("elapsed.json")) or {}
    ds = ctx.train_set
    out: dict[str, Any] = {
        "dataset": str(ctx.data),
        "dataset_name": ctx.data.name,
        "train_views": int(len(ds.images)),
        "image_size": [int(ds.width), int(ds.height)],
        "downscale": ctx.preset.downscale,
        "preset": ctx.preset.name,
        "written_after": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": {
            "teacher": int(ctx.preset.teacher.total_steps),
            "distill": int(ctx.preset.distill.steps),
            "finetune": int(ctx.preset.finetune.steps),
        },
        "stage_seconds": {s: round(float(elapsed.get(s, 0.0)), 1) for s in STAGES},
        "peak_ram_mb": {s: round(float(r["peak_ram_mb"]), 1) for s, r in recs.items() if r},
        "teacher_kind": ctx.preset.teacher.kind,
    }
    if recs["teacher"]:
        out["teacher_psnr"] = recs["teacher"].get("metrics", {}).get("psnr")
        out["teacher_ssim"] = recs["teacher"].get("metrics", {}).get("ssim")
        out["eval_split"] = recs["teacher"].get("metrics", {}).get("split")
    if recs["distill"]:
        out["distilled_student_psnr"] = recs["distill"].get("metrics", {}).get("psnr")
        out["distill_error_mean"] = recs["distill"].get("error_mean")
    if recs["finetune"]:
        out["student_psnr"] = recs["finetune"].get("metrics", {}).get("psnr")
        out["student_ssim"] = recs["finetune"].get("metrics", {}).get("ssim")
    out.update(ctx.extra)
    return out


def write_output(ctx: Context, stage: str, scene: Any) -> None:
    """Write the output .kilo atomically (weights in the preset's dtype) and announce it."""
    from renderer.scene import save_scene

    with writing(ctx.out):
        save_scene(scene, ctx.out, dtype=ctx.preset.weights_dtype)
        os.chmod(ctx.out, new_file_mode())  # the atomic temp file is created 0600
    ctx.log.scene(stage, ctx.out)
