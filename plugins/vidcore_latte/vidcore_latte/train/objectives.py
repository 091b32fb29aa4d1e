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

Blurred signals (``blur_prob``): a sampler's state is never a true clip plus
noise. Its signal part is built from the network's own earlier estimates,
which are smooth blobs while the noise is high. A network trained only on
true clips learns to copy whatever shape the signal already shows, so one
blob stays a blob to the end: no step ever turns it into the captioned
shape. With probability ``blur_prob`` the signal under the noise is therefore
blurred (Gaussian, sigma drawn from ``blur_sigma`` in pixels, over height
and width), while the target stays the sharp clip. The network then learns
to restore a shape from the caption when the signal only hints at one. This
is close to blurring diffusion (Hoogeboom & Salimans, 2022), where the
forward process blurs as well as noises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    #: probability that the signal under the noise is blurred (the target stays sharp)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (1.0, 4.0)

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {self.prediction!r}")
        if self.process not in PROCESSES:
            raise ValueError(f"process must be one of {PROCESSES}, not {self.process!r}")
        if (self.prediction == "flow") != (self.process == "flow") and self.prediction != "x0":
            raise ValueError(f"prediction {self.prediction!r} does not go with the {self.process!r} process")
        check_blur(self.blur_prob, self.blur_sigma)

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
            signal = self._blurred(x0, generator)
            return (1 - sv) * signal + sv * noise, s * 1000.0, target
        t = torch.randint(0, 1000, (B,), generator=generator)
        abar = ddpm_alphas_cumprod()[t].to(x0.device)
        a = abar.sqrt().float().view(view).to(x0.dtype)
        b = (1 - abar).sqrt().float().view(view).to(x0.dtype)
        target = {"eps": noise, "v": a * noise - b * x0, "x0": x0}[self.prediction]
        signal = self._blurred(x0, generator)
        return a * signal + b * noise, t.to(x0.device).float(), target

    def _blurred(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x0``, each sample blurred with probability ``blur_prob``; draws nothing when that is 0."""
        if self.blur_prob == 0.0:
            return x0  # earlier runs' random streams stay as they were
        lo, hi = self.blur_sigma
        out = []
        for sample in x0:
            hit = torch.rand((), generator=generator).item() < self.blur_prob
            sigma = lo + (hi - lo) * torch.rand((), generator=generator).item()
            out.append(gaussian_blur(sample, sigma) if hit else sample)
        return torch.stack(out)


def check_blur(prob: float, sigma: tuple[float, float]) -> None:
    """The one check of the blurred-signal settings, for the objective and the training config alike."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"blur_prob {prob} must be between 0 and 1")
    if len(sigma) != 2 or not 0.0 < sigma[0] <= sigma[1]:
        raise ValueError(f"blur_sigma {list(sigma)} must be [low, high] pixels with 0 < low <= high")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the last two dimensions (edges replicated, so a flat background stays flat)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    y = x.reshape(-1, 1, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return y.reshape(*lead, H, W)
