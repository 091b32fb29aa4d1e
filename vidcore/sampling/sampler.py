"""`Sampler`: look samplers up by name in the plugin registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidRequestError, UnknownNameError

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

    @staticmethod
    def validate(name: str, options: Mapping[str, Any]) -> SamplerFn:
        """The sampler, after checking ``options`` against its keyword arguments (one-line error, no work done)."""
        fn = Sampler.get(name)
        params = inspect.signature(fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return fn
        reserved = {"callback", "generator"}
        accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in reserved]
        bad = sorted(set(options) - set(accepted))
        if bad:
            raise InvalidRequestError(
                f"sampler {name!r} has no option {', '.join(map(repr, bad))}; "
                f"accepted options: {', '.join(accepted) or 'none'}"
            )
        return fn
