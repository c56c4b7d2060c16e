"""Device memory of the CUDA backend: the pool of named allocations that only grow (``DeviceBuffers``,
reused between frames), a scene's tables on the device (``SceneBuffers``) and the named buffers of one
frame (``FrameBuffers``), whose fields the kernel launches of ``backend.py`` pass positionally.

Nothing here imports pycuda: the driver module is handed in by ``CudaBackend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from renderer.cuda import kernels as K
from renderer.cuda.scene_data import CudaSceneData

NULL_POINTER = np.uintp(0)
"""A null device pointer (an output the kernel skips)."""


class DeviceBuffers:
    """Named device allocations that only grow (reused between frames)."""

    def __init__(self, cuda: Any) -> None:
        """``cuda``: the ``pycuda.driver`` module."""
        self.cuda = cuda
        self.allocs: dict[str, tuple[Any, int]] = {}

    def get(self, name: str, nbytes: int) -> Any:
        """The allocation called ``name``, grown to at least ``nbytes`` (contents undefined)."""
        nbytes = max(16, int(nbytes))
        have = self.allocs.get(name)
        if have is None or have[1] < nbytes:
            if have is not None:
                have[0].free()
            self.allocs[name] = (self.cuda.mem_alloc(nbytes), nbytes)
        return self.allocs[name][0]

    def free(self) -> None:
        """Free every allocation."""
        for alloc, _ in self.allocs.values():
            alloc.free()
        self.allocs.clear()


@dataclass
class SceneBuffers:
    """A scene's tables on the device (uploaded once per prepared scene)."""

    network_index: Any
    """``[rx·ry·rz]`` int32 network per cell."""
    occupancy: Any
    """Packed occupancy bits."""
    weights: Any
    """``[M, stride]`` packed weights."""

    @classmethod
    def upload(cls, cuda: Any, data: CudaSceneData) -> SceneBuffers:
        """Copy a packed scene's tables to the device (``cuda``: the ``pycuda.driver`` module)."""
        return cls(
            network_index=cuda.to_device(data.network_index),
            occupancy=cuda.to_device(data.occupancy_bits),
            weights=cuda.to_device(data.weights),
        )


@dataclass
class FrameBuffers:
    """The device buffers of one frame: N rays, S sample slots per pass, M networks."""

    origins: Any
    """``[N, 3]`` float32 ray origins."""
    dirs: Any
    """``[N, 3]`` float32 unit directions."""
    t0: Any
    """``[N]`` box entry t."""
    t1: Any
    """``[N]`` box exit t."""
    k_next: Any
    """``[N]`` next lattice index to march from."""
    trans: Any
    """``[N]`` transmittance T."""
    color: Any
    """``[N, 3]`` composited colour C."""
    depth: Any
    """``[N]`` Σ w·t."""
    best_w: Any
    """``[N]`` largest sample weight so far."""
    best_net: Any
    """``[N]`` int32 network of that sample (−1: none)."""
    active: Any
    """``[N]`` int32 ids of the rays active in this pass."""
    active_next: Any
    """``[N]`` int32 ids of the rays still active after it."""
    ray_base: Any
    """``[N]`` int64 first sample slot of each active ray."""
    ray_count: Any
    """``[N]`` samples stored per active ray."""
    ray_exhausted: Any
    """``[N]`` uint8: the ray's lattice ended in this pass."""
    sample_t: Any
    """``[S]`` lattice t per sample."""
    sample_ray: Any
    """``[S]`` ray id per sample."""
    sample_net: Any
    """``[S]`` network per sample."""
    sorted: Any
    """``[S]`` int64 sample ids grouped by network."""
    sigma: Any
    """``[S]`` density per sample."""
    rgb: Any
    """``[S, 3]`` colour per sample."""
    net_counts: Any
    """``[M]`` samples per network in this pass."""
    net_cursor: Any
    """``[M]`` scatter cursors."""
    net_offsets: Any
    """``[M+1]`` int64 exclusive scan of ``net_counts``."""
    tile_start: Any
    """``[M+1]`` first work tile per network."""
    net_touched: Any
    """``[M]`` uint8: the network got a sample this frame."""
    frame_counters: Any
    """``[NUM_COUNTERS]`` uint64 counters of the frame."""
    pass_counters: Any
    """``[NUM_COUNTERS]`` uint64 counters of the pass."""
    touched_count: Any
    """``[1]`` uint64 networks touched."""
    out_rgb: Any
    """``[N, 3]`` float32 pixels C + T·background, or null (no host outputs)."""
    out_depth: Any
    """``[N]`` expected depth, or null."""
    out_trans: Any
    """``[N]`` T_end, or null."""

    @classmethod
    def allocate(cls, pool: DeviceBuffers, n: int, cap: int, m: int, host_outputs: bool) -> FrameBuffers:
        """The buffers of a frame of ``n`` rays, ``cap`` sample slots and ``m`` networks, from ``pool``."""
        B = pool.get
        counters = 8 * K.NUM_COUNTERS
        return cls(
            origins=B("origins", 12 * n), dirs=B("dirs", 12 * n), t0=B("t0", 4 * n), t1=B("t1", 4 * n),
            k_next=B("k_next", 4 * n), trans=B("trans", 4 * n), color=B("color", 12 * n),
            depth=B("depth", 4 * n), best_w=B("best_w", 4 * n), best_net=B("best_net", 4 * n),
            active=B("active_a", 4 * n), active_next=B("active_b", 4 * n), ray_base=B("ray_base", 8 * n),
            ray_count=B("ray_count", 4 * n), ray_exhausted=B("ray_exhausted", n),
            sample_t=B("sample_t", 4 * cap), sample_ray=B("sample_ray", 4 * cap),
            sample_net=B("sample_net", 4 * cap), sorted=B("sorted", 8 * cap), sigma=B("sigma", 4 * cap),
            rgb=B("rgb", 12 * cap), net_counts=B("net_counts", 4 * m), net_cursor=B("net_cursor", 4 * m),
            net_offsets=B("net_offsets", 8 * (m + 1)), tile_start=B("tile_start", 4 * (m + 1)),
            net_touched=B("net_touched", m), frame_counters=B("frame_counters", counters),
            pass_counters=B("pass_counters", counters), touched_count=B("touched_count", 8),
            out_rgb=B("out_rgb", 12 * n) if host_outputs else NULL_POINTER,
            out_depth=B("out_depth", 4 * n) if host_outputs else NULL_POINTER,
            out_trans=B("out_trans", 4 * n) if host_outputs else NULL_POINTER,
        )  # fmt: skip
