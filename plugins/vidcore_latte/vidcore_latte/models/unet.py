"""A basic 3D U-Net in pixel space: the simple model to learn from (DDPM eps-prediction by default).

Residual blocks of 3D convolutions (GroupNorm + SiLU) take the timestep and
condition embedding as a per-channel shift; the lowest resolution adds
per-frame spatial self-attention through `vidcore.attention`. Down/upsampling
is 2x in space only, so any frame count works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidcore import attention
from vidcore.kernels import gated_residual
from vidcore.nn import BlockStack

from .embed import TimestepEmbedder


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    groups: int = 8
    heads: int = 4
    mid_blocks: int = 2
    context_dim: int = 0
    num_classes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))


class ResBlock3D(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, *, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return gated_residual(self.skip(x), h)


class FrameAttention(nn.Module):
    """Self-attention over each frame's pixels (B*T sequences of H*W tokens)."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv3d(ch, 3 * ch, 1)
        self.proj = nn.Conv3d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, *, emb: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        qkv = self.qkv(self.norm(x)).permute(0, 2, 3, 4, 1).reshape(B * T, H * W, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = attention(q, k, v).transpose(1, 2).reshape(B, T, H, W, C).permute(0, 4, 1, 2, 3)
        return gated_residual(x, self.proj(out))


class UNet3D(nn.Module):
    """``network(x, timestep, context=None, labels=None)`` -> prediction, x (B, C, T, H, W)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = c = config
        emb = 4 * c.base_channels
        self.t_embed = TimestepEmbedder(emb)
        self.context_proj = nn.Linear(c.context_dim, emb) if c.context_dim else None
        self.label_embed = nn.Embedding(c.num_classes + 1, emb) if c.num_classes else None
        chs = [c.base_channels * m for m in c.channel_mult]
        self.conv_in = nn.Conv3d(c.in_channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = chs[0]
        for i, ch in enumerate(chs):
            self.down.append(ResBlock3D(prev, ch, emb, c.groups))
            prev = ch
            if i < len(chs) - 1:
                self.downsample.append(nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        mid: list[nn.Module] = []
        for _ in range(c.mid_blocks):
            mid += [ResBlock3D(prev, prev, emb, c.groups), FrameAttention(prev, c.heads, c.groups)]
        self.mid = BlockStack(mid)
        self.up = nn.ModuleList()
        for ch in reversed(chs):
            self.up.append(ResBlock3D(prev + ch, ch, emb, c.groups))
            prev = ch
        self.norm_out = nn.GroupNorm(c.groups, prev)
        self.conv_out = nn.Conv3d(prev, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        B = x.shape[0]
        t = torch.as_tensor(timestep, device=x.device, dtype=torch.float32).reshape(-1).expand(B)
        emb = self.t_embed(t)
        if self.context_proj is not None and context is not None:
            emb = emb + self.context_proj(context.to(emb.dtype))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((B,), self.config.num_classes, device=x.device)
            emb = emb + self.label_embed(labels)
        emb = F.silu(emb)
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb=emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb=emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                B_, C_, T_, H_, W_ = h.shape
                h = F.interpolate(h.transpose(1, 2).reshape(B_ * T_, C_, H_, W_), size=skip.shape[-2:],
                                  mode="nearest").view(B_, T_, C_, *skip.shape[-2:]).transpose(1, 2)
            h = block(torch.cat([h, skip], dim=1), emb=emb)
        return self.conv_out(F.silu(self.norm_out(h)))
