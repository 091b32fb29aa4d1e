"""Causal 3D VAE: GroupNorm + SiLU residual blocks of causal 3D convolutions and a KL latent.

Causality in time is what lets a clip be encoded and decoded in temporal
chunks: every convolution pads only on the past side, and in streaming mode
keeps the frames the next chunk still needs (see `CausalConv3d`). GroupNorm is
taken per frame for the same reason (statistics over time would look ahead).
The first frame is compressed on its own: a stride-2 causal convolution over
``1 + 2m`` frames gives ``1 + m`` (frame 0 sees only itself), so the default
two temporal stages map ``1 + 4k`` frames to ``1 + k`` latents, and the
decoder's upsampling repeats every latent frame but the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one entry per resolution; len - 1 spatial 2x stages
    temporal_down: tuple[bool, ...] = (False, True, True)  # which spatial stages also halve time
    blocks: int = 1  # residual blocks per resolution
    groups: int = 8

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "temporal_down", tuple(self.temporal_down))
        if len(self.temporal_down) != len(self.channel_mult) - 1:
            raise ValueError("temporal_down needs one entry per downsampling stage (len(channel_mult) - 1)")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_down)

    def latent_frames(self, frames: int) -> int:
        if (frames - 1) % self.temporal_factor:
            raise ValueError(f"{frames} frames do not fit a {self.temporal_factor}x causal VAE; "
                             f"use {self.temporal_factor}n+1 frames")
        return 1 + (frames - 1) // self.temporal_factor


class CausalConv3d(nn.Conv3d):
    """A Conv3d padded on the past side in time; in streaming mode it carries frames across chunks."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, kernel[1] // 2, kernel[2] // 2))
        self.streaming = False
        self.buffer: torch.Tensor | None = None

    def reset(self, streaming: bool) -> None:
        self.streaming, self.buffer = streaming, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kt, st = self.kernel_size[0], self.stride[0]
        if self.buffer is None:
            pad = x.new_zeros(x.shape[0], x.shape[1], kt - 1, *x.shape[3:])
            buf = torch.cat([pad, x], dim=2)
        else:
            buf = torch.cat([self.buffer, x], dim=2)
        n_out = (buf.shape[2] - kt) // st + 1 if buf.shape[2] >= kt else 0
        if self.streaming:
            self.buffer = buf[:, :, n_out * st:]
        if n_out == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0, *self._out_hw(x))
        return super().forward(buf[:, :, : (n_out - 1) * st + kt])

    def _out_hw(self, x: torch.Tensor) -> tuple[int, int]:
        h = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        w = (x.shape[4] + 2 * self.padding[2] - self.kernel_size[2]) // self.stride[2] + 1
        return h, w


def frame_group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm over (C, H, W) of each frame separately (causal and chunk-invariant)."""
    B, C, T, H, W = x.shape
    y = norm(x.transpose(1, 2).reshape(B * T, C, H, W))
    return y.view(B, T, C, H, W).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(frame_group_norm(self.norm1, x)))
        h = self.conv2(F.silu(frame_group_norm(self.norm2, h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """2x in space (and 2x in time, first frame alone, when ``temporal``)."""

    def __init__(self, ch: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(ch, ch, (3, 3, 3), stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """2x nearest in space; in time every frame but the clip's first is repeated (the encoder's inverse)."""

    def __init__(self, ch: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(ch, ch)
        self.started = False
        self.streaming = False

    def reset(self, streaming: bool) -> None:
        self.started, self.streaming = False, streaming

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal and x.shape[2]:
            if not self.started:
                first, rest = x[:, :, :1], x[:, :, 1:]
                x = torch.cat([first, rest.repeat_interleave(2, dim=2)], dim=2)
            else:
                x = x.repeat_interleave(2, dim=2)
            self.started = self.streaming
        B, C, T, H, W = x.shape
        x = F.interpolate(x.transpose(1, 2).reshape(B * T, C, H, W), scale_factor=2.0, mode="nearest")
        return self.conv(x.view(B, T, C, 2 * H, 2 * W).transpose(1, 2))


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        chs = [c.base_channels * m for m in c.channel_mult]
        self.conv_in = CausalConv3d(c.in_channels, chs[0])
        layers: list[nn.Module] = []
        for i, ch in enumerate(chs):
            prev = chs[max(0, i - 1)] if i else chs[0]
            for b in range(c.blocks):
                layers.append(ResBlock(prev if b == 0 else ch, ch, c.groups))
            if i < len(chs) - 1:
                layers.append(Downsample(ch, c.temporal_down[i]))
        self.layers = nn.Sequential(*layers)
        self.mid = ResBlock(chs[-1], chs[-1], c.groups)
        self.norm_out = nn.GroupNorm(c.groups, chs[-1])
        self.conv_out = CausalConv3d(chs[-1], 2 * c.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.layers(self.conv_in(x)))
        return self.conv_out(F.silu(frame_group_norm(self.norm_out, h)))


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        chs = [c.base_channels * m for m in c.channel_mult][::-1]
        temporal = tuple(reversed(c.temporal_down))
        self.conv_in = CausalConv3d(c.latent_channels, chs[0])
        self.mid = ResBlock(chs[0], chs[0], c.groups)
        layers: list[nn.Module] = []
        for i, ch in enumerate(chs):
            prev = chs[max(0, i - 1)]
            for b in range(c.blocks):
                layers.append(ResBlock(prev if b == 0 else ch, ch, c.groups))
            if i < len(chs) - 1:
                layers.append(Upsample(ch, temporal[i]))
        self.layers = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(c.groups, chs[-1])
        self.conv_out = CausalConv3d(chs[-1], c.in_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(frame_group_norm(self.norm_out, h)))


class CausalVAE(nn.Module):
    """``encode`` -> (mean, logvar); ``decode`` latents -> frames in [-1, 1]; both optionally chunked in time."""

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @contextmanager
    def streaming(self, part: nn.Module) -> Iterator[None]:
        """Carry causal state across calls of ``part`` (encoder or decoder) inside the block."""
        stateful = [m for m in part.modules() if isinstance(m, (CausalConv3d, Upsample))]
        for m in stateful:
            m.reset(True)
        try:
            yield
        finally:
            for m in stateful:
                m.reset(False)

    def encode(self, x: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, 1 + 4k, H, W) in [-1, 1]; ``chunk`` frames at a time (a multiple of the time factor)."""
        self.config.latent_frames(x.shape[2])
        if chunk is None or x.shape[2] <= 1 + chunk:
            moments = self.encoder(x)
        else:
            f = self.config.temporal_factor
            if chunk % f:
                raise ValueError(f"chunk {chunk} must be a multiple of the temporal factor {f}")
            with self.streaming(self.encoder):
                parts = [self.encoder(x[:, :, :1])]
                parts += [self.encoder(x[:, :, s: s + chunk]) for s in range(1, x.shape[2], chunk)]
            moments = torch.cat(parts, dim=2)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Latents (B, C, 1 + k, h, w) -> frames (B, 3, 1 + 4k, H, W); ``chunk`` latent frames at a time."""
        if chunk is None or z.shape[2] <= 1 + chunk:
            return self.decoder(z)
        with self.streaming(self.decoder):
            parts = [self.decoder(z[:, :, :1])]
            parts += [self.decoder(z[:, :, s: s + chunk]) for s in range(1, z.shape[2], chunk)]
        return torch.cat(parts, dim=2)

    def encode_latents(self, x: torch.Tensor, generator: torch.Generator | None = None,
                       chunk: int | None = None) -> torch.Tensor:
        """The posterior mean (``generator`` None) or a sample from it."""
        mean, logvar = self.encode(x, chunk)
        if generator is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean)
        return mean + (0.5 * logvar).exp() * noise

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, KL per sample averaged over latent elements) for training."""
        mean, logvar = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean)
        z = mean + (0.5 * logvar).exp() * noise
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).flatten(1).mean(1)
        return self.decode(z), kl
