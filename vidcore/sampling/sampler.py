"""`Sampler`: look samplers up by name in the plugin registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UnknownNameError

SamplerFn = Callable[..., Any]


class Sampler:
    """Namespace for sampler lookup.

    A sampler is a function ``fn(model, x, schedule, *, callback=None,
    generator=None, **options) -> x0``. The core's samplers register through
    the same ``register_samplers`` hook as a plugin's; samplers added with
    `register_sampler` after plugins were loaded are found too.
    """

    @staticmethod
    def get(name: str) -> SamplerFn:
        from .. import plugins
        from .samplers import BUILTIN_SAMPLERS

        try:
            return plugins.get_sampler(name)
        except UnknownNameError:
            if name in BUILTIN_SAMPLERS:
                return BUILTIN_SAMPLERS[name]
            raise UnknownNameError("sampler", name, Sampler.names()) from None

    @staticmethod
    def names() -> list[str]:
        from .. import plugins
        from .samplers import BUILTIN_SAMPLERS

        return sorted(set(plugins.sampler_names()) | set(BUILTIN_SAMPLERS))
