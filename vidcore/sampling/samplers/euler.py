"""Euler and Heun on the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``.

Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 2 (Heun; Euler is its first stage). Optional
"churn" (S_churn, S_tmin, S_tmax, S_noise) raises the noise level before each
step, making the sampler stochastic.
"""

from __future__ import annotations

import math

import torch

from ..noise import randn_like
from ..schedules import Schedule
from .registry import builtin_sampler, report


def _churn(x, sigma, schedule, i, n, generator, s_churn, s_tmin, s_tmax, s_noise):
    """Raise the noise level from sigma to sigma_hat = sigma * (1 + gamma) by adding fresh noise."""
    gamma = min(s_churn / n, math.sqrt(2) - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    if schedule.kind == "flow":
        sigma_hat = min(sigma_hat, 1.0 - 1e-6)  # a flow state cannot be noisier than pure noise
        if sigma_hat <= sigma:
            return x, sigma
    a, s = schedule.alpha_sigma(sigma)
    a_hat, s_hat = schedule.alpha_sigma(sigma_hat)
    scale = a_hat / a  # flow states shrink x0's share as noise grows
    extra = math.sqrt(max(s_hat**2 - (scale * s) ** 2, 0.0))
    return scale * x + extra * s_noise * randn_like(x, generator), sigma_hat


def _sig(schedule: Schedule, value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


@builtin_sampler("euler")
def sample_euler(model, x, schedule: Schedule, *, callback=None, generator=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0) -> torch.Tensor:
    """First-order Euler steps (deterministic unless ``s_churn > 0``)."""
    sigmas = schedule.sigmas
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x, sigma_hat = _churn(x, sigma, schedule, i, n, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigmas[i] if sigma_hat == sigma else _sig(schedule, sigma_hat))
        # x + (sigma_next - sigma_hat) * (x - denoised) / sigma_hat, as one pass over the tensor
        x = torch.lerp(denoised, x, sigma_next / sigma_hat)
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x


@builtin_sampler("heun")
def sample_heun(model, x, schedule: Schedule, *, callback=None, generator=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0) -> torch.Tensor:
    """Second-order Heun (trapezoidal) steps; the last step into sigma = 0 is Euler (2n - 1 evaluations)."""
    sigmas = schedule.sigmas
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x, sigma_hat = _churn(x, sigma, schedule, i, n, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigmas[i] if sigma_hat == sigma else _sig(schedule, sigma_hat))
        if sigma_next == 0:
            x = denoised  # the Euler step into sigma = 0
        else:
            dt = sigma_next - sigma_hat
            x_2 = torch.lerp(denoised, x, sigma_next / sigma_hat)  # Euler predictor
            # x + dt/2 * (d + d_2) with d = (x - D) / sigma_hat, d_2 = (x_2 - D_2) / sigma_next
            step = (x - denoised).mul_(dt / (2 * sigma_hat))
            step.add_(x_2 - model(x_2, sigmas[i + 1]), alpha=dt / (2 * sigma_next))
            x = x + step
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x
