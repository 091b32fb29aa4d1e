"""The denoising stage of the loop: experts switching by noise level, guidance, the sampler.

It takes conditions already encoded and noise already drawn, for one video
or a batch of videos of one shape, and returns the final latents. Which
expert's weights are "in use" under the memory policy follows the noise level,
and the next expert is put in flight one step before the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .backend import Backend, Components, Conditions
from .cache import reset_step_caches
from .cache_spec import apply_step_cache
from .guidance import Guidance
from .memory import MemoryPolicy
from .sampling import Experts, Sampler, Scheduler, wrap_network
from .sampling.schedules import Schedule

StepCallback = Callable[[dict[str, Any]], None]


class ComponentSwitch:
    """Keeps exactly one denoiser component 'in use' under the memory policy as experts switch."""

    def __init__(self, policy: MemoryPolicy, component_of: Mapping[str, str]):
        self.policy, self.component_of = policy, dict(component_of)
        self.current: str | None = None
        self.stack = contextlib.ExitStack()

    def __call__(self, expert_name: str) -> None:
        comp = self.component_of[expert_name]
        if comp == self.current:
            return
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(self.policy.use(comp))
        self.current = comp

    def close(self) -> None:
        self.stack.close()
        self.current = None


def guidance_for(req: Any, policy: MemoryPolicy) -> Guidance:
    """The request's guidance; the pair runs as one batch unless the backend's options (the official
    order) or the memory policy (half the activations) ask for two passes. Decided here only."""
    options = dict(req.guidance_options)
    batched = bool(options.pop("batched", True)) and policy.batched_guidance
    return Guidance(scale=req.guidance, batched=batched, **options)


def denoise(backend: Backend, components: Components, policy: MemoryPolicy, req: Any, conditions: Conditions,
            noise: torch.Tensor, *, generator: torch.Generator | list[torch.Generator],
            on_step: StepCallback, parallel: Any = None) -> torch.Tensor:
    """Sample from ``noise`` (a batch) under ``conditions`` (stacked to the same batch) with the settings of
    ``req`` (the batch shares them); ``on_step(info)`` after each step."""
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)
    experts = backend.experts(components, req)
    component_of = {e.name: e.component for e in experts}
    apply_step_cache(backend, components, component_of.values(), req)  # the request's cache, or none
    for comp in dict.fromkeys(component_of.values()):
        reset_step_caches(components[comp])
    switch = ComponentSwitch(policy, component_of)
    model = Experts([(e.name, wrap_network(e.network, e.prediction, schedule), e.boundary) for e in experts],
                    on_switch=switch)
    guidance = guidance_for(req, policy)
    cond, uncond = conditions.cond, conditions.uncond
    guided = (parallel.guide(guidance, model, cond, uncond, schedule) if parallel is not None
              else guidance.wrap(model, cond, uncond, schedule))
    prefetch = _prefetcher(model, schedule, policy, component_of)

    def step_done(info: dict[str, Any]) -> None:
        prefetch(int(info["i"]) + 1)
        on_step(info)

    try:
        with torch.no_grad():
            switch(model.expert_for(schedule.sigmas[0]))
            prefetch(0)
            return Sampler.get(req.sampler)(guided, schedule.prior(noise), schedule, callback=step_done,
                                            generator=generator, **req.sampler_options)
    finally:
        switch.close()


def _prefetcher(model: Experts, schedule: Schedule, policy: MemoryPolicy,
                component_of: Mapping[str, str]) -> Callable[[int], None]:
    sigmas = schedule.sigmas

    def prefetch(i: int) -> None:
        """While step i runs, put the expert of step i+1 in flight if it differs (no stall at the switch)."""
        if i + 1 < len(sigmas) - 1:
            now_e, next_e = model.expert_for(sigmas[i]), model.expert_for(sigmas[i + 1])
            if next_e != now_e:
                policy.prefetch(component_of[next_e])

    return prefetch
