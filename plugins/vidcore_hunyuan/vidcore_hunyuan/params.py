"""Architecture parameters of each HunyuanVideo component, as data (one frozen dataclass per variant).

Values come from the official release (Tencent-Hunyuan/HunyuanVideo
``hyvideo/modules/models.py`` HUNYUAN_VIDEO_CONFIG, ``hyvideo/config.py`` and the
checkpoint's ``vae/config.json``); `docs/hunyuan.md` lists each source line.
Tests register tiny variants of the same dataclasses; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiTParams:
    """``HYVideoDiffusionTransformer`` hyper-parameters."""

    in_channels: int = 16
    out_channels: int = 16
    hidden_size: int = 3072
    heads: int = 24
    mlp_ratio: float = 4.0
    double_blocks: int = 20
    single_blocks: int = 40
    refiner_blocks: int = 2
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_dims: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    text_dim: int = 4096  # LLaVA-Llama-3 hidden states (args.text_states_dim)
    pooled_dim: int = 768  # CLIP-L pooled output (args.text_states_dim_2)
    guidance_embed: bool = True  # HYVideo-T/2-cfgdistill; the I2V scripts add it with --embedded-cfg-scale
    token_replace: bool = False  # I2V: first-frame tokens modulated as if at t=0 (i2v_condition_type)
    qkv_bias: bool = True
    freq_dim: int = 256  # sinusoidal width of the timestep / guidance embedders

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if sum(self.rope_dims) != self.head_dim:
            raise ValueError(f"rope_dims {self.rope_dims} must add up to the head dim {self.head_dim}")
        if any(d % 2 for d in self.rope_dims):
            raise ValueError(f"rope_dims {self.rope_dims} must be even")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


@dataclass(frozen=True)
class VAEParams:
    """``AutoencoderKLCausal3D`` '884-16c-hy': 4x temporal, 8x spatial, 16 latent channels."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    time_compression: int = 4
    scaling_factor: float = 0.476986
    mid_attention: bool = True

    def __post_init__(self) -> None:
        n_down = len(self.block_out_channels) - 1
        n_time = {1: 0, 2: 1, 4: 2, 8: 3}.get(self.time_compression)
        if n_time is None or n_time > n_down:
            raise ValueError(f"time_compression {self.time_compression} needs log2 <= {n_down} down blocks")
        if any(c % self.norm_groups for c in self.block_out_channels):
            raise ValueError(f"block channels {self.block_out_channels} must be multiples of {self.norm_groups}")

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def time_down_blocks(self) -> int:
        """How many of the first down blocks also halve time (log2 of the temporal factor)."""
        return {1: 0, 2: 1, 4: 2, 8: 3}[self.time_compression]


#: The released DiTs: names and shapes are identical; the I2V one conditions by token replacement.
DIT_VARIANTS: dict[str, DiTParams] = {
    "t2v": DiTParams(),
    "i2v": DiTParams(token_replace=True),
}

VAE_884_16C = VAEParams()
