"""A scene prepared for the native CPU renderer: the torch ``RenderScene`` (box, tables, distance fields)
plus pointers to the scene's own weight tensors (float32 or float16, no copy), which the kernels unpack
one network at a time into the layout they read (``weight_offsets``; ``pack_weights`` is the Python twin)."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from renderer.distance_field import DISTANCE_CAP, FINE_BLOCK, coarsen_blocks, empty_space_distance
from renderer.frame import RenderScene, prepare_scene
from renderer.native.library import CpuScene, SourceWeights, WeightOffsets
from renderer.scene_checks import WEIGHT_KEYS

SUPPORTED_HIDDEN = (16, 32, 64)
"""Hidden widths with a compiled kernel."""
BLOCK = 8
"""Voxels per edge of the marcher's coarse blocks (a multiple of ``FINE_BLOCK``): far from everything a ray
jumps block by block."""
BLOCK_CAP = 24
"""Largest distance stored in the coarse blocks' field, in blocks (192 voxels)."""
_ALIGN = 16
"""Floats: every block of a network's weights starts on a 64-byte boundary."""


def weight_offsets(hidden: int, pos_freqs: int, dir_freqs: int) -> dict[str, int]:
    """Offsets (floats) of each block of one packed network, and its stride (``kc::WeightOffsets``)."""
    h = hidden
    sizes = {"w0": (6 * pos_freqs + 3) * h, "b0": h, "w1": h * h, "b1": h, "w2f": h * h, "b2f": h, "w2d": h,
             "b2d": 1, "w3": (h + 6 * dir_freqs + 3) * h, "b3": h, "w4t": 3 * h, "b4": 3}  # fmt: skip
    out, o = {}, 0
    for name, size in sizes.items():
        out[name] = o
        o += -(-size // _ALIGN) * _ALIGN
    out["stride"] = o
    return out


def encoding_rows(num_freqs: int) -> list[int]:
    """Rows of ``positional_encoding`` (v, sin 2⁰v, cos 2⁰v, …) in the kernels' input order: the 3L sines
    (octave-major), the 3L cosines, then v."""
    sin = [3 + 6 * f + c for f in range(num_freqs) for c in range(3)]
    return [*sin, *(r + 3 for r in sin), 0, 1, 2]


def active_octaves(weight: torch.Tensor, first_row: int, num_freqs: int) -> int:
    """Octaves of an encoding whose rows of ``weight [M, rows, H]`` (from ``first_row``: v, then sin and cos
    per octave) are not all zero in every network: 1 + the highest such octave. A scene trained on its
    first K position octaves (the distillation's ``train_pos_freqs``) keeps the higher rows at exactly zero,
    and their encodings contribute exactly nothing; the kernels skip them."""
    for f in range(num_freqs - 1, -1, -1):
        rows = weight[:, first_row + 3 + 6 * f : first_row + 9 + 6 * f]
        if bool((rows != 0).any()):
            return f + 1
    return 0


def pack_weights(weights: Mapping[str, Any], hidden: int, pos_freqs: int, dir_freqs: int) -> np.ndarray:
    """The ten ``l*`` tensors (``y = x @ W + b``) as ``[M, stride]`` float32 rows (``weight_offsets``): the
    layout each network is unpacked into just before its samples run (``kc::unpack_network``, of which this
    is the Python twin; a render never holds this array for every network).

    l0's rows and l3's encoding rows follow ``encoding_rows`` (the first ``pos_freqs``/``dir_freqs``
    octaves); l2 is split into its feature columns and its density column; l4 is stored transposed
    ``[3, H]``. Padding is zero.
    """
    w = {k: torch.as_tensor(v).detach().cpu().float().numpy() for k, v in weights.items()}
    m, h = w["l0.weight"].shape[0], hidden
    off = weight_offsets(hidden, pos_freqs, dir_freqs)
    out = np.zeros((m, off["stride"]), dtype=np.float32)
    rows3 = [*range(h), *(h + r for r in encoding_rows(dir_freqs))]
    blocks = {
        "w0": w["l0.weight"][:, encoding_rows(pos_freqs)],
        "b0": w["l0.bias"],
        "w1": w["l1.weight"],
        "b1": w["l1.bias"],
        "w2f": w["l2.weight"][:, :, 1:],
        "b2f": w["l2.bias"][:, 1:],
        "w2d": w["l2.weight"][:, :, 0],
        "b2d": w["l2.bias"][:, :1],
        "w3": w["l3.weight"][:, rows3],
        "b3": w["l3.bias"],
        "w4t": np.transpose(w["l4.weight"], (0, 2, 1)),
        "b4": w["l4.bias"],
    }
    for name, block in blocks.items():
        flat = block.reshape(m, -1)
        out[:, off[name] : off[name] + flat.shape[1]] = flat
    return out


def source_arrays(weights: Mapping[str, Any]) -> list[np.ndarray]:
    """The ten tensors in ``WEIGHT_KEYS`` order as C-ordered numpy arrays the kernels read in place: views of
    the scene's (or the module's) own memory, float32 or float16; a copy only of a tensor that is
    non-contiguous or of another dtype (then float32)."""
    out = []
    for k in WEIGHT_KEYS:
        a = torch.as_tensor(weights[k]).detach().cpu()
        a = a if a.dtype in (torch.float16, torch.float32) else a.float()
        out.append(np.ascontiguousarray(a.numpy()))
    if len({a.dtype for a in out}) != 1:
        out = [a.astype(np.float32) for a in out]
    return out


def block_distance(fine_field: torch.Tensor, block: int) -> np.ndarray:
    """``empty_space_distance`` over blocks of ``block``³ voxels, in blocks, from the distance field over
    blocks of ``FINE_BLOCK``³ voxels ``[bx, by, bz]`` (a block may contribute when any of its fine blocks
    may, i.e. is at distance 0); flat uint8, C order."""
    coarse = coarsen_blocks(fine_field, block // FINE_BLOCK)
    return np.ascontiguousarray(empty_space_distance(coarse, cap=BLOCK_CAP).reshape(-1).numpy())


class NativeScene:
    """A scene ready for the native kernels (reuse it between frames; not thread-safe while tables build)."""

    def __init__(self, scene_or_rs: Any, *, skip_zero_octaves: bool = True) -> None:
        """From a ``renderer.scene.Scene`` (prepared on the CPU first) or a CPU ``RenderScene``.

        ``skip_zero_octaves`` False encodes all of the scene's octaves even where their weights are zero
        now: for weights that change under the scene (training reads them in place) and may leave zero.
        """
        if isinstance(scene_or_rs, RenderScene):
            rs, weights = scene_or_rs, scene_or_rs.params
        else:  # the scene's own tensors are packed: no float32 copy of them on the way
            rs, weights = prepare_scene(scene_or_rs, "cpu", weights=False), scene_or_rs.weights
        if rs.device.type != "cpu":
            raise ValueError(f"the native CPU renderer needs a scene on the CPU, not {rs.device}")
        spec = rs.spec
        self.rs = rs
        self.bbox_min, self.bbox_max, self.grid_res = spec.bbox_min, spec.bbox_max, spec.grid_res
        self.occupancy_res = rs.occupancy_res
        self.hidden = spec.hidden
        # octaves the kernels encode: the scene's, less trailing ones whose weights are all zero
        self.pos_freqs, self.dir_freqs = spec.pos_freqs, spec.dir_freqs
        if skip_zero_octaves:
            self.pos_freqs = active_octaves(weights["l0.weight"], 0, spec.pos_freqs)
            self.dir_freqs = active_octaves(weights["l3.weight"], spec.hidden, spec.dir_freqs)
        self.density_activation, self.density_scale = spec.density_activation, spec.density_scale
        self.step_size, self.ert_threshold, self.background = rs.step_size, rs.ert_threshold, rs.background
        self.num_networks = int(weights["l0.weight"].shape[0])
        self.offsets = weight_offsets(self.hidden, self.pos_freqs, self.dir_freqs)
        self.sources = source_arrays(weights)
        self.network_index = rs.network_index_flat.to(torch.int32).numpy()
        self._tables: dict[bool, tuple[np.ndarray, ...]] = {}
        self.struct = CpuScene()
        self.struct.network_index = self.network_index.ctypes.data
        self.struct.src = SourceWeights(
            (ctypes.c_void_p * len(WEIGHT_KEYS))(*(a.ctypes.data for a in self.sources)),
            int(self.sources[0].dtype == np.float16),
            spec.pos_freqs,
            spec.dir_freqs,
        )
        self.struct.off = WeightOffsets(**self.offsets)
        self.struct.voxel_size[:] = [float(v) for v in rs.voxel_size_t.tolist()]
        self.struct.fine_res[:] = list(rs.fine_res)
        self.struct.fine = FINE_BLOCK
        self.struct.block = BLOCK
        self.struct.block_res[:] = [-(-r // BLOCK) for r in rs.occupancy_res]
        self.struct.distance_cap = DISTANCE_CAP

    @property
    def weight_stride(self) -> int:
        """Floats per packed network."""
        return int(self.offsets["stride"])

    def ensure_tables(self, ess: bool) -> None:
        """Make (once) the voxel table (packed bits) and distance fields the marcher reads for ``ess``."""
        if ess not in self._tables:
            valid = self.rs.valid_bits(ess).numpy()  # the torch tables' memory, no copy
            field = self.rs.distance_field(ess)
            # the marcher gathers 32-bit words: the cached field has 4 bytes of padding after its end
            assert field.untyped_storage().nbytes() >= field.numel() + 4
            dist = field.numpy()
            blocks = block_distance(field.reshape(self.rs.fine_res), BLOCK)
            self._tables[ess] = (valid, dist, blocks)
            self.struct.valid[int(ess)] = valid.ctypes.data
            self.struct.distance[int(ess)] = dist.ctypes.data
            self.struct.block_distance[int(ess)] = blocks.ctypes.data

    def pointer(self, ess: bool) -> int:
        """Address of the ``kc::CpuScene`` with the tables for ``ess`` in place."""
        self.ensure_tables(ess)
        return ctypes.addressof(self.struct)
