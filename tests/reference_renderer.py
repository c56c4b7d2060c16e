"""Slow, straightforward per-ray renderer of the issue-2 rule, used to check the real renderers.

Every ray is handled on its own: slab test, every lattice sample t_k = t0 + (k + ½)s with t_k < t1, the
contribution test, each sample through its own network (weights gathered per sample), sequential
compositing with optional early termination. Geometry is float32 numpy, mirroring the float32 rule.
"""

from __future__ import annotations

import numpy as np
import torch

from renderer.camera import Camera
from renderer.scene import Scene


def reference_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """float32 origins and unit directions ``[H·W, 3]``, pixel by pixel (float64 maths, then float32)."""
    cx = camera.width / 2 if camera.cx is None else camera.cx
    cy = camera.height / 2 if camera.cy is None else camera.cy
    dirs = []
    for py in range(camera.height):
        for px in range(camera.width):
            x, y = (px + 0.5 - cx) / camera.focal, -(py + 0.5 - cy) / camera.focal
            r = camera.c2w[:3, :3]
            w = x * r[:, 0] + y * r[:, 1] - r[:, 2]  # = R · (x, y, −1)
            dirs.append(w / np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]))
    d = np.array(dirs, dtype=np.float32)
    o = np.tile(np.asarray(camera.c2w[:3, 3], dtype=np.float32), (d.shape[0], 1))
    return o, d


def _gamma(v: torch.Tensor, freqs: int) -> torch.Tensor:
    terms = [v]
    for i in range(freqs):
        terms += [torch.sin(2.0**i * v), torch.cos(2.0**i * v)]
    return torch.cat(terms, dim=-1)


def reference_network(
    scene: Scene, x: np.ndarray, d: np.ndarray, net: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """σ ``[S]``, rgb ``[S, 3]`` of float32 points ``[S, 3]`` with directions ``[S, 3]``, ids ``[S]``."""
    w = {k: v.float() for k, v in scene.weights.items()}
    lo = np.asarray(scene.bbox_min, dtype=np.float32)
    hi = np.asarray(scene.bbox_max, dtype=np.float32)
    res = np.asarray(scene.grid_res)
    c = ((np.asarray(scene.bbox_max, dtype=np.float64) - scene.bbox_min) / res).astype(np.float32)
    g = np.clip(np.floor((x - lo) / (hi - lo) * res.astype(np.float32)), 0, res - 1).astype(np.float32)
    u = torch.from_numpy(2 * (x - (lo + g * c)) / c - 1)
    m = torch.from_numpy(net.astype(np.int64))
    h = torch.relu(
        torch.einsum("si,sij->sj", _gamma(u, scene.pos_freqs), w["l0.weight"][m]) + w["l0.bias"][m]
    )
    h = torch.relu(torch.einsum("si,sij->sj", h, w["l1.weight"][m]) + w["l1.bias"][m])
    o = torch.einsum("si,sij->sj", h, w["l2.weight"][m]) + w["l2.bias"][m]
    raw = o[:, 0]
    act = {"relu": torch.relu, "softplus": torch.nn.functional.softplus, "exp": torch.exp}[
        scene.density_activation
    ]
    sigma = scene.density_scale * act(raw)
    feat = torch.cat([o[:, 1:], _gamma(torch.from_numpy(d), scene.dir_freqs)], dim=1)
    h = torch.relu(torch.einsum("si,sij->sj", feat, w["l3.weight"][m]) + w["l3.bias"][m])
    rgb = torch.sigmoid(torch.einsum("si,sij->sj", h, w["l4.weight"][m]) + w["l4.bias"][m])
    return sigma.numpy(), rgb.numpy()


def reference_render_ray(
    scene: Scene,
    o: np.ndarray,
    d: np.ndarray,
    *,
    ess: bool = True,
    ert: bool = False,
    ert_threshold: float | None = None,
    step_multiplier: float = 1.0,
) -> tuple[np.ndarray, int]:
    """Colour ``[3]`` of one ray and the number of samples that went through a network."""
    f32 = np.float32
    lo = np.asarray(scene.bbox_min, dtype=f32)
    hi = np.asarray(scene.bbox_max, dtype=f32)
    bg = np.asarray(scene.background, dtype=np.float64)
    s = f32(scene.step_size * step_multiplier)
    eps = scene.ert_threshold if ert_threshold is None else ert_threshold
    near: list[np.float32] = []
    far: list[np.float32] = []
    for i in range(3):
        if d[i] == 0:
            inside = lo[i] <= o[i] <= hi[i]
            near.append(f32(-np.inf if inside else np.inf))
            far.append(f32(np.inf if inside else -np.inf))
        else:
            ta = f32((lo[i] - o[i]) / d[i])
            tb = f32((hi[i] - o[i]) / d[i])
            near.append(min(ta, tb))
            far.append(max(ta, tb))
    t0 = f32(max(f32(0), max(near)))  # type: ignore[arg-type]
    t1 = f32(min(far))
    if not t1 > t0:
        return bg.astype(np.float32), 0
    kmax = int(np.ceil((float(t1) - float(t0)) / float(s))) + 2
    ks = np.arange(kmax)
    t = (t0 + (ks.astype(f32) + f32(0.5)) * s).astype(f32)
    t = t[t < t1]
    x = (o[None, :] + t[:, None] * d[None, :]).astype(f32)
    ext = (hi - lo).astype(f32)
    g = np.clip(
        np.floor((x - lo) / ext * np.asarray(scene.grid_res, dtype=f32)), 0, np.asarray(scene.grid_res) - 1
    )
    g = g.astype(np.int64)
    net = scene.network_index[g[:, 0], g[:, 1], g[:, 2]]
    keep = net >= 0
    if ess:
        ores = np.asarray(scene.occupancy_res)
        v = np.clip(np.floor((x - lo) / ext * ores.astype(f32)), 0, ores - 1).astype(np.int64)
        keep &= np.asarray(scene.occupancy)[v[:, 0], v[:, 1], v[:, 2]]
    x, t, net = x[keep], t[keep], net[keep]
    color = np.zeros(3, dtype=np.float64)
    trans = 1.0
    evaluated = 0
    if x.shape[0]:
        sigma, rgb = reference_network(scene, x, np.tile(d, (x.shape[0], 1)), net)
        for k in range(x.shape[0]):
            if ert and trans < eps:
                break
            evaluated += 1
            alpha = 1.0 - np.exp(-float(sigma[k]) * float(s))
            color += trans * alpha * rgb[k]
            trans *= 1.0 - alpha
    return (color + trans * bg).astype(np.float32), evaluated


def reference_render(
    scene: Scene,
    camera: Camera,
    *,
    ess: bool = True,
    ert: bool = False,
    ert_threshold: float | None = None,
    step_multiplier: float = 1.0,
) -> tuple[np.ndarray, int]:
    """``[H, W, 3]`` float32 image and the total number of samples composited (ERT counts only those used)."""
    o, d = reference_rays(camera)
    out = np.zeros((o.shape[0], 3), dtype=np.float32)
    total = 0
    for i in range(o.shape[0]):
        out[i], n = reference_render_ray(
            scene, o[i], d[i], ess=ess, ert=ert, ert_threshold=ert_threshold, step_multiplier=step_multiplier
        )
        total += n
    return out.reshape(camera.height, camera.width, 3), total
