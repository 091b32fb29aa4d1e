"""The HunyuanVideo DiT (``HYVideoDiffusionTransformer``): 20 dual-stream then 40 single-stream blocks.

Video latents are patchified (1x2x2) into image tokens; the LLM text states go
through the token refiner; a modulation vector ``vec`` = time + CLIP pooled text
(+ embedded guidance) drives AdaLN everywhere. Dual-stream blocks keep separate
weights for image and text tokens and attend jointly; single-stream blocks run
the concatenation through one fused linear (q|k|v|mlp). 3D RoPE (theta 256,
head-dim split 16/56/56 over t/h/w) rotates image tokens only.

Padding text tokens are dropped up front: each sample attends to its image
tokens plus its valid text tokens, exactly the set the official varlen
flash-attention call uses. For I2V (``token_replace``) the first latent frame's
tokens are modulated with a t=0 vector (without guidance), as the released
I2V model was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.distributed.plan import Count, Prefix, SequenceParallelPlan, StackPlan, Tokens
from vidcore.kernels import gated_residual, norm_modulate, rope_apply, rope_freqs_3d
from vidcore.nn import BlockStack

from .dit_layers import (
    MLP,
    MLPEmbedder,
    Modulation,
    RMSNormWeight,
    SingleTokenRefiner,
    TimestepEmbedder,
    merge_heads,
    split_heads,
)
from .params import DiTParams
from .valid_attention import valid_attention

Rope = tuple[torch.Tensor, torch.Tensor]
TokenReplace = tuple[torch.Tensor, int] | None  # (t=0 modulation vector, number of first-frame tokens)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
              tr: tuple[torch.Tensor, torch.Tensor] | None = None, n_first: int = 0) -> torch.Tensor:
    """LayerNorm (no affine, eps 1e-6) then AdaLN; the first ``n_first`` tokens use the ``tr`` pair."""
    if tr is None:
        return norm_modulate(x, shift[:, None], scale[:, None], eps=1e-6)
    return torch.cat([norm_modulate(x[:, :n_first], tr[0][:, None], tr[1][:, None], eps=1e-6),
                      norm_modulate(x[:, n_first:], shift[:, None], scale[:, None], eps=1e-6)], dim=1)


def _gate(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, tr_gate: torch.Tensor | None = None,
          n_first: int = 0) -> torch.Tensor:
    """``x + gate * y`` (first ``n_first`` tokens gated by ``tr_gate``)."""
    if tr_gate is None:
        return gated_residual(x, y, gate[:, None])
    return torch.cat([gated_residual(x[:, :n_first], y[:, :n_first], tr_gate[:, None]),
                      gated_residual(x[:, n_first:], y[:, n_first:], gate[:, None])], dim=1)


class MMDoubleStreamBlock(nn.Module):
    """Separate image/text weights, joint attention over [image | valid text] tokens."""

    def __init__(self, p: DiTParams, **factory):
        super().__init__()
        h, d = p.hidden_size, p.head_dim
        self.heads = p.heads
        for s in ("img", "txt"):
            self.add_module(f"{s}_mod", Modulation(h, 6, **factory))
            self.add_module(f"{s}_attn_qkv", nn.Linear(h, 3 * h, bias=p.qkv_bias, **factory))
            self.add_module(f"{s}_attn_q_norm", RMSNormWeight(d, **factory))
            self.add_module(f"{s}_attn_k_norm", RMSNormWeight(d, **factory))
            self.add_module(f"{s}_attn_proj", nn.Linear(h, h, bias=p.qkv_bias, **factory))
            self.add_module(f"{s}_mlp", MLP(h, p.mlp_hidden, **factory))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, *, vec: torch.Tensor, rope: Rope,
                lengths: Sequence[int] | None, token_replace: TokenReplace = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2 = self.img_mod(vec)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(vec)
        tr = n = None
        if token_replace is not None:
            tr, n = self.img_mod(token_replace[0]), token_replace[1]

        iq, ik, iv = split_heads(self.img_attn_qkv(_modulate(img, i_sh1, i_sc1, tr and tr[0:2], n)), self.heads)
        iq = rope_apply(self.img_attn_q_norm(iq).to(iv), *rope)
        ik = rope_apply(self.img_attn_k_norm(ik).to(iv), *rope)
        tq, tk, tv = split_heads(self.txt_attn_qkv(_modulate(txt, t_sh1, t_sc1)), self.heads)
        tq, tk = self.txt_attn_q_norm(tq).to(tv), self.txt_attn_k_norm(tk).to(tv)

        attn = valid_attention(torch.cat([iq, tq], 2), torch.cat([ik, tk], 2), torch.cat([iv, tv], 2), lengths,
                               sharded=img.shape[1])
        attn = merge_heads(attn)
        n_img = img.shape[1]
        img_attn, txt_attn = attn[:, :n_img], attn[:, n_img:]

        img = _gate(img, self.img_attn_proj(img_attn), i_g1, tr and tr[2], n)
        img = _gate(img, self.img_mlp(_modulate(img, i_sh2, i_sc2, tr and tr[3:5], n)), i_g2, tr and tr[5], n)
        txt = gated_residual(txt, self.txt_attn_proj(txt_attn), t_g1[:, None])
        txt = gated_residual(txt, self.txt_mlp(_modulate(txt, t_sh2, t_sc2)), t_g2[:, None])
        return img, txt


class MMSingleStreamBlock(nn.Module):
    """One stream over [image | text]: ``linear1`` = q|k|v|mlp_in, ``linear2`` = proj(attn ++ gelu(mlp))."""

    def __init__(self, p: DiTParams, **factory):
        super().__init__()
        h, d = p.hidden_size, p.head_dim
        self.heads, self.hidden, self.mlp_hidden = p.heads, h, p.mlp_hidden
        self.linear1 = nn.Linear(h, 3 * h + p.mlp_hidden, **factory)
        self.linear2 = nn.Linear(h + p.mlp_hidden, h, **factory)
        self.q_norm = RMSNormWeight(d, **factory)
        self.k_norm = RMSNormWeight(d, **factory)
        self.modulation = Modulation(h, 3, **factory)

    def forward(self, x: torch.Tensor, *, vec: torch.Tensor, rope: Rope, lengths: Sequence[int] | None,
                n_img: int, token_replace: TokenReplace = None) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        tr = n = None
        if token_replace is not None:
            tr, n = self.modulation(token_replace[0]), token_replace[1]
        qkv, mlp = torch.split(self.linear1(_modulate(x, shift, scale, tr and tr[0:2], n)),
                               [3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, self.heads)
        q, k = self.q_norm(q).to(v), self.k_norm(k).to(v)
        q = torch.cat([rope_apply(q[:, :, :n_img], *rope), q[:, :, n_img:]], dim=2)
        k = torch.cat([rope_apply(k[:, :, :n_img], *rope), k[:, :, n_img:]], dim=2)
        attn = merge_heads(valid_attention(q, k, v, lengths, sharded=n_img))
        out = self.linear2(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))
        return _gate(x, out, gate, tr and tr[2], n)


class PatchEmbed(nn.Module):
    """``img_in``: Conv3d with kernel = stride = patch size, flattened to (B, T'*H'*W', hidden)."""

    def __init__(self, patch: tuple[int, int, int], in_ch: int, hidden: int, **factory):
        super().__init__()
        self.proj = nn.Conv3d(in_ch, hidden, kernel_size=patch, stride=patch, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    """LayerNorm + AdaLN (shift, scale order) + linear to patch pixels."""

    def __init__(self, hidden: int, patch_volume: int, out_ch: int, **factory):
        super().__init__()
        self.linear = nn.Linear(hidden, patch_volume * out_ch, **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, **factory))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=-1)
        x = _modulate(x, shift, scale)
        lin = self.linear
        if type(lin) is nn.Linear and lin.weight.dtype != x.dtype and not lin._forward_hooks:
            # the official module keeps this layer in float32 but runs it under bf16 autocast: compute in x's dtype
            return F.linear(x, lin.weight.to(x.dtype), lin.bias.to(x.dtype))
        return lin(x)


class HunyuanVideoDiT(nn.Module):
    """``HYVideoDiffusionTransformer`` with the official parameter names.

    ``forward(x, t, text_states, text_mask, text_states_2, guidance)``:
    ``x`` (B, C, T, H, W) latents; ``t`` (B,) timesteps in [0, 1000];
    ``text_states`` (B, L, 4096) and ``text_mask`` (B, L) from the LLM (padding
    at the end); ``text_states_2`` (B, 768) CLIP pooled; ``guidance`` (B,) the
    embedded guidance scale times 1000 (required when ``guidance_embed``).
    Returns the flow velocity (B, C_out, T, H, W) in the model's dtype.
    """

    #: one video on several GPUs (vidcore.distributed): image tokens, their RoPE tables and counts are split
    #: across ranks; text tokens stay whole on every rank (the tail of the joint attention)
    sequence_parallel_plan = SequenceParallelPlan(heads="params.heads", stacks={
        "double_blocks": StackPlan(state=(Tokens(1), None), kwargs={
            "rope": Tokens(0), "lengths": Count(), "token_replace": Prefix(item=1)}),
        "single_blocks": StackPlan(state=(Tokens(1, length="n_img"),), kwargs={
            "rope": Tokens(0), "lengths": Count(), "n_img": Count(), "token_replace": Prefix(item=1)}),
    })

    def __init__(self, p: DiTParams, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.params = p
        h = p.hidden_size
        self.img_in = PatchEmbed(p.patch_size, p.in_channels, h, **factory)
        self.txt_in = SingleTokenRefiner(p.text_dim, h, p.heads, p.refiner_blocks, p.mlp_ratio, p.freq_dim, **factory)
        self.time_in = TimestepEmbedder(h, p.freq_dim, **factory)
        self.vector_in = MLPEmbedder(p.pooled_dim, h, **factory)
        self.guidance_in = TimestepEmbedder(h, p.freq_dim, **factory) if p.guidance_embed else None
        self.double_blocks = BlockStack(MMDoubleStreamBlock(p, **factory) for _ in range(p.double_blocks))
        self.single_blocks = BlockStack(MMSingleStreamBlock(p, **factory) for _ in range(p.single_blocks))
        pt, ph, pw = p.patch_size
        self.final_layer = FinalLayer(h, pt * ph * pw, p.out_channels, **factory)
        self._rope_cache: dict[tuple, Rope] = {}

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the patch embedding (linear layers may be stored in fp8)."""
        return self.img_in.proj.weight.dtype

    def rope(self, grid: tuple[int, int, int], device: torch.device) -> Rope:
        """cos/sin tables (T'*H'*W', head_dim/2) in float32, as the official ``get_nd_rotary_pos_embed``."""
        key = (grid, str(device))
        if key not in self._rope_cache:
            self._rope_cache = {key: rope_freqs_3d(self.params.rope_dims, grid, self.params.rope_theta,
                                                   dtype=torch.float32, device=device)}
        return self._rope_cache[key]

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None = None, text_states_2: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        b, _, ot, oh, ow = x.shape
        pt, ph, pw = p.patch_size
        grid = (ot // pt, oh // ph, ow // pw)
        t = t.reshape(-1).expand(b) if t.numel() in (1, b) else t

        lengths = None
        if text_mask is not None:
            lengths = [int(n) for n in text_mask.sum(dim=1).tolist()]
            text_states = text_states[:, :max(lengths)]

        dtype = self.dtype
        vec2 = self.vector_in(text_states_2.to(dtype))
        vec = self.time_in(t, dtype) + vec2
        token_replace: TokenReplace = None
        if p.token_replace:
            token_replace = (self.time_in(torch.zeros_like(t), dtype) + vec2, grid[1] * grid[2])
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this HunyuanVideo DiT is guidance-distilled: pass guidance (scale x 1000)")
            vec = vec + self.guidance_in(guidance.reshape(-1).expand(b).to(t.device), dtype)

        img = self.img_in(x)
        txt = self.txt_in(text_states, t, lengths, dtype)
        n_img = img.shape[1]
        joint = None if lengths is None else [n_img + n for n in lengths]
        rope = self.rope(grid, x.device)

        img, txt = self.double_blocks(img, txt, vec=vec, rope=rope, lengths=joint, token_replace=token_replace)
        x_cat = self.single_blocks(torch.cat([img, txt], dim=1), vec=vec, rope=rope, lengths=joint, n_img=n_img,
                                   token_replace=token_replace)
        out = self.final_layer(x_cat[:, :n_img], vec)
        return self.unpatchify(out, grid)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, T'*H'*W', C*pt*ph*pw) -> (B, C, T, H, W) with the official (c, pt, ph, pw) channel order."""
        t, h, w = grid
        pt, ph, pw = self.params.patch_size
        c = self.params.out_channels
        x = x.reshape(x.shape[0], t, h, w, c, pt, ph, pw)
        x = torch.einsum("nthwcopq->nctohpwq", x)
        return x.reshape(x.shape[0], c, t * pt, h * ph, w * pw)

