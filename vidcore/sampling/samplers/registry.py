"""The core's table of samplers and the decorator that fills it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SamplerFn = Callable[..., Any]
BUILTIN_SAMPLERS: dict[str, SamplerFn] = {}


def register_sampler(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: ``@register_sampler("mine")`` makes ``Sampler.get("mine")`` return the function."""

    def deco(fn: SamplerFn) -> SamplerFn:
        if name in BUILTIN_SAMPLERS and BUILTIN_SAMPLERS[name] is not fn:
            raise ValueError(f"sampler {name!r} is already registered ({BUILTIN_SAMPLERS[name].__module__})")
        BUILTIN_SAMPLERS[name] = fn
        return fn

    return deco


def report(callback, x, i, sigma, sigma_next, denoised) -> None:
    """The one callback payload every sampler sends after each step."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
