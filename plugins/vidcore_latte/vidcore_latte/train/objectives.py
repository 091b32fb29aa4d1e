"""What a network learns to predict, and the noisy inputs it is trained on.

Three parameterisations, matching `vidcore.sampling`'s wrappers so that every
core sampler can drive every model trained here:

- ``flow``: rectified flow, ``x_s = (1 - s) x0 + s n``, target ``n - x0``, timestep ``1000 s``;
- ``eps`` and ``v``: DDPM variance preserving with linear betas (1e-4 .. 0.02, 1000 steps),
  ``x_t = a_t x0 + b_t n`` with ``a_t = sqrt(abar_t)``, ``b_t = sqrt(1 - abar_t)``;
  targets ``n`` (eps) and ``a_t n - b_t x0`` (v); the timestep is the integer t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PREDICTIONS = ("eps", "v", "flow")


def ddpm_alphas_cumprod(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class Objective:
    prediction: str = "flow"
    #: flow only: times are drawn from a logit-normal and then shifted towards noise by ``shift``
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {self.prediction!r}")

    def sample(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy input, timestep (B,), target) for clean ``x0``; all randomness from ``generator``."""
        B = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        view = (B,) + (1,) * (x0.dim() - 1)
        if self.prediction == "flow":
            u = torch.randn(B, generator=generator) * self.logit_std + self.logit_mean
            s = torch.sigmoid(u)
            s = self.shift * s / (1 + (self.shift - 1) * s)
            s = s.to(x0.device)
            sv = s.view(view).to(x0.dtype)
            return (1 - sv) * x0 + sv * noise, s * 1000.0, noise - x0
        t = torch.randint(0, 1000, (B,), generator=generator)
        abar = ddpm_alphas_cumprod()[t].to(x0.device)
        a = abar.sqrt().float().view(view).to(x0.dtype)
        b = (1 - abar).sqrt().float().view(view).to(x0.dtype)
        target = noise if self.prediction == "eps" else a * noise - b * x0
        return a * x0 + b * noise, t.to(x0.device).float(), target
