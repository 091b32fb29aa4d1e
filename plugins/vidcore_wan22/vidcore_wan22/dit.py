"""The Wan DiT (Wan2.2 A14B experts and TI2V-5B), with the official parameter names.

Numerics follow ``wan/modules/model.py`` run under ``torch.autocast(bf16)`` as
the official pipelines do: the time embedding, the six modulation vectors, the
residual stream and the output head stay float32; linear layers and attention
run in the autocast dtype; RoPE is applied in float64. `WanModel.forward`
opens the autocast region itself when ``compute_dtype`` is set, so callers pass
float32 latents and get float32 velocity back, as in the official loop.

Tokens are laid out (B, L, dim) with L = frames*h*w (t-major). The timestep may
be per sample (B,) or per latent frame (B, F) (TI2V image conditioning gives
the first frame t=0); modulation is then broadcast frame by frame instead of
materialising the official (B, L, 6, dim) tensor, with the same values.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.attention import attention
from vidcore.distributed.plan import SequenceParallelPlan, StackPlan, Tokens
from vidcore.kernels import gated_residual, layer_norm, norm_modulate, rope_apply, rope_freqs_3d
from vidcore.nn import BlockStack, RMSNorm

from .configs import DiTParams


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """[cos | sin] of t * 10000^(-i/half), computed in float64 as the official code does."""
    half = dim // 2
    pos = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    ang = torch.outer(pos.flatten(), freqs)
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1).unflatten(0, t.shape)


def linear_fp32(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A linear layer evaluated in float32 whatever the weights' dtype (official: autocast(float32)).

    A plain layer is computed here with its weights upcast. A layer that a
    memory policy or LoRA has changed (fp8 storage, forward hooks) is called
    as itself so those changes apply; its output is then only as precise as
    that layer computes it.
    """
    if type(module) is nn.Linear and not module._forward_hooks and not module._forward_pre_hooks:
        bias = module.bias.float() if module.bias is not None else None
        return F.linear(x.float(), module.weight.float(), bias)
    w = module.weight
    dtype = w.dtype if w.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.dtype
    return module(x.to(dtype)).float()


def _no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu") else contextlib.nullcontext()




class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (Wan's WanLayerNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Self- or cross-attention with RMS norm of q and k over the full width (across heads)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, L, D)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        src = x if context is None else context
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(src)))
        v = self._heads(self.v(src))
        if rope is not None:  # float64 rotation on float32 values, as the official rope_apply
            q, k = rope_apply(q.float(), *rope), rope_apply(k.float(), *rope)
        half = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        if half is not None:  # the official flash_attention casts q/k/v to the half dtype
            q, k, v = q.to(half), k.to(half), v.to(half)
        out = attention(q, k, v, sequence_parallel=context is None)  # self-attention spans every SP rank
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One Wan transformer block: modulated self-attention, cross-attention to text, modulated GELU FFN."""

    def __init__(self, p: DiTParams):
        super().__init__()
        self.eps = p.eps
        self.norm1 = LayerNorm(p.dim, p.eps)
        self.self_attn = Attention(p.dim, p.num_heads, p.qk_norm, p.eps)
        self.norm3 = LayerNorm(p.dim, p.eps, affine=True) if p.cross_attn_norm else nn.Identity()
        self.cross_attn = Attention(p.dim, p.num_heads, p.qk_norm, p.eps)
        self.norm2 = LayerNorm(p.dim, p.eps)
        self.ffn = nn.Sequential(nn.Linear(p.dim, p.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(p.ffn_dim, p.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, p.dim) / p.dim**0.5)

    def forward(self, x: torch.Tensor, *, e: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                context: torch.Tensor) -> torch.Tensor:
        # e: (B, Fm, 6, dim) float32; x: (B, L, dim) viewed as (B, Fm, L/Fm, dim) for the modulation
        b, n, d = x.shape
        mod = (self.modulation.float().unsqueeze(0) + e).unsqueeze(3).unbind(2)  # 6 x (B, Fm, 1, dim)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        fm = e.shape[1]

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, fm, n // fm, t.shape[-1])

        h = norm_modulate(per_frame(x), shift1, scale1, kind="layer", eps=self.eps).view(b, n, d)
        y = self.self_attn(h, rope=rope)
        x = gated_residual(per_frame(x.float()), per_frame(y), gate1).view(b, n, d)
        x = x + self.cross_attn(self.norm3(x), context)
        h = norm_modulate(per_frame(x), shift2, scale2, kind="layer", eps=self.eps).view(b, n, d)
        y = self.ffn(h)
        return gated_residual(per_frame(x), per_frame(y), gate2).view(b, n, d)


class Head(nn.Module):
    """Final modulated LayerNorm and projection to patch pixels, all in float32 (official)."""

    def __init__(self, p: DiTParams):
        super().__init__()
        self.eps = p.eps
        self.norm = LayerNorm(p.dim, p.eps)
        self.head = nn.Linear(p.dim, math.prod(p.patch_size) * p.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, p.dim) / p.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        fm = e.shape[1]
        shift, scale = (self.modulation.float().unsqueeze(0) + e.unsqueeze(2)).unsqueeze(3).unbind(2)
        with _no_autocast(x.device):
            h = norm_modulate(x.float().view(b, fm, n // fm, d), shift, scale, kind="layer", eps=self.eps)
            return linear_fp32(self.head, h.view(b, n, d))


class WanModel(nn.Module):
    """The Wan diffusion transformer; ``state_dict()`` names equal the official checkpoints'.

    ``forward(x, t, context, y=None)``: latents x (B, C, F, H, W); timesteps t
    (B,) or per latent frame (B, F); text context (B, L<=text_len, text_dim),
    zero-padded to ``text_len`` here as the official model does; optional
    conditioning channels y (B, C_y, F, H, W) concatenated to x (I2V-A14B).
    Returns the flow velocity (B, out_dim, F, H, W) in float32.
    """

    #: one video on several GPUs (vidcore.distributed): the blocks' tokens, RoPE tables and per-frame
    #: modulation are split across ranks; the text context is replicated
    sequence_parallel_plan = SequenceParallelPlan(heads="params.num_heads", stacks={"blocks": StackPlan(
        state=(Tokens(1),), kwargs={"rope": Tokens(0), "e": Tokens(1, grouped=True)})})

    def __init__(self, p: DiTParams):
        super().__init__()
        self.params = p
        #: dtype of the official autocast region: "auto" = bfloat16 on CUDA or with half-precision weights
        #: (the official ``param_dtype``), plain float32 otherwise; a dtype or None forces it
        self.compute_dtype: torch.dtype | str | None = "auto"
        self.patch_embedding = nn.Conv3d(p.in_dim, p.dim, kernel_size=p.patch_size, stride=p.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(p.text_dim, p.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(p.dim, p.dim))
        self.time_embedding = nn.Sequential(nn.Linear(p.freq_dim, p.dim), nn.SiLU(), nn.Linear(p.dim, p.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(p.dim, p.dim * 6))
        self.blocks = BlockStack(Block(p) for _ in range(p.num_layers))
        self.head = Head(p)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- pieces --------------------------------------------------------------------------------
    def rope(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 cos/sin tables (L, head_dim/2) for a (f, h, w) token grid (cached per grid)."""
        key = (grid, str(device))
        if key not in self._rope_cache:
            for g in grid:
                if g > self.params.rope_max_len:
                    raise ValueError(f"token grid {grid} exceeds the RoPE table length {self.params.rope_max_len}")
            self._rope_cache = {key: rope_freqs_3d(self.params.rope_dims, grid, device=device)}
        return self._rope_cache[key]

    def time_embed(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (B, Fm, dim) embedding and (B, Fm, 6, dim) modulation for timesteps (B,) or (B, Fm)."""
        if t.dim() == 1:
            t = t[:, None]
        with _no_autocast(t.device):
            s = sinusoidal_embedding(self.params.freq_dim, t).float()
            e = linear_fp32(self.time_embedding[2], F.silu(linear_fp32(self.time_embedding[0], s)))
            e0 = linear_fp32(self.time_projection[1], F.silu(e)).unflatten(-1, (6, self.params.dim))
        return e, e0

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        p = self.params
        if context.shape[1] > p.text_len:
            raise ValueError(f"text context has {context.shape[1]} tokens; the model takes at most {p.text_len}")
        if context.shape[1] < p.text_len:
            context = F.pad(context, (0, 0, 0, p.text_len - context.shape[1]))
        return self.text_embedding(context)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        (f, h, w), (pt, ph, pw) = grid, self.params.patch_size
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, self.params.out_dim)
        return torch.einsum("bfhwpqrc->bcfphqwr", x).reshape(x.shape[0], self.params.out_dim, f * pt, h * ph, w * pw)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.compute_dtype != "auto":
            return self.compute_dtype  # type: ignore[return-value]
        wdtype = self.patch_embedding.weight.dtype
        if wdtype in (torch.bfloat16, torch.float16):
            return wdtype
        return torch.bfloat16 if device.type == "cuda" else None

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        dev = x.device
        amp_dtype = self.autocast_dtype(dev)
        amp = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with amp:
            if y is not None:
                x = torch.cat([x, y.to(x.dtype)], dim=1)
            if amp_dtype is None:
                x = x.to(self.patch_embedding.weight.dtype)
                context = context.to(self.patch_embedding.weight.dtype)
            x = self.patch_embedding(x)
            grid = tuple(x.shape[2:])
            x = x.flatten(2).transpose(1, 2)
            t = t.to(dev)
            if t.dim() == 2 and t.shape[1] not in (1, grid[0]):
                raise ValueError(f"per-frame timesteps need {grid[0]} values, got {t.shape[1]}")
            e, e0 = self.time_embed(t)
            ctx = self.embed_text(context)
            rope = self.rope(grid, dev)  # type: ignore[arg-type]
            x = self.blocks(x, e=e0, rope=rope, context=ctx)
            x = self.head(x, e)
        return self.unpatchify(x, grid).float()  # type: ignore[arg-type]
