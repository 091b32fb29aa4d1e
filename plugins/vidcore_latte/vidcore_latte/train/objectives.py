"""What a network learns to predict, and the noisy inputs it is trained on.

Three parameterisations, matching `vidcore.sampling`'s wrappers so that every
core sampler can drive every model trained here:

- ``flow``: rectified flow, ``x_s = (1 - s) x0 + s n``, target ``n - x0``, timestep ``1000 s``;
- ``eps`` and ``v``: DDPM variance preserving with linear betas (1e-4 .. 0.02, 1000 steps),
  ``x_t = a_t x0 + b_t n`` with ``a_t = sqrt(abar_t)``, ``b_t = sqrt(1 - abar_t)``;
  targets ``n`` (eps) and ``a_t n - b_t x0`` (v); the timestep is the integer t;
- ``x0``: the clean sample itself, on either process (``process="flow"`` or ``"vp"``).

Why x0 for pixel-space models with large patches: a token of hidden width d
can only emit a d-dimensional family of patch values, far fewer than a patch's
pixels. Clean frames of simple scenes live in such a family; noise does not.
An eps/v/flow network would have to reproduce the noise and cannot, so its
samples keep residual noise; an x0 network never has to (Li & He, 2025, "Back
to Basics: Let Denoising Generative Models Denoise").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidcore.sampling.schedules import alphas_cumprod

PREDICTIONS = ("eps", "v", "flow", "x0")
PROCESSES = ("flow", "vp")


def ddpm_alphas_cumprod() -> torch.Tensor:
    """The training schedule the core's ``ddpm`` schedule assumes by default (linear betas)."""
    return alphas_cumprod("linear", 1000, 1e-4, 0.02).double()


@dataclass(frozen=True)
class Objective:
    prediction: str = "flow"
    process: str = "flow"
    #: flow only: times are drawn from a logit-normal and then shifted towards noise by ``shift``
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {self.prediction!r}")
        if self.process not in PROCESSES:
            raise ValueError(f"process must be one of {PROCESSES}, not {self.process!r}")
        if (self.prediction == "flow") != (self.process == "flow") and self.prediction != "x0":
            raise ValueError(f"prediction {self.prediction!r} does not go with the {self.process!r} process")

    def sample(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy input, timestep (B,), target) for clean ``x0``; all randomness from ``generator``."""
        B = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        view = (B,) + (1,) * (x0.dim() - 1)
        if self.process == "flow":
            u = torch.randn(B, generator=generator) * self.logit_std + self.logit_mean
            s = torch.sigmoid(u)
            s = self.shift * s / (1 + (self.shift - 1) * s)
            s = s.to(x0.device)
            sv = s.view(view).to(x0.dtype)
            target = x0 if self.prediction == "x0" else noise - x0
            return (1 - sv) * x0 + sv * noise, s * 1000.0, target
        t = torch.randint(0, 1000, (B,), generator=generator)
        abar = ddpm_alphas_cumprod()[t].to(x0.device)
        a = abar.sqrt().float().view(view).to(x0.dtype)
        b = (1 - abar).sqrt().float().view(view).to(x0.dtype)
        target = {"eps": noise, "v": a * noise - b * x0, "x0": x0}[self.prediction]
        return a * x0 + b * noise, t.to(x0.device).float(), target
