"""A small per-frame convolutional head that refines a pixel-space DiT's output.

Why: a pixel DiT with large patches decides each patch's pixels token by token
through one linear layer, so neighbouring patches that disagree about an edge
leave seams, holes and blocky outlines that no amount of sampling removes. A
few 3x3 convolutions across patch borders, seeing the network's output next to
its noisy input and modulated by the same timestep + condition vector, can
reconcile them at a fraction of the transformer's cost. The last convolution
starts at zero, so the head starts as the identity and can be added to a
trained network and fine-tuned.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PixelRefiner(nn.Module):
    """``refiner(out, x_in, c)`` -> ``out`` + a learned per-frame correction (same shape as ``out``)."""

    def __init__(self, out_channels: int, in_channels: int, width: int, cond_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(out_channels + in_channels, width, 3, padding=1)
        self.modulation = nn.Linear(cond_dim, 2 * width)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        for layer in (self.modulation, self.conv_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, out: torch.Tensor, x_in: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """out (B, C, T, H, W); x_in (B, C_in, T, H, W) the network's input; c (B, D) condition vector."""
        B, _, T, _, _ = out.shape
        h = rearrange(torch.cat([out, x_in.to(out.dtype)], dim=1), "b c t h w -> (b t) c h w")
        h = self.conv_in(h)
        scale, shift = self.modulation(c).repeat_interleave(T, dim=0)[..., None, None].chunk(2, dim=1)
        h = nn.functional.silu(h * (1 + scale) + shift)
        h = nn.functional.silu(self.conv_mid(h))
        return out + rearrange(self.conv_out(h), "(b t) c h w -> b c t h w", b=B)
