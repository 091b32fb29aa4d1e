"""The Wan2.1 (4x8x8, z16) and Wan2.2 (4x16x16, z48) causal video VAEs, with the official names.

Both run a clip whole or chunk by chunk through a `CausalCache` with the same
result: the official code only ever runs chunk by chunk (encode: the first
frame, then 4 frames at a time; decode: one latent frame at a time), and its
first chunk is special (temporal down/upsampling passes the first frame
through). Every temporal layer here reproduces that rule in both modes, so
chunked runs equal the official numerics and whole runs equal chunked runs.
Optional spatial tiling (`vidcore.nn.tiling`) bounds memory for large frames.

Latents are normalised with the official per-channel mean/std inside
`encode`/`decode`, as ``Wan2_1_VAE``/``Wan2_2_VAE`` do; decode clamps to [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidcore.attention import attention
from vidcore.nn.causal_conv import CausalCache, CausalConv3d, chunk_sizes
from vidcore.nn.switches import MemorySwitches
from vidcore.nn.tiling import TileSpec, tiled_map

from .configs import VAEParams


def _is_first(cache: CausalCache | None, module: nn.Module) -> bool:
    """True on a whole-clip run and on the first chunk of a stream (then marks the module as started)."""
    if cache is None:
        return True
    if module in cache:
        return False
    cache.set(module, True)
    return True


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and ``gamma`` (stored with broadcast shape, official)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class Upsample(nn.Upsample):
    """Nearest-exact 2x in float32 (bf16 nearest is unsupported on some devices), cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    b, t = x.shape[0], x.shape[2]
    y = fn(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class Resample(nn.Module):
    """Spatial 2x down/upsampling, plus (``*3d``) a causal temporal 2x that passes the first frame through."""

    def __init__(self, dim: int, mode: str, halve_on_up: bool):
        super().__init__()
        self.mode = mode
        up_out = dim // 2 if halve_on_up else dim
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, up_out, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode.startswith("downsample"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            first = _is_first(cache, self)
            head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (None, x)
            if rest.shape[2]:
                b, c, t, h, w = rest.shape
                rest = self.time_conv(rest, cache).view(b, 2, c, t, h, w)
                rest = torch.stack((rest[:, 0], rest[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)
            x = rest if head is None else torch.cat([head, rest], dim=2)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            first = cache is None or self.time_conv not in cache
            out = self.time_conv(x, cache)
            x = torch.cat([x[:, :, :1], out], dim=2) if first else out
        return x


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention within each frame (1x1 conv projections)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        out = attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(n, c, h, w)
        return self.proj(out)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return x + _per_frame(self._frame, x)


class AvgDown3D(nn.Module):
    """Parameter-free shortcut of Wan2.2's down blocks: space/time-to-channel then group mean."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, factor_t, factor_s
        self.group = in_dim * factor_t * factor_s * factor_s // out_dim

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        first = _is_first(cache, self)
        pad_t = (self.ft - x.shape[2] % self.ft) % self.ft
        if pad_t and not first:
            raise ValueError(f"chunks after the first must have a multiple of {self.ft} frames here")
        x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        b, c, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut of Wan2.2's up blocks: channel-to-space/time; drops the first chunk's lead frame."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s * factor_s // in_dim

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        first = _is_first(cache, self)
        b, _, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first else x


class DownBlock(nn.Module):
    """Wan2.2 encoder stage: residual blocks (+ resample) with an `AvgDown3D` shortcut around all of them."""

    def __init__(self, in_dim: int, out_dim: int, n: int, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        layers: list[nn.Module] = []
        for _ in range(n):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", halve_on_up=False))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        y = x
        for layer in self.downsamples:
            y = layer(y, cache)
        return y + self.avg_shortcut(x, cache)


class UpBlock(nn.Module):
    """Wan2.2 decoder stage: residual blocks (+ resample) with a `DupUp3D` shortcut when it upsamples."""

    def __init__(self, in_dim: int, out_dim: int, n: int, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        layers: list[nn.Module] = []
        for _ in range(n):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", halve_on_up=False))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        y = x
        for layer in self.upsamples:
            y = layer(y, cache)
        return y if self.avg_shortcut is None else y + self.avg_shortcut(x, cache)


def _run(seq: nn.Sequential, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
    for layer in seq:
        x = layer(x, cache) if isinstance(layer, (CausalConv3d, ResidualBlock, AttentionBlock, Resample,
                                                  DownBlock, UpBlock)) else layer(x)
    return x


class Encoder(nn.Module):
    def __init__(self, p: VAEParams, in_ch: int, z_ch: int):
        super().__init__()
        dims = [p.dim * m for m in (1, *p.dim_mult)]
        stages = len(p.dim_mult)
        self.conv1 = CausalConv3d(in_ch, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = p.temporal_downsample[i] if i < len(p.temporal_downsample) else False
            if p.version == "2.2":
                layers.append(DownBlock(a, b, p.num_res_blocks, temporal, down=i != stages - 1))
                continue
            for _ in range(p.num_res_blocks):
                layers.append(ResidualBlock(a, b))
                a = b
            if i != stages - 1:
                layers.append(Resample(b, "downsample3d" if temporal else "downsample2d", halve_on_up=True))
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(dims[-1], dims[-1]), AttentionBlock(dims[-1]),
                                    ResidualBlock(dims[-1], dims[-1]))
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], z_ch, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder(nn.Module):
    def __init__(self, p: VAEParams, z_ch: int, out_ch: int):
        super().__init__()
        base = p.dec_dim or p.dim
        mult = p.dim_mult
        dims = [base * m for m in (mult[-1], *mult[::-1])]
        stages = len(mult)
        temporal_up = p.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(z_ch, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = temporal_up[i] if i < len(temporal_up) else False
            if p.version == "2.2":
                layers.append(UpBlock(a, b, p.num_res_blocks + 1, temporal, up=i != stages - 1))
                continue
            if i > 0:  # Wan2.1's upsampling convs halve the channels
                a //= 2
            for _ in range(p.num_res_blocks + 1):
                layers.append(ResidualBlock(a, b))
                a = b
            if i != stages - 1:
                layers.append(Resample(b, "upsample3d" if temporal else "upsample2d", halve_on_up=True))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C*p*p, T, H/p, W/p), channel order (c, r, q) as the official Wan2.2 VAE."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p)  # q over h, r over w
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    b, cp, t, h, w = x.shape
    c = cp // (p * p)
    x = x.view(b, c, p, p, t, h, w)  # (c, r, q)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, t, h * p, w * p)


# Tile sizes of diffusers' AutoencoderKLWan (pixels of the VAE's own input space): 256 with stride 192.
DEFAULT_TILE, DEFAULT_STRIDE = 256, 192


class WanVAE(MemorySwitches, nn.Module):
    """Wan video VAE; ``state_dict()`` names equal ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``."""

    def __init__(self, p: VAEParams):
        super().__init__()
        self.params = p
        #: switches a memory policy may flip: spatial tiles (diffusers' sizes), chunk-by-chunk runs
        self.tiling: bool = False
        self.chunked: bool = True
        io = 3 * p.patch * p.patch
        self.encoder = Encoder(p, io, p.z_dim * 2)
        self.conv1 = CausalConv3d(p.z_dim * 2, p.z_dim * 2, 1)
        self.conv2 = CausalConv3d(p.z_dim, p.z_dim, 1)
        self.decoder = Decoder(p, p.z_dim, io)

    # -- latent normalisation (official: (mu - mean) / std, and back) ----------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.params.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.params.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    @property
    def compression(self) -> int:
        """Spatial downsampling of the encoder/decoder proper (after patchify)."""
        return 2 ** (len(self.params.dim_mult) - 1)

    def tile_spec(self, what: str) -> TileSpec:
        """diffusers' default tiles: 256/192 px of the patchified input; latents 256/compression."""
        c = self.compression
        if what == "encode":
            return TileSpec((DEFAULT_TILE, DEFAULT_TILE), (DEFAULT_STRIDE, DEFAULT_STRIDE), scale=1 / c)
        s = c * self.params.patch
        return TileSpec((DEFAULT_TILE // s,) * 2, (DEFAULT_STRIDE // s,) * 2, scale=c)

    # -- encode ----------------------------------------------------------------------------------
    def _encode_raw(self, x: torch.Tensor, chunked: bool) -> torch.Tensor:
        if not chunked:
            return self.conv1(self.encoder(x))
        cache, outs, start = CausalCache(), [], 0
        for n in chunk_sizes(x.shape[2], 1, 4):
            outs.append(self.encoder(x[:, :, start:start + n], cache))
            start += n
        return self.conv1(torch.cat(outs, dim=2))

    def encode(self, video: torch.Tensor, *, chunked: bool = True, tiling: TileSpec | bool | None = None
               ) -> torch.Tensor:
        """Video (B, 3, T=4n+1, H, W) in [-1, 1] -> normalised latent mean (B, z, n+1, H/s, W/s)."""
        t = video.shape[2]
        if (t - 1) % 4:
            raise ValueError(f"the Wan VAE encodes 4n+1 frames, got {t}")
        x = patchify(video, self.params.patch)
        spec = self.tile_spec("encode") if tiling is True else (tiling or None)
        if spec is not None and spec.needed(*x.shape[-2:]):
            h = tiled_map(lambda tile: self._encode_raw(tile, chunked), x, spec)
        else:
            h = self._encode_raw(x, chunked)
        mu = h[:, : self.params.z_dim]
        mean, std = self._stats(mu)
        return (mu - mean) * (1.0 / std)

    # -- decode ----------------------------------------------------------------------------------
    def _decode_raw(self, z: torch.Tensor, chunked: bool) -> torch.Tensor:
        x = self.conv2(z)
        if not chunked:
            return self.decoder(x)
        cache = CausalCache()
        return torch.cat([self.decoder(x[:, :, i:i + 1], cache) for i in range(x.shape[2])], dim=2)

    def decode(self, z: torch.Tensor, *, chunked: bool = True, tiling: TileSpec | bool | None = None
               ) -> torch.Tensor:
        """Normalised latents (B, z, T', h, w) -> video (B, 3, 4(T'-1)+1, h*s, w*s) clamped to [-1, 1]."""
        mean, std = self._stats(z)
        z = z / (1.0 / std) + mean
        spec = self.tile_spec("decode") if tiling is True else (tiling or None)
        if spec is not None and spec.needed(*z.shape[-2:]):
            out = tiled_map(lambda tile: self._decode_raw(tile, chunked), z, spec)
        else:
            out = self._decode_raw(z, chunked)
        return unpatchify(out, self.params.patch).clamp(-1, 1)
