"""Flow-matching Euler: ``x += (sigma_next - sigma) * v`` with the velocity ``v = (x - x0) / sigma``.

Lipman et al. (2023) / Liu et al. (2023); the sampler of SD3-style and
HunyuanVideo's default pipelines. On a flow schedule it equals `euler`
mathematically; it is kept as the velocity form the reference code writes.
"""

from __future__ import annotations

import torch

from ...errors import InvalidRequestError
from ..schedules import Schedule
from .registry import builtin_sampler, report


@builtin_sampler("flow_euler")
def sample_flow_euler(model, x, schedule: Schedule, *, callback=None, generator=None) -> torch.Tensor:
    """Deterministic Euler steps on a flow schedule."""
    if schedule.kind != "flow":
        raise InvalidRequestError(f"flow_euler needs a flow schedule (e.g. 'flow'), not a {schedule.kind!r} one")
    sigmas = schedule.sigmas
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i])
        # x + (sigma_next - sigma) * v with v = (x - denoised) / sigma, in one pass
        x = torch.lerp(denoised, x, sigma_next / sigma)
        report(callback, x, i, sigmas[i], sigmas[i + 1], denoised)
    return x
