"""Wan2.2's own noise schedule, ``wan_flow``, registered through the ``register_schedules`` hook."""

from __future__ import annotations

import numpy as np
import torch

from vidcore.errors import InvalidRequestError
from vidcore.sampling import Schedule
from vidcore.sampling.schedules import check_shift, shift_sigma


def wan_flow(steps: int, *, shift: float = 5.0, num_train_timesteps: int = 1000, solver: str = "unipc") -> Schedule:
    """The official Wan2.2 flow grids (``wan/utils/fm_solvers*.py``, ``wan/text2video.py``).

    ``solver="unipc"`` (Wan's default, ``FlowUniPCMultistepScheduler.set_timesteps``):
    unlike diffusers' port it linspaces from ``sigma_max = 1 - 1/N`` (0.999) down
    to 0 over ``n + 1`` points and drops the last. ``solver="dpm++"``
    (``get_sampling_sigmas``): linspace from exactly 1. Both then shift (float64),
    take timesteps ``sigma * N`` cast to int64 (truncation), append 0 and store
    the sigmas as float32.
    """
    check_shift(shift)
    n_train = num_train_timesteps
    if solver == "unipc":
        alphas = np.linspace(1, 1 / n_train, n_train)[::-1].copy()
        train = torch.from_numpy(1.0 - alphas).to(torch.float32)
        sig = np.linspace(train[0].item(), train[-1].item(), steps + 1).copy()[:-1]
    elif solver == "dpm++":
        sig = np.linspace(1, 0, steps + 1)[:steps]
    else:
        raise InvalidRequestError(f"wan_flow solver must be 'unipc' or 'dpm++', not {solver!r}")
    sig = shift_sigma(sig, shift)
    timesteps = torch.from_numpy(sig * n_train).to(torch.int64)
    sig32 = np.concatenate([sig, [0.0]]).astype(np.float32)
    sigmas = torch.from_numpy(sig32.astype(np.float64))
    return Schedule(sigmas, "flow", timesteps, to_timestep=lambda s: float(int(s * n_train)))
