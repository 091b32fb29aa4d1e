"""VAE decode split over ranks: each rank decodes some tiles, every rank gets them all.

A tiled decode (`vidcore.nn.tiling.tiled_map`: overlapping spatial tiles
blended in row-major order) is embarrassingly parallel up to the blend. Here
rank r decodes tiles r, r + W, r + 2W, ...; the tiles are exchanged
(a broadcast from each owner) and blended by the unchanged procedure, so the
frames are bit-identical to a one-process decode with the same tiles — tile
sizes never depend on the number of ranks.

- `split_tiled_map(fn, x, spec)`: `tiled_map` with the tiles spread over the
  ranks of the active `decode_split` (a drop-in for a VAE's tiled decode).
- `map_tiles(fn, inputs)`: the hook for VAEs that cut their own tiles (spatial
  or temporal): ``[fn(t) for t in inputs]``, spread over the ranks of the
  active `decode_split` and sequential otherwise. Calls nested in a tile run
  sequentially, so a temporal tile that tiles spatially inside stays local.

`decode_split` works by setting `vidcore.nn.tiling`'s tile mapper (a context
variable), so the tiling code never imports this layer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..nn import tiling
from ..nn.tiling import TileSpec, sequential, tile_mapper, tiled_map


@contextlib.contextmanager
def decode_split(group: Any = True) -> Iterator[None]:
    """Spread the tiles of tiled calls over ``group`` (True: the whole world) for the duration of the block.

    It sets `vidcore.nn.tiling`'s tile mapper; outside ``torch.distributed`` the tiles stay sequential.
    """
    with tile_mapper(functools.partial(_spread, group=group)):
        yield


def _spread(fn: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor], group: Any
            ) -> list[torch.Tensor]:
    """``[fn(t) for t in inputs]`` with tile i computed by rank i mod W of ``group`` and shared."""
    if not dist.is_initialized():
        return sequential(fn, inputs)
    pg = None if group is True else group
    size, me = dist.get_world_size(pg), dist.get_rank(pg)
    with tile_mapper(sequential):  # tiles within a tile stay on this rank
        mine = {i: fn(t) for i, t in enumerate(inputs) if i % size == me}
    # every owner tells the others its tiles' shapes and dtype, then broadcasts each tile
    meta = [(tuple(t.shape), t.dtype) for t in mine.values()]
    metas: list[Any] = [None] * size
    dist.all_gather_object(metas, meta, group=pg)
    device = next(iter(mine.values())).device if mine else inputs[0].device
    outs = []
    for i in range(len(inputs)):
        owner = i % size
        shape, dtype = metas[owner][i // size]
        buf = mine[i].contiguous() if owner == me else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(buf, src=dist.get_global_rank(pg, owner) if pg is not None else owner, group=pg)
        outs.append(buf)
    return outs


def map_tiles(fn: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
              group: Any = None) -> list[torch.Tensor]:
    """``[fn(t) for t in inputs]``, with tile i computed by rank i mod W of ``group`` and shared.

    ``group`` defaults to the active `decode_split` (sequential when there is none).
    Every rank must call this with the same number of inputs.
    """
    if group is None:
        return tiling.map_tiles(fn, inputs)
    return _spread(fn, inputs, group)


def split_tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, spec: TileSpec,
                    group: Any = None) -> torch.Tensor:
    """`tiled_map` (same tiles, same blend, same result) with the tiles decoded across ``group``
    (True: the whole world; None: the active `decode_split`, else this process alone)."""
    height, width = x.shape[-2:]
    (th, tw), (sh, sw) = spec.tile, spec.stride
    tiles = [x[..., i:i + th, j:j + tw] for i in range(0, height, sh) for j in range(0, width, sw)]
    done = iter(map_tiles(fn, tiles, group))
    with tile_mapper(sequential):  # the blend below only looks the finished tiles up
        return tiled_map(lambda _tile: next(done), x, spec)  # tiled_map visits tiles in this row-major order
