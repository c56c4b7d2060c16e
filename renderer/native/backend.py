"""The ``cpu`` backend: a frame rendered by the native C++ kernels (``render_frame``), with the torch
renderer's contract: ``render(scene_or_rs, camera, options) -> RenderResult`` and the same stats."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import Any

import numpy as np
import torch

from renderer.frame import (
    PASS_GROWTH_CAP,
    PASS_SAMPLE_BUDGET,
    FrameParams,
    RenderOptions,
    RenderResult,
    RenderScene,
    RenderStats,
    prepare_scene,
    resolve_options,
)
from renderer.kernel_params import camera_params, render_params
from renderer.native import library as L
from renderer.native.scene import SUPPORTED_HIDDEN, NativeScene
from renderer.render import render_image, render_rays_full

log = logging.getLogger(__name__)


class NativeError(RuntimeError):
    """The native kernels refused a frame (one line)."""


_ERRORS = {
    -1: "unsupported hidden width or octave count",
    -2: "out of memory",
    -3: "instruction set not available",
    -4: "network out of range",
}


def frame_struct(fp: FrameParams) -> L.CpuFrame:
    """``kc::CpuFrame`` of resolved options."""
    f = L.CpuFrame()
    f.grow_passes, f.growth_cap, f.sample_budget = int(fp.grow_passes), PASS_GROWTH_CAP, PASS_SAMPLE_BUDGET
    f.chunk_size, f.output, f.has_ert = (
        fp.chunk_size,
        L.OUTPUT_CODES[fp.output],
        int(fp.ert_threshold is not None),
    )
    return f


def check(rc: int, what: str) -> None:
    """``NativeError`` for a negative return code."""
    if rc < 0:
        raise NativeError(f"native {what} failed: {_ERRORS.get(rc, f'error {rc}')}")


def _ptr(a: np.ndarray) -> int:
    return int(a.ctypes.data)


class CpuBackend:
    """Render with the native CPU kernels; caches the prepared scene and a frame workspace between frames."""

    name = "cpu"

    def __init__(self, isa: str | None = None) -> None:
        """``isa``: an instruction set of ``library.available_isas()`` (None: the best here)."""
        self.lib = L.library()
        self.isa = isa or L.best_isa()
        self._isa_code = L.isa_code(self.isa)
        self._scene_key: Any = None
        self._scene: NativeScene | RenderScene | None = None
        self._lock = threading.Lock()  # one frame at a time per backend (the workspace is reused)
        self._workspace = self.lib.kc_workspace_new()
        self.last_step_ms: dict[str, float] = {}
        """Wall milliseconds of each step of the last frame (``library.STEP_TIMES``)."""

    def __del__(self) -> None:
        ws, self._workspace = getattr(self, "_workspace", None), None
        if ws and getattr(self, "lib", None) is not None:
            self.lib.kc_workspace_delete(ws)

    def prepare(self, scene: Any) -> Any:
        """The scene packed for the kernels (cached for the last scene object seen); a scene whose hidden
        width has no kernel (``SUPPORTED_HIDDEN``) comes back as a torch ``RenderScene`` and is rendered by
        the torch renderer (said once)."""
        if isinstance(scene, NativeScene):
            return scene
        if self._scene is None or self._scene_key is not scene:
            hidden = int(scene.spec.hidden if isinstance(scene, RenderScene) else scene.hidden)
            if hidden not in SUPPORTED_HIDDEN:
                log.info("hidden width %d has no native CPU kernel (%s); using the torch renderer", hidden,
                         ", ".join(map(str, SUPPORTED_HIDDEN)))  # fmt: skip
                self._scene = scene if isinstance(scene, RenderScene) else prepare_scene(scene, "cpu")
            else:
                self._scene = NativeScene(scene)
            self._scene_key = scene
        return self._scene

    def render(self, scene_or_rs: Any, camera: Any, options: RenderOptions | None = None) -> RenderResult:
        """Render ``camera``'s view; ``RenderResult.image`` is ``[H, W, 3]`` float32 on the CPU."""
        start = time.perf_counter()
        ns = self.prepare(scene_or_rs)
        if isinstance(ns, RenderScene):
            return render_image(ns, camera, options)
        fp = resolve_options(ns, options)
        cam = np.array(camera_params(camera))
        n = int(camera.width) * int(camera.height)
        rgb, depth, trans, net, stats, touched = self._frame(ns, fp, n, camera=cam)
        stats.ms = (time.perf_counter() - start) * 1e3
        h, w = int(camera.height), int(camera.width)
        return RenderResult(
            image=torch.from_numpy(rgb).reshape(h, w, 3),
            depth=torch.from_numpy(depth).reshape(h, w),
            stats=stats,
            network=torch.from_numpy(net).to(torch.int64).reshape(h, w) if fp.output == "network" else None,
            touched=torch.from_numpy(touched).to(torch.bool),
        )

    def render_rays(
        self,
        scene_or_rs: Any,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        options: RenderOptions | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RenderStats]:
        """``[N, 3]`` rays → rgb ``[N, 3]``, depth ``[N]``, network ``[N]`` int64, T_end ``[N]``, stats (as
        ``renderer.render.render_rays_full``, but rgb is the asked output's picture)."""
        start = time.perf_counter()
        ns = self.prepare(scene_or_rs)
        if isinstance(ns, RenderScene):
            return render_rays_full(ns, origins, dirs, options)
        fp = resolve_options(ns, options)
        o = np.ascontiguousarray(origins.detach().to("cpu", torch.float32).numpy())
        d = np.ascontiguousarray(dirs.detach().to("cpu", torch.float32).numpy())
        rgb, depth, trans, net, stats, _ = self._frame(ns, fp, o.shape[0], origins=o, dirs=d)
        stats.ms = (time.perf_counter() - start) * 1e3
        t = torch.from_numpy
        return t(rgb), t(depth), t(net).to(torch.int64), t(trans), stats

    def _frame(self, ns: NativeScene, fp: FrameParams, n: int, **rays: np.ndarray) -> tuple[Any, ...]:
        """One ``kc_render_frame`` call: (rgb, depth, trans, network, stats, touched networks as uint8)."""
        P = np.array(render_params(ns, fp, ns.weight_stride))
        F = frame_struct(fp)
        rgb = np.empty((n, 3), np.float32)
        depth, trans = np.empty(n, np.float32), np.empty(n, np.float32)
        net = np.empty(n, np.int32)
        touched = np.zeros(max(1, ns.num_networks), np.uint8)
        io = L.FrameIO()
        io.n_rays = n
        if "camera" in rays:
            io.camera = _ptr(rays["camera"])
        else:
            io.origins, io.dirs = _ptr(rays["origins"]), _ptr(rays["dirs"])
        io.rgb, io.depth, io.trans, io.network = _ptr(rgb), _ptr(depth), _ptr(trans), _ptr(net)
        io.touched = _ptr(touched)
        with self._lock:
            scene_ptr = ns.pointer(fp.ess)
            io.workspace = self._workspace
            rc = self.lib.kc_render_frame(
                self._isa_code, _ptr(P), scene_ptr, ctypes.addressof(F), ctypes.addressof(io)
            )
        check(rc, "render")
        values = {name: int(io.stats[i]) for i, name in enumerate(L.STAT_NAMES)}
        self.last_step_ms = {name: io.step_ns[i] / 1e6 for i, name in enumerate(L.STEP_TIMES)}
        return rgb, depth, trans, net, RenderStats(rays=n, **values), touched[: ns.num_networks]
