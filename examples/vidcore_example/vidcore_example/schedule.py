"""A schedule from a plugin: flow times on a cosine ramp, so steps gather at both ends of the ladder."""

from __future__ import annotations

import math

import torch

from vidcore.sampling import Schedule
from vidcore.sampling.schedules import check_shift, shift_sigma


def example_cosine(steps: int, *, shift: float = 1.0) -> Schedule:
    """``cos(pi/2 * linspace(0, 1, n + 1))`` from 1 to 0, shifted; float timesteps ``sigma * 1000``."""
    check_shift(shift)
    sig = shift_sigma(torch.cos(torch.linspace(0, 1, steps + 1, dtype=torch.float64) * math.pi / 2), shift)
    sig[-1] = 0.0  # cos(pi/2) is 6e-17, not 0
    return Schedule(sig, "flow", (sig[:-1] * 1000).float(), to_timestep=lambda s: s * 1000)
