"""The frame contract, shared by every backend: what a frame is asked for (``RenderOptions``), the one
rule that resolves those options against a scene (``resolve_options`` → ``FrameParams``, including the
pass schedule), the scene prepared for rendering (``RenderScene``), what a frame cost (``RenderStats``)
and what it returns (``RenderResult``).

The steps of a frame (rays for pixels, box clipping, marching with ESS, network evaluation, compositing
with ERT, writing pixels) are the kernel layer below this module: ``renderer.steps`` lists them with
their torch twins; ``renderer.native`` and ``renderer.cuda`` implement the same steps.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from renderer.bit_grid import BitGrid
from renderer.distance_field import (
    FINE_BLOCK,
    block_distance_field,
    contributing_bits,
    network_bits,
)
from renderer.networks import NetworkSpec
from renderer.scene_checks import MAX_LATTICE_STEPS, min_step

OUTPUTS: tuple[str, ...] = ("rgb", "depth", "network")
"""What a frame can show: colour, shaded expected depth, or the dominant network's id colour."""
PASS_GROWTH_CAP = 64
"""Most samples per ray per pass that a pass with few live rays grows to (``samples_per_pass`` if larger)."""
PASS_SAMPLE_BUDGET = 1 << 15
"""Pass p takes up to 2^p × ``samples_per_pass`` samples per ray while live rays × samples ≤ this."""
NO_ERT_SAMPLES_PER_PASS = 32
"""Without ERT nothing is saved by stopping early, so passes take at least this many samples per ray."""


@dataclass
class RenderOptions:
    """How to render a frame (None fields fall back to the scene's values)."""

    ess: bool = True
    """Empty-space skipping through the occupancy grid."""
    ert: bool = True
    """Early ray termination when transmittance falls below the threshold."""
    ert_threshold: float | None = None
    """ERT threshold ε (None → the scene's)."""
    step_multiplier: float = 1.0
    """Marching step = scene step size × this."""
    background: tuple[float, float, float] | None = None
    """Background colour (None → the scene's)."""
    samples_per_pass: int = 8
    """Contributing samples gathered per ray in the first pass (K)."""
    grow_passes: bool = True
    """Later passes with few live rays take up to 2^p × K samples per ray (False: K in every pass, as the
    CUDA kernels do; with ERT the samples marched past a ray's end differ, the image does not)."""
    output: str = "rgb"
    """"rgb", "depth" (expected t, shaded) or "network" (colour of the dominant network's id)."""
    chunk_size: int = 1 << 18
    """Rays marched at once (bounds memory)."""


def _f32(v: float) -> float:
    """``v`` rounded to the nearest float32, as a Python float."""
    return float(np.float32(v))


@dataclass(frozen=True)
class FrameParams:
    """A frame's options resolved against its scene: the numbers every backend renders with."""

    step: float
    """Marching step s = scene step × ``step_multiplier``, rounded to float32."""
    ert_threshold: float | None
    """ε, or None when ERT is off."""
    background: tuple[float, float, float]
    """Colour behind the scene."""
    ess: bool
    """Empty-space skipping on."""
    samples_per_pass: int
    """K of the first pass (≥ ``NO_ERT_SAMPLES_PER_PASS`` without ERT)."""
    grow_passes: bool
    """Whether later passes with few live rays take more samples per ray (``pass_samples``)."""
    output: str
    """One of ``OUTPUTS``."""
    chunk_size: int
    """Rays marched at once; each chunk has its own pass schedule."""

    def pass_samples(self, pass_index: int, live_rays: int) -> int:
        """Samples per ray of pass ``pass_index`` (0-based) of a chunk with ``live_rays`` rays still marching.

        K doubles once per earlier pass while it is below ``PASS_GROWTH_CAP`` and live × 2K stays within
        ``PASS_SAMPLE_BUDGET``: a pass costs about the same for up to that many samples, so few live rays
        (a small frame, or a pass's stragglers) take more per ray and spare later passes' fixed costs.
        """
        k = self.samples_per_pass
        for _ in range(pass_index if self.grow_passes else 0):
            if k >= PASS_GROWTH_CAP or live_rays * k * 2 > PASS_SAMPLE_BUDGET:
                break
            k *= 2
        return k


def resolve_options(scene: Any, options: RenderOptions | None = None) -> FrameParams:
    """The one rule by which options override a scene.

    Args:
        scene: anything with ``step_size``, ``ert_threshold`` and ``background`` (a ``Scene``, a
            ``RenderScene`` or a backend's prepared scene).
        options: None → ``RenderOptions()``.

    Raises:
        ValueError: an unknown output, or a step, threshold or chunk size out of range.
    """
    opts = options or RenderOptions()
    if opts.output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {opts.output!r}")
    if not opts.step_multiplier > 0:
        raise ValueError(f"step multiplier must be > 0, got {opts.step_multiplier}")
    if opts.chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {opts.chunk_size}")
    eps: float | None = None
    if opts.ert:
        eps = float(scene.ert_threshold if opts.ert_threshold is None else opts.ert_threshold)
    k = max(1, int(opts.samples_per_pass))
    if not opts.ert:
        k = max(NO_ERT_SAMPLES_PER_PASS, k)
    bg = scene.background if opts.background is None else opts.background
    step = _f32(float(scene.step_size) * float(opts.step_multiplier))
    box = scene.spec if hasattr(scene, "spec") else scene
    if step < min_step(box.bbox_min, box.bbox_max):
        raise ValueError(
            f"step {step:g} (step multiplier {opts.step_multiplier:g}) is below the box diagonal / "
            f"{MAX_LATTICE_STEPS}: a ray would take too many lattice steps"
        )
    return FrameParams(
        step=step,
        ert_threshold=eps,
        background=tuple(float(v) for v in bg),  # type: ignore[arg-type]
        ess=bool(opts.ess),
        samples_per_pass=k,
        grow_passes=bool(opts.grow_passes),
        output=opts.output,
        chunk_size=int(opts.chunk_size),
    )


@dataclass
class RenderStats:
    """What a frame cost."""

    rays: int = 0
    """Rays cast."""
    rays_hit_box: int = 0
    """Rays that cross the scene box."""
    samples_marched: int = 0
    """Lattice steps walked over (skipped or tested) before the rays stopped."""
    samples_evaluated: int = 0
    """Samples sent through a network."""
    networks_touched: int = 0
    """Distinct networks evaluated."""
    passes: int = 0
    """Marching passes (largest over the ray chunks)."""
    rays_terminated_early: int = 0
    """Rays stopped by ERT before leaving the box."""
    ms: float = 0.0
    """Wall-clock time in milliseconds."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass
class RenderResult:
    """A rendered frame."""

    image: torch.Tensor
    """``[H, W, 3]`` float32 CPU."""
    depth: torch.Tensor | None
    """``[H, W]`` float32 CPU expected t of the composited samples (0 where nothing was hit), or None."""
    stats: RenderStats
    """Counters and time."""
    network: torch.Tensor | None = None
    """``[H, W]`` int64 id of the network with the largest weight per pixel (−1: none), or None."""
    touched: torch.Tensor | None = None
    """``[num_networks]`` bool: the networks evaluated for this frame (``stats.networks_touched`` is its
    sum), so that frames rendered in parts can report their union; None where a backend does not say."""


@dataclass
class RenderScene:
    """A scene prepared for rendering on one device (reuse it between frames)."""

    device: torch.device
    """Where the tensors live."""
    spec: NetworkSpec
    """Network layout and box (bbox floats are float32-representable)."""
    occupancy_res: tuple[int, int, int]
    """Occupancy voxels per axis."""
    network_index_flat: torch.Tensor
    """``[rx·ry·rz]`` int64 network id per cell (C order), −1 = none."""
    occupancy: BitGrid
    """The scene's occupancy, packed bits on the CPU (``occupancy_bits`` is its device copy)."""
    params: dict[str, torch.Tensor]
    """``l0.weight`` … ``l4.bias`` on the device in the scene's dtype (float16 files stay float16: the
    evaluation casts each chunk's gathered weights to float32), or the live parameters of a module."""
    step_size: float
    """Scene marching step (float32-representable)."""
    background: tuple[float, float, float]
    """Scene background colour."""
    ert_threshold: float
    """Scene ERT threshold."""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def grid_res(self) -> tuple[int, int, int]:
        """Network cells per axis."""
        return self.spec.grid_res

    @property
    def num_networks(self) -> int:
        """M (from the weights, or from the cell table of a scene prepared without them)."""
        if "l0.weight" in self.params:
            return int(self.params["l0.weight"].shape[0])
        return int((self.network_index_flat >= 0).sum())

    def cached(self, key: str, make: Any) -> Any:
        """A per-scene constant, made once by ``make()`` (callers must not modify it in place)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def bbox_min_t(self) -> torch.Tensor:
        """``[3]`` float32 box minimum on the device."""
        return self.cached(
            "lo", lambda: torch.tensor(self.spec.bbox_min, dtype=torch.float32, device=self.device)
        )

    @property
    def bbox_max_t(self) -> torch.Tensor:
        """``[3]`` float32 box maximum on the device."""
        return self.cached(
            "hi", lambda: torch.tensor(self.spec.bbox_max, dtype=torch.float32, device=self.device)
        )

    @property
    def voxel_size_t(self) -> torch.Tensor:
        """``[3]`` float32 occupancy voxel edge lengths."""

        def make() -> torch.Tensor:
            res = torch.tensor(self.occupancy_res, dtype=torch.float32, device=self.device)
            return (self.bbox_max_t - self.bbox_min_t) / res

        return self.cached("voxel_size", make)

    @property
    def voxel_count(self) -> int:
        """ox·oy·oz."""
        return int(np.prod(self.occupancy_res))

    @property
    def fine_res(self) -> tuple[int, int, int]:
        """Blocks of the distance field per axis: ⌈o / FINE_BLOCK⌉."""
        b = FINE_BLOCK
        return tuple(-(-r // b) for r in self.occupancy_res)  # type: ignore[return-value]

    @property
    def occupancy_bits(self) -> torch.Tensor:
        """``[⌈ox·oy·oz / 8⌉]`` uint8 packed occupancy on the device (``renderer.bit_grid`` layout)."""
        return self.cached("occ_bits", lambda: _device_bytes(self.occupancy.bits, self.device))

    def valid_bits(self, ess: bool) -> torch.Tensor:
        """``[⌈ox·oy·oz / 8⌉]`` uint8 packed bits of the voxels whose cell has a network (and, with ``ess``,
        that are occupied): ``distance_field.contributing_bits`` (for a loaded scene the occupancy itself,
        no copy) or ``network_bits``, cached."""

        def make() -> torch.Tensor:
            index = self.network_index_flat.cpu().numpy().reshape(self.grid_res)
            if ess:
                bits = contributing_bits(index, self.occupancy)
                return (
                    self.occupancy_bits if bits is self.occupancy.bits else _device_bytes(bits, self.device)
                )
            return _device_bytes(network_bits(index, self.occupancy_res), self.device)

        return self.cached(f"valid{int(ess)}", make)

    def distance_field(self, ess: bool) -> torch.Tensor:
        """``[bx·by·bz]`` uint8 empty-space distance over the blocks of ``FINE_BLOCK``³ voxels (``fine_res``,
        C order; ``distance_field.block_distance_field`` of ``valid_bits(ess)``), made on first use and
        cached. 4 bytes of padding follow it: the native marcher gathers words."""

        def make() -> torch.Tensor:
            valid = BitGrid(self.valid_bits(ess).cpu().numpy(), self.occupancy_res)
            n = int(np.prod(self.fine_res))
            padded = torch.zeros(n + 4, dtype=torch.uint8)
            block_distance_field(valid, out=padded[:n])
            return padded[:n].to(self.device)

        return self.cached(f"dist{int(ess)}", make)


def _device_bytes(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 numpy array as a tensor on ``device`` (no copy on the CPU, read-only arrays included: the
    renderer never writes its tables)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable": the tables are read-only by contract
        return torch.from_numpy(a).to(device)


def prepare_scene(
    scene: Any, device: str | torch.device = "cpu", networks: Any = None, *, weights: bool = True
) -> RenderScene:
    """Move a ``Scene`` to ``device``: weights (own dtype), flat lookup tables, float32-rounded box and step.

    The distance fields are not built here: ``RenderScene.distance_field`` makes them on first use.

    Args:
        scene: a ``renderer.scene.Scene`` (its weights are ignored when ``networks`` is given).
        networks: optional ``KiloNetworks`` whose live parameters are used (render while training; the
            module must already be on ``device``).
        weights: False leaves ``params`` empty (the native renderer packs the scene's own weights, so no
            float32 copy of every tensor is made here).
    """
    dev = torch.device(device)
    spec = NetworkSpec.from_scene(scene)
    spec = NetworkSpec(
        bbox_min=tuple(_f32(v) for v in spec.bbox_min),  # type: ignore[arg-type]
        bbox_max=tuple(_f32(v) for v in spec.bbox_max),  # type: ignore[arg-type]
        grid_res=spec.grid_res,
        pos_freqs=spec.pos_freqs,
        dir_freqs=spec.dir_freqs,
        hidden=spec.hidden,
        density_activation=spec.density_activation,
        density_scale=spec.density_scale,
    )
    if networks is not None:
        params = dict(networks.params())
    elif not weights:
        params = {}
    else:
        params = {k: v.detach().to(dev).contiguous() for k, v in scene.weights.items()}
    index = torch.as_tensor(np.ascontiguousarray(scene.network_index).astype(np.int64)).reshape(-1).to(dev)
    return RenderScene(
        device=dev,
        spec=spec,
        occupancy_res=tuple(int(v) for v in scene.occupancy_res),  # type: ignore[arg-type]
        network_index_flat=index,
        occupancy=scene.occupancy,
        params=params,
        step_size=_f32(scene.step_size),
        background=tuple(float(v) for v in scene.background),  # type: ignore[arg-type]
        ert_threshold=float(scene.ert_threshold),
    )
