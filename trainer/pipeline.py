"""The resumable training pipeline: teacher -> occupancy -> distill -> finetune, in a work folder.

Work folder layout (``W``, default ``<out>.work/``):

- ``run.json``: data folder, preset name and fingerprint, downscale, output path. A rerun with other
  data or another preset is refused with a clear error.
- ``progress.jsonl``: the event log (see `trainer.progress`).
- ``<stage>.done``: JSON record of a finished stage (steps, seconds, peak RAM, metrics); a finished stage is
  never redone.
- ``teacher.ckpt`` (training checkpoint, the teacher's own), ``teacher.pt`` (the trained teacher),
  ``occupancy.npz``, ``distill.ckpt``, ``distill_errors.json``, ``finetune.ckpt``: all written atomically.
- ``elapsed.json``: seconds spent per stage over all (possibly interrupted) runs.

The output ``.kilo`` is written atomically after distillation, periodically during fine-tuning and at the
end, each time announced with a ``scene`` event.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write, atomic_write_text
from trainer.metrics import peak_ram_mb, psnr, ssim
from trainer.presets import Preset, get_preset, preset_fingerprint, preset_from_dict, preset_to_dict
from trainer.progress import STAGES, Cancelled, CancelToken, ProgressLog


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
        """Views for the provenance metrics: the first ``eval_views`` of the test split (else of train).

        Only those views are decoded (a full-resolution test split would not fit a small machine's memory);
        `python -m trainer eval` measures every test view.
        """
        if self._eval is None:
            from trainer.data import DatasetError, load_dataset

            k = max(int(self.preset.eval_views), 1)
            try:
                self._eval = load_dataset(self.data, "test", self.preset.downscale, limit=k)
                self._eval_split = "test"
            except DatasetError:
                self._eval = self.train_set
                self._eval_split = "train"
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
            preset = preset_from_dict(recorded["preset_config"])
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


# ---------------------------------------------------------------------------------------------- helpers


def near_far(ds: Any) -> tuple[float, float]:
    """The dataset's near/far planes (or the loader's default for the layout)."""
    from trainer.data import default_near_far

    if ds.near is not None and ds.far is not None:
        return float(ds.near), float(ds.far)
    return default_near_far(ds)


def view_rays(ds: Any, i: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of every pixel of view ``i`` (row-major): origins, dirs ``[H*W, 3]``."""
    from trainer.finetune import pixel_rays

    h, w = ds.height, ds.width
    cx = ds.cx if ds.cx is not None else w / 2
    cy = ds.cy if ds.cy is not None else h / 2
    py, px = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    c2w = torch.as_tensor(ds.c2w[i], dtype=torch.float32, device=device).expand(h * w, 4, 4)
    return pixel_rays(c2w, px.reshape(-1), py.reshape(-1), float(ds.focal), float(cx), float(cy))


def teacher_psnr(ctx: Context, teacher: Any) -> dict[str, Any]:
    """Teacher PSNR on the evaluation views (``render_teacher`` at the training resolution)."""
    from trainer.teachers import render_teacher

    ds, split, idx = ctx.eval_set()
    nf = near_far(ds)
    bg = torch.as_tensor(ds.background, dtype=torch.float32, device=ctx.device)
    values, ssims, ms = [], [], []
    for i in idx:
        o, d = view_rays(ds, i, ctx.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            rgb = render_teacher(teacher, o, d, nf[0], nf[1], bg, ctx.preset.teacher)
        ms.append((time.perf_counter() - t0) * 1000)
        img = rgb.reshape(ds.height, ds.width, 3).clamp(0, 1).cpu().numpy()
        values.append(psnr(img, ds.images[i]))
        ssims.append(ssim(img, ds.images[i]))
    return {
        "psnr": float(np.mean(values)),
        "ssim": float(np.mean(ssims)),
        "split": split,
        "views": idx,
        "ms_per_frame": float(np.mean(ms)),
    }


def student_psnr(ctx: Context, scene: Any) -> dict[str, Any]:
    """Student PSNR on the evaluation views, rendered by the renderer (ESS + ERT)."""
    from renderer.camera import Camera
    from renderer.render import RenderOptions, prepare_scene, render_image

    ds, split, idx = ctx.eval_set()
    rs = prepare_scene(scene, ctx.device)
    values, ssims, ms = [], [], []
    for i in idx:
        cam = Camera(
            width=ds.width, height=ds.height, focal=float(ds.focal), c2w=ds.c2w[i].astype(np.float64)
        )
        if ds.cx is not None:
            cam.cx, cam.cy = float(ds.cx), float(ds.cy)
        t0 = time.perf_counter()
        res = render_image(rs, cam, RenderOptions())
        ms.append((time.perf_counter() - t0) * 1000)
        img = res.image.clamp(0, 1).numpy()
        values.append(psnr(img, ds.images[i]))
        ssims.append(ssim(img, ds.images[i]))
    return {
        "psnr": float(np.mean(values)),
        "ssim": float(np.mean(ssims)),
        "split": split,
        "views": idx,
        "ms_per_frame": float(np.mean(ms)),
    }


def _cancel_check(ctx: Context) -> None:
    ctx.cancel.check()


# ---------------------------------------------------------------------------------------------- stages


def stage_teacher(ctx: Context) -> dict[str, Any]:
    """Stage 1: train (or resume) the teacher; save ``W/teacher.pt``."""
    from trainer.teachers import make_teacher, save_teacher, train_teacher

    ds = ctx.train_set
    cfg = ctx.preset.teacher
    total = int(cfg.total_steps)
    ctx.log.stage_start("teacher", total=total)
    clock = ElapsedClock(ctx, "teacher")
    teacher = make_teacher(cfg, ds, ctx.device)

    def on_step(step: int, total_: int, loss: float, p: float | None) -> None:
        ctx.log.progress(step, total_, loss, p)
        clock.tick()
        _cancel_check(ctx)

    teacher = train_teacher(
        teacher, ds, cfg, ckpt_path=ctx.path("teacher.ckpt"), device=ctx.device, on_step=on_step
    )
    _cancel_check(ctx)
    save_teacher(teacher, ctx.path("teacher.pt"))
    metrics = teacher_psnr(ctx, teacher)
    return finish_stage(ctx, "teacher", clock, {"steps": total, "metrics": metrics})


def stage_occupancy(ctx: Context) -> dict[str, Any]:
    """Occupancy: bbox (data or estimated), grids, occupancy grid, network index -> ``occupancy.npz``."""
    from trainer.occupancy import (
        estimate_bbox,
        extract_occupancy,
        network_index_from_occupancy,
        occupancy_grid_for_bbox,
    )
    from trainer.teachers import load_teacher

    require(ctx, "occupancy", "teacher")
    ctx.log.stage_start("occupancy", total=1)
    clock = ElapsedClock(ctx, "occupancy")
    teacher = load_teacher(ctx.path("teacher.pt"), ctx.device)
    oc = ctx.preset.occupancy
    ds = ctx.train_set

    def density(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher.density(x)

    if ds.bbox_min is not None and ds.bbox_max is not None:
        bmin, bmax, bbox_source = np.asarray(ds.bbox_min), np.asarray(ds.bbox_max), "dataset"
    else:
        try:
            bmin, bmax = estimate_bbox(
                density,
                teacher.bbox_min.cpu().numpy(),
                teacher.bbox_max.cpu().numpy(),
                threshold=oc.threshold,
                margin=oc.bbox_margin,
                resolution=oc.bbox_search_res,
                chunk=oc.chunk,
                device=ctx.device,
            )
        except ValueError as e:
            raise RuntimeError(
                f"{ctx.path('teacher.pt')}: the teacher's density never exceeds the occupancy threshold "
                f"{oc.threshold} ({e}); train the teacher longer or lower occupancy.threshold"
            ) from e
        bbox_source = "estimated from the teacher's density"
    grid_res, occ_res, bmin, bmax = occupancy_grid_for_bbox(bmin, bmax, oc)
    occ = extract_occupancy(
        density,
        bmin,
        bmax,
        occ_res,
        threshold=oc.threshold,
        subsamples=oc.subsamples,
        chunk=oc.chunk,
        device=ctx.device,
    )
    net_index = network_index_from_occupancy(occ, grid_res)
    _cancel_check(ctx)
    bmin = np.asarray(bmin, dtype=np.float64)
    bmax = np.asarray(bmax, dtype=np.float64)
    voxel = (bmax - bmin) / np.asarray(occ_res)
    step = ctx.preset.step_size or float(ctx.preset.step_voxels * voxel.min())
    with atomic_write(ctx.path("occupancy.npz")) as f:
        np.savez_compressed(
            f,
            bbox_min=bmin,
            bbox_max=bmax,
            grid_res=np.asarray(grid_res, np.int64),
            occupancy_res=np.asarray(occ_res, np.int64),
            occupancy=np.asarray(occ, bool),
            network_index=np.asarray(net_index, np.int32),
            step_size=np.float64(step),
        )
    ctx.log.progress(1, 1, 0.0, None)
    m = int((np.asarray(net_index) >= 0).sum())
    return finish_stage(
        ctx,
        "occupancy",
        clock,
        {
            "bbox_min": bmin.tolist(),
            "bbox_max": bmax.tolist(),
            "bbox_source": bbox_source,
            "grid_res": [int(r) for r in grid_res],
            "occupancy_res": list(occ_res),
            "networks": m,
            "occupied_fraction": float(np.mean(occ)),
            "step_size": step,
        },
    )


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
    """Read ``W/occupancy.npz``."""
    with np.load(ctx.path("occupancy.npz")) as z:
        return Layout(
            bbox_min=z["bbox_min"],
            bbox_max=z["bbox_max"],
            grid_res=tuple(int(v) for v in z["grid_res"]),  # type: ignore[arg-type]
            occupancy_res=tuple(int(v) for v in z["occupancy_res"]),  # type: ignore[arg-type]
            occupancy=z["occupancy"].astype(bool),
            network_index=z["network_index"].astype(np.int32),
            step_size=float(z["step_size"]),
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
        occupancy=layout.occupancy,
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_output(ctx: Context, stage: str, scene: Any) -> None:
    """Write the output .kilo atomically (weights in the preset's dtype) and announce it."""
    from renderer.scene import save_scene

    try:
        save_scene(scene, ctx.out, dtype=ctx.preset.weights_dtype)
        os.chmod(ctx.out, 0o666 & ~_umask())  # the atomic temp file is created 0600
    except OSError as e:
        raise PipelineError(f"{ctx.out}: cannot write the output ({e.strerror or e})") from e
    ctx.log.scene(stage, ctx.out)


def stage_distill(ctx: Context) -> dict[str, Any]:
    """Stage 2: distil the teacher into the networks (resumable); write the first output .kilo."""
    from renderer.networks import init_weights
    from trainer.distill import CellSampler, DistillState, distill, error_report, initial_state
    from trainer.teachers import load_teacher

    require(ctx, "distill", "occupancy")
    cfg = ctx.preset.distill
    ckpt = ctx.path("distill.ckpt")
    state = DistillState.load(ckpt, ctx.device) if ckpt.exists() else None
    ctx.log.stage_start("distill", total=cfg.steps, initial=state.step if state else 0)
    clock = ElapsedClock(ctx, "distill")
    layout = load_layout(ctx)
    spec = student_spec(ctx, layout)
    if state is None:
        state = initial_state(init_weights(layout.num_networks, spec, cfg.seed), ctx.preset.density_shift)
    teacher = load_teacher(ctx.path("teacher.pt"), ctx.device)
    teacher.eval()
    sampler = CellSampler.from_layout(
        layout.bbox_min, layout.bbox_max, layout.network_index, layout.occupancy, ctx.device
    )

    def on_step(step: int, total: int, loss: float) -> None:
        ctx.log.progress(step, total, loss, None)
        clock.tick()

    def checkpoint(s: DistillState) -> None:
        s.save(ckpt)

    state = distill(
        teacher,
        sampler,
        spec,
        layout.step_size,
        cfg,
        state,
        on_step=on_step,
        checkpoint=checkpoint,
        should_stop=lambda: ctx.cancel.requested,
    )
    _cancel_check(ctx)
    flat = layout.network_index.reshape(-1)
    cells = np.zeros((layout.num_networks, 3), np.int64)
    ids = np.nonzero(flat >= 0)[0]
    cells[flat[ids]] = np.stack(np.unravel_index(ids, layout.grid_res), axis=1)
    assert state.error is not None
    report = error_report(state.error, cells)
    report["loss_history"] = state.history
    write_json(ctx.path("distill_errors.json"), report)
    worst = report["worst"][0] if report["worst"] else None
    print(
        f"distill: per-network error mean {report['mean']:.3g}, median {report['median']:.3g}, "
        f"max {report['max']:.3g}"
        + (f" (network {worst['network']} at cell {tuple(worst['cell'])})" if worst else "")
        + f"; all {report['num_networks']} in {ctx.path('distill_errors.json')}",
        file=sys.stderr,
    )
    scene = make_scene(ctx, layout, state.params, {})
    metrics = student_psnr(ctx, scene)
    rec = {
        "steps": cfg.steps,
        "metrics": metrics,
        "error_mean": report["mean"],
        "error_median": report["median"],
        "error_max": report["max"],
    }
    record = finish_stage(ctx, "distill", clock, rec)
    scene.provenance = provenance(ctx, "distill")
    write_output(ctx, "distill", scene)
    return record


def stage_finetune(ctx: Context) -> dict[str, Any]:
    """Stage 3: fine-tune the networks on the training images (resumable); write the final .kilo."""
    from renderer.render import prepare_scene
    from trainer.distill import DistillState
    from trainer.finetune import FinetuneState, TrainingRays, finetune

    require(ctx, "finetune", "distill")
    cfg = ctx.preset.finetune
    ckpt = ctx.path("finetune.ckpt")
    state = FinetuneState.load(ckpt, ctx.device) if ckpt.exists() else None
    ctx.log.stage_start("finetune", total=cfg.steps, initial=state.step if state else 0)
    clock = ElapsedClock(ctx, "finetune")
    layout = load_layout(ctx)
    spec = student_spec(ctx, layout)
    if state is None:
        distilled = DistillState.load(ctx.path("distill.ckpt"), ctx.device)
        state = FinetuneState(step=0, params=distilled.params)
    ds = ctx.train_set
    rays = TrainingRays.from_dataset(ds, ctx.device)
    geometry = make_scene(ctx, layout, state.params, {})
    rs = prepare_scene(geometry, ctx.device)
    bg = torch.as_tensor(ds.background, dtype=torch.float32)

    def on_step(step: int, total: int, loss: float, p: float) -> None:
        ctx.log.progress(step, total, loss, p)
        clock.tick()

    def checkpoint(s: FinetuneState) -> None:
        s.save(ckpt)

    def publish(s: FinetuneState) -> None:
        scene = make_scene(ctx, layout, s.params, {})
        scene.provenance = {**provenance(ctx, "finetune"), "finetune_step": s.step}
        write_output(ctx, "finetune", scene)

    state = finetune(
        rays,
        rs,
        spec,
        layout.step_size,
        bg,
        cfg,
        state,
        on_step=on_step,
        checkpoint=checkpoint,
        publish=publish,
        should_stop=lambda: ctx.cancel.requested,
    )
    _cancel_check(ctx)
    scene = make_scene(ctx, layout, state.params, {})
    metrics = student_psnr(ctx, scene)
    record = finish_stage(ctx, "finetune", clock, {"steps": cfg.steps, "metrics": metrics})
    scene.provenance = provenance(ctx, "finetune")
    write_output(ctx, "finetune", scene)
    return record


STAGE_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "teacher": stage_teacher,
    "occupancy": stage_occupancy,
    "distill": stage_distill,
    "finetune": stage_finetune,
}


def run_stages(ctx: Context, stages: list[str], *, skip_done: bool = True) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order (skipping finished ones); logs ``error`` / ``cancelled`` and re-raises."""
    results: dict[str, dict[str, Any]] = {}
    ctx.cancel.install()
    current = stages[0] if stages else "teacher"
    try:
        for stage in stages:
            current = stage
            rec = stage_record(ctx, stage)
            if rec is not None and skip_done:
                results[stage] = rec
                continue
            ctx.cancel.check()
            results[stage] = STAGE_FUNCS[stage](ctx)
    except Cancelled:
        ctx.log.cancelled(current)
        raise
    except Exception as e:
        ctx.log.error(current, f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e))
        raise
    finally:
        ctx.cancel.uninstall()
    return results


def run_pipeline(cfg: RunConfig) -> Path:
    """All four stages, resuming; returns the output path (logs ``done``)."""
    ctx = open_context(cfg)
    run_stages(ctx, list(STAGES))
    if not ctx.out.exists():  # finished earlier but the output was removed: write it again
        layout = load_layout(ctx)
        from trainer.finetune import FinetuneState

        state = FinetuneState.load(ctx.path("finetune.ckpt"), "cpu")
        scene = make_scene(ctx, layout, state.params, provenance(ctx, "finetune"))
        write_output(ctx, "finetune", scene)
    ctx.log.done(ctx.out)
    return ctx.out
