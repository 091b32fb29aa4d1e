"""DDPM ancestral sampling and DDIM, written for any process ``x = alpha * x0 + sigma_t * eps``.

Ho et al. (2020) sample the posterior ``q(x_s | x_t, x0_hat)``; Song et al.
(2021, DDIM) keep its marginals but scale its noise by ``eta`` (eta = 0 is
deterministic, eta = 1 matches DDPM's variance). The posterior variance is
``(sig_t^2 - a_ts^2 sig_s^2) * sig_s^2 / sig_t^2`` where ``a_ts = alpha_t / alpha_s``.
"""

from __future__ import annotations

import math

import torch

from ..noise import randn_like
from ..schedules import Schedule
from .registry import builtin_sampler, report


def _posterior(schedule: Schedule, sigma: float, sigma_next: float) -> tuple[float, float, float, float, float]:
    a_t, s_t = schedule.alpha_sigma(sigma)
    a_s, s_s = schedule.alpha_sigma(sigma_next)
    a_ts = a_t / a_s
    var_ts = max(s_t * s_t - a_ts * a_ts * s_s * s_s, 0.0)  # variance of x_t given x_s
    return a_t, s_t, a_s, s_s, var_ts * s_s * s_s / (s_t * s_t)


@builtin_sampler("ddim")
def sample_ddim(model, x, schedule: Schedule, *, callback=None, generator=None, eta: float = 0.0) -> torch.Tensor:
    """DDIM: ``x_s = a_s x0 + sqrt(sig_s^2 - c^2) eps_hat + c z`` with ``c = eta * posterior std``."""
    sigmas = schedule.sigmas
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i])
        a_t, s_t, a_s, s_s, var = _posterior(schedule, sigma, sigma_next)
        c = eta * math.sqrt(var)
        # a_s x0 + k eps with eps = (x - a_t x0) / s_t, regrouped into two passes over the tensor
        k = math.sqrt(max(s_s * s_s - c * c, 0.0)) / s_t
        x = (x * k).add_(denoised, alpha=a_s - a_t * k)
        if eta > 0:
            x.add_(randn_like(x, generator), alpha=c)
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x


@builtin_sampler("ddpm")
def sample_ddpm(model, x, schedule: Schedule, *, callback=None, generator=None) -> torch.Tensor:
    """Ancestral DDPM: draw from ``q(x_s | x_t, x0_hat)``; no noise is drawn on the step into sigma = 0."""
    sigmas = schedule.sigmas
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i])
        a_t, s_t, a_s, s_s, var = _posterior(schedule, sigma, sigma_next)
        a_ts = a_t / a_s
        var_ts = s_t * s_t - a_ts * a_ts * s_s * s_s
        x = (x * (a_ts * s_s * s_s / (s_t * s_t))).add_(denoised, alpha=a_s * var_ts / (s_t * s_t))
        if sigma_next > 0:
            x.add_(randn_like(x, generator), alpha=math.sqrt(var))
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x
