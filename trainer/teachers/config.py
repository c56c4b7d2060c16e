"""Teacher configuration: one dataclass for both kinds (``grid``, the paper's ``nerf``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from renderer.scene_checks import MAX_FREQS
from trainer.settings import (
    MAX_LR,
    MAX_RAYS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_STEPS,
    MAX_WEIGHT,
    setting,
    validate,
)


@dataclass
class TeacherConfig:
    """Stage-1 settings: the ``nerf_*`` fields apply to the NeRF teacher, the others to the grid teacher."""

    kind: str = setting("grid", choices=("grid", "nerf"))
    """``"grid"`` (DVGO-style voxel grids, trains in minutes) or ``"nerf"`` (the paper's MLP teacher)."""
    steps: int = setting(2500, ge=1, le=MAX_STEPS)
    """Optimisation steps of the grid teacher (the NeRF teacher uses ``nerf_steps``)."""
    batch_rays: int = setting(4096, ge=1, le=MAX_RAYS)
    """Random training rays per step (grid teacher)."""
    lr_grid: float = setting(0.1, gt=0, le=MAX_LR)
    """Adam learning rate of the density and feature grids."""
    lr_mlp: float = setting(1e-3, gt=0, le=MAX_LR)
    """Adam learning rate of the colour MLP."""
    lr_decay: float = setting(0.1, gt=0, le=1)
    """Factor the learning rates decay by (exponentially) over all ``steps``."""
    grid_res: tuple[int, ...] = setting((64, 96, 128), length=(1, 8), ge=2, le=512)
    """Coarse-to-fine schedule: the grids hold about res³ cubic voxels over the box at each stage."""
    upsample_at: tuple[float, ...] = setting((0.15, 0.35), length=(0, 7), gt=0, lt=1)
    """Fractions of ``steps`` at which the grids move to the next entry of ``grid_res``."""
    feature_channels: int = setting(12, ge=1, le=256)
    """Channels of the feature grid fed to the colour MLP."""
    mlp_width: int = setting(128, ge=1, le=4096)
    """Width of the colour MLP's two hidden layers (DVGO's 128; lego 200x200: 64 gave 0.3 dB less)."""
    dir_freqs: int = setting(4, ge=0, le=MAX_FREQS)
    """Positional-encoding frequencies of the view direction for the colour MLP."""
    step_ratio: float = setting(0.5, ge=0.05, le=10)
    """Ray-marching step of the grid teacher, in voxels of the current grid."""
    alpha_init: float = setting(1e-4, gt=0, lt=1)
    """Initial per-step opacity of every voxel (sets the density shift)."""
    weight_threshold: float = setting(1e-4, ge=0, lt=1)
    """Colour is evaluated only at samples whose rendering weight exceeds this."""
    rgbper_weight: float = setting(0.05, ge=0, le=MAX_WEIGHT)
    """Per-sample colour loss Σ_k w_k·|c_k − target|² (discourages fog; DVGO's ``weight_rgbper``)."""
    entropy_weight: float = setting(1e-3, ge=0, le=MAX_WEIGHT)
    """Binary-entropy loss on each ray's final transmittance (rays end either empty or opaque)."""
    tv_density_weight: float = setting(0.0, ge=0, le=MAX_WEIGHT)
    """Total-variation loss on the density lattice: this × the mean squared difference of neighbours."""
    tv_feature_weight: float = setting(0.0, ge=0, le=MAX_WEIGHT)
    """Total-variation loss on the feature lattice (summed over channels), as ``tv_density_weight``."""
    tv_pairs: int = setting(131072, ge=0, le=2**31)
    """Neighbour pairs per step over which the total variation is taken: a window that moves each step and
    sweeps the lattice (lego's has ~3M pairs; all of them would cost several times a step); 0: all."""
    hull_alpha: float = setting(0.05, ge=0, le=1)
    """Visual hull: a voxel is carved when some training view sees alpha below this around its projection."""
    hull_res: int = setting(96, ge=1, le=512)
    """Resolution (about res³ voxels) at which the visual hull is carved."""
    prune_at: tuple[float, ...] = setting((0.3, 0.5, 0.7), length=(0, 16), gt=0, lt=1)
    """Fractions of ``steps`` at which voxels never reached by rendering weight are pruned from the mask."""
    prune_weight: float = setting(5e-3, ge=0, le=1)
    """A mask voxel survives pruning if some training ray gave one of its samples at least this weight."""
    prune_density_alpha: float = setting(1e-6, ge=0, lt=1)
    """At each upsampling, mask voxels whose (dilated) opacity per step is below this are dropped."""
    fit_box_at: float | None = setting(0.35, gt=0, lt=1)
    """Fraction of ``steps`` at which the box shrinks to the mask voxels denser than ``fit_box_sigma`` (after
    that step's upsampling and pruning, keeping the current number of lattice points, so the voxels get
    finer); None keeps the starting box."""
    fit_box_sigma: float = setting(10.0, gt=0, le=1e6)
    """The fitted box holds the mask voxels whose density exceeds this (world units⁻¹), the occupancy
    threshold: what is left outside is fog the student could not represent anyway."""
    fit_box_margin: float = setting(0.03, ge=0, le=10)
    """Margin added on each side of the fitted box, as a fraction of its size (plus two mask voxels)."""
    log_every: int = setting(10, ge=1, le=MAX_STEPS, anytime=True)
    """Steps between ``on_step`` progress callbacks."""
    checkpoint_every_s: float = setting(60.0, gt=0, le=MAX_SECONDS, anytime=True)
    """Seconds between atomic training checkpoints (one is also written at the end)."""
    seed: int = setting(0, ge=0, le=MAX_SEED)
    """Seed of initialisation and ray sampling."""
    mixed_precision: bool = setting(False)
    """Grid teacher: run its colour MLP in bfloat16 (autocast) while training; the lattices, the
    trilinear interpolation, compositing and the loss stay float32 (the MLP's inputs are features and a
    4-octave direction encoding, which bfloat16 holds well). For GPUs (the ``gpu`` preset); a CPU runs it
    too, slower. The NeRF teacher and the students always train in float32 (their 10-octave position
    encodings need float32 inputs)."""
    render_chunk: int = setting(4096, ge=1, le=MAX_RAYS, anytime=True)
    """Rays per chunk when rendering without gradients."""
    nerf_depth: int = setting(8, ge=1, le=64)
    """NeRF teacher: layers of the trunk MLP."""
    nerf_width: int = setting(256, ge=1, le=4096)
    """NeRF teacher: width of the trunk MLP."""
    nerf_skip: int = setting(4, ge=0, le=64)
    """NeRF teacher: the input encoding is concatenated again after this many trunk layers."""
    nerf_dir_width: int = setting(128, ge=1, le=4096)
    """NeRF teacher: width of the view-direction branch."""
    nerf_pos_freqs: int = setting(10, ge=0, le=MAX_FREQS)
    """NeRF teacher: positional-encoding frequencies of the position."""
    nerf_dir_freqs: int = setting(4, ge=0, le=MAX_FREQS)
    """NeRF teacher: positional-encoding frequencies of the direction."""
    nerf_samples: int = setting(384, ge=1, le=4096)
    """NeRF teacher: uniform samples per ray between near and far (no hierarchical sampling)."""
    nerf_lr: float = setting(5e-4, gt=0, le=MAX_LR)
    """NeRF teacher: Adam learning rate."""
    nerf_lr_decay: float = setting(0.1, gt=0, le=1)
    """NeRF teacher: the learning rate decays by this factor over ``nerf_lr_decay_steps``."""
    nerf_lr_decay_steps: int = setting(500_000, ge=1, le=MAX_STEPS)
    """NeRF teacher: steps over which the learning rate decays by ``nerf_lr_decay``."""
    nerf_steps: int = setting(500_000, ge=1, le=MAX_STEPS)
    """NeRF teacher: optimisation steps."""
    nerf_batch_rays: int = setting(1024, ge=1, le=MAX_RAYS)
    """NeRF teacher: random rays per step."""
    nerf_precrop_steps: int = setting(500, ge=0, le=MAX_STEPS)
    """NeRF teacher: during the first steps, rays come from the image centre only."""
    nerf_precrop_frac: float = setting(0.5, gt=0, le=1)
    """NeRF teacher: side of the centre crop as a fraction of the image side."""
    extra: dict[str, Any] = setting(factory=dict, anytime=True)
    """Free-form notes carried into checkpoints (not used by training)."""

    @property
    def total_steps(self) -> int:
        """Steps of the configured kind."""
        return self.nerf_steps if self.kind == "nerf" else self.steps

    @property
    def batch(self) -> int:
        """Rays per step of the configured kind."""
        return self.nerf_batch_rays if self.kind == "nerf" else self.batch_rays

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherConfig:
        """Inverse of :meth:`to_dict` (unknown keys ignored, lists turned back into tuples)."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    def relations(self) -> list[tuple[str, str]]:
        """Rules between fields (`trainer.settings.problems` applies them after each field's own)."""
        out = []
        if len(self.upsample_at) != len(self.grid_res) - 1:
            out.append(
                (
                    "upsample_at",
                    f"must hold one fraction per step between grid_res entries ({len(self.grid_res) - 1} "
                    f"for grid_res {list(self.grid_res)}), got {list(self.upsample_at)}",
                )
            )
        elif any(b <= a for a, b in zip(self.upsample_at, self.upsample_at[1:])):
            out.append(("upsample_at", f"must be increasing, got {list(self.upsample_at)}"))
        return out

    def validate(self) -> None:
        """Raise `trainer.settings.PresetError` (a ValueError) in one line for an invalid setting."""
        validate(self, "teacher settings")
