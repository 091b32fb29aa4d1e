"""A sampler from a plugin: the explicit midpoint method on the probability-flow ODE."""

from __future__ import annotations

import torch


def sample_midpoint(model, x: torch.Tensor, schedule, *, callback=None, generator=None) -> torch.Tensor:
    """Second-order midpoint steps between consecutive noise levels (d = (x - x0) / sigma)."""
    sigmas = schedule.sigmas
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        if s_next == 0:
            x = denoised
        else:
            s_mid = (s * s_next).sqrt()
            x_mid = x + (x - denoised) / s * (s_mid - s)
            x = x + (x_mid - model(x_mid, s_mid)) / s_mid * (s_next - s)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x
