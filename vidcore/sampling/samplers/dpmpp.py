"""DPM-Solver++(2M): Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling", Algorithm 2.

A multistep exponential integrator in ``lambda = log(alpha / sigma_t)`` on the
data prediction. The first step is first order (no history yet); so is the
step into sigma = 0, where ``lambda`` is infinite (as diffusers'
``lower_order_final`` and k-diffusion do). Works for ve/vp (alpha = 1 in the
normalised state) and flow (alpha = 1 - sigma: Wan2.2's ``dpm++`` option).
"""

from __future__ import annotations

import math

import torch

from ..schedules import Schedule
from .registry import register_sampler, report


def _lam(alpha: float, sigma: float) -> float:
    """Half log-SNR; -inf at pure noise (a flow grid starting at sigma = 1), which makes h infinite."""
    return math.log(alpha / sigma) if alpha > 0 else -math.inf


@register_sampler("dpmpp_2m")
def sample_dpmpp_2m(model, x, schedule: Schedule, *, callback=None, generator=None) -> torch.Tensor:
    """Deterministic DPM-Solver++ 2M (midpoint form of the second-order correction)."""
    sigmas = schedule.sigmas
    prev_denoised, h_prev = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i])
        a_t, s_t = schedule.alpha_sigma(sigma)
        a_s, s_s = schedule.alpha_sigma(sigma_next)
        if sigma_next == 0:
            x = denoised * a_s  # lambda_next = inf: the first-order step lands on x0
        else:
            h = _lam(a_s, s_s) - _lam(a_t, s_t)
            phi = math.expm1(-h)  # exp(-h) - 1
            if prev_denoised is None:
                d = denoised
            else:
                r = h_prev / h
                d = denoised + (denoised - prev_denoised) * (0.5 / r)
            x = (s_s / s_t) * x - (a_s * phi) * d
            h_prev = h
        prev_denoised = denoised
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x
