"""Stage 1: teachers (``grid``, the fast default, and the paper's ``nerf``), resumable training, files.

>>> cfg = TeacherConfig(steps=2000)                                    # doctest: +SKIP
>>> teacher = make_teacher(cfg, dataset, "cpu")                         # doctest: +SKIP
>>> teacher = train_teacher(teacher, dataset, cfg, ckpt_path=Path("w/t.ckpt"))  # doctest: +SKIP
>>> sigma, rgb = teacher.query(x, d)                                    # doctest: +SKIP

Files are safetensors with a JSON header entry ``kilonerf_teacher`` (never pickle). A training checkpoint is
a teacher file plus the optimiser state, the sampler's RNG state and the step;
:func:`load_teacher` reads both.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from renderer.atomic import atomic_write_bytes
from renderer.safe_json import parse_json
from trainer.data.cameras import FrameRays
from trainer.errors import PipelineError, check_finite_loss
from trainer.files import writing
from trainer.metrics import psnr_from_mse
from trainer.optim import adam
from trainer.settings import show
from trainer.teachers.base import Teacher
from trainer.teachers.config import TeacherConfig
from trainer.teachers.grid import GridTeacher
from trainer.teachers.hull import estimate_bbox_from_views
from trainer.teachers.nerf import NerfTeacher

__all__ = [
    "GridTeacher",
    "NerfTeacher",
    "Teacher",
    "TeacherConfig",
    "TeacherFormatError",
    "TeacherPixelSampler",
    "load_teacher",
    "make_teacher",
    "render_teacher",
    "save_teacher",
    "teacher_psnr",
    "train_teacher",
]

_META_KEY = "kilonerf_teacher"
_KINDS: dict[str, type[Teacher]] = {"grid": GridTeacher, "nerf": NerfTeacher}
OnStep = Callable[[int, int, float, float | None], None]


class TeacherFormatError(PipelineError):
    """A missing or malformed teacher file; the message is one line naming the file and the problem
    (``TeacherFormatError(path, problem)``, or one whole message)."""

    def __init__(self, path: str | os.PathLike[str], problem: str | None = None) -> None:
        super().__init__(str(path) if problem is None else f"{path}: {problem}")


# ---- construction ----
def teacher_bbox(dataset: Any, cfg: TeacherConfig) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's box: the dataset's own if it has one, else the visual hull of the views with a margin
    (searched inside the dataset's box when that is only a loose bound, ``Dataset.bbox_loose``)."""
    loose = bool(getattr(dataset, "bbox_loose", False))
    if (
        getattr(dataset, "bbox_min", None) is not None
        and getattr(dataset, "bbox_max", None) is not None
        and not loose
    ):
        return np.asarray(dataset.bbox_min, dtype=np.float32), np.asarray(dataset.bbox_max, dtype=np.float32)
    return estimate_bbox_from_views(dataset, cfg)


def make_teacher(cfg: TeacherConfig, dataset: Any, device: str | torch.device = "cpu") -> Teacher:
    """A fresh teacher of ``cfg.kind`` over the dataset's box (a grid teacher's mask starts as the hull)."""
    cfg.validate()
    lo, hi = teacher_bbox(dataset, cfg)
    teacher: Teacher
    if cfg.kind == "grid":
        grid = GridTeacher.for_box(lo, hi, cfg)
        grid.carve_visual_hull(dataset, cfg)
        teacher = grid
    else:
        teacher = NerfTeacher.for_box(lo, hi, cfg)
    return teacher.to(device)


# ---- files ----
def _model_tensors(teacher: Teacher) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.detach().contiguous().cpu() for k, v in teacher.state_dict().items()}


def save_teacher(teacher: Teacher, path: str | os.PathLike[str]) -> None:
    """Write the teacher's weights and shape to a safetensors file, atomically (a full disk: `PipelineError`
    ``no space left writing PATH``)."""
    meta = {"kind": teacher.kind, "arch": teacher.arch(), "version": 1}
    data = st_save(_model_tensors(teacher), metadata={_META_KEY: json.dumps(meta)})
    with writing(path):
        atomic_write_bytes(path, data)


_MAX_LATTICE_POINTS = 2**31
"""Most points a grid teacher's lattice may have (its slot table is one int64 per point)."""


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    p = Path(path)
    if not p.is_file():
        raise TeacherFormatError(p, "teacher file not found" if not p.exists() else "not a file")
    try:
        data = p.read_bytes()
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = parse_json(data[8 : 8 + header_len], str(p), error=TeacherFormatError, what="header")
        text = header.get("__metadata__", {})[_META_KEY]
    except (SafetensorError, OSError, KeyError, TypeError, AttributeError) as e:
        raise TeacherFormatError(
            p, f"not a teacher file ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]})"
        ) from None
    meta = parse_json(text, str(p), error=TeacherFormatError, what=f"metadata {_META_KEY!r}")
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), dict):
        raise TeacherFormatError(p, f"metadata {_META_KEY!r} is not an object with an arch object")
    if meta.get("kind") not in _KINDS:
        raise TeacherFormatError(p, f"unknown teacher kind {meta.get('kind')!r}")
    return meta, tensors


def _build(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Any, device: Any) -> Teacher:
    """The teacher a file describes. Its shape is first built on the meta device (no memory) and held to
    the stored tensors, so a header cannot ask for more memory than the file holds."""
    cls = _KINDS[meta["kind"]]
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    arch = meta["arch"]
    dims = arch.get("dims", [2, 2, 2])
    if (
        not isinstance(dims, list)
        or len(dims) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 2**16 for v in dims)
        or math.prod(dims) > _MAX_LATTICE_POINTS
    ):
        raise TeacherFormatError(path, f"arch dims {show(dims)} is not a lattice of 3 sizes in [2, 65536]")
    try:
        with torch.device("meta"):
            shape = cls.from_arch(arch)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in shape.state_dict().items()}
        stored = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
        if expected != stored:
            diff = sorted(set(expected.items()) ^ set(stored.items()))
            raise TeacherFormatError(
                path, f"weights do not match the stored shape (first difference: {diff[0][0]})"
            )
        for k, v in state.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise TeacherFormatError(path, f"weights {k} hold NaN or infinite values")
        lo, hi = state.get("bbox_min"), state.get("bbox_max")
        if lo is not None and hi is not None and not bool((lo < hi).all()):
            raise TeacherFormatError(path, "bbox_min must be < bbox_max on every axis")
        teacher = cls.from_arch(arch)
        teacher.load_state_dict(state)
    except TeacherFormatError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError, ZeroDivisionError) as e:
        raise TeacherFormatError(
            path, f"not a usable teacher ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]})"
        ) from None
    return teacher.to(device)


def load_teacher(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Teacher:
    """Read a teacher from :func:`save_teacher` or a training checkpoint; TeacherFormatError if malformed."""
    meta, tensors = _read(path)
    return _build(meta, tensors, path, device)


def _save_checkpoint(
    path: Path,
    teacher: Teacher,
    opt: torch.optim.Optimizer,
    step: int,
    gen: torch.Generator,
    cfg: TeacherConfig,
) -> None:
    """Atomically write teacher + optimiser state + sampler RNG + step (a full disk: `PipelineError`)."""
    sd = opt.state_dict()
    tensors = _model_tensors(teacher)
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(float(val))
            tensors[f"optim.{idx}.{key}"] = t.detach().contiguous().cpu()
    tensors["rng"] = gen.get_state()
    meta = {
        "kind": teacher.kind,
        "arch": teacher.arch(),
        "version": 1,
        "step": step,
        "total": cfg.total_steps,
        "done": step >= cfg.total_steps,
        "param_groups": sd["param_groups"],
        "config": cfg.to_dict(),
    }
    data = st_save(tensors, metadata={_META_KEY: json.dumps(meta)})
    with writing(path):
        atomic_write_bytes(path, data)


def _optimizer(
    teacher: Teacher, cfg: TeacherConfig, old: torch.optim.Optimizer | None = None
) -> torch.optim.Adam:
    """Adam over the teacher's groups (base lr kept as ``base_lr``), keeping surviving params' state."""
    groups = teacher.param_groups(cfg)
    for g in groups:
        g["base_lr"] = g["lr"]
    betas = (0.9, 0.99) if cfg.kind == "grid" else (0.9, 0.999)
    opt = adam(groups, betas=betas)  # the fused kernel is ~5x faster on big grids (CPU and CUDA)
    if old is not None:
        for g in opt.param_groups:
            for p in g["params"]:
                if p in old.state:
                    opt.state[p] = old.state[p]
    return opt


def _load_optimizer_state(
    opt: torch.optim.Optimizer, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---- training ----
class TeacherPixelSampler:
    """All pixels of a dataset as rays, sampled at random (rays built on the fly, so memory is the images).

    Draws each ray's image, row and column as three ``randint`` calls on a CPU generator (so ``crop`` can
    narrow the rows and columns; frames of their own sizes draw within them, `FrameRays.draw`); the rays come
    from each frame's intrinsics (`trainer.data.cameras.FrameRays`). Fine-tuning's sampler
    (`trainer.finetune.FinetunePixelSampler`) draws differently.
    """

    def __init__(self, dataset: Any, device: str | torch.device) -> None:
        from trainer.data import default_near_far

        self.images = torch.as_tensor(np.asarray(dataset.images, dtype=np.float32)).to(device)
        self.frames = FrameRays(dataset, device)
        self.c2w = self.frames.c2w
        self.n, self.h, self.w = self.images.shape[:3]
        self.focal = float(dataset.focal)
        self.cx, self.cy = dataset.principal_point
        self.near, self.far = default_near_far(dataset)
        self.background = torch.as_tensor(np.asarray(dataset.background, dtype=np.float32)).to(device)
        self.device = device

    def sample(
        self, batch: int, gen: torch.Generator, crop: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch`` random rays: origins ``[B, 3]``, dirs ``[B, 3]``, target rgb ``[B, 3]``.

        ``crop < 1`` draws pixels from the centred ``crop``-fraction of each image only.
        """
        img, py, px = self.frames.draw(batch, gen, crop)
        img, py, px = img.to(self.device), py.to(self.device), px.to(self.device)
        o, d = self.frames.rays(img, px, py)
        return o, d, self.images[img, py, px]


def train_teacher(
    teacher: Teacher,
    dataset: Any,
    cfg: TeacherConfig,
    *,
    ckpt_path: Path,
    device: str | torch.device = "cpu",
    on_step: OnStep | None = None,
) -> Teacher:
    """Train ``teacher`` on random rays of ``dataset`` for ``cfg.total_steps`` steps, resumably.

    If ``ckpt_path`` exists training resumes from it exactly where it stopped (weights, grid shapes, masks,
    optimiser state, sampler RNG and step); a finished checkpoint returns at once. A checkpoint is written
    atomically every ``cfg.checkpoint_every_s`` seconds, at the end, and on KeyboardInterrupt (re-raised).
    ``on_step(step, total, loss, psnr)`` is called every ``cfg.log_every`` steps and at the last one.

    Returns:
        the trained teacher (a new object when resumed from a checkpoint).
    """
    cfg.validate()
    ckpt_path = Path(ckpt_path)
    total = cfg.total_steps
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    opt: torch.optim.Adam
    if ckpt_path.exists():
        meta, tensors = _read(ckpt_path)
        teacher = _build(meta, tensors, ckpt_path, device)
        opt = _optimizer(teacher, cfg)
        if "param_groups" in meta:
            try:
                _load_optimizer_state(opt, meta, tensors)
                gen.set_state(tensors["rng"])
            except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
                raise TeacherFormatError(
                    ckpt_path,
                    f"optimiser state or random state unusable ({type(e).__name__}: "
                    f"{(str(e).splitlines() or [''])[0][:80]}); delete it to restart the teacher",
                ) from None
            stored = meta.get("step")
            if isinstance(stored, bool) or not isinstance(stored, int) or not 0 <= stored <= total:
                raise TeacherFormatError(
                    ckpt_path,
                    f"step must be an integer in [0, {total}], got {show(stored)}; delete it to "
                    "restart the teacher",
                )
            step = stored
    else:
        teacher = teacher.to(device)
        opt = _optimizer(teacher, cfg)
    teacher.train()
    teacher.configure_training(cfg)
    rays = TeacherPixelSampler(dataset, device)
    last_save = time.monotonic()
    loss_v = float("nan")
    try:
        while step < total:
            if teacher.before_step(step, cfg):
                opt = _optimizer(teacher, cfg, opt)
            factor = teacher.lr_factor(step, cfg)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            crop = cfg.nerf_precrop_frac if (cfg.kind == "nerf" and step < cfg.nerf_precrop_steps) else 1.0
            o, d, target = rays.sample(cfg.batch, gen, crop)
            rgb, extra = teacher.render_rays(
                o, d, rays.near, rays.far, rays.background, train=True, generator=gen, target=target
            )
            mse = torch.mean((rgb - target) ** 2)
            loss = mse + sum(extra.values(), torch.zeros((), device=mse.device))
            opt.zero_grad(set_to_none=False)  # in place: see lattice._WeightedGather
            loss.backward()
            check_finite_loss(
                "teacher",
                step + 1,
                float(loss.detach()),
                "teacher.lr_grid" if cfg.kind == "grid" else "teacher.nerf_lr",
            )
            teacher.after_backward(step)
            opt.step()
            step += 1
            loss_v = float(loss.detach())
            if on_step is not None and (step % max(1, cfg.log_every) == 0 or step == total):
                on_step(step, total, loss_v, psnr_from_mse(float(mse.detach())))
            if time.monotonic() - last_save >= cfg.checkpoint_every_s and step < total:
                _save_checkpoint(ckpt_path, teacher, opt, step, gen, cfg)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        _save_checkpoint(ckpt_path, teacher, opt, step, gen, cfg)
        raise
    _save_checkpoint(ckpt_path, teacher, opt, step, gen, cfg)
    teacher.eval()
    return teacher


# ---- rendering and evaluation ----
@torch.no_grad()
def render_teacher(
    teacher: Teacher,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: float,
    far: float,
    background: Any,
    cfg: TeacherConfig,
    out_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Render rays ``[R, 3]`` (unit directions) → rgb ``[R, 3]`` on ``out_device``, in chunks of
    ``cfg.render_chunk``."""
    dev = teacher.bbox_min.device
    bg = torch.as_tensor(np.asarray(background, dtype=np.float32), device=dev)
    out = []
    for i in range(0, origins.shape[0], cfg.render_chunk):
        o = origins[i : i + cfg.render_chunk].to(dev, torch.float32)
        d = dirs[i : i + cfg.render_chunk].to(dev, torch.float32)
        out.append(teacher.render_rays(o, d, near, far, bg, train=False)[0].clamp(0, 1).to(out_device))
    return torch.cat(out) if out else torch.zeros(0, 3, device=out_device)


@torch.no_grad()
def teacher_psnr(
    teacher: Teacher, dataset: Any, cfg: TeacherConfig, views: list[int] | None = None
) -> tuple[float, list[float]]:
    """Mean PSNR (dB) of the teacher's renders of ``views`` (default all) of ``dataset``, and each view's."""
    from trainer.data import default_near_far

    near, far = default_near_far(dataset)
    frames = FrameRays(dataset)
    scores = []
    for i in views if views is not None else range(len(dataset.images)):
        o, d = frames.view(i)
        w, h = (int(v) for v in frames.sizes[i])
        rgb = render_teacher(teacher, o, d, near, far, dataset.background, cfg).reshape(frames.h, frames.w, 3)
        gt = torch.as_tensor(np.asarray(dataset.images[i])[:h, :w])
        mse = float(torch.mean((rgb[:h, :w] - gt) ** 2))
        scores.append(psnr_from_mse(mse))
    mean = float(np.mean(scores)) if scores else math.nan
    return mean, scores
