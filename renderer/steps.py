"""The kernel layer: the steps of a frame, each one named function with one contract, in the order a frame
runs them. These are the torch twins (differentiable where the trainer needs it); ``renderer.native.steps``
runs the same steps in the native CPU kernels (``renderer/native/src``), ``renderer.cuda.backend`` launches
them as CUDA kernels, and the parity tests (``tests/test_native.py``) hold each native step to its twin.

| step | torch twin | contract |
|---|---|---|
| ``rays_for_pixels`` | ``camera.generate_rays`` | camera → origins, unit dirs ``[H·W, 3]`` |
| ``clip_to_box`` | ``march.clip_to_box`` | rays → t0 ``[R]``, lattice count ``[R]`` |
| ``march_pass`` | ``march.march_pass`` | live rays → their next ≤ K contributing samples (ESS) |
| ``evaluate_networks`` | ``networks.evaluate_networks`` | points, dirs, net ids → σ ``[N]``, rgb ``[N, 3]`` |
| ``composite_pass`` | ``composite.composite_pass`` | one pass's samples → colour, T after, weights (ERT) |
| ``write_pixels`` | ``pixels.write_pixels`` | accumulators → the picture of the asked output |
"""

from __future__ import annotations

from renderer.camera import generate_rays as rays_for_pixels
from renderer.composite import composite_pass
from renderer.march import clip_to_box, march_pass
from renderer.networks import evaluate_networks
from renderer.pixels import write_pixels

STEPS: tuple[str, ...] = (
    "rays_for_pixels",
    "clip_to_box",
    "march_pass",
    "evaluate_networks",
    "composite_pass",
    "write_pixels",
)
"""The steps of a frame, in order (``renderer.native.steps`` defines the same names)."""

__all__ = [
    "STEPS",
    "rays_for_pixels",
    "clip_to_box",
    "march_pass",
    "evaluate_networks",
    "composite_pass",
    "write_pixels",
]
