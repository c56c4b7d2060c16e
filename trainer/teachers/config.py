"""Teacher configuration: one dataclass for both kinds (``grid``, the paper's ``nerf``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TeacherConfig:
    """Stage-1 settings: the ``nerf_*`` fields apply to the NeRF teacher, the others to the grid teacher."""

    kind: str = "grid"
    """``"grid"`` (DVGO-style voxel grids, trains in minutes) or ``"nerf"`` (the paper's MLP teacher)."""
    steps: int = 2500
    """Optimisation steps of the grid teacher (the NeRF teacher uses ``nerf_steps``)."""
    batch_rays: int = 4096
    """Random training rays per step (grid teacher)."""
    lr_grid: float = 0.1
    """Adam learning rate of the density and feature grids."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the colour MLP."""
    lr_decay: float = 0.1
    """Factor the learning rates decay by (exponentially) over all ``steps``."""
    grid_res: tuple[int, ...] = (64, 96, 128)
    """Coarse-to-fine schedule: the grids hold about res³ cubic voxels over the box at each stage."""
    upsample_at: tuple[float, ...] = (0.15, 0.35)
    """Fractions of ``steps`` at which the grids move to the next entry of ``grid_res``."""
    feature_channels: int = 12
    """Channels of the feature grid fed to the colour MLP."""
    mlp_width: int = 128
    """Width of the colour MLP's two hidden layers (DVGO's 128; lego 200x200: 64 gave 0.3 dB less)."""
    dir_freqs: int = 4
    """Positional-encoding frequencies of the view direction for the colour MLP."""
    step_ratio: float = 0.5
    """Ray-marching step of the grid teacher, in voxels of the current grid."""
    alpha_init: float = 1e-4
    """Initial per-step opacity of every voxel (sets the density shift)."""
    weight_threshold: float = 1e-4
    """Colour is evaluated only at samples whose rendering weight exceeds this."""
    rgbper_weight: float = 0.05
    """Per-sample colour loss Σ_k w_k·|c_k − target|² (discourages fog; DVGO's ``weight_rgbper``)."""
    entropy_weight: float = 1e-3
    """Binary-entropy loss on each ray's final transmittance (rays end either empty or opaque)."""
    tv_density_weight: float = 0.0
    """Total-variation loss on the density lattice: this × the mean squared difference of neighbours."""
    tv_feature_weight: float = 0.0
    """Total-variation loss on the feature lattice (summed over channels), as ``tv_density_weight``."""
    tv_pairs: int = 131072
    """Neighbour pairs per step over which the total variation is taken: a window that moves each step and
    sweeps the lattice (lego's has ~3M pairs; all of them would cost several times a step); 0: all."""
    hull_alpha: float = 0.05
    """Visual hull: a voxel is carved when some training view sees alpha below this around its projection."""
    hull_res: int = 96
    """Resolution (about res³ voxels) at which the visual hull is carved."""
    prune_at: tuple[float, ...] = (0.3, 0.5, 0.7)
    """Fractions of ``steps`` at which voxels never reached by rendering weight are pruned from the mask."""
    prune_weight: float = 5e-3
    """A mask voxel survives pruning if some training ray gave one of its samples at least this weight."""
    prune_density_alpha: float = 1e-6
    """At each upsampling, mask voxels whose (dilated) opacity per step is below this are dropped."""
    fit_box_at: float | None = 0.35
    """Fraction of ``steps`` at which the box shrinks to the mask voxels denser than ``fit_box_sigma`` (after
    that step's upsampling and pruning, keeping the current number of lattice points, so the voxels get
    finer); None keeps the starting box."""
    fit_box_sigma: float = 10.0
    """The fitted box holds the mask voxels whose density exceeds this (world units⁻¹), the occupancy
    threshold: what is left outside is fog the student could not represent anyway."""
    fit_box_margin: float = 0.03
    """Margin added on each side of the fitted box, as a fraction of its size (plus two mask voxels)."""
    log_every: int = 10
    """Steps between ``on_step`` progress callbacks."""
    checkpoint_every_s: float = 60.0
    """Seconds between atomic training checkpoints (one is also written at the end)."""
    seed: int = 0
    """Seed of initialisation and ray sampling."""
    render_chunk: int = 4096
    """Rays per chunk when rendering without gradients."""
    nerf_depth: int = 8
    """NeRF teacher: layers of the trunk MLP."""
    nerf_width: int = 256
    """NeRF teacher: width of the trunk MLP."""
    nerf_skip: int = 4
    """NeRF teacher: the input encoding is concatenated again after this many trunk layers."""
    nerf_dir_width: int = 128
    """NeRF teacher: width of the view-direction branch."""
    nerf_pos_freqs: int = 10
    """NeRF teacher: positional-encoding frequencies of the position."""
    nerf_dir_freqs: int = 4
    """NeRF teacher: positional-encoding frequencies of the direction."""
    nerf_samples: int = 384
    """NeRF teacher: uniform samples per ray between near and far (no hierarchical sampling)."""
    nerf_lr: float = 5e-4
    """NeRF teacher: Adam learning rate."""
    nerf_lr_decay: float = 0.1
    """NeRF teacher: the learning rate decays by this factor over ``nerf_lr_decay_steps``."""
    nerf_lr_decay_steps: int = 500_000
    """NeRF teacher: steps over which the learning rate decays by ``nerf_lr_decay``."""
    nerf_steps: int = 500_000
    """NeRF teacher: optimisation steps."""
    nerf_batch_rays: int = 1024
    """NeRF teacher: random rays per step."""
    nerf_precrop_steps: int = 500
    """NeRF teacher: during the first steps, rays come from the image centre only."""
    nerf_precrop_frac: float = 0.5
    """NeRF teacher: side of the centre crop as a fraction of the image side."""
    extra: dict[str, Any] = field(default_factory=dict)
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

    def validate(self) -> None:
        """Raise ValueError with a one-line message for inconsistent settings."""
        if self.kind not in ("grid", "nerf"):
            raise ValueError(f"teacher kind must be 'grid' or 'nerf', not {self.kind!r}")
        if self.fit_box_at is not None and not 0.0 < self.fit_box_at < 1.0:
            raise ValueError(f"fit_box_at must be a fraction in (0, 1) or None, not {self.fit_box_at}")
        if len(self.upsample_at) != len(self.grid_res) - 1:
            raise ValueError("upsample_at needs one fraction per grid_res transition")
        if self.total_steps < 0 or self.batch < 1:
            raise ValueError("steps must be >= 0 and batch_rays >= 1")
