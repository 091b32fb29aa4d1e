"""Benchmark hooks of the Wan backends: random conditions and diffusers' WanTransformer3DModel as reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vidcore.backend import Conditions
from vidcore.bench.inputs import latent, text_states
from vidcore.bench.random_weights import parameters_on_meta
from vidcore.bench.reference import as_loaded

from . import keymaps
from .configs import DiTParams
from .dit import WanModel

PROMPT_TOKENS = 96  # a typical prompt's UMT5 length; the rest of the 512 rows are zeros, as the official pads


def conditions(spec: Any, req: Any, latent_shape: tuple[int, ...], device: torch.device,
               dtype: torch.dtype) -> Conditions:
    p: DiTParams = spec.dit
    c: dict[str, Any] = {}
    u: dict[str, Any] = {}
    for seed, d in ((1, c), (2, u)):
        d["context"] = text_states(1, p.text_len, p.text_dim, PROMPT_TOKENS, device, dtype, seed)[0]
    _, f, h, w = latent_shape
    if req.task == "i2v" and spec.vae.version == "2.1":  # mask (4) + image latent (16) channels
        y = latent((1, p.in_dim - spec.vae.z_dim, f, h, w), device, torch.float32, seed=3)
        c["y"], u["y"] = y, y
    elif req.task in ("i2v", "ti2v"):
        z = latent((1, spec.vae.z_dim, 1, h, w), device, torch.float32, seed=3)
        c["first_frame"], u["first_frame"] = z, z
    return Conditions(c, u, {})


def diffusers_reference(p: DiTParams, module: WanModel, device: torch.device,
                        dtype: torch.dtype) -> Callable[..., torch.Tensor] | None:
    """diffusers' WanTransformer3DModel holding ``module``'s own tensors (no copy), called like our network."""
    try:
        from diffusers import WanTransformer3DModel
    except Exception:  # not installed, or an incompatible version
        return None
    with parameters_on_meta():
        ref = WanTransformer3DModel(
            patch_size=p.patch_size, num_attention_heads=p.num_heads, attention_head_dim=p.head_dim,
            in_channels=p.in_dim, out_channels=p.out_dim, text_dim=p.text_dim, freq_dim=p.freq_dim,
            ffn_dim=p.ffn_dim, num_layers=p.num_layers, cross_attn_norm=p.cross_attn_norm,
            qk_norm="rms_norm_across_heads", eps=p.eps,
        )
    state = {keymaps.dit_to_diffusers(k): v for k, v in module.state_dict().items()}
    ref.load_state_dict(state, strict=True, assign=True)
    as_loaded(ref, device, dtype)

    def network(x: torch.Tensor, t: torch.Tensor, *, context: torch.Tensor, y: torch.Tensor | None = None,
                first_frame: torch.Tensor | None = None) -> torch.Tensor:
        ts = t.to(torch.float32)
        if first_frame is not None:  # TI2V: frame 0 pinned to the image latent, its tokens at t = 0
            x = x.clone()
            x[:, :, :1] = first_frame.to(x)
            tokens_per_frame = x.shape[3] * x.shape[4] // (p.patch_size[1] * p.patch_size[2])
            ts = ts[:, None].repeat(1, x.shape[2] * tokens_per_frame)
            ts[:, :tokens_per_frame] = 0
        hs = x if y is None else torch.cat([x, y.to(x)], dim=1)
        out = ref(hidden_states=hs.to(dtype), timestep=ts, encoder_hidden_states=context.to(dtype),
                  return_dict=False)[0]
        return out.float()

    return network
