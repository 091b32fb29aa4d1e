"""Benchmark hooks of the HunyuanVideo backends: random conditions, diffusers' transformer as reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vidcore.backend import Conditions
from vidcore.bench.inputs import latent, text_states
from vidcore.bench.random_weights import parameters_on_meta
from vidcore.bench.reference import as_loaded

from .convert import to_diffusers
from .params import DiTParams

PROMPT_TOKENS = 64  # valid LLM tokens of a typical prompt after the template crop; the rest is padding


def diffusers_config(p: DiTParams, image_condition_type: str | None = None) -> dict[str, Any]:
    """The same architecture as diffusers' ``HunyuanVideoTransformer3DModel`` arguments."""
    return dict(in_channels=p.in_channels, out_channels=p.out_channels, num_attention_heads=p.heads,
                attention_head_dim=p.head_dim, num_layers=p.double_blocks, num_single_layers=p.single_blocks,
                num_refiner_layers=p.refiner_blocks, mlp_ratio=p.mlp_ratio, patch_size=p.patch_size[1],
                patch_size_t=p.patch_size[0], qk_norm="rms_norm", guidance_embeds=p.guidance_embed,
                text_embed_dim=p.text_dim, pooled_projection_dim=p.pooled_dim, rope_theta=p.rope_theta,
                rope_axes_dim=p.rope_dims, image_condition_type=image_condition_type)


def conditions(spec: Any, req: Any, latent_shape: tuple[int, ...], device: torch.device,
               dtype: torch.dtype) -> Conditions:
    p: DiTParams = spec.dit

    def text(seed: int) -> dict[str, torch.Tensor]:
        states, mask = text_states(1, spec.text_len, p.text_dim, PROMPT_TOKENS, device, dtype, seed)
        pooled = latent((1, p.pooled_dim), device, dtype, seed + 10)
        return {"text_states": states, "text_mask": mask, "text_states_2": pooled}

    c = text(1)
    u = text(2) if float(req.guidance) > 1.0 else None
    if spec.i2v:
        _, _, h, w = latent_shape
        z = latent((1, latent_shape[0], 1, h, w), device, torch.float32, seed=3)
        c["first_frame"] = z
        if u is not None:
            u["first_frame"] = z
    return Conditions(c, u, {})


def diffusers_reference(p: DiTParams, module: torch.nn.Module, device: torch.device,
                        dtype: torch.dtype) -> Callable[..., torch.Tensor] | None:
    """diffusers' HunyuanVideoTransformer3DModel with ``module``'s weights (converted: a second copy)."""
    try:
        from diffusers import HunyuanVideoTransformer3DModel
    except Exception:
        return None
    with parameters_on_meta():
        ref = HunyuanVideoTransformer3DModel(**diffusers_config(p, "token_replace" if p.token_replace else None))
    ref.load_state_dict(to_diffusers(module.state_dict(), p.hidden_size), strict=True, assign=True)
    as_loaded(ref, device, dtype)

    def network(x: torch.Tensor, t: torch.Tensor, *, text_states: torch.Tensor, text_mask: torch.Tensor,
                text_states_2: torch.Tensor, guidance: torch.Tensor | None = None,
                first_frame: torch.Tensor | None = None) -> torch.Tensor:
        g = None if guidance is None else guidance.to(dtype) * 1000.0
        if first_frame is not None:
            x = torch.cat([first_frame.to(x), x[:, :, 1:]], dim=2)
        out = ref(x.to(dtype), t.to(torch.float32), text_states.to(dtype), text_mask, text_states_2.to(dtype),
                  g, return_dict=False)[0]
        return out.float()

    return network
