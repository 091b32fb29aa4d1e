"""Per-step scalars for the exponential-integrator samplers (DPM-Solver++, UniPC).

Computed as 0-dim CPU tensors, one op at a time, in float32 (float64 when the
state is float64), because that is how the reference implementations (diffusers
and Wan2.2's ``fm_solvers*.py``) do it: identical scalar arithmetic is what lets a
backend reproduce official latents bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schedules import Schedule


@dataclass
class Ladder:
    """``alpha[i]``, ``sigma[i]``, ``lam[i] = log(alpha[i]) - log(sigma[i])`` for every grid point."""

    alpha: list[torch.Tensor]
    sigma: list[torch.Tensor]
    lam: list[torch.Tensor]


def ladder(schedule: Schedule, x: torch.Tensor) -> Ladder:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grid = schedule.sigmas.to(dtype)
    alpha, sigma, lam = [], [], []
    for i in range(len(grid)):
        s = grid[i]
        a = 1 - s if schedule.kind == "flow" else torch.ones((), dtype=dtype)
        alpha.append(a)
        sigma.append(s)
        lam.append(torch.log(a) - torch.log(s))  # +inf at sigma = 0, -inf at alpha = 0
    return Ladder(alpha, sigma, lam)
