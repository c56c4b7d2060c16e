"""The four pipeline stages (teacher, occupancy, distill, finetune) and the helpers they share: evaluation
of teacher and student (the student's layout, scene and output are in `trainer.student`).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from renderer.atomic import atomic_write_bytes
from trainer.checkpoint import CheckpointError
from trainer.files import writing
from trainer.metrics import psnr, ssim
from trainer.student import (
    Layout,
    check_student_params,
    load_layout,
    make_scene,
    provenance,
    student_spec,
    write_output,
)
from trainer.workdir import (
    Context,
    ElapsedClock,
    PipelineError,
    finish_stage,
    require,
    write_json,
)

# ---------------------------------------------------------------------------------------------- helpers

MIN_STEP_VOXELS = 0.05
"""The marching step must be at least this fraction of an occupancy voxel (smaller ones take forever)."""


def near_far(ds: Any) -> tuple[float, float]:
    """The dataset's near/far planes (or the loader's default for the layout)."""
    from trainer.data import default_near_far

    if ds.near is not None and ds.far is not None:
        return float(ds.near), float(ds.far)
    return default_near_far(ds)


def view_rays(ds: Any, i: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of every pixel of view ``i``'s W x H picture (row-major; ``Dataset.camera(i)``'s pixels, the
    frame's own at the top-left): origins, dirs ``[H*W, 3]`` (`trainer.data.cameras.view_rays`)."""
    from trainer.data.cameras import view_rays as frame_view_rays

    return frame_view_rays(ds, i, device)


def view_size(ds: Any, i: int) -> tuple[int, int]:
    """(w, h) of view ``i``'s own pixels (the top-left of its W x H picture)."""
    size_of = getattr(ds, "size_of", None)
    return size_of(i) if size_of is not None else (int(ds.width), int(ds.height))


def score_views(ctx: Context, render: Callable[[Any, int], torch.Tensor]) -> dict[str, Any]:
    """PSNR, SSIM and ms/frame of ``render(dataset, i) -> [H, W, 3]`` on the evaluation views."""
    ds, split, idx = ctx.eval_set()
    values, ssims, ms = [], [], []
    for i in idx:
        t0 = time.perf_counter()
        with torch.no_grad():
            rgb = render(ds, i)
        ms.append((time.perf_counter() - t0) * 1000)
        w, h = view_size(ds, i)
        img = rgb.reshape(ds.height, ds.width, 3)[:h, :w].clamp(0, 1).cpu().numpy()
        gt = np.asarray(ds.images[i])[:h, :w]
        values.append(psnr(img, gt))
        ssims.append(ssim(img, gt))
    return {
        "psnr": float(np.mean(values)),
        "ssim": float(np.mean(ssims)),
        "split": split,
        "views": [i * ctx.eval_every for i in idx],
        "ms_per_frame": float(np.mean(ms)),
    }


def teacher_psnr(ctx: Context, teacher: Any) -> dict[str, Any]:
    """Teacher PSNR on the evaluation views (``render_teacher`` at the training resolution)."""
    from trainer.teachers import render_teacher

    ds = ctx.eval_set()[0]
    near, far = near_far(ds)
    bg = torch.as_tensor(ds.background, dtype=torch.float32, device=ctx.device)

    def render(ds: Any, i: int) -> torch.Tensor:
        o, d = view_rays(ds, i, ctx.device)
        return render_teacher(teacher, o, d, near, far, bg, ctx.preset.teacher)

    return score_views(ctx, render)


def student_psnr(ctx: Context, scene: Any) -> dict[str, Any]:
    """Student PSNR on the evaluation views, rendered by the renderer (ESS + ERT)."""
    from renderer.backends import get_backend
    from renderer.render import RenderOptions

    backend = get_backend("auto", ctx.device)  # the native CPU kernels when they run here (same pictures)
    rs = backend.prepare(scene)  # type: ignore[attr-defined]

    def render(ds: Any, i: int) -> torch.Tensor:
        return backend.render(rs, ds.camera(i), RenderOptions()).image

    return score_views(ctx, render)


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

    if ds.bbox_min is not None and ds.bbox_max is not None and not getattr(ds, "bbox_loose", False):
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
        except ValueError:
            raise PipelineError(
                f"{ctx.path('teacher.pt')}: the teacher's density never exceeds occupancy.threshold "
                f"{oc.threshold:g} inside its box; lower it (--set occupancy.threshold=VALUE) or train the "
                "teacher longer"
            ) from None
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
    if not bool((net_index >= 0).any()):
        raise PipelineError(
            f"{ctx.path('teacher.pt')}: no voxel of the teacher's density exceeds occupancy.threshold "
            f"{oc.threshold:g}; lower it (--set occupancy.threshold=VALUE) or train the teacher longer"
        )
    _cancel_check(ctx)
    bmin = np.asarray(bmin, dtype=np.float64)
    bmax = np.asarray(bmax, dtype=np.float64)
    voxel = (bmax - bmin) / np.asarray(occ_res)
    step = ctx.preset.step_size or float(ctx.preset.step_voxels * voxel.min())
    if not MIN_STEP_VOXELS * voxel.min() <= step <= float(np.linalg.norm(bmax - bmin)):
        raise PipelineError(
            f"step_size {step:g} does not fit this scene: it must lie between {MIN_STEP_VOXELS:g} of an "
            f"occupancy voxel ({MIN_STEP_VOXELS * voxel.min():g}) and the box's diagonal "
            f"({float(np.linalg.norm(bmax - bmin)):g}); change it with --set step_size=VALUE"
        )
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        bbox_min=bmin,
        bbox_max=bmax,
        grid_res=np.asarray(grid_res, np.int64),
        occupancy_res=np.asarray(occ_res, np.int64),
        occupancy=np.asarray(occ, bool),
        network_index=np.asarray(net_index, np.int32),
        step_size=np.float64(step),
    )
    with writing(ctx.path("occupancy.npz")):
        atomic_write_bytes(ctx.path("occupancy.npz"), buf.getvalue())
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


def stage_distill(ctx: Context) -> dict[str, Any]:
    """Stage 2: distil the teacher into the networks (resumable); write the first output .kilo."""
    from renderer.networks import init_weights
    from trainer.distill import DistillState, distill, error_report, initial_state
    from trainer.teachers import load_teacher

    require(ctx, "distill", "occupancy")
    cfg = ctx.preset.distill
    ckpt = ctx.path("distill.ckpt")
    layout = load_layout(ctx)
    spec = student_spec(ctx, layout)
    state = DistillState.load(ckpt, ctx.device) if ckpt.exists() else None
    if state is not None:
        check_student_params(ckpt, state.params, layout, spec)
        if state.error is not None and state.error.shape != (layout.num_networks,):
            raise CheckpointError(
                ckpt, f"error holds {state.error.shape[0]} networks, not {layout.num_networks}"
            )
    ctx.log.stage_start("distill", total=cfg.steps, initial=state.step if state else 0)
    clock = ElapsedClock(ctx, "distill")
    if state is None:
        state = initial_state(init_weights(layout.num_networks, spec, cfg.seed), ctx.preset.density_shift)
    teacher = load_teacher(ctx.path("teacher.pt"), ctx.device)
    teacher.eval()
    sampler = make_sampler(ctx, layout, teacher)

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
        frozen_rows=frozen_rows(ctx),
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


def frozen_rows(ctx: Context) -> dict[str, torch.Tensor]:
    """The student's weight rows held at zero: l0's for the untrained position octaves, l3's for the
    untrained direction octaves (`Preset.trained_pos_freqs`, `trained_dir_freqs`)."""
    from trainer.distill import untrained_encoding_rows

    p = ctx.preset
    rows = {
        "l0.weight": untrained_encoding_rows(0, p.pos_freqs, p.trained_pos_freqs),
        "l3.weight": untrained_encoding_rows(p.hidden, p.dir_freqs, p.trained_dir_freqs),
    }
    return {k: v for k, v in rows.items() if v is not None}


def distill_term(ctx: Context, layout: Layout, spec: Any, teacher: Any) -> Callable[[Any, int], torch.Tensor]:
    """Fine-tuning's distillation term: ``finetune.distill_weight`` x stage 2's loss against the teacher on
    ``finetune.distill_points`` fresh points per network, drawn from a generator seeded by the step."""
    from trainer.distill import distill_step_loss

    cfg, dcfg = ctx.preset.finetune, ctx.preset.distill
    sampler = make_sampler(ctx, layout, teacher)
    gen = torch.Generator(device=ctx.device)

    def term(params: Any, step: int) -> torch.Tensor:
        gen.manual_seed(cfg.seed * 1_000_003 + step + 7_777_777)
        _, loss = distill_step_loss(
            teacher,
            sampler,
            params,
            spec,
            layout.step_size,
            cfg.distill_points,
            dcfg.occupied_fraction,
            dcfg.rgb_weight,
            gen,
            dcfg.rgb_by_alpha,
        )
        return cfg.distill_weight * loss

    return term


def novel_rays(ctx: Context, layout: Layout, teacher: Any) -> Any:
    """Fine-tuning's teacher-labelled novel rays for the layout: fresh each step (`TeacherRays`) or from
    a pool of ``finetune.teacher_ray_pool`` (`LabelledRayPool`)."""
    from trainer.teacher_rays import LabelledRayPool, TeacherRays
    from trainer.teachers import render_teacher

    ds = ctx.train_set
    near, far = near_far(ds)
    bg = torch.as_tensor(ds.background, dtype=torch.float32, device=ctx.device)
    c2w = np.asarray(ds.c2w, dtype=np.float32)

    def render(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return render_teacher(teacher, o, d, near, far, bg, ctx.preset.teacher, out_device=ctx.device)

    rays = TeacherRays.from_occupancy(
        c2w[:, :3, 3], layout.bbox_min, layout.bbox_max, layout.occupancy, render, ctx.device
    )
    cfg = ctx.preset.finetune
    if cfg.teacher_ray_pool > 0:
        return LabelledRayPool(rays, cfg.teacher_ray_pool, seed=cfg.seed * 1_000_003 + 999_983)
    return rays


def make_sampler(ctx: Context, layout: Layout, teacher: Any) -> Any:
    """The distillation point sampler of the layout (view directions from the training cameras if set;
    occupied voxels picked by the teacher's visibility when ``distill.visibility_floor`` is set)."""
    from trainer.distill import CellSampler

    sampler = CellSampler.from_layout(
        layout.bbox_min, layout.bbox_max, layout.network_index, layout.occupancy, ctx.device
    )
    floor = ctx.preset.distill.visibility_floor
    if floor is not None and hasattr(teacher, "visibility"):
        vis = teacher.visibility(sampler.voxel_centres())
        if vis is not None:  # (a teacher that recorded no training-ray weights: uniform)
            sampler.set_voxel_weights(vis.clamp_min(max(floor, 1e-6)))
    if ctx.preset.distill.camera_directions:
        c2w = np.asarray(ctx.train_set.c2w, dtype=np.float32)
        sampler.camera_origins = torch.as_tensor(c2w[:, :3, 3], device=ctx.device)
    return sampler


def stage_finetune(ctx: Context) -> dict[str, Any]:
    """Stage 3: fine-tune the networks on the training images (resumable); write the final .kilo."""
    from renderer.render import prepare_scene
    from trainer.distill import DistillState
    from trainer.finetune import FinetunePixelSampler, FinetuneState, finetune

    require(ctx, "finetune", "distill")
    cfg = ctx.preset.finetune
    ckpt = ctx.path("finetune.ckpt")
    layout = load_layout(ctx)
    spec = student_spec(ctx, layout)
    state = FinetuneState.load(ckpt, ctx.device) if ckpt.exists() else None
    if state is not None:
        check_student_params(ckpt, state.params, layout, spec)
    ctx.log.stage_start("finetune", total=cfg.steps, initial=state.step if state else 0)
    clock = ElapsedClock(ctx, "finetune")
    if state is None:
        distilled = DistillState.load(ctx.path("distill.ckpt"), ctx.device)
        check_student_params(ctx.path("distill.ckpt"), distilled.params, layout, spec)
        state = FinetuneState(step=0, params=distilled.params)
    ds = ctx.train_set
    rays = FinetunePixelSampler.from_dataset(ds, ctx.device)
    geometry = make_scene(ctx, layout, state.params, {})
    rs = prepare_scene(geometry, ctx.device)
    bg = torch.as_tensor(ds.background, dtype=torch.float32)
    teacher = None
    if cfg.distill_weight > 0 or cfg.teacher_rays > 0:
        from trainer.teachers import load_teacher

        teacher = load_teacher(ctx.path("teacher.pt"), ctx.device)
        teacher.eval()

    def on_step(step: int, total: int, loss: float, p: float) -> None:
        ctx.log.progress(step, total, loss, p)
        clock.tick()

    def checkpoint(s: FinetuneState) -> None:
        s.save(ckpt)

    def publish(s: FinetuneState) -> None:
        scene = make_scene(ctx, layout, s.output_params(), {})
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
        extra_loss=distill_term(ctx, layout, spec, teacher) if cfg.distill_weight > 0 else None,
        novel_rays=novel_rays(ctx, layout, teacher) if cfg.teacher_rays > 0 else None,
        frozen_rows=frozen_rows(ctx),
    )
    _cancel_check(ctx)
    scene = make_scene(ctx, layout, state.output_params(), {})
    metrics = student_psnr(ctx, scene)
    record = finish_stage(ctx, "finetune", clock, {"steps": cfg.steps, "metrics": metrics})
    scene.provenance = provenance(ctx, "finetune")
    write_output(ctx, "finetune", scene)
    return record
