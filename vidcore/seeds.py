"""Every random generator of a run, derived from its request in one place.

A video is a function of its request: the initial noise comes from
``seed`` on the device the backend names (``Backend.noise_device``: official
pipelines that seed a CUDA generator draw there, so the same seed gives their
numbers), and a stochastic sampler's noise from ``seed + 1`` on the CPU, a
stream independent of the first so that changing the sampler never changes
the starting point. In a batch each video keeps its own generators, so it is
the same video it would be alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .backend import Backend, Conditions

#: offset of the sampler's stream from the noise's (both from the request's seed)
SAMPLER_STREAM = 1


def noise_generator(backend: Backend, request: Any, device: torch.device) -> torch.Generator:
    """The generator `Backend.initial_noise` draws from."""
    where = torch.device(device) if backend.noise_device == "run" else torch.device("cpu")
    return torch.Generator(where).manual_seed(int(request.seed))


def initial_noise(backend: Backend, request: Any, device: torch.device,
                  conditions: Conditions | None = None) -> torch.Tensor:
    """The backend's starting noise for ``request`` (batch of one), on ``device``."""
    gen = noise_generator(backend, request, device)
    conds = conditions if conditions is not None else Conditions({})
    return backend.initial_noise(request, gen, conditions=conds).to(device)


def sampler_generators(requests: Sequence[Any]) -> torch.Generator | list[torch.Generator]:
    """The sampler's generator: one per video (see `vidcore.sampling.noise`); a single one for one video."""
    gens = [torch.Generator("cpu").manual_seed(int(r.seed) + SAMPLER_STREAM) for r in requests]
    return gens[0] if len(gens) == 1 else gens
