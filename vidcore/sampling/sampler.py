"""`Sampler`: look samplers up by name in the plugin registry; `register_sampler` adds one to it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidRequestError

SamplerFn = Callable[..., Any]


class Sampler:
    """Namespace for sampler lookup in the one registry (`vidcore.plugins`).

    A sampler is a function ``fn(model, x, schedule, *, callback=None,
    generator=None, **options) -> x0``. The core's samplers register through
    the same ``register_samplers`` hook as a plugin's; `register_sampler`
    adds one to the same registry later, so request validation finds it too.
    """

    @staticmethod
    def get(name: str) -> SamplerFn:
        from .. import plugins

        return plugins.lookup("sampler", name)

    @staticmethod
    def names() -> list[str]:
        from .. import plugins

        return plugins.names("sampler")

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


def register_sampler(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: ``@register_sampler("mine")`` registers the function as sampler ``mine`` in the one registry.

    For scripts and notebooks (a package uses the ``register_samplers`` hook).
    `Sampler.get`, request validation and ``vidcore generate`` all see it; a
    name already taken is a `vidcore.plugins.DuplicateRegistrationError`.
    """
    from .. import plugins

    return plugins.registering("sampler", name)
