"""The ``gpu`` preset's code paths on the CPU: its settings are valid, the teacher's bfloat16 colour MLP
(``teacher.mixed_precision``) trains and matches float32 closely, and `python -m trainer run --preset gpu`
runs end to end on tiny data (lego at 50x50, a few steps per stage). Time and quality on a GPU are measured
by scripts/gpu_check.sh, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.presets import get_preset
from trainer.teachers.config import TeacherConfig
from trainer.teachers.grid import GridTeacher

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_preset_is_valid_full_resolution_and_mixed_precision() -> None:
    p = get_preset("gpu")
    assert p.downscale == 1 and p.teacher.mixed_precision and p.teacher.batch_rays >= 16384
    assert p.finetune.rays_per_batch >= 16384
    assert not get_preset("cpu").teacher.mixed_precision  # the CPU presets keep float32


def test_the_bfloat16_colour_mlp_is_close_to_float32_and_trains() -> None:
    cfg = TeacherConfig(grid_res=(12,), upsample_at=(), mixed_precision=True, mlp_width=32)
    torch.manual_seed(0)
    teacher = GridTeacher.for_box([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], cfg)
    with torch.no_grad():
        teacher.feature_table.normal_(0.0, 1.0)  # features of the size a trained lattice holds
    x = torch.rand(256, 3) * 1.8 - 0.9
    d = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1)
    teacher.train()
    teacher.configure_training(cfg)
    mixed = teacher.colour(x, d)
    teacher.mixed_precision = False
    full = teacher.colour(x, d)
    assert mixed.dtype == torch.float32 and full.dtype == torch.float32
    err = (mixed - full).abs().max().item()
    assert 0 < err < 2e-2, err  # bfloat16 really ran (not bit-identical) and stayed close
    teacher.mixed_precision = True
    mixed.sum().backward()
    grads = [p.grad for p in teacher.rgbnet.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    teacher.eval()  # evaluation (occupancy, distillation targets, PSNR) is float32
    torch.testing.assert_close(teacher.colour(x, d), full.detach())


@pytest.mark.slow
def test_trainer_run_with_the_gpu_preset_on_tiny_data(blender_lego: Path, tmp_path: Path) -> None:
    """Every stage of `--preset gpu` on the CPU, shrunk by --set to seconds: the preset's own values (mixed
    precision, GPU-sized batches where tiny data allows) reach each stage and the output renders."""
    out, work = tmp_path / "gpu.kilo", tmp_path / "work"
    sets = [
        "downscale=16",
        "train_views=8",
        "eval_views=1",
        "teacher.steps=40",
        "teacher.alpha_init=0.01",
        "occupancy.threshold=0.02",  # a 40-step teacher is still faint
        "teacher.batch_rays=1024",  # a GPU's 16384 rays take ~14 s a step here: a CPU-sized batch
        "teacher.grid_res=[16,24,32]",
        "teacher.upsample_at=[0.3,0.6]",
        "teacher.hull_res=24",
        "teacher.fit_box_at=0.6",
        "teacher.prune_at=[0.5]",
        "occupancy.longest_axis_cells=6",
        "occupancy.occupancy_factor=4",
        "distill.steps=8",
        "distill.points_per_network=32",
        "finetune.steps=6",
        "finetune.rays_per_batch=1024",
        "finetune.teacher_rays=512",
    ]
    cmd = [sys.executable, "-m", "trainer", "run", "--data", str(blender_lego), "--out", str(out)]
    cmd += ["--workdir", str(work), "--preset", "gpu", "--no-bar"]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = json.loads((work / "run.json").read_text())
    teacher = run["preset_config"]["teacher"]
    assert run["preset"] == "gpu" and teacher["mixed_precision"] is True
    assert teacher["render_chunk"] == 65536  # the preset's GPU-sized chunks, kept
    from renderer.backends import get_backend
    from renderer.scene import load_scene

    scene = load_scene(out)
    assert scene.provenance["preset"] == "gpu"
    cam = scene.cameras
    assert cam is not None
    from renderer.camera import Camera

    img = get_backend("torch").render(scene, Camera(width=24, height=24, focal=30.0, c2w=cam.c2w[0]), None)
    assert torch.isfinite(img.image).all()


def test_pruning_never_empties_the_teachers_mask() -> None:
    """A teacher pruned before it has learnt anything (every recorded weight below the threshold) kept no
    voxel, and the next step crashed in the sparse lattice ("Index 0 ... not in the valid range [0, 0)")."""
    cfg = TeacherConfig(grid_res=(12,), upsample_at=())
    teacher = GridTeacher.for_box([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], cfg)
    before = teacher.mask.clone()
    teacher.max_weight.fill_(1e-9)  # recorded, but below any useful threshold
    teacher.prune_by_weight(0.5)
    assert torch.equal(teacher.mask, before)
    teacher.prune_by_density(0.999)  # nothing that opaque yet
    assert torch.equal(teacher.mask, before)
    teacher.max_weight.zero_()
    teacher.max_weight.view(-1)[0] = 1.0  # one voxel seen: pruning keeps it and its neighbours only
    teacher.prune_by_weight(0.5)
    assert 0 < int(teacher.mask.sum()) < int(before.sum())
