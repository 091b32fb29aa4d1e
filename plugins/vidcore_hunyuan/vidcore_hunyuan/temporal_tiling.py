"""Overlapping temporal windows for causal video VAEs whose norms span all frames (not streamable).

Window ``k`` covers input frames ``[k*stride, k*stride + tile + 1)`` (one extra
frame, because a causal VAE maps 1 + 4n frames to 1 + n latents). Every window
after the first drops its first output frame (it duplicates the previous
window's last), fades in linearly from its predecessor over the overlap, and
is cropped to the stride; the first keeps ``stride + 1`` frames. This is the
procedure of the official HunyuanVideo VAE (``temporal_tiled_decode``) and of
diffusers, so results match theirs for the same sizes. Generic: a candidate for
`vidcore.nn.tiling` beside the spatial `tiled_map`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def blend_frames(prev: torch.Tensor, cur: torch.Tensor, extent: int) -> torch.Tensor:
    """Fade ``cur``'s first ``extent`` frames (dim 2) in from ``prev``'s last frames (in place on ``cur``)."""
    extent = min(prev.shape[2], cur.shape[2], extent)
    for i in range(extent):
        w = i / extent
        cur[:, :, i] = prev[:, :, -extent + i] * (1 - w) + cur[:, :, i] * w
    return cur


def temporal_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, stride: int,
                   scale: float) -> torch.Tensor:
    """Apply ``fn`` over overlapping windows of ``x``'s frames (dim 2) and blend; ``scale`` = output/input frames.

    ``tile``/``stride`` are in input frames. With ``scale`` > 1 (a decoder) the
    output overlap is ``(tile - stride) * scale`` frames; with ``scale`` < 1 (an
    encoder) ``tile * scale - stride * scale``.
    """
    out_tile, out_stride = round(tile * scale), round(stride * scale)
    extent = out_tile - out_stride
    pieces: list[torch.Tensor] = []
    for k, start in enumerate(range(0, x.shape[2], stride)):
        out = fn(x[:, :, start:start + tile + 1])
        pieces.append(out if k == 0 else out[:, :, 1:])
    result = []
    for k, piece in enumerate(pieces):
        if k == 0:
            result.append(piece[:, :, :out_stride + 1])
        else:
            result.append(blend_frames(pieces[k - 1], piece, extent)[:, :, :out_stride])
    total = round((x.shape[2] - 1) * scale) + 1
    return torch.cat(result, dim=2)[:, :, :total]
