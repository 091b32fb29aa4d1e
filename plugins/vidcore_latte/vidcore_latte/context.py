"""Past frames for prediction: which given frames condition the denoiser, and in what form.

They enter the denoiser as extra input channels concatenated to the noisy
input (their clean values plus a 0/1 mask of the denoiser frames they fill),
never by masking the noise. A pixel-space model takes the last ``k`` given
frames as they are. A latent model encodes them with its causal VAE, which
maps ``1 + f m`` frames to ``1 + m`` latents that depend on those frames only,
so it takes the last ``1 + f m`` frames that fit (at least the last one) and
conditions on their ``1 + m`` latents. Either way the frames used are pasted
back unchanged into the output, as its first frames.
"""

from __future__ import annotations

import torch
from torch import nn

from .system import ModelConfig

#: past frames the demo model was trained to continue from (pixel frames)
MAX_CONTEXT = 8


def context_counts(config: ModelConfig, given: int, total: int) -> tuple[int, int]:
    """(pixel frames used, denoiser frames they fill) when ``given`` frames continue into ``total``."""
    k = max(1, min(given, MAX_CONTEXT, total - 1))
    if config.vae is None:
        return k, k
    from .models.vae import VAEConfig

    f = VAEConfig(**config.vae).temporal_factor
    m = (k - 1) // f
    return 1 + f * m, 1 + m


@torch.no_grad()
def denoiser_context(config: ModelConfig, clip: torch.Tensor, total: int, shape: tuple[int, ...],
                     vae: nn.Module | None = None, device: torch.device | str = "cpu"
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(frames (1, *shape), mask (1, 1, T, 1, 1), pixel frames used) for a uint8 clip (K, H, W, 3).

    ``shape`` is the (C, T, H, W) the denoiser samples; ``vae`` is needed for latent models.
    """
    used, filled = context_counts(config, clip.shape[0], total)
    past = clip[-used:].permute(3, 0, 1, 2)[None].float().to(device) / 127.5 - 1  # (1, 3, used, H, W)
    if config.vae is not None:
        if vae is None:
            raise ValueError("a latent model needs its VAE to encode the given frames")
        dtype = next(vae.parameters()).dtype
        past = vae.encode_latents(past.to(dtype)).float()
        past = (past - config.latent_shift) * config.latent_scale
    frames = torch.zeros(1, *shape, device=device)
    frames[:, :, :filled] = past[:, :, :filled]
    mask = torch.zeros(1, 1, shape[1], 1, 1, device=device)
    mask[:, :, :filled] = 1
    return frames, mask, used
