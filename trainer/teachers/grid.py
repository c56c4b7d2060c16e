"""The fast teacher: DVGO-style voxel grids of density and features with a small colour MLP.

σ(x) = softplus(D(x) + shift) / v_final, with D a trilinearly interpolated density lattice and v_final the
voxel size of the finest one in the starting box (a fixed scale); rgb(x, d) = sigmoid(MLP(F(x), γ(d))),
with F a 12-channel feature lattice.
Both lattices store values only at the points around the marching mask (`trainer.teachers.lattice`), so
each step's gradient and Adam update touch those rows alone. Training runs coarse to fine (the lattices are
upsampled at fixed fractions of the steps) and marches only through a boolean mask that starts as the visual
hull of the training alpha masks and is pruned by density (at each upsampling) and by the largest rendering
weight any training ray gave a voxel (which removes the hidden interior); at ``fit_box_at`` the box itself
shrinks to the mask voxels whose density exceeds the occupancy threshold, so the finest grid spends its
voxels on the scene. The colour MLP is evaluated only where the sample weight exceeds a threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from renderer.composite import packed_weights
from renderer.march import intersect_aabb
from trainer.teachers.base import Teacher
from trainer.teachers.config import TeacherConfig
from trainer.teachers.hull import dataset_hull
from trainer.teachers.lattice import (
    add_tv_gradient,
    cells_to_lattice_support,
    dilate,
    lattice_corners,
    lattice_neighbour_rows,
    lattice_points,
    lattice_samples_in_mask,
    mask_lookup,
    mask_voxel_index,
    sparse_trilinear,
    voxel_centres,
    voxel_grid_dims,
)


def direction_encoding(d: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """γ(d) = [d, sin(2⁰d), cos(2⁰d), …, sin(2^(L−1)d), cos(2^(L−1)d)]: ``[N, 3]`` → ``[N, 3 + 6L]``."""
    out = [d]
    for k in range(num_freqs):
        out += [torch.sin(d * 2.0**k), torch.cos(d * 2.0**k)]
    return torch.cat(out, dim=-1)


class GridTeacher(Teacher):
    """Sparse density ``[A]`` and feature ``[A, C]`` lattices of ``dims`` points (rows at the ``active``
    lattice points), a colour MLP and a marching mask."""

    kind = "grid"
    mask: torch.Tensor
    max_weight: torch.Tensor
    stage: torch.Tensor
    active: torch.Tensor

    def __init__(
        self,
        bbox_min: Any,
        bbox_max: Any,
        dims: tuple[int, int, int],
        mask_dims: tuple[int, int, int],
        voxel_final: float,
        *,
        feature_channels: int = TeacherConfig.feature_channels,
        mlp_width: int = TeacherConfig.mlp_width,
        dir_freqs: int = TeacherConfig.dir_freqs,
        step_ratio: float = TeacherConfig.step_ratio,
        alpha_init: float = TeacherConfig.alpha_init,
        weight_threshold: float = TeacherConfig.weight_threshold,
        stage: int = 0,
        seed: int = TeacherConfig.seed,
        active_count: int | None = None,
    ) -> None:
        super().__init__(bbox_min, bbox_max)
        gen = torch.Generator().manual_seed(seed)
        self.feature_channels = feature_channels
        self.mlp_width = mlp_width
        self.dir_freqs = dir_freqs
        self.step_ratio = step_ratio
        self.alpha_init = alpha_init
        self.weight_threshold = weight_threshold
        self.voxel_final = float(voxel_final)
        self.mask_dims: tuple[int, int, int] = (int(mask_dims[0]), int(mask_dims[1]), int(mask_dims[2]))
        self._dims: tuple[int, int, int] = (int(dims[0]), int(dims[1]), int(dims[2]))
        a = int(np.prod(self._dims)) if active_count is None else int(active_count)
        self.register_buffer("active", torch.arange(a, dtype=torch.int64))
        self.density_table = torch.nn.Parameter(torch.zeros(a))
        self.feature_table = torch.nn.Parameter(torch.zeros(a, feature_channels))
        self._slot_key: tuple[Any, ...] | None = None
        self._slot = torch.zeros(0, dtype=torch.int64)
        din = feature_channels + 3 + 6 * dir_freqs
        self.rgbnet = torch.nn.Sequential(
            torch.nn.Linear(din, mlp_width),
            torch.nn.ReLU(inplace=True),
            torch.nn.Linear(mlp_width, mlp_width),
            torch.nn.ReLU(inplace=True),
            torch.nn.Linear(mlp_width, 3),
        )
        with torch.no_grad():
            for m in self.rgbnet:
                if isinstance(m, torch.nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.uniform_(-bound, bound, generator=gen)
            last = self.rgbnet[-1]
            assert isinstance(last, torch.nn.Linear)
            last.bias.zero_()
        # softplus(shift) · step_ratio = −ln(1 − alpha_init): the initial opacity per step of the final grid
        y = -math.log(1.0 - alpha_init) / step_ratio
        self.shift = float(math.log(math.expm1(y)))
        self.register_buffer("mask", torch.ones(self.mask_dims, dtype=torch.bool))
        self.register_buffer("max_weight", torch.zeros(self.mask_dims, dtype=torch.float32))
        self.register_buffer("stage", torch.tensor(stage, dtype=torch.int64))
        self.rgbper_weight = 0.0
        self.entropy_weight = 0.0
        self.tv_weights = (0.0, 0.0)
        self.tv_pairs = 0
        self.mixed_precision = False
        """bfloat16 autocast of the colour MLP (``TeacherConfig.mixed_precision``, set while training)."""
        self._pairs_key: tuple[Any, ...] | None = None
        self._pairs = torch.zeros(0, 2, dtype=torch.int64)

    def configure_training(self, cfg: TeacherConfig) -> None:
        """Per-sample colour and transmittance-entropy loss weights from ``cfg``."""
        self.rgbper_weight = cfg.rgbper_weight
        self.entropy_weight = cfg.entropy_weight
        self.tv_weights = (cfg.tv_density_weight, cfg.tv_feature_weight)
        self.tv_pairs = cfg.tv_pairs
        self.mixed_precision = cfg.mixed_precision

    def after_backward(self, step: int) -> None:
        """Add the total-variation gradients of both lattices (when their weights are set), over a window
        of ``tv_pairs`` neighbour pairs chosen by the step."""
        if self.tv_weights == (0.0, 0.0):
            return
        slot = self.slot()
        if self._slot_key != self._pairs_key:
            self._pairs = lattice_neighbour_rows(self.active, slot, self._dims)
            self._pairs_key = self._slot_key
        pairs, n = self._pairs, self._pairs.shape[0]
        if 0 < self.tv_pairs < n:
            # a window of consecutive pairs (memory order, so the table is read as a stream), moving on
            # each step and so sweeping the whole lattice every n / tv_pairs steps; set by the step alone
            start = (step * self.tv_pairs) % n
            pairs = torch.cat(
                [pairs[start : start + self.tv_pairs], pairs[: max(0, start + self.tv_pairs - n)]]
            )
        add_tv_gradient(self.density_table, pairs, self.tv_weights[0])
        add_tv_gradient(self.feature_table, pairs, self.tv_weights[1])

    # ---- geometry ----
    @property
    def dims(self) -> tuple[int, int, int]:
        """Current lattice size (X, Y, Z) of the grids."""
        return self._dims

    def slot(self) -> torch.Tensor:
        """``[X·Y·Z]`` int64: the table row of each lattice point, −1 where inactive (rebuilt on change)."""
        key = (self.active.data_ptr(), self.active._version, self.active.device, self.active.shape[0])
        if key != self._slot_key:
            slot = torch.full((int(np.prod(self._dims)),), -1, dtype=torch.int64, device=self.active.device)
            slot[self.active] = torch.arange(self.active.shape[0], device=self.active.device)
            self._slot, self._slot_key = slot, key
        return self._slot

    def corners(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lattice corners and trilinear weights ``[N, 8]`` of points ``x [N, 3]``."""
        return lattice_corners(x, self.bbox_min, self.bbox_max, self._dims)

    @property
    def voxel_size(self) -> float:
        """Current voxel size (world units): the box extent over (dims − 1), largest axis."""
        ext = (self.bbox_max - self.bbox_min).tolist()
        return max(e / (n - 1) for e, n in zip(ext, self.dims))

    @property
    def step_size(self) -> float:
        """Current marching step (world units)."""
        return self.step_ratio * self.voxel_size

    # ---- fields ----
    def raw_sigma(
        self, x: torch.Tensor, corners: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """σ ``[N]`` from the density lattice alone (no mask), world units⁻¹."""
        c, w = self.corners(x) if corners is None else corners
        raw = sparse_trilinear(self.density_table, self.slot(), c, w)
        return F.softplus(raw + self.shift) / self.voxel_final

    def colour(
        self, x: torch.Tensor, d: torch.Tensor, corners: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """rgb ``[N, 3]`` in [0, 1] at points ``x`` ``[N, 3]`` seen along unit directions ``d`` ``[N, 3]``."""
        c, w = self.corners(x) if corners is None else corners
        feat = sparse_trilinear(self.feature_table, self.slot(), c, w)
        inp = torch.cat([feat, direction_encoding(d, self.dir_freqs)], dim=-1)
        with torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision and self.training
        ):
            logits = self.rgbnet(inp)
        return torch.sigmoid(logits.float())

    def density(
        self, x: torch.Tensor, corners: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """σ ``[N]`` (0 outside the box and outside the marching mask)."""
        keep = mask_lookup(self.mask, x, self.bbox_min, self.bbox_max).nonzero()[:, 0]
        sigma = x.new_zeros(x.shape[0])
        if keep.numel():
            sub = None if corners is None else (corners[0][keep], corners[1][keep])
            sigma = sigma.index_put((keep,), self.raw_sigma(x[keep], sub))
        return sigma

    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ ``[N]`` and rgb ``[N, 3]`` (see :class:`Teacher`); the lattice corners are found once."""
        corners = self.corners(x)
        return self.density(x, corners), self.colour(x, d, corners)

    # ---- rendering ----
    def render_rays(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        near: float,
        far: float,
        background: torch.Tensor,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """March ``[R]`` rays on a lattice of step ``step_ratio`` voxels through the mask; rgb ``[R, 3]``."""
        r = origins.shape[0]
        t0, t1 = intersect_aabb(origins, dirs, self.bbox_min, self.bbox_max)
        t0, t1 = t0.clamp(min=near), t1.clamp(max=far)  # the part inside the box and [near, far]
        step = self.step_size
        length = (t1 - t0).clamp(min=0)
        s = int(math.ceil(float(length.max()) / step)) if r else 0
        extra: dict[str, torch.Tensor] = {}
        bg = background.to(origins).reshape(1, 3)
        if s == 0:
            return bg.expand(r, 3).clone(), extra
        flat = lattice_samples_in_mask(
            origins, dirs, t0, t1, step, s, self.mask, self.bbox_min, self.bbox_max
        )
        ray = flat // s
        t = t0[ray] + ((flat % s).to(origins.dtype) + 0.5) * step
        pts = origins[ray] + t[:, None] * dirs[ray]
        corners, cw = self.corners(pts)
        sigma = self.raw_sigma(pts, (corners, cw))
        w, t_end = packed_weights(sigma * step, ray, r)
        sel = (w > self.weight_threshold).detach()
        rgb = self.colour(pts[sel], dirs[ray[sel]], (corners[sel], cw[sel]))
        acc = origins.new_zeros(r, 3).index_add(0, ray[sel], w[sel, None] * rgb)
        if train:
            with torch.no_grad():
                vox = mask_voxel_index(self.mask_dims, pts, self.bbox_min, self.bbox_max)
                self.max_weight.view(-1).scatter_reduce_(0, vox, w.detach(), reduce="amax")
            if target is not None and self.rgbper_weight > 0:
                err = ((rgb - target[ray[sel]]) ** 2).sum(dim=-1)
                extra["rgbper"] = self.rgbper_weight * (w[sel] * err).sum() / r
            if self.entropy_weight > 0:
                p = t_end.clamp(1e-6, 1 - 1e-6)
                extra["entropy"] = self.entropy_weight * -(p * p.log() + (1 - p) * (1 - p).log()).mean()
        return acc + t_end[:, None] * bg, extra

    # ---- training schedule ----
    def param_groups(self, cfg: TeacherConfig) -> list[dict[str, Any]]:
        """Grids at ``lr_grid``, colour MLP at ``lr_mlp``."""
        return [
            # eps ≪ the tiny gradients of a near-empty grid (σ starts at alpha_init), so Adam still moves it
            {"name": "density", "params": [self.density_table], "lr": cfg.lr_grid, "eps": 1e-15},
            {"name": "features", "params": [self.feature_table], "lr": cfg.lr_grid},
            {"name": "rgbnet", "params": list(self.rgbnet.parameters()), "lr": cfg.lr_mlp},
        ]

    def lr_factor(self, step: int, cfg: TeacherConfig) -> float:
        """Exponential decay to ``lr_decay`` over ``steps``."""
        return float(cfg.lr_decay ** (step / max(1, cfg.steps)))

    def before_step(self, step: int, cfg: TeacherConfig) -> bool:
        """Upsample the grids and prune the mask at the configured fractions of the steps."""
        changed = False
        target = sum(1 for f in cfg.upsample_at if step >= int(round(f * cfg.steps)))
        target = min(target, len(cfg.grid_res) - 1)
        while int(self.stage) < target:
            self.stage.fill_(int(self.stage) + 1)
            dims, _ = voxel_grid_dims(
                self.bbox_min.tolist(), self.bbox_max.tolist(), cfg.grid_res[int(self.stage)]
            )
            self.upsample(dims)
            self.prune_by_density(cfg.prune_density_alpha)
            self.compact()
            changed = True
        if any(step == int(round(f * cfg.steps)) for f in cfg.prune_at) and step > 0:
            self.prune_by_weight(cfg.prune_weight)
        if cfg.fit_box_at is not None and step == int(round(cfg.fit_box_at * cfg.steps)) and step > 0:
            res = cfg.grid_res[int(self.stage)]
            fitted = self.fit_box(cfg.fit_box_margin, res, cfg.grid_res[-1], cfg.fit_box_sigma)
            changed = fitted or changed
        return changed

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        """Both lattices as one dense grid ``[1, 1 + C, X, Y, Z]`` (inactive points 0)."""
        table = torch.cat([self.density_table.data[:, None], self.feature_table.data], dim=1)
        grid = table.new_zeros(int(np.prod(self._dims)), table.shape[1])
        grid[self.active] = table
        return grid.t().reshape(1, table.shape[1], *self._dims)

    @torch.no_grad()
    def set_dense(self, grid: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """New parameters from a dense grid ``[1, 1 + C, X, Y, Z]``, stored at the lattice points that are
        corners of mask voxels (or at ``active`` ``[X, Y, Z]`` bool)."""
        self._dims = (int(grid.shape[2]), int(grid.shape[3]), int(grid.shape[4]))
        if active is None:
            active = cells_to_lattice_support(self.mask, self._dims)
        idx = active.reshape(-1).nonzero()[:, 0].to(grid.device)
        table = grid.reshape(grid.shape[1], -1).t().index_select(0, idx)
        self.active = idx
        self.density_table = torch.nn.Parameter(table[:, 0].contiguous())
        self.feature_table = torch.nn.Parameter(table[:, 1:].contiguous())

    @torch.no_grad()
    def upsample(self, dims: tuple[int, int, int]) -> None:
        """Trilinearly resample both lattices to ``dims`` points (new parameters)."""
        self.set_dense(F.interpolate(self.dense(), size=dims, mode="trilinear", align_corners=True))

    @torch.no_grad()
    def compact(self) -> None:
        """Drop the lattice points no mask voxel needs any more (new parameters)."""
        self.set_dense(self.dense())

    @torch.no_grad()
    def fit_box(self, margin: float, res: int, mask_res: int, sigma_threshold: float = 0.0) -> bool:
        """Shrink the box to the mask voxels whose density at the centre exceeds ``sigma_threshold``, grown
        by two voxels and ``margin`` of its size per side and clipped to the old box (the mask carries a
        shell of dilation around the scene, which the threshold leaves out).

        The lattices are resampled (trilinearly) onto about ``res³`` points over the new box, the mask and
        the weight record (nearest, dilated by one voxel) onto about ``mask_res³`` voxels; the fields inside
        the new box are unchanged up to the resampling. False (and nothing changes) when no voxel qualifies.
        """
        old_lo, old_hi = self.bbox_min.clone(), self.bbox_max.clone()
        lo0, hi0 = old_lo.cpu().double(), old_hi.cpu().double()
        vox = (hi0 - lo0) / torch.tensor(self.mask_dims, dtype=torch.float64)
        idx = self.mask.nonzero().cpu().double()
        if sigma_threshold > 0 and idx.shape[0] > 0:
            centres = (lo0 + (idx + 0.5) * vox).float().to(old_lo.device)
            sigma = torch.cat([self.raw_sigma(c) for c in centres.split(1 << 20)])
            idx = idx[(sigma > sigma_threshold).cpu()]
        if idx.shape[0] == 0:
            return False
        lo = lo0 + (idx.min(dim=0).values - 2.0) * vox
        hi = lo0 + (idx.max(dim=0).values + 3.0) * vox
        pad = margin * (hi - lo)
        lo, hi = torch.maximum(lo - pad, lo0), torch.minimum(hi + pad, hi0)
        mask_dims, _ = voxel_grid_dims(lo.tolist(), hi.tolist(), mask_res)
        dims, _ = voxel_grid_dims(lo.tolist(), hi.tolist(), res)
        dev = old_lo.device
        # mask and weight record: nearest old voxel of each new voxel centre, on the dilated old grids
        centres = voxel_centres(lo.tolist(), hi.tolist(), mask_dims).to(dev)
        vi = mask_voxel_index(self.mask_dims, centres, old_lo, old_hi)
        mask = dilate(self.mask, 1).reshape(-1)[vi].reshape(mask_dims)
        mw = F.max_pool3d(self.max_weight[None, None], 3, stride=1, padding=1)[0, 0]
        max_weight = mw.reshape(-1)[vi].reshape(mask_dims)
        # lattices: trilinear reads of the old sparse lattices at the new lattice points
        slot = self.slot()
        rows = []
        for pts in lattice_points(lo.tolist(), hi.tolist(), dims).to(dev).split(1 << 18):
            c, w = lattice_corners(pts, old_lo, old_hi, self._dims)
            dens = sparse_trilinear(self.density_table.data, slot, c, w)
            feat = sparse_trilinear(self.feature_table.data, slot, c, w)
            rows.append(torch.cat([dens[:, None], feat], dim=1))
        table = torch.cat(rows)
        grid = table.t().reshape(1, table.shape[1], *dims)
        self.bbox_min.copy_(lo.to(self.bbox_min))
        self.bbox_max.copy_(hi.to(self.bbox_max))
        self.mask_dims = (int(mask_dims[0]), int(mask_dims[1]), int(mask_dims[2]))
        self.mask = mask.contiguous()
        self.max_weight = max_weight.contiguous()
        self.set_dense(grid)
        return True

    @property
    def active_fraction(self) -> float:
        """Share of the lattice points that hold values."""
        return float(self.active.shape[0]) / float(np.prod(self._dims))

    @torch.no_grad()
    def prune_by_density(self, alpha_threshold: float, dilation: int = 2) -> None:
        """Drop mask voxels whose neighbourhood has opacity per final step below ``alpha_threshold``."""
        centres = voxel_centres(self.bbox_min.tolist(), self.bbox_max.tolist(), self.mask_dims)
        centres = centres.to(self.bbox_min.device)
        sig = torch.cat([self.raw_sigma(c) for c in centres.split(1 << 20)])
        alpha = 1.0 - torch.exp(-sig * self.step_ratio * self.voxel_final)
        solid = (alpha > alpha_threshold).reshape(self.mask_dims)
        self._narrow_mask(dilate(solid, dilation))

    @torch.no_grad()
    def _narrow_mask(self, keep: torch.Tensor) -> None:
        """``mask &= keep``, unless that would leave no voxel (a teacher that has not learnt the scene yet,
        e.g. a few steps before the first pruning): an empty lattice could not train or render."""
        narrowed = self.mask & keep
        if bool(narrowed.any()):
            self.mask.copy_(narrowed)

    @torch.no_grad()
    def prune_by_weight(self, weight_threshold: float, dilation: int = 1) -> None:
        """Keep only mask voxels (dilated) some training ray weighted by at least ``weight_threshold``."""
        if bool((self.max_weight > 0).any()):
            self._narrow_mask(dilate(self.max_weight >= weight_threshold, dilation))
        self.max_weight.zero_()

    @torch.no_grad()
    def visibility(self, x: torch.Tensor) -> torch.Tensor | None:
        """``[N]``: the largest rendering weight a training ray gave near each point ``x [N, 3]`` (the mask
        voxel and its 26 neighbours, since the last weight pruning), or None when nothing was recorded."""
        if not bool((self.max_weight > 0).any()):
            return None
        mw = F.max_pool3d(self.max_weight[None, None], 3, stride=1, padding=1)[0, 0]
        inside = ((x >= self.bbox_min) & (x <= self.bbox_max)).all(dim=-1)
        vox = mask_voxel_index(self.mask_dims, x, self.bbox_min, self.bbox_max)
        return torch.where(inside, mw.reshape(-1)[vox], torch.zeros_like(x[:, 0]))

    # ---- persistence ----
    def arch(self) -> dict[str, Any]:
        """Constructor arguments with the current grid shape."""
        return {
            "bbox_min": self.bbox_min.tolist(),
            "bbox_max": self.bbox_max.tolist(),
            "dims": list(self.dims),
            "mask_dims": list(self.mask_dims),
            "voxel_final": self.voxel_final,
            "feature_channels": self.feature_channels,
            "mlp_width": self.mlp_width,
            "dir_freqs": self.dir_freqs,
            "step_ratio": self.step_ratio,
            "alpha_init": self.alpha_init,
            "weight_threshold": self.weight_threshold,
            "active_count": int(self.active.shape[0]),
        }

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> GridTeacher:
        """Inverse of :meth:`arch`."""
        a = dict(arch)
        return cls(
            a.pop("bbox_min"),
            a.pop("bbox_max"),
            tuple(a.pop("dims")),
            tuple(a.pop("mask_dims")),
            a.pop("voxel_final"),
            **a,
        )

    @classmethod
    def for_box(cls, bbox_min: Any, bbox_max: Any, cfg: TeacherConfig) -> GridTeacher:
        """A fresh teacher at the first resolution of ``cfg.grid_res`` (mask at the last one)."""
        dims, _ = voxel_grid_dims(bbox_min, bbox_max, cfg.grid_res[0])
        mask_dims, v_final = voxel_grid_dims(bbox_min, bbox_max, cfg.grid_res[-1])
        return cls(
            bbox_min,
            bbox_max,
            dims,
            mask_dims,
            v_final,
            feature_channels=cfg.feature_channels,
            mlp_width=cfg.mlp_width,
            dir_freqs=cfg.dir_freqs,
            step_ratio=cfg.step_ratio,
            alpha_init=cfg.alpha_init,
            weight_threshold=cfg.weight_threshold,
            seed=cfg.seed,
        )

    @torch.no_grad()
    def carve_visual_hull(self, dataset: Any, cfg: TeacherConfig) -> float:
        """Start the mask from the visual hull of the dataset's alpha masks; returns the kept fraction."""
        alphas = np.asarray(dataset.alphas)
        if alphas.size == 0 or float(alphas.min()) > 0.999:
            return 1.0  # no coverage information (e.g. photos without alpha)
        hdims, hv = voxel_grid_dims(self.bbox_min.tolist(), self.bbox_max.tolist(), cfg.hull_res)
        centres = voxel_centres(self.bbox_min.tolist(), self.bbox_max.tolist(), hdims)
        hull = dataset_hull(dataset, centres, cfg.hull_alpha, hv)
        hull = dilate(hull.reshape(hdims), 1)
        up = F.interpolate(hull[None, None].float(), size=self.mask_dims, mode="nearest")[0, 0] > 0
        self.mask.copy_(up.to(self.mask.device))
        self.compact()
        return float(self.mask.float().mean())
