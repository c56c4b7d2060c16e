"""The fast teacher: DVGO-style dense voxel grids of density and features with a small colour MLP.

σ(x) = softplus(D(x) + shift) / v_final, with D a trilinearly interpolated density grid and v_final the voxel
size of the finest grid; rgb(x, d) = sigmoid(MLP(F(x), γ(d))), with F a 12-channel feature grid. Training
runs coarse to fine (the grids are upsampled at fixed fractions of the steps) and marches only through a
boolean mask that starts as the visual hull of the training alpha masks and is pruned by density (at each
upsampling) and by the largest rendering weight any training ray gave a voxel (which removes the hidden
interior); the colour MLP is evaluated only where the sample weight exceeds a threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.teachers.base import Teacher
from trainer.teachers.config import TeacherConfig
from trainer.teachers.volume import composite_weights, ray_interval


def direction_encoding(d: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """γ(d) = [d, sin(2⁰d), cos(2⁰d), …, sin(2^(L−1)d), cos(2^(L−1)d)]: ``[N, 3]`` → ``[N, 3 + 6L]``."""
    out = [d]
    for k in range(num_freqs):
        out += [torch.sin(d * 2.0**k), torch.cos(d * 2.0**k)]
    return torch.cat(out, dim=-1)


def voxel_grid_dims(bbox_min: Any, bbox_max: Any, res: int) -> tuple[tuple[int, int, int], float]:
    """Lattice of about ``res³`` cubic voxels over the box: (dims per axis, voxel size)."""
    ext = np.asarray(bbox_max, dtype=np.float64) - np.asarray(bbox_min, dtype=np.float64)
    v = float((np.prod(ext) / res**3) ** (1.0 / 3.0))
    dims = tuple(max(2, int(round(e / v))) for e in ext)
    return (dims[0], dims[1], dims[2]), v


def normalized_coords(x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor) -> torch.Tensor:
    """World points ``[N, 3]`` → ``grid_sample`` coordinates ``[1, 1, 1, N, 3]`` for a grid stored XYZ."""
    u = (x - bbox_min) / (bbox_max - bbox_min) * 2.0 - 1.0
    return u.flip(-1).reshape(1, 1, 1, -1, 3)


def trilinear(
    grid: torch.Tensor, x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """Trilinear interpolation of ``grid`` ``[1, C, X, Y, Z]`` (corners on the box's) at ``x`` ``[N, 3]``.

    Returns:
        ``[N, C]``.
    """
    if x.shape[0] == 0:
        return x.new_zeros(0, grid.shape[1])
    out = F.grid_sample(grid, normalized_coords(x, bbox_min, bbox_max), mode="bilinear", align_corners=True)
    return out.reshape(grid.shape[1], -1).t()


def mask_lookup(
    mask: torch.Tensor, x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """Nearest-voxel lookup of a bool grid ``[X, Y, Z]`` at ``x`` ``[N, 3]``; False outside."""
    dims = torch.tensor(mask.shape, device=x.device)
    f = (x - bbox_min) / (bbox_max - bbox_min) * dims.to(x.dtype)
    inside = ((f >= 0) & (f <= dims.to(x.dtype))).all(dim=-1)
    i = torch.minimum(f.floor().long().clamp(min=0), dims - 1)
    flat = (i[:, 0] * mask.shape[1] + i[:, 1]) * mask.shape[2] + i[:, 2]
    return mask.reshape(-1)[flat] & inside


def mask_voxel_index(
    mask_shape: tuple[int, ...], x: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> torch.Tensor:
    """Flat index ``[N]`` of the mask voxel containing each point ``[N, 3]`` (clamped onto the border)."""
    dims = torch.tensor(mask_shape, device=x.device)
    f = (x - bbox_min) / (bbox_max - bbox_min) * dims.to(x.dtype)
    i = torch.minimum(f.floor().long().clamp(min=0), dims - 1)
    return (i[:, 0] * mask_shape[1] + i[:, 1]) * mask_shape[2] + i[:, 2]


def voxel_centres(bbox_min: Any, bbox_max: Any, dims: tuple[int, int, int]) -> torch.Tensor:
    """Centres ``[X·Y·Z, 3]`` (C order) of the voxels of a ``dims`` grid spanning the box."""
    lo = torch.as_tensor(bbox_min, dtype=torch.float32)
    hi = torch.as_tensor(bbox_max, dtype=torch.float32)
    axes = [
        lo[a] + (torch.arange(dims[a], dtype=torch.float32) + 0.5) * (hi[a] - lo[a]) / dims[a]
        for a in range(3)
    ]
    g = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(g, dim=-1).reshape(-1, 3)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a bool grid ``[X, Y, Z]`` by a cube of half-side ``radius`` voxels."""
    if radius <= 0:
        return mask
    m = mask[None, None].float()
    return F.max_pool3d(m, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def visual_hull(
    centres: torch.Tensor,
    alphas: np.ndarray,
    c2w: np.ndarray,
    focal: float,
    cx: float,
    cy: float,
    alpha_threshold: float,
    voxel_size: float,
    min_seen: float = 0.0,
) -> torch.Tensor:
    """Space carving: a point survives unless some view sees it and has alpha below the threshold there.

    With ``min_seen`` > 0 a point must also project into at least that fraction of the views (points that
    few cameras see are not constrained by carving, e.g. the corners of a search box).

    Each alpha image is first max-pooled over the footprint of a voxel so thin parts are never carved.

    Args:
        centres: ``[V, 3]`` world points (voxel centres).
        alphas: ``[N, H, W]`` coverage of the training views.
        c2w: ``[N, 4, 4]`` camera-to-world (Blender/OpenGL).
        focal, cx, cy: intrinsics in pixels; voxel_size: the voxels' side (world units).
        min_seen: fraction of the views a surviving point must project into.

    Returns:
        ``[V]`` bool, True inside the hull.
    """
    n, h, w = alphas.shape
    alive = torch.arange(centres.shape[0])  # indices of the points not carved yet
    pts = centres
    seen_count = torch.zeros(centres.shape[0], dtype=torch.int32)
    for i in range(n):
        pose = torch.as_tensor(c2w[i], dtype=torch.float32)
        cam = (pts - pose[:3, 3]) @ pose[:3, :3]  # world → camera coordinates
        depth = -cam[:, 2]
        front = depth > 1e-6
        z = depth.clamp(min=1e-6)
        u = cx + focal * cam[:, 0] / z
        v = cy - focal * cam[:, 1] / z
        seen = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        dmin = float(depth[front].min()) if bool(front.any()) else 1.0
        r = int(math.ceil(focal * voxel_size * 0.87 / max(dmin, 1e-3)))
        a = torch.as_tensor(alphas[i], dtype=torch.float32)[None, None]
        a = F.max_pool2d(a, 2 * r + 1, stride=1, padding=r)[0, 0]
        pu = u.clamp(0, w - 1).long()
        pv = v.clamp(0, h - 1).long()
        survive = ~(seen & (a[pv, pu] < alpha_threshold))
        seen_count[alive] += seen.to(torch.int32)
        alive, pts = alive[survive], pts[survive]
    keep = torch.zeros(centres.shape[0], dtype=torch.bool)
    keep[alive] = True
    if min_seen > 0:
        keep &= seen_count >= min_seen * n
    return keep


class GridTeacher(Teacher):
    """Density grid ``[1, 1, X, Y, Z]``, feature grid ``[1, C, X, Y, Z]``, colour MLP and a marching mask."""

    kind = "grid"
    mask: torch.Tensor
    max_weight: torch.Tensor
    stage: torch.Tensor

    def __init__(
        self,
        bbox_min: Any,
        bbox_max: Any,
        dims: tuple[int, int, int],
        mask_dims: tuple[int, int, int],
        voxel_final: float,
        *,
        feature_channels: int = 12,
        mlp_width: int = 64,
        dir_freqs: int = 4,
        step_ratio: float = 0.5,
        alpha_init: float = 1e-4,
        weight_threshold: float = 1e-4,
        stage: int = 0,
        seed: int = 0,
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
        self.density_grid = torch.nn.Parameter(torch.zeros(1, 1, *dims))
        self.feature_grid = torch.nn.Parameter(torch.zeros(1, feature_channels, *dims))
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

    def configure_training(self, cfg: TeacherConfig) -> None:
        """Per-sample colour and transmittance-entropy loss weights from ``cfg``."""
        self.rgbper_weight = cfg.rgbper_weight
        self.entropy_weight = cfg.entropy_weight

    # ---- geometry ----
    @property
    def dims(self) -> tuple[int, int, int]:
        """Current lattice size (X, Y, Z) of the grids."""
        s = self.density_grid.shape[2:]
        return (int(s[0]), int(s[1]), int(s[2]))

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
    def raw_sigma(self, x: torch.Tensor) -> torch.Tensor:
        """σ ``[N]`` from the density grid alone (no mask), world units⁻¹."""
        raw = trilinear(self.density_grid, x, self.bbox_min, self.bbox_max)[:, 0]
        return F.softplus(raw + self.shift) / self.voxel_final

    def colour(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """rgb ``[N, 3]`` in [0, 1] at points ``x`` ``[N, 3]`` seen along unit directions ``d`` ``[N, 3]``."""
        feat = trilinear(self.feature_grid, x, self.bbox_min, self.bbox_max)
        return torch.sigmoid(self.rgbnet(torch.cat([feat, direction_encoding(d, self.dir_freqs)], dim=-1)))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """σ ``[N]`` (0 outside the box and outside the marching mask)."""
        keep = mask_lookup(self.mask, x, self.bbox_min, self.bbox_max)
        sigma = x.new_zeros(x.shape[0])
        if bool(keep.any()):
            sigma = sigma.index_put((keep.nonzero()[:, 0],), self.raw_sigma(x[keep]))
        return sigma

    def query(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ ``[N]`` and rgb ``[N, 3]`` (see :class:`Teacher`)."""
        return self.density(x), self.colour(x, d)

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
        t0, t1 = ray_interval(origins, dirs, self.bbox_min, self.bbox_max, near, far)
        step = self.step_size
        length = (t1 - t0).clamp(min=0)
        s = int(math.ceil(float(length.max()) / step)) if r else 0
        extra: dict[str, torch.Tensor] = {}
        bg = background.to(origins).reshape(1, 3)
        if s == 0:
            return bg.expand(r, 3).clone(), extra
        t = t0[:, None] + (torch.arange(s, device=origins.device, dtype=origins.dtype) + 0.5) * step
        valid = t < t1[:, None]
        flat = valid.reshape(-1).nonzero()[:, 0]
        ray = flat // s
        pts = origins[ray] + t.reshape(-1)[flat, None] * dirs[ray]
        keep = mask_lookup(self.mask, pts, self.bbox_min, self.bbox_max)
        flat, ray, pts = flat[keep], ray[keep], pts[keep]
        sigma = self.raw_sigma(pts)
        od = origins.new_zeros(r * s).index_put((flat,), sigma * step).reshape(r, s)
        weights, t_end = composite_weights(od)
        w = weights.reshape(-1)[flat]
        sel = (w > self.weight_threshold).detach()
        rgb = self.colour(pts[sel], dirs[ray[sel]])
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
            {"name": "density", "params": [self.density_grid], "lr": cfg.lr_grid, "eps": 1e-15},
            {"name": "features", "params": [self.feature_grid], "lr": cfg.lr_grid},
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
            changed = True
        if any(step == int(round(f * cfg.steps)) for f in cfg.prune_at) and step > 0:
            self.prune_by_weight(cfg.prune_weight)
        return changed

    @torch.no_grad()
    def upsample(self, dims: tuple[int, int, int]) -> None:
        """Trilinearly resample both grids to a ``dims`` lattice (new parameters)."""
        self.density_grid = torch.nn.Parameter(
            F.interpolate(self.density_grid.data, size=dims, mode="trilinear", align_corners=True)
        )
        self.feature_grid = torch.nn.Parameter(
            F.interpolate(self.feature_grid.data, size=dims, mode="trilinear", align_corners=True)
        )

    @torch.no_grad()
    def prune_by_density(self, alpha_threshold: float, dilation: int = 2) -> None:
        """Drop mask voxels whose neighbourhood has opacity per final step below ``alpha_threshold``."""
        centres = voxel_centres(self.bbox_min.tolist(), self.bbox_max.tolist(), self.mask_dims)
        centres = centres.to(self.bbox_min.device)
        sig = torch.cat([self.raw_sigma(c) for c in centres.split(1 << 20)])
        alpha = 1.0 - torch.exp(-sig * self.step_ratio * self.voxel_final)
        solid = (alpha > alpha_threshold).reshape(self.mask_dims)
        self.mask &= dilate(solid, dilation)

    @torch.no_grad()
    def prune_by_weight(self, weight_threshold: float, dilation: int = 1) -> None:
        """Keep only mask voxels (dilated) some training ray weighted by at least ``weight_threshold``."""
        if bool((self.max_weight > 0).any()):
            self.mask &= dilate(self.max_weight >= weight_threshold, dilation)
        self.max_weight.zero_()

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
        cx, cy = dataset.principal_point
        hull = visual_hull(
            centres, alphas, np.asarray(dataset.c2w), float(dataset.focal), cx, cy, cfg.hull_alpha, hv
        )
        hull = dilate(hull.reshape(hdims), 1)
        up = F.interpolate(hull[None, None].float(), size=self.mask_dims, mode="nearest")[0, 0] > 0
        self.mask.copy_(up.to(self.mask.device))
        return float(self.mask.float().mean())


def camera_search_box(
    c2w: np.ndarray, focal: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """A cube the cameras look into: centred on the point nearest to every optical axis (least squares), with
    half-side 1.2 × the median camera distance × tan(half the field of view)."""
    o = c2w[:, :3, 3].astype(np.float64)
    a = -c2w[:, :3, 2].astype(np.float64)  # optical axes (cameras look down −Z)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    proj = np.eye(3)[None] - a[:, :, None] * a[:, None, :]
    lhs = proj.sum(axis=0)
    rhs = np.einsum("nij,nj->i", proj, o)
    centre = np.linalg.lstsq(lhs, rhs, rcond=None)[0] if len(o) > 1 else o[0] + 4.0 * a[0]
    dist = float(np.median(np.linalg.norm(o - centre, axis=1)))
    half = 1.2 * dist * 0.5 * max(width, height) / focal
    return (centre - half).astype(np.float32), (centre + half).astype(np.float32)


def estimate_bbox_from_views(
    dataset: Any, cfg: TeacherConfig, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Box for a dataset without one: the visual hull of its alpha masks inside :func:`camera_search_box`,
    grown by ``margin`` of its size on each side (the search box itself when the images have no alpha)."""
    c2w = np.asarray(dataset.c2w)
    lo, hi = camera_search_box(c2w, float(dataset.focal), int(dataset.width), int(dataset.height))
    alphas = np.asarray(dataset.alphas)
    if alphas.size == 0 or float(alphas.min()) > 0.999:
        return lo, hi
    dims, v = voxel_grid_dims(lo, hi, cfg.hull_res)
    centres = voxel_centres(lo, hi, dims)
    cx, cy = dataset.principal_point
    hull = visual_hull(centres, alphas, c2w, float(dataset.focal), cx, cy, cfg.hull_alpha, v, min_seen=0.5)
    if not bool(hull.any()):
        return lo, hi
    pts = centres[hull].numpy()
    pmin, pmax = pts.min(axis=0) - v, pts.max(axis=0) + v
    pad = margin * (pmax - pmin)
    return (pmin - pad).astype(np.float32), (pmax + pad).astype(np.float32)
