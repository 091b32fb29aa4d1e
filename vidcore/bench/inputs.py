"""Random stand-ins for encoder outputs, so a denoiser can be timed without encoders or tokenizers."""

from __future__ import annotations

import torch


def text_states(batch: int, length: int, width: int, valid: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, mask): ``valid`` random rows then zeros, as a padded prompt encoding, and its 0/1 mask."""
    gen = torch.Generator(device).manual_seed(seed)
    states = torch.randn(batch, length, width, generator=gen, device=device, dtype=torch.float32)
    mask = (torch.arange(length, device=device) < valid).to(torch.long).expand(batch, length).contiguous()
    states[:, valid:] = 0
    return states.to(dtype), mask


def latent(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
