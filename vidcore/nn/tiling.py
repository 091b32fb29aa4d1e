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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


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
    size times ``spec.scale``.
    """
    height, width = x.shape[-2:]
    (th, tw), (sh, sw) = spec.tile, spec.stride
    blend_h, blend_w = spec.out(th) - spec.out(sh), spec.out(tw) - spec.out(sw)
    crop_h, crop_w = spec.out(sh), spec.out(sw)
    rows: list[list[torch.Tensor]] = []
    for i in range(0, height, sh):
        rows.append([fn(x[..., i:i + th, j:j + tw]) for j in range(0, width, sw)])
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
