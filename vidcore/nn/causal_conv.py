"""Causal 3D convolution that can run a video whole or chunk by chunk with identical results.

Video VAEs (Wan, HunyuanVideo) pad their temporal convolutions only on the
past side, so frame t never sees frame t+1. That makes them streamable: the
video can be encoded or decoded a few frames at a time, carrying forward only
the last ``kernel - 1`` input frames of each convolution. Peak memory then
depends on the chunk, not on the video length.

`CausalConv3d.forward(x, cache)` does exactly that. Without a cache it
convolves the whole clip. With a `CausalCache` it treats ``x`` as the next
piece of a stream: it prepends what the cache kept from earlier pieces (or the
causal padding on the first piece), emits every output frame that is now
complete, and keeps the input frames the next output still needs. Running the
pieces of a clip through one cache gives the same frames as running the clip
whole, for any stride, dilation and chunk split (up to float round-off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class CausalCache:
    """Streaming state of one encode/decode run: whatever each causal layer carries between chunks.

    Keyed by module, so a model needs no bookkeeping of layer indices; create a
    fresh cache per clip (or per spatial tile) and drop it afterwards.
    """

    def __init__(self) -> None:
        self._state: dict[int, Any] = {}

    def get(self, module: nn.Module, default: Any = None) -> Any:
        return self._state.get(id(module), default)

    def set(self, module: nn.Module, value: Any) -> None:
        self._state[id(module)] = value

    def __contains__(self, module: nn.Module) -> bool:
        return id(module) in self._state

    def clear(self) -> None:
        self._state.clear()


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 values, got {v!r}")
    return t  # type: ignore[return-value]


class CausalConv3d(nn.Conv3d):
    """``nn.Conv3d`` padded causally in time; parameters are those of ``nn.Conv3d`` (same state-dict names).

    Args:
        padding: spatial (and, by default, temporal) padding as for ``nn.Conv3d``;
            height/width are padded symmetrically.
        time_pad: frames of padding before the first frame. Default ``2 * padding[0]``,
            which keeps the frame count for stride 1 (the convention of Wan's VAE;
            ``kernel_t - 1`` is the same for the usual odd kernels).
        pad_mode: ``"zeros"`` or ``"replicate"`` (repeat the first frame / edge pixels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, *, time_pad: int | None = None, pad_mode: str = "zeros",
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        if pad_mode not in ("zeros", "replicate"):
            raise ValueError(f"pad_mode must be 'zeros' or 'replicate', not {pad_mode!r}")
        pad = _triple(padding)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, dilation=dilation,
                         bias=bias, device=device, dtype=dtype)
        self.time_pad = 2 * pad[0] if time_pad is None else int(time_pad)
        self.space_pad = (pad[1], pad[2])
        self.pad_mode = pad_mode
        if pad_mode == "zeros":  # let the convolution pad space itself (no padded copy of the input)
            self.padding = (0, pad[1], pad[2])

    @property
    def receptive_frames(self) -> int:
        """Input frames one output frame spans (dilated temporal kernel)."""
        return self.dilation[0] * (self.kernel_size[0] - 1) + 1

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_mode == "replicate" and any(self.space_pad):
            ph, pw = self.space_pad
            x = F.pad(x, (pw, pw, ph, ph, 0, 0), mode="replicate")
        return super().forward(x)

    def _front_pad(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:2], self.time_pad, *x.shape[3:])
        if self.pad_mode == "replicate":
            return x[:, :, :1].expand(shape)
        return x.new_zeros(shape)

    def _empty_output(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dims = []
        for size, pad, k, s, d in zip((h, w), self.space_pad, self.kernel_size[1:], self.stride[1:], self.dilation[1:]):
            dims.append((size + 2 * pad - d * (k - 1) - 1) // s + 1)
        return x.new_empty(x.shape[0], self.out_channels, 0, *dims)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """Convolve ``x`` (B, C, T, H, W): the whole clip, or the next chunk of a stream held in ``cache``."""
        if cache is None:
            if self.time_pad:
                x = torch.cat([self._front_pad(x), x], dim=2)
            return self._conv(x)
        kept = cache.get(self)
        if kept is None:
            kept = self._front_pad(x) if self.time_pad else None
        stream = x if kept is None or kept.shape[2] == 0 else torch.cat([kept.to(x), x], dim=2)
        span, step = self.receptive_frames, self.stride[0]
        n_out = (stream.shape[2] - span) // step + 1 if stream.shape[2] >= span else 0
        # the next output starts at input frame n_out*step: keep that tail (a copy, so the chunk can be freed)
        cache.set(self, stream[:, :, n_out * step:].clone())
        if n_out == 0:
            return self._empty_output(x)
        return self._conv(stream[:, :, : (n_out - 1) * step + span])


def chunk_sizes(frames: int, first: int = 1, size: int = 4) -> list[int]:
    """Split ``frames`` into a first chunk of ``first`` frames and then chunks of ``size`` (the last may be short)."""
    if frames <= 0:
        return []
    out = [min(first, frames)]
    rest = frames - out[0]
    while rest > 0:
        out.append(min(size, rest))
        rest -= out[-1]
    return out


def run_chunked(fn: Callable[[torch.Tensor, CausalCache], torch.Tensor], x: torch.Tensor,
                sizes: Iterable[int], dim: int = 2) -> torch.Tensor:
    """Run ``fn(chunk, cache)`` over consecutive chunks of ``x`` along ``dim`` with one cache; concatenate."""
    cache = CausalCache()
    outs, start = [], 0
    for n in sizes:
        outs.append(fn(x.narrow(dim, start, n), cache))
        start += n
    if start != x.shape[dim]:
        raise ValueError(f"chunk sizes cover {start} of {x.shape[dim]} frames")
    return torch.cat(outs, dim=dim)
