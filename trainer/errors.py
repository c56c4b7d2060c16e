"""The trainer's user errors: one line naming the file or setting and the problem (the CLI exits 2)."""

from __future__ import annotations

import math


class PipelineError(ValueError):
    """A user error in the pipeline's inputs (one line naming the file and the problem)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(PipelineError):
    """A stage's loss stopped being a finite number (its last checkpoint is kept; nothing NaN is written)."""


def check_finite_loss(stage: str, step: int, loss: float, lr_key: str) -> None:
    """Raise `TrainingDiverged` when a step's loss is NaN or infinite (before the optimiser applies it, so
    neither the parameters nor a checkpoint ever hold NaN)."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"{stage}: the loss became {loss} at step {step}; the stage's last checkpoint is kept "
            f"(a lower {lr_key} may help: --set {lr_key}=VALUE)"
        )
