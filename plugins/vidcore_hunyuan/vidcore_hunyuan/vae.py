"""HunyuanVideo's causal 3D VAE ('884-16c-hy': 4x temporal, 8x spatial, 16 latent channels).

Architecture and state-dict names follow the official
``hyvideo/vae`` ``AutoencoderKLCausal3D`` (causal convolutions wrapped one
level deep, hence ``conv_in.conv.weight``; the mid-block attention is
diffusers' ``Attention`` layout: ``group_norm``, ``to_q``/``to_k``/``to_v``,
``to_out.0``). Convolutions pad causally in time and replicate at the edges
(`vidcore.nn.causal_conv.CausalConv3d` with ``pad_mode="replicate"``).

GroupNorm statistics span every frame and the mid-block attention sees all
earlier frames, so this VAE is not a streaming one: long or large videos are
decoded the official way, in overlapping temporal windows and spatial tiles
blended linearly (`decode(tiling=...)`, on by default as in the official
``--vae-tiling``). Numerics follow the official fp16 run under autocast:
norms and SiLU in float32, convolutions in the weight dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import vidcore
from vidcore.nn.causal_conv import CausalConv3d
from vidcore.nn.tiling import TileSpec, tiled_map
from vidcore.nn.tiling import temporal_tiled_map as temporal_tiled

from .params import VAEParams


class CausalConv(nn.Module):
    """The official ``CausalConv3d`` wrapper: replicate padding, ``kernel - 1`` frames in front (``.conv``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int | tuple[int, int, int] = 1, **factory):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, kernel, stride=stride, padding=kernel // 2, time_pad=kernel - 1,
                                 pad_mode="replicate", **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.to(self.conv.weight.dtype))


def _norm_act(norm: nn.GroupNorm, x: torch.Tensor, act: bool = True) -> torch.Tensor:
    """GroupNorm (+ SiLU) in float32, as autocast runs it; the next convolution casts back."""
    y = F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps)
    return F.silu(y) if act else y


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, **factory):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6, **factory)
        self.conv1 = CausalConv(cin, cout, 3, **factory)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6, **factory)
        self.conv2 = CausalConv(cout, cout, 3, **factory)
        self.conv_shortcut = CausalConv(cin, cout, 1, **factory) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_norm_act(self.norm1, x))
        h = self.conv2(_norm_act(self.norm2, h))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return skip.to(h.dtype) + h


class MidAttention(nn.Module):
    """Single-head self-attention over all tokens of a clip, causal by frame (a frame sees itself and the past)."""

    def __init__(self, ch: int, groups: int, **factory):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=1e-6, **factory)
        self.to_q = nn.Linear(ch, ch, **factory)
        self.to_k = nn.Linear(ch, ch, **factory)
        self.to_v = nn.Linear(ch, ch, **factory)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch, **factory)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        dtype = self.to_q.weight.dtype
        tokens = _norm_act(self.group_norm, x, act=False).to(dtype).permute(0, 2, 3, 4, 1).reshape(b, 1, t * h * w, c)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        n = h * w
        # frame-causal attention without a (T*H*W)^2 mask: frame f attends to frames 0..f
        out = torch.cat([vidcore.attention(q[:, :, f * n:(f + 1) * n], k[:, :, :(f + 1) * n], v[:, :, :(f + 1) * n])
                         for f in range(t)], dim=2)
        out = self.to_out[0](out).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return out + x.to(out.dtype)


class MidBlock(nn.Module):
    def __init__(self, ch: int, groups: int, attention: bool, **factory):
        super().__init__()
        self.attentions = nn.ModuleList([MidAttention(ch, groups, **factory)] if attention else [])
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, groups, **factory) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    def __init__(self, ch: int, stride: tuple[int, int, int], **factory):
        super().__init__()
        self.conv = CausalConv(ch, ch, 3, stride=stride, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling (the first frame only in space, the rest in time and space), then a causal conv."""

    def __init__(self, ch: int, factor: tuple[int, int, int], **factory):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv(ch, ch, 3, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.interpolate(x[:, :, 0], scale_factor=self.factor[1:], mode="nearest")[:, :, None]
        if x.shape[2] > 1:
            rest = F.interpolate(x[:, :, 1:].contiguous(), scale_factor=self.factor, mode="nearest")
            first = torch.cat([first, rest], dim=2)
        return self.conv(first)


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, stride: tuple[int, int, int] | None, **factory):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(cin if i == 0 else cout, cout, groups, **factory) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample(cout, stride, **factory)]) if stride else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return self.downsamplers[0](x) if self.downsamplers is not None else x


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, factor: tuple[int, int, int] | None,
                 **factory):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(cin if i == 0 else cout, cout, groups, **factory) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(cout, factor, **factory)]) if factor else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


def _factors(p: VAEParams, i: int) -> tuple[int, int, int] | None:
    """Stride of block ``i``'s resampler (official rule: space in the first log2(8) blocks, time in the last
    log2(4) non-final ones)."""
    n = len(p.block_out_channels)
    final = i == n - 1
    space = i < n - 1 and 2 ** (i + 1) <= p.spatial_compression
    time = (i >= n - 1 - p.time_down_blocks) and not final
    if not (space or time):
        return None
    return (2 if time else 1, 2 if space else 1, 2 if space else 1)


class Encoder(nn.Module):
    def __init__(self, p: VAEParams, **factory):
        super().__init__()
        ch, g = p.block_out_channels, p.norm_groups
        self.conv_in = CausalConv(p.in_channels, ch[0], 3, **factory)
        self.down_blocks = nn.ModuleList(
            [DownBlock(ch[max(i - 1, 0)], ch[i], p.layers_per_block, g, _factors(p, i), **factory)
             for i in range(len(ch))])
        self.mid_block = MidBlock(ch[-1], g, p.mid_attention, **factory)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6, **factory)
        self.conv_out = CausalConv(ch[-1], 2 * p.latent_channels, 3, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(_norm_act(self.conv_norm_out, x))


class Decoder(nn.Module):
    def __init__(self, p: VAEParams, **factory):
        super().__init__()
        ch, g = list(reversed(p.block_out_channels)), p.norm_groups
        self.conv_in = CausalConv(p.latent_channels, ch[0], 3, **factory)
        self.mid_block = MidBlock(ch[0], g, p.mid_attention, **factory)
        self.up_blocks = nn.ModuleList(
            [UpBlock(ch[max(i - 1, 0)], ch[i], p.layers_per_block + 1, g, _factors(p, i), **factory)
             for i in range(len(ch))])
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6, **factory)
        self.conv_out = CausalConv(ch[-1], p.out_channels, 3, **factory)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(_norm_act(self.conv_norm_out, x))


@dataclass(frozen=True)
class VAETiling:
    """Tile sizes in pixels / frames (official: 256 px tiles, 0.25 overlap; 64-frame windows, 0.25 overlap)."""

    tile: int = 256
    stride: int = 192
    tile_frames: int = 64
    stride_frames: int = 48


OFFICIAL_TILING = VAETiling()


class HunyuanVideoVAE(nn.Module):
    """``AutoencoderKLCausal3D``: ``encode`` pixels in [-1, 1] to (unscaled) latent means; ``decode`` back."""

    def __init__(self, p: VAEParams, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.params = p
        self.encoder = Encoder(p, **factory)
        self.decoder = Decoder(p, **factory)
        self.quant_conv = nn.Conv3d(2 * p.latent_channels, 2 * p.latent_channels, 1, **factory)
        self.post_quant_conv = nn.Conv3d(p.latent_channels, p.latent_channels, 1, **factory)

    # -- whole-clip passes ------------------------------------------------------------------
    def _encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return self.quant_conv(h.to(self.quant_conv.weight.dtype))

    def _decode_whole(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z.to(self.post_quant_conv.weight.dtype)))

    # -- public -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, tiling: VAETiling | None = OFFICIAL_TILING) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> latent mean (B, C, (T-1)/4+1, H/8, W/8), before ``scaling_factor``."""
        s, tc = self.params.spatial_compression, self.params.time_compression
        fn = self._encode_moments
        if tiling is not None:
            spec = TileSpec((tiling.tile, tiling.tile), (tiling.stride, tiling.stride), 1 / s)

            def spatial(v: torch.Tensor) -> torch.Tensor:
                return tiled_map(self._encode_moments, v, spec) if spec.needed(*v.shape[-2:]) else \
                    self._encode_moments(v)

            fn = spatial
            if x.shape[2] > tiling.tile_frames:
                moments = temporal_tiled(fn, x, tiling.tile_frames, tiling.stride_frames, 1 / tc)
                return moments.chunk(2, dim=1)[0]
        return fn(x).chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor, tiling: VAETiling | None = OFFICIAL_TILING) -> torch.Tensor:
        """Unscaled latents (B, C, T', H', W') -> pixels (B, 3, 4(T'-1)+1, 8H', 8W') in about [-1, 1]."""
        if tiling is None:
            return self._decode_whole(z)
        s, tc = self.params.spatial_compression, self.params.time_compression
        spec = TileSpec((tiling.tile // s, tiling.tile // s), (tiling.stride // s, tiling.stride // s), s)

        def spatial(v: torch.Tensor) -> torch.Tensor:
            return tiled_map(self._decode_whole, v, spec) if spec.needed(*v.shape[-2:]) else self._decode_whole(v)

        if z.shape[2] > tiling.tile_frames // tc:
            return temporal_tiled(spatial, z, tiling.tile_frames // tc, tiling.stride_frames // tc, tc)
        return spatial(z)
