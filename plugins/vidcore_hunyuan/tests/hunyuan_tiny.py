"""Tiny configurations shared by the tests (registered only here, never in the plugin)."""

from __future__ import annotations

from vidcore_hunyuan.params import DiTParams, VAEParams

TINY_DIT = DiTParams(in_channels=4, out_channels=4, hidden_size=64, heads=2, mlp_ratio=4.0, double_blocks=2,
                     single_blocks=2, refiner_blocks=2, rope_dims=(8, 12, 12), text_dim=48, pooled_dim=24)


def diffusers_dit_config(p: DiTParams, image_condition_type: str | None = None) -> dict:
    """The same architecture as diffusers' ``HunyuanVideoTransformer3DModel`` arguments."""
    return dict(in_channels=p.in_channels, out_channels=p.out_channels, num_attention_heads=p.heads,
                attention_head_dim=p.head_dim, num_layers=p.double_blocks, num_single_layers=p.single_blocks,
                num_refiner_layers=p.refiner_blocks, mlp_ratio=p.mlp_ratio, patch_size=p.patch_size[1],
                patch_size_t=p.patch_size[0], qk_norm="rms_norm", guidance_embeds=p.guidance_embed,
                text_embed_dim=p.text_dim, pooled_projection_dim=p.pooled_dim, rope_theta=p.rope_theta,
                rope_axes_dim=p.rope_dims, image_condition_type=image_condition_type)


TINY_VAE = VAEParams(block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_groups=4, latent_channels=4)
