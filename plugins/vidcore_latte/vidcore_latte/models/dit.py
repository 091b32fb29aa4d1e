"""Latte-style video DiT: patchified frames, factorised spatial/temporal attention, AdaLN-Zero.

Each block modulates three sub-layers (spatial attention over one frame's
tokens, temporal attention over one position's frames, GEGLU feed-forward)
with shift/scale/gate from the timestep + condition vector; gates start at
zero so every block starts as the identity (AdaLN-Zero). ``attention="full"``
replaces the two attentions by one over all tokens of the clip.

Conditioning: a pooled condition vector (text encoder output) and/or a class
label enter the AdaLN vector; past frames for prediction enter as extra input
channels concatenated to the noisy latents (their clean values and a 0/1 mask
of which frames are given) when ``config.frame_conditioning`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vidcore import attention
from vidcore.distributed.plan import SequenceParallelPlan, StackPlan, Tokens
from vidcore.kernels import gated_residual, norm_modulate, rms_norm
from vidcore.nn import BlockStack

from .embed import TimestepEmbedder, sincos_2d, sinusoidal
from .refine import PixelRefiner


@dataclass(frozen=True)
class LatteConfig:
    in_channels: int = 4
    hidden: int = 512
    depth: int = 8
    heads: int = 8
    patch: int = 2
    temporal_patch: int = 1
    ff_mult: float = 4.0
    attention: str = "factorised"  # or "full"
    qk_norm: bool = True
    context_dim: int = 0  # pooled condition (text) vector size; 0: none
    num_classes: int = 0  # class-label conditioning (index num_classes is the null class)
    frame_conditioning: bool = False  # past frames + mask as extra input channels
    refine: int = 0  # width of a per-frame conv head over the output (models/refine.py); 0: none (as Latte)
    refine_levels: int = 0  # U-Net levels of the refiner's wide-context branch; 0: none

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.attention not in ("factorised", "full"):
            raise ValueError(f"attention must be 'factorised' or 'full', not {self.attention!r}")
        if self.refine_levels and not self.refine:
            raise ValueError("refine_levels needs a refiner: set refine to its width (e.g. 16) too")

    @property
    def input_channels(self) -> int:
        return 2 * self.in_channels + 1 if self.frame_conditioning else self.in_channels


PRESETS: dict[str, dict] = {
    "small": {"hidden": 512, "depth": 8, "heads": 8},
    "medium": {"hidden": 768, "depth": 12, "heads": 12},
    "large": {"hidden": 1024, "depth": 24, "heads": 16},
    "XL": {"hidden": 1536, "depth": 28, "heads": 24},
}


def preset(name: str, **overrides) -> LatteConfig:
    """A size preset (small/medium/large/XL) with any field overridden."""
    from vidcore.errors import UnknownNameError

    if name not in PRESETS:
        raise UnknownNameError("Latte size preset", name, list(PRESETS))
    return LatteConfig(**{**PRESETS[name], **overrides})


class Attention(nn.Module):
    """Multi-head self-attention with RMS QK-normalisation, through `vidcore.attention`."""

    def __init__(self, hidden: int, heads: int, qk_norm: bool, sequence_parallel: bool = False):
        super().__init__()
        self.heads = heads
        self.sequence_parallel = sequence_parallel  # attends across frames: spans every SP rank
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        head_dim = hidden // heads
        self.q_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None
        self.k_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            q, k = rms_norm(q, self.q_norm), rms_norm(k, self.k_norm)
        out = attention(q, k, v, sequence_parallel=self.sequence_parallel)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class GEGLU(nn.Module):
    def __init__(self, hidden: int, mult: float):
        super().__init__()
        inner = int(hidden * mult)
        self.proj_in = nn.Linear(hidden, 2 * inner)
        self.proj_out = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * nn.functional.gelu(gate))


class LatteBlock(nn.Module):
    """Spatial attention, temporal attention (or one full attention), GEGLU; each AdaLN-Zero gated."""

    def __init__(self, config: LatteConfig):
        super().__init__()
        h = config.hidden
        self.full = config.attention == "full"
        self.spatial = Attention(h, config.heads, config.qk_norm, sequence_parallel=self.full)
        self.temporal = None if self.full else Attention(h, config.heads, config.qk_norm, sequence_parallel=True)
        self.ff = GEGLU(h, config.ff_mult)
        self.n_mod = 6 if self.full else 9
        self.modulation = nn.Linear(h, self.n_mod * h)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, *, c: torch.Tensor) -> torch.Tensor:
        """x (B, T, N, D) tokens; c (B, D) condition vector (SiLU already applied)."""
        B, T, N, D = x.shape
        mods = self.modulation(c)[:, None, None].chunk(self.n_mod, dim=-1)
        if self.full:
            h = norm_modulate(x, mods[0], mods[1]).reshape(B, T * N, D)
            x = gated_residual(x, self.spatial(h).view(B, T, N, D), mods[2])
        else:
            h = norm_modulate(x, mods[0], mods[1]).reshape(B * T, N, D)
            x = gated_residual(x, self.spatial(h).view(B, T, N, D), mods[2])
            h = norm_modulate(x, mods[3], mods[4]).transpose(1, 2).reshape(B * N, T, D)
            x = gated_residual(x, self.temporal(h).view(B, N, T, D).transpose(1, 2), mods[5])
        h = norm_modulate(x, mods[-3], mods[-2])
        return gated_residual(x, self.ff(h), mods[-1])


class LatteDiT(nn.Module):
    """``network(x, timestep, context=None, labels=None, cond_frames=None, cond_mask=None)`` -> prediction.

    x: (B, C, T, H, W) latents (or pixels); timestep: (B,) on the 0..1000 scale.
    T must be a multiple of ``temporal_patch`` and H, W of ``patch``.
    """

    #: one video on several GPUs (vidcore.distributed): the blocks' frames are split across ranks, so
    #: spatial attention stays local and temporal (or full) attention spans every rank
    sequence_parallel_plan = SequenceParallelPlan(heads="config.heads",
                                                  stacks={"blocks": StackPlan(state=(Tokens(1),))})

    def __init__(self, config: LatteConfig):
        super().__init__()
        self.config = config
        c = config
        p, tp = c.patch, c.temporal_patch
        self.patch_embed = nn.Linear(c.input_channels * tp * p * p, c.hidden)
        self.t_embed = TimestepEmbedder(c.hidden)
        self.context_proj = (
            nn.Sequential(nn.Linear(c.context_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
            if c.context_dim else None
        )
        self.label_embed = nn.Embedding(c.num_classes + 1, c.hidden) if c.num_classes else None
        self.blocks = BlockStack(LatteBlock(c) for _ in range(c.depth))
        self.final_modulation = nn.Linear(c.hidden, 2 * c.hidden)
        self.final_proj = nn.Linear(c.hidden, c.in_channels * tp * p * p)
        for layer in (self.final_modulation, self.final_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.refiner = (PixelRefiner(c.in_channels, c.input_channels, c.refine, c.hidden, c.refine_levels)
                        if c.refine else None)

    def condition(self, timestep: torch.Tensor, context: torch.Tensor | None, labels: torch.Tensor | None
                  ) -> torch.Tensor:
        vec = self.t_embed(timestep)
        if self.context_proj is not None and context is not None:
            vec = vec + self.context_proj(context.to(vec.dtype))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((vec.shape[0],), self.config.num_classes, device=vec.device)
            vec = vec + self.label_embed(labels)
        return nn.functional.silu(vec)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cond_frames: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        B, C, T, H, W = x.shape
        p, tp = cfg.patch, cfg.temporal_patch
        timestep = torch.as_tensor(timestep, device=x.device, dtype=torch.float32).reshape(-1).expand(B)
        if cfg.frame_conditioning:
            if cond_frames is None:
                cond_frames = torch.zeros_like(x)
                cond_mask = torch.zeros(B, 1, T, 1, 1, device=x.device, dtype=x.dtype)
            mask = cond_mask.to(x.dtype).expand(B, 1, T, H, W)
            x = torch.cat([x, cond_frames.to(x.dtype) * mask, mask], dim=1)
        tokens = rearrange(x, "b c (t tp) (h p) (w q) -> b t (h w) (c tp p q)", tp=tp, p=p, q=p)
        tokens = self.patch_embed(tokens.to(self.patch_embed.weight.dtype))
        nt, nh, nw = T // tp, H // p, W // p
        pos = sincos_2d(nh, nw, cfg.hidden, tokens.device)[None, None]
        tpos = sinusoidal(torch.arange(nt, device=tokens.device).float(), cfg.hidden)[None, :, None]
        tokens = tokens + (pos + tpos).to(tokens.dtype)
        c = self.condition(timestep, context, labels)
        tokens = self.blocks(tokens, c=c)
        shift, scale = self.final_modulation(c)[:, None, None].chunk(2, dim=-1)
        out = self.final_proj(norm_modulate(tokens, shift, scale))
        out = rearrange(out, "b t (h w) (c tp p q) -> b c (t tp) (h p) (w q)", h=nh, w=nw, tp=tp, p=p, q=p)
        if self.refiner is not None:
            out = self.refiner(out, x, c)
        return out
