"""The core's table of its own samplers, and the decorator that fills it.

`vidcore.builtins` hands ``BUILTIN_SAMPLERS`` to the ``register_samplers`` hook,
as any plugin hands over its own; code outside the core registers with
`vidcore.sampling.register_sampler` (or the hook) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SamplerFn = Callable[..., Any]
BUILTIN_SAMPLERS: dict[str, SamplerFn] = {}


def builtin_sampler(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator for the core's sampler files: ``@builtin_sampler("euler")`` puts it in ``BUILTIN_SAMPLERS``."""

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
