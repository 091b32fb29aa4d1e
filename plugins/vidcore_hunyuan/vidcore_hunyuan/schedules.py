"""HunyuanVideo's own noise schedule, ``hunyuan_flow``, registered through the ``register_schedules`` hook."""

from __future__ import annotations

from vidcore.sampling import Schedule
from vidcore.sampling.schedules import flow


def hunyuan_flow(steps: int, *, shift: float = 7.0, num_train_timesteps: int = 1000) -> Schedule:
    """HunyuanVideo's official grid (``FlowMatchDiscreteScheduler``, ``reverse=True``).

    ``torch.linspace(1, 0, n + 1)`` shifted in float32; float32 timesteps ``sigma * N``.
    That is the core's uniform flow grid (``flow``, ``grid="linspace"``); the name keeps
    the release's default shift, the CLI's 7.0, and the run records that name it.
    """
    return flow(steps, shift=shift, num_train_timesteps=num_train_timesteps, grid="linspace")
