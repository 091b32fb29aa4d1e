"""Embeddings shared by the DiT and the U-Net: sinusoidal timesteps and fixed sin-cos positions."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) float values -> (N, dim) [cos | sin] features, computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2D positions (height*width, dim): half the channels encode rows, half columns."""
    rows = sinusoidal(torch.arange(height, device=device).float(), dim // 2)
    cols = sinusoidal(torch.arange(width, device=device).float(), dim - dim // 2)
    return torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], -1).flatten(0, 1)


class TimestepEmbedder(nn.Module):
    """Timestep (any float scale, 0..1000 by convention) -> hidden vector, through a 2-layer MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
