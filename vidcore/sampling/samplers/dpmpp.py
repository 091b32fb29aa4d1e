"""DPM-Solver++(2M): Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling", Algorithm 2.

A multistep exponential integrator in ``lambda = log(alpha / sigma_t)`` on the
data prediction ``D``::

    x_next = (s_next / s) x - a_next (exp(-h) - 1) (D + D1 / 2),   D1 = (D - D_prev) / r,  r = h_prev / h

The first step is first order (no history yet), and so is the step into
sigma = 0 (diffusers' ``final_sigmas_type="zero"``, k-diffusion). ve/vp states
use alpha = 1; flow states alpha = 1 - sigma, which is Wan2.2's ``dpm++``
(``FlowDPMSolverMultistepScheduler``); scalars follow its float32 arithmetic.
"""

from __future__ import annotations

import torch

from ..schedules import Schedule
from ._lambdas import ladder
from .registry import builtin_sampler, report


@builtin_sampler("dpmpp_2m")
def sample_dpmpp_2m(model, x, schedule: Schedule, *, callback=None, generator=None) -> torch.Tensor:
    """Deterministic DPM-Solver++ 2M (midpoint form of the second-order term)."""
    lad = ladder(schedule, x)
    n = len(schedule.sigmas) - 1
    prev = None
    for i in range(n):
        denoised = model(x, schedule.sigmas[i])
        a_t, s_t, s_0 = lad.alpha[i + 1], lad.sigma[i + 1], lad.sigma[i]
        h = lad.lam[i + 1] - lad.lam[i]
        c = a_t * (torch.exp(-h) - 1.0)
        final = i == n - 1 and (n < 15 or float(schedule.sigmas[-1]) == 0.0)  # diffusers' lower_order_final
        if prev is None or final:
            x = (s_t / s_0) * x - c * denoised
        else:
            r0 = (lad.lam[i] - lad.lam[i - 1]) / h
            d1 = (1.0 / r0) * (denoised - prev)
            x = (s_t / s_0) * x - c * denoised - 0.5 * c * d1
        prev = denoised
        report(callback, x, i, schedule.sigmas[i], schedule.sigmas[i + 1], denoised)
    return x
