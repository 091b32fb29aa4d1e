"""Time one backend's denoiser at full size: a forward, a guided step, under memory presets, vs a reference.

A `Case` is a backend's request at a given size with meta-built components
and random conditions (`Backend.bench_conditions`), so nothing is downloaded
and no encoder runs. Each measurement builds the expert afresh from meta and
materialises random weights on the device with the same seed, so every
preset and the reference implementation see the same weights and inputs and
their outputs can be compared.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import plugins
from ..backend import Backend, Conditions, Expert, Inputs
from ..errors import VidcoreError
from ..guidance import Guidance
from ..memory import get_policy
from ..request import Request, check_request, resolve
from ..sampling import Scheduler
from .random_weights import materialise
from .timing import peak_gib, peak_reset, sync, timed

log = logging.getLogger(__name__)


class BenchError(VidcoreError):
    """A benchmark cannot run as asked (no conditions hook, unknown expert, no reference installed)."""


@dataclass
class Case:
    backend: Backend
    request: Request
    conditions: Conditions
    device: torch.device
    dtype: torch.dtype


@dataclass
class Measure:
    """One timed configuration; ``output`` is kept (on the device) for comparisons, not reported."""

    label: str
    forward_s: float | None = None
    step_s: float | None = None
    peak_gib: float | None = None
    tflop: float | None = None
    output: torch.Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "output"}


def prepare(backend_name: str, *, device: torch.device, dtype: torch.dtype, size: str | None = None,
            frames: int | None = None, task: str | None = None) -> Case:
    """The backend's request at ``size``/``frames`` (official defaults otherwise) with random conditions."""
    backend = plugins.get_backend(backend_name)
    req = resolve(backend, "a benchmark prompt", size=size, frames=frames, task=task, seed=0)
    check_request(backend, req)
    resized = backend.resolve_size(req, Inputs())
    if resized is not None:
        req.width, req.height = resized
    backend.sizes.check(req.width, req.height)  # the sizes and frame counts a generate run would accept
    backend.frames.check(req.frames)
    conds = backend.bench_conditions(req, device, dtype)
    if conds is None:
        raise BenchError(f"backend {backend_name!r} cannot be benchmarked without its encoders: it does not "
                         "implement Backend.bench_conditions")
    return Case(backend, req, conds, device, dtype)


def expert_params(case: Case) -> dict[str, int]:
    """Each expert's parameter count, high noise first (one meta build)."""
    comps = case.backend.build("meta")
    return {e.name: sum(p.numel() for p in comps[e.component].parameters())
            for e in case.backend.experts(comps, case.request)}


def build_expert(case: Case, expert: str | None, weight_dtype: torch.dtype | None = None
                 ) -> tuple[Expert, torch.nn.Module]:
    """A fresh expert whose module has random weights on the device (seed 0, so always the same)."""
    comps = case.backend.build("meta")
    experts = case.backend.experts(comps, case.request)
    chosen = experts[0] if expert is None else next((e for e in experts if e.name == expert), None)
    if chosen is None:
        raise BenchError(f"no expert {expert!r} in {case.backend.name}; experts: {[e.name for e in experts]}")
    module = comps[chosen.component]
    for name in list(comps):
        if name != chosen.component:
            comps[name] = None  # only the one being timed stays referenced
    materialise(module, case.device, weight_dtype or case.dtype)
    return chosen, module


def noise(case: Case) -> torch.Tensor:
    from ..seeds import initial_noise

    return initial_noise(case.backend, case.request, case.device)


def forward_conditions(case: Case, x: torch.Tensor) -> dict[str, Any]:
    """The conditional inputs of one forward, an embedded guidance scale included as Guidance adds it."""
    cond = dict(case.conditions.cond)
    opts = case.request.guidance_options
    if opts.get("embedded") is not None:
        cond[opts.get("embedded_key", "guidance")] = torch.full((x.shape[0],), float(opts["embedded"]),
                                                                dtype=torch.float32, device=x.device)
    return cond


def first_timestep(case: Case) -> tuple[torch.Tensor, float]:
    req = case.request
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)
    return schedule.timesteps[0].reshape(1).to(case.device), float(schedule.sigmas[0])


def guided_step(case: Case, network: Callable[..., torch.Tensor], expert: str, x: torch.Tensor,
                batched: bool = True) -> Callable[[], torch.Tensor]:
    """One guided prediction as the pipeline makes it (CFG batched or in two passes)."""
    req = case.request
    t, sigma = first_timestep(case)
    scale = req.guidance[expert] if isinstance(req.guidance, Mapping) else req.guidance
    opts = dict(req.guidance_options)
    batched = bool(opts.pop("batched", True)) and batched
    guidance = Guidance(scale=float(scale), batched=batched, **opts)
    schedule = Scheduler(req.schedule, **req.schedule_options)(req.steps)

    def model(x_: torch.Tensor, sigma_: Any, **c: Any) -> torch.Tensor:
        return network(x_, t.expand(x_.shape[0]), **c)

    guided = guidance.wrap(model, case.conditions.cond, case.conditions.uncond, schedule)
    return lambda: guided(x, sigma)


def count_tflop(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e12


def measure_preset(case: Case, preset: str, *, expert: str | None = None, repeat: int = 1,
                   step: bool = True, forward: bool = True, flops: bool = False) -> Measure:
    """Forward (and guided step) seconds and peak memory of one expert under memory preset ``preset``.

    ``forward=False`` times the guided step only, after one untimed forward (the
    warm-up), which saves a forward per preset at full size."""
    policy = get_policy(preset, case.dtype)
    device = case.device
    free()
    peak_reset(device)
    chosen, module = build_expert(case, expert)
    place = policy.placement(device, case.dtype)
    load_dev, wdtype = place(chosen.component)
    if wdtype is not None and wdtype != case.dtype:
        module.to(wdtype)
    if load_dev != device:
        module.to(load_dev)  # where the policy keeps it between uses (host for stream/offload/fp8)
        free()
    peak_reset(device)
    policy.setup({chosen.component: module}, device)
    x = noise(case)
    t, _ = first_timestep(case)
    m = Measure(preset)
    try:
        with torch.no_grad(), policy.use(chosen.component):
            cond = forward_conditions(case, x)
            fwd = lambda: chosen.network(x, t, **cond)  # noqa: E731
            if flops:
                m.tflop = count_tflop(fwd)  # also the warm-up
            if forward:
                m.forward_s, m.output = timed(fwd, device, repeat=repeat, warmup=0 if flops else 1)
            else:
                m.output = fwd()  # the warm-up, kept for comparisons
                sync(device)
            if step and case.conditions.uncond is not None:
                m.step_s, _ = timed(guided_step(case, chosen.network, chosen.name, x, policy.batched_guidance),
                                    device, repeat=repeat, warmup=0)
            elif step:
                m.step_s = m.forward_s if forward else timed(fwd, device, repeat=repeat, warmup=0)[0]
            sync(device)
        m.peak_gib = peak_gib(device)
        m.stats = dict(policy.stats()) if hasattr(policy, "stats") else {}
    finally:
        policy.teardown()
        del module
        free()
    return m


def measure_reference(case: Case, *, expert: str | None = None, repeat: int = 1) -> Measure:
    """The backend's reference implementation (`Backend.reference_denoiser`) on the same weights, resident."""
    device = case.device
    free()
    peak_reset(device)
    chosen, module = build_expert(case, expert)
    ref = case.backend.reference_denoiser(chosen.component, module, device, case.dtype)
    if ref is None:
        raise BenchError(f"backend {case.backend.name!r} has no reference implementation installed "
                         "(for diffusers: pip install diffusers)")
    del module  # the reference holds what it needs (shared tensors or its own copy)
    free()
    x = noise(case)
    t, _ = first_timestep(case)
    m = Measure("reference")
    cond = forward_conditions(case, x)
    with torch.no_grad():
        m.forward_s, m.output = timed(lambda: ref(x, t, **cond), device, repeat=repeat)
    m.peak_gib = peak_gib(device)
    ref = None  # noqa: F841  (drops the reference model before the next measurement)
    free()
    return m


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32 (the outputs' scale, not their largest element, sets the bar)."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
