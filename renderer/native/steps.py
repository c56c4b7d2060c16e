"""Each step of a frame run by the native kernels alone, on CPU tensors, with the contract of its torch twin
(``renderer.steps``): the parity tests call both. ``isa`` picks an instruction set (None: the best here).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from renderer.frame import FrameParams
from renderer.kernel_params import camera_params, render_params
from renderer.native import library as L
from renderer.native.backend import check
from renderer.native.scene import NativeScene

_workspace_lock = threading.Lock()
_workspace_handle: list[int] = []


def _workspace() -> int:
    """The buffers the evaluation step reuses between calls (made once; call under ``_workspace_lock``)."""
    if not _workspace_handle:
        _workspace_handle.append(int(L.library().kc_workspace_new()))
    return _workspace_handle[0]


def _np(t: torch.Tensor, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu").numpy().astype(dtype, copy=False))


def _p(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def _params(ns: NativeScene, fp: FrameParams) -> np.ndarray:
    return np.array(render_params(ns, fp, ns.weight_stride))


def rays_for_pixels(camera: Any, isa: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """origins, unit dirs ``[H·W, 3]`` float32, row-major pixels (``renderer.camera.generate_rays``)."""
    n = int(camera.width) * int(camera.height)
    o, d = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
    cam = np.array(camera_params(camera))
    check(L.library().kc_rays_for_pixels(L.isa_code(isa), _p(cam), 0, n, _p(o), _p(d)), "rays_for_pixels")
    return torch.from_numpy(o), torch.from_numpy(d)


def clip_to_box(
    ns: NativeScene, fp: FrameParams, origins: torch.Tensor, dirs: torch.Tensor, isa: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """t0 ``[R]`` and the lattice count ``[R]`` int64 (``renderer.march.clip_to_box``)."""
    o, d = _np(origins, np.float32), _np(dirs, np.float32)
    n = o.shape[0]
    t0, steps = np.empty(n, np.float32), np.empty(n, np.int64)
    params = _params(ns, fp)  # kept alive until the call returns
    rc = L.library().kc_clip_to_box(L.isa_code(isa), _p(params), n, _p(o), _p(d), _p(t0), _p(steps))
    check(rc, "clip_to_box")
    return torch.from_numpy(t0), torch.from_numpy(steps)


def march_pass(
    ns: NativeScene,
    fp: FrameParams,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    t0: torch.Tensor,
    n_steps: torch.Tensor,
    k: torch.Tensor,
    live: torch.Tensor,
    k_pass: int,
    isa: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next ≤ ``k_pass`` samples of the ``live`` rays (``renderer.march.march_pass``).

    ``k`` ``[R]`` int64 is advanced in place. Returns the slots ``[A, k_pass]``: lattice index (int64),
    network (int32, −1: empty slot) and the slots used per live ray ``[A]``.
    """
    o, d, t, n = _np(origins, np.float32), _np(dirs, np.float32), _np(t0, np.float32), _np(n_steps, np.int64)
    kk, lv = _np(k, np.int64), _np(live, np.int32)
    a = lv.shape[0]
    sk, snet, cnt = np.empty((a, k_pass), np.int64), np.empty((a, k_pass), np.int32), np.empty(a, np.int32)
    params = _params(ns, fp)  # kept alive until the call returns
    rc = L.library().kc_march_pass(
        L.isa_code(isa),
        _p(params),
        ns.pointer(fp.ess),
        a,
        _p(lv),
        _p(o),
        _p(d),
        _p(t),
        _p(n),
        _p(kk),
        k_pass,
        _p(sk),
        _p(snet),
        _p(cnt),
    )
    check(rc, "march_pass")
    k.copy_(torch.from_numpy(kk))
    return torch.from_numpy(sk), torch.from_numpy(snet), torch.from_numpy(cnt)


def evaluate_networks(
    ns: NativeScene, x: torch.Tensor, d: torch.Tensor, net: torch.Tensor, isa: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """σ ``[N]``, rgb ``[N, 3]`` of network ``net[i]`` at world point ``x[i]`` with unit direction ``d[i]``
    (``renderer.networks.evaluate_networks``)."""
    xs, ds, nt = _np(x, np.float32), _np(d, np.float32), _np(net, np.int32)
    n = xs.shape[0]
    sigma, rgb = np.empty(n, np.float32), np.empty((n, 3), np.float32)
    fp = FrameParams(ns.step_size, None, ns.background, True, 8, False, "rgb", 1)
    with _workspace_lock:
        params = _params(ns, fp)  # kept alive until the call returns
        rc = L.library().kc_evaluate_points(
            L.isa_code(isa), _p(params), ns.pointer(True), n, _p(xs), _p(ds), _p(nt), _p(sigma),
            _p(rgb), _workspace(),
        )  # fmt: skip
    check(rc, "evaluate_networks")
    return torch.from_numpy(sigma), torch.from_numpy(rgb)


def unpack_network(ns: NativeScene, net: int, isa: str | None = None) -> np.ndarray:
    """Network ``net``'s weights as the kernels unpack them from the scene's own tensors before its samples
    run: ``[stride]`` float32 in the ``pack_weights`` layout (its Python twin), padding zero."""
    out = np.zeros(ns.weight_stride, np.float32)
    fp = FrameParams(ns.step_size, None, ns.background, True, 8, False, "rgb", 1)
    params = _params(ns, fp)  # kept alive until the call returns
    rc = L.library().kc_unpack_network(L.isa_code(isa), _p(params), ns.pointer(True), int(net), _p(out))
    check(rc, "unpack_network")
    return out


def composite_pass(
    ns: NativeScene,
    fp: FrameParams,
    slots: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    t0: torch.Tensor,
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    accum: dict[str, torch.Tensor],
    isa: str | None = None,
) -> torch.Tensor:
    """Composite one pass's slots (``[A, K]`` σ, ``[A, K, 3]`` rgb, as ``march_pass`` laid them out) onto
    rays 0..A−1 (``renderer.composite.composite_pass``); updates ``accum`` (``trans``, ``color``,
    ``depth`` = Σ w·t, ``best_w``, ``best_net`` int32) in place; returns which rays stopped (ERT)."""
    sk, snet, cnt = (_np(s, t) for s, t in zip(slots, (np.int64, np.int32, np.int32)))
    a, kp = sk.shape
    acc = {k: _np(v, np.int32 if k == "best_net" else np.float32) for k, v in accum.items()}
    live = np.arange(a, dtype=np.int32)
    stopped = np.zeros(a, np.uint8)
    sg, cl, tt = _np(sigma, np.float32), _np(rgb, np.float32), _np(t0, np.float32)
    params = _params(ns, fp)  # kept alive until the call returns
    rc = L.library().kc_composite_pass(
        L.isa_code(isa),
        _p(params),
        int(fp.ert_threshold is not None),
        a,
        _p(live),
        kp,
        _p(tt),
        _p(sk),
        _p(snet),
        _p(cnt),
        _p(sg),
        _p(cl),
        _p(acc["trans"]),
        _p(acc["color"]),
        _p(acc["depth"]),
        _p(acc["best_w"]),
        _p(acc["best_net"]),
        _p(stopped),
    )
    check(rc, "composite_pass")
    for key, arr in acc.items():
        accum[key].copy_(torch.from_numpy(arr))
    return torch.from_numpy(stopped.astype(bool))


def write_pixels(
    ns: NativeScene,
    fp: FrameParams,
    color: torch.Tensor,
    trans: torch.Tensor,
    depth: torch.Tensor,
    best_net: torch.Tensor,
    isa: str | None = None,
) -> torch.Tensor:
    """The picture ``[N, 3]`` of a frame's accumulators (``renderer.pixels.write_pixels``)."""
    c, t, dp, b = (
        _np(color, np.float32),
        _np(trans, np.float32),
        _np(depth, np.float32),
        _np(best_net, np.int32),
    )
    out = np.empty_like(c)
    params = _params(ns, fp)  # kept alive until the call returns
    rc = L.library().kc_write_pixels(
        L.isa_code(isa),
        _p(params),
        L.OUTPUT_CODES[fp.output],
        c.shape[0],
        _p(c),
        _p(t),
        _p(dp),
        _p(b),
        _p(out),
    )
    check(rc, "write_pixels")
    return torch.from_numpy(out)


def lattice_samples_in_mask(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    step: float,
    s: int,
    mask: torch.Tensor,
    bbox_min: torch.Tensor,
    bbox_max: torch.Tensor,
) -> torch.Tensor:
    """Flat indices ``[K]`` int64 (``r·s + k``, ascending) of the lattice samples ``t = t0 + (k + ½)·step``,
    ``t < t1``, ``k < s``, of rays ``[R, 3]`` whose points lie in a True voxel of ``mask`` ``[X, Y, Z]`` over
    the box (the torch twin: ``trainer.teachers.lattice.lattice_samples_in_mask``)."""
    o, d = _np(origins, np.float32), _np(dirs, np.float32)
    a, b = _np(t0, np.float32), _np(t1, np.float32)
    m = _np(mask.contiguous().view(torch.uint8), np.uint8)  # no copy of the grid
    dims = np.array(mask.shape, np.int64)
    box = np.concatenate([_np(bbox_min, np.float32).reshape(3), _np(bbox_max, np.float32).reshape(3)])
    out = np.empty(max(1, o.shape[0] * s), np.int64)
    fn = L.library().kc_lattice_samples_in_mask
    count = fn(o.shape[0], _p(o), _p(d), _p(a), _p(b), float(step), s, _p(m), _p(dims), _p(box), _p(out))
    return torch.from_numpy(out[:count].copy())
