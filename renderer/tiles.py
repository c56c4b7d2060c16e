"""Padded tiles of network-sorted samples, so that thousands of tiny MLPs run as a few ``torch.baddbmm``.

After sorting the samples by network, every network's run is cut into tiles of K samples, K from a few
sizes (``TILE_SIZES``, largest first): a run takes as many full tiles of the largest size as it fills, its
rest goes to the smaller sizes, and the last (smallest) size pads the final tile. A padded slot repeats its
tile's last sample and its result is dropped. Tiles of one size form a batch ``[T, K, D]``; the weights of
each tile's network are gathered into ``[T, Din, Dout]`` (``index_select``, whose backward is a single
``index_add``), one batched matmul per layer. Tiles are grouped into chunks (≤ ``chunk_size`` samples and
≤ ``max_tiles`` tiles) to bound memory: a tile's gathered weights are ~6.3k floats at width 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TILE_SIZES: tuple[int, ...] = (128, 64, 16)
"""Tile sizes K, largest first (2 CPU cores: batched matmuls reach ~55 GFLOP/s at K=128, ~20 at K=8)."""

MAX_TILES = 1024
"""Most tiles per chunk (their gathered weights: ~25 MB at width 32, float32)."""

TILE_WEIGHT_BYTES = 6 << 20
"""Most bytes of gathered weights per chunk when nothing is recorded for a backward (rendering): a
render's working set stays a few MB whatever the scene's width and octaves (``tiles_within``)."""


def tiles_within(bytes_per_tile: int) -> int:
    """Tiles per chunk whose gathered weights (``bytes_per_tile`` each) fit ``TILE_WEIGHT_BYTES`` (read when
    called): between 16 and ``MAX_TILES``."""
    return max(16, min(MAX_TILES, TILE_WEIGHT_BYTES // max(1, bytes_per_tile)))


@dataclass
class TileGroup:
    """The tiles of one size in one chunk."""

    size: int
    """K, samples per tile."""
    count: int
    """T, number of tiles."""
    rows: torch.Tensor
    """``[T·K]`` int64: chunk-relative sorted row of every slot (a padding slot repeats its tile's last)."""
    valid: torch.Tensor
    """``[V]`` int64: flat slot positions that hold a real sample."""
    dst: torch.Tensor
    """``[V]`` int64: chunk-relative sorted row of each real slot (``rows[valid]``)."""


@dataclass
class TileChunk:
    """A contiguous range of sorted samples and its tiles, grouped by size."""

    begin: int
    """First sorted sample."""
    end: int
    """One past the last sorted sample."""
    net: torch.Tensor
    """``[T]`` int64: network of every tile of the chunk, group after group (for one weight gather)."""
    groups: list[TileGroup]
    """Non-empty groups, in the order of ``net``."""


def _split_runs(lens: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """Tiles per run for every size: full tiles of each size, the last size (or a nearly full one) pads."""
    rest = lens
    out = []
    for i, k in enumerate(sizes):
        if i == len(sizes) - 1:
            n = (rest + (k - 1)) // k
        else:
            # one more (padded) tile of this size when it would be at least 3/4 full
            n = (rest + (k // 4)) // k
        out.append(n)
        rest = (rest - n * k).clamp_min(0)
    return out


def plan_tiles(
    seg_ids: torch.Tensor,
    seg_lens: torch.Tensor,
    *,
    chunk_size: int = 1 << 15,
    max_tiles: int | None = None,
    sizes: tuple[int, ...] | None = None,
) -> list[TileChunk]:
    """Cut sorted runs into tiles and the tiles into chunks.

    Args:
        seg_ids: ``[S]`` int64 network of each run of the sorted samples.
        seg_lens: ``[S]`` int64 length of each run (≥ 1), in sorted order; the runs cover 0..sum−1.
        chunk_size: about the most samples per chunk (a chunk may exceed it by less than one tile).
        max_tiles: the most tiles per chunk (None: ``MAX_TILES``).
        sizes: tile sizes, largest first (None: ``TILE_SIZES``).

    Returns:
        The chunks, covering the sorted samples in order.
    """
    max_tiles = MAX_TILES if max_tiles is None else max_tiles
    sizes = TILE_SIZES if sizes is None else sizes
    device = seg_lens.device
    if seg_lens.numel() == 0:
        return []
    run_end = seg_lens.cumsum(0)
    run_start = run_end - seg_lens
    per_size = _split_runs(seg_lens, sizes)
    starts, lens, nets, kinds = [], [], [], []
    offset = torch.zeros_like(seg_lens)  # samples of each run already given to larger tiles
    for b, (k, n) in enumerate(zip(sizes, per_size)):
        total = int(n.sum())
        if total:
            run = torch.repeat_interleave(torch.arange(n.numel(), device=device), n)
            run_first = (n.cumsum(0) - n).index_select(0, run)
            j = torch.arange(total, device=device) - run_first  # tile number within its run
            start = run_start.index_select(0, run) + offset.index_select(0, run) + j * k
            starts.append(start)
            lens.append(torch.minimum(run_end.index_select(0, run) - start, start.new_tensor(k)))
            nets.append(seg_ids.index_select(0, run))
            kinds.append(torch.full((total,), b, dtype=torch.int64, device=device))
        offset = offset + n * k
    start, length = torch.cat(starts), torch.cat(lens)
    net, kind = torch.cat(nets), torch.cat(kinds)
    by_start = torch.argsort(start)
    start, length, net, kind = (t.index_select(0, by_start) for t in (start, length, net, kind))
    # chunk of a tile: by the samples and the tiles before it (non-decreasing along the sample order)
    before = length.cumsum(0) - length
    chunk = torch.maximum(
        torch.div(before, chunk_size, rounding_mode="floor"),
        torch.div(torch.arange(start.numel(), device=device), max_tiles, rounding_mode="floor"),
    )
    _, per_chunk = torch.unique_consecutive(chunk, return_counts=True)
    last = per_chunk.cumsum(0) - 1
    begins = start.index_select(0, last - per_chunk + 1)
    ends = (start + length).index_select(0, last)
    start = start - torch.repeat_interleave(begins, per_chunk)  # chunk-relative
    key, by_key = torch.sort(chunk * len(sizes) + kind, stable=True)
    start, length, net = (t.index_select(0, by_key) for t in (start, length, net))
    keys, counts = torch.unique_consecutive(key, return_counts=True)
    chunks: list[TileChunk] = []
    first = pos = 0  # first tile of the current chunk, next tile
    prev = -1
    begins_l, ends_l = begins.tolist(), ends.tolist()
    for key_i, count in zip(keys.tolist(), counts.tolist()):
        c, b = divmod(key_i, len(sizes))
        if c != prev:
            if chunks:
                chunks[-1].net = net[first:pos]
            i = len(chunks)
            chunks.append(TileChunk(begin=begins_l[i], end=ends_l[i], net=net, groups=[]))
            first, prev = pos, c
        chunks[-1].groups.append(_group(sizes[b], start[pos : pos + count], length[pos : pos + count], count))
        pos += count
    chunks[-1].net = net[first:pos]
    return chunks


def _group(k: int, start: torch.Tensor, length: torch.Tensor, count: int) -> TileGroup:
    """Slot rows of ``count`` tiles of size k starting at chunk-relative rows ``start``, ``length`` long."""
    slot = torch.arange(k, device=start.device)
    rows = start[:, None] + torch.minimum(slot[None, :], (length - 1)[:, None])
    valid = (slot[None, :] < length[:, None]).reshape(-1).nonzero().squeeze(1)
    rows = rows.reshape(-1)
    return TileGroup(size=k, count=count, rows=rows, valid=valid, dst=rows.index_select(0, valid))
