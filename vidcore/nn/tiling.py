"""Spatial tiling with overlap blending, for VAEs whose activations do not fit at full frame size.

A tiled run cuts the input's last two dims into overlapping tiles, runs the
model on each, and blends each output tile linearly into its already-finished
upper and left neighbours across the overlap before cropping it to the tile
stride. Peak memory follows the tile size instead of the frame size; the
price is a result that differs slightly from the untiled one near tile seams
(each tile sees less context), which is why tiling is an opt-in memory option.

The procedure (tile origins on a stride grid, blend with the finished
neighbour above, then the one to the left, in row-major order, crop to the
stride) is the one diffusers' video VAEs use, so a tiled decode matches theirs
given the same tile sizes.

Tiles are computed through a *tile mapper*, ``mapper(fn, tiles) -> [fn(t) for t
in tiles]``: sequential by default. `tile_mapper` sets another for a block of
code (the distributed layer spreads a decode's tiles over the ranks that way,
`vidcore.distributed.vae.decode_split`); this module knows nothing about it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]
#: ``mapper(fn, tiles)`` -> ``[fn(t) for t in tiles]``, in order, however it computes them
TileMapper = Callable[[TileFn, Sequence[torch.Tensor]], list[torch.Tensor]]


def sequential(fn: TileFn, tiles: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The default tile mapper: one tile after the other, in this process."""
    return [fn(t) for t in tiles]


_MAPPER: ContextVar[TileMapper] = ContextVar("vidcore_tile_mapper", default=sequential)


@contextlib.contextmanager
def tile_mapper(mapper: TileMapper) -> Iterator[None]:
    """Compute the tiles of every tiled call in the block with ``mapper``."""
    token = _MAPPER.set(mapper)
    try:
        yield
    finally:
        _MAPPER.reset(token)


def map_tiles(fn: TileFn, tiles: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[fn(t) for t in tiles]`` through the active tile mapper (`tile_mapper`; sequential by default)."""
    return _MAPPER.get()(fn, tiles)


@dataclass(frozen=True)
class TileSpec:
    """Tile size and stride in input units, and output units per input unit (e.g. 8 for a decoder)."""

    tile: tuple[int, int]
    stride: tuple[int, int]
    scale: float = 1.0

    def __post_init__(self) -> None:
        for t, s in zip(self.tile, self.stride):
            if not 0 < s <= t:
                raise ValueError(f"tile stride {self.stride} must be positive and at most the tile size {self.tile}")
        if self.scale <= 0:
            raise ValueError("scale must be positive")

    def out(self, n: int) -> int:
        return int(n * self.scale)

    def needed(self, height: int, width: int) -> bool:
        """Whether an input of this size spans more than one tile."""
        return height > self.tile[0] or width > self.tile[1]


def blend_rows(above: torch.Tensor, below: torch.Tensor, extent: int) -> torch.Tensor:
    """Fade ``below``'s first ``extent`` rows in from ``above``'s last rows (in place on ``below``)."""
    extent = min(above.shape[-2], below.shape[-2], extent)
    for y in range(extent):
        w = y / extent
        below[..., y, :] = above[..., -extent + y, :] * (1 - w) + below[..., y, :] * w
    return below


def blend_cols(left: torch.Tensor, right: torch.Tensor, extent: int) -> torch.Tensor:
    """Fade ``right``'s first ``extent`` columns in from ``left``'s last columns (in place on ``right``)."""
    extent = min(left.shape[-1], right.shape[-1], extent)
    for x in range(extent):
        w = x / extent
        right[..., x] = left[..., -extent + x] * (1 - w) + right[..., x] * w
    return right


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, spec: TileSpec) -> torch.Tensor:
    """Apply ``fn`` tile by tile over ``x``'s last two dims and blend the results into one tensor.

    ``fn`` maps a tile (..., h, w) to (..., h*scale, w*scale) (leading dims may
    change, e.g. channels or frames). The output is cropped to the full input
    size times ``spec.scale``. The tiles go through the active tile mapper (`tile_mapper`).
    """
    height, width = x.shape[-2:]
    (th, tw), (sh, sw) = spec.tile, spec.stride
    blend_h, blend_w = spec.out(th) - spec.out(sh), spec.out(tw) - spec.out(sw)
    crop_h, crop_w = spec.out(sh), spec.out(sw)
    row_starts, col_starts = range(0, height, sh), range(0, width, sw)
    done = iter(map_tiles(fn, [x[..., i:i + th, j:j + tw] for i in row_starts for j in col_starts]))
    rows: list[list[torch.Tensor]] = [[next(done) for _ in col_starts] for _ in row_starts]
    out_rows = []
    for i, row in enumerate(rows):
        pieces = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = blend_rows(rows[i - 1][j], tile, blend_h)
            if j > 0:
                tile = blend_cols(row[j - 1], tile, blend_w)
            pieces.append(tile[..., :crop_h, :crop_w])
        out_rows.append(torch.cat(pieces, dim=-1))
    return torch.cat(out_rows, dim=-2)[..., :spec.out(height), :spec.out(width)]


def blend_frames(prev: torch.Tensor, cur: torch.Tensor, extent: int) -> torch.Tensor:
    """Fade ``cur``'s first ``extent`` frames (dim 2) in from ``prev``'s last frames (in place on ``cur``)."""
    extent = min(prev.shape[2], cur.shape[2], extent)
    for i in range(extent):
        w = i / extent
        cur[:, :, i] = prev[:, :, -extent + i] * (1 - w) + cur[:, :, i] * w
    return cur


def temporal_tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, stride: int,
                       scale: float) -> torch.Tensor:
    """Apply ``fn`` over overlapping windows of ``x``'s frames (dim 2) and blend; ``scale`` = output/input frames.

    For causal video VAEs whose norms span all frames (not streamable chunk by
    chunk). Window k covers input frames ``[k*stride, k*stride + tile + 1)`` (one
    extra frame: a causal VAE maps 1 + 4n frames to 1 + n latents); every window
    after the first drops its first output frame, fades in from its predecessor
    over the overlap and is cropped to the stride; the first keeps ``stride + 1``
    frames (HunyuanVideo's ``temporal_tiled_decode``). ``tile``/``stride`` are in
    input frames; the windows go through the active tile mapper (`tile_mapper`).
    """
    out_tile, out_stride = round(tile * scale), round(stride * scale)
    extent = out_tile - out_stride
    outs = map_tiles(fn, [x[:, :, start:start + tile + 1] for start in range(0, x.shape[2], stride)])
    pieces = [out if k == 0 else out[:, :, 1:] for k, out in enumerate(outs)]
    result = []
    for k, piece in enumerate(pieces):
        if k == 0:
            result.append(piece[:, :, :out_stride + 1])
        else:
            result.append(blend_frames(pieces[k - 1], piece, extent)[:, :, :out_stride])
    total = round((x.shape[2] - 1) * scale) + 1
    return torch.cat(result, dim=2)[:, :, :total]
