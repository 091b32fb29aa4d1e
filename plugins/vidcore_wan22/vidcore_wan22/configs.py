"""Architecture parameters of the Wan2.2 components, one frozen dataclass per kind, variants as data.

Values are those of the official configs (``wan/configs/wan_*.py``,
``wan/modules/vae2_*.py``, ``wan/modules/t5.py``) and of the checkpoints'
``config.json`` (``in_dim``/``out_dim``); `docs/wan22.md` lists the sources.
Tests register tiny variants of the same dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DiTParams:
    """One Wan DiT (`vidcore_wan22.dit.WanModel`)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    rope_max_len: int = 1024

    def __post_init__(self) -> None:
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size")
        if self.freq_dim % 2:
            raise ValueError("freq_dim must be even")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Head-dim split for (t, h, w) RoPE: h and w get 2*(d//6) each, t the rest (official)."""
        d = self.head_dim
        return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)


@dataclass(frozen=True)
class VAEParams:
    """A Wan causal video VAE; ``version`` 2.1 (4x8x8, z16) or 2.2 (4x16x16, z48, 2x2 patchify, residual)."""

    version: str
    dim: int
    z_dim: int
    dec_dim: int | None = None
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.version not in ("2.1", "2.2"):
            raise ValueError(f"VAE version must be '2.1' or '2.2', not {self.version!r}")
        if len(self.mean) != self.z_dim or len(self.std) != self.z_dim:
            raise ValueError(f"latent mean/std need {self.z_dim} values")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one flag per downsampling stage")

    @property
    def patch(self) -> int:
        return 2 if self.version == "2.2" else 1

    @property
    def stride(self) -> tuple[int, int, int]:
        t = 2 ** sum(self.temporal_downsample)
        s = 2 ** (len(self.dim_mult) - 1) * self.patch
        return t, s, s


@dataclass(frozen=True)
class T5Params:
    """The umT5 encoder of `vidcore_wan22.t5` (Wan's naming)."""

    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512

    def __post_init__(self) -> None:
        if self.dim_attn % self.num_heads:
            raise ValueError("dim_attn must be divisible by num_heads")


WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

DIT: dict[str, DiTParams] = {
    "t2v-A14B": DiTParams(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16),
    "i2v-A14B": DiTParams(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16),
    "ti2v-5B": DiTParams(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48),
}

VAE: dict[str, VAEParams] = {
    "wan2.1": VAEParams("2.1", dim=96, z_dim=16, mean=WAN21_MEAN, std=WAN21_STD),
    "wan2.2": VAEParams("2.2", dim=160, dec_dim=256, z_dim=48, mean=WAN22_MEAN, std=WAN22_STD),
}

T5: dict[str, T5Params] = {"umt5-xxl": T5Params()}


@dataclass(frozen=True)
class Variant:
    """What one backend is made of: its DiT, VAE and text encoder parameter sets."""

    dit: DiTParams
    vae: VAEParams
    t5: T5Params = field(default_factory=T5Params)
