"""Small layers of the HunyuanVideo DiT: embedders, the MLP, modulation and the text token refiner.

Module and attribute names follow the official ``hyvideo/modules`` so the
state dict of ``mp_rank_00_model_states.pt`` loads unchanged (``mlp.0``,
``adaLN_modulation.1``, ``individual_token_refiner.blocks.N`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidcore.kernels import gated_residual, layer_norm
from vidcore.nn import RMSNorm

from .valid_attention import valid_attention


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]`` in float32 (GLIDE / official ``timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar (timestep or guidance x 1000) -> vector: sinusoid, Linear, SiLU, Linear (``mlp.0``/``mlp.2``)."""

    def __init__(self, hidden: int, freq_dim: int = 256, **factory):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden, **factory), nn.SiLU(),
                                 nn.Linear(hidden, hidden, **factory))

    def forward(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``dtype``: the model's compute dtype (weights may be stored in fp8 by a memory policy)."""
        return self.mlp(timestep_embedding(t, self.freq_dim).to(dtype or self.mlp[0].weight.dtype))


class MLPEmbedder(nn.Module):
    """``vector_in``: the CLIP pooled text vector into the modulation vector."""

    def __init__(self, in_dim: int, hidden: int, **factory):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden, **factory)
        self.out_layer = nn.Linear(hidden, hidden, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class TextProjection(nn.Module):
    """``c_embedder``: the refiner's pooled-text vector (``linear_1``, SiLU, ``linear_2``)."""

    def __init__(self, in_dim: int, hidden: int, **factory):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden, **factory)
        self.linear_2 = nn.Linear(hidden, hidden, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class MLP(nn.Module):
    """fc1, activation, fc2 (GELU-tanh in the DiT blocks, SiLU in the token refiner)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu_tanh", **factory):
        super().__init__()
        self.act = act
        self.fc1 = nn.Linear(dim, hidden, **factory)
        self.fc2 = nn.Linear(hidden, dim, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h, approximate="tanh") if self.act == "gelu_tanh" else F.silu(h)
        return self.fc2(h)


class Modulation(nn.Module):
    """``ModulateDiT``: ``linear(silu(vec))`` giving ``factor`` chunks of modulation parameters."""

    def __init__(self, hidden: int, factor: int, **factory):
        super().__init__()
        self.factor = factor
        self.linear = nn.Linear(hidden, factor * hidden, **factory)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(vec)).chunk(self.factor, dim=-1)


RMSNormWeight = RMSNorm  # the per-head QK norm: the core RMSNorm (state-dict name ``weight``)


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L, 3*H*D) fused projection -> q, k, v as (B, H, L, D) (q|k|v stacked, heads inside each)."""
    q, k, v = rearrange(qkv, "b l (k h d) -> k b h l d", k=3, h=heads)
    return q, k, v


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b h l d -> b l (h d)")


class IndividualTokenRefinerBlock(nn.Module):
    """Self-attention + SiLU MLP over the text tokens, gated by the (timestep + pooled text) vector."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool = True, **factory):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, **factory)
        self.self_attn_qkv = nn.Linear(hidden, 3 * hidden, bias=qkv_bias, **factory)
        self.self_attn_proj = nn.Linear(hidden, hidden, bias=qkv_bias, **factory)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, **factory)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio), act="silu", **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, **factory))

    def forward(self, x: torch.Tensor, c: torch.Tensor, lengths: Sequence[int] | None) -> torch.Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=-1)
        h = layer_norm(x, self.norm1.weight, self.norm1.bias, self.norm1.eps)
        q, k, v = split_heads(self.self_attn_qkv(h), self.heads)
        attn = merge_heads(valid_attention(q, k, v, lengths))
        x = gated_residual(x, self.self_attn_proj(attn), gate_msa[:, None])
        h = layer_norm(x, self.norm2.weight, self.norm2.bias, self.norm2.eps)
        return gated_residual(x, self.mlp(h), gate_mlp[:, None])


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int, mlp_ratio: float, **factory):
        super().__init__()
        self.blocks = nn.ModuleList(
            [IndividualTokenRefinerBlock(hidden, heads, mlp_ratio, **factory) for _ in range(depth)])

    def forward(self, x: torch.Tensor, c: torch.Tensor, lengths: Sequence[int] | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, c, lengths)
        return x


class SingleTokenRefiner(nn.Module):
    """``txt_in``: projects LLM hidden states to the DiT width and refines them (LI-DiT style).

    The conditioning vector is ``t_embedder(t) + c_embedder(mean of the valid
    tokens)``. The official code masks padding out of the refiner's attention
    and of the mean; we get identical valid-token outputs by never looking past
    each sample's valid length (``lengths``).
    """

    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int, mlp_ratio: float = 4.0,
                 freq_dim: int = 256, **factory):
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden, **factory)
        self.t_embedder = TimestepEmbedder(hidden, freq_dim, **factory)
        self.c_embedder = TextProjection(in_dim, hidden, **factory)
        self.individual_token_refiner = IndividualTokenRefiner(hidden, heads, depth, mlp_ratio, **factory)

    def forward(self, x: torch.Tensor, t: torch.Tensor, lengths: Sequence[int] | None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.input_embedder.weight.dtype
        if lengths is None:
            pooled = x.float().mean(dim=1)
        else:
            idx = torch.arange(x.shape[1], device=x.device)
            valid = (idx[None, :] < torch.tensor(list(lengths), device=x.device)[:, None]).float()[..., None]
            pooled = (x.float() * valid).sum(dim=1) / valid.sum(dim=1)
        c = self.t_embedder(t, dtype) + self.c_embedder(pooled.to(dtype))
        return self.individual_token_refiner(self.input_embedder(x.to(dtype)), c, lengths)
