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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.metrics import reset_peak_ram
from trainer.progress import STAGES, Cancelled
from trainer.stages import (  # re-exported: every name stays importable from trainer.pipeline
    near_far,
    stage_distill,
    stage_finetune,
    stage_occupancy,
    stage_teacher,
    student_psnr,
    teacher_psnr,
    view_rays,
)
from trainer.student import Layout, load_layout, make_scene, provenance, student_spec, write_output
from trainer.workdir import (  # re-exported
    Context,
    ElapsedClock,
    PipelineError,
    RunConfig,
    add_elapsed,
    finish_stage,
    open_context,
    read_json,
    require,
    stage_record,
    write_json,
)

__all__ = [
    "Context",
    "ElapsedClock",
    "Layout",
    "PipelineError",
    "RunConfig",
    "STAGE_FUNCS",
    "add_elapsed",
    "finish_stage",
    "load_layout",
    "make_scene",
    "near_far",
    "open_context",
    "provenance",
    "read_json",
    "require",
    "run_pipeline",
    "run_stages",
    "stage_distill",
    "stage_finetune",
    "stage_occupancy",
    "stage_record",
    "stage_teacher",
    "student_psnr",
    "student_spec",
    "teacher_psnr",
    "view_rays",
    "write_json",
    "write_output",
]


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
            reset_peak_ram()  # each stage's record holds its own peak RAM, not the process's so far
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
        scene = make_scene(ctx, layout, state.output_params(), provenance(ctx, "finetune"))
        write_output(ctx, "finetune", scene)
    ctx.log.done(ctx.out)
    return ctx.out
