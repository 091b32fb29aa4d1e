"""Tiny variants of the backends the acceptance run measures, under the official names (``--tiny``).

Same classes and code paths as the real backends, small numbers, so the CPU
dry run in CI catches an import error, a typo or a changed signature before
any GPU minute is spent. Not a plugin anyone installs.
"""

from __future__ import annotations

import dataclasses

from vidcore.hookspecs import hookimpl


def wan_backends():
    from vidcore_wan22.backends import SPECS, WanBackend
    from vidcore_wan22.configs import DiTParams, T5Params, VAEParams

    t5 = T5Params(vocab=32, dim=16, dim_attn=16, dim_ffn=24, num_heads=2, num_layers=1, num_buckets=8,
                  max_distance=16, text_len=12)
    by_name = {s.name: s for s in SPECS}
    out = []
    for name, version, z, size in (("wan2.2-t2v-a14b", "2.1", 4, (48, 32)), ("wan2.2-ti2v-5b", "2.2", 4, (64, 32))):
        base = by_name[name]
        dit = DiTParams(dim=32, ffn_dim=48, num_heads=2, num_layers=2, in_dim=z, out_dim=z, text_dim=16,
                        text_len=12, freq_dim=16)
        vae = VAEParams(version, dim=4, z_dim=z, dec_dim=6 if version == "2.2" else None,
                        mean=tuple(0.05 * i for i in range(z)), std=tuple(1.0 + 0.1 * i for i in range(z)))
        defaults = dataclasses.replace(base.defaults, size=size, frames=5, steps=4)
        out.append(WanBackend(dataclasses.replace(base, dit=dit, vae=vae, t5=t5, defaults=defaults,
                                                  official_sizes=(size,))))
    return out


def hunyuan_backends():
    from vidcore_hunyuan.backends import SPECS, HunyuanBackend
    from vidcore_hunyuan.params import DiTParams, VAEParams

    base = next(s for s in SPECS if s.name == "hunyuan-video-t2v")
    dit = DiTParams(in_channels=4, out_channels=4, hidden_size=64, heads=2, mlp_ratio=4.0, double_blocks=2,
                    single_blocks=2, refiner_blocks=2, rope_dims=(8, 12, 12), text_dim=48, pooled_dim=24)
    vae = VAEParams(block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_groups=4, latent_channels=4)
    llm = dict(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0,
               hidden_act="silu", tie_word_embeddings=False)
    clip = dict(vocab_size=64, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=24)
    defaults = dataclasses.replace(base.defaults, size=(64, 48), frames=9, steps=4)
    return [HunyuanBackend(dataclasses.replace(base, dit=dit, vae=vae, llm=llm, clip=clip, text_len=24,
                                               sizes=((64, 48),), defaults=defaults))]


class Plugin:
    """Registers the tiny backends (`vidcore.plugins.reset(extra_plugins=[(name, Plugin())])`)."""

    @hookimpl
    def register_backends(self, register):
        for backend in wan_backends() + hunyuan_backends():
            register(backend)

    @hookimpl
    def register_schedules(self, register):  # the backends' defaults name their plugins' schedules
        from vidcore_hunyuan import plugin as hunyuan
        from vidcore_wan22 import plugin as wan

        wan.register_schedules(register)
        hunyuan.register_schedules(register)
